//! blyan-quality's integration tests, one binary: the labelled set through L0 and L1 (precision
//! and recall), and L1's scoring under the shipped default model.

mod labelled;
mod scoring;
mod support;
