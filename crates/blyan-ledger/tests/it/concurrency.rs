//! Invariants under concurrency: 16 tasks × 1000 random operations (transfers, payments,
//! candidate bonds) on a few hot accounts.

use std::sync::Arc;

use blyan_ledger::{
    AccountId, Amount, AuthorizeRequest, Bond, BondLockRequest, BondOutcome, BondSettleRequest,
    CaptureRequest, Hold, Ledger, LedgerError, Quote, QuoteRequest, ReleaseRequest, SystemAccount,
    TransferRequest,
};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::support::*;

const TASKS: u32 = 16;
const OPS_PER_TASK: u32 = 1000;
const HOT_USERS: u32 = 6;
const SERVERS: u32 = 3;

/// Runs one task's random operations; returns (succeeded, refused).
async fn task(ledger: Arc<blyan_ledger::AnyLedger>, task: u32) -> (u32, u32) {
    let mut rng = StdRng::seed_from_u64(u64::from(task));
    let mut quotes: Vec<Quote> = Vec::new();
    let mut holds: Vec<Hold> = Vec::new();
    let mut bonds: Vec<Bond> = Vec::new();
    let (mut succeeded, mut refused) = (0, 0);
    for op in 0..OPS_PER_TASK {
        let k = key(format!("t{task}-op{op}"));
        let roll = rng.gen_range(0..100);
        let result: blyan_ledger::Result<()> =
            if roll >= 95 && !bonds.is_empty() && rng.gen_bool(0.5) {
                let bond = bonds.swap_remove(rng.gen_range(0..bonds.len()));
                let outcome = if rng.gen_bool(0.5) {
                    BondOutcome::Refund
                } else {
                    BondOutcome::Burn
                };
                ledger
                    .settle_bond(BondSettleRequest {
                        key: k,
                        bond: bond.key,
                        outcome,
                        memo: String::new(),
                    })
                    .await
                    .map(drop)
            } else if roll >= 95 {
                let owner = addr(rng.gen_range(1..=HOT_USERS));
                let amount = Amount::from_units(rng.gen_range(10_000..2_000_000)).unwrap();
                ledger
                    .lock_bond(BondLockRequest {
                        key: k,
                        owner,
                        amount,
                        memo: String::new(),
                    })
                    .await
                    .map(|bond| bonds.push(bond))
            } else if roll < 40 || (roll < 75 && quotes.is_empty() && holds.is_empty()) {
                let from = rng.gen_range(1..=HOT_USERS);
                let to = (from + rng.gen_range(1..HOT_USERS) - 1) % HOT_USERS + 1;
                let amount = Amount::from_units(rng.gen_range(10_000..2_000_000)).unwrap();
                ledger
                    .transfer(TransferRequest {
                        key: k,
                        from: user(from),
                        to: user(to),
                        amount,
                        memo: String::new(),
                    })
                    .await
                    .map(drop)
            } else if roll < 60 || (quotes.is_empty() && holds.is_empty()) {
                let payer = addr(rng.gen_range(1..=HOT_USERS));
                let estimated_tokens = rng.gen_range(100..3000);
                ledger
                    .quote(QuoteRequest {
                        key: k,
                        payer,
                        estimated_tokens,
                        prompt_tokens: 0,
                    })
                    .await
                    .map(|quote| quotes.push(quote))
            } else if roll < 75 && !quotes.is_empty() {
                let quote = quotes.swap_remove(rng.gen_range(0..quotes.len()));
                ledger
                    .authorize(AuthorizeRequest {
                        key: k,
                        quote: quote.id,
                    })
                    .await
                    .map(|hold| holds.push(hold))
            } else if roll < 90 && !holds.is_empty() {
                let hold = holds.swap_remove(rng.gen_range(0..holds.len()));
                // Up to 15 % above the estimate: some captures pass the tolerance and are refused.
                let estimate = hold.quoted.units() / 1000;
                let actual_tokens = rng.gen_range(0..=estimate * 115 / 100);
                let server = if rng.gen_bool(0.5) {
                    Some(addr(50 + rng.gen_range(0..SERVERS)))
                } else {
                    None
                };
                let result = ledger
                    .capture(CaptureRequest {
                        key: k,
                        hold: hold.id,
                        actual_tokens,
                        prompt_tokens: 0,
                        server,
                    })
                    .await
                    .map(drop);
                if result.is_err() {
                    holds.push(hold);
                }
                result
            } else if !holds.is_empty() {
                let hold = holds.swap_remove(rng.gen_range(0..holds.len()));
                ledger
                    .release(ReleaseRequest {
                        key: k,
                        hold: hold.id,
                    })
                    .await
                    .map(drop)
            } else {
                let quote = quotes.swap_remove(rng.gen_range(0..quotes.len()));
                ledger
                    .authorize(AuthorizeRequest {
                        key: k,
                        quote: quote.id,
                    })
                    .await
                    .map(|hold| holds.push(hold))
            };
        match result {
            Ok(()) => succeeded += 1,
            Err(
                LedgerError::InsufficientFunds { .. } | LedgerError::CaptureAboveTolerance { .. },
            ) => refused += 1,
            Err(other) => panic!("task {task} op {op}: {other}"),
        }
    }
    (succeeded, refused)
}

pub(crate) async fn random_operations_keep_the_invariants(f: &Fixture) {
    let ledger = Arc::new(f.open().await);
    for n in 1..=HOT_USERS {
        fund(&*ledger, user(n), "1000").await;
    }
    let mut tasks = Vec::new();
    for t in 0..TASKS {
        tasks.push(tokio::spawn(task(Arc::clone(&ledger), t)));
    }
    let (mut succeeded, mut refused) = (0, 0);
    for handle in tasks {
        let (s, r) = handle.await.unwrap();
        succeeded += s;
        refused += r;
    }
    assert_eq!(succeeded + refused, TASKS * OPS_PER_TASK);
    assert!(
        succeeded > TASKS * OPS_PER_TASK / 2,
        "{succeeded} succeeded, {refused} refused"
    );

    // Every transaction balanced, balances equal their entries, none negative, the fee escrow
    // equals the open holds and the bond escrow the locked bonds (verify_integrity), and the
    // balances add up to minted − burned.
    let report = ledger.verify_integrity().await.unwrap();
    let mut accounts: Vec<AccountId> = (1..=HOT_USERS).map(user).collect();
    accounts.extend((0..SERVERS).map(|s| user(50 + s)));
    accounts.extend(
        SystemAccount::ALL
            .into_iter()
            .filter(|s| !matches!(s, SystemAccount::Mint | SystemAccount::Burn))
            .map(AccountId::System),
    );
    let mut total: u64 = 0;
    for account in accounts {
        total += ledger.balance(account).await.unwrap().available.units();
    }
    let supply = report.supply;
    assert_eq!(
        total,
        supply.circulating.units(),
        "Σ balances = minted − burned"
    );
    assert_eq!(
        supply.minted.checked_sub(supply.burned).unwrap(),
        supply.circulating
    );
    assert!(report.transactions > u64::from(succeeded) / 2);
    // Bonds were locked and settled along the way.
    let bond_moves = ledger
        .history(
            AccountId::System(SystemAccount::BondEscrow),
            blyan_ledger::HistoryQuery {
                before: None,
                limit: blyan_ledger::HISTORY_PAGE_LEN_MAX,
            },
        )
        .await
        .unwrap()
        .items;
    for direction in [
        blyan_ledger::Direction::Credit,
        blyan_ledger::Direction::Debit,
    ] {
        assert!(
            bond_moves.iter().any(|item| item.direction == direction),
            "no {direction:?} of the bond escrow"
        );
    }
}
