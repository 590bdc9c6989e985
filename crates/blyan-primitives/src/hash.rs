//! Block and payload hashes: 32-byte blake3 digests with distinct types, so a payload hash can
//! never be passed where a block hash is expected. Computing them belongs to the chain; this
//! module only names, parses and prints them.

use std::fmt;

use crate::error::{Error, Result, clip};

/// The identity of a block: blake3 over the canonical encoding of its header without the
/// signature.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, bincode::Encode, bincode::Decode)]
pub struct BlockHash(pub [u8; 32]);

/// blake3 of a payload's bytes. A header commits to its payload through this hash and the
/// payload's length, so a header verifies without its payload.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, bincode::Encode, bincode::Decode)]
pub struct PayloadHash(pub [u8; 32]);

macro_rules! hash_type {
    ($ty:ident, $what:literal) => {
        impl $ty {
            /// All zero bytes; never the hash of anything in practice.
            pub const ZERO: Self = Self([0; 32]);

            /// The raw 32 bytes.
            pub const fn as_bytes(&self) -> &[u8; 32] {
                &self.0
            }

            /// Parses `0x`-prefixed (or bare) 64 hex digits, either case.
            pub fn parse(input: &str) -> Result<Self> {
                let digits = input.strip_prefix("0x").unwrap_or(input);
                if digits.len() != 64 {
                    return Err(Error::InvalidHash {
                        input: clip(input),
                        reason: "expected 64 hex digits",
                    });
                }
                let mut bytes = [0u8; 32];
                hex::decode_to_slice(digits, &mut bytes).map_err(|_| Error::InvalidHash {
                    input: clip(input),
                    reason: "not hexadecimal",
                })?;
                Ok(Self(bytes))
            }
        }

        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "0x{}", hex::encode(self.0))
            }
        }

        impl fmt::Debug for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($what, "(0x{})"), hex::encode(self.0))
            }
        }

        crate::text::text_form!($ty);
    };
}

hash_type!(BlockHash, "BlockHash");
hash_type!(PayloadHash, "PayloadHash");

impl BlockHash {
    /// Number of leading zero bits, the proof-of-work measure of a header hash.
    pub fn leading_zero_bits(&self) -> u32 {
        let mut bits = 0;
        for byte in self.0 {
            if byte == 0 {
                bits += 8;
            } else {
                return bits + byte.leading_zeros();
            }
        }
        bits
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_round_trips_display() {
        let hash = BlockHash([0xab; 32]);
        assert_eq!(BlockHash::parse(&hash.to_string()).unwrap(), hash);
        assert_eq!(BlockHash::parse(&hex::encode([0xab; 32])).unwrap(), hash);
        let payload = PayloadHash([0x01; 32]);
        assert_eq!(
            format!("{payload:?}"),
            format!("PayloadHash(0x{})", "01".repeat(32))
        );
    }

    #[test]
    fn parse_rejects_bad_input() {
        let check = |input: &str, reason: &'static str| {
            assert_eq!(
                BlockHash::parse(input),
                Err(Error::InvalidHash {
                    input: clip(input),
                    reason
                })
            );
        };
        check("0x12", "expected 64 hex digits");
        check(&format!("0x{}", "zz".repeat(32)), "not hexadecimal");
        // One spelling of the prefix, as for addresses.
        check(&format!("0X{}", "ab".repeat(32)), "expected 64 hex digits");
    }

    #[test]
    fn leading_zero_bits_counts_across_bytes() {
        let mut bytes = [0xffu8; 32];
        assert_eq!(BlockHash(bytes).leading_zero_bits(), 0);
        bytes[0] = 0;
        bytes[1] = 0b0001_0000;
        assert_eq!(BlockHash(bytes).leading_zero_bits(), 11);
        assert_eq!(BlockHash::ZERO.leading_zero_bits(), 256);
    }
}
