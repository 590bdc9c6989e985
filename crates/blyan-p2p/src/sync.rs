//! Chain sync: headers first, then payloads, appended through the store's full validation.
//!
//! A sync starts when a peer connects, every `sync_interval` for each peer, and when gossip
//! brings a header the node does not hold. The syncer asks the peer for its status (a peer on
//! another network is refused and banned), walks back from each unknown tip with `Ancestors`
//! requests (and from each unknown dependency) until it reaches blocks it holds, orders what it
//! fetched so that every block comes after its parent and its dependencies, then fetches each
//! payload ([`crate::payload`]) and appends the block with [`ChainStore::append`] — the same
//! validation `POST /blocks` runs, Proof-of-Learning gate included. Forks are kept as the store
//! keeps them; its fork rule picks the tips.
//!
//! One sync runs at a time; triggers queue (bounded) behind it.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use blyan_chain::{BlockHash, BlockHeader, ChainStore};
use libp2p::PeerId;
use tokio::sync::{mpsc, watch};

use crate::error::{GenesisMismatch, NetworkError, Result};
use crate::network::{NetworkHandle, NetworkStats};
use crate::payload::{FetchedPayload, fetch_payload};
use crate::peers::Offence;
use crate::protocol::{
    ChainStatus, HEADERS_PER_RESPONSE_MAX, SyncRequest, SyncResponse, genesis_hashes,
};

/// Headers one sync holds in memory at most before appending (a header is ≤ 2 KiB).
pub const SYNC_HEADERS_MAX: usize = 100_000;
/// Blocks remembered as refused by the store, so a peer offering them again is not asked for
/// them again (the oldest are forgotten past this).
const REFUSED_REMEMBERED_MAX: usize = 10_000;

/// A block appended from a peer.
#[derive(Debug, Clone)]
pub struct Appended {
    /// The block.
    pub block: BlockHash,
    /// Its header.
    pub header: BlockHeader,
    /// Whether the store holds it as a Proof-of-Learning candidate (stored, not served).
    pub candidate: bool,
    /// The peer it came from.
    pub from: PeerId,
}

/// Why the syncer should look at a peer.
#[derive(Debug)]
pub(crate) enum Trigger {
    /// Compare tips with this peer.
    Peer(PeerId),
    /// Gossip brought a header the node does not hold.
    Announced {
        from: PeerId,
        origin: Option<PeerId>,
        block: BlockHash,
        header: Box<BlockHeader>,
    },
}

pub(crate) fn response_bytes(response: &SyncResponse) -> u64 {
    match response {
        SyncResponse::Headers(headers) => headers.iter().map(|header| header.len() as u64).sum(),
        SyncResponse::Status(status) => 64 * (status.genesis.len() + status.tips.len()) as u64,
        SyncResponse::Refused(reason) => reason.len() as u64,
    }
}

pub(crate) struct Syncer {
    net: NetworkHandle,
    chain: Arc<ChainStore>,
    appended: mpsc::Sender<Appended>,
    refused: HashSet<BlockHash>,
}

impl Syncer {
    pub(crate) fn new(
        net: NetworkHandle,
        chain: Arc<ChainStore>,
        appended: mpsc::Sender<Appended>,
    ) -> Self {
        Self {
            net,
            chain,
            appended,
            refused: HashSet::new(),
        }
    }

    pub(crate) async fn run(
        mut self,
        mut triggers: mpsc::Receiver<Trigger>,
        mut stop: watch::Receiver<bool>,
    ) {
        loop {
            let trigger = tokio::select! {
                Some(trigger) = triggers.recv() => trigger,
                _ = stop.changed() => break,
                else => break,
            };
            let (peer, result) = match trigger {
                Trigger::Peer(peer) => (peer, self.sync_with(peer).await),
                Trigger::Announced {
                    from,
                    origin,
                    block,
                    header,
                } => (from, self.announced(from, origin, block, *header).await),
            };
            match result {
                Ok(0) => {}
                Ok(appended) => tracing::info!(%peer, appended, "synced blocks from a peer"),
                Err(error @ NetworkError::GenesisMismatch(_)) => {
                    tracing::warn!(%error, "refusing a peer of another network");
                    self.net
                        .penalize(peer, Offence::OtherNetwork, error.to_string())
                        .await;
                }
                Err(error @ NetworkError::Protocol { .. }) => {
                    self.net
                        .penalize(peer, Offence::Protocol, error.to_string())
                        .await;
                }
                Err(NetworkError::Stopped) => break,
                Err(error) => tracing::warn!(%peer, %error, "sync with a peer failed"),
            }
        }
    }

    fn holds(&self, block: &BlockHash) -> bool {
        self.chain.contains(block).unwrap_or(false)
    }

    /// Compares tips with `peer` and fetches what it has and this node lacks.
    async fn sync_with(&mut self, peer: PeerId) -> Result<usize> {
        let status = match self.net.sync_request(peer, SyncRequest::Status).await? {
            SyncResponse::Status(status) => status,
            other => {
                return Err(NetworkError::Protocol {
                    peer,
                    reason: format!("answered a status request with {other:?}"),
                });
            }
        };
        self.check_network(peer, &status)?;
        let wanted: Vec<BlockHash> = status
            .tips
            .iter()
            .map(|tip| tip.hash)
            .filter(|hash| !self.holds(hash) && !self.refused.contains(hash))
            .collect();
        if wanted.is_empty() {
            return Ok(0);
        }
        self.fetch_and_append(peer, None, wanted, HashMap::new())
            .await
    }

    /// A peer on another network has other genesis blocks.
    fn check_network(&self, peer: PeerId, status: &ChainStatus) -> Result<()> {
        let ours = genesis_hashes(&self.chain);
        if status.genesis != ours {
            let theirs = status
                .genesis
                .first()
                .copied()
                .unwrap_or(BlockHash([0; 32]));
            return Err(NetworkError::GenesisMismatch(Box::new(GenesisMismatch {
                peer,
                ours: ours[0],
                theirs,
            })));
        }
        Ok(())
    }

    async fn announced(
        &mut self,
        from: PeerId,
        origin: Option<PeerId>,
        block: BlockHash,
        header: BlockHeader,
    ) -> Result<usize> {
        if self.holds(&block) || self.refused.contains(&block) {
            return Ok(0);
        }
        let fetched = HashMap::from([(block, header)]);
        self.fetch_and_append(from, origin, vec![block], fetched)
            .await
    }

    /// Fetches the headers of `wanted` and of every ancestor and dependency this node lacks
    /// from `peer`, then appends them in dependency order with their payloads.
    async fn fetch_and_append(
        &mut self,
        peer: PeerId,
        origin: Option<PeerId>,
        wanted: Vec<BlockHash>,
        mut fetched: HashMap<BlockHash, BlockHeader>,
    ) -> Result<usize> {
        let mut queue = wanted;
        let mut walked: HashSet<BlockHash> = HashSet::new();
        while let Some(block) = queue.pop() {
            if self.holds(&block) || !walked.insert(block) {
                continue;
            }
            if fetched.len() > SYNC_HEADERS_MAX {
                return Err(NetworkError::Protocol {
                    peer,
                    reason: format!("more than {SYNC_HEADERS_MAX} unknown headers in one sync"),
                });
            }
            if let Some(header) = fetched.get(&block) {
                queue.extend(self.missing_links(header, &fetched));
                continue;
            }
            let headers = self.ancestors(peer, block).await?;
            let mut oldest: Option<BlockHeader> = None;
            for (hash, header) in headers {
                if self.holds(&hash) {
                    oldest = None;
                    break;
                }
                queue.extend(
                    header
                        .depends_on
                        .iter()
                        .filter(|dependency| {
                            !self.holds(dependency) && !fetched.contains_key(*dependency)
                        })
                        .copied(),
                );
                walked.insert(hash);
                oldest = Some(header.clone());
                fetched.insert(hash, header);
            }
            if let Some(oldest) = oldest
                && let Some(parent) = oldest.prev_hash
                && !self.holds(&parent)
                && !fetched.contains_key(&parent)
            {
                queue.push(parent);
            }
        }
        let order = dependency_order(&fetched);
        let mut holders = vec![peer];
        holders.extend(origin.filter(|origin| *origin != peer));
        for other in self.net.connected().await? {
            if !holders.contains(&other) {
                holders.push(other);
            }
        }
        let mut appended = 0;
        for block in order {
            let Some(header) = fetched.remove(&block) else {
                continue;
            };
            if self.holds(&block) || self.refused.contains(&block) {
                continue;
            }
            if header
                .prev_hash
                .into_iter()
                .chain(header.depends_on.iter().copied())
                .any(|link| self.refused.contains(&link))
            {
                self.refuse(block);
                continue;
            }
            let payload = fetch_payload(&self.net, &self.chain, block, &header, &holders).await?;
            if self.append(peer, block, header, payload).await? {
                appended += 1;
            }
        }
        Ok(appended)
    }

    /// The parent and dependencies of `header` that this node neither holds nor has fetched.
    fn missing_links(
        &self,
        header: &BlockHeader,
        fetched: &HashMap<BlockHash, BlockHeader>,
    ) -> Vec<BlockHash> {
        header
            .prev_hash
            .into_iter()
            .chain(header.depends_on.iter().copied())
            .filter(|link| !self.holds(link) && !fetched.contains_key(link))
            .collect()
    }

    /// `block` and its ancestors from `peer`, newest first, each checked to hash as named and
    /// to link to the one before it.
    async fn ancestors(
        &self,
        peer: PeerId,
        block: BlockHash,
    ) -> Result<Vec<(BlockHash, BlockHeader)>> {
        let request = SyncRequest::Ancestors {
            from: block,
            max: HEADERS_PER_RESPONSE_MAX,
        };
        let encoded = match self.net.sync_request(peer, request).await? {
            SyncResponse::Headers(headers) => headers,
            SyncResponse::Refused(reason) => {
                return Err(NetworkError::Request { peer, reason });
            }
            other => {
                return Err(NetworkError::Protocol {
                    peer,
                    reason: format!("answered an ancestors request with {other:?}"),
                });
            }
        };
        let protocol = |reason: String| NetworkError::Protocol { peer, reason };
        let mut expected = Some(block);
        let mut headers = Vec::with_capacity(encoded.len());
        for bytes in encoded {
            let header = BlockHeader::decode(&bytes)
                .map_err(|error| protocol(format!("sent an undecodable header: {error}")))?;
            let hash = header.hash();
            if Some(hash) != expected {
                return Err(protocol(format!(
                    "sent header {hash} where {} was expected",
                    expected.map_or("nothing".to_owned(), |block| block.to_string())
                )));
            }
            expected = header.prev_hash;
            headers.push((hash, header));
        }
        if headers.is_empty() {
            return Err(NetworkError::Request {
                peer,
                reason: format!("does not hold block {block}"),
            });
        }
        Ok(headers)
    }

    /// Appends one fetched block; `Ok(false)` when the store refused it (remembered, logged)
    /// or already held it.
    async fn append(
        &mut self,
        peer: PeerId,
        block: BlockHash,
        header: BlockHeader,
        payload: FetchedPayload,
    ) -> Result<bool> {
        let chain = Arc::clone(&self.chain);
        let stored_header = header.clone();
        let result = tokio::task::spawn_blocking(move || {
            let hash = payload.append(&chain, &stored_header)?;
            let candidate = chain.is_candidate(&hash)?;
            Ok::<_, blyan_chain::Error>(candidate)
        })
        .await
        .map_err(|error| NetworkError::Start {
            reason: format!("the append task failed: {error}"),
        })?;
        match result {
            Ok(candidate) => {
                NetworkStats::add(&self.net.stats().blocks_synced, 1);
                tracing::info!(%block, %peer, kind = %header.kind, candidate, "block synced");
                let _ = self
                    .appended
                    .send(Appended {
                        block,
                        header,
                        candidate,
                        from: peer,
                    })
                    .await;
                Ok(true)
            }
            Err(blyan_chain::Error::AlreadyExists { .. }) => Ok(false),
            Err(error) if error.is_invalid_block() => {
                NetworkStats::add(&self.net.stats().blocks_refused, 1);
                tracing::warn!(%block, %peer, %error, "the store refused a block from a peer");
                self.refuse(block);
                Ok(false)
            }
            Err(error) => Err(error.into()),
        }
    }

    fn refuse(&mut self, block: BlockHash) {
        if self.refused.len() >= REFUSED_REMEMBERED_MAX {
            self.refused.clear();
        }
        self.refused.insert(block);
    }
}

/// The blocks of `fetched` ordered so each comes after its parent and dependencies among them;
/// ties broken by (timestamp, chain, height, hash) so every node appends in the same order.
fn dependency_order(fetched: &HashMap<BlockHash, BlockHeader>) -> Vec<BlockHash> {
    let key = |hash: &BlockHash| {
        let header = &fetched[hash];
        (
            header.timestamp_ms,
            header.chain.letter(),
            header.height,
            *hash,
        )
    };
    let mut waiting: HashMap<BlockHash, usize> = HashMap::new();
    let mut children: HashMap<BlockHash, Vec<BlockHash>> = HashMap::new();
    for (hash, header) in fetched {
        let links: Vec<BlockHash> = header
            .prev_hash
            .into_iter()
            .chain(header.depends_on.iter().copied())
            .filter(|link| fetched.contains_key(link))
            .collect();
        waiting.insert(*hash, links.len());
        for link in links {
            children.entry(link).or_default().push(*hash);
        }
    }
    let mut ready: BTreeSet<_> = waiting
        .iter()
        .filter(|(_, count)| **count == 0)
        .map(|(hash, _)| key(hash))
        .collect();
    let mut order = Vec::with_capacity(fetched.len());
    while let Some(next) = ready.pop_first() {
        let hash = next.3;
        order.push(hash);
        for child in children.get(&hash).into_iter().flatten() {
            let count = waiting.get_mut(child).expect("every child was counted");
            *count -= 1;
            if *count == 0 {
                ready.insert(key(child));
            }
        }
    }
    order
}
