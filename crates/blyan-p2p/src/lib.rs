//! blyan-p2p
