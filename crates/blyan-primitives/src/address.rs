//! Ethereum addresses: the last 20 bytes of keccak-256 over an uncompressed secp256k1 public
//! key. One type for block authors, ledger accounts and signed-in wallets, so an address parsed
//! anywhere is the same value everywhere.

use std::fmt;

use sha3::{Digest, Keccak256};

use crate::error::{Error, Result, clip};

/// keccak-256, the hash Ethereum uses for addresses and EIP-191 messages.
pub fn keccak256(bytes: &[u8]) -> [u8; 32] {
    Keccak256::digest(bytes).into()
}

/// An Ethereum account address.
///
/// Text form: `0x` (lower-case `x`, as every Ethereum tool writes it) and 40 hex digits.
/// [`Address::parse`] accepts all-lower and all-upper digits (they carry no checksum) and mixed
/// case only when it matches EIP-55 (a mistyped address is refused). `Display` and serde write
/// the EIP-55 form (`0x2c7536E3605D9C16a7a3D7b1898e529396a65c23`); [`Address::to_lower_hex`]
/// is the canonical key form for stores that compare text.
#[derive(
    Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default, bincode::Encode, bincode::Decode,
)]
pub struct Address(pub [u8; 20]);

impl Address {
    /// The zero address: the author of genesis blocks, which nobody signs.
    pub const ZERO: Self = Self([0; 20]);

    /// The address with these 20 bytes.
    pub const fn from_bytes(bytes: [u8; 20]) -> Self {
        Self(bytes)
    }

    /// The address of an uncompressed SEC1 public key (65 bytes, leading `0x04`).
    pub fn from_uncompressed_public_key(key: &[u8; 65]) -> Self {
        let digest = keccak256(&key[1..]);
        let mut bytes = [0u8; 20];
        bytes.copy_from_slice(&digest[12..]);
        Self(bytes)
    }

    /// The raw 20 bytes.
    pub const fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }

    /// Parses `0x` + 40 hex digits; see the type's documentation for the case rules.
    pub fn parse(input: &str) -> Result<Self> {
        let invalid = |reason: &'static str| Error::InvalidAddress {
            input: clip(input),
            reason,
        };
        let digits = input
            .strip_prefix("0x")
            .ok_or_else(|| invalid("missing 0x prefix"))?;
        if digits.len() != 40 {
            return Err(invalid("expected 40 hex digits"));
        }
        let mut bytes = [0u8; 20];
        hex::decode_to_slice(digits, &mut bytes).map_err(|_| invalid("not hexadecimal"))?;
        let address = Self(bytes);
        let has_lower = digits.bytes().any(|b| b.is_ascii_lowercase());
        let has_upper = digits.bytes().any(|b| b.is_ascii_uppercase());
        if has_lower && has_upper && address.checksummed_digits() != digits {
            return Err(invalid("EIP-55 checksum mismatch"));
        }
        Ok(address)
    }

    /// `0x` + the 40 digits in EIP-55 case (what `Display` writes).
    pub fn to_checksummed(&self) -> String {
        format!("0x{}", self.checksummed_digits())
    }

    /// `0x` + the 40 digits in lower case: one spelling per address, for keys and comparisons.
    pub fn to_lower_hex(&self) -> String {
        format!("0x{}", hex::encode(self.0))
    }

    /// The 40 hex digits in EIP-55 case: a letter is upper case when the matching nibble of
    /// keccak-256(lower-case hex) is 8 or more.
    fn checksummed_digits(&self) -> String {
        let lower = hex::encode(self.0);
        let digest = keccak256(lower.as_bytes());
        lower
            .char_indices()
            .map(|(index, digit)| {
                let nibble = (digest[index / 2] >> (if index % 2 == 0 { 4 } else { 0 })) & 0x0f;
                if nibble >= 8 {
                    digit.to_ascii_uppercase()
                } else {
                    digit
                }
            })
            .collect()
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", self.checksummed_digits())
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

impl From<[u8; 20]> for Address {
    fn from(bytes: [u8; 20]) -> Self {
        Self(bytes)
    }
}

crate::text::text_form!(Address);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The checksummed examples from the EIP-55 specification.
    const EIP55_VECTORS: [&str; 8] = [
        "0x52908400098527886E0F7030069857D2E4169EE7",
        "0x8617E340B3D01FA5F11F306F4090FD50E238070D",
        "0xde709f2102306220921060314715629080e2fb77",
        "0x27b1fdb04752bbc536007a920d24acb045561c26",
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
    ];

    #[test]
    fn eip55_vectors_parse_and_print_checksummed() {
        for vector in EIP55_VECTORS {
            let address = Address::parse(vector).unwrap();
            let printed = address.to_string();
            assert_eq!(printed.to_lowercase(), vector.to_lowercase());
            // All-upper and all-lower vectors carry no checksum; the mixed-case ones print back
            // exactly.
            if vector[2..].bytes().any(|b| b.is_ascii_lowercase())
                && vector[2..].bytes().any(|b| b.is_ascii_uppercase())
            {
                assert_eq!(printed, vector);
            }
            assert_eq!(printed, address.to_checksummed());
            assert_eq!(address.to_lower_hex(), vector.to_lowercase());
            assert_eq!(Address::parse(&printed).unwrap(), address);
            assert_eq!(Address::parse(&vector.to_lowercase()).unwrap(), address);
            assert_eq!(
                Address::parse(&format!("0x{}", vector[2..].to_uppercase())).unwrap(),
                address
            );
        }
    }

    #[test]
    fn wrong_checksum_is_rejected() {
        // One letter's case flipped in a valid checksummed address.
        let bad = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD";
        assert!(matches!(
            Address::parse(bad),
            Err(Error::InvalidAddress {
                reason: "EIP-55 checksum mismatch",
                ..
            })
        ));
    }

    #[test]
    fn malformed_addresses_are_rejected() {
        for (input, reason) in [
            (
                "5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
                "missing 0x prefix",
            ),
            (
                "0X5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
                "missing 0x prefix",
            ),
            (
                "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeA",
                "expected 40 hex digits",
            ),
            (
                "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAedaa",
                "expected 40 hex digits",
            ),
            (
                "0xzzAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
                "not hexadecimal",
            ),
        ] {
            assert_eq!(
                Address::parse(input),
                Err(Error::InvalidAddress {
                    input: input.to_owned(),
                    reason
                }),
                "{input}"
            );
        }
    }

    #[test]
    fn public_key_to_address_matches_a_known_pair() {
        // Private key 1: its address is well known.
        let public = hex::decode(concat!(
            "04",
            "79be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
            "483ada7726a3c4655da4fbfc0e1108a8fd17b448a68554199c47d08ffb10d4b8"
        ))
        .unwrap();
        let key: [u8; 65] = public.try_into().unwrap();
        assert_eq!(
            Address::from_uncompressed_public_key(&key).to_string(),
            "0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf"
        );
    }

    #[test]
    fn serde_uses_checksummed_text() {
        let address = Address::parse(EIP55_VECTORS[4]).unwrap();
        let json = serde_json::to_string(&address).unwrap();
        assert_eq!(json, format!("\"{}\"", EIP55_VECTORS[4]));
        let back: Address = serde_json::from_str(&json).unwrap();
        assert_eq!(back, address);
        assert!(serde_json::from_str::<Address>("\"0x12\"").is_err());
    }

    proptest! {
        #[test]
        fn text_round_trips(bytes in any::<[u8; 20]>()) {
            let address = Address::from_bytes(bytes);
            prop_assert_eq!(Address::parse(&address.to_string()).unwrap(), address);
            prop_assert_eq!(Address::parse(&address.to_lower_hex()).unwrap(), address);
        }
    }
}
