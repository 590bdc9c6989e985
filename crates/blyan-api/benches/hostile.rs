//! Paid chat under a mixed hostile load, over real HTTP on loopback: the first-token latency
//! of paid streams alone (baseline) against the same streams while the node is flooded, in one
//! run. The flood, from many client addresses (`api.trusted_proxies` names loopback, and each
//! flooding request carries its own `X-Forwarded-For`):
//!
//! - free-tier chat floods: anonymous `/chat/stream` requests (`BLYAN_BENCH_FLOOD_RPS` a
//!   second, default 200; 0: back to back), each from a new address, read to their end;
//! - slow uploads: `POST /blocks` of a signed dataset header announcing 64 MiB, then 1 KiB of
//!   payload every 250 ms, restarted whenever the node cuts or refuses one;
//! - nonce floods: `GET /auth/nonce` (as many a second), from new addresses and from one.
//!
//! Paid streams: `BLYAN_BENCH_PAID_STREAMS` (default 4) signed-in, funded wallets, each asking
//! for a 32-token streamed chat every `BLYAN_BENCH_PAID_INTERVAL_MS` (default 1500; a wallet's
//! and a client's rate limits allow 120 and 60 a minute), from its own address. Each phase lasts
//! `BLYAN_BENCH_SECONDS` (default 60; 10 is a smoke run). `BLYAN_BENCH_FLOOD` picks parts of
//! the flood (`free,uploads,nonces`, the default), to see which one delays paid users;
//! `BLYAN_BENCH_FREE_GENERATIONS` sets `api.free_tier.generations_concurrent_max`. Prints p50/p99 first-token latency of
//! both phases and the ratio of the p99s (goal ≤ 1.5×), the paid requests that failed (goal 0),
//! what the flood got (served, refused by code), and the payment holds left in the ledger
//! afterwards (goal 0: the fee escrow and every wallet's held balance).
//!
//! ```sh
//! source scripts/env.sh && nice -n 15 cargo bench -p blyan-api --profile test --bench hostile
//! ```
//!
//! The node runs on a runtime of its own (2 worker threads) in this process, the paid streams
//! and the slow uploads on another. The free-chat and nonce floods run in a second process (this
//! bench, started again with `BLYAN_BENCH_FLOOD_ADDR` set), at a lower CPU priority:
//! `BLYAN_BENCH_FLOOD_NICE` (default 4) added to this process's niceness, since on one machine
//! an attacker's clients would take the node's CPU as they could not from their own machines (0
//! gives them an equal share: an upper bound of what the node lets through). It prints the
//! rates it sent, to compare with the rate offered.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use blyan_api::{AppState, Server};
use blyan_chain::{AuthorKey, BlockHeader, BlockKind, ChainId, PayloadHash, encode_block};
use blyan_ledger::{
    AccountId, Amount, IdempotencyKey, Ledger as _, SystemAccount, TransferRequest,
};
use blyan_node_core::{Node, NodeConfig};
use k256::ecdsa::SigningKey;
use serde_json::{Value, json};
use sha3::{Digest as _, Keccak256};

/// Completion tokens of a paid chat: the first is what is measured.
const PAID_CHAT_TOKENS: u32 = 32;
/// Concurrent free-tier flooders.
const FREE_FLOODERS: usize = 16;
/// Concurrent slow uploads (the node takes `api.uploads.concurrent_max` = 4 at once).
const SLOW_UPLOADS: usize = 8;
/// Concurrent nonce flooders.
const NONCE_FLOODERS: usize = 4;
/// What a slow upload announces, and how it trickles.
const SLOW_UPLOAD_BYTES: u64 = 64 << 20;
const SLOW_UPLOAD_PIECE_BYTES: usize = 1024;
const SLOW_UPLOAD_PAUSE: Duration = Duration::from_millis(250);

fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).ok().map_or(default, |value| {
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value} is not a number"))
    })
}

/// The node under load, served on its own runtime.
struct Served {
    addr: SocketAddr,
    node: Arc<Node>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    runtime: tokio::runtime::Runtime,
    _dir: tempfile::TempDir,
}

fn serve_node() -> Served {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("node")
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut config = NodeConfig::defaults();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.data_dir = dir.path().to_owned();
    config.chain.durability = blyan_primitives::Durability::Unsynced;
    config.model.seed = blyan_node_core::SeedChoice::Random;
    // Every client is loopback; the forwarded address is the client the limits count.
    config.api.trusted_proxies = vec!["127.0.0.1".parse().unwrap()];
    if let Ok(free) = std::env::var("BLYAN_BENCH_FREE_GENERATIONS") {
        config.api.free_tier.generations_concurrent_max = free.parse().unwrap();
    }
    println!(
        "hostile: generation pool {} places, free chats at most {}",
        config.api.generations_concurrent_max, config.api.free_tier.generations_concurrent_max
    );
    let (addr, node, stop) = runtime.block_on(async {
        let node = Node::open(config).await.unwrap();
        node.ensure_seed_model(&AuthorKey::generate())
            .await
            .unwrap();
        let node = Arc::new(node.load_model().await.unwrap());
        let app = AppState::new(Arc::clone(&node)).unwrap();
        let server = Server::bind(app).await.unwrap();
        let addr = server.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(server.serve(async move {
            let _ = stopped.await;
        }));
        (addr, node, stop)
    });
    Served {
        addr,
        node,
        stop: Some(stop),
        runtime,
        _dir: dir,
    }
}

/// A wallet signing as a browser wallet does (EIP-191 `personal_sign`, secp256k1).
struct Wallet {
    key: SigningKey,
    address: String,
}

impl Wallet {
    fn new(seed: u8) -> Wallet {
        let key = SigningKey::from_slice(&[seed; 32]).unwrap();
        let point = key.verifying_key().to_encoded_point(false);
        let hash = Keccak256::digest(&point.as_bytes()[1..]);
        let mut bytes = [0_u8; 20];
        bytes.copy_from_slice(&hash[12..]);
        let address = blyan_primitives::Address::from_bytes(bytes).to_string();
        Wallet { key, address }
    }

    fn personal_sign(&self, message: &[u8]) -> String {
        let mut prefixed = format!("\x19Ethereum Signed Message:\n{}", message.len()).into_bytes();
        prefixed.extend_from_slice(message);
        let (signature, recovery) = self
            .key
            .sign_digest_recoverable(Keccak256::new_with_prefix(&prefixed))
            .unwrap();
        let mut bytes = signature.to_bytes().to_vec();
        bytes.push(27 + recovery.to_byte());
        format!("0x{}", hex::encode(bytes))
    }

    /// Signs in to the node at `addr` from client `source`: the access token.
    async fn sign_in(&self, http: &reqwest::Client, addr: SocketAddr, source: &str) -> String {
        let nonce: Value = http
            .get(format!("http://{addr}/auth/nonce"))
            .header("x-forwarded-for", source)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let rfc3339 = |time: SystemTime| {
            time::OffsetDateTime::from(time)
                .format(&time::format_description::well_known::Rfc3339)
                .unwrap()
        };
        let now = SystemTime::now();
        let message = format!(
            "{addr} wants you to sign in with your Ethereum account:\n{}\n\nSign in to Blyan.\n\nURI: http://{addr}/\nVersion: 1\nChain ID: {}\nNonce: {}\nIssued At: {}\nExpiration Time: {}",
            self.address,
            nonce["chain_id"].as_u64().unwrap(),
            nonce["nonce"].as_str().unwrap(),
            rfc3339(now),
            rfc3339(now + Duration::from_secs(600)),
        );
        let signature = self.personal_sign(message.as_bytes());
        let response = http
            .post(format!("http://{addr}/auth/verify"))
            .header("x-forwarded-for", source)
            .json(&json!({ "message": message, "signature": signature }))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "sign-in");
        let tokens: Value = response.json().await.unwrap();
        tokens["access_token"].as_str().unwrap().to_owned()
    }
}

/// Splits complete Server-Sent Events off `buffer`: (event name, data).
fn take_events(buffer: &mut String) -> Vec<(String, String)> {
    let mut events = Vec::new();
    while let Some(end) = buffer.find("\n\n") {
        let block: String = buffer.drain(..end + 2).collect();
        let mut name = "message".to_owned();
        let mut data = String::new();
        for line in block.lines() {
            if let Some(value) = line.strip_prefix("event:") {
                name = value.trim().to_owned();
            } else if let Some(value) = line.strip_prefix("data:") {
                data.push_str(value.strip_prefix(' ').unwrap_or(value));
            }
        }
        if !data.is_empty() {
            events.push((name, data));
        }
    }
    events
}

/// How one streamed chat went.
enum ChatOutcome {
    /// Streamed to its `done` event; the first delta arrived this long after the request.
    Done { first_token: Option<Duration> },
    /// Refused or failed: the status and error code (or what broke).
    Failed(String),
}

/// One streamed chat from client `source`, as `token`'s wallet or anonymously.
async fn stream_chat(
    http: &reqwest::Client,
    addr: SocketAddr,
    source: &str,
    token: Option<&str>,
    text: &str,
    max_tokens: u32,
) -> ChatOutcome {
    let started = Instant::now();
    let mut request = http
        .post(format!("http://{addr}/chat/stream"))
        .header("x-forwarded-for", source)
        .json(&json!({
            "messages": [{ "role": "user", "content": text }],
            "max_tokens": max_tokens,
        }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let mut response = match request.send().await {
        Ok(response) => response,
        Err(error) => return ChatOutcome::Failed(format!("request: {error}")),
    };
    if response.status() != 200 {
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let code = body["error"]["code"].as_str().unwrap_or("?").to_owned();
        return ChatOutcome::Failed(format!("{status} {code}"));
    }
    let mut buffer = String::new();
    let mut first_token = None;
    loop {
        let chunk = match response.chunk().await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => return ChatOutcome::Failed("stream ended without done".to_owned()),
            Err(error) => return ChatOutcome::Failed(format!("stream: {error}")),
        };
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        for (name, data) in take_events(&mut buffer) {
            match name.as_str() {
                "delta" => {
                    first_token.get_or_insert_with(|| started.elapsed());
                }
                "done" => return ChatOutcome::Done { first_token },
                _ => return ChatOutcome::Failed(format!("{name}: {data}")),
            }
        }
    }
}

/// What the paid streams saw in one phase.
#[derive(Default)]
struct PaidReport {
    first_token_ms: Vec<f64>,
    requests: u64,
    /// Chats answered with no text (no first token to time); not failures.
    empty: u64,
    errors: BTreeMap<String, u64>,
}

async fn paid_stream(
    http: reqwest::Client,
    addr: SocketAddr,
    source: String,
    token: String,
    until: Instant,
    interval: Duration,
    report: Arc<Mutex<PaidReport>>,
) {
    let mut index = 0_u64;
    while Instant::now() < until {
        let next = Instant::now() + interval;
        let text = format!("Tell me about block {index} of the chain, from {source}.");
        let outcome =
            stream_chat(&http, addr, &source, Some(&token), &text, PAID_CHAT_TOKENS).await;
        {
            let mut report = report.lock().unwrap();
            report.requests += 1;
            match outcome {
                ChatOutcome::Done {
                    first_token: Some(first),
                } => report.first_token_ms.push(first.as_secs_f64() * 1000.0),
                // The untrained model's first sampled token was its stop token: answered
                // (`done`), with nothing to time.
                ChatOutcome::Done { first_token: None } => report.empty += 1,
                ChatOutcome::Failed(why) => *report.errors.entry(why).or_default() += 1,
            }
        }
        index += 1;
        tokio::time::sleep_until(next.into()).await;
    }
}

/// Runs the paid streams for `seconds`.
async fn paid_phase(
    http: &reqwest::Client,
    addr: SocketAddr,
    tokens: &[(String, String)],
    seconds: u64,
    interval: Duration,
) -> PaidReport {
    let report = Arc::new(Mutex::new(PaidReport::default()));
    let until = Instant::now() + Duration::from_secs(seconds);
    let streams: Vec<_> = tokens
        .iter()
        .enumerate()
        .map(|(index, (source, token))| {
            // Spread the streams' starts over one interval, as independent users would be.
            let start = interval.mul_f64(index as f64 / tokens.len() as f64);
            let (http, source, token, report) = (
                http.clone(),
                source.clone(),
                token.clone(),
                Arc::clone(&report),
            );
            tokio::spawn(async move {
                tokio::time::sleep(start).await;
                paid_stream(http, addr, source, token, until, interval, report).await;
            })
        })
        .collect();
    for stream in streams {
        stream.await.unwrap();
    }
    Arc::into_inner(report).unwrap().into_inner().unwrap()
}

/// What the flood got, by kind and outcome.
#[derive(Default)]
struct FloodTally(Mutex<BTreeMap<String, u64>>);

impl FloodTally {
    fn count(&self, what: impl Into<String>) {
        *self.0.lock().unwrap().entry(what.into()).or_default() += 1;
    }
}

/// A new client address for each flooding request (10.0.0.0/8).
fn flood_source(counter: &AtomicU64) -> String {
    let n = counter.fetch_add(1, Ordering::Relaxed);
    format!("10.{}.{}.{}", (n >> 16) & 0xff, (n >> 8) & 0xff, n & 0xff)
}

/// Ticks at most every `period` (never, for a zero period: as fast as the loop goes).
struct Pace(Option<tokio::time::Interval>);

impl Pace {
    fn every(period: Duration) -> Pace {
        Pace((!period.is_zero()).then(|| {
            let mut interval = tokio::time::interval(period);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            interval
        }))
    }

    async fn tick(&mut self) {
        if let Some(interval) = &mut self.0 {
            interval.tick().await;
        }
    }
}

async fn free_flooder(
    http: reqwest::Client,
    addr: SocketAddr,
    sources: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tally: Arc<FloodTally>,
    period: Duration,
) {
    let mut pace = Pace::every(period);
    while !stop.load(Ordering::Relaxed) {
        pace.tick().await;
        let source = flood_source(&sources);
        let outcome = stream_chat(&http, addr, &source, None, "Say everything.", 1024).await;
        match outcome {
            ChatOutcome::Done { .. } => tally.count("free chat: served"),
            ChatOutcome::Failed(why) => {
                tally.count(format!("free chat: {why}"));
                // A refused flooder comes straight back, but not in a spin that only measures
                // this process's own client.
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    }
}

async fn nonce_flooder(
    http: reqwest::Client,
    addr: SocketAddr,
    sources: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    tally: Arc<FloodTally>,
    one_source: bool,
    period: Duration,
) {
    let mut pace = Pace::every(period);
    while !stop.load(Ordering::Relaxed) {
        pace.tick().await;
        let source = if one_source {
            "172.16.0.1".to_owned()
        } else {
            flood_source(&sources)
        };
        let answer = http
            .get(format!("http://{addr}/auth/nonce"))
            .header("x-forwarded-for", &source)
            .send()
            .await;
        match answer {
            Ok(response) => tally.count(format!("nonce: {}", response.status().as_u16())),
            Err(_) => tally.count("nonce: request failed"),
        }
    }
}

/// A signed dataset header on chain D's tip announcing [`SLOW_UPLOAD_BYTES`] (never sent
/// whole).
fn slow_upload_head(node: &Node, key: &AuthorKey, attempt: u64) -> Vec<u8> {
    let chain = node.chain().unwrap();
    let tip = chain.tip(ChainId::Dataset);
    let parent = chain.header(&tip.hash).unwrap().unwrap();
    let mut header =
        BlockHeader::new_child(&tip, BlockKind::DatasetEntry, b"", parent.timestamp_ms + 1);
    header.payload_bytes = SLOW_UPLOAD_BYTES;
    // A new block each attempt: the node refuses a block it is already receiving.
    let mut hash = [7; 32];
    hash[..8].copy_from_slice(&attempt.to_le_bytes());
    header.payload_hash = PayloadHash(hash);
    header.author = key.address();
    header.sign(key);
    encode_block(&header, &[])
}

async fn slow_uploader(
    http: reqwest::Client,
    addr: SocketAddr,
    node: Arc<Node>,
    stop: Arc<AtomicBool>,
    tally: Arc<FloodTally>,
) {
    let key = AuthorKey::generate();
    let mut attempt = 0_u64;
    while !stop.load(Ordering::Relaxed) {
        attempt += 1;
        let head = axum::body::Bytes::from(slow_upload_head(&node, &key, attempt));
        let trickle_stop = Arc::clone(&stop);
        let pieces = futures::stream::unfold(Some(head), move |head| {
            let stop = Arc::clone(&trickle_stop);
            async move {
                if let Some(head) = head {
                    return Some((Ok::<_, std::io::Error>(head), None));
                }
                tokio::time::sleep(SLOW_UPLOAD_PAUSE).await;
                if stop.load(Ordering::Relaxed) {
                    return Some((Err(std::io::Error::other("the bench is over")), None));
                }
                Some((
                    Ok(axum::body::Bytes::from(vec![0_u8; SLOW_UPLOAD_PIECE_BYTES])),
                    None,
                ))
            }
        });
        let answer = http
            .post(format!("http://{addr}/blocks"))
            .header("content-type", "application/octet-stream")
            .header("x-forwarded-for", "172.16.1.1")
            .body(reqwest::Body::wrap_stream(pieces))
            .send()
            .await;
        match answer {
            Ok(response) => {
                tally.count(format!("slow upload: {}", response.status().as_u16()));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(_) => tally.count("slow upload: cut"),
        }
    }
}

/// Which parts of the flood run (`BLYAN_BENCH_FLOOD`, a comma-separated list of `free`,
/// `uploads` and `nonces`; all three by default), and how fast the free-chat and nonce
/// flooders send (`BLYAN_BENCH_FLOOD_RPS` requests per second each; 0: as fast as they can).
struct FloodParts {
    free: bool,
    uploads: bool,
    nonces: bool,
    rps: u64,
}

impl FloodParts {
    fn from_env() -> FloodParts {
        let list =
            std::env::var("BLYAN_BENCH_FLOOD").unwrap_or_else(|_| "free,uploads,nonces".to_owned());
        let parts: Vec<&str> = list.split(',').map(str::trim).collect();
        for part in &parts {
            assert!(
                ["free", "uploads", "nonces"].contains(part),
                "BLYAN_BENCH_FLOOD: {part:?} is not free, uploads or nonces"
            );
        }
        FloodParts {
            free: parts.contains(&"free"),
            uploads: parts.contains(&"uploads"),
            nonces: parts.contains(&"nonces"),
            rps: env_number("BLYAN_BENCH_FLOOD_RPS", 200),
        }
    }

    /// How often one of `flooders` tasks sends, for the set rate.
    fn period(&self, flooders: usize) -> Duration {
        if self.rps == 0 {
            return Duration::ZERO;
        }
        Duration::from_secs(1).mul_f64(flooders as f64 / self.rps as f64)
    }
}

/// Starts the free-chat and nonce floods of `parts`; they run until `stop`.
fn start_request_flood(
    http: &reqwest::Client,
    addr: SocketAddr,
    parts: &FloodParts,
    stop: &Arc<AtomicBool>,
    tally: &Arc<FloodTally>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let sources = Arc::new(AtomicU64::new(1));
    let mut tasks = Vec::new();
    for _ in 0..FREE_FLOODERS * usize::from(parts.free) {
        tasks.push(tokio::spawn(free_flooder(
            http.clone(),
            addr,
            Arc::clone(&sources),
            Arc::clone(stop),
            Arc::clone(tally),
            parts.period(FREE_FLOODERS),
        )));
    }
    for index in 0..NONCE_FLOODERS * usize::from(parts.nonces) {
        tasks.push(tokio::spawn(nonce_flooder(
            http.clone(),
            addr,
            Arc::clone(&sources),
            Arc::clone(stop),
            Arc::clone(tally),
            index == 0,
            parts.period(NONCE_FLOODERS),
        )));
    }
    tasks
}

/// Starts the slow uploads (when `parts` has them); they run until `stop`.
fn start_slow_uploads(
    http: &reqwest::Client,
    addr: SocketAddr,
    node: &Arc<Node>,
    parts: &FloodParts,
    stop: &Arc<AtomicBool>,
    tally: &Arc<FloodTally>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut tasks = Vec::new();
    for _ in 0..SLOW_UPLOADS * usize::from(parts.uploads) {
        tasks.push(tokio::spawn(slow_uploader(
            http.clone(),
            addr,
            Arc::clone(node),
            Arc::clone(stop),
            Arc::clone(tally),
        )));
    }
    tasks
}

/// The environment variable naming the node a flood process floods; set, the bench is that
/// process.
const FLOOD_ADDR_VAR: &str = "BLYAN_BENCH_FLOOD_ADDR";

/// The flood process: floods the node at [`FLOOD_ADDR_VAR`] with the free-chat and nonce parts
/// of [`FloodParts::from_env`] until its standard input closes, then prints what the flood got
/// on standard output, one `what<TAB>count` line each.
fn flood_process(addr: &str) {
    let addr: SocketAddr = addr.parse().unwrap();
    let parts = FloodParts::from_env();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("flood")
        .enable_all()
        .build()
        .unwrap();
    let tally = Arc::new(FloodTally::default());
    let started = Instant::now();
    runtime.block_on(async {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let tasks = start_request_flood(&http, addr, &parts, &stop, &tally);
        tokio::task::spawn_blocking(|| {
            std::io::copy(&mut std::io::stdin(), &mut std::io::sink()).unwrap();
        })
        .await
        .unwrap();
        stop.store(true, Ordering::Relaxed);
        for task in tasks {
            task.await.unwrap();
        }
    });
    println!("{FLOOD_MS}\t{}", started.elapsed().as_millis());
    for (what, count) in tally.0.lock().unwrap().iter() {
        println!("{what}\t{count}");
    }
}

/// The line of the flood process's report that says how long it flooded.
const FLOOD_MS: &str = "flood ms";

/// The flood process, started (at `BLYAN_BENCH_FLOOD_NICE`, default 4, added to this
/// process's niceness: on one machine the attacker's clients would otherwise take the node's
/// CPU, as they would not from their own machines); closing its input stops it.
struct FloodProcess(std::process::Child);

impl FloodProcess {
    fn start(addr: SocketAddr) -> FloodProcess {
        let nice = env_number("BLYAN_BENCH_FLOOD_NICE", 4);
        let child = std::process::Command::new("nice")
            .arg("-n")
            .arg(nice.to_string())
            .arg(std::env::current_exe().unwrap())
            .env(FLOOD_ADDR_VAR, addr.to_string())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .expect("the flood process starts (`nice` on the PATH)");
        FloodProcess(child)
    }

    /// Stops the flood and adds what it got to `tally`: how long it flooded.
    fn stop(mut self, tally: &FloodTally) -> Duration {
        drop(self.0.stdin.take());
        let output = self.0.wait_with_output().unwrap();
        assert!(output.status.success(), "the flood process failed");
        let mut flooded = Duration::ZERO;
        for line in String::from_utf8(output.stdout).unwrap().lines() {
            let (what, count) = line.split_once('\t').unwrap();
            let count = count.parse::<u64>().unwrap();
            if what == FLOOD_MS {
                flooded = Duration::from_millis(count);
            } else {
                *tally.0.lock().unwrap().entry(what.to_owned()).or_default() += count;
            }
        }
        flooded
    }
}

fn percentile(sorted: &[f64], fraction: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

fn summary(name: &str, report: &mut PaidReport) -> (f64, f64) {
    report.first_token_ms.sort_by(f64::total_cmp);
    let (p50, p99) = (
        percentile(&report.first_token_ms, 0.50),
        percentile(&report.first_token_ms, 0.99),
    );
    let errors: u64 = report.errors.values().sum();
    println!(
        "{name:>9}: {} paid requests, {errors} failed, {} answered with no text; first token p50 {p50:.1} ms, p99 {p99:.1} ms, max {:.1} ms",
        report.requests,
        report.empty,
        report.first_token_ms.last().copied().unwrap_or(f64::NAN),
    );
    for (why, count) in &report.errors {
        println!("           paid failure {why}: {count}");
    }
    (p50, p99)
}

fn main() {
    if let Ok(addr) = std::env::var(FLOOD_ADDR_VAR) {
        flood_process(&addr);
        return;
    }
    let seconds = env_number("BLYAN_BENCH_SECONDS", 60);
    let streams = env_number("BLYAN_BENCH_PAID_STREAMS", 4);
    let interval = Duration::from_millis(env_number("BLYAN_BENCH_PAID_INTERVAL_MS", 1500));
    assert!((1..=64).contains(&streams), "1 ..= 64 paid streams");
    let parts = FloodParts::from_env();
    let served = serve_node();
    let (addr, node) = (served.addr, Arc::clone(&served.node));
    let clients = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("clients")
        .enable_all()
        .build()
        .unwrap();
    clients.block_on(async move {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()
            .unwrap();
        let ledger = node.ledger().unwrap();
        let mut tokens = Vec::new();
        let mut wallets = Vec::new();
        for index in 0..streams {
            let wallet = Wallet::new(0x80 + u8::try_from(index).unwrap());
            ledger
                .transfer(TransferRequest {
                    key: IdempotencyKey::new(format!("fund-{}", wallet.address)).unwrap(),
                    from: SystemAccount::Treasury.into(),
                    to: AccountId::User(wallet.address.parse().unwrap()),
                    amount: "1000".parse::<Amount>().unwrap(),
                    memo: "hostile bench".into(),
                })
                .await
                .unwrap();
            let source = format!("192.168.0.{}", index + 1);
            let token = wallet.sign_in(&http, addr, &source).await;
            tokens.push((source, token));
            wallets.push(wallet);
        }
        // Warm the expert cache and the connection pool before measuring.
        paid_phase(&http, addr, &tokens, 2, interval).await;
        println!(
            "hostile: {streams} paid streams, a {PAID_CHAT_TOKENS}-token chat each every {} ms, {seconds} s per phase; flood: free {}, uploads {}, nonces {}, {}",
            interval.as_millis(),
            parts.free,
            parts.uploads,
            parts.nonces,
            match parts.rps {
                0 => "free chats and nonces as fast as the flooders go".to_owned(),
                rps => format!("{rps} free chats/s and {rps} nonces/s"),
            }
        );
        let mut baseline = paid_phase(&http, addr, &tokens, seconds, interval).await;
        let stop = Arc::new(AtomicBool::new(false));
        let tally = Arc::new(FloodTally::default());
        let flood_process = (parts.free || parts.nonces).then(|| FloodProcess::start(addr));
        let uploads = start_slow_uploads(&http, addr, &node, &parts, &stop, &tally);
        // Let the flood fill the pools before measuring.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let mut flooded = paid_phase(&http, addr, &tokens, seconds, interval).await;
        stop.store(true, Ordering::Relaxed);
        let flood_seconds = flood_process
            .map_or(Duration::ZERO, |process| process.stop(&tally))
            .as_secs_f64();
        for task in uploads {
            task.await.unwrap();
        }
        let (_, baseline_p99) = summary("baseline", &mut baseline);
        let (_, flooded_p99) = summary("flooded", &mut flooded);
        let ratio = flooded_p99 / baseline_p99;
        println!(
            "  p99 ratio: {ratio:.2}x (goal <= 1.5x: {})",
            if ratio <= 1.5 { "met" } else { "missed" }
        );
        println!(
            "  free tier: {FREE_FLOODERS} flooders; slow uploads: {SLOW_UPLOADS}; nonce flooders: {NONCE_FLOODERS}"
        );
        let (mut free_chats, mut nonces) = (0, 0);
        for (what, count) in tally.0.lock().unwrap().iter() {
            println!("    {what}: {count}");
            if what.starts_with("free chat:") {
                free_chats += count;
            } else if what.starts_with("nonce:") {
                nonces += count;
            }
        }
        println!(
            "  the flood process sent, over its {flood_seconds:.1} s: {:.0} free chats/s, {:.0} nonce requests/s (offered: {})",
            free_chats as f64 / flood_seconds,
            nonces as f64 / flood_seconds,
            match parts.rps {
                0 => "as fast as they go".to_owned(),
                rps => format!("{rps}/s each"),
            }
        );
        // Every paid chat ended with its `done` event, so every hold was settled; an open hold
        // would stay in the fee escrow and in its wallet's held balance.
        let escrow = ledger
            .balance(SystemAccount::FeeEscrow.into())
            .await
            .unwrap();
        let mut held = Amount::ZERO;
        for wallet in &wallets {
            let balance = ledger
                .balance(AccountId::User(wallet.address.parse().unwrap()))
                .await
                .unwrap();
            held = held.checked_add(balance.held).unwrap();
        }
        ledger.verify_integrity().await.unwrap();
        println!(
            "  holds left: fee escrow {} BLY, wallets held {held} BLY (goal 0); ledger integrity verified",
            escrow.available
        );
        let errors: u64 = baseline.errors.values().chain(flooded.errors.values()).sum();
        println!("  paid errors: {errors} (goal 0)");
    });
    if let Some(stop) = served.stop {
        let _ = stop.send(());
    }
    served.runtime.shutdown_timeout(Duration::from_secs(5));
}
