//! Nodes joined into a network: a node that starts with only the shipped model and one
//! bootstrap peer syncs that peer's chain, serves the same model and generates the same tokens.

use std::sync::Arc;
use std::time::{Duration, Instant};

use blyan_chain::{AuthorKey, ChainId};
use blyan_moe::{CancelToken, SamplingParams};
use blyan_node_core::{NetworkService, Node, NodeConfig, Services};
use blyan_pol::PolMode;
use tokio::sync::oneshot;

use crate::fine_tune::{docs_paragraphs, fine_tune};
use crate::support::{TestNode, node_with};

/// A node of a loopback network in `pow` mode (blocks served as they land: the network is
/// what is tested here, Proof-of-Learning has its own tests), joined through `bootstrap`.
fn network_config(config: &mut NodeConfig, bootstrap: Vec<String>) {
    config.pol.mode = PolMode::Pow;
    config.p2p.enabled = true;
    config.p2p.listen = vec![
        "/ip4/127.0.0.1/udp/0/quic-v1".into(),
        "/ip4/127.0.0.1/tcp/0".into(),
    ];
    config.p2p.bootstrap = bootstrap;
}

/// Runs the network service on `node` until the returned sender fires (or is dropped).
async fn join(node: &Arc<Node>) -> oneshot::Sender<()> {
    let (stop, stopped) = oneshot::channel::<()>();
    let mut services = Services::new(Arc::clone(node));
    services.spawn(NetworkService);
    tokio::spawn(services.run_until(async {
        let _ = stopped.await;
    }));
    wait_for("the network to start", || node.network().is_some()).await;
    stop
}

async fn wait_for(what: &str, mut condition: impl FnMut() -> bool) {
    let start = Instant::now();
    while !condition() {
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "{what}: not within 90 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn greedy(node: &Node, prompt: &'static str) -> Vec<u32> {
    let generator = node.generator().expect("the node serves a model");
    tokio::task::spawn_blocking(move || {
        generator
            .generate(prompt, SamplingParams::greedy(24), CancelToken::new())
            .expect("generates")
            .token_ids
    })
    .await
    .unwrap()
}

fn tcp_address(node: &Node) -> String {
    node.network()
        .unwrap()
        .listen_addresses()
        .iter()
        .map(ToString::to_string)
        .find(|address| address.contains("/tcp/"))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_joining_through_one_sync_its_chain_and_generate_the_same_tokens() {
    let a: TestNode = node_with(|config| network_config(config, Vec::new()), true).await;
    // A's chain moves past the shipped model: a fine-tuned expert, served (pow mode).
    let author = AuthorKey::generate();
    let expert = "layer0.expert0".parse().unwrap();
    let chain_a = Arc::clone(a.node.chain().unwrap());
    let written = tokio::task::spawn_blocking(move || {
        fine_tune(
            &chain_a,
            &author,
            vec![expert],
            &docs_paragraphs(),
            12,
            1e-2,
        )
    })
    .await
    .unwrap();
    assert_eq!(written.len(), 1);
    a.node.reload_model().await;
    let _a_network = join(&a.node).await;

    let bootstrap = vec![tcp_address(&a.node)];
    let b = node_with(|config| network_config(config, bootstrap.clone()), true).await;
    let c = node_with(|config| network_config(config, bootstrap.clone()), true).await;
    let _b_network = join(&b.node).await;
    let _c_network = join(&c.node).await;
    let tips = |node: &Node| {
        let chain = node.chain().unwrap();
        ChainId::ALL.map(|id| chain.tip(id))
    };
    wait_for("B and C reach A's tips", || {
        tips(&b.node) == tips(&a.node) && tips(&c.node) == tips(&a.node)
    })
    .await;
    for node in [&b.node, &c.node] {
        let current = node
            .chain()
            .unwrap()
            .expert_current(expert)
            .unwrap()
            .unwrap();
        assert_eq!(
            current.hash, written[0],
            "the fine-tuned version is current"
        );
    }
    // The synced expert block made B and C drop the shipped version from their caches; give
    // their reactions a moment (they run as the blocks land).
    tokio::time::sleep(Duration::from_millis(500)).await;
    let prompt = "The chain stores every expert";
    let on_a = greedy(&a.node, prompt).await;
    assert_eq!(greedy(&b.node, prompt).await, on_a);
    assert_eq!(greedy(&c.node, prompt).await, on_a);

    // A block appended on A afterwards reaches B and C by gossip.
    let chain_a = Arc::clone(a.node.chain().unwrap());
    let key = AuthorKey::generate();
    let entry = tokio::task::spawn_blocking(move || {
        let tip = chain_a.tip(ChainId::Dataset);
        let payload = b"a sample of text for the dataset chain".to_vec();
        let timestamp = chain_a.header(&tip.hash).unwrap().unwrap().timestamp_ms + 1;
        let mut header = blyan_chain::BlockHeader::new_child(
            &tip,
            blyan_chain::BlockKind::DatasetEntry,
            &payload,
            timestamp,
        );
        header.sign(&key);
        chain_a.append(&header, &payload).unwrap()
    })
    .await
    .unwrap();
    wait_for("the new block reaches B and C", || {
        b.node.chain().unwrap().contains(&entry).unwrap()
            && c.node.chain().unwrap().contains(&entry).unwrap()
    })
    .await;
    let peers = b.node.network_peers().await.unwrap();
    assert!(peers.enabled);
    assert!(peers.stats.blocks_synced >= 2, "{:?}", peers.stats);
    assert!(peers.peers.iter().any(|peer| peer.connected));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_node_serving_no_experts_generates_with_its_peers_experts_the_same_tokens() {
    // B computes every expert; A computes none and calls B for each layer.
    let b = node_with(
        |config| {
            network_config(config, Vec::new());
            config.p2p.listen = vec!["/ip4/127.0.0.1/udp/0/quic-v1".into()];
        },
        true,
    )
    .await;
    let _b_network = join(&b.node).await;
    let quic = b
        .node
        .network()
        .unwrap()
        .listen_addresses()
        .iter()
        .map(ToString::to_string)
        .find(|address| address.contains("quic-v1"))
        .unwrap();
    let a = node_with(
        |config| {
            network_config(config, vec![quic.clone()]);
            config.p2p.listen = vec!["/ip4/127.0.0.1/udp/0/quic-v1".into()];
            config.p2p.serve_experts = Vec::new();
            config.p2p.remote_experts = true;
        },
        true,
    )
    .await;
    let _a_network = join(&a.node).await;
    wait_for("A connects to B", || {
        a.node
            .network_peers_now()
            .is_some_and(|connected| connected > 0)
    })
    .await;
    let prompt = "Experts of the chain";
    let local = greedy(&b.node, prompt).await;
    // Provider records take a moment to spread: retry until A's calls find B.
    let start = Instant::now();
    let remote = loop {
        let generator = a.node.generator().unwrap();
        let attempt = tokio::task::spawn_blocking(move || {
            generator.generate(prompt, SamplingParams::greedy(24), CancelToken::new())
        })
        .await
        .unwrap();
        match attempt {
            Ok(generation) => break generation.token_ids,
            Err(error) => {
                assert!(start.elapsed() < Duration::from_secs(90), "{error}");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        }
    };
    assert_eq!(remote, local, "every expert computed on B, the same tokens");
    let snapshot = a.node.network_experts().unwrap();
    assert!(snapshot.calls > 0, "A called B: {snapshot:?}");
    assert!(snapshot.serving.is_empty(), "A serves nothing");
    assert!(!b.node.network_experts().unwrap().serving.is_empty());
}
