//! `config/tokenomics.yaml`: supply, genesis allocations, rewards, fees, payment timings and
//! the Proof-of-Learning candidate bond.

use std::collections::HashSet;
use std::path::Path;

use serde::Deserialize;

use crate::account::AccountId;
use crate::amount::{Amount, BPS_PER_WHOLE, deserialize_bly};
use crate::error::{LedgerError, Result};

/// The tokenomics shipped with the crate: its `config/tokenomics.yaml` (the repository's
/// `config/tokenomics.yaml` is a link to it).
pub const SHIPPED_TOKENOMICS_YAML: &str = include_str!("../config/tokenomics.yaml");

/// Most genesis allocations a file may list.
pub const GENESIS_ALLOCATIONS_MAX: usize = 64;
/// Longest time to live of a quote or a hold, in seconds (one day).
pub const PAYMENT_TTL_SECONDS_MAX: u32 = 86_400;
/// Most inference tokens one quote or capture may price.
pub const INFERENCE_TOKENS_MAX: u64 = 10_000_000;
/// Most validated samples one validation reward may pay for.
pub const VALIDATION_SAMPLES_MAX: u64 = 1_000_000;
/// Largest learning improvement one reward may pay for, in basis points (100 %).
pub const IMPROVEMENT_BPS_MAX: u32 = 10_000;
/// Most contributed data samples one data reward may pay for.
pub const DATA_SAMPLES_MAX: u64 = 1_000_000;

/// Typed, validated tokenomics. Amounts are read as decimal BLY (`"20000"`), shares and rates
/// as integer basis points (100 bps = 1 %): no floats.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tokenomics {
    /// Supply cap, genesis supply and yearly inflation bound.
    pub supply: SupplyConfig,
    /// Who receives the genesis supply; the amounts sum to `supply.genesis`.
    pub genesis_allocations: Vec<Allocation>,
    /// Validation and learning rewards.
    pub rewards: RewardsConfig,
    /// The inference fee and its burn share.
    pub inference: InferenceConfig,
    /// Quote and hold lifetimes, capture tolerance.
    pub payments: PaymentsConfig,
    /// Proof-of-Learning: the bond a candidate locks.
    pub pol: PolConfig,
}

/// Supply bounds.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SupplyConfig {
    /// Most BLY that can ever be minted, genesis included.
    #[serde(deserialize_with = "deserialize_bly")]
    pub cap: Amount,
    /// BLY minted once, at genesis.
    #[serde(deserialize_with = "deserialize_bly")]
    pub genesis: Amount,
    /// Most BLY minted in one inflation year, as basis points of the circulating supply at the
    /// start of that year (years count from genesis).
    pub inflation_yearly_bps_max: u32,
}

/// One genesis allocation.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Allocation {
    /// Receiving account: `system:treasury`, `system:reward_pool`, `system:team`,
    /// `system:foundation` or a wallet address.
    pub account: AccountId,
    /// BLY allocated.
    #[serde(deserialize_with = "deserialize_bly")]
    pub amount: Amount,
}

/// Rewards paid from the reward pool (and minted within the caps when the pool runs short).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RewardsConfig {
    /// BLY per validated sample.
    #[serde(deserialize_with = "deserialize_bly")]
    pub validation_per_sample: Amount,
    /// BLY per 1 % (100 bps) of accepted Proof-of-Learning improvement.
    #[serde(deserialize_with = "deserialize_bly")]
    pub learning_per_improvement_percent: Amount,
    /// BLY per committed dataset sample a certified candidate used, paid to its contributor.
    #[serde(deserialize_with = "deserialize_bly")]
    pub data_per_sample: Amount,
}

/// Proof-of-Learning amounts the ledger holds.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolConfig {
    /// BLY a candidate's author locks when submitting it: refunded on acceptance, burned on
    /// rejection or expiry. More than zero, so spam always costs.
    #[serde(deserialize_with = "deserialize_bly")]
    pub candidate_bond: Amount,
}

/// Inference pricing.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceConfig {
    /// BLY per 1000 generated (completion) tokens.
    #[serde(deserialize_with = "deserialize_bly")]
    pub fee_per_1000_tokens: Amount,
    /// BLY per 1000 prompt tokens (the prefill); may be zero. A fee sums both rates and is
    /// rounded up to a unit once ([`Tokenomics::chat_fee`]).
    #[serde(deserialize_with = "deserialize_bly")]
    pub prompt_fee_per_1000_tokens: Amount,
    /// Share of every captured fee that is burned, in basis points; the rest pays the serving
    /// node (or the reward pool when none is named).
    pub burn_share_bps: u32,
}

/// Payment flow timings.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaymentsConfig {
    /// How long a quote can be authorized.
    pub quote_ttl_seconds: u32,
    /// How long a hold can be captured before it expires and its funds return to the payer.
    pub hold_ttl_seconds: u32,
    /// How much the actual charge may exceed the quote, in basis points; a hold reserves the
    /// quote plus this tolerance.
    pub capture_tolerance_bps: u32,
}

impl Tokenomics {
    /// Reads and validates the file at `path`; when there is no file there, the shipped
    /// defaults ([`SHIPPED_TOKENOMICS_YAML`]).
    pub fn load(path: impl AsRef<Path>) -> Result<Tokenomics> {
        let path = path.as_ref();
        match std::fs::read_to_string(path) {
            Ok(text) => Tokenomics::from_yaml_str(&text),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                tracing::info!(path = %path.display(), "no tokenomics file; using shipped defaults");
                Tokenomics::shipped()
            }
            Err(source) => Err(LedgerError::ConfigRead {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// The shipped defaults.
    pub fn shipped() -> Result<Tokenomics> {
        Tokenomics::from_yaml_str(SHIPPED_TOKENOMICS_YAML)
    }

    /// Parses and validates YAML text. Errors name the offending field's path.
    pub fn from_yaml_str(text: &str) -> Result<Tokenomics> {
        let deserializer = serde_yaml::Deserializer::from_str(text);
        let tokenomics: Tokenomics =
            serde_path_to_error::deserialize(deserializer).map_err(|error| {
                let field = error.path().to_string();
                LedgerError::ConfigParse {
                    field,
                    message: error.into_inner().to_string(),
                }
            })?;
        tokenomics.validate()?;
        Ok(tokenomics)
    }

    /// BLY the genesis gave `system:treasury` (zero when it lists none): the bound on every
    /// grant from the treasury together, operator's and faucet's.
    pub fn treasury_allocation(&self) -> Amount {
        // `validate` refuses an account listed twice, so the first match is the only one.
        self.genesis_allocations
            .iter()
            .find(|a| a.account == AccountId::System(crate::account::SystemAccount::Treasury))
            .map_or(Amount::ZERO, |a| a.amount)
    }

    /// Checks the relations between fields that types alone cannot express.
    pub fn validate(&self) -> Result<()> {
        let invalid = |field: &str, reason: String| LedgerError::ConfigInvalid {
            field: field.to_owned(),
            reason,
        };
        let supply = &self.supply;
        if supply.cap.is_zero() {
            return Err(invalid("supply.cap", "must be greater than zero".into()));
        }
        if supply.genesis.is_zero() {
            return Err(invalid(
                "supply.genesis",
                "must be greater than zero".into(),
            ));
        }
        if supply.genesis > supply.cap {
            return Err(invalid(
                "supply.genesis",
                format!(
                    "{} BLY exceeds supply.cap {} BLY",
                    supply.genesis, supply.cap
                ),
            ));
        }
        check_bps(
            supply.inflation_yearly_bps_max,
            "supply.inflation_yearly_bps_max",
        )?;
        if self.genesis_allocations.len() > GENESIS_ALLOCATIONS_MAX {
            return Err(invalid(
                "genesis_allocations",
                format!(
                    "{} allocations, at most {GENESIS_ALLOCATIONS_MAX}",
                    self.genesis_allocations.len()
                ),
            ));
        }
        let mut seen = HashSet::new();
        let mut total = Amount::ZERO;
        for (index, allocation) in self.genesis_allocations.iter().enumerate() {
            let field = |name: &str| format!("genesis_allocations[{index}].{name}");
            if allocation.account.is_reserved() {
                return Err(invalid(
                    &field("account"),
                    format!(
                        "{} only moves by the ledger's own operations",
                        allocation.account
                    ),
                ));
            }
            if !seen.insert(allocation.account) {
                return Err(invalid(
                    &field("account"),
                    format!("{} is listed twice", allocation.account),
                ));
            }
            if allocation.amount.is_zero() {
                return Err(invalid(
                    &field("amount"),
                    "must be greater than zero".into(),
                ));
            }
            total = total.checked_add(allocation.amount).ok_or_else(|| {
                invalid(
                    "genesis_allocations",
                    "the amounts overflow when summed".into(),
                )
            })?;
        }
        if total != supply.genesis {
            return Err(invalid(
                "genesis_allocations",
                format!(
                    "amounts sum to {total} BLY, supply.genesis is {} BLY",
                    supply.genesis
                ),
            ));
        }
        for (value, field) in [
            (
                self.rewards.validation_per_sample,
                "rewards.validation_per_sample",
            ),
            (
                self.rewards.learning_per_improvement_percent,
                "rewards.learning_per_improvement_percent",
            ),
            (self.rewards.data_per_sample, "rewards.data_per_sample"),
            (self.pol.candidate_bond, "pol.candidate_bond"),
            (
                self.inference.fee_per_1000_tokens,
                "inference.fee_per_1000_tokens",
            ),
            (
                self.inference.prompt_fee_per_1000_tokens,
                "inference.prompt_fee_per_1000_tokens",
            ),
        ] {
            if value > supply.cap {
                return Err(invalid(field, format!("{value} BLY exceeds supply.cap")));
            }
        }
        if self.pol.candidate_bond.is_zero() {
            return Err(invalid(
                "pol.candidate_bond",
                "must be greater than zero".into(),
            ));
        }
        if self.inference.fee_per_1000_tokens.is_zero() {
            return Err(invalid(
                "inference.fee_per_1000_tokens",
                "must be greater than zero".into(),
            ));
        }
        check_bps(self.inference.burn_share_bps, "inference.burn_share_bps")?;
        check_bps(
            self.payments.capture_tolerance_bps,
            "payments.capture_tolerance_bps",
        )?;
        for (value, field) in [
            (
                self.payments.quote_ttl_seconds,
                "payments.quote_ttl_seconds",
            ),
            (self.payments.hold_ttl_seconds, "payments.hold_ttl_seconds"),
        ] {
            if value == 0 || value > PAYMENT_TTL_SECONDS_MAX {
                return Err(invalid(
                    field,
                    format!("{value} s is outside 1..={PAYMENT_TTL_SECONDS_MAX} s"),
                ));
            }
        }
        Ok(())
    }

    /// The fee for `tokens` generated tokens and no prompt, rounded up to a whole unit.
    pub fn inference_fee(&self, tokens: u64) -> Result<Amount> {
        self.chat_fee(0, tokens)
    }

    /// The fee for a chat that read `prompt_tokens` and generated `completion_tokens`: each
    /// count at its rate (`inference.prompt_fee_per_1000_tokens`,
    /// `inference.fee_per_1000_tokens`), summed, then rounded up to a whole unit once. Each
    /// count is at most [`INFERENCE_TOKENS_MAX`].
    pub fn chat_fee(&self, prompt_tokens: u64, completion_tokens: u64) -> Result<Amount> {
        check_limit("prompt tokens", prompt_tokens, INFERENCE_TOKENS_MAX)?;
        check_limit("inference tokens", completion_tokens, INFERENCE_TOKENS_MAX)?;
        let units = u128::from(self.inference.prompt_fee_per_1000_tokens.units())
            * u128::from(prompt_tokens)
            + u128::from(self.inference.fee_per_1000_tokens.units())
                * u128::from(completion_tokens);
        self.capped("inference fee", units.div_ceil(1000))
    }

    /// What an authorization holds for a quote of `quoted`: the quote plus the capture
    /// tolerance, rounded up. Also the most a capture may charge.
    pub fn hold_amount(&self, quoted: Amount) -> Result<Amount> {
        let factor = u128::from(BPS_PER_WHOLE + self.payments.capture_tolerance_bps);
        let units = (u128::from(quoted.units()) * factor).div_ceil(u128::from(BPS_PER_WHOLE));
        self.capped("hold amount", units)
    }

    /// The validation reward for `samples` validated samples.
    pub fn validation_reward(&self, samples: u64) -> Result<Amount> {
        if samples == 0 {
            return Err(LedgerError::Zero {
                field: "validated samples",
            });
        }
        check_limit("validated samples", samples, VALIDATION_SAMPLES_MAX)?;
        let units = u128::from(self.rewards.validation_per_sample.units()) * u128::from(samples);
        self.capped("validation reward", units)
    }

    /// The data reward for `samples` committed samples a certified candidate used.
    pub fn data_reward(&self, samples: u64) -> Result<Amount> {
        if samples == 0 {
            return Err(LedgerError::Zero {
                field: "data samples",
            });
        }
        check_limit("data samples", samples, DATA_SAMPLES_MAX)?;
        let units = u128::from(self.rewards.data_per_sample.units()) * u128::from(samples);
        self.capped("data reward", units)
    }

    /// The learning reward for an improvement of `improvement_bps` (100 bps = 1 %), rounded
    /// down.
    pub fn learning_reward(&self, improvement_bps: u32) -> Result<Amount> {
        if improvement_bps == 0 {
            return Err(LedgerError::Zero {
                field: "improvement_bps",
            });
        }
        check_limit(
            "improvement_bps",
            improvement_bps.into(),
            IMPROVEMENT_BPS_MAX.into(),
        )?;
        let per_percent = u128::from(self.rewards.learning_per_improvement_percent.units());
        self.capped(
            "learning reward",
            per_percent * u128::from(improvement_bps) / 100,
        )
    }

    /// The burned part of a captured fee.
    pub fn burn_share(&self, fee: Amount) -> Amount {
        fee.share_bps_floor(self.inference.burn_share_bps)
    }

    /// Quote lifetime in milliseconds.
    pub fn quote_ttl_ms(&self) -> u64 {
        u64::from(self.payments.quote_ttl_seconds) * 1000
    }

    /// Hold lifetime in milliseconds.
    pub fn hold_ttl_ms(&self) -> u64 {
        u64::from(self.payments.hold_ttl_seconds) * 1000
    }

    /// `units` as an amount no larger than the supply cap (nothing larger can ever be paid).
    fn capped(&self, field: &'static str, units: u128) -> Result<Amount> {
        let cap = self.supply.cap;
        match u64::try_from(units)
            .ok()
            .and_then(|u| Amount::from_units(u).ok())
        {
            Some(amount) if amount <= cap => Ok(amount),
            Some(amount) => Err(LedgerError::AmountAboveSupplyCap { field, amount, cap }),
            None => Err(LedgerError::AmountOverflow {
                input: units.to_string(),
                max_units: crate::amount::AMOUNT_UNITS_MAX,
            }),
        }
    }
}

fn check_bps(value: u32, field: &str) -> Result<()> {
    if value > BPS_PER_WHOLE {
        return Err(LedgerError::ConfigInvalid {
            field: field.to_owned(),
            reason: format!("{value} bps is above {BPS_PER_WHOLE} (100 %)"),
        });
    }
    Ok(())
}

pub(crate) fn check_limit(what: &'static str, value: u64, max: u64) -> Result<()> {
    if value > max {
        return Err(LedgerError::LimitExceeded { what, value, max });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> Tokenomics {
        Tokenomics::shipped().unwrap()
    }

    #[test]
    fn fees_and_rewards_are_exact_integers() {
        let t = shipped();
        assert_eq!(t.inference_fee(1000).unwrap(), Amount::from_bly(1).unwrap());
        assert_eq!(t.inference_fee(1).unwrap().units(), 1000);
        // Prompt tokens at their own rate (250 units each), rounded up once over the sum.
        assert_eq!(t.chat_fee(1536, 0).unwrap().units(), 1536 * 250);
        assert_eq!(t.chat_fee(4, 3).unwrap().units(), 4 * 250 + 3 * 1000);
        let mut odd = t.clone();
        odd.inference.prompt_fee_per_1000_tokens = Amount::from_units(1).unwrap();
        odd.inference.fee_per_1000_tokens = Amount::from_units(1).unwrap();
        assert_eq!(
            odd.chat_fee(600, 600).unwrap().units(),
            2,
            "1.2 units round up"
        );
        assert_eq!(odd.chat_fee(1, 0).unwrap().units(), 1);
        assert_eq!(
            t.validation_reward(3).unwrap(),
            Amount::from_bly(60).unwrap()
        );
        assert_eq!(
            t.learning_reward(100).unwrap(),
            Amount::from_bly(20_000).unwrap()
        );
        assert_eq!(
            t.learning_reward(1).unwrap(),
            Amount::from_bly(200).unwrap()
        );
        assert_eq!(t.data_reward(5).unwrap(), Amount::from_bly(100).unwrap());
        assert_eq!(t.pol.candidate_bond, Amount::from_bly(100).unwrap());
        let quoted = Amount::from_bly(10).unwrap();
        assert_eq!(
            t.hold_amount(quoted).unwrap(),
            Amount::from_bly(11).unwrap()
        );
    }

    #[test]
    fn limits_hold_at_the_bound_and_refuse_one_past() {
        let t = shipped();
        assert!(t.inference_fee(INFERENCE_TOKENS_MAX).is_ok());
        assert!(
            t.chat_fee(INFERENCE_TOKENS_MAX, INFERENCE_TOKENS_MAX)
                .is_ok()
        );
        assert!(matches!(
            t.chat_fee(INFERENCE_TOKENS_MAX + 1, 0),
            Err(LedgerError::LimitExceeded {
                what: "prompt tokens",
                ..
            })
        ));
        assert!(matches!(
            t.inference_fee(INFERENCE_TOKENS_MAX + 1),
            Err(LedgerError::LimitExceeded { .. })
        ));
        assert!(t.validation_reward(VALIDATION_SAMPLES_MAX).is_ok());
        assert!(matches!(
            t.validation_reward(VALIDATION_SAMPLES_MAX + 1),
            Err(LedgerError::LimitExceeded { .. })
        ));
        assert!(t.learning_reward(IMPROVEMENT_BPS_MAX).is_ok());
        assert!(matches!(
            t.learning_reward(IMPROVEMENT_BPS_MAX + 1),
            Err(LedgerError::LimitExceeded { .. })
        ));
        assert!(matches!(
            t.validation_reward(0),
            Err(LedgerError::Zero { .. })
        ));
        assert!(matches!(
            t.learning_reward(0),
            Err(LedgerError::Zero { .. })
        ));
        assert!(t.data_reward(DATA_SAMPLES_MAX).is_ok());
        assert!(matches!(
            t.data_reward(DATA_SAMPLES_MAX + 1),
            Err(LedgerError::LimitExceeded { .. })
        ));
        assert!(matches!(t.data_reward(0), Err(LedgerError::Zero { .. })));
    }
}
