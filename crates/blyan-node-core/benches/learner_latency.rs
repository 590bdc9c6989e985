//! First-token latency of chat with the node's learner on against off, in one run: 8
//! concurrent chat streams per round on the seed model, the same rounds and pauses with and
//! without the learner fine-tuning two experts on text cut from docs/. Prints p50 and p99 of
//! both and the p99 ratio (goal ≤ 1.2×), and the learner's steps during the "on" rounds so a
//! ratio measured while the learner never ran is visible as such.
//!
//! `source scripts/env.sh && nice -n 15 cargo bench -p blyan-node-core --bench learner_latency
//! --profile test`. Rounds: `BLYAN_BENCH_ROUNDS` (default 25, so 200 first tokens each way).
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blyan_api_types::{ChatMessage, ChatRequest};
use blyan_chain::AuthorKey;
use blyan_node_core::{ChatEvent, Learner, NoObserver, Node, NodeConfig, Payer, Services};
use blyan_primitives::Durability;

/// Concurrent chat streams per round.
const STREAMS: usize = 8;

/// Completion tokens per chat: the first token is what is measured.
const CHAT_TOKENS: u32 = 16;

fn docs_corpus(dir: &Path) -> PathBuf {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
    let corpus = dir.join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    let mut count = 0;
    for entry in std::fs::read_dir(&docs).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|ext| ext != "md") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for paragraph in text.split("\n\n").filter(|p| !p.trim().is_empty()) {
            std::fs::write(
                corpus.join(format!("{count:05}.txt")),
                format!("{paragraph}\n\n"),
            )
            .unwrap();
            count += 1;
        }
    }
    corpus
}

fn request(index: usize) -> ChatRequest {
    ChatRequest {
        messages: vec![ChatMessage {
            role: "user".to_owned(),
            content: format!("Tell me about block {index} of the chain").into(),
        }],
        max_tokens: Some(CHAT_TOKENS),
        temperature: Some(0.0),
        top_p: None,
        seed: Some(index as u64),
        model: None,
        stop: None,
    }
}

/// Time from the request to its first generated text.
async fn first_token(node: Arc<Node>, index: usize) -> Duration {
    let started = Instant::now();
    let plan = node.plan_chat(Payer::Free, &request(index)).unwrap();
    let mut run = plan
        .start(Arc::clone(&node), Arc::new(NoObserver))
        .await
        .unwrap();
    let mut first = None;
    while let Some(event) = run.next_event().await {
        match event {
            ChatEvent::Delta { .. } if first.is_none() => first = Some(started.elapsed()),
            ChatEvent::Failed(error) => panic!("chat failed: {error}"),
            _ => {}
        }
    }
    first.expect("the chat generated text")
}

/// First-token latencies of `rounds` rounds of [`STREAMS`] concurrent chats, with a pause
/// between rounds (the same sequence every time) in which a learner may run slices.
async fn measure(node: &Arc<Node>, rounds: usize) -> Vec<Duration> {
    let mut latencies = Vec::with_capacity(rounds * STREAMS);
    for round in 0..rounds {
        let chats: Vec<_> = (0..STREAMS)
            .map(|stream| tokio::spawn(first_token(Arc::clone(node), round * STREAMS + stream)))
            .collect();
        for chat in chats {
            latencies.push(chat.await.unwrap());
        }
        tokio::time::sleep(Duration::from_millis(50 + (round as u64 * 37) % 200)).await;
    }
    latencies.sort();
    latencies
}

fn percentile(sorted: &[Duration], per_cent: f64) -> Duration {
    let index = ((sorted.len() as f64 * per_cent / 100.0).ceil() as usize).clamp(1, sorted.len());
    sorted[index - 1]
}

fn main() {
    // `cargo bench` passes `--bench`; nothing else is taken.
    let rounds: usize = std::env::var("BLYAN_BENCH_ROUNDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(25);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let mut config = NodeConfig::defaults();
        config.data_dir = dir.path().join("node");
        config.chain.durability = Durability::Unsynced;
        config.api.free_tier.completion_tokens_max = CHAT_TOKENS;
        config.learning.enabled = true;
        config.learning.corpus = vec![docs_corpus(dir.path())];
        config.learning.experts = vec!["layer0.expert0".parse().unwrap(), "layer2.expert3".parse().unwrap()];
        config.learning.held_out_per_mille = 100;
        config.learning.min_improvement = 0.99;
        // Evaluate often enough that the held-out curve over the rounds has points.
        config.learning.eval_every = 8;
        // The untrained seed model the figures were first measured on.
        config.model.seed = blyan_node_core::SeedChoice::Random;
        let slice_ms = config.learning.slice_ms;
        let node = Node::open(config).await.unwrap();
        node.ensure_seed_model(&AuthorKey::generate()).await.unwrap();
        let node = Arc::new(node.load_model().await.unwrap());

        // Warm-up: first forward passes, allocator.
        let _ = measure(&node, 2).await;
        let off = measure(&node, rounds).await;

        let mut services = Services::new(Arc::clone(&node));
        services.spawn(Learner::new());
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(services.run_until(async move {
            let _ = stopped.await;
        }));
        while node.learning_status().state != "running" {
            let status = node.learning_status();
            assert_ne!(status.state, "failed", "{:?}", status.error);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let steps_before = node.learning_status().steps;
        let on = measure(&node, rounds).await;
        let status = node.learning_status();
        let _ = stop.send(());
        task.await.unwrap().unwrap();

        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        let (off_p99, on_p99) = (percentile(&off, 99.0), percentile(&on, 99.0));
        println!(
            "first-token latency, {STREAMS} concurrent streams, {} chats each way, seed model, slice {slice_ms} ms (batch {} x {}):",
            off.len(),
            status.batch_size,
            status.positions
        );
        println!(
            "  learner off: p50 {:.1} ms, p99 {:.1} ms",
            ms(percentile(&off, 50.0)),
            ms(off_p99)
        );
        println!(
            "  learner on:  p50 {:.1} ms, p99 {:.1} ms ({} learner steps during the rounds, last slice {:.1} ms)",
            ms(percentile(&on, 50.0)),
            ms(on_p99),
            status.steps - steps_before,
            status.last_slice_ms.unwrap_or(0.0)
        );
        println!(
            "  p99 ratio on/off: {:.2}x (goal <= 1.2x)",
            on_p99.as_secs_f64() / off_p99.as_secs_f64()
        );
        let baseline = status.baseline.as_ref().map(|baseline| baseline.eval_loss);
        let last = status.history.last().map(|point| (point.step, point.eval_loss));
        if let (Some(baseline), Some((step, last))) = (baseline, last) {
            println!(
                "  learner held-out loss: {baseline:.4} (served weights) -> {last:.4} at step {step} ({} points)",
                status.history.len()
            );
        }
    });
}
