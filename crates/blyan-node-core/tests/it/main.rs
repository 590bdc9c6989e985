//! Integration tests of the node library without HTTP: a node on a temp data dir (RocksDB
//! chain store, embedded ledger, the untrained seed model) driven through its chat session and
//! its services.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod services;
mod session;
mod support;
