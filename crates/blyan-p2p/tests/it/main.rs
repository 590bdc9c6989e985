//! The network between real nodes on loopback: sync, gossip, bad peers, partitions.

mod bad_peers;
mod support;
mod sync;
