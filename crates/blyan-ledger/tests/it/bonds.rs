//! Proof-of-Learning candidate bonds and the data contributors' reward, on both stores (the
//! scenarios join the conformance suite's macro in `conformance.rs`).

use blyan_ledger::{
    AccountId, Amount, Bond, BondLockRequest, BondOutcome, BondSettleRequest, BondState,
    DataRewardRequest, LearningRewardRequest, Ledger, LedgerError, TransferRequest, TxKind,
};

use crate::support::*;

fn lock(k: &str, owner: AccountId, amount: &str) -> BondLockRequest {
    let AccountId::User(owner) = owner else {
        panic!("bonds are owned by wallets")
    };
    BondLockRequest {
        key: key(k),
        owner,
        amount: bly(amount),
        memo: format!("candidate {k}"),
    }
}

fn settle(k: &str, bond: &str, outcome: BondOutcome) -> BondSettleRequest {
    BondSettleRequest {
        key: key(k),
        bond: key(bond),
        outcome,
        memo: format!("{outcome:?} {bond}"),
    }
}

/// The shipped bond amount, as the PoL service would lock it.
fn candidate_bond() -> Amount {
    tokenomics().pol.candidate_bond
}

pub(crate) async fn bond_lock_then_refund_restores_balances_exactly(f: &Fixture) {
    let ledger = f.open().await;
    let alice = user(1);
    fund(&ledger, alice, "250").await;
    let supply = ledger.supply().await.unwrap();
    let bond_amount = candidate_bond().to_string();

    let bond = ledger
        .lock_bond(lock("b1", alice, &bond_amount))
        .await
        .unwrap();
    assert_eq!(
        (bond.state, bond.amount, bond.settle_tx, bond.settled_at_ms),
        (BondState::Locked, bly("100"), None, None)
    );
    let balance = ledger.balance(alice).await.unwrap();
    assert_eq!((balance.available, balance.held), (bly("150"), bly("100")));
    assert_eq!(available(&ledger, BOND_ESCROW).await, bly("100"));
    let lock_tx = ledger.transaction(bond.lock_tx).await.unwrap().unwrap();
    assert_eq!(lock_tx.kind, TxKind::BondLock);
    assert_eq!(lock_tx.memo, "candidate b1");
    assert_eq!(ledger.bond(key("b1")).await.unwrap(), Some(bond.clone()));
    ledger.verify_integrity().await.unwrap();

    // Only the ledger's bond operations move the bond escrow.
    let err = ledger
        .transfer(TransferRequest {
            key: key("steal"),
            from: BOND_ESCROW,
            to: alice,
            amount: bly("1"),
            memo: String::new(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::ReservedAccount { account, .. } if account == BOND_ESCROW),
        "{err}"
    );

    f.clock.advance_ms(5);
    let refunded = ledger
        .settle_bond(settle("b1-accepted", "b1", BondOutcome::Refund))
        .await
        .unwrap();
    assert_eq!(refunded.state, BondState::Refunded);
    assert_eq!(refunded.settled_at_ms, Some(T0_MS + 5));
    let settle_tx = ledger
        .transaction(refunded.settle_tx.unwrap())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(settle_tx.kind, TxKind::BondRefund);
    let balance = ledger.balance(alice).await.unwrap();
    assert_eq!(
        (balance.available, balance.held),
        (bly("250"), Amount::ZERO)
    );
    assert_eq!(available(&ledger, BOND_ESCROW).await, Amount::ZERO);
    assert_eq!(
        ledger.supply().await.unwrap(),
        supply,
        "a refund burns nothing"
    );
    assert_eq!(ledger.bond(key("b1")).await.unwrap(), Some(refunded));
    assert_eq!(ledger.bond(key("never-locked")).await.unwrap(), None);
    ledger.verify_integrity().await.unwrap();
}

pub(crate) async fn bond_lock_then_burn_grows_the_burned_supply(f: &Fixture) {
    let ledger = f.open().await;
    let alice = user(1);
    fund(&ledger, alice, "100").await;
    let before = ledger.supply().await.unwrap();
    let bond = ledger.lock_bond(lock("b1", alice, "100")).await.unwrap();
    assert_eq!(available(&ledger, alice).await, Amount::ZERO);
    ledger.verify_integrity().await.unwrap();

    let burned = ledger
        .settle_bond(settle("b1-rejected", "b1", BondOutcome::Burn))
        .await
        .unwrap();
    assert_eq!(burned.state, BondState::Burned);
    assert_eq!(burned.lock_tx, bond.lock_tx);
    let kind = ledger
        .transaction(burned.settle_tx.unwrap())
        .await
        .unwrap()
        .unwrap()
        .kind;
    assert_eq!(kind, TxKind::BondBurn);
    let after = ledger.supply().await.unwrap();
    assert_eq!(after.burned, before.burned.checked_add(bly("100")).unwrap());
    assert_eq!(
        after.circulating,
        before.circulating.checked_sub(bly("100")).unwrap()
    );
    assert_eq!(after.minted, before.minted);
    let balance = ledger.balance(alice).await.unwrap();
    assert_eq!(
        (balance.available, balance.held),
        (Amount::ZERO, Amount::ZERO)
    );
    assert_eq!(available(&ledger, BOND_ESCROW).await, Amount::ZERO);
    assert_eq!(available(&ledger, BURN).await, bly("100"));
    let report = ledger.verify_integrity().await.unwrap();
    assert_eq!(report.supply, after);
}

pub(crate) async fn bond_without_funds_is_refused_and_moves_nothing(f: &Fixture) {
    let ledger = f.open().await;
    let (poor, stranger) = (user(1), user(2));
    fund(&ledger, poor, "99.999999").await;
    let watched = [poor, stranger, BOND_ESCROW, BURN, TREASURY];
    let before = snapshot(&ledger, &watched).await;

    let err = ledger
        .lock_bond(lock("b-poor", poor, "100"))
        .await
        .unwrap_err();
    match err {
        LedgerError::InsufficientFunds {
            account,
            available,
            required,
        } => assert_eq!(
            (account, available, required),
            (poor, bly("99.999999"), bly("100"))
        ),
        ref other => panic!("expected InsufficientFunds, got {other}"),
    }
    assert!(err.is_refusal());
    let err = ledger
        .lock_bond(lock("b-stranger", stranger, "100"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::InsufficientFunds { available, .. } if available == Amount::ZERO),
        "an author who never held BLY has nothing available: {err}"
    );
    let err = ledger
        .lock_bond(lock("b-zero", poor, "0"))
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::Zero { .. }), "{err}");
    assert_eq!(snapshot(&ledger, &watched).await, before);
    // Nothing was recorded under the refused keys: the bond does not exist, and the key is
    // free for a request that can be paid.
    assert_eq!(ledger.bond(key("b-poor")).await.unwrap(), None);
    fund(&ledger, poor, "0.000001").await;
    let bond = ledger.lock_bond(lock("b-poor", poor, "100")).await.unwrap();
    assert_eq!(bond.amount, bly("100"));
    assert_eq!(available(&ledger, poor).await, Amount::ZERO);
    ledger.verify_integrity().await.unwrap();
}

pub(crate) async fn bond_settles_once(f: &Fixture) {
    let ledger = f.open().await;
    let alice = user(1);
    fund(&ledger, alice, "300").await;
    ledger.lock_bond(lock("b1", alice, "100")).await.unwrap();
    ledger.lock_bond(lock("b2", alice, "100")).await.unwrap();
    ledger
        .settle_bond(settle("b1-burn", "b1", BondOutcome::Burn))
        .await
        .unwrap();
    ledger
        .settle_bond(settle("b2-refund", "b2", BondOutcome::Refund))
        .await
        .unwrap();
    let watched = [alice, BOND_ESCROW, BURN];
    let before = snapshot(&ledger, &watched).await;

    // Another settlement of a settled bond, with either outcome, is refused naming its state.
    for (k, bond, outcome, state) in [
        ("b1-burn-again", "b1", BondOutcome::Burn, BondState::Burned),
        ("b1-refund", "b1", BondOutcome::Refund, BondState::Burned),
        ("b2-burn", "b2", BondOutcome::Burn, BondState::Refunded),
        (
            "b2-refund-again",
            "b2",
            BondOutcome::Refund,
            BondState::Refunded,
        ),
    ] {
        let err = ledger
            .settle_bond(settle(k, bond, outcome))
            .await
            .unwrap_err();
        match &err {
            LedgerError::BondSettled {
                bond: got,
                state: got_state,
            } => {
                assert_eq!((got.as_str(), *got_state), (bond, state), "{k}");
            }
            other => panic!("{k}: expected BondSettled, got {other}"),
        }
        assert!(err.is_refusal());
    }
    let err = ledger
        .settle_bond(settle("nobody-settle", "nobody", BondOutcome::Burn))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LedgerError::UnknownBond { bond } if bond.as_str() == "nobody"),
        "{err}"
    );
    assert!(err.is_refusal());
    assert_eq!(snapshot(&ledger, &watched).await, before);
    assert_eq!(
        ledger.bond(key("b1")).await.unwrap().map(|b| b.state),
        Some(BondState::Burned)
    );

    // Settlements racing on one bond (refunds and burns under different keys): exactly one
    // wins, the others are told its outcome, and the money moves once.
    ledger.lock_bond(lock("b3", alice, "100")).await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|i| {
            let ledger = ledger.clone();
            let outcome = if i % 2 == 0 {
                BondOutcome::Refund
            } else {
                BondOutcome::Burn
            };
            tokio::spawn(async move {
                ledger
                    .settle_bond(settle(&format!("b3-race-{i}"), "b3", outcome))
                    .await
            })
        })
        .collect();
    let mut won = Vec::new();
    let mut refused = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(bond) => won.push(bond),
            Err(LedgerError::BondSettled { state, .. }) => refused.push(state),
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(won.len(), 1, "{won:?}");
    let state = won[0].state;
    assert!(
        refused.iter().all(|s| *s == state),
        "{refused:?} vs {state:?}"
    );
    let (alice_after, burned_after) = match state {
        BondState::Refunded => ("200", "100"),
        _ => ("100", "200"),
    };
    assert_eq!(available(&ledger, alice).await, bly(alice_after));
    assert_eq!(available(&ledger, BURN).await, bly(burned_after));
    assert_eq!(available(&ledger, BOND_ESCROW).await, Amount::ZERO);
    ledger.verify_integrity().await.unwrap();
}

pub(crate) async fn bond_retries_return_the_first_outcome(f: &Fixture) {
    let ledger = f.open().await;
    let alice = user(1);
    fund(&ledger, alice, "500").await;
    let first: Bond = ledger.lock_bond(lock("b1", alice, "100")).await.unwrap();
    let watched = [alice, BOND_ESCROW, BURN];
    let locked = snapshot(&ledger, &watched).await;
    f.clock.advance_ms(10);
    assert_eq!(
        ledger.lock_bond(lock("b1", alice, "100")).await.unwrap(),
        first,
        "the same lock again is the first bond"
    );
    assert_eq!(snapshot(&ledger, &watched).await, locked);
    let err = ledger
        .lock_bond(lock("b1", alice, "200"))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LedgerError::IdempotencyConflict { key, .. } if key == "b1"),
        "{err}"
    );
    assert_eq!(snapshot(&ledger, &watched).await, locked);

    let settled = ledger
        .settle_bond(settle("s1", "b1", BondOutcome::Burn))
        .await
        .unwrap();
    let after = snapshot(&ledger, &watched).await;
    f.clock.advance_ms(10);
    assert_eq!(
        ledger
            .settle_bond(settle("s1", "b1", BondOutcome::Burn))
            .await
            .unwrap(),
        settled,
        "the same settlement again is its first outcome"
    );
    let err = ledger
        .settle_bond(settle("s1", "b1", BondOutcome::Refund))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, LedgerError::IdempotencyConflict { key, .. } if key == "s1"),
        "{err}"
    );
    // The lock replayed after its bond settled still answers with the lock's outcome.
    assert_eq!(
        ledger.lock_bond(lock("b1", alice, "100")).await.unwrap(),
        first
    );
    assert_eq!(snapshot(&ledger, &watched).await, after);
    // Concurrent retries of one lock move the money once.
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let ledger = ledger.clone();
            tokio::spawn(async move { ledger.lock_bond(lock("b2", alice, "100")).await })
        })
        .collect();
    let mut bonds = Vec::new();
    for task in tasks {
        bonds.push(task.await.unwrap().unwrap());
    }
    assert!(bonds.iter().all(|b| *b == bonds[0]));
    assert_eq!(available(&ledger, alice).await, bly("300"));
    assert_eq!(available(&ledger, BOND_ESCROW).await, bly("100"));
    ledger.verify_integrity().await.unwrap();
}

pub(crate) async fn data_and_learning_rewards_pay_the_configured_amounts(f: &Fixture) {
    let ledger = f.open().await;
    let (contributor, learner) = (addr(5), addr(6));
    let pool = available(&ledger, REWARD_POOL).await;
    let data = DataRewardRequest {
        key: key("d1"),
        contributor,
        samples: 7,
        memo: String::new(),
    };
    let tx = ledger.reward_data(data.clone()).await.unwrap();
    assert_eq!(tx.kind, TxKind::Reward);
    assert_eq!(tx.memo, "data reward: 7 samples");
    assert_eq!(available(&ledger, contributor.into()).await, bly("140"));
    assert_eq!(ledger.reward_data(data).await.unwrap(), tx, "paid once");
    assert_eq!(available(&ledger, contributor.into()).await, bly("140"));

    // 20,000 BLY per 1 %: 100 bps pays exactly 20,000 BLY.
    assert_eq!(
        tokenomics().rewards.learning_per_improvement_percent,
        bly("20000")
    );
    ledger
        .reward_learning(LearningRewardRequest {
            key: key("l1"),
            learner,
            improvement_bps: 100,
        })
        .await
        .unwrap();
    assert_eq!(available(&ledger, learner.into()).await, bly("20000"));
    assert_eq!(
        available(&ledger, REWARD_POOL).await,
        pool.checked_sub(bly("20140")).unwrap()
    );
    assert_eq!(ledger.supply().await.unwrap().minted, bly("100000000"));

    // Refused: no samples, too many samples; nothing moves.
    let watched = [contributor.into(), REWARD_POOL];
    let before = snapshot(&ledger, &watched).await;
    for (samples, k) in [(0, "d0"), (blyan_ledger::DATA_SAMPLES_MAX + 1, "dmax")] {
        let err = ledger
            .reward_data(DataRewardRequest {
                key: key(k),
                contributor,
                samples,
                memo: "m".into(),
            })
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                LedgerError::Zero { .. } | LedgerError::LimitExceeded { .. }
            ),
            "{err}"
        );
    }
    assert_eq!(snapshot(&ledger, &watched).await, before);

    // With the pool drained, the data reward is minted within the allowance.
    let rest = available(&ledger, REWARD_POOL).await;
    ledger
        .transfer(TransferRequest {
            key: key("drain"),
            from: REWARD_POOL,
            to: TREASURY,
            amount: rest,
            memo: String::new(),
        })
        .await
        .unwrap();
    let tx = ledger
        .reward_data(DataRewardRequest {
            key: key("d2"),
            contributor,
            samples: 1,
            memo: "certificate c1".into(),
        })
        .await
        .unwrap();
    assert_eq!(tx.memo, "certificate c1");
    assert_eq!(ledger.supply().await.unwrap().minted, bly("100000020"));
    assert_eq!(available(&ledger, contributor.into()).await, bly("160"));
    ledger.verify_integrity().await.unwrap();
}
