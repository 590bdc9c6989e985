//! Account identities: user wallets by Ethereum address, and the ledger's system accounts.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha3::{Digest, Keccak256};

use crate::error::{LedgerError, Result};

/// A 20-byte Ethereum address: a user's wallet.
///
/// Parsed from `0x` + 40 hex digits. All-lower-case and all-upper-case digits are accepted as
/// they are; mixed case is an EIP-55 checksum and is accepted only when the checksum is right.
/// Displayed (and stored) in lower case.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Address([u8; 20]);

impl Address {
    /// The address with these bytes.
    pub fn from_bytes(bytes: [u8; 20]) -> Address {
        Address(bytes)
    }

    /// The address's 20 bytes.
    pub fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }

    /// The EIP-55 mixed-case form (`0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed`).
    pub fn to_checksummed(&self) -> String {
        let lower = hex::encode(self.0);
        let hash = Keccak256::digest(lower.as_bytes());
        let mut out = String::with_capacity(42);
        out.push_str("0x");
        for (i, c) in lower.chars().enumerate() {
            let nibble = (hash[i / 2] >> (if i % 2 == 0 { 4 } else { 0 })) & 0x0f;
            out.push(if nibble >= 8 {
                c.to_ascii_uppercase()
            } else {
                c
            });
        }
        out
    }
}

impl FromStr for Address {
    type Err = LedgerError;

    fn from_str(input: &str) -> Result<Address> {
        let format = |reason| LedgerError::AddressFormat {
            input: input.to_owned(),
            reason,
        };
        let digits = input
            .strip_prefix("0x")
            .ok_or_else(|| format("must start with 0x"))?;
        if digits.len() != 40 {
            return Err(format("must have 40 hex digits after 0x"));
        }
        if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format("has a character that is not a hex digit"));
        }
        let mut bytes = [0u8; 20];
        hex::decode_to_slice(digits, &mut bytes)
            .map_err(|_| format("has a character that is not a hex digit"))?;
        let address = Address(bytes);
        let has_lower = digits.bytes().any(|b| b.is_ascii_lowercase());
        let has_upper = digits.bytes().any(|b| b.is_ascii_uppercase());
        if has_lower && has_upper && address.to_checksummed() != input {
            return Err(LedgerError::AddressChecksum {
                input: input.to_owned(),
            });
        }
        Ok(address)
    }
}

impl fmt::Display for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Address {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Address({self})")
    }
}

/// The ledger's own accounts. Their text form is `system:<name>`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum SystemAccount {
    /// Source of every issued token (genesis and mints); its balance is minus the total ever
    /// minted, the only balance allowed below zero.
    Mint,
    /// Sink of burned tokens; its balance is the total ever burned.
    Burn,
    /// Funds held for authorized inference payments until capture, release or expiry.
    FeeEscrow,
    /// The network's treasury.
    Treasury,
    /// Pays validation and learning rewards; receives the serving share of fees when no
    /// serving node is named.
    RewardPool,
    /// The team's genesis allocation.
    Team,
    /// The foundation's genesis allocation.
    Foundation,
}

impl SystemAccount {
    /// Every system account, in the order of their text form.
    pub const ALL: [SystemAccount; 7] = [
        SystemAccount::Burn,
        SystemAccount::FeeEscrow,
        SystemAccount::Foundation,
        SystemAccount::Mint,
        SystemAccount::RewardPool,
        SystemAccount::Team,
        SystemAccount::Treasury,
    ];

    /// The name after `system:`.
    pub fn name(self) -> &'static str {
        match self {
            SystemAccount::Mint => "mint",
            SystemAccount::Burn => "burn",
            SystemAccount::FeeEscrow => "fee_escrow",
            SystemAccount::Treasury => "treasury",
            SystemAccount::RewardPool => "reward_pool",
            SystemAccount::Team => "team",
            SystemAccount::Foundation => "foundation",
        }
    }

    /// Accounts that only the ledger's own operations move (mint, burn, escrow): refused as
    /// the source or destination of transfers, burns, mints and allocations.
    pub fn is_reserved(self) -> bool {
        matches!(
            self,
            SystemAccount::Mint | SystemAccount::Burn | SystemAccount::FeeEscrow
        )
    }
}

/// Any account of the ledger: a user's wallet or a system account.
///
/// Text form: the lower-case address (`0xab…`) or `system:<name>`; the stores key accounts by
/// this text (byte order), which is also the order in which rows are locked.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AccountId {
    /// A user's wallet.
    User(Address),
    /// One of the ledger's own accounts.
    System(SystemAccount),
}

impl AccountId {
    /// Shorthand for a system account.
    pub const fn system(account: SystemAccount) -> AccountId {
        AccountId::System(account)
    }

    /// The stored key: lower-case address or `system:<name>`.
    pub fn key(&self) -> String {
        self.to_string()
    }

    /// Whether this account is one of the ledger's own.
    pub fn is_system(&self) -> bool {
        matches!(self, AccountId::System(_))
    }

    pub(crate) fn is_reserved(&self) -> bool {
        matches!(self, AccountId::System(s) if s.is_reserved())
    }
}

impl PartialOrd for AccountId {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for AccountId {
    /// The byte order of the text form: the order the stores lock rows in.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.key().cmp(&other.key())
    }
}

impl From<Address> for AccountId {
    fn from(address: Address) -> AccountId {
        AccountId::User(address)
    }
}

impl From<SystemAccount> for AccountId {
    fn from(account: SystemAccount) -> AccountId {
        AccountId::System(account)
    }
}

impl fmt::Display for AccountId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AccountId::User(address) => write!(f, "{address}"),
            AccountId::System(account) => write!(f, "system:{}", account.name()),
        }
    }
}

impl FromStr for AccountId {
    type Err = LedgerError;

    fn from_str(input: &str) -> Result<AccountId> {
        if let Some(name) = input.strip_prefix("system:") {
            return SystemAccount::ALL
                .into_iter()
                .find(|s| s.name() == name)
                .map(AccountId::System)
                .ok_or_else(|| LedgerError::AccountIdFormat {
                    input: input.to_owned(),
                });
        }
        if input.starts_with("0x") {
            return input.parse().map(AccountId::User);
        }
        Err(LedgerError::AccountIdFormat {
            input: input.to_owned(),
        })
    }
}

impl Serialize for AccountId {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for AccountId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

impl Serialize for Address {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Address {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // Test vectors from EIP-55.
    const EIP55: [&str; 4] = [
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed",
        "0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359",
        "0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB",
        "0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb",
    ];

    #[test]
    fn accepts_eip55_vectors_and_stores_lower_case() {
        for input in EIP55 {
            let address: Address = input.parse().unwrap();
            assert_eq!(address.to_string(), input.to_lowercase());
            assert_eq!(address.to_checksummed(), input);
            let upper = format!("0x{}", input[2..].to_uppercase());
            assert_eq!(upper.parse::<Address>().unwrap(), address);
        }
    }

    #[test]
    fn refuses_malformed_addresses() {
        let check = |input: &str, expect: fn(&LedgerError) -> bool| {
            let err = input.parse::<Address>().unwrap_err();
            assert!(expect(&err), "{input}: {err:?}");
        };
        let format = |e: &LedgerError| matches!(e, LedgerError::AddressFormat { .. });
        check("5aaeb6053f3e94c9b9a09f33669435e7ef1beaed", format);
        check("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beae", format); // 39 digits
        check("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaed0", format); // 41 digits
        check("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaeg", format);
        check("0x", format);
        // One letter's case flipped breaks the checksum.
        check("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD", |e| {
            matches!(e, LedgerError::AddressChecksum { .. })
        });
    }

    #[test]
    fn account_ids_parse_and_order_by_text() {
        for account in SystemAccount::ALL {
            let id = AccountId::System(account);
            assert_eq!(id.to_string().parse::<AccountId>().unwrap(), id);
        }
        let mut sorted = SystemAccount::ALL.map(AccountId::System).to_vec();
        sorted.sort();
        assert_eq!(sorted, SystemAccount::ALL.map(AccountId::System).to_vec());
        assert!(matches!(
            "system:nobody".parse::<AccountId>(),
            Err(LedgerError::AccountIdFormat { .. })
        ));
        assert!(matches!(
            "alice".parse::<AccountId>(),
            Err(LedgerError::AccountIdFormat { .. })
        ));
    }

    proptest! {
        #[test]
        fn address_text_round_trip(bytes in any::<[u8; 20]>()) {
            let address = Address::from_bytes(bytes);
            prop_assert_eq!(address.to_string().parse::<Address>().unwrap(), address);
            prop_assert_eq!(address.to_checksummed().parse::<Address>().unwrap(), address);
            let id = AccountId::User(address);
            let json = serde_json::to_string(&id).unwrap();
            prop_assert_eq!(serde_json::from_str::<AccountId>(&json).unwrap(), id);
        }
    }
}
