//! Integration tests of `blyan-tensorblock`: one binary, one module per scenario.
//!
//! The binary installs a counting global allocator (`support::COUNTING`) so the zero-copy test
//! can prove no payload-sized Rust allocation happens; that test runs its measurement in a fresh
//! child process of this binary, where no other test allocates at the same time.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bad_input;
mod chain;
mod int8;
mod parser_props;
mod read_only;
mod round_trip;
mod support;
mod zero_copy;
