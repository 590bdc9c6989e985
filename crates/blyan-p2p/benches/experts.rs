//! Decoding with every expert remote against decoding locally, in one run (issue 15's goal:
//! remote ≥ 0.7× local tokens/s).
//!
//! Two sets of three in-process nodes on loopback, one set on QUIC and one on TCP (noise +
//! yamux), each node with its own chain store holding the shipped model: B computes layers
//! 0–1's experts, C layers 2–3's, A none (its model's `RemoteExperts` hook is the network's
//! `ExpertClient`: one call per layer, fanned out to B and C). Each iteration generates `TOKENS`
//! greedy tokens of the same prompt (prefill included) on A's model with the hook
//! (remote-quic, remote-tcp) and on a model of the same store without it (local); one criterion
//! sample (`decode/round`) runs each once, in a rotating order. At the end the median tokens/s of each, the ratios and the overhead per
//! token in milliseconds are printed.
//!
//! ```sh
//! source scripts/env.sh
//! cargo bench -p blyan-p2p --profile test \
//!   --config 'profile.test.package.blyan-p2p.opt-level=3' --bench experts
//! ```
// criterion_group! generates a public function no doc comment can reach.
#![allow(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use blyan_chain::{AuthorKey, ChainStore, Durability, GenesisSpec, StoreConfig};
use blyan_moe::{
    CancelToken, Generator, ModelOptions, RemoteExperts, SHIPPED_MODEL_DIR, SamplingParams,
    experts_of, import_shipped_model,
};
use blyan_p2p::{ExpertOptions, ExpertSelection, Multiaddr, Network, NetworkConfig};
use criterion::{Criterion, SamplingMode, criterion_group, criterion_main};
use tokio::runtime::Runtime;

const PROMPT: &str = "the chain holds the experts";
const TOKENS: u32 = 32;
const SAMPLES: usize = 10;

struct Node {
    _dir: tempfile::TempDir,
    chain: Arc<ChainStore>,
    net: Network,
}

fn model_store(dir: &Path) -> Arc<ChainStore> {
    let config = StoreConfig {
        durability: Durability::Unsynced,
        ..StoreConfig::default()
    };
    let chain = Arc::new(
        ChainStore::open_with(dir, config, &GenesisSpec::shipped(), None).expect("store opens"),
    );
    import_shipped_model(&chain, Path::new(SHIPPED_MODEL_DIR)).expect("the shipped model imports");
    chain
}

async fn start(listen: &str, serve: &[&str], bootstrap: Vec<Multiaddr>) -> Node {
    let dir = tempfile::tempdir().unwrap();
    let chain = model_store(dir.path());
    let config = NetworkConfig {
        listen: vec![listen.parse().unwrap()],
        bootstrap,
        sync_interval: Duration::from_secs(3600),
        serve_experts: ExpertSelection::parse(serve).unwrap(),
        experts: ExpertOptions {
            announce_interval: Duration::from_millis(300),
            ..ExpertOptions::default()
        },
        ..NetworkConfig::default()
    };
    let net = Network::start(config, &AuthorKey::generate(), Arc::clone(&chain))
        .await
        .unwrap();
    Node {
        _dir: dir,
        chain,
        net,
    }
}

fn address(node: &Node) -> Multiaddr {
    node.net.handle().listen_addresses()[0].clone()
}

/// B, C and A listening on `listen`, and A's model with the network's expert client as its
/// hook, once every expert has a holder.
fn remote_set(
    runtime: &Runtime,
    listen: &str,
) -> (Vec<Node>, Generator, Arc<blyan_p2p::ExpertClient>) {
    let nodes = runtime.block_on(async {
        let b = start(listen, &["layer0-1.*"], Vec::new()).await;
        let c = start(listen, &["layer2-3.*"], vec![address(&b)]).await;
        let a = start(listen, &[], vec![address(&b), address(&c)]).await;
        vec![a, b, c]
    });
    let remote =
        Generator::from_chain(Arc::clone(&nodes[0].chain), ModelOptions::default()).unwrap();
    let client = Arc::clone(nodes[0].net.experts());
    remote
        .set_remote_experts(Some(Arc::clone(&client) as Arc<dyn RemoteExperts>))
        .unwrap();
    // Wait until every expert has a holder (announcements spread).
    let config = remote.info().config.clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    runtime.block_on(async {
        for expert in experts_of(&config) {
            let block = client.current_block(expert).unwrap();
            while client.holders(block).await.unwrap().is_empty() {
                assert!(Instant::now() < deadline, "no holder of {expert}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    (nodes, remote, client)
}

fn generate(generator: &Generator) -> Duration {
    let started = Instant::now();
    let mut params = SamplingParams::greedy(TOKENS);
    params.ignore_eos = true;
    let generation = generator
        .generate(PROMPT, params, CancelToken::new())
        .unwrap();
    assert_eq!(generation.token_ids.len(), TOKENS as usize);
    started.elapsed()
}

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn bench(c: &mut Criterion) {
    let runtime = Runtime::new().unwrap();
    let (quic_nodes, remote_quic, quic_client) =
        remote_set(&runtime, "/ip4/127.0.0.1/udp/0/quic-v1");
    let (tcp_nodes, remote_tcp, tcp_client) = remote_set(&runtime, "/ip4/127.0.0.1/tcp/0");
    let local =
        Generator::from_chain(Arc::clone(&quic_nodes[0].chain), ModelOptions::default()).unwrap();
    let params = || {
        let mut params = SamplingParams::greedy(TOKENS);
        params.ignore_eos = true;
        params
    };
    let tokens = |generator: &Generator| {
        generator
            .generate(PROMPT, params(), CancelToken::new())
            .unwrap()
            .token_ids
    };
    let expected = tokens(&local);
    assert_eq!(
        tokens(&remote_quic),
        expected,
        "remote experts change nothing"
    );
    assert_eq!(
        tokens(&remote_tcp),
        expected,
        "remote experts change nothing"
    );

    let times: Arc<Mutex<Vec<(&'static str, Duration)>>> = Arc::default();
    let mut group = c.benchmark_group("decode");
    group.sampling_mode(SamplingMode::Flat);
    group.sample_size(SAMPLES);
    group.warm_up_time(Duration::from_millis(1));
    group.measurement_time(Duration::from_millis(1));
    // One sample is one generation of each variant, in a rotating order, so a change in the
    // machine's load falls on all three alike.
    let variants = [
        ("local", &local),
        ("remote-quic", &remote_quic),
        ("remote-tcp", &remote_tcp),
    ];
    let mut round = 0_usize;
    group.bench_function("round", |bencher| {
        bencher.iter_custom(|iterations| {
            let mut total = Duration::ZERO;
            for _ in 0..iterations {
                for offset in 0..variants.len() {
                    let (name, generator) = variants[(round + offset) % variants.len()];
                    let elapsed = generate(generator);
                    times.lock().unwrap().push((name, elapsed));
                    total += elapsed;
                }
                round += 1;
            }
            total
        })
    });
    group.finish();
    let times = times.lock().unwrap();
    let of = |name: &str| {
        median(
            times
                .iter()
                .filter(|(n, _)| *n == name)
                .map(|(_, t)| *t)
                .collect(),
        )
    };
    let local_time = of("local");
    let per_second = |time: Duration| f64::from(TOKENS) / time.as_secs_f64();
    println!(
        "\ndecode, {TOKENS} greedy tokens with the prompt, median of the timed iterations:\n  \
         local                       {:8.1} tokens/s",
        per_second(local_time),
    );
    for (name, client) in [("remote-quic", &quic_client), ("remote-tcp", &tcp_client)] {
        let remote_time = of(name);
        let snapshot = client.snapshot();
        println!(
            "  every expert remote, {:<5} {:8.1} tokens/s  {:.2}× local (goal ≥ 0.7×), \
             {:.2} ms more per token; {} layer calls, {} expert calls, {} failures, \
             {} failovers, {} hedges",
            name.trim_start_matches("remote-"),
            per_second(remote_time),
            local_time.as_secs_f64() / remote_time.as_secs_f64(),
            (remote_time.as_secs_f64() - local_time.as_secs_f64()) * 1000.0 / f64::from(TOKENS),
            snapshot.layer_calls,
            snapshot.calls,
            snapshot.failures,
            snapshot.failovers,
            snapshot.hedges
        );
    }
    drop((quic_nodes, tcp_nodes));
}

criterion_group!(benches, bench);
criterion_main!(benches);
