//! The ledger's rules, written once against [`StoreTx`](crate::store::StoreTx) and run by both
//! stores. Each operation is a [`Command`](crate::store::Command) run inside one store
//! transaction; the operations are grouped by family:
//!
//! - [`transfers`]: account to account, batches, burns;
//! - [`payments`]: quote → authorize → capture / release / expiry;
//! - [`grants`]: the treasury's grants, by the operator or a test network's faucet;
//! - [`bonds`]: Proof-of-Learning candidate bonds, locked then refunded or burned once;
//! - [`issuance`]: genesis, mints and rewards within the supply cap and inflation allowance;
//! - [`queries`]: balances, history, supply and the integrity audit;
//! - [`pruning`]: idempotency keys and quotes older than the retention;
//!
//! on top of two shared layers: [`idempotency`] (one outcome per key) and [`posting`] (checks,
//! account locks, balanced entries).

mod bonds;
mod grants;
mod idempotency;
mod issuance;
mod payments;
mod posting;
mod pruning;
mod queries;
mod transfers;

pub(crate) use issuance::Genesis;
pub(crate) use payments::ExpireHolds;
pub(crate) use pruning::Prune;
pub use pruning::{IDEMPOTENCY_RETENTION_MIN, Pruned};
pub(crate) use queries::{
    GetBalance, GetBond, GetHistory, GetHold, GetSupply, GetTransaction, VerifyIntegrity,
};
pub(crate) use transfers::TransferBatch;

use crate::account::{AccountId, SystemAccount};

/// Length of an inflation year in milliseconds (365 days, counted from genesis).
pub const INFLATION_YEAR_MS: u64 = 365 * 24 * 3600 * 1000;
/// Holds expired per store transaction by the expiry sweep.
pub(crate) const EXPIRY_BATCH_LEN: u32 = 100;

const MINT: AccountId = AccountId::System(SystemAccount::Mint);
const BURN: AccountId = AccountId::System(SystemAccount::Burn);
const ESCROW: AccountId = AccountId::System(SystemAccount::FeeEscrow);
const BOND_ESCROW: AccountId = AccountId::System(SystemAccount::BondEscrow);
const REWARD_POOL: AccountId = AccountId::System(SystemAccount::RewardPool);
