//! The serving side: a payload's hash tree ([`Outboard`]), a bounded cache of them, and encoding
//! requested ranges straight from the (memory-mapped) payload bytes.

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, PoisonError};

use bao_tree::io::outboard::PreOrderMemOutboard;
use bao_tree::io::sync::truncate_ranges;
use bao_tree::iter::BaoChunk;
use bao_tree::{BaoTree, BlockSize, ChunkNum, ChunkRanges};
use blyan_chain::PayloadHash;

use super::error::{Result, TransferError};
use super::wire::{GROUP_BYTES, RangeRequest, RangeResponse, Refusal, check_ranges};

/// bao-tree's chunk groups of 16 blake3 chunks (16 KiB): the tree stores one hash pair per group,
/// so the outboard is 64 / 16 384 ≈ 0.4 % of the payload.
pub(crate) const BLOCK_SIZE: BlockSize = BlockSize::from_chunk_log(4);

const _: () = assert!(
    BLOCK_SIZE.bytes() as u64 == GROUP_BYTES,
    "the wire's group is the tree's chunk group: a requested group verifies on its own"
);

/// Bytes an [`OutboardCache`] keeps by default: the trees of about 16 GiB of payloads.
pub const OUTBOARD_CACHE_BYTES_DEFAULT: u64 = 64 * 1024 * 1024;

/// Bytes an entry costs in an [`OutboardCache`] besides its hash pairs, so a cache of payloads
/// of one group (no hash pairs) is still bounded.
const CACHE_ENTRY_OVERHEAD_BYTES: u64 = 256;

/// The blake3 hash tree of one payload down to its 16 KiB groups (bao-tree pre-order outboard),
/// checked to have the payload's hash as its root. What a server needs, besides the bytes, to
/// prove any group it sends.
#[derive(Debug, Clone)]
pub struct Outboard {
    payload: PayloadHash,
    tree: PreOrderMemOutboard,
}

impl Outboard {
    /// Hashes `data` into its tree (one blake3 pass, ≈ 0.1 s for 350 MB: call it off the async
    /// threads) and checks that its root is `payload`.
    pub fn compute(payload: PayloadHash, data: &[u8]) -> Result<Self> {
        let tree = PreOrderMemOutboard::create(data, BLOCK_SIZE);
        let got = PayloadHash(*tree.root.as_bytes());
        if got != payload {
            return Err(TransferError::NotThePayload {
                expected: payload,
                got,
                size: data.len() as u64,
            });
        }
        Ok(Self { payload, tree })
    }

    /// The payload this tree proves.
    pub fn payload(&self) -> PayloadHash {
        self.payload
    }

    /// The payload's length in bytes.
    pub fn size(&self) -> u64 {
        self.tree.tree.size()
    }

    /// Bytes of hash pairs held (64 per pair, one pair per group but one).
    pub fn hash_bytes(&self) -> u64 {
        self.tree.data.len() as u64
    }
}

/// A bounded cache of [`Outboard`]s keyed by payload, evicting the least recently used, so a hot
/// payload's tree is computed once. Two callers that miss on the same payload at once both
/// compute it (the second insert wins); nothing else is ever computed twice while cached.
#[derive(Debug)]
pub struct OutboardCache {
    bytes_max: u64,
    inner: Mutex<CacheInner>,
}

#[derive(Debug, Default)]
struct CacheInner {
    entries: HashMap<PayloadHash, CacheEntry>,
    // Invariant: `bytes` is the sum of `entry_cost` over `entries`, at most `bytes_max`.
    bytes: u64,
    clock: u64,
}

#[derive(Debug)]
struct CacheEntry {
    outboard: Arc<Outboard>,
    last_used: u64,
}

fn entry_cost(outboard: &Outboard) -> u64 {
    outboard.hash_bytes() + CACHE_ENTRY_OVERHEAD_BYTES
}

impl OutboardCache {
    /// A cache holding at most `bytes_max` bytes of trees. A tree larger than that is still
    /// returned by [`Self::get_or_compute`], never kept.
    pub fn new(bytes_max: u64) -> Self {
        Self {
            bytes_max,
            inner: Mutex::new(CacheInner::default()),
        }
    }

    /// The cached tree of `payload`, if any (marks it recently used).
    pub fn get(&self, payload: &PayloadHash) -> Option<Arc<Outboard>> {
        let mut inner = self.lock();
        inner.clock += 1;
        let clock = inner.clock;
        let entry = inner.entries.get_mut(payload)?;
        entry.last_used = clock;
        Some(Arc::clone(&entry.outboard))
    }

    /// The cached tree of `payload`, or computes it from `data` (see [`Outboard::compute`]; call
    /// this off the async threads) and keeps it.
    pub fn get_or_compute(&self, payload: PayloadHash, data: &[u8]) -> Result<Arc<Outboard>> {
        if let Some(outboard) = self.get(&payload) {
            return Ok(outboard);
        }
        let outboard = Arc::new(Outboard::compute(payload, data)?);
        self.insert(Arc::clone(&outboard));
        Ok(outboard)
    }

    /// Keeps `outboard`, evicting least recently used trees until it fits.
    pub fn insert(&self, outboard: Arc<Outboard>) {
        let cost = entry_cost(&outboard);
        if cost > self.bytes_max {
            return;
        }
        let mut inner = self.lock();
        if let Some(old) = inner.entries.remove(&outboard.payload) {
            inner.bytes -= entry_cost(&old.outboard);
        }
        while inner.bytes + cost > self.bytes_max {
            let Some(oldest) = inner
                .entries
                .iter()
                .min_by_key(|(_, entry)| entry.last_used)
                .map(|(payload, _)| *payload)
            else {
                break;
            };
            if let Some(evicted) = inner.entries.remove(&oldest) {
                inner.bytes -= entry_cost(&evicted.outboard);
            }
        }
        inner.clock += 1;
        let last_used = inner.clock;
        inner.bytes += cost;
        inner.entries.insert(
            outboard.payload,
            CacheEntry {
                outboard,
                last_used,
            },
        );
        debug_assert!(inner.bytes <= self.bytes_max);
    }

    /// Bytes held now (hash pairs plus a fixed overhead per tree).
    pub fn bytes(&self) -> u64 {
        self.lock().bytes
    }

    /// Trees held now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether no tree is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        // No code under this lock panics; a poisoned lock still holds a consistent map.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Default for OutboardCache {
    fn default() -> Self {
        Self::new(OUTBOARD_CACHE_BYTES_DEFAULT)
    }
}

/// Byte ranges (already checked) as bao-tree chunk ranges: whole 1 KiB chunks, the last one
/// possibly short; group-aligned ranges give whole groups.
pub(crate) fn chunk_ranges(ranges: &[Range<u64>]) -> ChunkRanges {
    let mut set = ChunkRanges::empty();
    for range in ranges {
        set |= ChunkRanges::from(ChunkNum::full_chunks(range.start)..ChunkNum::chunks(range.end));
    }
    set
}

/// Length of the encoding of `ranges` (already checked) of a `size`-byte payload: 64 bytes per
/// hash pair on the way plus the groups' bytes.
pub fn encoded_len(size: u64, ranges: &[Range<u64>]) -> u64 {
    let tree = BaoTree::new(size, BLOCK_SIZE);
    let set = chunk_ranges(ranges);
    tree.ranges_pre_order_chunks_iter_ref(truncate_ranges(&set, size), 0)
        .map(|item| match item {
            BaoChunk::Parent { .. } => 64,
            BaoChunk::Leaf { size, .. } => size as u64,
        })
        .sum()
}

/// The verifiable encoding of `ranges` of a payload: the hash pairs on the way to each requested
/// group and the groups' bytes, in one buffer sized up front. Reads only the requested groups of
/// `data` (a mapped payload is not copied whole).
pub fn encode_ranges(data: &[u8], outboard: &Outboard, ranges: &[Range<u64>]) -> Result<Vec<u8>> {
    let payload = outboard.payload;
    let size = outboard.size();
    if data.len() as u64 != size {
        return Err(TransferError::DataSizeMismatch {
            payload,
            data_bytes: data.len() as u64,
            size,
        });
    }
    check_ranges(size, ranges)
        .map_err(|source| TransferError::InvalidRanges { payload, source })?;
    let mut encoded = Vec::with_capacity(encoded_len(size, ranges) as usize);
    bao_tree::io::sync::encode_ranges(data, &outboard.tree, &chunk_ranges(ranges), &mut encoded)
        .map_err(|error| TransferError::Encode {
            payload,
            reason: error.to_string(),
        })?;
    Ok(encoded)
}

/// A server's whole answer to `request` about a payload it holds as `data` with tree `outboard`
/// (a payload it does not hold is answered with [`RangeResponse::not_held`] by the caller).
/// Refusals are answers; `Err` is a local fault worth logging (then answer
/// [`RangeResponse::not_held`]).
pub fn respond(request: &RangeRequest, data: &[u8], outboard: &Outboard) -> Result<RangeResponse> {
    if request.payload != outboard.payload {
        return Ok(RangeResponse::not_held());
    }
    if request.size != outboard.size() {
        return Ok(RangeResponse::Refused(Refusal::SizeMismatch {
            held: outboard.size(),
        }));
    }
    if let Err(error) = request.check() {
        return Ok(RangeResponse::Refused(Refusal::InvalidRanges(error)));
    }
    encode_ranges(data, outboard, &request.ranges).map(RangeResponse::Encoded)
}
