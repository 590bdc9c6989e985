//! blyan-quality
