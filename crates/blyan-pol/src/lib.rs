//! blyan-pol
