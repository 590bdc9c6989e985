//! The two messages of the payload-transfer protocol and the limits a request must respect.
//!
//! Both are plain serde types, so any request-response codec carries them; the encoded ranges
//! serialize as one byte string (`serialize_bytes`), so a binary codec (CBOR, bincode) moves them
//! without a per-byte cost. Field names and variant names are the stable wire contract.

use std::ops::Range;

use blyan_chain::PayloadHash;
use serde::{Deserialize, Serialize};

/// Bytes per chunk group: the unit a range is requested, verified and written in (bao-tree's
/// `BlockSize::from_chunk_log(4)`, 16 blake3 chunks of 1 KiB). Every range starts on a multiple of
/// it and ends on one, or at the payload's end.
pub const GROUP_BYTES: u64 = 16 * 1024;

/// Most payload bytes one response may carry. Small enough that a whole response sits in one
/// request-response message (libp2p's default response limit is 10 MiB), large enough that a
/// 350 MB payload needs under a hundred requests.
pub const RANGE_REQUEST_DATA_BYTES_MAX: u64 = 4 * 1024 * 1024;

/// Most ranges one request may name. Each range costs up to one tree path of hash pairs in the
/// response, so this bounds the proof overhead next to [`RANGE_REQUEST_DATA_BYTES_MAX`].
pub const RANGE_REQUEST_RANGES_MAX: usize = 64;

/// Most bytes an encoded response may take: the data plus its hash pairs. A bao-tree response
/// carries one 64-byte pair per tree node above the requested groups; for at most
/// [`RANGE_REQUEST_RANGES_MAX`] ranges over a tree of at most 2^50 groups that is under 512 KiB
/// (checked by a test at the extreme). A codec's response limit must be at least this.
pub const RANGE_RESPONSE_BYTES_MAX: u64 = RANGE_REQUEST_DATA_BYTES_MAX + 1024 * 1024;

const _: () = assert!(
    RANGE_REQUEST_DATA_BYTES_MAX.is_multiple_of(GROUP_BYTES),
    "a full request is whole groups, so splitting never produces a short group mid-payload"
);
const _: () = assert!(
    RANGE_RESPONSE_BYTES_MAX <= 10 * 1024 * 1024,
    "a response fits libp2p request-response's default 10 MiB response limit"
);

/// Asks a holder for verifiable encodings of byte ranges of one payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeRequest {
    /// The payload, by the blake3 hash the chain commits to.
    pub payload: PayloadHash,
    /// The payload's length in bytes, as the chain records it (the tree's shape depends on it).
    pub size: u64,
    /// Byte ranges, ascending and disjoint, each starting on a [`GROUP_BYTES`] boundary and
    /// ending on one or at `size`.
    pub ranges: Vec<Range<u64>>,
}

/// A holder's answer to a [`RangeRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RangeResponse {
    /// bao-tree's pre-order encoding of the requested ranges: for each tree node on the way to
    /// the requested groups its (left, right) hash pair (64 bytes), and each requested group's
    /// bytes, in tree order. Verified against the payload hash by
    /// [`decode_ranges`](super::decode_ranges).
    Encoded(#[serde(with = "byte_string")] Vec<u8>),
    /// The holder will not serve this request.
    Refused(Refusal),
}

impl RangeResponse {
    /// The refusal of a payload this node does not hold.
    pub fn not_held() -> Self {
        Self::Refused(Refusal::NotHeld)
    }
}

/// Why a holder refused a [`RangeRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The holder does not hold this payload.
    #[error("payload not held")]
    NotHeld,
    /// The holder holds a payload with this hash but of another length: the requester's header
    /// and the holder's disagree.
    #[error("payload held with {held} bytes, the request says another size")]
    SizeMismatch {
        /// The length the holder has.
        held: u64,
    },
    /// The request's ranges break a rule of the protocol.
    #[error("invalid ranges: {0}")]
    InvalidRanges(RangeError),
}

/// A rule of [`RangeRequest::ranges`] that a request breaks. Checked by the server before it
/// encodes and by the client before it decodes or sends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[non_exhaustive]
pub enum RangeError {
    /// More ranges than [`RANGE_REQUEST_RANGES_MAX`].
    #[error("{count} ranges, at most {max}")]
    TooManyRanges {
        /// Ranges in the request.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// More data than [`RANGE_REQUEST_DATA_BYTES_MAX`].
    #[error("{data_bytes} bytes requested, at most {max} per request")]
    TooLarge {
        /// Sum of the ranges' lengths.
        data_bytes: u64,
        /// The limit.
        max: u64,
    },
    /// A range is empty or reversed.
    #[error("range {start}..{end} is empty")]
    Empty {
        /// Its start.
        start: u64,
        /// Its end.
        end: u64,
    },
    /// A range does not start on a group boundary, or ends neither on one nor at the size.
    #[error("range {start}..{end} is not whole {GROUP_BYTES}-byte groups")]
    Unaligned {
        /// Its start.
        start: u64,
        /// Its end.
        end: u64,
    },
    /// A range ends past the payload.
    #[error("range {start}..{end} ends past the payload's {size} bytes")]
    OutOfBounds {
        /// Its start.
        start: u64,
        /// Its end.
        end: u64,
        /// The payload's length.
        size: u64,
    },
    /// A range starts before the previous one ends (ranges must ascend and not overlap).
    #[error("range starting at {start} overlaps or precedes the one ending at {previous_end}")]
    Unordered {
        /// Its start.
        start: u64,
        /// The previous range's end.
        previous_end: u64,
    },
}

impl RangeRequest {
    /// Checks every rule of [`Self::ranges`] and returns the number of data bytes requested.
    /// An empty list is valid (it asks for nothing).
    pub fn check(&self) -> Result<u64, RangeError> {
        check_ranges(self.size, &self.ranges)
    }
}

/// The rules of [`RangeRequest::ranges`], with the request's data bytes on success.
pub(crate) fn check_ranges(size: u64, ranges: &[Range<u64>]) -> Result<u64, RangeError> {
    if ranges.len() > RANGE_REQUEST_RANGES_MAX {
        return Err(RangeError::TooManyRanges {
            count: ranges.len(),
            max: RANGE_REQUEST_RANGES_MAX,
        });
    }
    let mut previous_end: Option<u64> = None;
    let mut data_bytes = 0u64;
    for range in ranges {
        let (start, end) = (range.start, range.end);
        if start >= end {
            return Err(RangeError::Empty { start, end });
        }
        if end > size {
            return Err(RangeError::OutOfBounds { start, end, size });
        }
        if !start.is_multiple_of(GROUP_BYTES) || (!end.is_multiple_of(GROUP_BYTES) && end != size) {
            return Err(RangeError::Unaligned { start, end });
        }
        if let Some(previous_end) = previous_end
            && start < previous_end
        {
            return Err(RangeError::Unordered {
                start,
                previous_end,
            });
        }
        previous_end = Some(end);
        data_bytes += end - start;
    }
    if data_bytes > RANGE_REQUEST_DATA_BYTES_MAX {
        return Err(RangeError::TooLarge {
            data_bytes,
            max: RANGE_REQUEST_DATA_BYTES_MAX,
        });
    }
    Ok(data_bytes)
}

/// Serde for the encoded bytes as one byte string (CBOR major type 2, bincode length + bytes);
/// reads a sequence of numbers too, for self-describing text formats such as JSON.
mod byte_string {
    use std::fmt;

    use serde::{Deserializer, Serializer, de};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bytes(bytes)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        deserializer.deserialize_byte_buf(ByteBufVisitor)
    }

    struct ByteBufVisitor;

    impl<'de> de::Visitor<'de> for ByteBufVisitor {
        type Value = Vec<u8>;

        fn expecting(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
            formatter.write_str("a byte string")
        }

        fn visit_bytes<E: de::Error>(self, bytes: &[u8]) -> Result<Vec<u8>, E> {
            Ok(bytes.to_vec())
        }

        fn visit_byte_buf<E: de::Error>(self, bytes: Vec<u8>) -> Result<Vec<u8>, E> {
            Ok(bytes)
        }

        fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
            // Bounded: the codec already bounded the message; this only caps the reservation.
            let capacity = seq
                .size_hint()
                .unwrap_or(0)
                .min(super::RANGE_RESPONSE_BYTES_MAX as usize);
            let mut bytes = Vec::with_capacity(capacity);
            while let Some(byte) = seq.next_element::<u8>()? {
                bytes.push(byte);
            }
            Ok(bytes)
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::single_range_in_vec_init,
    reason = "a list of one range is a request for one range"
)]
mod tests {
    use super::*;

    fn request(size: u64, ranges: Vec<Range<u64>>) -> RangeRequest {
        RangeRequest {
            payload: PayloadHash([3; 32]),
            size,
            ranges,
        }
    }

    #[test]
    fn check_accepts_whole_groups_and_a_short_last_group() {
        let size = 3 * GROUP_BYTES + 10;
        assert_eq!(request(size, vec![]).check(), Ok(0));
        assert_eq!(
            request(size, vec![0..GROUP_BYTES, 2 * GROUP_BYTES..size]).check(),
            Ok(2 * GROUP_BYTES + 10)
        );
    }

    #[test]
    fn check_refuses_each_broken_rule_with_its_data() {
        let size = 4 * GROUP_BYTES;
        let g = GROUP_BYTES;
        assert_eq!(
            request(size, vec![g..g]).check(),
            Err(RangeError::Empty { start: g, end: g })
        );
        assert_eq!(
            request(size, vec![1..g]).check(),
            Err(RangeError::Unaligned { start: 1, end: g })
        );
        assert_eq!(
            request(size, vec![0..g + 1]).check(),
            Err(RangeError::Unaligned {
                start: 0,
                end: g + 1
            })
        );
        assert_eq!(
            request(size, vec![0..5 * g]).check(),
            Err(RangeError::OutOfBounds {
                start: 0,
                end: 5 * g,
                size
            })
        );
        assert_eq!(
            request(size, vec![2 * g..3 * g, g..2 * g]).check(),
            Err(RangeError::Unordered {
                start: g,
                previous_end: 3 * g
            })
        );
        assert_eq!(
            request(size, vec![0..2 * g, g..3 * g]).check(),
            Err(RangeError::Unordered {
                start: g,
                previous_end: 2 * g
            })
        );
    }

    #[test]
    fn check_holds_the_data_limit_at_the_bound_and_one_group_past_it() {
        let size = 1 << 30;
        assert_eq!(
            request(size, vec![0..RANGE_REQUEST_DATA_BYTES_MAX]).check(),
            Ok(RANGE_REQUEST_DATA_BYTES_MAX)
        );
        let past = RANGE_REQUEST_DATA_BYTES_MAX + GROUP_BYTES;
        assert_eq!(
            request(size, vec![0..past]).check(),
            Err(RangeError::TooLarge {
                data_bytes: past,
                max: RANGE_REQUEST_DATA_BYTES_MAX
            })
        );
    }

    #[test]
    fn check_holds_the_range_count_limit_at_the_bound_and_one_past_it() {
        let ranges = |count: u64| -> Vec<Range<u64>> {
            (0..count)
                .map(|i| 2 * i * GROUP_BYTES..(2 * i + 1) * GROUP_BYTES)
                .collect()
        };
        let size = 1 << 30;
        let max = RANGE_REQUEST_RANGES_MAX as u64;
        assert_eq!(request(size, ranges(max)).check(), Ok(max * GROUP_BYTES));
        assert_eq!(
            request(size, ranges(max + 1)).check(),
            Err(RangeError::TooManyRanges {
                count: RANGE_REQUEST_RANGES_MAX + 1,
                max: RANGE_REQUEST_RANGES_MAX
            })
        );
    }

    #[test]
    fn messages_round_trip_through_json_and_bincode() {
        let req = request(100_000, vec![0..GROUP_BYTES, 3 * GROUP_BYTES..100_000]);
        let text = serde_json::to_string(&req).expect("serialize");
        assert_eq!(
            serde_json::from_str::<RangeRequest>(&text).expect("deserialize"),
            req
        );

        let config = bincode::config::standard();
        for response in [
            RangeResponse::Encoded((0..=255u8).cycle().take(70_000).collect()),
            RangeResponse::not_held(),
            RangeResponse::Refused(Refusal::SizeMismatch { held: 7 }),
            RangeResponse::Refused(Refusal::InvalidRanges(RangeError::Empty {
                start: 4,
                end: 2,
            })),
        ] {
            let text = serde_json::to_string(&response).expect("serialize");
            assert_eq!(
                serde_json::from_str::<RangeResponse>(&text).expect("deserialize"),
                response
            );
            let bytes = bincode::serde::encode_to_vec(&response, config).expect("encode");
            let (back, read): (RangeResponse, usize) =
                bincode::serde::decode_from_slice(&bytes, config).expect("decode");
            assert_eq!((back, read), (response, bytes.len()));
        }
    }

    #[test]
    fn encoded_bytes_travel_as_one_byte_string_in_bincode() {
        let data = vec![0xabu8; 10_000];
        let bytes = bincode::serde::encode_to_vec(
            RangeResponse::Encoded(data),
            bincode::config::standard(),
        )
        .expect("encode");
        // Variant tag (1) + varint length (3) + the bytes themselves: no per-byte framing.
        assert_eq!(bytes.len(), 1 + 3 + 10_000);
    }
}
