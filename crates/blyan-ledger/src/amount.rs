//! `Amount`: a non-negative quantity of BLY as an integer of its smallest unit.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{LedgerError, Result};

/// Decimals of BLY: one BLY is `10^6` units (a "micro-BLY").
///
/// Why 6 and not Ethereum's 18: the whole supply cap (10^9 BLY) is then 10^15 units, which fits
/// a signed 64-bit integer with 9,000× headroom. Both stores keep amounts as native 64-bit
/// integers (PostgreSQL `BIGINT`, SQLite `INTEGER`, which has no 128-bit type), so sums and
/// `CHECK` constraints run on machine integers, and the smallest fee (one inference token at
/// 1 BLY per 1000 tokens = 1000 units) is still exact.
pub const AMOUNT_DECIMALS: u32 = 6;

/// Units in one BLY.
pub const UNITS_PER_BLY: u64 = 1_000_000;

/// The largest amount in units: what a signed 64-bit column holds. Tokenomics keeps the supply
/// cap at or below this, so no balance, entry or sum of balances can overflow (all of them are
/// bounded by the total ever minted).
pub const AMOUNT_UNITS_MAX: u64 = i64::MAX as u64;

/// Basis points in a whole: shares and rates are integers of 1/10000 (no floats anywhere).
pub const BPS_PER_WHOLE: u32 = 10_000;

const _: () = assert!(
    10u64.pow(AMOUNT_DECIMALS) == UNITS_PER_BLY,
    "UNITS_PER_BLY is 10^AMOUNT_DECIMALS"
);

/// A non-negative amount of BLY in units of `10^-6` BLY, at most [`AMOUNT_UNITS_MAX`].
///
/// Parse at the boundary (`"12.5".parse::<Amount>()` reads BLY, [`Amount::from_units`] reads
/// units), then trust the type: every `Amount` fits the stores' 64-bit columns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(u64);

impl Amount {
    /// Nothing.
    pub const ZERO: Amount = Amount(0);

    /// An amount of `units` (10^-6 BLY); refuses values above [`AMOUNT_UNITS_MAX`].
    pub fn from_units(units: u64) -> Result<Amount> {
        if units > AMOUNT_UNITS_MAX {
            return Err(LedgerError::AmountOverflow {
                input: units.to_string(),
                max_units: AMOUNT_UNITS_MAX,
            });
        }
        Ok(Amount(units))
    }

    /// An amount from a signed, wide integer of units, as JSON or a form may carry it:
    /// negative values and values past [`AMOUNT_UNITS_MAX`] are refused with their own errors.
    pub fn from_units_i128(units: i128) -> Result<Amount> {
        if units < 0 {
            return Err(LedgerError::AmountNegative {
                input: units.to_string(),
            });
        }
        let units = u64::try_from(units).map_err(|_| LedgerError::AmountOverflow {
            input: units.to_string(),
            max_units: AMOUNT_UNITS_MAX,
        })?;
        Amount::from_units(units)
    }

    /// An amount of whole BLY.
    pub fn from_bly(bly: u64) -> Result<Amount> {
        let units = bly
            .checked_mul(UNITS_PER_BLY)
            .ok_or_else(|| LedgerError::AmountOverflow {
                input: format!("{bly} BLY"),
                max_units: AMOUNT_UNITS_MAX,
            })?;
        Amount::from_units(units)
    }

    /// The amount in units.
    pub fn units(self) -> u64 {
        self.0
    }

    /// The amount as the stores' signed column type; exact because of the type's bound.
    pub(crate) fn as_i64(self) -> i64 {
        i64::try_from(self.0).expect("Amount is at most AMOUNT_UNITS_MAX = i64::MAX")
    }

    /// `self + other`, or `None` past [`AMOUNT_UNITS_MAX`].
    pub fn checked_add(self, other: Amount) -> Option<Amount> {
        self.0
            .checked_add(other.0)
            .filter(|&u| u <= AMOUNT_UNITS_MAX)
            .map(Amount)
    }

    /// `self - other`, or `None` below zero.
    pub fn checked_sub(self, other: Amount) -> Option<Amount> {
        self.0.checked_sub(other.0).map(Amount)
    }

    /// The `bps` share of `self` (basis points: 100 bps = 1 %, at most 10000), rounded down.
    pub fn share_bps_floor(self, bps: u32) -> Amount {
        debug_assert!(bps <= BPS_PER_WHOLE, "a share is at most 100 %");
        let bps = u128::from(bps.min(BPS_PER_WHOLE));
        let units = u128::from(self.0) * bps / u128::from(BPS_PER_WHOLE);
        // A share is at most the whole, so it fits wherever `self` fits.
        Amount(u64::try_from(units).expect("share_bps_floor(x) <= x"))
    }

    pub(crate) fn is_zero(self) -> bool {
        self.0 == 0
    }
}

impl fmt::Display for Amount {
    /// BLY with up to six decimals and no trailing zeros: `20`, `0.001`, `12.5`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let whole = self.0 / UNITS_PER_BLY;
        let fraction = self.0 % UNITS_PER_BLY;
        if fraction == 0 {
            write!(f, "{whole}")
        } else {
            let digits = format!("{fraction:06}");
            write!(f, "{whole}.{}", digits.trim_end_matches('0'))
        }
    }
}

impl FromStr for Amount {
    type Err = LedgerError;

    /// Parses a decimal amount of BLY (`"20000"`, `"0.001"`); no sign, no exponent, at most
    /// [`AMOUNT_DECIMALS`] fractional digits.
    fn from_str(input: &str) -> Result<Amount> {
        let trimmed = input.trim();
        if trimmed.starts_with('-') {
            return Err(LedgerError::AmountNegative {
                input: input.to_owned(),
            });
        }
        let (whole, fraction) = match trimmed.split_once('.') {
            Some((w, f)) => (w, f),
            None => (trimmed, ""),
        };
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() || !all_digits(whole) || !all_digits(fraction) {
            return Err(LedgerError::AmountSyntax {
                input: input.to_owned(),
            });
        }
        if trimmed.contains('.') && fraction.is_empty() {
            return Err(LedgerError::AmountSyntax {
                input: input.to_owned(),
            });
        }
        if fraction.len() > AMOUNT_DECIMALS as usize {
            return Err(LedgerError::AmountPrecision {
                input: input.to_owned(),
                decimals: AMOUNT_DECIMALS,
            });
        }
        let overflow = || LedgerError::AmountOverflow {
            input: input.to_owned(),
            max_units: AMOUNT_UNITS_MAX,
        };
        let mut units: u128 = 0;
        for digit in whole.bytes().chain(fraction.bytes()) {
            units = units
                .checked_mul(10)
                .and_then(|u| u.checked_add(u128::from(digit - b'0')))
                .filter(|&u| u <= u128::from(AMOUNT_UNITS_MAX) * 10u128.pow(AMOUNT_DECIMALS))
                .ok_or_else(overflow)?;
        }
        let scale = AMOUNT_DECIMALS - fraction.len() as u32;
        let units = units.checked_mul(10u128.pow(scale)).ok_or_else(overflow)?;
        let units = u64::try_from(units).map_err(|_| overflow())?;
        Amount::from_units(units).map_err(|_| overflow())
    }
}

impl Serialize for Amount {
    /// Units as an integer (exact in JSON: the supply cap is below 2^53).
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.serialize_u64(self.0)
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Amount, D::Error> {
        let units = u64::deserialize(deserializer)?;
        Amount::from_units(units).map_err(serde::de::Error::custom)
    }
}

/// Writes an amount as a config file holds it: a decimal string of BLY (`"0.5"`), which
/// [`deserialize_bly`] reads back. For `#[serde(serialize_with)]` on config fields.
pub fn serialize_bly<S: Serializer>(
    amount: &Amount,
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    serializer.collect_str(amount)
}

/// Reads a BLY amount written in a config file: a decimal string (`"20000"`, `"0.5"`) or an
/// integer of whole BLY. Floats are refused: `0.1` in YAML is a binary fraction. For
/// `#[serde(deserialize_with)]` on config fields (the tokenomics, the node's faucet).
pub fn deserialize_bly<'de, D: Deserializer<'de>>(
    deserializer: D,
) -> std::result::Result<Amount, D::Error> {
    struct BlyVisitor;

    impl serde::de::Visitor<'_> for BlyVisitor {
        type Value = Amount;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an amount of BLY as a decimal string (\"20000\", \"0.5\") or an integer")
        }

        fn visit_u64<E: serde::de::Error>(self, v: u64) -> std::result::Result<Amount, E> {
            Amount::from_bly(v).map_err(E::custom)
        }

        fn visit_i64<E: serde::de::Error>(self, v: i64) -> std::result::Result<Amount, E> {
            match u64::try_from(v) {
                Ok(v) => self.visit_u64(v),
                Err(_) => Err(E::custom(LedgerError::AmountNegative {
                    input: v.to_string(),
                })),
            }
        }

        fn visit_f64<E: serde::de::Error>(self, v: f64) -> std::result::Result<Amount, E> {
            Err(E::custom(format!(
                "{v} is a float; write the amount as a decimal string, e.g. \"{v}\""
            )))
        }

        fn visit_str<E: serde::de::Error>(self, v: &str) -> std::result::Result<Amount, E> {
            v.parse().map_err(E::custom)
        }
    }

    deserializer.deserialize_any(BlyVisitor)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_and_displays_bly() {
        let check = |input: &str, units: u64, shown: &str| {
            let amount: Amount = input.parse().unwrap();
            assert_eq!(amount.units(), units, "{input}");
            assert_eq!(amount.to_string(), shown, "{input}");
        };
        check("0", 0, "0");
        check("20", 20_000_000, "20");
        check("0.001", 1_000, "0.001");
        check("12.5", 12_500_000, "12.5");
        check("0.000001", 1, "0.000001");
        check("1000000000", 1_000_000_000_000_000, "1000000000");
    }

    #[test]
    fn refuses_bad_decimal_strings() {
        let check = |input: &str, expect: fn(&LedgerError) -> bool| {
            let err = input.parse::<Amount>().unwrap_err();
            assert!(expect(&err), "{input}: {err:?}");
        };
        check("-1", |e| matches!(e, LedgerError::AmountNegative { .. }));
        check("", |e| matches!(e, LedgerError::AmountSyntax { .. }));
        check("1.", |e| matches!(e, LedgerError::AmountSyntax { .. }));
        check(".5", |e| matches!(e, LedgerError::AmountSyntax { .. }));
        check("1e6", |e| matches!(e, LedgerError::AmountSyntax { .. }));
        check("+1", |e| matches!(e, LedgerError::AmountSyntax { .. }));
        check("0.0000001", |e| {
            matches!(e, LedgerError::AmountPrecision { .. })
        });
        // One unit past the bound, and a 40-digit number.
        check("9223372036854.775808", |e| {
            matches!(e, LedgerError::AmountOverflow { .. })
        });
        check("340282366920938463463374607431768211456", |e| {
            matches!(e, LedgerError::AmountOverflow { .. })
        });
    }

    #[test]
    fn units_bound_is_exact() {
        assert_eq!(
            Amount::from_units(AMOUNT_UNITS_MAX).unwrap().units(),
            AMOUNT_UNITS_MAX
        );
        assert!(matches!(
            Amount::from_units(AMOUNT_UNITS_MAX + 1),
            Err(LedgerError::AmountOverflow { .. })
        ));
        assert_eq!(
            "9223372036854.775807".parse::<Amount>().unwrap().units(),
            AMOUNT_UNITS_MAX
        );
        assert!(matches!(
            Amount::from_units_i128(-1),
            Err(LedgerError::AmountNegative { .. })
        ));
        assert!(matches!(
            Amount::from_units_i128(i128::MAX),
            Err(LedgerError::AmountOverflow { .. })
        ));
        assert!(matches!(
            Amount::from_bly(u64::MAX),
            Err(LedgerError::AmountOverflow { .. })
        ));
        let max = Amount::from_units(AMOUNT_UNITS_MAX).unwrap();
        assert_eq!(max.checked_add(Amount::from_units(1).unwrap()), None);
        assert_eq!(
            Amount::ZERO.checked_sub(Amount::from_units(1).unwrap()),
            None
        );
    }

    #[test]
    fn deserialize_refuses_units_past_bound() {
        let err = serde_json::from_str::<Amount>("9223372036854775808").unwrap_err();
        assert!(err.to_string().contains("too large"), "{err}");
    }

    proptest! {
        #[test]
        fn display_then_parse_is_identity(units in 0..=AMOUNT_UNITS_MAX) {
            let amount = Amount::from_units(units).unwrap();
            prop_assert_eq!(amount.to_string().parse::<Amount>().unwrap(), amount);
        }

        #[test]
        fn json_round_trip(units in 0..=AMOUNT_UNITS_MAX) {
            let amount = Amount::from_units(units).unwrap();
            let json = serde_json::to_string(&amount).unwrap();
            prop_assert_eq!(serde_json::from_str::<Amount>(&json).unwrap(), amount);
        }
    }
}
