//! Verified payload transfer: moving a payload's bytes between nodes in ranges, each range
//! proven against the blake3 hash the chain commits to, so one bad range is caught (and its
//! sender named) without the whole payload.
//!
//! # What it owns
//! - The serving side: a payload's hash tree ([`Outboard`], bao-tree's pre-order outboard over
//!   16 KiB chunk groups, ≈ 0.4 % of the payload), a bounded LRU [`OutboardCache`] of them, and
//!   [`respond`]/[`encode_ranges`], which read only the requested groups of a (mapped) payload.
//! - The wire: [`RangeRequest`] and [`RangeResponse`], plain serde types.
//! - The receiving side: [`decode_ranges`] verifies a response group by group and writes only
//!   verified groups to a [`RangeSink`].
//! - Fetching from several holders: [`fetch`] splits the missing ranges into requests, keeps
//!   several in flight per holder over all holders, penalizes a holder whose bytes fail
//!   verification ([`HolderScore`], bans doubling from 15 s), retries failures elsewhere with
//!   backoff, and reports who sent what ([`FetchReport`]).
//!
//! It knows nothing of libp2p: a [`RangeSource`] carries requests (libp2p request-response in
//! the node, memory in tests) and a [`RangeSink`] takes verified bytes (the chain's staging file).
//!
//! # Invariants
//! - The tree's root is the plain blake3 hash of the payload (bao-tree with chunk groups hashes
//!   exactly as blake3 does), so a [`blyan_chain::PayloadHash`] is all a receiver needs.
//! - No unverified byte reaches a sink; a sink sees whole 16 KiB groups at group offsets (the last
//!   group of a payload may be short).
//! - A server never copies a whole payload: it reads the requested groups into the response.
//!
//! # Wire format
//! A [`RangeRequest`] names the payload by hash, its length, and up to
//! [`RANGE_REQUEST_RANGES_MAX`] ascending, disjoint byte ranges, each starting on a
//! [`GROUP_BYTES`] boundary and ending on one or at the payload's end, together at most
//! [`RANGE_REQUEST_DATA_BYTES_MAX`] (4 MiB). The answer is [`RangeResponse::Encoded`], bao-tree's
//! pre-order range encoding: walking the tree from the root, each node over a requested group
//! contributes its (left, right) child hashes (64 bytes) and each requested group its bytes; at
//! most [`RANGE_RESPONSE_BYTES_MAX`] in all. Or [`RangeResponse::Refused`] with a [`Refusal`]
//! (not held, another size, invalid ranges). The encoded bytes serialize as one serde byte
//! string, so a binary codec (CBOR: libp2p's `request_response::cbor`) carries them as is; set the
//! codec's response limit to at least [`RANGE_RESPONSE_BYTES_MAX`].
//!
//! # Example
//! ```
//! use std::sync::Mutex;
//! use blyan_p2p::transfer::{self, GROUP_BYTES, Outboard, RangeSink, SinkError};
//! use blyan_chain::PayloadHash;
//!
//! struct Buffer(Mutex<Vec<u8>>);
//! impl RangeSink for Buffer {
//!     fn write_at(&self, offset: u64, bytes: &[u8]) -> Result<(), SinkError> {
//!         let mut buffer = self.0.lock().expect("not poisoned");
//!         buffer[offset as usize..offset as usize + bytes.len()].copy_from_slice(bytes);
//!         Ok(())
//!     }
//! }
//!
//! let data: Vec<u8> = (0..100_000u32).map(|i| i as u8).collect();
//! let payload = PayloadHash(*blake3::hash(&data).as_bytes());
//! // Server: the tree once, then any ranges.
//! let outboard = Outboard::compute(payload, &data)?;
//! let ranges = vec![GROUP_BYTES..3 * GROUP_BYTES, 6 * GROUP_BYTES..100_000];
//! let encoded = transfer::encode_ranges(&data, &outboard, &ranges)?;
//! // Client: verify against the hash alone and write what verified.
//! let sink = Buffer(Mutex::new(vec![0; data.len()]));
//! let written = transfer::decode_ranges(payload, 100_000, &ranges, &encoded, &sink)?;
//! assert_eq!(written, 2 * GROUP_BYTES + (100_000 - 6 * GROUP_BYTES));
//! assert_eq!(sink.0.lock().expect("not poisoned")[6 * GROUP_BYTES as usize..], data[6 * GROUP_BYTES as usize..]);
//! # Ok::<(), transfer::TransferError>(())
//! ```

mod decode;
mod error;
mod fetch;
mod outboard;
mod wire;

#[cfg(test)]
mod tests;

pub use decode::{BadRangeReason, RangeSink, SinkError, decode_ranges};
pub use error::{Result, TransferError};
pub use fetch::{
    FAILURES_REPORTED_MAX, Failure, FailureKind, FetchError, FetchOptions, FetchReport,
    HolderScore, IN_FLIGHT_PER_HOLDER_MAX, Offense, RangeSource, SourceError, fetch,
};
pub use outboard::{
    OUTBOARD_CACHE_BYTES_DEFAULT, Outboard, OutboardCache, encode_ranges, encoded_len, respond,
};
pub use wire::{
    GROUP_BYTES, RANGE_REQUEST_DATA_BYTES_MAX, RANGE_REQUEST_RANGES_MAX, RANGE_RESPONSE_BYTES_MAX,
    RangeError, RangeRequest, RangeResponse, Refusal,
};
