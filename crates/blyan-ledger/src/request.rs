//! Requests that move money. Each carries an idempotency key: a retry with the same key and
//! the same request returns the first outcome and never moves money twice.
//!
//! A request's JSON is its idempotency fingerprint (stored beside the key and compared byte for
//! byte on a retry), so requests serialize accounts and addresses in their stored, lower-case
//! spelling rather than the EIP-55 display form: a fingerprint written by any version of the
//! ledger matches the same request made today. Deserializing accepts either spelling.

use std::fmt;

use serde::{Deserialize, Serialize};

use blyan_primitives::Address;

use crate::account::{AccountId, stored_spelling};
use crate::amount::Amount;
use crate::error::{LedgerError, Result};
use crate::payment::{HoldId, QuoteId};

/// Longest idempotency key, in bytes.
pub const IDEMPOTENCY_KEY_BYTES_MAX: usize = 128;
/// Longest memo, in bytes.
pub const MEMO_BYTES_MAX: usize = 256;
/// Most transfers in one batch.
pub const TRANSFER_BATCH_LEN_MAX: usize = 1000;

/// A caller-chosen key that makes a request safe to retry: 1 to [`IDEMPOTENCY_KEY_BYTES_MAX`]
/// characters of `A-Z a-z 0-9 . _ : -` (a UUID fits). Keys are global: one key, one request.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct IdempotencyKey(String);

impl IdempotencyKey {
    /// Validates a key.
    pub fn new(key: impl Into<String>) -> Result<IdempotencyKey> {
        let key = key.into();
        let reason = if key.is_empty() {
            Some("empty".to_owned())
        } else if key.len() > IDEMPOTENCY_KEY_BYTES_MAX {
            Some(format!(
                "{} bytes, at most {IDEMPOTENCY_KEY_BYTES_MAX}",
                key.len()
            ))
        } else if !key
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._:-".contains(&b))
        {
            Some("only A-Z a-z 0-9 . _ : - are allowed".to_owned())
        } else {
            None
        };
        match reason {
            Some(reason) => Err(LedgerError::IdempotencyKeyFormat { reason }),
            None => Ok(IdempotencyKey(key)),
        }
    }

    /// The key's text.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A key only the ledger uses (its `/` cannot appear in callers' keys).
    pub(crate) fn internal(name: &str) -> IdempotencyKey {
        IdempotencyKey(format!("ledger/{name}"))
    }
}

impl TryFrom<String> for IdempotencyKey {
    type Error = LedgerError;
    fn try_from(key: String) -> Result<IdempotencyKey> {
        IdempotencyKey::new(key)
    }
}

impl From<IdempotencyKey> for String {
    fn from(key: IdempotencyKey) -> String {
        key.0
    }
}

impl fmt::Debug for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Move `amount` from one account to another.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferRequest {
    /// Retry key.
    pub key: IdempotencyKey,
    /// Payer (a wallet, or the treasury, reward pool, team or foundation).
    #[serde(serialize_with = "stored_spelling::account")]
    pub from: AccountId,
    /// Payee (created on first credit).
    #[serde(serialize_with = "stored_spelling::account")]
    pub to: AccountId,
    /// More than zero.
    pub amount: Amount,
    /// At most [`MEMO_BYTES_MAX`] bytes.
    pub memo: String,
}

/// Destroy `amount` from an account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BurnRequest {
    /// Retry key.
    pub key: IdempotencyKey,
    /// Whose tokens are burned.
    #[serde(serialize_with = "stored_spelling::account")]
    pub from: AccountId,
    /// More than zero.
    pub amount: Amount,
    /// At most [`MEMO_BYTES_MAX`] bytes.
    pub memo: String,
}

/// Issue `amount` new tokens, within the yearly inflation allowance and the supply cap.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MintRequest {
    /// Retry key.
    pub key: IdempotencyKey,
    /// Who receives them.
    #[serde(serialize_with = "stored_spelling::account")]
    pub to: AccountId,
    /// More than zero.
    pub amount: Amount,
    /// At most [`MEMO_BYTES_MAX`] bytes.
    pub memo: String,
}

/// Price `estimated_tokens` of inference for `payer`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuoteRequest {
    /// Retry key.
    pub key: IdempotencyKey,
    /// Who will pay.
    #[serde(serialize_with = "stored_spelling::address")]
    pub payer: Address,
    /// Most completion tokens the request may generate: 1 to `INFERENCE_TOKENS_MAX`.
    pub estimated_tokens: u64,
    /// Prompt tokens the request reads, priced at the prompt rate (0 to
    /// `INFERENCE_TOKENS_MAX`). Left out of the fingerprint when 0, so a request written
    /// before prompts were priced keeps its fingerprint.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prompt_tokens: u64,
}

/// Hold a quote's amount (plus tolerance) from its payer into escrow.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AuthorizeRequest {
    /// Retry key.
    pub key: IdempotencyKey,
    /// An unexpired, unauthorized quote.
    pub quote: QuoteId,
}

/// Charge a hold for the tokens actually served.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureRequest {
    /// Retry key.
    pub key: IdempotencyKey,
    /// An authorized, unexpired hold.
    pub hold: HoldId,
    /// Completion tokens actually served (0 to `INFERENCE_TOKENS_MAX`); with the prompt, their
    /// price must not exceed the quote by more than the capture tolerance.
    pub actual_tokens: u64,
    /// Prompt tokens read, priced at the prompt rate (0 to `INFERENCE_TOKENS_MAX`); left out of
    /// the fingerprint when 0, like [`QuoteRequest::prompt_tokens`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub prompt_tokens: u64,
    /// The serving node paid the fee's non-burned share; `None` pays the reward pool.
    #[serde(serialize_with = "stored_spelling::optional_address")]
    pub server: Option<Address>,
}

/// Void a hold: all of it returns to the payer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReleaseRequest {
    /// Retry key.
    pub key: IdempotencyKey,
    /// An authorized hold.
    pub hold: HoldId,
}

/// Reward a validator for validated samples.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ValidationRewardRequest {
    /// Retry key.
    pub key: IdempotencyKey,
    /// Who validated.
    #[serde(serialize_with = "stored_spelling::address")]
    pub validator: Address,
    /// 1 to `VALIDATION_SAMPLES_MAX`.
    pub samples: u64,
}

/// Reward a learner for an accepted Proof-of-Learning improvement.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LearningRewardRequest {
    /// Retry key.
    pub key: IdempotencyKey,
    /// Who produced the improved expert.
    #[serde(serialize_with = "stored_spelling::address")]
    pub learner: Address,
    /// Improvement in basis points (100 = 1 %), 1 to `IMPROVEMENT_BPS_MAX`.
    pub improvement_bps: u32,
}

/// Reward a dataset contributor for committed samples a certified candidate used.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataRewardRequest {
    /// Retry key.
    pub key: IdempotencyKey,
    /// Who contributed the samples.
    #[serde(serialize_with = "stored_spelling::address")]
    pub contributor: Address,
    /// 1 to `DATA_SAMPLES_MAX`.
    pub samples: u64,
    /// At most [`MEMO_BYTES_MAX`] bytes; empty records a memo naming the sample count.
    pub memo: String,
}

/// Lock a Proof-of-Learning candidate's bond: `amount` moves from `owner` into
/// `system:bond_escrow`. The request's `key` names the bond from then on.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BondLockRequest {
    /// Retry key, and the bond's name for `settle_bond` and `bond`.
    pub key: IdempotencyKey,
    /// The candidate's author, who pays the bond from their available balance.
    #[serde(serialize_with = "stored_spelling::address")]
    pub owner: Address,
    /// More than zero (the caller takes it from `Tokenomics::pol.candidate_bond`).
    pub amount: Amount,
    /// At most [`MEMO_BYTES_MAX`] bytes (the candidate it bonds, say).
    pub memo: String,
}

/// Grant BLY from `system:treasury` to a wallet: an operator's audited transfer (kind
/// `grant`), bounded by what the treasury's genesis allocation has left after every earlier
/// grant (`LedgerError::GrantAboveAllocation`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantRequest {
    /// Retry key.
    pub key: IdempotencyKey,
    /// The wallet funded (created on first credit).
    #[serde(serialize_with = "stored_spelling::address")]
    pub to: Address,
    /// More than zero.
    pub amount: Amount,
    /// At most [`MEMO_BYTES_MAX`] bytes: why it was granted (shown in the wallet's history).
    pub memo: String,
}

/// A test network's faucet claim: a grant of `amount` from the treasury (source `faucet`),
/// within the treasury allocation and within the faucet's limits, counted in the ledger in the
/// same store transaction (so concurrent claims cannot pass them): at most
/// `claims_per_wallet_per_day` claims per wallet and `daily_total_max` BLY in all per UTC day.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaucetClaimRequest {
    /// Retry key.
    pub key: IdempotencyKey,
    /// The claiming wallet.
    #[serde(serialize_with = "stored_spelling::address")]
    pub to: Address,
    /// BLY per claim; more than zero.
    pub amount: Amount,
    /// Most claims one wallet may make per UTC day; more than zero.
    pub claims_per_wallet_per_day: u32,
    /// Most BLY the faucet hands out per UTC day, all wallets together.
    pub daily_total_max: Amount,
}

/// Settle a locked bond once: refund it to its owner or burn it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BondSettleRequest {
    /// Retry key of this settlement.
    pub key: IdempotencyKey,
    /// The bond: its lock request's key.
    pub bond: IdempotencyKey,
    /// Refund (candidate accepted) or burn (rejected or expired).
    pub outcome: crate::bond::BondOutcome,
    /// At most [`MEMO_BYTES_MAX`] bytes.
    pub memo: String,
}

/// Pages through an account's history, newest first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryQuery {
    /// Only entries older than this (the previous page's `next`); `None` starts at the newest.
    pub before: Option<crate::transaction::EntryId>,
    /// 1 to [`HISTORY_PAGE_LEN_MAX`] items.
    pub limit: u32,
}

/// Most items in one history page.
pub const HISTORY_PAGE_LEN_MAX: u32 = 500;

/// For `skip_serializing_if`: a count of 0 is left out of a request's fingerprint.
#[allow(clippy::trivially_copy_pass_by_ref)] // serde passes a reference
fn is_zero(count: &u64) -> bool {
    *count == 0
}

pub(crate) fn check_memo(memo: &str) -> Result<()> {
    crate::tokenomics::check_limit("memo bytes", memo.len() as u64, MEMO_BYTES_MAX as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn idempotency_key_bounds() {
        assert!(IdempotencyKey::new("a".repeat(IDEMPOTENCY_KEY_BYTES_MAX)).is_ok());
        assert!(IdempotencyKey::new("a".repeat(IDEMPOTENCY_KEY_BYTES_MAX + 1)).is_err());
        assert!(IdempotencyKey::new("").is_err());
        assert!(IdempotencyKey::new("ledger/genesis").is_err());
        assert!(IdempotencyKey::new("a b").is_err());
        assert!(IdempotencyKey::new("550e8400-e29b-41d4-a716-446655440000").is_ok());
        let json = serde_json::to_string(&IdempotencyKey::new("k:1").unwrap()).unwrap();
        assert_eq!(json, "\"k:1\"");
        assert!(serde_json::from_str::<IdempotencyKey>("\"a b\"").is_err());
    }

    #[test]
    fn requests_serialize_addresses_in_their_stored_spelling() {
        let checksummed = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
        let lower = checksummed.to_lowercase();
        let alice: Address = checksummed.parse().unwrap();
        let transfer = TransferRequest {
            key: IdempotencyKey::new("k").unwrap(),
            from: crate::SystemAccount::Treasury.into(),
            to: alice.into(),
            amount: Amount::from_units(1).unwrap(),
            memo: "m".into(),
        };
        let json = serde_json::to_string(&transfer).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"key":"k","from":"system:treasury","to":"{lower}","amount":1,"memo":"m"}}"#
            )
        );
        let shown = json.replace(&lower, checksummed);
        assert_eq!(
            serde_json::from_str::<TransferRequest>(&shown).unwrap(),
            transfer
        );
        let capture = |server| CaptureRequest {
            key: IdempotencyKey::new("k").unwrap(),
            hold: HoldId(1),
            actual_tokens: 2,
            prompt_tokens: 0,
            server,
        };
        assert_eq!(
            serde_json::to_string(&capture(Some(alice))).unwrap(),
            format!(r#"{{"key":"k","hold":1,"actual_tokens":2,"server":"{lower}"}}"#)
        );
        assert_eq!(
            serde_json::to_string(&capture(None)).unwrap(),
            r#"{"key":"k","hold":1,"actual_tokens":2,"server":null}"#
        );
        let mut quote = QuoteRequest {
            key: IdempotencyKey::new("k").unwrap(),
            payer: alice,
            estimated_tokens: 3,
            prompt_tokens: 0,
        };
        assert_eq!(
            serde_json::to_string(&quote).unwrap(),
            format!(r#"{{"key":"k","payer":"{lower}","estimated_tokens":3}}"#),
            "a request without prompt tokens keeps the fingerprint it had before they were priced"
        );
        quote.prompt_tokens = 7;
        let json = serde_json::to_string(&quote).unwrap();
        assert_eq!(
            json,
            format!(r#"{{"key":"k","payer":"{lower}","estimated_tokens":3,"prompt_tokens":7}}"#)
        );
        assert_eq!(serde_json::from_str::<QuoteRequest>(&json).unwrap(), quote);
        let mut with_prompt = capture(None);
        with_prompt.prompt_tokens = 5;
        let json = serde_json::to_string(&with_prompt).unwrap();
        assert_eq!(
            json,
            r#"{"key":"k","hold":1,"actual_tokens":2,"prompt_tokens":5,"server":null}"#
        );
        assert_eq!(
            serde_json::from_str::<CaptureRequest>(&json).unwrap(),
            with_prompt
        );
    }

    #[test]
    fn memo_bound() {
        assert!(check_memo(&"m".repeat(MEMO_BYTES_MAX)).is_ok());
        assert!(matches!(
            check_memo(&"m".repeat(MEMO_BYTES_MAX + 1)),
            Err(LedgerError::LimitExceeded { .. })
        ));
    }
}
