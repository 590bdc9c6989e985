//! `GET /p2p/peers`, the p2p metrics and the page's network view: two nodes joined on loopback,
//! and a node that runs alone.

use std::sync::Arc;
use std::time::{Duration, Instant};

use blyan_node_core::{NetworkService, NodeConfig, Services};
use serde_json::Value;

use crate::support::Node;

pub(crate) fn on_loopback(config: &mut NodeConfig, bootstrap: Vec<String>) {
    config.p2p.enabled = true;
    config.p2p.listen = vec!["/ip4/127.0.0.1/tcp/0".into()];
    config.p2p.bootstrap = bootstrap;
}

/// Starts the network service on `node`; it stops when the returned sender is dropped.
pub(crate) async fn join(node: &Node) -> tokio::sync::oneshot::Sender<()> {
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut services = Services::new(Arc::clone(&node.state));
    services.spawn(NetworkService);
    tokio::spawn(services.run_until(async {
        let _ = stopped.await;
    }));
    let start = Instant::now();
    while node.state.network().is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the network starts"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop
}

/// Two joined nodes: `a`, and `b` bootstrapped from it, connected.
pub(crate) async fn two_nodes() -> (Node, Node, [tokio::sync::oneshot::Sender<()>; 2]) {
    let a = Node::start_with(|config| on_loopback(config, Vec::new())).await;
    let a_net = join(&a).await;
    let address = a.state.network().unwrap().listen_addresses()[0].to_string();
    let b = Node::start_with(|config| on_loopback(config, vec![address])).await;
    let b_net = join(&b).await;
    let start = Instant::now();
    loop {
        let (_, peers) = a.get("/p2p/peers", None).await;
        if peers["peers"]
            .as_array()
            .unwrap()
            .iter()
            .any(|peer| peer["connected"] == Value::Bool(true))
        {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "B connects to A");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (a, b, [a_net, b_net])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn peers_show_each_other_with_their_chain_addresses_and_the_metrics_count_them() {
    let (a, b, _networks) = two_nodes().await;
    let (status, peers) = b.get("/p2p/peers", None).await;
    assert_eq!(status, 200);
    assert_eq!(peers["enabled"], true);
    let a_id = a.state.network().unwrap().local_peer().to_string();
    assert_eq!(
        peers["peer_id"],
        b.state.network().unwrap().local_peer().to_string()
    );
    assert!(
        peers["listen"][0]
            .as_str()
            .unwrap()
            .ends_with(&format!("/p2p/{}", b.state.network().unwrap().local_peer()))
    );
    let a_at_b = peers["peers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|peer| peer["peer_id"] == a_id.as_str())
        .expect("B lists A");
    assert_eq!(a_at_b["connected"], true);
    assert_eq!(a_at_b["offences"], 0);
    // The peer id carries the node key's address: the one its data dir holds.
    let a_key = blyan_node_core::node_key(&a.state.config().data_dir).unwrap();
    assert_eq!(a_at_b["address"], a_key.address().to_checksummed());
    let metrics = b.metrics().await;
    assert!(metrics.contains("p2p_peers_connected 1"), "{metrics}");
    assert!(
        metrics.contains("p2p_totals{counter=\"bytes_in\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("p2p_expert_totals{counter=\"failovers\"} 0"),
        "{metrics}"
    );
    // The experts view: this node, what it serves (nothing of a chain without a model), its calls.
    let (status, experts) = b.get("/p2p/experts", None).await;
    assert_eq!(status, 200, "{experts}");
    assert_eq!(
        experts["local_peer"],
        b.state.network().unwrap().local_peer().to_string()
    );
    assert_eq!(experts["failovers"], 0);
}

#[tokio::test]
async fn a_node_without_a_network_says_so() {
    let node = Node::start().await;
    let (status, peers) = node.get("/p2p/peers", None).await;
    assert_eq!(status, 200);
    assert_eq!(peers["enabled"], false);
    assert_eq!(peers["peers"], Value::Array(Vec::new()));
    assert!(node.metrics().await.contains("p2p_peers_connected 0"));
    let answer = node.get("/p2p/experts", None).await;
    crate::support::check_refused(&answer, 503, "network_unavailable");
}
