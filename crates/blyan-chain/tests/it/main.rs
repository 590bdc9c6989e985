//! The one integration-test binary of blyan-chain: real RocksDB stores in temp dirs, real
//! segment files, a real child process killed with SIGKILL.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod codec;
mod common;
mod concurrent;
mod crash;
mod durability;
mod export;
mod read_only;
mod staged;
mod store;
mod validation;
mod verify;
