//! Payload sync between real nodes on loopback against a raw loopback TCP copy of the same bytes,
//! in one run (issue 15's goal: sync ≥ 0.6× the raw copy).
//!
//! - **Sync** (`sync/tcp`, `sync/quic`): node A holds one dataset entry (chain D) whose payload
//!   is `BLYAN_BENCH_SYNC_MB` MiB (default 64). Each iteration opens a fresh store for node B
//!   (default `StoreConfig`, as a node: durable appends), then times B's whole path through
//!   [`blyan_p2p::Network`]: start, dial A (its TCP or its QUIC address), status and headers,
//!   the payload fetched as blake3-verified ranges into a staging file (fsynced), adopted as a
//!   payload segment by `append_staged`, until B reports the block appended.
//! - **Two holders** (`sync/tcp-2-holders`): the same with A2 holding the same block too and B
//!   bootstrapping from both; the bytes each holder served are printed.
//! - **Baseline** (`raw/tcp`): a plain tokio `TcpStream` connect, `write_all` of the same bytes
//!   from memory, the reader `read_exact` into a buffer allocated once.
//! - **Disk floor** (`raw/tcp-to-file`): the same copy streamed into a new file 4 MiB at a time,
//!   then fsynced, as a durable download must be (sync's staging file is fsynced too).
//!
//! Every variant runs the same number of timed iterations (criterion's flat sampling with one
//! iteration per sample: 10 samples after one warm-up iteration; criterion warns that the
//! samples do not fit its 1 ms target, which is what makes them one iteration each). At the end
//! the median MB/s of each and the sync/raw ratios are printed.
//!
//! Run (with the test build's dependencies, blyan-p2p itself optimised; see benches/README.md):
//!
//! ```sh
//! source scripts/env.sh
//! cargo bench -p blyan-p2p --profile test \
//!   --config 'profile.test.package.blyan-p2p.opt-level=3' \
//!   --config 'profile.test.package.blyan-chain.opt-level=3' --bench sync
//! ```
//!
//! `cargo bench -p blyan-p2p --bench sync` measures the release profile instead (its first
//! build compiles RocksDB again). `RUST_LOG=blyan_p2p=debug` logs each fetch's own timing.
// criterion_group! generates a public function no doc comment can reach.
#![allow(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use blyan_chain::{
    AuthorKey, BlockHash, BlockHeader, BlockKind, ChainId, ChainStore, Durability,
    GENESIS_TIMESTAMP_MS, GenesisSpec, StoreConfig,
};
use blyan_p2p::{Multiaddr, Network, NetworkConfig};
use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::runtime::Runtime;

const PAYLOAD_MIB_DEFAULT: u64 = 64;
/// How long one sync may take before the bench gives up (a liveness bound, not a speed claim).
const SYNC_DEADLINE: Duration = Duration::from_secs(300);
/// Timed iterations per variant (criterion's minimum sample count).
const SAMPLES: usize = 10;
/// Bytes the raw copy to a file reads before each write (a fetch request's size).
const RAW_FILE_CHUNK: usize = 4 << 20;

fn payload_bytes() -> usize {
    let mib = std::env::var("BLYAN_BENCH_SYNC_MB")
        .ok()
        .map(|value| {
            value
                .parse::<u64>()
                .expect("BLYAN_BENCH_SYNC_MB is a whole number of MiB")
        })
        .unwrap_or(PAYLOAD_MIB_DEFAULT);
    assert!(mib > 0, "BLYAN_BENCH_SYNC_MB must be positive");
    (mib << 20) as usize
}

/// Deterministic bytes that do not compress (xorshift64).
fn payload(len: usize) -> Vec<u8> {
    let mut state: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut bytes = Vec::with_capacity(len + 8);
    while bytes.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(len);
    bytes
}

/// A holder's store: unsynced (its append is set-up, not measured).
fn holder_store_config() -> StoreConfig {
    StoreConfig {
        durability: Durability::Unsynced,
        ..StoreConfig::default()
    }
}

fn network_config(bootstrap: Vec<Multiaddr>) -> NetworkConfig {
    NetworkConfig {
        listen: vec![
            "/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap(),
            "/ip4/127.0.0.1/tcp/0".parse().unwrap(),
        ],
        bootstrap,
        sync_interval: Duration::from_secs(3600),
        ..NetworkConfig::default()
    }
}

struct Holder {
    _dir: tempfile::TempDir,
    net: Network,
}

impl Holder {
    async fn start(header: &BlockHeader, bytes: &[u8]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let chain = Arc::new(
            ChainStore::open_with(
                dir.path(),
                holder_store_config(),
                &GenesisSpec::shipped(),
                None,
            )
            .unwrap(),
        );
        chain.append(header, bytes).unwrap();
        let net = Network::start(network_config(Vec::new()), &AuthorKey::generate(), chain)
            .await
            .unwrap();
        Self { _dir: dir, net }
    }

    fn address(&self, transport: &str) -> Multiaddr {
        self.net
            .handle()
            .listen_addresses()
            .into_iter()
            .find(|address| address.to_string().contains(transport))
            .unwrap_or_else(|| panic!("the holder listens on {transport}"))
    }

    fn bytes_out(&self) -> u64 {
        self.net.handle().stats().bytes_out.load(Ordering::Relaxed)
    }
}

/// One signed dataset entry on chain D's genesis carrying `bytes`.
fn entry(bytes: &[u8]) -> BlockHeader {
    let dir = tempfile::tempdir().unwrap();
    let store = ChainStore::open_with(
        dir.path(),
        holder_store_config(),
        &GenesisSpec::shipped(),
        None,
    )
    .unwrap();
    let tip = store.tip(ChainId::Dataset);
    let mut header = BlockHeader::new_child(
        &tip,
        BlockKind::DatasetEntry,
        bytes,
        GENESIS_TIMESTAMP_MS + 86_400_000,
    );
    header.sign(&AuthorKey::generate());
    header
}

/// A fresh node B bootstrapping from `bootstrap` until it appends `block`: the time from its
/// start (store already open) to the block stored.
async fn sync_once(bootstrap: Vec<Multiaddr>, block: BlockHash) -> Duration {
    let dir = tempfile::tempdir().unwrap();
    let chain = Arc::new(
        ChainStore::open_with(
            dir.path(),
            StoreConfig::default(),
            &GenesisSpec::shipped(),
            None,
        )
        .unwrap(),
    );
    let key = AuthorKey::generate();
    let started = Instant::now();
    let mut net = Network::start(network_config(bootstrap), &key, Arc::clone(&chain))
        .await
        .unwrap();
    tokio::time::timeout(SYNC_DEADLINE, async {
        while let Some(appended) = net.next_appended().await {
            if appended.block == block {
                return;
            }
        }
        panic!("B's network stopped before the block arrived");
    })
    .await
    .expect("B synced the block within the deadline");
    let elapsed = started.elapsed();
    assert!(chain.contains(&block).unwrap());
    net.stop().await;
    elapsed
}

/// Serves `bytes` whole to every connection.
async fn raw_server(bytes: Arc<Vec<u8>>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            let bytes = Arc::clone(&bytes);
            tokio::spawn(async move {
                stream.write_all(&bytes).await.unwrap();
                stream.shutdown().await.unwrap();
            });
        }
    });
    address
}

async fn raw_once(address: std::net::SocketAddr, buffer: &mut [u8]) -> Duration {
    let started = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    stream.read_exact(buffer).await.unwrap();
    started.elapsed()
}

/// The raw copy streamed into a new file in `dir`, `RAW_FILE_CHUNK` bytes at a time, then
/// fsynced: what the disk allows a durable download.
async fn raw_to_file_once(
    address: std::net::SocketAddr,
    buffer: &mut [u8],
    dir: &std::path::Path,
) -> Duration {
    let path = dir.join("raw-copy");
    let started = Instant::now();
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let mut file = tokio::fs::File::create(&path).await.unwrap();
    for chunk in buffer.chunks_mut(RAW_FILE_CHUNK) {
        stream.read_exact(chunk).await.unwrap();
        file.write_all(chunk).await.unwrap();
    }
    file.sync_all().await.unwrap();
    let elapsed = started.elapsed();
    drop(file);
    tokio::fs::remove_file(&path).await.unwrap();
    elapsed
}

/// Per-iteration times of each variant, the warm-up's first.
#[derive(Default)]
struct Times(Mutex<Vec<(&'static str, Vec<Duration>)>>);

impl Times {
    fn record(&self, variant: &'static str, time: Duration) {
        let mut all = self.0.lock().unwrap();
        match all.iter_mut().find(|(name, _)| *name == variant) {
            Some((_, times)) => times.push(time),
            None => all.push((variant, vec![time])),
        }
    }

    /// The median MB/s of `variant`'s timed iterations (the warm-up's left out) and their count.
    fn median_mb_s(&self, variant: &str, bytes: usize) -> Option<(f64, usize)> {
        let all = self.0.lock().unwrap();
        let (_, times) = all.iter().find(|(name, _)| *name == variant)?;
        let mut timed: Vec<Duration> = times.iter().skip(1).copied().collect();
        if timed.is_empty() {
            return None;
        }
        timed.sort();
        let median = timed[timed.len() / 2];
        Some((bytes as f64 / 1e6 / median.as_secs_f64(), timed.len()))
    }
}

fn bench_sync(c: &mut Criterion) {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .try_init();
    }
    let runtime = Runtime::new().unwrap();
    let size = payload_bytes();
    let bytes = Arc::new(payload(size));
    let header = entry(&bytes);
    let block = header.hash();
    let (a, a2) = runtime.block_on(async {
        (
            Holder::start(&header, &bytes).await,
            Holder::start(&header, &bytes).await,
        )
    });
    let raw_address = runtime.block_on(raw_server(Arc::clone(&bytes)));
    let mut buffer = vec![0u8; size];
    let times = Times::default();

    let mut group = c.benchmark_group("sync");
    group
        .sample_size(SAMPLES)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_millis(1))
        .throughput(Throughput::Bytes(size as u64));
    let variants: [(&'static str, Vec<Multiaddr>); 3] = [
        ("tcp", vec![a.address("/tcp/")]),
        ("quic", vec![a.address("/quic-v1")]),
        (
            "tcp-2-holders",
            vec![a.address("/tcp/"), a2.address("/tcp/")],
        ),
    ];
    let mut served = Vec::new();
    for (name, bootstrap) in variants {
        let before = (a.bytes_out(), a2.bytes_out());
        group.bench_function(name, |bencher| {
            bencher.iter_custom(|iterations| {
                runtime.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iterations {
                        let time = sync_once(bootstrap.clone(), block).await;
                        times.record(name, time);
                        total += time;
                    }
                    total
                })
            })
        });
        served.push((name, a.bytes_out() - before.0, a2.bytes_out() - before.1));
    }
    group.finish();

    let mut group = c.benchmark_group("raw");
    group
        .sample_size(SAMPLES)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_millis(1))
        .measurement_time(Duration::from_millis(1))
        .throughput(Throughput::Bytes(size as u64));
    group.bench_function("tcp", |bencher| {
        bencher.iter_custom(|iterations| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    let time = raw_once(raw_address, &mut buffer).await;
                    times.record("raw", time);
                    total += time;
                }
                total
            })
        })
    });
    let file_dir = tempfile::tempdir().unwrap();
    group.bench_function("tcp-to-file", |bencher| {
        bencher.iter_custom(|iterations| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iterations {
                    let time = raw_to_file_once(raw_address, &mut buffer, file_dir.path()).await;
                    times.record("raw-to-file", time);
                    total += time;
                }
                total
            })
        })
    });
    group.finish();
    if times.median_mb_s("raw", size).is_some() {
        assert!(buffer[..] == bytes[..], "the raw copy moved the payload");
    }

    let raw = times.median_mb_s("raw", size);
    let raw_to_file = times.median_mb_s("raw-to-file", size);
    let measured = raw.is_some()
        || raw_to_file.is_some()
        || served
            .iter()
            .any(|(name, _, _)| times.median_mb_s(name, size).is_some());
    if !measured {
        // `cargo test --benches` runs each variant once, untimed: nothing to report.
        println!("payload sync: no timed iterations (run with `cargo bench` for figures)");
    } else {
        println!();
        println!(
            "payload sync, {} MiB on loopback, median of the timed iterations:",
            size >> 20
        );
    }
    if let Some((mb_s, count)) = raw {
        println!("  raw TCP copy               {mb_s:8.1} MB/s  ({count} iterations)");
    }
    if let Some((mb_s, count)) = raw_to_file {
        println!("  raw TCP copy, file, fsync  {mb_s:8.1} MB/s  ({count} iterations)");
    }
    for (name, from_a, from_a2) in served {
        if let Some((mb_s, count)) = times.median_mb_s(name, size) {
            let ratio = |baseline: Option<(f64, usize)>| {
                baseline.map_or(f64::NAN, |(baseline, _)| mb_s / baseline)
            };
            println!(
                "  sync {name:<22}{mb_s:8.1} MB/s  ({count} iterations)  {:.2}× raw (goal ≥ 0.6×), \
                 {:.2}× raw to file; served: A {:.0} MB, A2 {:.0} MB",
                ratio(raw),
                ratio(raw_to_file),
                from_a as f64 / 1e6,
                from_a2 as f64 / 1e6,
            );
        }
    }
    runtime.block_on(async {
        a.net.stop().await;
        a2.net.stop().await;
    });
}

criterion_group!(benches, bench_sync);
criterion_main!(benches);
