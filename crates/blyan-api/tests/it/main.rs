//! Integration tests of the node's HTTP API over real loopback HTTP.
#![allow(clippy::unwrap_used)]

mod api_doc;
mod auth;
mod errors;
mod support;
