//! Attacks on the limits, each over real HTTP: rotating IPv6 addresses inside one /64, forged
//! forwarding headers, many clients draining the free tier together, more chats than the
//! generation pool holds, free chats filling their share of it while paid ones are served, and
//! a sign-in nonce flood.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde_json::{Value, json};

use crate::support::{Node, TestWallet, check_refused, into_json, user_says};

async fn nonce_from(node: &Node, forwarded_for: &str) -> (u16, Value) {
    let response = node
        .http
        .get(node.url("/auth/nonce"))
        .header("x-forwarded-for", forwarded_for)
        .send()
        .await
        .unwrap();
    into_json(response).await
}

async fn chat_from(node: &Node, forwarded_for: &str, body: &Value) -> reqwest::Response {
    node.http
        .post(node.url("/chat"))
        .header("x-forwarded-for", forwarded_for)
        .json(body)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn an_ipv6_64_rotation_behind_a_trusted_proxy_is_limited() {
    let node = Node::start_with(|config| {
        config.api.rate_limit.per_ip_per_minute = 3;
        config.api.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    // Three fresh addresses of one /64, then a fourth: one client, one bucket.
    for host in 1..=3 {
        let (status, body) = nonce_from(&node, &format!("2001:db8:1:2::{host:x}")).await;
        assert_eq!(status, 200, "{body}");
    }
    check_refused(
        &nonce_from(&node, "2001:db8:1:2:ffff:ffff:ffff:ffff").await,
        429,
        "rate_limited",
    );
    // A client-written entry left of the proxy's does not escape the bucket.
    check_refused(
        &nonce_from(&node, "198.51.100.7, 2001:db8:1:2::99").await,
        429,
        "rate_limited",
    );
    // The next /64 and an IPv4 client are other clients.
    assert_eq!(nonce_from(&node, "2001:db8:1:3::1").await.0, 200);
    assert_eq!(nonce_from(&node, "198.51.100.7").await.0, 200);
}

#[tokio::test]
async fn forwarding_headers_from_an_untrusted_peer_are_ignored() {
    // No trusted proxy (the default): every forged address is the loopback peer.
    let node = Node::start_with(|config| config.api.rate_limit.per_ip_per_minute = 3).await;
    for host in 1..=3 {
        assert_eq!(nonce_from(&node, &format!("203.0.113.{host}")).await.0, 200);
    }
    check_refused(
        &nonce_from(&node, "203.0.113.200").await,
        429,
        "rate_limited",
    );
}

#[tokio::test]
async fn the_free_tier_token_budget_is_shared_by_all_clients() {
    let node = Node::serving_with(|config| {
        config.api.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
        config.api.free_tier.completion_tokens_max = 4;
        // One request's worth: a request costing more than the budget takes all of it.
        config.api.free_tier.tokens_per_hour = 1;
    })
    .await;
    let body = json!({ "messages": user_says("hello"), "max_tokens": 4 });
    let response = chat_from(&node, "198.51.100.1", &body).await;
    assert_eq!(response.status(), 200);
    // Another client, with its own per-client quota untouched, finds the node's budget spent.
    let response = chat_from(&node, "198.51.100.2", &body).await;
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "3600");
    let answer = into_json(response).await;
    check_refused(&answer, 429, "free_tier_exhausted");
    assert!(
        answer.1["error"]["message"]
            .as_str()
            .unwrap()
            .contains("node"),
        "{}",
        answer.1
    );
}

#[tokio::test]
async fn a_full_generation_pool_answers_503_with_retry_after() {
    let node = Node::serving_with(|config| config.api.generations_concurrent_max = 1).await;
    let body = json!({ "messages": user_says("hello"), "max_tokens": 2 });
    // A generation in flight holds the only place.
    let place = node
        .state
        .inference_gate()
        .try_enter(1)
        .expect("the pool is empty");
    let response = node
        .http
        .post(node.url("/chat"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "2");
    check_refused(&into_json(response).await, 503, "generations_busy");
    // Nothing was taken for the refused chat: its place is free again once the other ends.
    drop(place);
    let (status, done) = node.post("/chat", &body, None).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(node.state.inference_gate().in_flight(), 0);
}

#[tokio::test]
async fn concurrent_chats_never_exceed_the_generation_pool() {
    const POOL: u64 = 2;
    let node = Arc::new(
        Node::serving_with(|config| {
            config.api.generations_concurrent_max = u32::try_from(POOL).unwrap();
            config.api.free_tier.completion_tokens_max = 48;
        })
        .await,
    );
    let most = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (node, most, done) = (Arc::clone(&node), Arc::clone(&most), Arc::clone(&done));
        tokio::spawn(async move {
            while !done.load(Ordering::Relaxed) {
                most.fetch_max(node.state.inference_gate().in_flight(), Ordering::Relaxed);
                tokio::time::sleep(Duration::from_micros(200)).await;
            }
        })
    };
    let body = json!({ "messages": user_says("hello"), "max_tokens": 48 });
    let chats: Vec<_> = (0..8)
        .map(|_| {
            let (node, body) = (Arc::clone(&node), body.clone());
            tokio::spawn(async move { node.post("/chat", &body, None).await })
        })
        .collect();
    let mut served = 0;
    for chat in chats {
        let answer = chat.await.unwrap();
        match answer.0 {
            200 => served += 1,
            _ => check_refused(&answer, 503, "generations_busy"),
        }
    }
    done.store(true, Ordering::Relaxed);
    sampler.await.unwrap();
    assert!(served >= 1, "the pool serves");
    let most = most.load(Ordering::Relaxed);
    assert!((1..=POOL).contains(&most), "{most} generations at once");
    assert_eq!(node.state.inference_gate().in_flight(), 0);
}

#[tokio::test]
async fn free_chats_filling_their_share_leave_the_other_places_to_paid_ones() {
    let node = Node::serving_with(|config| {
        config.api.generations_concurrent_max = 2;
        config.api.free_tier.generations_concurrent_max = 1;
    })
    .await;
    let wallet = TestWallet::new(0x42);
    node.fund(&wallet.address, "10").await;
    let token = wallet.sign_in(&node).await.access_token;
    let body = json!({ "messages": user_says("hello"), "max_tokens": 2 });
    // A free generation in flight holds the free tier's only place.
    let gate = node.state.inference_gate();
    let free = gate.try_enter_free(2, 1).expect("the pool is empty");
    let response = node
        .http
        .post(node.url("/chat"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["retry-after"], "2");
    let refused = into_json(response).await;
    check_refused(&refused, 503, "generations_busy");
    let message = refused.1["error"]["message"].as_str().unwrap();
    assert!(message.contains("1 free chats"), "{message}");
    // The place above the free share is a paid chat's.
    let (status, done) = node.post("/chat", &body, Some(&token)).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["cost"]["tier"], "paid");
    drop(free);
    let (status, done) = node.post("/chat", &body, None).await;
    assert_eq!(status, 200, "{done}");
    assert_eq!((gate.in_flight(), gate.free_in_flight()), (0, 0));
}

#[tokio::test]
async fn a_nonce_flood_from_one_source_does_not_stop_others_signing_in() {
    let node = Node::start_with(|config| {
        config.api.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    })
    .await;
    let mut flood = Vec::new();
    for _ in 0..(blyan_api::NONCE_PER_SOURCE_MAX * 8) {
        let (status, body) = nonce_from(&node, "2001:db8:bad::1").await;
        assert_eq!(status, 200, "{body}");
        flood.push(body["nonce"].as_str().unwrap().to_owned());
    }
    // Another client (the loopback peer itself) signs in.
    let wallet = TestWallet::new(0x41);
    let tokens = wallet.sign_in(&node).await;
    assert_eq!(tokens.wallet.to_string(), wallet.address);
    // The flooder kept only its newest nonces: its first one is forgotten.
    let mut fields = wallet.fields(&node).await;
    fields.nonce = flood[0].clone();
    let message = wallet.message(&fields);
    let signature = wallet.personal_sign(message.as_bytes());
    check_refused(
        &wallet.verify(&node, &message, &signature).await,
        401,
        "nonce_unknown",
    );
    fields.nonce = flood.last().unwrap().clone();
    let message = wallet.message(&fields);
    let signature = wallet.personal_sign(message.as_bytes());
    assert_eq!(wallet.verify(&node, &message, &signature).await.0, 200);
}
