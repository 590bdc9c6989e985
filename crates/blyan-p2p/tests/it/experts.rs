//! Remote experts on real networks over loopback QUIC: B serves layers 0–1's experts, C and its
//! replica D layers 2–3's, A none; A's generation equals a single-node run token for token and
//! logit for logit, survives C stopping mid-generation, and a call naming a block a holder does
//! not serve is refused with a typed refusal.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blyan_chain::{AuthorKey, ChainStore, ExpertName, GenesisSpec};
use blyan_moe::{
    CancelToken, ExpertUsage, Generator, Logits, ModelOptions, SHIPPED_MODEL_DIR, SamplingParams,
    experts_of, import_shipped_model,
};
use blyan_p2p::experts::ExpertRefusal;
use blyan_p2p::{ExpertOptions, ExpertSelection, Multiaddr, Network, NetworkConfig, NetworkError};

use crate::support::{eventually, open_store};

const PROMPT: &str = "the chain holds the experts";
const TOKENS: u32 = 24;

struct ExpertNode {
    _dir: tempfile::TempDir,
    chain: Arc<ChainStore>,
    net: Option<Network>,
}

impl ExpertNode {
    fn net(&self) -> &Network {
        self.net.as_ref().expect("the node runs")
    }

    fn quic(&self) -> Multiaddr {
        self.net()
            .handle()
            .listen_addresses()
            .into_iter()
            .find(|address| address.to_string().contains("/quic-v1"))
            .expect("the node listens on QUIC")
    }

    fn generator(&self) -> Generator {
        Generator::from_chain(Arc::clone(&self.chain), ModelOptions::default()).unwrap()
    }
}

/// The refusal of a refused call.
fn refusal(error: &NetworkError) -> &ExpertRefusal {
    match error {
        NetworkError::ExpertRefused { refusal, .. } => refusal,
        other => panic!("not a refusal: {other}"),
    }
}

/// A store holding the shipped model.
fn model_store(dir: &Path) -> Arc<ChainStore> {
    let chain = open_store(dir, &GenesisSpec::shipped());
    import_shipped_model(&chain, Path::new(SHIPPED_MODEL_DIR)).expect("the shipped model imports");
    chain
}

/// A node serving `serve` (patterns), QUIC only (expert streams avoid yamux), bootstrapping
/// from `bootstrap`.
async fn start(serve: &[&str], bootstrap: Vec<Multiaddr>) -> ExpertNode {
    let dir = tempfile::tempdir().unwrap();
    let chain = model_store(dir.path());
    let config = NetworkConfig {
        listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()],
        bootstrap,
        sync_interval: Duration::from_secs(3600),
        announce_interval: Duration::from_millis(50),
        serve_experts: ExpertSelection::parse(serve).unwrap(),
        experts: ExpertOptions {
            announce_interval: Duration::from_millis(300),
            providers_ttl: Duration::from_secs(2),
            ..ExpertOptions::default()
        },
        ..NetworkConfig::default()
    };
    let net = Network::start(config, &AuthorKey::generate(), Arc::clone(&chain))
        .await
        .expect("the network starts");
    ExpertNode {
        _dir: dir,
        chain,
        net: Some(net),
    }
}

/// Waits until `node` finds `holders` holders of every expert of `layers`.
async fn wait_for_holders(node: &ExpertNode, layers: std::ops::Range<u32>, holders: usize) {
    let client = Arc::clone(node.net().experts());
    let config = node.generator().info().config.clone();
    let experts: Vec<ExpertName> = experts_of(&config)
        .into_iter()
        .filter(|expert| layers.contains(&expert.layer()))
        .collect();
    eventually("every remote expert has its holders", || {
        let client = Arc::clone(&client);
        let experts = experts.clone();
        async move {
            for expert in experts {
                let block = client.current_block(expert).unwrap();
                if client.holders(block).await.unwrap().len() < holders {
                    return false;
                }
            }
            true
        }
    })
    .await;
}

/// Greedy tokens and the time they took, on a blocking thread.
async fn generate(generator: &Generator) -> (Vec<u32>, Duration) {
    let generator = generator.clone();
    tokio::task::spawn_blocking(move || {
        let started = Instant::now();
        let mut params = SamplingParams::greedy(TOKENS);
        params.ignore_eos = true;
        let generation = generator
            .generate(PROMPT, params, CancelToken::new())
            .unwrap();
        (generation.token_ids, started.elapsed())
    })
    .await
    .unwrap()
}

/// Every position's logits for the prompt, as bits.
async fn logits(generator: &Generator) -> Vec<u32> {
    let generator = generator.clone();
    tokio::task::spawn_blocking(move || {
        let ids = generator.tokenizer().encode(PROMPT).unwrap();
        generator
            .with_model(|model| {
                let mut cache = model.new_kv_cache();
                let mut usage = ExpertUsage::new(model.config());
                let logits = model
                    .forward(&ids, &mut cache, &mut usage, Logits::All)
                    .unwrap();
                Vec::<f32>::try_from(logits.flatten(0, -1))
                    .unwrap()
                    .into_iter()
                    .map(f32::to_bits)
                    .collect()
            })
            .unwrap()
    })
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_expert_remote_gives_the_local_run_and_survives_a_holder_stopping() {
    let b = start(&["layer0-1.*"], Vec::new()).await;
    let mut c = start(&["layer2-3.*"], Vec::new()).await;
    let mut d = start(&["layer2-3.*"], Vec::new()).await;
    let a = start(&[], vec![b.quic(), c.quic(), d.quic()]).await;
    wait_for_holders(&a, 0..2, 1).await;
    wait_for_holders(&a, 2..4, 2).await;

    // The single-node run: A's own model, every expert local.
    let local = a.generator();
    let (expected, local_time) = generate(&local).await;
    let expected_logits = logits(&local).await;

    let remote = a.generator();
    let client = Arc::clone(a.net().experts());
    remote.set_remote_experts(Some(client.clone())).unwrap();
    assert!(
        remote
            .with_model(|model| model.expert_cache().resident().is_empty())
            .unwrap()
    );
    assert_eq!(
        logits(&remote).await,
        expected_logits,
        "logits differ from the local run"
    );
    let (tokens, remote_time) = generate(&remote).await;
    assert_eq!(tokens, expected);
    // No expert weights were loaded on A: every expert came from a peer.
    assert!(
        remote
            .with_model(|model| model.expert_cache().resident().is_empty())
            .unwrap()
    );
    let snapshot = client.snapshot();
    assert!(snapshot.calls > 0 && snapshot.failures == 0, "{snapshot:?}");
    eprintln!(
        "decode, {TOKENS} tokens after the prompt: local {:.1} tokens/s, every expert remote (two peers) {:.1} tokens/s, {:.2} ms more per token",
        f64::from(TOKENS) / local_time.as_secs_f64(),
        f64::from(TOKENS) / remote_time.as_secs_f64(),
        (remote_time.as_secs_f64() - local_time.as_secs_f64()) * 1e3 / f64::from(TOKENS),
    );

    // Stop the holder of layers 2–3 that A tries first (holders are ordered by latency, the
    // same for every block they share), mid-generation; its replica takes over.
    let c_peer = c.net().handle().local_peer();
    let block = client
        .current_block(ExpertName::new(2, 0).unwrap())
        .unwrap();
    let first = client.holders(block).await.unwrap()[0];
    let victim = if first == c_peer { &mut c } else { &mut d };
    // The generation pauses after its fourth token until the holder is stopped.
    let generator = remote.clone();
    let (paused, reached) = tokio::sync::oneshot::channel();
    let (resume, go) = std::sync::mpsc::channel::<()>();
    let running = tokio::task::spawn_blocking(move || {
        let mut params = SamplingParams::greedy(TOKENS);
        params.ignore_eos = true;
        let mut tokens = Vec::new();
        let mut paused = Some(paused);
        for delta in generator
            .stream(PROMPT, params, CancelToken::new())
            .unwrap()
        {
            let delta = delta.map_err(|error| error.to_string())?;
            if let Some(token) = delta.token_id {
                tokens.push(token);
                if tokens.len() == 4
                    && let Some(paused) = paused.take()
                {
                    let _ = paused.send(());
                    let _ = go.recv();
                }
            }
        }
        Ok::<_, String>(tokens)
    });
    reached.await.unwrap();
    victim.net.take().unwrap().stop().await;
    resume.send(()).unwrap();
    let tokens = running.await.unwrap().expect("the generation completes");
    assert_eq!(
        tokens, expected,
        "the generation after the failover differs"
    );
    let snapshot = client.snapshot();
    assert!(snapshot.failovers + snapshot.hedges >= 1, "{snapshot:?}");
    drop((a, b, c, d));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_the_holder_does_not_serve_is_refused_with_a_typed_refusal() {
    let b = start(&["layer0.*"], Vec::new()).await;
    let a = start(&[], vec![b.quic()]).await;
    wait_for_holders(&a, 0..1, 1).await;
    let client = Arc::clone(a.net().experts());
    let b_peer = b.net().handle().local_peer();
    let hidden = a.generator().info().config.hidden_size;
    let zeros = |rows: u32, width: u32| vec![0u8; (rows * width * 4) as usize];

    // Layer 0: served; the answer has the input's shape.
    let served = ExpertName::new(0, 3).unwrap();
    let block = client.current_block(served).unwrap();
    let output = client
        .call(b_peer, block, served, 2, hidden, zeros(2, hidden))
        .await
        .unwrap();
    assert_eq!(output.len(), (2 * hidden * 4) as usize);

    // Layer 1: not served by B.
    let other = ExpertName::new(1, 3).unwrap();
    let block = client.current_block(other).unwrap();
    let error = client
        .call(b_peer, block, other, 1, hidden, zeros(1, hidden))
        .await
        .unwrap_err();
    assert!(
        matches!(&error, NetworkError::ExpertRefused { peer, .. } if *peer == b_peer),
        "{error}"
    );
    assert!(
        matches!(refusal(&error), ExpertRefusal::NotServed { expert, .. } if expert == "layer1.expert3"),
        "{error}"
    );
    // A served block named with another expert is not served either.
    let block = client.current_block(served).unwrap();
    let error = client
        .call(
            b_peer,
            block,
            ExpertName::new(0, 4).unwrap(),
            1,
            hidden,
            zeros(1, hidden),
        )
        .await
        .unwrap_err();
    assert!(
        matches!(refusal(&error), ExpertRefusal::NotServed { .. }),
        "{error}"
    );
    // Rows of the wrong width.
    let error = client
        .call(b_peer, block, served, 1, hidden + 1, zeros(1, hidden + 1))
        .await
        .unwrap_err();
    assert!(
        matches!(refusal(&error), ExpertRefusal::BadInput { .. }),
        "{error}"
    );
    assert_eq!(b.net().experts().snapshot().refused, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hot_remote_expert_is_replicated_and_served_locally_with_the_same_output() {
    let b = start(&["*"], Vec::new()).await;
    let dir = tempfile::tempdir().unwrap();
    let chain = model_store(dir.path());
    let config = NetworkConfig {
        listen: vec!["/ip4/127.0.0.1/udp/0/quic-v1".parse().unwrap()],
        bootstrap: vec![b.quic()],
        sync_interval: Duration::from_secs(3600),
        experts: ExpertOptions {
            announce_interval: Duration::from_millis(300),
            replicate_calls_per_minute: 10,
            ..ExpertOptions::default()
        },
        ..NetworkConfig::default()
    };
    let net = Network::start(config, &AuthorKey::generate(), Arc::clone(&chain))
        .await
        .unwrap();
    let a = ExpertNode {
        _dir: dir,
        chain,
        net: Some(net),
    };
    wait_for_holders(&a, 0..4, 1).await;

    let (expected, _) = generate(&a.generator()).await;
    let remote = a.generator();
    let client = Arc::clone(a.net().experts());
    remote.set_remote_experts(Some(client.clone())).unwrap();
    let (first, _) = generate(&remote).await;
    assert_eq!(first, expected);
    let replicated = client.snapshot().replicated;
    assert!(!replicated.is_empty(), "no expert was replicated");
    // Replicated experts are computed locally from now on, and announced.
    let (second, _) = generate(&remote).await;
    assert_eq!(second, expected);
    // (More may have passed the threshold during the second run.)
    let replicated = client.snapshot().replicated;
    let resident: Vec<String> = remote
        .with_model(|model| model.expert_cache().resident())
        .unwrap()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert!(
        resident.iter().all(|expert| replicated.contains(expert)),
        "{resident:?} loaded locally, {replicated:?} replicated"
    );
    eventually("the replicated experts are served", || {
        let client = Arc::clone(&client);
        let replicated = replicated.clone();
        async move {
            let serving: Vec<String> = client
                .snapshot()
                .serving
                .into_iter()
                .map(|served| served.expert)
                .collect();
            replicated.iter().all(|expert| serving.contains(expert))
        }
    })
    .await;
}
