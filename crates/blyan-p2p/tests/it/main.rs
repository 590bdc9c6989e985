//! The one integration-test binary of blyan-p2p: real nodes (chain stores in temp dirs, libp2p
//! over loopback QUIC and TCP), and peers that lie, built from libp2p itself.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bad_peers;
mod experts;
mod support;
mod sync;
