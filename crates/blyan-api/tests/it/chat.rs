//! Chat with the seed model over real HTTP: paid streams charged exactly their tokens through
//! the ledger, the free tier, refusals that charge nothing, and a client that goes away.

use std::time::{Duration, Instant};

use blyan_ledger::{Amount, Ledger as _};
use serde_json::{Value, json};

use crate::support::{
    Node, SseEvent, TestWallet, check_refused, into_json, read_events, take_events, user_says,
};

async fn stream(node: &Node, body: &Value, token: Option<&str>) -> reqwest::Response {
    let mut request = node.http.post(node.url("/chat/stream")).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("chat stream answers")
}

/// The fee the ledger charges for `tokens` generated tokens.
fn fee(node: &Node, tokens: u64) -> Amount {
    node.state
        .ledger()
        .unwrap()
        .tokenomics()
        .inference_fee(tokens)
        .unwrap()
}

fn units(amount: Amount) -> u64 {
    amount.units()
}

/// Deltas, then exactly one `done` event last: its body.
fn done_of(events: &[SseEvent]) -> Value {
    let (last, deltas) = events.split_last().expect("at least the final event");
    assert_eq!(last.name, "done", "{events:?}");
    assert!(
        deltas.iter().all(|event| event.name == "delta"),
        "{events:?}"
    );
    let done: Value = serde_json::from_str(&last.data).unwrap();
    let streamed: String = deltas
        .iter()
        .map(|event| {
            let delta: Value = serde_json::from_str(&event.data).unwrap();
            delta["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        done["text"].as_str().unwrap(),
        streamed,
        "deltas concatenate to the text"
    );
    done
}

#[tokio::test]
async fn a_signed_in_stream_is_charged_exactly_its_tokens() {
    let node = Node::serving().await;
    let wallet = TestWallet::new(0x21);
    node.fund(&wallet.address, "10").await;
    let tokens = wallet.sign_in(&node).await;
    let response = stream(
        &node,
        &json!({ "messages": user_says("Tell me about experts."), "max_tokens": 24, "seed": 5 }),
        Some(&tokens.access_token),
    )
    .await;
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let done = done_of(&read_events(response).await);

    let completion = done["usage"]["completion_tokens"].as_u64().unwrap();
    let prompt = done["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!((1..=24).contains(&completion), "{done}");
    assert_eq!(
        done["usage"]["total_tokens"].as_u64().unwrap(),
        prompt + completion
    );
    assert_eq!(done["cost"]["tier"], "paid");
    assert_eq!(done["cost"]["tokens_charged"].as_u64().unwrap(), completion);
    let charged: Amount = done["cost"]["charged"].as_str().unwrap().parse().unwrap();
    assert_eq!(charged, fee(&node, completion));

    // The ledger took exactly that, and holds nothing back.
    let (available, held) = node.balance(&wallet.address).await;
    assert_eq!(units(held), 0);
    let funded: Amount = "10".parse().unwrap();
    assert_eq!(units(available), units(funded) - units(charged));
    node.state
        .ledger()
        .unwrap()
        .verify_integrity()
        .await
        .expect("ledger invariants hold");

    // Experts per layer: the seed model's 4 layers, 2 experts per token position.
    let layers = done["experts"].as_array().unwrap();
    assert_eq!(layers.len(), 4, "{done}");
    for layer in layers {
        let experts = layer["experts"].as_array().unwrap();
        assert!(!experts.is_empty() && experts.len() <= 8, "{layer}");
        let positions: u64 = layer["tokens"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t.as_u64().unwrap())
            .sum();
        assert_eq!(positions % 2, 0, "top-2 routing: {layer}");
        assert!(
            positions / 2 >= prompt && positions / 2 <= prompt + completion,
            "{layer}"
        );
    }

    // The history shows the charge; the metrics count the tokens.
    let (status, history) = node
        .get("/wallet/history", Some(&tokens.access_token))
        .await;
    assert_eq!(status, 200, "{history}");
    assert!(history["items"].as_array().unwrap().len() >= 2, "{history}");
    let metrics = node.metrics().await;
    assert!(
        metrics.contains(&format!(
            "blyan_chat_tokens_total{{kind=\"completion\",tier=\"paid\"}} {completion}"
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("blyan_ledger_operations_total{operation=\"capture\",outcome=\"ok\"} 1")
    );
    // The decoding steps of the served model, as it counts them.
    let decode = node.state.generator().unwrap().decode_stats();
    assert!(decode.steps > 0 && decode.batches > 0, "{decode:?}");
    assert!(
        metrics.contains(&format!("blyan_decode_steps {}", decode.steps))
            && metrics.contains(&format!("blyan_decode_batches {}", decode.batches)),
        "{metrics}"
    );
}

#[tokio::test]
async fn the_json_chat_and_api_keys_pay_too() {
    let node = Node::serving().await;
    let wallet = TestWallet::new(0x22);
    node.fund(&wallet.address, "5").await;
    let tokens = wallet.sign_in(&node).await;
    let (_, created) = node
        .post(
            "/auth/api-keys",
            &json!({ "name": "bot" }),
            Some(&tokens.access_token),
        )
        .await;
    let key = created["key"].as_str().unwrap();
    let (status, done) = node
        .post(
            "/chat",
            &json!({ "messages": user_says("hi"), "max_tokens": 8, "temperature": 0 }),
            Some(key),
        )
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["cost"]["tier"], "paid");
    let completion = done["usage"]["completion_tokens"].as_u64().unwrap();
    let charged: Amount = done["cost"]["charged"].as_str().unwrap().parse().unwrap();
    assert_eq!(charged, fee(&node, completion));
    let (available, held) = node.balance(&wallet.address).await;
    assert_eq!(units(held), 0);
    assert_eq!(
        units(available),
        units("5".parse().unwrap()) - units(charged)
    );

    // Greedy decoding is reproducible: the same request gives the same text.
    let (_, again) = node
        .post(
            "/chat",
            &json!({ "messages": user_says("hi"), "max_tokens": 8, "temperature": 0 }),
            Some(key),
        )
        .await;
    assert_eq!(again["text"], done["text"]);
}

#[tokio::test]
async fn anonymous_callers_chat_in_the_free_tier_within_its_quota() {
    let node = Node::serving_with(|config| {
        config.api.free_tier.requests_per_hour_per_ip = 2;
        config.api.free_tier.completion_tokens_max = 4;
    })
    .await;
    let body = json!({ "messages": user_says("hello"), "max_tokens": 100 });
    let done = done_of(&read_events(stream(&node, &body, None).await).await);
    assert_eq!(done["cost"]["tier"], "free");
    assert_eq!(done["cost"]["charged"], "0");
    assert!(
        done["usage"]["completion_tokens"].as_u64().unwrap() <= 4,
        "{done}"
    );
    let (status, done) = node.post("/chat", &body, None).await;
    assert_eq!(status, 200, "{done}");

    let response = node
        .http
        .post(node.url("/chat"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    assert!(response.headers().contains_key("retry-after"));
    check_refused(&into_json(response).await, 429, "free_tier_exhausted");
}

#[tokio::test]
async fn refused_requests_charge_nothing() {
    let node = Node::serving_with(|config| config.api.free_tier.enabled = false).await;
    let wallet = TestWallet::new(0x23);
    let tokens = wallet.sign_in(&node).await;
    let access = Some(tokens.access_token.as_str());
    let ask = |extra: Value| {
        let mut body = json!({ "messages": user_says("hi"), "max_tokens": 8 });
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    // No balance at all.
    check_refused(
        &node.post("/chat", &ask(json!({})), access).await,
        402,
        "insufficient_balance",
    );
    node.fund(&wallet.address, "1").await;
    check_refused(
        &node
            .post("/chat", &ask(json!({ "model": "gpt-4" })), access)
            .await,
        404,
        "unknown_model",
    );
    let long = "x".repeat(blyan_node_core::PROMPT_TOKENS_MAX as usize + 1);
    check_refused(
        &node
            .post("/chat", &json!({ "messages": user_says(&long) }), access)
            .await,
        400,
        "prompt_too_long",
    );
    check_refused(
        &node.post("/chat", &json!({ "messages": [] }), access).await,
        400,
        "invalid_request",
    );
    let over = blyan_node_core::CHAT_COMPLETION_TOKENS_MAX + 1;
    check_refused(
        &node
            .post("/chat", &ask(json!({ "max_tokens": over })), access)
            .await,
        400,
        "invalid_request",
    );
    check_refused(
        &node
            .post("/chat", &ask(json!({ "temperature": -1.0 })), access)
            .await,
        400,
        "invalid_request",
    );
    let malformed = node
        .http
        .post(node.url("/chat"))
        .bearer_auth(&tokens.access_token)
        .header("content-type", "application/json")
        .body("{\"messages\": [")
        .send()
        .await
        .unwrap();
    check_refused(&into_json(malformed).await, 400, "malformed_json");
    // The free tier is off: anonymous callers must sign in.
    check_refused(
        &node.post("/chat", &ask(json!({})), None).await,
        401,
        "free_tier_disabled",
    );
    // An expired or forged token is refused, not downgraded to anonymous.
    check_refused(
        &node.post("/chat", &ask(json!({})), Some("x.y.z")).await,
        401,
        "token_invalid",
    );

    let (available, held) = node.balance(&wallet.address).await;
    assert_eq!((available, units(held)), ("1".parse().unwrap(), 0));
}

#[tokio::test]
async fn a_client_that_goes_away_is_not_charged() {
    let node = Node::serving().await;
    let wallet = TestWallet::new(0x24);
    node.fund(&wallet.address, "3").await;
    let tokens = wallet.sign_in(&node).await;
    let body = json!({
        "messages": user_says("a long answer please"),
        "max_tokens": blyan_node_core::CHAT_COMPLETION_TOKENS_MAX,
        "seed": 1,
    });
    let mut response = stream(&node, &body, Some(&tokens.access_token)).await;
    assert_eq!(response.status(), 200);
    // Read until the first delta arrives: the hold is in place and generation is running.
    let mut buffer = String::new();
    while !take_events(&mut buffer)
        .iter()
        .any(|event| event.name == "delta")
    {
        let chunk = response
            .chunk()
            .await
            .unwrap()
            .expect("a delta before the end");
        buffer.push_str(std::str::from_utf8(&chunk).unwrap());
    }
    let (_, held) = node.balance(&wallet.address).await;
    assert!(units(held) > 0, "the stream holds its quote while it runs");
    drop(response);

    // The node notices the closed connection, cancels and releases the hold (bounded wait for
    // the state change; not a timing assertion).
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (available, held) = node.balance(&wallet.address).await;
        if units(held) == 0 {
            assert_eq!(available, "3".parse().unwrap(), "nothing charged");
            break;
        }
        assert!(Instant::now() < deadline, "the hold was never released");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let metrics = node.metrics().await;
    assert!(
        metrics.contains("blyan_ledger_operations_total{operation=\"release\",outcome=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(!metrics.contains("operation=\"capture\""), "{metrics}");
}

#[tokio::test]
async fn a_node_without_a_model_says_so() {
    let node = Node::start().await;
    check_refused(
        &node
            .post("/chat", &json!({ "messages": user_says("hi") }), None)
            .await,
        503,
        "model_unavailable",
    );
    let (status, health) = node.get("/health", None).await;
    assert_eq!(status, 200);
    assert!(health.get("model").is_none(), "{health}");
}

#[tokio::test]
async fn the_expert_dashboard_counts_uses_and_cache_state() {
    let node = Node::serving().await;
    let (status, health) = node.get("/health", None).await;
    assert_eq!(
        (status, health["model"].as_str()),
        (200, Some("untrained seed"))
    );
    let (status, done) = node
        .post(
            "/chat",
            &json!({ "messages": user_says("route me"), "max_tokens": 4 }),
            None,
        )
        .await;
    assert_eq!(status, 200, "{done}");
    let (status, experts) = node.get("/experts", None).await;
    assert_eq!(status, 200, "{experts}");
    let all = experts["experts"].as_array().unwrap();
    assert_eq!(all.len(), 32, "4 layers of 8 experts");
    // Every expert that answered is counted, and was loaded into the cache.
    for layer in done["experts"].as_array().unwrap() {
        for expert in layer["experts"].as_array().unwrap() {
            let id = format!("layer{}.expert{}", layer["layer"], expert);
            let shown = all.iter().find(|e| e["id"] == id.as_str()).unwrap();
            assert!(shown["uses"].as_u64().unwrap() > 0, "{shown}");
            // Each expert is a block on chain B, in its first version.
            assert_eq!(shown["version"], 1, "{shown}");
            let block = shown["block"].as_str().unwrap();
            let (status, header) = node.get(&format!("/blocks/{block}"), None).await;
            assert_eq!(
                (status, header["kind"].as_str()),
                (200, Some("expert")),
                "{header}"
            );
        }
    }
    assert!(
        experts["cache"]["misses"].as_u64().unwrap() > 0,
        "{experts}"
    );
    let (status, one) = node.get("/experts/layer0.expert0", None).await;
    assert_eq!((status, one["layer"].as_u64()), (200, Some(0)));
    check_refused(
        &node.get("/experts/layer9.expert0", None).await,
        404,
        "unknown_expert",
    );
    let (status, pol) = node.get("/pol/status", None).await;
    assert_eq!((status, pol["mode"].as_str()), (200, Some("pol")), "{pol}");
    assert_eq!(pol["threshold_bps"], 100);
    assert_eq!(pol["node_validates"], true);
    assert_eq!(pol["claims"].as_array().map(Vec::len), Some(0));
}

#[tokio::test]
async fn learning_answers_disabled_when_it_is_off() {
    let node = Node::start().await;
    let (status, learning) = node.get("/learning", None).await;
    assert_eq!(status, 200, "{learning}");
    assert_eq!(learning["enabled"], false);
    assert_eq!(learning["state"], "disabled");
    assert_eq!(learning["steps"], 0);
    assert!(learning["history"].as_array().unwrap().is_empty());
    let metrics = node.metrics().await;
    for family in ["blyan_learning_steps 0", "blyan_learning_candidates 0"] {
        assert!(metrics.contains(family), "missing {family} in\n{metrics}");
    }
}
