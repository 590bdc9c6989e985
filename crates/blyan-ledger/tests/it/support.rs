//! Fixtures shared by the scenarios: a fresh store of either kind, a manual clock, helpers.

use std::sync::Arc;

use blyan_ledger::{
    AccountId, Address, Amount, AnyLedger, EmbeddedLedger, IdempotencyKey, Ledger, LedgerOptions,
    ManualClock, PgLedger, SystemAccount, Tokenomics, TransferRequest,
};

use crate::pg;

/// 2023-11-14T22:13:20Z: any fixed instant works; the clock only moves when a test says so.
pub(crate) const T0_MS: u64 = 1_700_000_000_000;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Backend {
    Embedded,
    Pg,
}

/// A fresh, empty store of one kind, reopenable.
pub(crate) struct Fixture {
    pub backend: Backend,
    /// File path (embedded) or connection string (PostgreSQL).
    pub location: String,
    pub clock: ManualClock,
    _dir: Option<tempfile::TempDir>,
}

impl Fixture {
    pub(crate) async fn new(backend: Backend) -> Fixture {
        let clock = ManualClock::new(T0_MS);
        match backend {
            Backend::Embedded => {
                // tmpfs when there is one: fsync is then free, and the code path is the same.
                let shm = std::path::Path::new("/dev/shm");
                let dir = if shm.is_dir() {
                    tempfile::tempdir_in(shm).unwrap()
                } else {
                    tempfile::tempdir().unwrap()
                };
                let location = dir
                    .path()
                    .join("ledger.sqlite")
                    .to_string_lossy()
                    .into_owned();
                Fixture {
                    backend,
                    location,
                    clock,
                    _dir: Some(dir),
                }
            }
            Backend::Pg => {
                let location = pg::server().fresh_database().await;
                Fixture {
                    backend,
                    location,
                    clock,
                    _dir: None,
                }
            }
        }
    }

    pub(crate) fn options(&self) -> LedgerOptions {
        LedgerOptions {
            clock: Arc::new(self.clock.clone()),
            pg_pool_size: 24,
        }
    }

    /// Opens the store with the shipped tokenomics.
    pub(crate) async fn open(&self) -> AnyLedger {
        self.open_with(tokenomics()).await.unwrap()
    }

    pub(crate) async fn open_with(
        &self,
        tokenomics: Tokenomics,
    ) -> blyan_ledger::Result<AnyLedger> {
        Ok(match self.backend {
            Backend::Embedded => AnyLedger::Embedded(
                EmbeddedLedger::open_with(&self.location, tokenomics, self.options()).await?,
            ),
            Backend::Pg => AnyLedger::Pg(
                PgLedger::connect_with(&self.location, tokenomics, self.options()).await?,
            ),
        })
    }
}

pub(crate) fn tokenomics() -> Tokenomics {
    Tokenomics::shipped().unwrap()
}

/// A deterministic wallet address.
pub(crate) fn addr(n: u32) -> Address {
    let mut bytes = [0u8; 20];
    bytes[..4].copy_from_slice(&n.to_be_bytes());
    bytes[19] = 0xab;
    Address::from_bytes(bytes)
}

pub(crate) fn user(n: u32) -> AccountId {
    AccountId::User(addr(n))
}

pub(crate) fn key(text: impl Into<String>) -> IdempotencyKey {
    IdempotencyKey::new(text).unwrap()
}

pub(crate) fn bly(text: &str) -> Amount {
    text.parse().unwrap()
}

pub(crate) const TREASURY: AccountId = AccountId::System(SystemAccount::Treasury);
pub(crate) const REWARD_POOL: AccountId = AccountId::System(SystemAccount::RewardPool);
pub(crate) const BURN: AccountId = AccountId::System(SystemAccount::Burn);
pub(crate) const ESCROW: AccountId = AccountId::System(SystemAccount::FeeEscrow);
pub(crate) const BOND_ESCROW: AccountId = AccountId::System(SystemAccount::BondEscrow);

/// Pays `amount` BLY from the treasury to `to`.
pub(crate) async fn fund(ledger: &impl Ledger, to: AccountId, amount: &str) {
    ledger
        .transfer(TransferRequest {
            key: key(format!("fund-{to}-{amount}-{}", rand::random::<u64>())),
            from: TREASURY,
            to,
            amount: bly(amount),
            memo: "fund".into(),
        })
        .await
        .unwrap();
}

pub(crate) async fn available(ledger: &impl Ledger, account: AccountId) -> Amount {
    ledger.balance(account).await.unwrap().available
}

/// Everything a refused request must leave unchanged.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub transactions: u64,
    pub entries: u64,
    pub balances: Vec<(AccountId, blyan_ledger::Balance)>,
    pub supply: blyan_ledger::Supply,
}

pub(crate) async fn snapshot(ledger: &impl Ledger, accounts: &[AccountId]) -> Snapshot {
    let report = ledger.verify_integrity().await.unwrap();
    let mut balances = Vec::new();
    for &account in accounts {
        balances.push((account, ledger.balance(account).await.unwrap()));
    }
    Snapshot {
        transactions: report.transactions,
        entries: report.entries,
        balances,
        supply: report.supply,
    }
}
