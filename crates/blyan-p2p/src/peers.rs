//! What a node knows about each peer: addresses, round trip, traffic, offences and bans.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use blyan_chain::Address;
use libp2p::{Multiaddr, PeerId};

use crate::identity::peer_address;

/// Addresses remembered per peer.
const PEER_ADDRESSES_MAX: usize = 8;
/// The longest a ban lasts, however often a peer offends.
pub const BAN_MAX: Duration = Duration::from_secs(3600);

/// Something a peer did that costs it: each offence bans it for the configured time, doubled
/// for every earlier offence (Petals' 15 s ban, doubling).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Offence {
    /// Gossiped a header that fails validation.
    InvalidHeader,
    /// Sent payload bytes that fail verification.
    BadRange,
    /// Broke the sync protocol (headers not linking, hashes not matching).
    Protocol,
    /// Is on another network (different genesis).
    OtherNetwork,
}

/// A snapshot of one peer, for `GET /p2p/peers` and the page.
#[derive(Debug, Clone, PartialEq)]
pub struct PeerInfo {
    /// The peer id.
    pub peer: PeerId,
    /// The chain author address the peer id carries.
    pub address: Option<Address>,
    /// Whether a connection is open now.
    pub connected: bool,
    /// Addresses it is known at (most recent first).
    pub addresses: Vec<Multiaddr>,
    /// Its agent string (from identify).
    pub agent: Option<String>,
    /// The last measured round trip.
    pub rtt: Option<Duration>,
    /// Since when it has been connected (this connection).
    pub connected_for: Option<Duration>,
    /// Bytes received from it in sync and payload responses.
    pub bytes_in: u64,
    /// Bytes sent to it in answers to its requests.
    pub bytes_out: u64,
    /// Requests to it that were answered.
    pub requests_ok: u64,
    /// Requests to it that failed (timeouts, errors, refusals).
    pub requests_failed: u64,
    /// Invalid headers it gossiped.
    pub invalid_headers: u64,
    /// Payload ranges from it that failed verification.
    pub bad_ranges: u64,
    /// Offences in all.
    pub offences: u32,
    /// How long it stays banned, if it is.
    pub banned_for: Option<Duration>,
    /// Gossipsub's score of it (negative after invalid messages).
    pub gossip_score: Option<f64>,
    /// Why it was refused, when it is on another network.
    pub refused: Option<String>,
}

#[derive(Debug, Default)]
struct PeerState {
    addresses: Vec<Multiaddr>,
    agent: Option<String>,
    rtt: Option<Duration>,
    connected_since: Option<Instant>,
    bytes_in: u64,
    bytes_out: u64,
    requests_ok: u64,
    requests_failed: u64,
    invalid_headers: u64,
    bad_ranges: u64,
    offences: u32,
    banned_until: Option<Instant>,
    refused: Option<String>,
}

/// Every peer the node has met, keyed by peer id.
#[derive(Debug)]
pub(crate) struct PeerTable {
    peers: HashMap<PeerId, PeerState>,
    ban: Duration,
}

impl PeerTable {
    pub(crate) fn new(ban: Duration) -> Self {
        Self {
            peers: HashMap::new(),
            ban,
        }
    }

    fn entry(&mut self, peer: PeerId) -> &mut PeerState {
        self.peers.entry(peer).or_default()
    }

    pub(crate) fn connected(&mut self, peer: PeerId, address: Multiaddr) {
        let state = self.entry(peer);
        state.connected_since.get_or_insert_with(Instant::now);
        remember(&mut state.addresses, address);
    }

    pub(crate) fn disconnected(&mut self, peer: PeerId) {
        self.entry(peer).connected_since = None;
    }

    pub(crate) fn identified(&mut self, peer: PeerId, agent: String, addresses: &[Multiaddr]) {
        let state = self.entry(peer);
        state.agent = Some(agent);
        for address in addresses {
            remember(&mut state.addresses, address.clone());
        }
    }

    pub(crate) fn rtt(&mut self, peer: PeerId, rtt: Duration) {
        self.entry(peer).rtt = Some(rtt);
    }

    pub(crate) fn answered(&mut self, peer: PeerId, bytes: u64) {
        let state = self.entry(peer);
        state.requests_ok += 1;
        state.bytes_in += bytes;
    }

    pub(crate) fn failed(&mut self, peer: PeerId) {
        self.entry(peer).requests_failed += 1;
    }

    pub(crate) fn served(&mut self, peer: PeerId, bytes: u64) {
        self.entry(peer).bytes_out += bytes;
    }

    /// Records `offence` and bans the peer: `ban × 2^(earlier offences)`, at most [`BAN_MAX`].
    pub(crate) fn offend(&mut self, peer: PeerId, offence: Offence, reason: &str) -> Duration {
        let ban = self.ban;
        let state = self.entry(peer);
        match offence {
            Offence::InvalidHeader => state.invalid_headers += 1,
            Offence::BadRange => state.bad_ranges += 1,
            Offence::OtherNetwork => state.refused = Some(reason.to_owned()),
            Offence::Protocol => {}
        }
        let doublings = state.offences.min(16);
        state.offences += 1;
        let length = ban.saturating_mul(1 << doublings).min(BAN_MAX);
        state.banned_until = Some(Instant::now() + length);
        length
    }

    pub(crate) fn is_banned(&self, peer: &PeerId) -> bool {
        self.peers
            .get(peer)
            .and_then(|state| state.banned_until)
            .is_some_and(|until| until > Instant::now())
    }

    pub(crate) fn addresses(&self, peer: &PeerId) -> Vec<Multiaddr> {
        self.peers
            .get(peer)
            .map(|state| state.addresses.clone())
            .unwrap_or_default()
    }

    pub(crate) fn connected_count(&self) -> usize {
        self.peers
            .values()
            .filter(|state| state.connected_since.is_some())
            .count()
    }

    pub(crate) fn connected_peers(&self) -> Vec<PeerId> {
        let mut peers: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, state)| state.connected_since.is_some())
            .map(|(peer, _)| *peer)
            .collect();
        peers.sort();
        peers
    }

    pub(crate) fn snapshot(&self, gossip_score: impl Fn(&PeerId) -> Option<f64>) -> Vec<PeerInfo> {
        let now = Instant::now();
        let mut peers: Vec<PeerInfo> = self
            .peers
            .iter()
            .map(|(peer, state)| PeerInfo {
                peer: *peer,
                address: peer_address(peer),
                connected: state.connected_since.is_some(),
                addresses: state.addresses.clone(),
                agent: state.agent.clone(),
                rtt: state.rtt,
                connected_for: state.connected_since.map(|since| now - since),
                bytes_in: state.bytes_in,
                bytes_out: state.bytes_out,
                requests_ok: state.requests_ok,
                requests_failed: state.requests_failed,
                invalid_headers: state.invalid_headers,
                bad_ranges: state.bad_ranges,
                offences: state.offences,
                banned_for: state
                    .banned_until
                    .filter(|until| *until > now)
                    .map(|until| until - now),
                gossip_score: gossip_score(peer),
                refused: state.refused.clone(),
            })
            .collect();
        peers.sort_by_key(|info| (!info.connected, info.peer));
        peers
    }
}

fn remember(addresses: &mut Vec<Multiaddr>, address: Multiaddr) {
    addresses.retain(|known| *known != address);
    addresses.insert(0, address);
    addresses.truncate(PEER_ADDRESSES_MAX);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bans_double_with_each_offence_up_to_the_cap() {
        let mut table = PeerTable::new(Duration::from_secs(15));
        let peer = PeerId::random();
        assert!(!table.is_banned(&peer));
        assert_eq!(
            table.offend(peer, Offence::BadRange, "bad bytes"),
            Duration::from_secs(15)
        );
        assert_eq!(
            table.offend(peer, Offence::BadRange, "bad bytes"),
            Duration::from_secs(30)
        );
        assert!(table.is_banned(&peer));
        for _ in 0..20 {
            table.offend(peer, Offence::InvalidHeader, "bad header");
        }
        assert_eq!(
            table.offend(peer, Offence::InvalidHeader, "bad header"),
            BAN_MAX
        );
        let info = &table.snapshot(|_| None)[0];
        assert_eq!((info.bad_ranges, info.invalid_headers), (2, 21));
        assert_eq!(info.offences, 23);
    }
}
