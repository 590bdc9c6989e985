//! Chat with the seed model over real HTTP: paid streams charged exactly their prompt and
//! completion tokens through the ledger, the free tier, refusals that charge nothing, a client
//! that goes away (charged what it was sent), a generation cut before its hold expires, and a
//! stream routed to an expert the chain lacks (charged nothing).

use std::time::{Duration, Instant};

use blyan_ledger::{Amount, Ledger as _};
use serde_json::{Value, json};

use crate::support::{
    Node, SseEvent, TestWallet, check_refused, into_json, read_events, take_events, user_says,
};

/// A completion budget for answers long enough to be cut by a deadline or a disconnection.
const LONG_ANSWER_TOKENS: u32 = 1024;

async fn stream(node: &Node, body: &Value, token: Option<&str>) -> reqwest::Response {
    let mut request = node.http.post(node.url("/chat/stream")).json(body);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.expect("chat stream answers")
}

/// The fee the ledger charges for a `prompt` of tokens and `tokens` generated tokens.
fn fee(node: &Node, prompt: u64, tokens: u64) -> Amount {
    node.state
        .ledger()
        .unwrap()
        .tokenomics()
        .chat_fee(prompt, tokens)
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
    assert_eq!(charged, fee(&node, prompt, completion));
    assert!(
        charged > fee(&node, 0, completion),
        "the prompt is billed at its rate"
    );

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
    let prompt = done["usage"]["prompt_tokens"].as_u64().unwrap();
    let charged: Amount = done["cost"]["charged"].as_str().unwrap().parse().unwrap();
    assert_eq!(charged, fee(&node, prompt, completion));
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
    let (_, model) = node.get("/model", None).await;
    let context = usize::try_from(model["limits"]["context_tokens_max"].as_u64().unwrap()).unwrap();
    let long = "x".repeat(context);
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
    // Prompt plus max_tokens past the context: refused naming the limit.
    let refused = node
        .post("/chat", &ask(json!({ "max_tokens": context })), access)
        .await;
    check_refused(&refused, 400, "context_length_exceeded");
    let message = refused.1["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("context_tokens_max {context}")),
        "{message}"
    );
    check_refused(
        &node
            .post(
                "/chat",
                &ask(json!({ "stop": ["a", "b", "c", "d", "e"] })),
                access,
            )
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

/// The prompt tokens the node counts for `body`'s messages.
fn prompt_tokens(node: &Node, body: &Value) -> u64 {
    let request: blyan_api_types::ChatRequest = serde_json::from_value(body.clone()).unwrap();
    node.state
        .plan_chat(blyan_node_core::Payer::Free, &request)
        .unwrap()
        .prompt_tokens() as u64
}

/// Waits (bounded) until `wallet` holds nothing, then its available balance.
async fn settled(node: &Node, wallet: &str) -> Amount {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (available, held) = node.balance(wallet).await;
        if units(held) == 0 {
            return available;
        }
        assert!(Instant::now() < deadline, "the hold was never settled");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Reads `response` until `count` delta events arrived; the events.
async fn read_deltas(response: &mut reqwest::Response, count: usize) -> Vec<SseEvent> {
    let mut buffer = String::new();
    let mut events = Vec::new();
    while events.len() < count {
        let chunk = response
            .chunk()
            .await
            .unwrap()
            .expect("deltas before the end");
        buffer.push_str(&std::str::from_utf8(&chunk).unwrap().replace("\r\n", "\n"));
        events.extend(take_events(&mut buffer));
    }
    assert!(
        events.iter().all(|event| event.name == "delta"),
        "{events:?}"
    );
    events
}

#[tokio::test]
async fn a_client_that_disconnects_after_n_tokens_pays_for_what_it_was_sent() {
    let node = Node::serving().await;
    let wallet = TestWallet::new(0x24);
    node.fund(&wallet.address, "3").await;
    let tokens = wallet.sign_in(&node).await;
    let max_tokens = LONG_ANSWER_TOKENS;
    let body = json!({
        "messages": user_says("a long answer please"),
        "max_tokens": max_tokens,
        "seed": 1,
    });
    let prompt = prompt_tokens(&node, &body);
    let mut response = stream(&node, &body, Some(&tokens.access_token)).await;
    assert_eq!(response.status(), 200);
    // Read five deltas: the hold is in place and generation is running.
    let read = read_deltas(&mut response, 5).await;
    let (_, held) = node.balance(&wallet.address).await;
    assert!(units(held) > 0, "the stream holds its quote while it runs");
    drop(response);

    // The node notices the closed connection, cancels, captures the prompt and the tokens it
    // handed the connection, and releases the rest of the hold.
    let available = settled(&node, &wallet.address).await;
    let charged = units("3".parse().unwrap()) - units(available);
    // The client read `read.len()` deltas (at least one token each); the node may have written
    // more into the socket before it saw the close, never more than it generated.
    let sent = (read.len() as u64..u64::from(max_tokens))
        .find(|&sent| units(fee(&node, prompt, sent)) == charged)
        .unwrap_or_else(|| panic!("{charged} units is not the prompt plus a token count"));
    assert!(sent >= read.len() as u64, "{sent}");
    let metrics = node.metrics().await;
    assert!(
        metrics.contains("blyan_ledger_operations_total{operation=\"capture\",outcome=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(!metrics.contains("operation=\"release\""), "{metrics}");
    node.state
        .ledger()
        .unwrap()
        .verify_integrity()
        .await
        .expect("ledger invariants hold");
}

#[tokio::test]
async fn a_paid_stream_running_when_the_node_stops_is_charged_once_for_what_it_sent() {
    let mut node = Node::serving().await;
    let wallet = TestWallet::new(0x26);
    node.fund(&wallet.address, "3").await;
    let tokens = wallet.sign_in(&node).await;
    let max_tokens = 96_u64;
    let body = json!({
        "messages": user_says("a long answer please"),
        "max_tokens": max_tokens,
        "seed": 3,
    });
    let prompt = prompt_tokens(&node, &body);
    let mut response = stream(&node, &body, Some(&tokens.access_token)).await;
    assert_eq!(response.status(), 200);
    let mut events = read_deltas(&mut response, 3).await;
    // What SIGTERM does to the node binary: its services' stop signal ends the server, which
    // stops taking connections and lets the running stream end.
    node.request_stop();
    let mut buffer = String::new();
    while let Ok(Some(chunk)) = response.chunk().await {
        buffer.push_str(&std::str::from_utf8(&chunk).unwrap().replace("\r\n", "\n"));
        events.extend(take_events(&mut buffer));
    }
    node.stopped()
        .await
        .expect("the server drains without an error");
    let (available, held) = node.balance(&wallet.address).await;
    assert_eq!(units(held), 0, "no hold outlives the stop");
    let charged = units("3".parse().unwrap()) - units(available);
    match events.last() {
        // The stream finished: it was charged exactly what its `done` event says.
        Some(last) if last.name == "done" => {
            let done = done_of(&events);
            let completion = done["usage"]["completion_tokens"].as_u64().unwrap();
            assert_eq!(charged, units(fee(&node, prompt, completion)), "{done}");
        }
        // The stream was cut: the prompt and the tokens sent, at least those read.
        _ => {
            let read = events.iter().filter(|event| event.name == "delta").count() as u64;
            let sent = (read..=max_tokens)
                .find(|&sent| units(fee(&node, prompt, sent)) == charged)
                .unwrap_or_else(|| panic!("{charged} units is not the prompt plus a token count"));
            assert!(sent >= read, "{sent} < {read}");
        }
    }
    let ledger = node.state.ledger().unwrap();
    ledger
        .verify_integrity()
        .await
        .expect("ledger invariants hold");
    assert!(charged > 0, "the delivered tokens are paid for");
}

#[tokio::test]
async fn a_stream_cut_by_its_time_limit_says_so_and_is_charged_what_it_sent() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tokenomics.yaml");
    std::fs::write(
        &path,
        blyan_ledger::SHIPPED_TOKENOMICS_YAML
            .replace("hold_ttl_seconds: 300", "hold_ttl_seconds: 3"),
    )
    .unwrap();
    let node = Node::serving_with(|config| {
        config.ledger.tokenomics = Some(path);
        // Generation may run 0.6 s of the 3 s hold.
        config.ledger.settle_margin_ms = 2400;
    })
    .await;
    // Warm the expert cache, so the timed stream spends its time generating.
    let (status, warm) = node
        .post(
            "/chat",
            &json!({ "messages": user_says("a long answer please"), "max_tokens": 16 }),
            None,
        )
        .await;
    assert_eq!(status, 200, "{warm}");
    let wallet = TestWallet::new(0x25);
    node.fund(&wallet.address, "3").await;
    let tokens = wallet.sign_in(&node).await;
    let body = json!({
        "messages": user_says("a long answer please"),
        "max_tokens": LONG_ANSWER_TOKENS,
        "seed": 2,
    });
    let response = stream(&node, &body, Some(&tokens.access_token)).await;
    assert_eq!(response.status(), 200);
    // A capture on an expired hold fails: the `done` event proves it landed in time.
    let done = done_of(&read_events(response).await);
    assert_eq!(done["finish_reason"], "time_limit", "{done}");
    let completion = done["usage"]["completion_tokens"].as_u64().unwrap();
    let prompt = done["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(
        (1..u64::from(LONG_ANSWER_TOKENS)).contains(&completion),
        "{done}"
    );
    let charged: Amount = done["cost"]["charged"].as_str().unwrap().parse().unwrap();
    assert_eq!(charged, fee(&node, prompt, completion));
    let (available, held) = node.balance(&wallet.address).await;
    assert_eq!(units(held), 0);
    assert_eq!(
        units(available),
        units("3".parse().unwrap()) - units(charged)
    );
}

#[tokio::test]
async fn a_stream_routed_to_a_missing_expert_releases_its_hold_and_charges_nothing() {
    // The chain holds the seed model but none of layer 3's experts: every token needs one.
    let node = Node::serving_without(|_| {}, |expert| expert.layer() == 3).await;
    let wallet = TestWallet::new(0x26);
    node.fund(&wallet.address, "3").await;
    let tokens = wallet.sign_in(&node).await;
    let body = json!({ "messages": user_says("route me"), "max_tokens": 16, "seed": 3 });
    let response = stream(&node, &body, Some(&tokens.access_token)).await;
    assert_eq!(response.status(), 200);
    let events = read_events(response).await;
    let last = events.last().expect("an event");
    assert_eq!(last.name, "error", "{events:?}");
    let error: Value = serde_json::from_str(&last.data).unwrap();
    assert_eq!(error["error"]["code"], "generation_failed", "{error}");
    assert!(
        error["error"]["message"]
            .as_str()
            .is_some_and(|message| message.contains("layer3")),
        "the error names the missing expert: {error}"
    );
    let available = settled(&node, &wallet.address).await;
    assert_eq!(available, "3".parse().unwrap(), "nothing charged");
    let metrics = node.metrics().await;
    assert!(
        metrics.contains("blyan_ledger_operations_total{operation=\"release\",outcome=\"ok\"} 1"),
        "{metrics}"
    );
    assert!(!metrics.contains("operation=\"capture\""), "{metrics}");
    node.state
        .ledger()
        .unwrap()
        .verify_integrity()
        .await
        .expect("ledger invariants hold");
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
