//! Integration tests of the node's HTTP API over real loopback HTTP, against a node on a temp
//! data dir (RocksDB chain store, embedded ledger, the seed model); `postgres` runs one on
//! the PostgreSQL ledger the ledger's test harness starts.
#![allow(clippy::unwrap_used)]

mod abuse;
mod api_doc;
mod auth;
mod chain;
mod chat;
mod datasets;
mod errors;
mod faucet;
#[path = "../../../blyan-node-core/tests/fixtures/fine_tune.rs"]
mod fine_tune;
mod load;
mod openai;
mod p2p;
mod page;
mod postgres;
mod request_id;
mod stop;
mod support;
mod uploads;
