//! The receiving side: verify an encoded response group by group against the payload hash and
//! hand only verified groups to a [`RangeSink`].

use std::ops::Range;

use bao_tree::io::sync::DecodeResponseIter;
use bao_tree::io::{BaoContentItem, DecodeError};
use bao_tree::{BaoTree, blake3};
use blyan_chain::PayloadHash;

use super::error::{Result, TransferError};
use super::outboard::{BLOCK_SIZE, chunk_ranges};
use super::wire::{GROUP_BYTES, check_ranges};

/// Where verified payload bytes go (the fetcher's staging file, a test's buffer).
///
/// Every call writes one whole verified group: `offset` is a multiple of
/// [`GROUP_BYTES`](super::GROUP_BYTES) and `bytes` is one group long, or shorter only when it ends
/// the payload. Calls for one payload never overlap, may come in any order across responses, and
/// may repeat a group (a range fetched again after a restart); they come from the task that
/// polls [`fetch`](super::fetch), so a write should be quick (a `pwrite` into a file, not a
/// network round trip).
pub trait RangeSink: Send + Sync {
    /// Writes verified `bytes` at `offset` of the payload.
    fn write_at(&self, offset: u64, bytes: &[u8]) -> Result<(), SinkError>;
}

/// A sink's failure to write (disk full, staging file gone). Stops a fetch: it is local, not the
/// holder's fault.
#[derive(Debug, thiserror::Error)]
#[error("writing {len} verified bytes at offset {offset}: {source}")]
pub struct SinkError {
    /// Where the write started.
    pub offset: u64,
    /// How many bytes it carried.
    pub len: u64,
    /// Why it failed.
    #[source]
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl SinkError {
    /// The failure of a write of `len` bytes at `offset`.
    pub fn new(
        offset: u64,
        len: u64,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> Self {
        Self {
            offset,
            len,
            source: source.into(),
        }
    }
}

/// How an encoded response failed verification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum BadRangeReason {
    /// A group's bytes do not hash to the value its proof says.
    #[error("group hash mismatch")]
    GroupHashMismatch,
    /// A hash pair on the way to the group does not hash to its parent (the proof is forged).
    #[error("proof hash mismatch")]
    ProofHashMismatch,
    /// The response ends before the group.
    #[error("response truncated")]
    Truncated,
    /// The response carries bytes after everything requested (all requested groups verified).
    #[error("{extra} bytes after the requested ranges")]
    TrailingBytes {
        /// How many.
        extra: u64,
    },
}

/// Verifies `encoded` (a server's [`encode_ranges`](super::encode_ranges) of `ranges` of the
/// `size`-byte payload `payload`) group by group and writes each verified group to `sink`, in
/// ascending order. Returns the payload bytes written.
///
/// On [`TransferError::BadRange`] every group before its `offset` verified and was written, and
/// nothing at or after it was: no unverified byte ever reaches the sink.
pub fn decode_ranges(
    payload: PayloadHash,
    size: u64,
    ranges: &[Range<u64>],
    encoded: &[u8],
    sink: &(impl RangeSink + ?Sized),
) -> Result<u64> {
    check_ranges(size, ranges)
        .map_err(|source| TransferError::InvalidRanges { payload, source })?;
    let bad = |offset, reason| TransferError::BadRange {
        payload,
        offset,
        reason,
    };
    // Groups arrive in ascending order, so the next expected group names where a failure is.
    let mut groups = ranges
        .iter()
        .flat_map(|range| (range.start..range.end).step_by(GROUP_BYTES as usize))
        .peekable();
    let end = ranges.last().map_or(0, |range| range.end);
    let mut reader = encoded;
    let mut written = 0u64;
    if !ranges.is_empty() {
        let set = chunk_ranges(ranges);
        let tree = BaoTree::new(size, BLOCK_SIZE);
        let root = blake3::Hash::from_bytes(payload.0);
        for item in DecodeResponseIter::new(root, tree, &mut reader, &set) {
            let next = groups.peek().copied().unwrap_or(end);
            match item {
                Ok(BaoContentItem::Parent(_)) => {}
                Ok(BaoContentItem::Leaf(leaf)) => {
                    debug_assert_eq!(leaf.offset, next, "groups decode in ascending order");
                    groups.next();
                    sink.write_at(leaf.offset, &leaf.data)?;
                    written += leaf.data.len() as u64;
                }
                Err(DecodeError::LeafHashMismatch(_)) => {
                    return Err(bad(next, BadRangeReason::GroupHashMismatch));
                }
                Err(DecodeError::ParentHashMismatch(_)) => {
                    return Err(bad(next, BadRangeReason::ProofHashMismatch));
                }
                Err(
                    DecodeError::LeafNotFound(_)
                    | DecodeError::ParentNotFound(_)
                    | DecodeError::Io(_),
                ) => return Err(bad(next, BadRangeReason::Truncated)),
            }
        }
    }
    debug_assert!(groups.next().is_none(), "every requested group decoded");
    if !reader.is_empty() {
        let extra = reader.len() as u64;
        return Err(bad(end, BadRangeReason::TrailingBytes { extra }));
    }
    Ok(written)
}
