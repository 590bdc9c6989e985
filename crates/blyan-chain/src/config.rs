//! How a store behaves: durability, proof of work, fork rules, payload limit, free-disk floor,
//! clock skew, PoL switch.
//! Plain data with serde defaults, so it sits in the node's YAML config. [`Durability`] and the
//! hard limits ([`BLOCK_PAYLOAD_BYTES_MAX`], [`POW_DIFFICULTY_BITS_MAX`]) are
//! `blyan-primitives`', shared with the node's config.

use blyan_primitives::{BLOCK_PAYLOAD_BYTES_MAX, Durability, POW_DIFFICULTY_BITS_MAX};

use crate::chain::ChainId;
use crate::error::{Error, Result};

/// Default size at which a payload segment file is sealed and a new one started (1 GiB).
pub const SEGMENT_BYTES_TARGET: u64 = 1 << 30;

/// Smallest segment size a config may ask for (tests use it to exercise sealing).
pub const SEGMENT_BYTES_TARGET_MIN: u64 = 4096;

// The default segment size must pass the config's own range check.
const _: () = assert!(
    SEGMENT_BYTES_TARGET_MIN <= SEGMENT_BYTES_TARGET
        && SEGMENT_BYTES_TARGET <= BLOCK_PAYLOAD_BYTES_MAX
);

/// Default free-disk floor (1 GiB): below it the store refuses new payload bytes, so a full
/// disk never reaches RocksDB's own writes (its WAL, flushes, compactions) or the other stores
/// sharing the disk (ledger, sign-in).
pub const FREE_BYTES_MIN_DEFAULT: u64 = 1 << 30;

/// Largest free-disk floor a config may ask for (1 PiB): a larger one is a unit mistake, and
/// would refuse every append on any disk.
pub const FREE_BYTES_MIN_MAX: u64 = 1 << 50;

const _: () = assert!(FREE_BYTES_MIN_DEFAULT <= FREE_BYTES_MIN_MAX);

/// Default of how far ahead of this node's clock a block may be stamped (5 minutes): room for
/// clocks of honest nodes that drift apart, none for a block stamped days ahead to pin every
/// later child of its chain (a child may not be stamped before its parent).
pub const TIMESTAMP_SKEW_SECONDS_DEFAULT: u64 = 300;

/// Largest allowed skew a config may ask for (one day).
pub const TIMESTAMP_SKEW_SECONDS_MAX: u64 = 86_400;

const _: () = assert!(TIMESTAMP_SKEW_SECONDS_DEFAULT <= TIMESTAMP_SKEW_SECONDS_MAX);

/// Whether a chain may hold two children of one parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ForkRule {
    /// One block per height: a second child of a parent is [`Error::Fork`].
    #[default]
    Linear,
    /// Any stored block may gain more children; the tip is the block at the greatest height,
    /// the smallest hash among several there, so nodes holding the same blocks agree on it
    /// whatever order the blocks arrived in.
    AllowForks,
}

/// The fork rule of each chain.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ForkRules {
    /// Chain A.
    pub meta: ForkRule,
    /// Chain B.
    pub parameters: ForkRule,
    /// Chain D.
    pub dataset: ForkRule,
}

impl ForkRules {
    /// The rule of `chain`.
    pub fn get(&self, chain: ChainId) -> ForkRule {
        match chain {
            ChainId::Meta => self.meta,
            ChainId::Parameters => self.parameters,
            ChainId::Dataset => self.dataset,
        }
    }
}

/// Settings of a [`crate::ChainStore`]. `Default` is the production setting: synced, no proof
/// of work, linear chains, the full payload limit, a 1 GiB free-disk floor, Proof-of-Learning
/// off.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// Whether payload bytes are fsynced and the RocksDB WAL synced before `append` returns
    /// ([`Durability::Synced`]: an acknowledged block survives `kill -9` and power loss) or
    /// nothing is fsynced ([`Durability::Unsynced`]: it survives `kill -9`, the newest blocks may
    /// be lost on power loss; never half a block: on reopen, payload bytes no index names are
    /// reclaimed, and blocks whose payload bytes a power loss took are dropped with every
    /// later block).
    pub durability: Durability,
    /// Leading zero bits every non-genesis block hash must have; 0 turns proof of work off.
    pub pow_difficulty_bits: u32,
    /// Fork rule per chain.
    pub fork_rules: ForkRules,
    /// Largest payload accepted, at most [`BLOCK_PAYLOAD_BYTES_MAX`].
    pub payload_bytes_max: u64,
    /// A payload segment is sealed once the next payload would end past this size, within
    /// [`SEGMENT_BYTES_TARGET_MIN`]..=[`BLOCK_PAYLOAD_BYTES_MAX`]. A larger payload gets a
    /// segment of its own.
    pub segment_bytes_target: u64,
    /// Bytes that must stay free on the store's file system: an append, a staged download or a
    /// staged write that would leave less free is refused with [`Error::DiskFull`] (reads keep
    /// working), checked with one `statvfs` per write. 0 turns the check off; at most
    /// [`FREE_BYTES_MIN_MAX`].
    pub free_bytes_min: u64,
    /// How many seconds ahead of this node's clock a block may be stamped: an append (or a
    /// staged download) of a block stamped later is refused with [`Error::TimestampInFuture`].
    /// At most [`TIMESTAMP_SKEW_SECONDS_MAX`]. Genesis blocks are fixed and never checked.
    pub timestamp_skew_seconds_max: u64,
    /// When on, every block but genesis goes through the store's [`crate::PolAcceptance`] hook,
    /// whose [`crate::Admission`] says whether it is served, held as a candidate, or promotes
    /// candidates; opening a store with this on and no hook fails.
    pub proof_of_learning: bool,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            durability: Durability::Synced,
            pow_difficulty_bits: 0,
            fork_rules: ForkRules::default(),
            payload_bytes_max: BLOCK_PAYLOAD_BYTES_MAX,
            segment_bytes_target: SEGMENT_BYTES_TARGET,
            free_bytes_min: FREE_BYTES_MIN_DEFAULT,
            timestamp_skew_seconds_max: TIMESTAMP_SKEW_SECONDS_DEFAULT,
            proof_of_learning: false,
        }
    }
}

impl StoreConfig {
    /// Checks every field is within its limit; the error names the field.
    pub fn check(&self) -> Result<()> {
        if self.pow_difficulty_bits > POW_DIFFICULTY_BITS_MAX {
            return Err(Error::Config {
                field: "pow_difficulty_bits",
                reason: format!(
                    "{} is above POW_DIFFICULTY_BITS_MAX ({POW_DIFFICULTY_BITS_MAX})",
                    self.pow_difficulty_bits
                ),
            });
        }
        if self.payload_bytes_max > BLOCK_PAYLOAD_BYTES_MAX {
            return Err(Error::Config {
                field: "payload_bytes_max",
                reason: format!(
                    "{} is above BLOCK_PAYLOAD_BYTES_MAX ({BLOCK_PAYLOAD_BYTES_MAX})",
                    self.payload_bytes_max
                ),
            });
        }
        if !(SEGMENT_BYTES_TARGET_MIN..=BLOCK_PAYLOAD_BYTES_MAX)
            .contains(&self.segment_bytes_target)
        {
            return Err(Error::Config {
                field: "segment_bytes_target",
                reason: format!(
                    "{} is outside {SEGMENT_BYTES_TARGET_MIN}..={BLOCK_PAYLOAD_BYTES_MAX}",
                    self.segment_bytes_target
                ),
            });
        }
        if self.timestamp_skew_seconds_max > TIMESTAMP_SKEW_SECONDS_MAX {
            return Err(Error::Config {
                field: "timestamp_skew_seconds_max",
                reason: format!(
                    "{} is above TIMESTAMP_SKEW_SECONDS_MAX ({TIMESTAMP_SKEW_SECONDS_MAX})",
                    self.timestamp_skew_seconds_max
                ),
            });
        }
        if self.free_bytes_min > FREE_BYTES_MIN_MAX {
            return Err(Error::Config {
                field: "free_bytes_min",
                reason: format!(
                    "{} is above FREE_BYTES_MIN_MAX ({FREE_BYTES_MIN_MAX})",
                    self.free_bytes_min
                ),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_hold_at_the_bound_and_fail_one_past() {
        let mut config = StoreConfig {
            pow_difficulty_bits: POW_DIFFICULTY_BITS_MAX,
            ..StoreConfig::default()
        };
        config.check().unwrap();
        config.pow_difficulty_bits += 1;
        assert!(matches!(
            config.check(),
            Err(Error::Config {
                field: "pow_difficulty_bits",
                ..
            })
        ));

        let mut config = StoreConfig {
            payload_bytes_max: BLOCK_PAYLOAD_BYTES_MAX,
            ..StoreConfig::default()
        };
        config.check().unwrap();
        config.payload_bytes_max += 1;
        assert!(matches!(
            config.check(),
            Err(Error::Config {
                field: "payload_bytes_max",
                ..
            })
        ));

        for (target, ok) in [
            (SEGMENT_BYTES_TARGET_MIN, true),
            (SEGMENT_BYTES_TARGET_MIN - 1, false),
            (BLOCK_PAYLOAD_BYTES_MAX, true),
            (BLOCK_PAYLOAD_BYTES_MAX + 1, false),
        ] {
            let config = StoreConfig {
                segment_bytes_target: target,
                ..StoreConfig::default()
            };
            assert_eq!(config.check().is_ok(), ok, "{target}");
        }

        for (floor, ok) in [
            (0, true),
            (FREE_BYTES_MIN_MAX, true),
            (FREE_BYTES_MIN_MAX + 1, false),
        ] {
            let config = StoreConfig {
                free_bytes_min: floor,
                ..StoreConfig::default()
            };
            assert_eq!(config.check().is_ok(), ok, "{floor}");
        }
        for (skew, ok) in [
            (0, true),
            (TIMESTAMP_SKEW_SECONDS_MAX, true),
            (TIMESTAMP_SKEW_SECONDS_MAX + 1, false),
        ] {
            let config = StoreConfig {
                timestamp_skew_seconds_max: skew,
                ..StoreConfig::default()
            };
            assert_eq!(config.check().is_ok(), ok, "{skew}");
        }
        assert!(matches!(
            StoreConfig {
                free_bytes_min: FREE_BYTES_MIN_MAX + 1,
                ..StoreConfig::default()
            }
            .check(),
            Err(Error::Config {
                field: "free_bytes_min",
                ..
            })
        ));
    }

    #[test]
    fn config_reads_from_partial_json_with_defaults() {
        let config: StoreConfig = serde_json::from_str(
            r#"{"durability":"unsynced","fork_rules":{"dataset":"allow_forks"}}"#,
        )
        .unwrap();
        assert_eq!(config.durability, Durability::Unsynced);
        assert_eq!(
            config.fork_rules.get(ChainId::Dataset),
            ForkRule::AllowForks
        );
        assert_eq!(config.fork_rules.get(ChainId::Meta), ForkRule::Linear);
        assert_eq!(config.payload_bytes_max, BLOCK_PAYLOAD_BYTES_MAX);
        assert!(serde_json::from_str::<StoreConfig>(r#"{"durabilty":"synced"}"#).is_err());
    }
}
