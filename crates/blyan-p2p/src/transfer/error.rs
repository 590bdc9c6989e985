//! The one error type of payload transfer.

use blyan_chain::PayloadHash;

use super::decode::{BadRangeReason, SinkError};
use super::wire::RangeError;

/// What can go wrong serving, verifying or fetching payload ranges.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// Received bytes fail verification against the payload hash. Every group of the response
    /// before `offset` verified (and was written); nothing from `offset` on was written.
    #[error("payload {payload}: received bytes from offset {offset} fail verification ({reason})")]
    BadRange {
        /// The payload.
        payload: PayloadHash,
        /// Start of the first chunk group that did not verify.
        offset: u64,
        /// How it failed.
        reason: BadRangeReason,
    },
    /// Data handed to the serving side does not hash to the payload it was offered as.
    #[error("{size} bytes hash to {got}, not to payload {expected}")]
    NotThePayload {
        /// The payload the data was offered as.
        expected: PayloadHash,
        /// What the data hashes to.
        got: PayloadHash,
        /// The data's length.
        size: u64,
    },
    /// Data handed to the serving side is not as long as the outboard it is served with.
    #[error(
        "payload {payload}: {data_bytes} bytes of data for an outboard of a {size}-byte payload"
    )]
    DataSizeMismatch {
        /// The payload.
        payload: PayloadHash,
        /// The data's length.
        data_bytes: u64,
        /// The payload's length per its outboard.
        size: u64,
    },
    /// Requested ranges break a rule of the protocol.
    #[error("payload {payload}: {source}")]
    InvalidRanges {
        /// The payload.
        payload: PayloadHash,
        /// The broken rule.
        source: RangeError,
    },
    /// bao-tree failed to encode ranges of in-memory data (a local fault, not the requester's).
    #[error("payload {payload}: encoding ranges failed: {reason}")]
    Encode {
        /// The payload.
        payload: PayloadHash,
        /// bao-tree's description.
        reason: String,
    },
    /// The sink refused verified bytes (a local fault: the fetch stops).
    #[error(transparent)]
    Sink(#[from] SinkError),
    /// Ranges are still missing and every holder is dropped (refused, failed too often or sent
    /// bad bytes too often).
    #[error(
        "payload {payload}: {missing_bytes} bytes still missing and none of {holders} holders is usable"
    )]
    NoHoldersLeft {
        /// The payload.
        payload: PayloadHash,
        /// Bytes not yet fetched.
        missing_bytes: u64,
        /// Holders the fetch started with.
        holders: usize,
    },
    /// A [`FetchOptions`](super::FetchOptions) field is out of its bounds.
    #[error("fetch option `{field}`: {reason}")]
    InvalidOptions {
        /// The field.
        field: &'static str,
        /// Its bound.
        reason: &'static str,
    },
}

/// Payload transfer's result.
pub type Result<T, E = TransferError> = std::result::Result<T, E>;
