//! The conformance suite: every scenario runs against both stores (see the macro at the end;
//! the bond and data-reward scenarios live in `bonds.rs`, the grant and faucet ones in
//! `grants.rs`, the batch ones in `batches.rs`, pruning in `pruning.rs`).

use std::sync::Arc;

use blyan_ledger::{
    AccountId, Amount, AuthorizeRequest, BurnRequest, CaptureRequest, Direction, HistoryQuery,
    HoldStatus, INFLATION_YEAR_MS, LearningRewardRequest, Ledger, LedgerError, MintRequest,
    QuoteRequest, ReleaseRequest, SystemAccount, TransferRequest, TxKind, ValidationRewardRequest,
};

use crate::support::*;

async fn genesis_is_allocated_once(f: &Fixture) {
    let ledger = f.open().await;
    let supply = ledger.supply().await.unwrap();
    assert_eq!(supply.minted, bly("100000000"));
    assert_eq!(supply.genesis, bly("100000000"));
    assert_eq!(supply.burned, Amount::ZERO);
    assert_eq!(supply.circulating, bly("100000000"));
    assert_eq!(supply.cap, bly("1000000000"));
    assert_eq!(available(&ledger, REWARD_POOL).await, bly("40000000"));
    assert_eq!(available(&ledger, TREASURY).await, bly("30000000"));
    let report = ledger.verify_integrity().await.unwrap();
    assert_eq!(report.transactions, 1);
    drop(ledger);

    // Reopening finds the genesis and mints nothing more.
    let ledger = f.open().await;
    assert_eq!(ledger.verify_integrity().await.unwrap().transactions, 1);
    assert_eq!(ledger.supply().await.unwrap().minted, bly("100000000"));
    drop(ledger);

    // A ledger opened with other allocations is refused, not re-minted.
    let mut changed = tokenomics();
    changed.genesis_allocations[0].amount = bly("39000000");
    changed.genesis_allocations[1].amount = bly("31000000");
    match f.open_with(changed).await {
        Err(LedgerError::GenesisMismatch { stored, configured }) => {
            assert_ne!(stored, configured);
            assert!(configured.contains("39000000"), "{configured}");
        }
        other => panic!("expected GenesisMismatch, got {:?}", other.map(|_| ())),
    }
    // ...and the refusal minted and moved nothing.
    let ledger = f.open().await;
    assert_eq!(ledger.verify_integrity().await.unwrap().transactions, 1);
    assert_eq!(ledger.supply().await.unwrap().minted, bly("100000000"));
    assert_eq!(available(&ledger, REWARD_POOL).await, bly("40000000"));
    assert_eq!(available(&ledger, TREASURY).await, bly("30000000"));
}

async fn transfers_move_money_and_history_pages(f: &Fixture) {
    let ledger = f.open().await;
    let (alice, bob) = (user(1), user(2));
    let first = ledger
        .transfer(TransferRequest {
            key: key("t1"),
            from: TREASURY,
            to: alice,
            amount: bly("100"),
            memo: "welcome".into(),
        })
        .await
        .unwrap();
    assert_eq!(first.kind, TxKind::Transfer);
    assert_eq!(first.entries.iter().map(|e| e.delta()).sum::<i64>(), 0);
    for i in 0..5 {
        ledger
            .transfer(TransferRequest {
                key: key(format!("ab{i}")),
                from: alice,
                to: bob,
                amount: bly("1.5"),
                memo: format!("coffee {i}"),
            })
            .await
            .unwrap();
    }
    assert_eq!(available(&ledger, alice).await, bly("92.5"));
    assert_eq!(available(&ledger, bob).await, bly("7.5"));
    assert_eq!(available(&ledger, TREASURY).await, bly("29999900"));
    assert_eq!(ledger.transaction(first.id).await.unwrap().unwrap(), first);
    assert_eq!(
        ledger
            .transaction(blyan_ledger::TxId(999_999))
            .await
            .unwrap(),
        None
    );

    // Pages of two, newest first, through all six of alice's entries. A full page always
    // offers a next one, so the fourth page is the empty last page.
    let mut pages = Vec::new();
    let mut before = None;
    loop {
        let page = ledger
            .history(alice, HistoryQuery { before, limit: 2 })
            .await
            .unwrap();
        pages.push(
            page.items
                .iter()
                .map(|i| (i.direction, i.amount, i.memo.clone()))
                .collect::<Vec<_>>(),
        );
        match page.next {
            Some(next) => before = Some(next),
            None => break,
        }
    }
    let sizes: Vec<usize> = pages.iter().map(Vec::len).collect();
    assert_eq!(sizes, [2, 2, 2, 0]);
    let mut expected: Vec<_> = (0..5)
        .rev()
        .map(|i| (Direction::Debit, bly("1.5"), format!("coffee {i}")))
        .collect();
    expected.push((Direction::Credit, bly("100"), "welcome".to_owned()));
    assert_eq!(pages.concat(), expected);
    ledger.verify_integrity().await.unwrap();
}

async fn payment_flow_splits_the_fee(f: &Fixture) {
    let ledger = f.open().await;
    let (alice, server) = (user(1), addr(9));
    fund(&ledger, alice, "10").await;
    let quote = ledger
        .quote(QuoteRequest {
            key: key("q1"),
            payer: addr(1),
            estimated_tokens: 1000,
            prompt_tokens: 0,
        })
        .await
        .unwrap();
    assert_eq!(quote.amount, bly("1"));
    assert_eq!(quote.hold_amount, bly("1.1"));
    assert_eq!(quote.expires_at_ms, T0_MS + 300_000);
    let hold = ledger
        .authorize(AuthorizeRequest {
            key: key("a1"),
            quote: quote.id,
        })
        .await
        .unwrap();
    assert_eq!(hold.status, HoldStatus::Authorized);
    let balance = ledger.balance(alice).await.unwrap();
    assert_eq!((balance.available, balance.held), (bly("8.9"), bly("1.1")));
    assert_eq!(available(&ledger, ESCROW).await, bly("1.1"));

    // 1100 tokens is exactly quote + 10 %: allowed. The fee 1.1 BLY: 20 % burned.
    let capture = ledger
        .capture(CaptureRequest {
            key: key("c1"),
            hold: hold.id,
            actual_tokens: 1100,
            prompt_tokens: 0,
            server: Some(server),
        })
        .await
        .unwrap();
    assert_eq!(capture.charged, bly("1.1"));
    assert_eq!(capture.burned, bly("0.22"));
    assert_eq!(capture.served, bly("0.88"));
    assert_eq!(capture.released, Amount::ZERO);
    assert_eq!(capture.paid_to, AccountId::User(server));
    assert_eq!(capture.hold.status, HoldStatus::Captured);
    assert_eq!(available(&ledger, alice).await, bly("8.9"));
    assert_eq!(
        available(&ledger, AccountId::User(server)).await,
        bly("0.88")
    );
    assert_eq!(available(&ledger, ESCROW).await, Amount::ZERO);
    let supply = ledger.supply().await.unwrap();
    assert_eq!(supply.burned, bly("0.22"));
    assert_eq!(supply.circulating, bly("99999999.78"));

    // A smaller capture releases the rest; no server pays the reward pool.
    let pool_before = available(&ledger, REWARD_POOL).await;
    let quote = ledger
        .quote(QuoteRequest {
            key: key("q2"),
            payer: addr(1),
            estimated_tokens: 2000,
            prompt_tokens: 0,
        })
        .await
        .unwrap();
    let hold = ledger
        .authorize(AuthorizeRequest {
            key: key("a2"),
            quote: quote.id,
        })
        .await
        .unwrap();
    let capture = ledger
        .capture(CaptureRequest {
            key: key("c2"),
            hold: hold.id,
            actual_tokens: 500,
            prompt_tokens: 0,
            server: None,
        })
        .await
        .unwrap();
    assert_eq!(capture.charged, bly("0.5"));
    assert_eq!(capture.released, bly("1.7"));
    assert_eq!(available(&ledger, alice).await, bly("8.4"));
    assert_eq!(
        available(&ledger, REWARD_POOL).await,
        pool_before.checked_add(bly("0.4")).unwrap()
    );

    // Release returns everything; the hold cannot be captured afterwards.
    let quote = ledger
        .quote(QuoteRequest {
            key: key("q3"),
            payer: addr(1),
            estimated_tokens: 1000,
            prompt_tokens: 0,
        })
        .await
        .unwrap();
    let hold = ledger
        .authorize(AuthorizeRequest {
            key: key("a3"),
            quote: quote.id,
        })
        .await
        .unwrap();
    let released = ledger
        .release(ReleaseRequest {
            key: key("r3"),
            hold: hold.id,
        })
        .await
        .unwrap();
    assert_eq!(released.status, HoldStatus::Released);
    assert_eq!(available(&ledger, alice).await, bly("8.4"));
    let err = ledger
        .capture(CaptureRequest {
            key: key("c3"),
            hold: hold.id,
            actual_tokens: 1,
            prompt_tokens: 0,
            server: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(
        err,
        LedgerError::HoldNotAuthorized {
            status: HoldStatus::Released,
            ..
        }
    ));
    // A quote is authorized once.
    let err = ledger
        .authorize(AuthorizeRequest {
            key: key("a3b"),
            quote: quote.id,
        })
        .await;
    assert!(matches!(
        err,
        Err(LedgerError::QuoteAlreadyAuthorized { .. })
    ));
    let stored = ledger.hold(hold.id).await.unwrap().unwrap();
    assert_eq!(stored.status, HoldStatus::Released);
    ledger.verify_integrity().await.unwrap();
}

async fn prompt_tokens_are_priced_at_their_rate(f: &Fixture) {
    let ledger = f.open().await;
    let alice = user(3);
    fund(&ledger, alice, "10").await;
    // 2000 prompt tokens at 0.25 BLY per 1000, 1000 completion tokens at 1 BLY per 1000.
    let quote = ledger
        .quote(QuoteRequest {
            key: key("pq1"),
            payer: addr(3),
            estimated_tokens: 1000,
            prompt_tokens: 2000,
        })
        .await
        .unwrap();
    assert_eq!(quote.amount, bly("1.5"));
    assert_eq!(quote.hold_amount, bly("1.65"));
    let hold = ledger
        .authorize(AuthorizeRequest {
            key: key("pa1"),
            quote: quote.id,
        })
        .await
        .unwrap();
    // A stream cut after 3 tokens pays for its prompt and those 3.
    let capture = ledger
        .capture(CaptureRequest {
            key: key("pc1"),
            hold: hold.id,
            actual_tokens: 3,
            prompt_tokens: 2000,
            server: None,
        })
        .await
        .unwrap();
    assert_eq!(capture.charged, bly("0.503"));
    assert_eq!(capture.released, bly("1.147"));
    assert_eq!(available(&ledger, alice).await, bly("9.497"));
    let balance = ledger.balance(alice).await.unwrap();
    assert_eq!(balance.held, Amount::ZERO);

    // The prompt counts against the capture tolerance too: a prompt larger than quoted that
    // pushes the charge past the hold is refused and moves nothing.
    let quote = ledger
        .quote(QuoteRequest {
            key: key("pq2"),
            payer: addr(3),
            estimated_tokens: 100,
            prompt_tokens: 0,
        })
        .await
        .unwrap();
    let hold = ledger
        .authorize(AuthorizeRequest {
            key: key("pa2"),
            quote: quote.id,
        })
        .await
        .unwrap();
    match ledger
        .capture(CaptureRequest {
            key: key("pc2"),
            hold: hold.id,
            actual_tokens: 100,
            prompt_tokens: 1000,
            server: None,
        })
        .await
    {
        Err(LedgerError::CaptureAboveTolerance { charge, max, .. }) => {
            assert_eq!((charge, max), (bly("0.35"), bly("0.11")));
        }
        other => panic!("expected CaptureAboveTolerance, got {other:?}"),
    }
    let balance = ledger.balance(alice).await.unwrap();
    assert_eq!(
        (balance.available, balance.held),
        (bly("9.387"), bly("0.11"))
    );
    ledger.verify_integrity().await.unwrap();
}

async fn holds_and_quotes_expire(f: &Fixture) {
    let ledger = f.open().await;
    let alice = user(1);
    fund(&ledger, alice, "10").await;
    let quote = |k: &'static str| QuoteRequest {
        key: key(k),
        payer: addr(1),
        estimated_tokens: 1000,
        prompt_tokens: 0,
    };
    let q1 = ledger.quote(quote("q1")).await.unwrap();
    let h1 = ledger
        .authorize(AuthorizeRequest {
            key: key("a1"),
            quote: q1.id,
        })
        .await
        .unwrap();
    let q2 = ledger.quote(quote("q2")).await.unwrap();

    // At the TTL exactly, both are stale.
    f.clock.advance_ms(300_000);
    let err = ledger
        .capture(CaptureRequest {
            key: key("c1"),
            hold: h1.id,
            actual_tokens: 10,
            prompt_tokens: 0,
            server: None,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::HoldExpired { .. }), "{err}");
    let err = ledger
        .authorize(AuthorizeRequest {
            key: key("a2"),
            quote: q2.id,
        })
        .await
        .unwrap_err();
    assert!(matches!(err, LedgerError::QuoteExpired { .. }), "{err}");
    assert_eq!(ledger.balance(alice).await.unwrap().held, bly("1.1"));

    let expired = ledger.expire_holds().await.unwrap();
    assert_eq!(expired, vec![h1.id]);
    assert_eq!(
        ledger.hold(h1.id).await.unwrap().unwrap().status,
        HoldStatus::Expired
    );
    let balance = ledger.balance(alice).await.unwrap();
    assert_eq!((balance.available, balance.held), (bly("10"), Amount::ZERO));
    assert!(ledger.expire_holds().await.unwrap().is_empty());
    ledger.verify_integrity().await.unwrap();
}

async fn restart_keeps_balances_and_expires_stale_holds(f: &Fixture) {
    let ledger = f.open().await;
    let alice = user(1);
    fund(&ledger, alice, "10").await;
    let quote = ledger
        .quote(QuoteRequest {
            key: key("q1"),
            payer: addr(1),
            estimated_tokens: 1000,
            prompt_tokens: 0,
        })
        .await
        .unwrap();
    let hold = ledger
        .authorize(AuthorizeRequest {
            key: key("a1"),
            quote: quote.id,
        })
        .await
        .unwrap();
    drop(ledger);

    // Closed for ten minutes: the hold went stale meanwhile.
    f.clock.advance_ms(600_000);
    let ledger = f.open().await;
    assert_eq!(
        ledger.hold(hold.id).await.unwrap().unwrap().status,
        HoldStatus::Expired
    );
    assert_eq!(available(&ledger, alice).await, bly("10"));
    assert_eq!(available(&ledger, ESCROW).await, Amount::ZERO);
    ledger.verify_integrity().await.unwrap();
}

async fn rewards_and_issuance_respect_the_caps(f: &Fixture) {
    let ledger = f.open().await;
    let (validator, learner) = (addr(3), addr(4));
    let pool = available(&ledger, REWARD_POOL).await;
    let tx = ledger
        .reward_validation(ValidationRewardRequest {
            key: key("v1"),
            validator,
            samples: 3,
        })
        .await
        .unwrap();
    assert_eq!(tx.kind, TxKind::Reward);
    assert_eq!(available(&ledger, validator.into()).await, bly("60"));
    ledger
        .reward_learning(LearningRewardRequest {
            key: key("l1"),
            learner,
            improvement_bps: 250,
        })
        .await
        .unwrap();
    assert_eq!(available(&ledger, learner.into()).await, bly("50000"));
    assert_eq!(
        available(&ledger, REWARD_POOL).await,
        pool.checked_sub(bly("50060")).unwrap()
    );
    assert_eq!(
        ledger.supply().await.unwrap().minted,
        bly("100000000"),
        "paid from the pool"
    );

    // Empty the pool: the next reward is minted within the inflation allowance (10 % of the
    // 100M circulating at the start of year 0 = 10M).
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
    ledger
        .reward_learning(LearningRewardRequest {
            key: key("l2"),
            learner,
            improvement_bps: 100,
        })
        .await
        .unwrap();
    assert_eq!(ledger.supply().await.unwrap().minted, bly("100020000"));
    let mint = |k: &str, amount: &str| MintRequest {
        key: key(k),
        to: TREASURY,
        amount: bly(amount),
        memo: "issuance".into(),
    };
    ledger.mint(mint("m1", "9980000")).await.unwrap(); // the allowance exactly
    let err = ledger.mint(mint("m2", "0.000001")).await.unwrap_err();
    assert!(
        matches!(err, LedgerError::InflationCapExceeded { year: 0, .. }),
        "one unit past the allowance: {err}"
    );
    let err = ledger
        .reward_validation(ValidationRewardRequest {
            key: key("v2"),
            validator,
            samples: 1,
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::InflationCapExceeded { .. }),
        "{err}"
    );

    // A new inflation year has a new allowance: 10 % of 110M.
    f.clock.advance_ms(INFLATION_YEAR_MS);
    ledger.mint(mint("m3", "11000000")).await.unwrap();
    assert!(matches!(
        ledger.mint(mint("m4", "1")).await,
        Err(LedgerError::InflationCapExceeded { year: 1, .. })
    ));
    ledger.verify_integrity().await.unwrap();
}

async fn supply_cap_is_never_passed(f: &Fixture) {
    let mut tokenomics = tokenomics();
    tokenomics.supply.cap = bly("100000050");
    tokenomics.supply.inflation_yearly_bps_max = 10_000;
    let ledger = f.open_with(tokenomics).await.unwrap();
    let mint = |k: &str, amount: &str| MintRequest {
        key: key(k),
        to: TREASURY,
        amount: bly(amount),
        memo: String::new(),
    };
    ledger.mint(mint("m1", "50")).await.unwrap();
    let err = ledger.mint(mint("m2", "0.000001")).await.unwrap_err();
    assert!(
        matches!(err, LedgerError::SupplyCapExceeded { .. }),
        "{err}"
    );
    assert_eq!(ledger.supply().await.unwrap().minted, bly("100000050"));
}

async fn burns_reduce_circulating_supply(f: &Fixture) {
    let ledger = f.open().await;
    let tx = ledger
        .burn(BurnRequest {
            key: key("b1"),
            from: TREASURY,
            amount: bly("1000"),
            memo: "".into(),
        })
        .await
        .unwrap();
    assert_eq!(tx.kind, TxKind::Burn);
    let supply = ledger.supply().await.unwrap();
    assert_eq!(
        (supply.burned, supply.circulating),
        (bly("1000"), bly("99999000"))
    );
    assert_eq!(available(&ledger, BURN).await, bly("1000"));
    ledger.verify_integrity().await.unwrap();
}

async fn idempotent_replays_return_the_first_outcome(f: &Fixture) {
    let ledger = f.open().await;
    let alice = user(1);
    let transfer = TransferRequest {
        key: key("once"),
        from: TREASURY,
        to: alice,
        amount: bly("5"),
        memo: "m".into(),
    };
    let first = ledger.transfer(transfer.clone()).await.unwrap();
    let again = ledger.transfer(transfer.clone()).await.unwrap();
    assert_eq!(first, again);
    assert_eq!(available(&ledger, alice).await, bly("5"));
    let err = ledger
        .transfer(TransferRequest {
            amount: bly("6"),
            ..transfer.clone()
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::IdempotencyConflict { .. }),
        "{err}"
    );
    // The same key on another operation is a different request too.
    let err = ledger
        .burn(BurnRequest {
            key: key("once"),
            from: alice,
            amount: bly("5"),
            memo: "m".into(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::IdempotencyConflict { .. }),
        "{err}"
    );

    // The payment flow replays too: each step once.
    let quote_request = QuoteRequest {
        key: key("q"),
        payer: addr(1),
        estimated_tokens: 1000,
        prompt_tokens: 0,
    };
    let quote = ledger.quote(quote_request.clone()).await.unwrap();
    assert_eq!(ledger.quote(quote_request).await.unwrap(), quote);
    let authorize = AuthorizeRequest {
        key: key("a"),
        quote: quote.id,
    };
    let hold = ledger.authorize(authorize.clone()).await.unwrap();
    assert_eq!(ledger.authorize(authorize).await.unwrap(), hold);
    assert_eq!(available(&ledger, alice).await, bly("3.9"));
    let capture = CaptureRequest {
        key: key("c"),
        hold: hold.id,
        actual_tokens: 900,
        prompt_tokens: 0,
        server: None,
    };
    let captured = ledger.capture(capture.clone()).await.unwrap();
    assert_eq!(ledger.capture(capture.clone()).await.unwrap(), captured);
    let err = ledger
        .capture(CaptureRequest {
            actual_tokens: 901,
            prompt_tokens: 0,
            ..capture
        })
        .await
        .unwrap_err();
    assert!(
        matches!(err, LedgerError::IdempotencyConflict { .. }),
        "{err}"
    );
    assert_eq!(available(&ledger, alice).await, bly("4.1"));
    let reward = ValidationRewardRequest {
        key: key("v"),
        validator: addr(2),
        samples: 1,
    };
    let first = ledger.reward_validation(reward.clone()).await.unwrap();
    assert_eq!(ledger.reward_validation(reward).await.unwrap(), first);
    assert_eq!(available(&ledger, user(2)).await, bly("20"));
    let reward = LearningRewardRequest {
        key: key("l"),
        learner: addr(3),
        improvement_bps: 1,
    };
    let first = ledger.reward_learning(reward.clone()).await.unwrap();
    assert_eq!(ledger.reward_learning(reward).await.unwrap(), first);
    assert_eq!(available(&ledger, user(3)).await, bly("200"));

    // Release, burn, mint and batches replay too.
    let quote = ledger
        .quote(QuoteRequest {
            key: key("q-release"),
            payer: addr(1),
            estimated_tokens: 1000,
            prompt_tokens: 0,
        })
        .await
        .unwrap();
    let hold = ledger
        .authorize(AuthorizeRequest {
            key: key("a-release"),
            quote: quote.id,
        })
        .await
        .unwrap();
    let release = ReleaseRequest {
        key: key("r"),
        hold: hold.id,
    };
    let released = ledger.release(release.clone()).await.unwrap();
    assert_eq!(ledger.release(release).await.unwrap(), released);
    let burn = BurnRequest {
        key: key("b"),
        from: alice,
        amount: bly("1"),
        memo: "b".into(),
    };
    let burned = ledger.burn(burn.clone()).await.unwrap();
    assert_eq!(ledger.burn(burn).await.unwrap(), burned);
    let mint = MintRequest {
        key: key("m"),
        to: TREASURY,
        amount: bly("1"),
        memo: "m".into(),
    };
    let minted = ledger.mint(mint.clone()).await.unwrap();
    assert_eq!(ledger.mint(mint).await.unwrap(), minted);
    let batch: Vec<TransferRequest> = (0..3)
        .map(|i| TransferRequest {
            key: key(format!("batch-{i}")),
            from: TREASURY,
            to: user(4),
            amount: bly("1"),
            memo: String::new(),
        })
        .collect();
    let recorded = ledger.transfer_batch(batch.clone()).await.unwrap();
    assert_eq!(ledger.transfer_batch(batch).await.unwrap(), recorded);
    assert_eq!(available(&ledger, alice).await, bly("3.1"));
    assert_eq!(available(&ledger, user(4)).await, bly("3"));

    // The genesis and one transaction per first request (transfer, authorize ×2, capture,
    // two rewards, release, burn, mint, three batch transfers): the replays recorded none.
    let report = ledger.verify_integrity().await.unwrap();
    assert_eq!(report.transactions, 13);
    assert_eq!(report.supply.burned, bly("1.18"));
}

async fn concurrent_replays_move_money_once(f: &Fixture) {
    let ledger = Arc::new(f.open().await);
    let alice = user(1);
    let transfer = TransferRequest {
        key: key("storm"),
        from: TREASURY,
        to: alice,
        amount: bly("7"),
        memo: String::new(),
    };
    let mut tasks = Vec::new();
    for _ in 0..32 {
        let (ledger, transfer) = (Arc::clone(&ledger), transfer.clone());
        tasks.push(tokio::spawn(async move { ledger.transfer(transfer).await }));
    }
    let mut ids = Vec::new();
    for task in tasks {
        ids.push(task.await.unwrap().unwrap().id);
    }
    assert!(
        ids.iter().all(|id| *id == ids[0]),
        "every replay returns the first transaction: {ids:?}"
    );
    assert_eq!(available(&*ledger, alice).await, bly("7"));

    // Concurrent replays of one capture.
    let quote = ledger
        .quote(QuoteRequest {
            key: key("q"),
            payer: addr(1),
            estimated_tokens: 1000,
            prompt_tokens: 0,
        })
        .await
        .unwrap();
    let hold = ledger
        .authorize(AuthorizeRequest {
            key: key("a"),
            quote: quote.id,
        })
        .await
        .unwrap();
    let capture = CaptureRequest {
        key: key("c"),
        hold: hold.id,
        actual_tokens: 1000,
        prompt_tokens: 0,
        server: None,
    };
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (ledger, capture) = (Arc::clone(&ledger), capture.clone());
        tasks.push(tokio::spawn(async move { ledger.capture(capture).await }));
    }
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap().unwrap());
    }
    assert!(outcomes.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(available(&*ledger, alice).await, bly("6"));
    assert_eq!(ledger.supply().await.unwrap().burned, bly("0.2"));
    ledger.verify_integrity().await.unwrap();
}

async fn double_spend_admits_exactly_the_affordable(f: &Fixture) {
    let ledger = Arc::new(f.open().await);
    let alice = user(1);
    // Each hold takes 1.1 BLY; 7.7 BLY covers exactly seven of forty.
    fund(&*ledger, alice, "7.7").await;
    let mut quotes = Vec::new();
    for i in 0..40 {
        let request = QuoteRequest {
            key: key(format!("q{i}")),
            payer: addr(1),
            estimated_tokens: 1000,
            prompt_tokens: 0,
        };
        quotes.push(ledger.quote(request).await.unwrap());
    }
    let mut tasks = Vec::new();
    for (i, quote) in quotes.into_iter().enumerate() {
        let ledger = Arc::clone(&ledger);
        tasks.push(tokio::spawn(async move {
            ledger
                .authorize(AuthorizeRequest {
                    key: key(format!("a{i}")),
                    quote: quote.id,
                })
                .await
        }));
    }
    let (mut ok, mut refused) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(LedgerError::InsufficientFunds { .. }) => refused += 1,
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!((ok, refused), (7, 33));
    let balance = ledger.balance(alice).await.unwrap();
    assert_eq!(
        (balance.available, balance.held),
        (Amount::ZERO, bly("7.7"))
    );

    // Concurrent transfers draining one balance: 5 of 12 fit.
    let bob = user(2);
    fund(&*ledger, bob, "5").await;
    let mut tasks = Vec::new();
    for i in 0..12 {
        let ledger = Arc::clone(&ledger);
        tasks.push(tokio::spawn(async move {
            ledger
                .transfer(TransferRequest {
                    key: key(format!("spend{i}")),
                    from: bob,
                    to: user(100 + i),
                    amount: bly("1"),
                    memo: String::new(),
                })
                .await
        }));
    }
    let mut ok = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => ok += 1,
            Err(LedgerError::InsufficientFunds { .. }) => {}
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert_eq!(ok, 5);
    assert_eq!(available(&*ledger, bob).await, Amount::ZERO);
    ledger.verify_integrity().await.unwrap();
}

async fn bad_input_is_refused_and_moves_nothing(f: &Fixture) {
    let ledger = f.open().await;
    let (alice, bob) = (user(1), user(2));
    fund(&ledger, alice, "10").await;
    let quote = ledger
        .quote(QuoteRequest {
            key: key("q"),
            payer: addr(1),
            estimated_tokens: 1000,
            prompt_tokens: 0,
        })
        .await
        .unwrap();
    let hold = ledger
        .authorize(AuthorizeRequest {
            key: key("a"),
            quote: quote.id,
        })
        .await
        .unwrap();
    let watched = [alice, bob, TREASURY, REWARD_POOL, ESCROW, BURN, user(77)];
    let before = snapshot(&ledger, &watched).await;
    let transfer = |from: AccountId, to: AccountId, amount: Amount| TransferRequest {
        key: key(format!("bad-{}", rand::random::<u64>())),
        from,
        to,
        amount,
        memo: String::new(),
    };
    let cap_plus_one = bly("1000000000.000001");

    let check = |what: &str, result: blyan_ledger::Result<()>, expect: fn(&LedgerError) -> bool| {
        let err = result.expect_err(what);
        assert!(expect(&err), "{what}: {err:?}");
        assert!(err.is_refusal(), "{what}: a refusal");
    };
    let r = ledger
        .transfer(transfer(alice, bob, Amount::ZERO))
        .await
        .map(drop);
    check("zero amount", r, |e| matches!(e, LedgerError::Zero { .. }));
    let r = ledger
        .transfer(transfer(user(77), bob, bly("1")))
        .await
        .map(drop);
    check("unknown payer", r, |e| {
        matches!(e, LedgerError::UnknownAccount { .. })
    });
    let r = ledger
        .transfer(transfer(alice, bob, bly("10.000001")))
        .await
        .map(drop);
    check("one unit too many", r, |e| {
        matches!(e, LedgerError::InsufficientFunds { .. })
    });
    let r = ledger
        .transfer(transfer(alice, bob, cap_plus_one))
        .await
        .map(drop);
    check("above the supply cap", r, |e| {
        matches!(e, LedgerError::AmountAboveSupplyCap { .. })
    });
    let max = Amount::from_units(blyan_ledger::AMOUNT_UNITS_MAX).unwrap();
    let r = ledger
        .transfer(transfer(TREASURY, bob, max))
        .await
        .map(drop);
    check("i64::MAX units", r, |e| {
        matches!(e, LedgerError::AmountAboveSupplyCap { .. })
    });
    let r = ledger
        .transfer(transfer(alice, alice, bly("1")))
        .await
        .map(drop);
    check("self transfer", r, |e| {
        matches!(e, LedgerError::SelfTransfer { .. })
    });
    let mint_account = AccountId::System(SystemAccount::Mint);
    let r = ledger
        .transfer(transfer(mint_account, bob, bly("1")))
        .await
        .map(drop);
    check("transfer from the mint", r, |e| {
        matches!(e, LedgerError::ReservedAccount { .. })
    });
    let r = ledger
        .transfer(transfer(alice, ESCROW, bly("1")))
        .await
        .map(drop);
    check("transfer into escrow", r, |e| {
        matches!(e, LedgerError::ReservedAccount { .. })
    });
    let long_memo = TransferRequest {
        memo: "m".repeat(257),
        ..transfer(alice, bob, bly("1"))
    };
    let r = ledger.transfer(long_memo).await.map(drop);
    check("memo too long", r, |e| {
        matches!(e, LedgerError::LimitExceeded { .. })
    });
    let r = ledger
        .burn(BurnRequest {
            key: key("burn0"),
            from: alice,
            amount: Amount::ZERO,
            memo: "".into(),
        })
        .await
        .map(drop);
    check("zero burn", r, |e| matches!(e, LedgerError::Zero { .. }));
    let r = ledger
        .quote(QuoteRequest {
            key: key("q0"),
            payer: addr(1),
            estimated_tokens: 0,
            prompt_tokens: 0,
        })
        .await
        .map(drop);
    check("zero tokens", r, |e| matches!(e, LedgerError::Zero { .. }));
    let r = ledger
        .quote(QuoteRequest {
            key: key("qbig"),
            payer: addr(1),
            estimated_tokens: blyan_ledger::INFERENCE_TOKENS_MAX + 1,
            prompt_tokens: 0,
        })
        .await
        .map(drop);
    check("too many tokens", r, |e| {
        matches!(e, LedgerError::LimitExceeded { .. })
    });
    let r = ledger
        .authorize(AuthorizeRequest {
            key: key("a404"),
            quote: blyan_ledger::QuoteId(404),
        })
        .await
        .map(drop);
    check("unknown quote", r, |e| {
        matches!(e, LedgerError::UnknownQuote { .. })
    });
    let capture = |k: &str, tokens: u64| CaptureRequest {
        key: key(k),
        hold: hold.id,
        actual_tokens: tokens,
        prompt_tokens: 0,
        server: None,
    };
    let r = ledger.capture(capture("c-over", 1101)).await.map(drop);
    check("capture above tolerance", r, |e| {
        matches!(e, LedgerError::CaptureAboveTolerance { .. })
    });
    let r = ledger
        .capture(CaptureRequest {
            hold: blyan_ledger::HoldId(404),
            ..capture("c404", 1)
        })
        .await
        .map(drop);
    check("unknown hold", r, |e| {
        matches!(e, LedgerError::UnknownHold { .. })
    });
    let r = ledger
        .reward_validation(ValidationRewardRequest {
            key: key("v0"),
            validator: addr(1),
            samples: 0,
        })
        .await
        .map(drop);
    check("zero samples", r, |e| matches!(e, LedgerError::Zero { .. }));
    let r = ledger
        .reward_learning(LearningRewardRequest {
            key: key("l-big"),
            learner: addr(1),
            improvement_bps: blyan_ledger::IMPROVEMENT_BPS_MAX + 1,
        })
        .await
        .map(drop);
    check("improvement above 100 %", r, |e| {
        matches!(e, LedgerError::LimitExceeded { .. })
    });
    let r = ledger
        .history(
            alice,
            HistoryQuery {
                before: None,
                limit: 0,
            },
        )
        .await
        .map(drop);
    check("empty page", r, |e| matches!(e, LedgerError::Zero { .. }));
    let r = ledger
        .history(
            alice,
            HistoryQuery {
                before: None,
                limit: blyan_ledger::HISTORY_PAGE_LEN_MAX + 1,
            },
        )
        .await
        .map(drop);
    check("page too long", r, |e| {
        matches!(e, LedgerError::LimitExceeded { .. })
    });
    assert_eq!(
        snapshot(&ledger, &watched).await,
        before,
        "refusals moved nothing"
    );

    // A capture after expiry is refused and moves nothing either (the hold stays in escrow
    // until the expiry sweep releases it).
    f.clock.advance_ms(300_000);
    let r = ledger.capture(capture("c-late", 10)).await.map(drop);
    check("capture after expiry", r, |e| {
        matches!(e, LedgerError::HoldExpired { .. })
    });
    assert_eq!(
        snapshot(&ledger, &watched).await,
        before,
        "a late capture moved nothing"
    );

    // Values that never reach the ledger: malformed addresses and amounts are refused by
    // their parsers with their own errors.
    assert!(matches!(
        "0x12345".parse::<AccountId>(),
        Err(LedgerError::Primitive(
            blyan_primitives::Error::InvalidAddress {
                reason: "expected 40 hex digits",
                ..
            }
        ))
    ));
    assert!(matches!(
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAeD".parse::<AccountId>(),
        Err(LedgerError::Primitive(
            blyan_primitives::Error::InvalidAddress {
                reason: "EIP-55 checksum mismatch",
                ..
            }
        ))
    ));
    assert!(matches!(
        Amount::from_units_i128(-5),
        Err(LedgerError::AmountNegative { .. })
    ));
    assert!(matches!(
        "100000000000000000000000000000000000000".parse::<Amount>(),
        Err(LedgerError::AmountOverflow { .. })
    ));
}

/// A wallet is one account whatever the spelling it was parsed from; the store keys it in lower
/// case (what the schema's CHECKs demand) and the ledger shows it in EIP-55 form.
async fn a_wallet_is_one_account_in_every_spelling(f: &Fixture) {
    let ledger = f.open().await;
    let checksummed = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";
    let spellings = [
        checksummed.to_owned(),
        checksummed.to_lowercase(),
        format!("0x{}", checksummed[2..].to_uppercase()),
    ];
    for (i, spelling) in spellings.iter().enumerate() {
        ledger
            .transfer(TransferRequest {
                key: key(format!("spelling-{i}")),
                from: TREASURY,
                to: spelling.parse().unwrap(),
                amount: bly("1"),
                memo: String::new(),
            })
            .await
            .unwrap();
    }
    let wallet: AccountId = checksummed.parse().unwrap();
    assert_eq!(available(&ledger, wallet).await, bly("3"));
    let page = ledger
        .history(
            wallet,
            HistoryQuery {
                before: None,
                limit: 10,
            },
        )
        .await
        .unwrap();
    assert_eq!(page.items.len(), 3);
    let transaction = ledger
        .transaction(page.items[0].tx_id)
        .await
        .unwrap()
        .unwrap();
    let json = serde_json::to_string(&transaction).unwrap();
    assert!(json.contains(checksummed), "{json}");
    assert!(!json.contains(&checksummed.to_lowercase()), "{json}");
    let payer = wallet_address(wallet);
    let quote = ledger
        .quote(QuoteRequest {
            key: key("spelling-quote"),
            payer,
            estimated_tokens: 1000,
            prompt_tokens: 0,
        })
        .await
        .unwrap();
    assert_eq!(quote.payer.to_string(), checksummed);
    let hold = ledger
        .authorize(AuthorizeRequest {
            key: key("spelling-authorize"),
            quote: quote.id,
        })
        .await
        .unwrap();
    assert_eq!(ledger.balance(wallet).await.unwrap().held, hold.amount);
    ledger.verify_integrity().await.unwrap();
}

fn wallet_address(account: AccountId) -> blyan_ledger::Address {
    match account {
        AccountId::User(address) => address,
        AccountId::System(system) => panic!("{system:?} is not a wallet"),
    }
}

use crate::grants::{
    concurrent_grants_stop_exactly_at_the_allocation, faucet_limits_are_counted_in_the_ledger,
    grant_moves_treasury_bly_and_is_audited_in_history, grants_never_pass_the_treasury_allocation,
};

use crate::bonds::{
    bond_lock_then_burn_grows_the_burned_supply, bond_lock_then_refund_restores_balances_exactly,
    bond_retries_return_the_first_outcome, bond_settles_once,
    bond_without_funds_is_refused_and_moves_nothing,
    data_and_learning_rewards_pay_the_configured_amounts,
};

use crate::batches::{
    batch_keys_repeated_inside_and_across_batches_move_money_once,
    batch_overdraw_in_the_middle_refuses_the_whole_batch,
};

use crate::pruning::pruning_drops_old_keys_and_quotes_and_keeps_the_window;

async fn random_operations_keep_the_invariants(f: &Fixture) {
    crate::concurrency::random_operations_keep_the_invariants(f).await;
}

/// Instantiates each scenario once per store.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let fixture = crate::support::Fixture::new(crate::support::Backend::Embedded).await;
                    super::$name(&fixture).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let fixture = crate::support::Fixture::new(crate::support::Backend::Pg).await;
                    super::$name(&fixture).await;
                }
            )*
        }
    };
}

conformance!(
    genesis_is_allocated_once,
    transfers_move_money_and_history_pages,
    payment_flow_splits_the_fee,
    prompt_tokens_are_priced_at_their_rate,
    holds_and_quotes_expire,
    restart_keeps_balances_and_expires_stale_holds,
    rewards_and_issuance_respect_the_caps,
    supply_cap_is_never_passed,
    burns_reduce_circulating_supply,
    idempotent_replays_return_the_first_outcome,
    concurrent_replays_move_money_once,
    double_spend_admits_exactly_the_affordable,
    bad_input_is_refused_and_moves_nothing,
    a_wallet_is_one_account_in_every_spelling,
    random_operations_keep_the_invariants,
    bond_lock_then_refund_restores_balances_exactly,
    bond_lock_then_burn_grows_the_burned_supply,
    bond_without_funds_is_refused_and_moves_nothing,
    bond_settles_once,
    bond_retries_return_the_first_outcome,
    data_and_learning_rewards_pay_the_configured_amounts,
    grant_moves_treasury_bly_and_is_audited_in_history,
    grants_never_pass_the_treasury_allocation,
    concurrent_grants_stop_exactly_at_the_allocation,
    faucet_limits_are_counted_in_the_ledger,
    batch_keys_repeated_inside_and_across_batches_move_money_once,
    batch_overdraw_in_the_middle_refuses_the_whole_batch,
    pruning_drops_old_keys_and_quotes_and_keeps_the_window,
);
