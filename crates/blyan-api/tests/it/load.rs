//! A bounded load test, run on demand (CI does not):
//!
//! ```sh
//! BLYAN_LOAD=1 cargo test -p blyan-api --test it load -- --ignored --nocapture
//! ```
//!
//! `BLYAN_LOAD_STREAMS` (default 32) signed-in wallets each stream paid chats back to back for
//! `BLYAN_LOAD_SECONDS` (default 30) over loopback. Afterwards: no request failed, no payment
//! hold is left in the ledger, every wallet paid exactly the fee of its tokens, and the ledger's
//! invariants hold. Prints the first-token latency percentiles and the token throughput.

use std::time::{Duration, Instant};

use blyan_ledger::{Amount, Ledger as _};
use serde_json::json;

use crate::support::{Node, TestWallet, take_events, user_says};

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().map_or(default, |value| {
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a number"))
    })
}

/// What one worker did.
#[derive(Default)]
struct WorkerReport {
    first_token_ms: Vec<f64>,
    completion_tokens: u64,
    charged_units: u64,
    requests: u64,
}

async fn worker(node: &Node, access_token: String, until: Instant, index: u64) -> WorkerReport {
    let mut report = WorkerReport::default();
    while Instant::now() < until {
        let started = Instant::now();
        let mut response = node
            .http
            .post(node.url("/chat/stream"))
            .bearer_auth(&access_token)
            .json(&json!({
                "messages": user_says(&format!("load test request {index}.{}", report.requests)),
                "max_tokens": 32,
            }))
            .send()
            .await
            .expect("chat stream answers");
        assert_eq!(
            response.status(),
            200,
            "{}",
            response.text().await.unwrap_or_default()
        );
        let mut buffer = String::new();
        let mut first = None;
        let mut done = None;
        while let Some(chunk) = response.chunk().await.expect("stream reads") {
            buffer.push_str(std::str::from_utf8(&chunk).expect("utf-8 events"));
            for event in take_events(&mut buffer) {
                match event.name.as_str() {
                    "delta" => {
                        first.get_or_insert_with(|| started.elapsed());
                    }
                    "done" => {
                        done = Some(serde_json::from_str::<serde_json::Value>(&event.data).unwrap())
                    }
                    other => panic!("unexpected event {other}: {}", event.data),
                }
            }
        }
        let done = done.expect("every stream ends with its done event");
        if let Some(first) = first {
            report.first_token_ms.push(first.as_secs_f64() * 1000.0);
        }
        report.completion_tokens += done["usage"]["completion_tokens"].as_u64().unwrap();
        let charged: Amount = done["cost"]["charged"].as_str().unwrap().parse().unwrap();
        report.charged_units += charged.units();
        report.requests += 1;
    }
    report
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    let rank = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "load test: BLYAN_LOAD=1 cargo test -p blyan-api --test it load -- --ignored --nocapture"]
async fn concurrent_paid_streams_leave_no_hold_and_no_error() {
    assert!(
        std::env::var_os("BLYAN_LOAD").is_some(),
        "set BLYAN_LOAD=1 to run the load test"
    );
    let streams = env_number("BLYAN_LOAD_STREAMS", 32);
    let seconds = env_number("BLYAN_LOAD_SECONDS", 30);
    let node = Node::serving().await;
    let funded = "100";
    let mut wallets = Vec::new();
    for index in 0..streams {
        let wallet = TestWallet::new(u8::try_from(0x80 + index).expect("at most 127 streams"));
        node.fund(&wallet.address, funded).await;
        let tokens = wallet.sign_in(&node).await;
        wallets.push((wallet, tokens.access_token));
    }
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let reports = futures::future::join_all(
        wallets
            .iter()
            .enumerate()
            .map(|(index, (_, token))| worker(&node, token.clone(), until, index as u64)),
    )
    .await;
    let elapsed = started.elapsed().as_secs_f64();

    let ledger = node.state.ledger().unwrap();
    let funded: Amount = funded.parse().unwrap();
    for ((wallet, _), report) in wallets.iter().zip(&reports) {
        let (available, held) = node.balance(&wallet.address).await;
        assert_eq!(held.units(), 0, "{} has a hold left", wallet.address);
        assert_eq!(
            available.units(),
            funded.units() - report.charged_units,
            "{}",
            wallet.address
        );
    }
    ledger
        .verify_integrity()
        .await
        .expect("ledger invariants hold");

    let mut latencies: Vec<f64> = reports
        .iter()
        .flat_map(|r| r.first_token_ms.iter().copied())
        .collect();
    latencies.sort_by(f64::total_cmp);
    let requests: u64 = reports.iter().map(|r| r.requests).sum();
    let tokens: u64 = reports.iter().map(|r| r.completion_tokens).sum();
    assert!(!latencies.is_empty(), "no stream produced a token");
    eprintln!(
        "load: {streams} streams for {elapsed:.1} s: {requests} requests, {tokens} completion tokens \
         ({:.1} tokens/s); first token p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        tokens as f64 / elapsed,
        percentile(&latencies, 0.50),
        percentile(&latencies, 0.99),
        latencies[latencies.len() - 1],
    );
}
