//! Integration tests of the node library without HTTP: a node on a temp data dir (RocksDB
//! chain store, embedded ledger, the untrained seed model) driven through its chat session,
//! its services and its learner.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod datasets;
mod dtype;
#[path = "../fixtures/fine_tune.rs"]
mod fine_tune;
mod learner;
mod network;
mod pol;
mod services;
mod session;
mod support;
