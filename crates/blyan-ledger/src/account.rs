//! Account identities: user wallets by Ethereum address, and the ledger's system accounts.
//!
//! Two spellings of a wallet account, on purpose:
//! - what people read (`Display`, serde of outcomes, error messages): the EIP-55 mixed-case
//!   address, the same as everywhere else in Blyan (`blyan_primitives::Address`);
//! - what the stores compare (account keys, payer columns, idempotency fingerprints): the
//!   lower-case address ([`AccountId::key`]), one spelling per address, byte-identical to what
//!   every ledger database already holds.

use std::cmp::Ordering;
use std::fmt;
use std::str::FromStr;

use blyan_primitives::Address;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{LedgerError, Result};

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
    /// Proof-of-Learning candidate bonds, locked from their authors until the candidate is
    /// accepted (refunded) or rejected or expired (burned).
    BondEscrow,
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
    pub const ALL: [SystemAccount; 8] = [
        SystemAccount::BondEscrow,
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
            SystemAccount::BondEscrow => "bond_escrow",
            SystemAccount::Treasury => "treasury",
            SystemAccount::RewardPool => "reward_pool",
            SystemAccount::Team => "team",
            SystemAccount::Foundation => "foundation",
        }
    }

    /// Accounts that only the ledger's own operations move (mint, burn, the fee and bond
    /// escrows): refused as the source or destination of transfers, burns, mints and
    /// allocations.
    pub fn is_reserved(self) -> bool {
        matches!(
            self,
            SystemAccount::Mint
                | SystemAccount::Burn
                | SystemAccount::FeeEscrow
                | SystemAccount::BondEscrow
        )
    }
}

/// Any account of the ledger: a user's wallet or a system account.
///
/// Text form (`Display`, serde): the EIP-55 address (`0x5aAe…`) or `system:<name>`. Parsing
/// accepts any spelling `Address` accepts. The stores key accounts by [`AccountId::key`]
/// (lower-case address), and `Ord` is the byte order of that key: the order in which rows are
/// locked.
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

    /// The stored key: the lower-case address or `system:<name>`.
    pub fn key(&self) -> String {
        match self {
            AccountId::User(address) => address.to_lower_hex(),
            AccountId::System(account) => format!("system:{}", account.name()),
        }
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
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for AccountId {
    /// The byte order of [`AccountId::key`] without building the keys: lower-case hex sorts as
    /// the bytes it encodes, and every `0x…` key sorts before every `system:…` key.
    fn cmp(&self, other: &Self) -> Ordering {
        match (self, other) {
            (AccountId::User(a), AccountId::User(b)) => a.as_bytes().cmp(b.as_bytes()),
            (AccountId::User(_), AccountId::System(_)) => Ordering::Less,
            (AccountId::System(_), AccountId::User(_)) => Ordering::Greater,
            (AccountId::System(a), AccountId::System(b)) => a.name().cmp(b.name()),
        }
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
            return Ok(AccountId::User(Address::parse(input)?));
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
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// `serialize_with` functions that write accounts and addresses in their stored spelling
/// (lower case). Requests use them: a request's JSON is its idempotency fingerprint, stored and
/// compared byte for byte, so it must not change with how addresses are displayed.
pub(crate) mod stored_spelling {
    use blyan_primitives::Address;
    use serde::Serializer;

    use super::AccountId;

    pub(crate) fn account<S: Serializer>(account: &AccountId, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&account.key())
    }

    pub(crate) fn address<S: Serializer>(address: &Address, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&address.to_lower_hex())
    }

    pub(crate) fn optional_address<S: Serializer>(
        address: &Option<Address>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match address {
            Some(address) => s.serialize_some(&address.to_lower_hex()),
            None => s.serialize_none(),
        }
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
    fn wallets_display_checksummed_and_store_lower_case() {
        for input in EIP55 {
            for spelling in [
                input.to_owned(),
                input.to_lowercase(),
                format!("0x{}", input[2..].to_uppercase()),
            ] {
                let id: AccountId = spelling.parse().unwrap();
                assert_eq!(id.to_string(), input, "{spelling}");
                assert_eq!(id.key(), input.to_lowercase(), "{spelling}");
                let json = serde_json::to_string(&id).unwrap();
                assert_eq!(json, format!("\"{input}\""));
            }
        }
    }

    #[test]
    fn malformed_account_ids_are_refused_with_their_reason() {
        let address_error = |input: &str| match input.parse::<AccountId>() {
            Err(LedgerError::Primitive(blyan_primitives::Error::InvalidAddress {
                reason, ..
            })) => reason,
            other => panic!("{input}: {other:?}"),
        };
        assert_eq!(
            address_error("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beae"),
            "expected 40 hex digits"
        );
        assert_eq!(
            address_error("0x5aaeb6053f3e94c9b9a09f33669435e7ef1beaeg"),
            "not hexadecimal"
        );
        // One letter's case flipped breaks the checksum.
        assert_eq!(
            address_error("0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD"),
            "EIP-55 checksum mismatch"
        );
        for input in [
            "5aaeb6053f3e94c9b9a09f33669435e7ef1beaed",
            "0X5aaeb6053f3e94c9b9a09f33669435e7ef1beaed",
            "system:nobody",
            "alice",
            "",
        ] {
            assert!(
                matches!(
                    input.parse::<AccountId>(),
                    Err(LedgerError::AccountIdFormat { input: ref got }) if got == input
                ),
                "{input}"
            );
        }
    }

    #[test]
    fn system_accounts_parse_and_order_by_text() {
        for account in SystemAccount::ALL {
            let id = AccountId::System(account);
            assert_eq!(id.to_string(), id.key());
            assert_eq!(id.to_string().parse::<AccountId>().unwrap(), id);
        }
        let mut sorted = SystemAccount::ALL.map(AccountId::System).to_vec();
        sorted.sort();
        assert_eq!(sorted, SystemAccount::ALL.map(AccountId::System).to_vec());
    }

    proptest! {
        #[test]
        fn text_and_json_round_trip(bytes in any::<[u8; 20]>()) {
            let id = AccountId::User(Address::from_bytes(bytes));
            prop_assert_eq!(id.to_string().parse::<AccountId>().unwrap(), id);
            prop_assert_eq!(id.key().parse::<AccountId>().unwrap(), id);
            let json = serde_json::to_string(&id).unwrap();
            prop_assert_eq!(serde_json::from_str::<AccountId>(&json).unwrap(), id);
        }

        #[test]
        fn order_is_the_byte_order_of_the_stored_key(
            a in any::<[u8; 20]>(),
            b in any::<[u8; 20]>(),
            system in 0..SystemAccount::ALL.len(),
        ) {
            let system = AccountId::System(SystemAccount::ALL[system]);
            let ids = [AccountId::User(Address::from_bytes(a)), AccountId::User(Address::from_bytes(b)), system];
            for x in ids {
                for y in ids {
                    prop_assert_eq!(x.cmp(&y), x.key().cmp(&y.key()), "{} vs {}", x, y);
                }
            }
        }
    }
}
