//! Nodes for the scenarios: a chain store in a temp dir and a running network on loopback.

use std::future::Future;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blyan_chain::{
    AuthorKey, BlockHash, BlockHeader, BlockKind, ChainId, ChainStore, Durability, ForkRule,
    ForkRules, GENESIS_TIMESTAMP_MS, GenesisSpec, StoreConfig,
};
use blyan_p2p::{Multiaddr, Network, NetworkConfig};

/// A timestamp after genesis for the blocks tests append.
pub(crate) const T0: u64 = GENESIS_TIMESTAMP_MS + 86_400_000;

/// How long a scenario waits for the network to converge before failing (a liveness bound,
/// not a speed claim).
pub(crate) const CONVERGE: Duration = Duration::from_secs(60);

pub(crate) struct TestNode {
    pub(crate) _dir: tempfile::TempDir,
    pub(crate) chain: Arc<ChainStore>,
    pub(crate) key: AuthorKey,
    pub(crate) net: Network,
}

impl TestNode {
    pub(crate) fn addresses(&self) -> Vec<Multiaddr> {
        self.net.handle().listen_addresses()
    }

    /// The node's TCP address (ending in its peer id).
    pub(crate) fn tcp_address(&self) -> Multiaddr {
        self.addresses()
            .into_iter()
            .find(|address| address.to_string().contains("/tcp/"))
            .expect("the node listens on TCP")
    }

    /// The node's QUIC address (ending in its peer id).
    pub(crate) fn quic_address(&self) -> Multiaddr {
        self.addresses()
            .into_iter()
            .find(|address| address.to_string().contains("/quic-v1"))
            .expect("the node listens on QUIC")
    }

    pub(crate) fn tips(&self) -> Vec<BlockHash> {
        ChainId::ALL
            .iter()
            .map(|chain| self.chain.tip(*chain).hash)
            .collect()
    }
}

/// Unsynced (fsync is not what these scenarios test), forks allowed on every chain as on a
/// node: two nodes that appended apart must be able to converge.
pub(crate) fn store_config() -> StoreConfig {
    StoreConfig {
        durability: Durability::Unsynced,
        fork_rules: ForkRules {
            meta: ForkRule::AllowForks,
            parameters: ForkRule::AllowForks,
            dataset: ForkRule::AllowForks,
        },
        ..StoreConfig::default()
    }
}

pub(crate) fn open_store(dir: &Path, genesis: &GenesisSpec) -> Arc<ChainStore> {
    Arc::new(ChainStore::open_with(dir, store_config(), genesis, None).expect("store opens"))
}

/// Test settings: loopback, free ports, periodic sync off unless asked (so what arrives came by
/// connect-time sync or gossip).
pub(crate) fn config(bootstrap: Vec<Multiaddr>) -> NetworkConfig {
    NetworkConfig {
        listen: vec![
            "/ip4/127.0.0.1/udp/0/quic-v1".parse().expect("parses"),
            "/ip4/127.0.0.1/tcp/0".parse().expect("parses"),
        ],
        bootstrap,
        sync_interval: Duration::from_secs(3600),
        announce_interval: Duration::from_millis(50),
        ..NetworkConfig::default()
    }
}

/// Logs to the test's output when `RUST_LOG` asks for it.
fn init_logging() {
    if std::env::var_os("RUST_LOG").is_some() {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_test_writer()
            .try_init();
    }
}

pub(crate) async fn start_with(
    genesis: &GenesisSpec,
    config: NetworkConfig,
    setup: impl FnOnce(&ChainStore, &AuthorKey),
) -> TestNode {
    init_logging();
    let dir = tempfile::tempdir().expect("temp dir");
    let chain = open_store(dir.path(), genesis);
    let key = AuthorKey::generate();
    setup(&chain, &key);
    let net = Network::start(config, &key, Arc::clone(&chain))
        .await
        .expect("the network starts");
    TestNode {
        _dir: dir,
        chain,
        key,
        net,
    }
}

pub(crate) async fn start(bootstrap: Vec<Multiaddr>) -> TestNode {
    start_with(&GenesisSpec::shipped(), config(bootstrap), |_, _| {}).await
}

/// A deterministic payload of `bytes` bytes, different for each `seed`.
pub(crate) fn payload(seed: u64, bytes: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..bytes)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Appends a signed dataset entry on chain D's tip of `store`.
pub(crate) fn append_entry(store: &ChainStore, key: &AuthorKey, payload: &[u8]) -> BlockHash {
    let header = entry_on(store, key, payload);
    store.append(&header, payload).expect("the entry appends")
}

/// A signed dataset entry on chain D's tip of `store`, not appended.
pub(crate) fn entry_on(store: &ChainStore, key: &AuthorKey, payload: &[u8]) -> BlockHeader {
    let tip = store.tip(ChainId::Dataset);
    let mut header =
        BlockHeader::new_child(&tip, BlockKind::DatasetEntry, payload, T0 + tip.height);
    header.sign(key);
    header
}

/// Polls `condition` until it holds or [`CONVERGE`] passes; panics naming `what` then.
pub(crate) async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let start = Instant::now();
    while !condition().await {
        assert!(
            start.elapsed() < CONVERGE,
            "{what}: not reached within {CONVERGE:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
