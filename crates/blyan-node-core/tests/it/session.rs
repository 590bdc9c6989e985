//! The chat and billing session without HTTP: quote → authorize → generate → capture of the
//! prompt and the delivered tokens, release on every failure, the generation deadline before
//! the hold's expiry, the free tier and its time limit, and the refusals.

use std::sync::Arc;

use blyan_api_types::MODEL_ID;
use blyan_ledger::{Amount, Ledger as _};
use blyan_node_core::{ChatError, ChatEvent, NoObserver, Payer};

use crate::support::{
    Recorder, balance, fund, node_with, request, serving, wait_until_nothing_held, wallet,
};

/// A completion budget for answers long enough to be cut by a deadline or a disconnection.
const LONG_ANSWER_TOKENS: u32 = 1024;

#[tokio::test]
async fn a_paid_chat_is_charged_exactly_its_completion_tokens() {
    let test = serving().await;
    let node = &test.node;
    let payer = wallet(0x21);
    fund(node, payer, "10").await;
    let (before, _) = balance(node, payer).await;
    let recorder = Arc::new(Recorder::default());
    let plan = node
        .plan_chat(
            Payer::Wallet(payer),
            &request("Tell me about experts.", Some(24)),
        )
        .unwrap();
    assert_eq!(plan.max_tokens(), 24);
    assert!(plan.prompt_tokens() > 0);
    let id = plan.id().to_owned();
    let mut run = plan
        .start(Arc::clone(node), recorder.clone())
        .await
        .unwrap();
    assert_eq!(run.id(), id);
    // While generating, the quote for 24 tokens is held.
    let (_, held) = balance(node, payer).await;
    assert!(held > Amount::ZERO, "a hold is taken before generating");
    let mut streamed = String::new();
    let done = loop {
        match run.next_event().await.expect("the run ends with an event") {
            ChatEvent::Delta { text, .. } => streamed.push_str(&text),
            ChatEvent::Done(done) => break *done,
            ChatEvent::Failed(error) => panic!("{error}"),
            _ => {}
        }
    };
    assert_eq!(done.id, id);
    assert_eq!(done.model, MODEL_ID);
    assert_eq!(done.text, streamed, "deltas concatenate to the text");
    let completion = done.usage.completion_tokens;
    assert!((1..=24).contains(&completion), "{done:?}");
    assert_eq!(
        done.usage.total_tokens,
        done.usage.prompt_tokens + completion
    );
    // The prompt at its rate, the completion at its own.
    let fee = node
        .ledger()
        .unwrap()
        .tokenomics()
        .chat_fee(done.usage.prompt_tokens, completion)
        .unwrap();
    assert!(
        fee > node
            .ledger()
            .unwrap()
            .tokenomics()
            .inference_fee(completion)
            .unwrap(),
        "the prompt is not free"
    );
    assert_eq!(done.cost.tier, "paid");
    assert_eq!(done.cost.tokens_charged, completion);
    assert_eq!(done.cost.charged, fee.to_string());
    let (after, held) = balance(node, payer).await;
    assert_eq!(held, Amount::ZERO, "the rest of the hold went back");
    assert_eq!(before.units() - after.units(), fee.units());
    assert_eq!(
        *recorder.ledger.lock().unwrap(),
        vec![("quote", "ok"), ("authorize", "ok"), ("capture", "ok")]
    );
    assert_eq!(
        *recorder.tokens.lock().unwrap(),
        vec![("paid", done.usage.prompt_tokens, completion)]
    );
    assert_eq!(*recorder.first_tokens.lock().unwrap(), 1);
    // The experts that ran are counted for the dashboard.
    let uses: u64 = node.expert_uses().iter().flatten().sum();
    assert!(uses > 0);
}

#[tokio::test]
async fn a_free_chat_touches_no_ledger_and_stays_within_its_budget() {
    let test = serving().await;
    let node = &test.node;
    let budget = node.config().api.free_tier.completion_tokens_max;
    let recorder = Arc::new(Recorder::default());
    let plan = node
        .plan_chat(Payer::Free, &request("hi", Some(budget + 100)))
        .unwrap();
    assert_eq!(
        plan.max_tokens(),
        budget,
        "the free tier answers within its budget"
    );
    let done = plan
        .start(Arc::clone(node), recorder.clone())
        .await
        .unwrap()
        .finish()
        .await
        .unwrap();
    assert_eq!(done.cost.tier, "free");
    assert_eq!(done.cost.charged, "0");
    assert!(done.usage.completion_tokens <= u64::from(budget));
    assert!(recorder.ledger.lock().unwrap().is_empty());
}

#[tokio::test]
async fn a_run_dropped_mid_stream_is_charged_exactly_the_tokens_it_took() {
    let test = serving().await;
    let node = &test.node;
    let payer = wallet(0x22);
    fund(node, payer, "10").await;
    let (before, _) = balance(node, payer).await;
    let plan = node
        .plan_chat(
            Payer::Wallet(payer),
            &request("A long answer, please.", Some(LONG_ANSWER_TOKENS)),
        )
        .unwrap();
    let prompt = plan.prompt_tokens() as u64;
    let mut run = plan
        .start(Arc::clone(node), Arc::new(NoObserver))
        .await
        .unwrap();
    assert!(balance(node, payer).await.1 > Amount::ZERO);
    // Take three deltas, then walk away: the deltas still queued were never delivered.
    let mut delivered = 0_u64;
    for _ in 0..3 {
        match run.next_event().await.expect("a delta") {
            ChatEvent::Delta { tokens, .. } => delivered += u64::from(tokens),
            other => panic!("{other:?}"),
        }
    }
    assert!(delivered >= 3);
    drop(run);
    wait_until_nothing_held(node, payer).await;
    let fee = node
        .ledger()
        .unwrap()
        .tokenomics()
        .chat_fee(prompt, delivered)
        .unwrap();
    assert_eq!(
        before.units() - balance(node, payer).await.0.units(),
        fee.units(),
        "the prompt and the {delivered} tokens delivered, nothing more"
    );
}

#[tokio::test]
async fn a_run_dropped_before_any_delta_is_charged_nothing() {
    let test = serving().await;
    let node = &test.node;
    let payer = wallet(0x25);
    fund(node, payer, "10").await;
    let (before, _) = balance(node, payer).await;
    let run = node
        .plan_chat(
            Payer::Wallet(payer),
            &request("A long answer, please.", Some(LONG_ANSWER_TOKENS)),
        )
        .unwrap()
        .start(Arc::clone(node), Arc::new(NoObserver))
        .await
        .unwrap();
    drop(run);
    wait_until_nothing_held(node, payer).await;
    assert_eq!(balance(node, payer).await.0, before, "nothing was charged");
}

/// Tokenomics whose holds last `seconds`.
fn short_holds(dir: &std::path::Path, seconds: u32) -> std::path::PathBuf {
    let text = blyan_ledger::SHIPPED_TOKENOMICS_YAML.replace(
        "hold_ttl_seconds: 300",
        &format!("hold_ttl_seconds: {seconds}"),
    );
    let path = dir.join("tokenomics.yaml");
    std::fs::write(&path, text).unwrap();
    path
}

#[tokio::test]
async fn generation_stops_before_the_hold_expires_and_charges_what_it_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let tokenomics = short_holds(dir.path(), 3);
    // Generation may run 0.6 s of the 3 s hold; 2.4 s are left to settle.
    let test = node_with(
        |config| {
            config.ledger.tokenomics = Some(tokenomics);
            config.ledger.settle_margin_ms = 2400;
        },
        true,
    )
    .await;
    let node = &test.node;
    let payer = wallet(0x26);
    fund(node, payer, "10").await;
    let (before, _) = balance(node, payer).await;
    // Warm the expert cache, so the timed chat spends its time generating.
    node.plan_chat(Payer::Free, &request("A long answer, please.", Some(16)))
        .unwrap()
        .start(Arc::clone(node), Arc::new(NoObserver))
        .await
        .unwrap()
        .finish()
        .await
        .unwrap();
    let plan = node
        .plan_chat(
            Payer::Wallet(payer),
            &request("A long answer, please.", Some(LONG_ANSWER_TOKENS)),
        )
        .unwrap();
    let prompt = plan.prompt_tokens() as u64;
    let mut run = plan
        .start(Arc::clone(node), Arc::new(NoObserver))
        .await
        .unwrap();
    let mut delivered = 0_u64;
    let done = loop {
        match run.next_event().await.expect("the run ends with an event") {
            ChatEvent::Delta { tokens, .. } => delivered += u64::from(tokens),
            ChatEvent::Done(done) => break *done,
            ChatEvent::Failed(error) => panic!("{error}"),
            _ => {}
        }
    };
    // A capture on an expired hold fails: the `done` event proves it landed in time.
    assert_eq!(done.finish_reason, "time_limit", "{done:?}");
    assert!(
        delivered > 0,
        "the warm model generated within the time limit"
    );
    assert!(
        done.usage.completion_tokens < u64::from(LONG_ANSWER_TOKENS),
        "{done:?}"
    );
    assert_eq!(done.usage.completion_tokens, delivered);
    assert_eq!(done.cost.tokens_charged, delivered);
    let fee = node
        .ledger()
        .unwrap()
        .tokenomics()
        .chat_fee(prompt, delivered)
        .unwrap();
    assert_eq!(done.cost.charged, fee.to_string());
    let (after, held) = balance(node, payer).await;
    assert_eq!(held, Amount::ZERO, "the capture landed on the live hold");
    assert_eq!(before.units() - after.units(), fee.units());
}

#[tokio::test]
async fn a_free_generation_read_slowly_ends_at_its_time_limit_and_frees_its_place() {
    let test = node_with(
        |config| {
            config.api.free_tier.generation_seconds_max = 1;
            config.api.free_tier.completion_tokens_max = LONG_ANSWER_TOKENS;
        },
        true,
    )
    .await;
    let node = &test.node;
    let started = std::time::Instant::now();
    let plan = node
        .plan_chat(
            Payer::Free,
            &request("A long answer, please.", Some(LONG_ANSWER_TOKENS)),
        )
        .unwrap();
    let mut run = plan
        .start(Arc::clone(node), Arc::new(NoObserver))
        .await
        .unwrap();
    // A client that reads nothing: the generation fills the delta queue and waits on it.
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let mut delivered = 0_u64;
    let done = loop {
        match run.next_event().await.expect("the run ends with an event") {
            ChatEvent::Delta { tokens, .. } => delivered += u64::from(tokens),
            ChatEvent::Done(done) => break *done,
            ChatEvent::Failed(error) => panic!("{error}"),
            _ => {}
        }
    };
    assert_eq!(done.finish_reason, "time_limit", "{done:?}");
    assert!(delivered > 0, "the deltas queued before the limit arrive");
    assert!(
        done.usage.completion_tokens < u64::from(LONG_ANSWER_TOKENS),
        "{done:?}"
    );
    assert_eq!(done.usage.completion_tokens, delivered);
    assert_eq!(done.cost.tier, "free");
    // The generation thread ends at its next token and gives its place back.
    let gate = node.inference_gate();
    while gate.in_flight() > 0 {
        assert!(
            started.elapsed() < std::time::Duration::from_secs(10),
            "the cut generation still holds its place"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn a_settle_margin_as_long_as_the_hold_is_refused_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let tokenomics = short_holds(dir.path(), 2);
    let mut config = blyan_node_core::NodeConfig::defaults();
    config.data_dir = dir.path().join("data");
    config.ledger.tokenomics = Some(tokenomics);
    config.ledger.settle_margin_ms = 2000;
    match blyan_node_core::load_tokenomics(&config) {
        Err(blyan_node_core::Error::ConfigInvalid { field, .. }) => {
            assert_eq!(field, "ledger.settle_margin_ms");
        }
        other => panic!("expected ConfigInvalid, got {other:?}"),
    }
    config.ledger.settle_margin_ms = 1999;
    let tokenomics = blyan_node_core::load_tokenomics(&config).unwrap();
    assert_eq!(tokenomics.payments.hold_ttl_seconds, 2);
    // A named file that is not there is an error, not the shipped defaults.
    config.ledger.tokenomics = Some(dir.path().join("absent.yaml"));
    assert!(matches!(
        blyan_node_core::load_tokenomics(&config),
        Err(blyan_node_core::Error::LedgerOpen(
            blyan_ledger::LedgerError::ConfigRead { .. }
        ))
    ));
}

#[tokio::test]
async fn a_wallet_that_cannot_pay_is_refused_before_generating() {
    let test = serving().await;
    let node = &test.node;
    let recorder = Arc::new(Recorder::default());
    let plan = node
        .plan_chat(Payer::Wallet(wallet(0x23)), &request("hi", Some(8)))
        .unwrap();
    let error = plan
        .start(Arc::clone(node), recorder.clone())
        .await
        .unwrap_err();
    assert!(
        matches!(error, ChatError::InsufficientBalance { .. }),
        "{error:?}"
    );
    // A quote is only a price; the hold is what the ledger refuses.
    assert_eq!(
        *recorder.ledger.lock().unwrap(),
        vec![("quote", "ok"), ("authorize", "refused")]
    );
    assert!(
        recorder.tokens.lock().unwrap().is_empty(),
        "nothing generated"
    );
}

#[tokio::test]
async fn refusals_name_what_is_wrong() {
    let test = serving().await;
    let node = &test.node;
    let paid = Payer::Wallet(wallet(0x24));
    let field_of = |error: ChatError| match error {
        ChatError::InvalidRequest { field, .. } => field,
        other => panic!("{other:?}"),
    };
    // The context (`api.context_tokens_max`, within the model's positions) bounds prompt plus
    // completion: at the bound accepted, one past it refused naming the limit.
    let context = node.context_tokens_max(&node.generator().unwrap());
    let prompt = u32::try_from(
        node.plan_chat(paid, &request("hi", Some(1)))
            .unwrap()
            .prompt_tokens(),
    )
    .unwrap();
    let room = context - prompt;
    node.plan_chat(paid, &request("hi", Some(room))).unwrap();
    assert_eq!(
        node.plan_chat(paid, &request("hi", Some(room + 1)))
            .unwrap_err(),
        ChatError::ContextTooLong {
            prompt_tokens: u64::from(prompt),
            completion_tokens: u64::from(room + 1),
            context_tokens_max: u64::from(context),
        }
    );
    // The free tier is answered within the room instead.
    let free = node
        .plan_chat(Payer::Free, &request("hi", Some(room + 1)))
        .unwrap();
    assert!(free.max_tokens() <= room);
    assert_eq!(
        field_of(node.plan_chat(paid, &request("hi", Some(0))).unwrap_err()),
        "max_tokens"
    );
    let mut hot = request("hi", Some(4));
    hot.temperature = Some(-1.0);
    assert_eq!(
        field_of(node.plan_chat(paid, &hot).unwrap_err()),
        "temperature"
    );
    let long = request(&"x".repeat(context as usize), Some(4));
    assert!(matches!(
        node.plan_chat(paid, &long).unwrap_err(),
        ChatError::PromptTooLong { tokens, max } if max == u64::from(context - 1) && tokens > max
    ));
    let mut other_model = request("hi", Some(4));
    other_model.model = Some("gpt-4".to_owned());
    assert!(matches!(
        node.plan_chat(paid, &other_model).unwrap_err(),
        ChatError::UnknownModel {
            served: MODEL_ID,
            ..
        }
    ));
}

#[tokio::test]
async fn a_node_without_a_model_or_free_tier_says_so() {
    let bare = node_with(|_| {}, false).await;
    assert_eq!(
        bare.node
            .plan_chat(Payer::Free, &request("hi", Some(4)))
            .unwrap_err(),
        ChatError::ModelUnavailable
    );
    let closed = node_with(|config| config.api.free_tier.enabled = false, true).await;
    assert_eq!(
        closed
            .node
            .plan_chat(Payer::Free, &request("hi", Some(4)))
            .unwrap_err(),
        ChatError::FreeTierDisabled
    );
    closed
        .node
        .plan_chat(Payer::Wallet(wallet(0x25)), &request("hi", Some(4)))
        .expect("a wallet still chats");
}

#[tokio::test]
async fn the_context_limit_is_the_configured_one_within_the_models_positions() {
    let small = node_with(|config| config.api.context_tokens_max = 40, true).await;
    let generator = small.node.generator().unwrap();
    let positions = generator.info().config.max_position_embeddings;
    assert!(positions > 40, "the seed model has {positions} positions");
    assert_eq!(small.node.context_tokens_max(&generator), 40);
    // A prompt of 40 tokens or more leaves no room: refused naming the configured limit.
    let paid = Payer::Wallet(wallet(0x31));
    match small
        .node
        .plan_chat(paid, &request(&"x".repeat(40), Some(1)))
        .unwrap_err()
    {
        ChatError::PromptTooLong { max, .. } => assert_eq!(max, 39),
        other => panic!("expected prompt_too_long, got {other:?}"),
    }
    let large = node_with(
        |config| config.api.context_tokens_max = blyan_node_core::API_CONTEXT_TOKENS_MAX,
        true,
    )
    .await;
    let generator = large.node.generator().unwrap();
    assert_eq!(large.node.context_tokens_max(&generator), positions);
}
