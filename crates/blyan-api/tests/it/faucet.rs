//! `POST /faucet` over real HTTP: off by default; when on, it funds a signed-in wallet from the
//! treasury (a `grant` in the wallet's history) within the per-wallet and daily limits, which
//! hold under concurrent claims because the ledger counts them.

use blyan_ledger::Ledger as _;
use serde_json::json;

use crate::support::{Node, TestWallet, check_refused, code};

#[tokio::test]
async fn the_faucet_is_off_by_default() {
    let node = Node::start().await;
    assert!(!node.state.config().faucet.enabled);
    let wallet = TestWallet::new(41);
    let tokens = wallet.sign_in(&node).await;
    let answer = node
        .post("/faucet", &json!({}), Some(&tokens.access_token))
        .await;
    check_refused(&answer, 403, "faucet_disabled");
    let (available, _) = node.balance(&wallet.address).await;
    assert_eq!(available, blyan_ledger::Amount::ZERO);
}

#[tokio::test]
async fn the_faucet_funds_a_signed_in_wallet_within_its_limits() {
    let node = Node::start_with(|config| {
        config.faucet.enabled = true;
        config.faucet.amount_per_claim = "10".parse().unwrap();
        config.faucet.claims_per_wallet_per_day = 2;
        config.faucet.daily_total_max = "30".parse().unwrap();
    })
    .await;
    // Anonymous callers get nothing.
    check_refused(
        &node.post("/faucet", &json!({}), None).await,
        401,
        "token_missing",
    );

    let alice = TestWallet::new(42);
    let token = alice.sign_in(&node).await.access_token;
    for _ in 0..2 {
        let (status, body) = node.post("/faucet", &json!({}), Some(&token)).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["granted"], "10", "{body}");
        assert_eq!(body["unit"], "BLY", "{body}");
        assert_eq!(
            body["wallet"].as_str().unwrap().to_lowercase(),
            alice.address.to_lowercase()
        );
    }
    // The third claim of the day is refused, with when to come back.
    let response = node
        .http
        .post(node.url("/faucet"))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=86_400).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(code(&body), "faucet_wallet_limit", "{body}");

    // The balance and the history show the two grants.
    let (status, balance) = node.get("/wallet/balance", Some(&token)).await;
    assert_eq!(status, 200, "{balance}");
    assert_eq!(balance["available"], "20", "{balance}");
    let (status, history) = node.get("/wallet/history", Some(&token)).await;
    assert_eq!(status, 200, "{history}");
    let items = history["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{history}");
    for item in items {
        assert_eq!(item["kind"], "grant", "{history}");
        assert_eq!(item["memo"], "faucet", "{history}");
        assert_eq!(item["direction"], "credit", "{history}");
        assert_eq!(item["amount"], "10", "{history}");
    }

    // 20 of the day's 30 BLY are out: of six concurrent claims by another wallet exactly one
    // passes; the others meet the daily total.
    let bob = TestWallet::new(43);
    let bob_token = bob.sign_in(&node).await.access_token;
    let empty = json!({});
    let claims = (0..6).map(|_| node.post("/faucet", &empty, Some(&bob_token)));
    let answers = futures::future::join_all(claims).await;
    let granted = answers.iter().filter(|(status, _)| *status == 200).count();
    assert_eq!(granted, 1, "{answers:?}");
    for answer in answers.iter().filter(|(status, _)| *status != 200) {
        check_refused(answer, 429, "faucet_daily_cap");
    }
    let (available, _) = node.balance(&bob.address).await;
    assert_eq!(available, "10".parse().unwrap());
    node.state
        .ledger()
        .unwrap()
        .verify_integrity()
        .await
        .unwrap();
}
