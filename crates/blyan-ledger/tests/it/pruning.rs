//! Pruning of idempotency keys and quotes, on both stores (the scenario joins the conformance
//! suite's macro in `conformance.rs`).

use std::time::Duration;

use blyan_ledger::{
    AuthorizeRequest, BondLockRequest, CaptureRequest, HoldStatus, IDEMPOTENCY_RETENTION_MIN,
    Ledger, LedgerError, QuoteRequest, TransferRequest,
};

use crate::support::*;

const HOUR_MS: u64 = 3_600_000;

pub(crate) async fn pruning_drops_old_keys_and_quotes_and_keeps_the_window(f: &Fixture) {
    let ledger = f.open().await;
    let alice = user(1);
    let retention = Duration::from_secs(48 * 3600);
    fund(&ledger, alice, "1000").await;

    // At T0: a transfer, a quote never authorized, a paid request (quote, hold, capture) and
    // a bond: six keys (with the funding's), two quotes.
    let old = TransferRequest {
        key: key("old"),
        from: TREASURY,
        to: alice,
        amount: bly("5"),
        memo: "old".into(),
    };
    let old_tx = ledger.transfer(old.clone()).await.unwrap();
    let quote = |k: &str| QuoteRequest {
        key: key(k),
        payer: addr(1),
        estimated_tokens: 100,
        prompt_tokens: 0,
    };
    let unheld = ledger.quote(quote("q-unheld")).await.unwrap();
    let held = ledger.quote(quote("q-held")).await.unwrap();
    let hold = ledger
        .authorize(AuthorizeRequest {
            key: key("a-held"),
            quote: held.id,
        })
        .await
        .unwrap();
    ledger
        .capture(CaptureRequest {
            key: key("c-held"),
            hold: hold.id,
            actual_tokens: 50,
            prompt_tokens: 0,
            server: None,
        })
        .await
        .unwrap();
    let lock = BondLockRequest {
        key: key("bond-1"),
        owner: addr(1),
        amount: tokenomics().pol.candidate_bond,
        memo: "candidate".into(),
    };
    let bond = ledger.lock_bond(lock.clone()).await.unwrap();

    // An hour inside the window: nothing goes, and a replay is still recognised.
    f.clock.advance_ms(47 * HOUR_MS);
    let pruned = ledger.prune(retention).await.unwrap();
    assert_eq!((pruned.idempotency_keys, pruned.quotes), (0, 0));
    assert_eq!(pruned.before_ms, T0_MS - HOUR_MS);
    let before = available(&ledger, alice).await;
    assert_eq!(ledger.transfer(old.clone()).await.unwrap(), old_tx);
    assert_eq!(available(&ledger, alice).await, before);
    let fresh = TransferRequest {
        key: key("fresh"),
        from: TREASURY,
        to: alice,
        amount: bly("1"),
        memo: "fresh".into(),
    };
    let fresh_tx = ledger.transfer(fresh.clone()).await.unwrap();

    // An hour past the window of T0's rows: their keys and the quote never authorized go;
    // the fresh key, the bond's key, the genesis and the held quote stay.
    f.clock.advance_ms(2 * HOUR_MS);
    let pruned = ledger.prune(retention).await.unwrap();
    assert_eq!(pruned.idempotency_keys, 6, "{pruned:?}");
    assert_eq!(pruned.quotes, 1, "{pruned:?}");
    assert_eq!(pruned.before_ms, T0_MS + HOUR_MS);
    let err = ledger
        .authorize(AuthorizeRequest {
            key: key("a-unheld"),
            quote: unheld.id,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::UnknownQuote { .. }), "{err}");
    let kept = ledger.hold(hold.id).await.unwrap().unwrap();
    assert_eq!((kept.quote, kept.status), (held.id, HoldStatus::Captured));
    let before = available(&ledger, alice).await;
    assert_eq!(ledger.transfer(fresh).await.unwrap(), fresh_tx);
    assert_eq!(ledger.lock_bond(lock).await.unwrap(), bond);
    assert_eq!(available(&ledger, alice).await, before);
    // The genesis is still recognised: reopening checks it instead of recording it again.
    drop(ledger);
    let ledger = f.open().await;

    // Past the window, a replay is a new request: it moves money again.
    let again = ledger.transfer(old).await.unwrap();
    assert_ne!(again.id, old_tx.id);
    assert_eq!(
        available(&ledger, alice).await,
        before.checked_add(bly("5")).unwrap()
    );

    // Pruning again finds nothing more; a retention below the minimum is refused.
    let pruned = ledger.prune(retention).await.unwrap();
    assert_eq!((pruned.idempotency_keys, pruned.quotes), (0, 0));
    let short = IDEMPOTENCY_RETENTION_MIN - Duration::from_secs(1);
    let err = ledger.prune(short).await.unwrap_err();
    assert!(
        matches!(
            err,
            LedgerError::RetentionTooShort {
                retention_ms: 3_599_000,
                min_ms: 3_600_000
            }
        ),
        "{err}"
    );
    assert!(err.is_refusal());
    let report = ledger.verify_integrity().await.unwrap();
    assert_eq!(
        report.transactions, 8,
        "genesis, fund, old, authorize, capture, bond, fresh, old again"
    );
}
