//! Batched transfers, on both stores (the scenarios join the conformance suite's macro in
//! `conformance.rs`): keys repeated inside a batch and across batches, and a transfer the
//! balances cannot cover in the middle of a batch.

use blyan_ledger::{AccountId, Amount, Ledger, LedgerError, TransferRequest};

use crate::support::*;

fn transfer(k: &str, from: AccountId, to: AccountId, amount: &str) -> TransferRequest {
    TransferRequest {
        key: key(k),
        from,
        to,
        amount: bly(amount),
        memo: format!("batch {k}"),
    }
}

pub(crate) async fn batch_keys_repeated_inside_and_across_batches_move_money_once(f: &Fixture) {
    let ledger = f.open().await;
    let (alice, bob, carol) = (user(1), user(2), user(3));
    fund(&ledger, alice, "10").await;

    // The same request twice in one batch: the second is a replay of the first.
    let pay_bob = transfer("pay-bob", alice, bob, "2");
    let pay_carol = transfer("pay-carol", alice, carol, "3");
    let recorded = ledger
        .transfer_batch(vec![pay_bob.clone(), pay_carol.clone(), pay_bob.clone()])
        .await
        .unwrap();
    assert_eq!(recorded.len(), 3);
    assert_eq!(recorded[2], recorded[0]);
    assert_ne!(recorded[1].id, recorded[0].id);
    assert!(recorded[1].id > recorded[0].id, "ids ascend in batch order");
    assert_eq!(available(&ledger, alice).await, bly("5"));
    assert_eq!(available(&ledger, bob).await, bly("2"));
    assert_eq!(available(&ledger, carol).await, bly("3"));

    // A key used again in one batch for a different request: refused at the second use,
    // and nothing of the batch recorded (its fresh key stays unused).
    let accounts = [alice, bob, carol];
    let before = snapshot(&ledger, &accounts).await;
    let fresh = transfer("fresh", alice, bob, "1");
    let clash = transfer("clash", alice, bob, "1");
    let err = ledger
        .transfer_batch(vec![
            fresh.clone(),
            clash.clone(),
            transfer("clash", alice, carol, "1"),
        ])
        .await
        .unwrap_err();
    match &err {
        LedgerError::BatchItem { index: 2, source } => match source.as_ref() {
            LedgerError::IdempotencyConflict { key, first_request } => {
                assert_eq!(key, "clash");
                assert!(first_request.contains(&bob.key()), "{first_request}");
            }
            other => panic!("expected IdempotencyConflict, got {other}"),
        },
        other => panic!("expected BatchItem 2, got {other}"),
    }
    assert!(err.is_refusal());
    assert_eq!(snapshot(&ledger, &accounts).await, before);

    // Across batches: a request replayed in a later batch returns its first outcome and moves
    // nothing again; the batch's new requests move money once.
    let replayed = ledger
        .transfer_batch(vec![fresh.clone(), pay_carol.clone(), clash.clone()])
        .await
        .unwrap();
    assert_eq!(replayed[1], recorded[1]);
    assert_eq!(available(&ledger, alice).await, bly("3"));
    assert_eq!(available(&ledger, bob).await, bly("4"));
    assert_eq!(available(&ledger, carol).await, bly("3"));
    let again = ledger
        .transfer_batch(vec![clash.clone(), fresh.clone()])
        .await
        .unwrap();
    assert_eq!(again, vec![replayed[2].clone(), replayed[0].clone()]);
    assert_eq!(available(&ledger, alice).await, bly("3"));

    // Across batches with a different request under a used key: refused at its index, and the
    // batch's other transfer is not recorded.
    let before = snapshot(&ledger, &accounts).await;
    let err = ledger
        .transfer_batch(vec![
            transfer("later", alice, carol, "1"),
            transfer("pay-bob", alice, bob, "2.5"),
        ])
        .await
        .unwrap_err();
    assert!(
        matches!(
            &err,
            LedgerError::BatchItem { index: 1, source }
                if matches!(source.as_ref(), LedgerError::IdempotencyConflict { key, .. } if key == "pay-bob")
        ),
        "{err}"
    );
    assert_eq!(snapshot(&ledger, &accounts).await, before);
    ledger.verify_integrity().await.unwrap();
}

pub(crate) async fn batch_overdraw_in_the_middle_refuses_the_whole_batch(f: &Fixture) {
    let ledger = f.open().await;
    let (alice, bob, carol, dave) = (user(1), user(2), user(3), user(4));
    fund(&ledger, alice, "10").await;
    fund(&ledger, bob, "1").await;
    let accounts = [alice, bob, carol, dave, TREASURY];
    let before = snapshot(&ledger, &accounts).await;

    // Alice covers the first two (4 + 5 of her 10) but not the third (2 of the 1 left); the
    // fourth, after it, would be covered. Checked in order against what the earlier ones left.
    let batch = vec![
        transfer("o-1", alice, bob, "4"),
        transfer("o-2", alice, carol, "5"),
        transfer("o-3", alice, dave, "2"),
        transfer("o-4", bob, carol, "1"),
    ];
    let err = ledger.transfer_batch(batch.clone()).await.unwrap_err();
    match &err {
        LedgerError::BatchItem { index: 2, source } => match source.as_ref() {
            LedgerError::InsufficientFunds {
                account,
                available,
                required,
            } => {
                assert_eq!(*account, alice);
                assert_eq!(*available, bly("1"));
                assert_eq!(*required, bly("2"));
            }
            other => panic!("expected InsufficientFunds, got {other}"),
        },
        other => panic!("expected BatchItem 2, got {other}"),
    }
    assert!(err.is_refusal());
    // Nothing of it applied: balances, transactions, entries and supply as before.
    assert_eq!(snapshot(&ledger, &accounts).await, before);

    // Nor were its keys consumed: the same requests without the overdraw go through, each once.
    let mut fixed = batch;
    fixed[2] = transfer("o-3", alice, dave, "1");
    let recorded = ledger.transfer_batch(fixed.clone()).await.unwrap();
    assert_eq!(recorded.len(), 4);
    assert_eq!(available(&ledger, alice).await, Amount::ZERO);
    assert_eq!(available(&ledger, bob).await, bly("4"));
    assert_eq!(available(&ledger, carol).await, bly("6"));
    assert_eq!(available(&ledger, dave).await, bly("1"));
    assert_eq!(ledger.transfer_batch(fixed).await.unwrap(), recorded);
    assert_eq!(available(&ledger, carol).await, bly("6"));
    ledger.verify_integrity().await.unwrap();
}
