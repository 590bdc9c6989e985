//! The node end to end on the PostgreSQL ledger: the server the ledger's test harness starts
//! (`initdb` + `pg_ctl` in a temp dir, or `BLYAN_TEST_DATABASE_URL`), a fresh database, and
//! concurrent paid streams over real HTTP, each charged exactly and none leaving a hold.
//! Bounded for CI's two cores: four streams of a few dozen tokens.

use std::time::{Duration, Instant};

use blyan_ledger::{AccountId, Amount, Ledger as _, SystemAccount};
use blyan_node_core::LedgerBackend;
use serde_json::{Value, json};

use crate::support::{Node, TestWallet, read_events, take_events, user_says};

#[path = "../../../blyan-ledger/tests/it/pg.rs"]
mod pg_server;

/// Completion tokens each finished stream may generate.
const STREAM_TOKENS_MAX: u32 = 32;

/// Streams run at once: three that finish, one whose client disconnects.
const STREAMS: u8 = 4;

async fn stream(node: &Node, token: &str, seed: u8) -> reqwest::Response {
    let body = json!({
        "messages": user_says("Tell me about experts on a ledger."),
        "max_tokens": STREAM_TOKENS_MAX,
        "seed": seed,
    });
    let response = node
        .http
        .post(node.url("/chat/stream"))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .expect("chat stream answers");
    assert_eq!(response.status(), 200);
    response
}

/// The whole stream's `done` event.
async fn finished(response: reqwest::Response) -> Value {
    let events = read_events(response).await;
    let last = events.last().expect("an event");
    assert_eq!(last.name, "done", "{events:?}");
    serde_json::from_str(&last.data).unwrap()
}

/// Reads two deltas, then drops the connection.
async fn disconnected(mut response: reqwest::Response) {
    let mut buffer = String::new();
    let mut deltas = 0;
    while deltas < 2 {
        let chunk = response
            .chunk()
            .await
            .unwrap()
            .expect("deltas before the end");
        buffer.push_str(&std::str::from_utf8(&chunk).unwrap().replace("\r\n", "\n"));
        deltas += take_events(&mut buffer)
            .iter()
            .filter(|event| event.name == "delta")
            .count();
    }
}

#[tokio::test]
async fn concurrent_paid_streams_on_postgres_are_charged_exactly_and_leave_no_hold() {
    let url = pg_server::server().fresh_database().await;
    let node = Node::serving_with(|config| {
        config.ledger.backend = LedgerBackend::Postgres;
        config.ledger.postgres_url = Some(url);
    })
    .await;
    let ledger = node.state.ledger().expect("a ledger");
    assert!(
        matches!(ledger.as_ref(), blyan_ledger::AnyLedger::Pg(_)),
        "the node runs on PostgreSQL"
    );
    let funded: Amount = "5".parse().unwrap();
    let mut wallets = Vec::new();
    for seed in 0..STREAMS {
        let wallet = TestWallet::new(0x50 + seed);
        node.fund(&wallet.address, "5").await;
        let tokens = wallet.sign_in(&node).await;
        wallets.push((wallet, tokens.access_token));
    }

    let started = Instant::now();
    let runs = wallets.iter().enumerate().map(|(index, (_, token))| {
        let node = &node;
        async move {
            let response = stream(node, token, u8::try_from(index).unwrap()).await;
            if index + 1 == usize::from(STREAMS) {
                disconnected(response).await;
                None
            } else {
                Some(finished(response).await)
            }
        }
    });
    let dones = futures::future::join_all(runs).await;
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "bounded: {:?}",
        started.elapsed()
    );

    let tokenomics = ledger.tokenomics();
    for ((wallet, _), done) in wallets.iter().zip(&dones) {
        // Settled: nothing held (the disconnected stream settles once the node sees the close).
        let deadline = Instant::now() + Duration::from_secs(30);
        let (available, held) = loop {
            let (available, held) = node.balance(&wallet.address).await;
            if held == Amount::ZERO || Instant::now() > deadline {
                break (available, held);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert_eq!(held, Amount::ZERO, "no hold is left for {}", wallet.address);
        let charged = funded.units() - available.units();
        match done {
            Some(done) => {
                let prompt = done["usage"]["prompt_tokens"].as_u64().unwrap();
                let completion = done["usage"]["completion_tokens"].as_u64().unwrap();
                assert!((1..=u64::from(STREAM_TOKENS_MAX)).contains(&completion));
                let fee = tokenomics.chat_fee(prompt, completion).unwrap();
                assert_eq!(done["cost"]["charged"], fee.to_string(), "{done}");
                assert_eq!(charged, fee.units(), "exactly its fee: {done}");
            }
            // Charged its prompt and the tokens it was sent: more than nothing, less than a
            // whole answer's hold.
            None => assert!(
                charged > 0,
                "the disconnected stream paid for what it was sent"
            ),
        }
    }
    let escrow = ledger
        .balance(AccountId::System(SystemAccount::FeeEscrow))
        .await
        .unwrap();
    assert_eq!(
        escrow.available,
        Amount::ZERO,
        "the fee escrow is empty: no hold left"
    );
    ledger
        .verify_integrity()
        .await
        .expect("ledger invariants hold");
    let metrics = node.metrics().await;
    assert!(
        metrics.contains(&format!(
            "blyan_ledger_operations_total{{operation=\"capture\",outcome=\"ok\"}} {STREAMS}"
        )),
        "{metrics}"
    );
}
