//! blyan-ledger's integration tests: one binary, a module per scenario.
#![allow(clippy::unwrap_used)]

mod batches;
mod bonds;
mod concurrency;
mod conformance;
mod faults;
mod grants;
mod migrations;
mod pg;
mod pruning;
mod support;
mod tls;
mod tokenomics;
