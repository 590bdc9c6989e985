//! Grants from the treasury (operator's and faucet's): bounded by the treasury's genesis
//! allocation and, for the faucet, by per-wallet and daily limits counted in the ledger. Run
//! on both stores by the conformance macro.

use std::sync::Arc;

use blyan_ledger::{
    AccountId, Amount, FaucetClaimRequest, GrantRequest, GrantSource, HistoryQuery, Ledger,
    LedgerError, TransferRequest, TxKind,
};

use crate::support::*;

const TEAM: AccountId = AccountId::System(blyan_ledger::SystemAccount::Team);

fn grant(n: u32, name: &str, amount: &str) -> GrantRequest {
    GrantRequest {
        key: key(name),
        to: addr(n),
        amount: bly(amount),
        memo: format!("grant {name}"),
    }
}

fn claim(n: u32, name: &str, per_wallet: u32, daily: &str) -> FaucetClaimRequest {
    FaucetClaimRequest {
        key: key(name),
        to: addr(n),
        amount: bly("10"),
        claims_per_wallet_per_day: per_wallet,
        daily_total_max: bly(daily),
    }
}

pub(crate) async fn grant_moves_treasury_bly_and_is_audited_in_history(f: &Fixture) {
    let ledger = f.open().await;
    let allocation = ledger.tokenomics().treasury_allocation();
    assert_eq!(allocation, bly("30000000"));
    let first = ledger.grant(grant(1, "g1", "250")).await.unwrap();
    assert_eq!(first.source, GrantSource::Operator);
    assert_eq!(first.transaction.kind, TxKind::Grant);
    assert_eq!(first.allocation_left, bly("29999750"));
    assert_eq!(available(&ledger, user(1)).await, bly("250"));
    assert_eq!(available(&ledger, TREASURY).await, bly("29999750"));

    // The wallet's history shows the grant's kind and memo.
    let page = ledger
        .history(
            user(1),
            HistoryQuery {
                before: None,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.items.len(), 1);
    assert_eq!(page.items[0].kind, TxKind::Grant);
    assert_eq!(page.items[0].memo, "grant g1");
    assert_eq!(page.items[0].amount, bly("250"));

    // A retry returns the first outcome and moves nothing; the key with another request is a
    // conflict.
    assert_eq!(ledger.grant(grant(1, "g1", "250")).await.unwrap(), first);
    assert!(matches!(
        ledger.grant(grant(1, "g1", "251")).await,
        Err(LedgerError::IdempotencyConflict { .. })
    ));
    assert_eq!(available(&ledger, user(1)).await, bly("250"));
    ledger.verify_integrity().await.unwrap();
}

pub(crate) async fn grants_never_pass_the_treasury_allocation(f: &Fixture) {
    let ledger = f.open().await;
    ledger.grant(grant(1, "big", "29999000")).await.unwrap();
    let before = snapshot(&ledger, &[TREASURY, user(2)]).await;
    match ledger.grant(grant(2, "over", "1000.000001")).await {
        Err(LedgerError::GrantAboveAllocation {
            requested,
            left,
            allocation,
        }) => {
            assert_eq!(requested, bly("1000.000001"));
            assert_eq!(left, bly("1000"));
            assert_eq!(allocation, bly("30000000"));
        }
        other => panic!("expected GrantAboveAllocation, got {other:?}"),
    }
    assert_eq!(snapshot(&ledger, &[TREASURY, user(2)]).await, before);

    // Exactly what is left is granted; then nothing more, even after the treasury is paid
    // into again: the bound is the allocation, not the treasury's balance.
    let last = ledger.grant(grant(2, "rest", "1000")).await.unwrap();
    assert_eq!(last.allocation_left, Amount::ZERO);
    ledger
        .transfer(TransferRequest {
            key: key("refill"),
            from: TEAM,
            to: TREASURY,
            amount: bly("500"),
            memo: "refill".into(),
        })
        .await
        .unwrap();
    assert!(matches!(
        ledger.grant(grant(3, "after", "0.000001")).await,
        Err(LedgerError::GrantAboveAllocation { left, .. }) if left == Amount::ZERO
    ));
    assert_eq!(available(&ledger, TREASURY).await, bly("500"));
    ledger.verify_integrity().await.unwrap();
}

pub(crate) async fn concurrent_grants_stop_exactly_at_the_allocation(f: &Fixture) {
    let ledger = Arc::new(f.open().await);
    // 100 BLY left, then 16 concurrent grants of 10 to distinct wallets: exactly 10 pass.
    ledger.grant(grant(99, "most", "29999900")).await.unwrap();
    let mut tasks = Vec::new();
    for n in 0..16 {
        let ledger = Arc::clone(&ledger);
        tasks.push(tokio::spawn(async move {
            ledger.grant(grant(n, &format!("race-{n}"), "10")).await
        }));
    }
    let (mut granted, mut refused) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => granted += 1,
            Err(LedgerError::GrantAboveAllocation { .. }) => refused += 1,
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((granted, refused), (10, 6));
    assert_eq!(available(&*ledger, TREASURY).await, Amount::ZERO);
    ledger.verify_integrity().await.unwrap();
}

pub(crate) async fn faucet_limits_are_counted_in_the_ledger(f: &Fixture) {
    let ledger = Arc::new(f.open().await);
    // One wallet, 12 concurrent claims, two allowed per day: exactly two pass.
    let mut tasks = Vec::new();
    for i in 0..12 {
        let ledger = Arc::clone(&ledger);
        tasks.push(tokio::spawn(async move {
            ledger
                .claim_faucet(claim(1, &format!("c1-{i}"), 2, "1000"))
                .await
        }));
    }
    let mut granted = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(grant) => {
                assert_eq!(grant.source, GrantSource::Faucet);
                assert_eq!(grant.transaction.kind, TxKind::Grant);
                assert_eq!(grant.transaction.memo, "faucet");
                granted += 1;
            }
            Err(LedgerError::FaucetWalletLimit {
                wallet,
                claims,
                max,
            }) => {
                assert_eq!((wallet, claims, max), (addr(1), 2, 2));
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(granted, 2);
    assert_eq!(available(&*ledger, user(1)).await, bly("20"));

    // The daily total: 40 BLY; 20 already out, so two more wallets pass and the third is
    // refused, naming what went out today.
    ledger.claim_faucet(claim(2, "c2", 2, "40")).await.unwrap();
    ledger.claim_faucet(claim(3, "c3", 2, "40")).await.unwrap();
    match ledger.claim_faucet(claim(4, "c4", 2, "40")).await {
        Err(LedgerError::FaucetDailyCap {
            requested,
            granted_today,
            cap,
        }) => {
            assert_eq!(
                (requested, granted_today, cap),
                (bly("10"), bly("40"), bly("40"))
            );
        }
        other => panic!("expected FaucetDailyCap, got {other:?}"),
    }
    assert_eq!(available(&*ledger, user(4)).await, Amount::ZERO);

    // Operator grants do not count against the faucet; a new UTC day resets its limits.
    ledger.grant(grant(1, "operator", "5")).await.unwrap();
    assert!(matches!(
        ledger.claim_faucet(claim(1, "c1-late", 2, "1000")).await,
        Err(LedgerError::FaucetWalletLimit { .. })
    ));
    f.clock.advance_ms(24 * 3600 * 1000);
    ledger
        .claim_faucet(claim(1, "c1-next-day", 2, "40"))
        .await
        .unwrap();
    ledger
        .claim_faucet(claim(4, "c4-next-day", 2, "40"))
        .await
        .unwrap();
    assert_eq!(available(&*ledger, user(1)).await, bly("35"));
    ledger.verify_integrity().await.unwrap();
}
