//! A node on a temp data dir serving real HTTP on loopback, a test wallet that signs the way
//! a browser wallet does (EIP-191 `personal_sign` with a secp256k1 key), and Proof-of-Learning
//! claims written into the node's chain as an author would.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use blyan_api::{AppState, Server};
use blyan_api_types::TokenResponse;
use blyan_chain::{AuthorKey, BlockHash, BlockHeader, BlockKind, ChainId, encode_block};
use blyan_ledger::{
    AccountId, Amount, IdempotencyKey, Ledger as _, SystemAccount, TransferRequest,
};
use blyan_node_core::{Node as NodeState, NodeConfig};
use k256::ecdsa::SigningKey;
use serde_json::Value;
use sha3::{Digest as _, Keccak256};

/// What a test node's chain starts with.
#[derive(PartialEq)]
enum Model {
    /// Nothing: the node serves no model.
    None,
    /// The untrained seed model, published at start.
    Seed,
    /// These encoded blocks, submitted in order.
    Blocks(Vec<Vec<u8>>),
}

/// A running node; stopped when dropped.
pub(crate) struct Node {
    pub addr: SocketAddr,
    /// The node library's state (chain store, ledger, model) behind the server.
    pub state: Arc<NodeState>,
    pub http: reqwest::Client,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<blyan_api::Result<()>>>,
    _dir: tempfile::TempDir,
}

impl Node {
    /// A node with the shipped defaults on `127.0.0.1:0`, changed by `edit`, without a model.
    pub(crate) async fn start_with(edit: impl FnOnce(&mut NodeConfig)) -> Node {
        Self::start_serving(edit, false).await
    }

    /// A node whose chain holds the untrained seed model (4 layers of 8 experts, top-2,
    /// byte-level vocabulary: published as blocks at start) and which serves it from there.
    pub(crate) async fn serving_with(edit: impl FnOnce(&mut NodeConfig)) -> Node {
        Self::start_serving(edit, true).await
    }

    /// [`Node::serving_with`] the defaults.
    pub(crate) async fn serving() -> Node {
        Self::serving_with(|_| {}).await
    }

    /// A node serving the seed model from a chain that lacks the expert blocks `missing`
    /// picks: the model's other blocks are copied from a node that published it whole, as a
    /// peer that never received those experts would hold them.
    pub(crate) async fn serving_without(
        edit: impl FnOnce(&mut NodeConfig),
        missing: impl Fn(blyan_primitives::ExpertName) -> bool,
    ) -> Node {
        let whole_dir = tempfile::tempdir().expect("temp dir");
        let mut whole_config = NodeConfig::defaults();
        whole_config.data_dir = whole_dir.path().to_owned();
        whole_config.chain.durability = blyan_primitives::Durability::Unsynced;
        whole_config.model.seed = blyan_node_core::SeedChoice::Random;
        let whole = NodeState::open(whole_config)
            .await
            .expect("node state opens");
        whole
            .ensure_seed_model(&AuthorKey::generate())
            .await
            .expect("the seed model is published");
        let source = Arc::clone(whole.chain().expect("a chain"));
        let blocks = |chain| {
            source
                .blocks(chain, 1, blyan_chain::BLOCKS_PAGE_COUNT_MAX)
                .expect("chain read")
        };
        let (shared, experts): (Vec<_>, Vec<_>) = blocks(ChainId::Parameters)
            .into_iter()
            .partition(|block| block.header.kind != BlockKind::Expert);
        let kept: Vec<Vec<u8>> = shared
            .iter()
            .chain(&blocks(ChainId::Meta))
            .chain(
                experts
                    .iter()
                    .filter(|block| !block.header.meta.expert.is_some_and(&missing)),
            )
            .map(|block| {
                let payload = source
                    .payload(&block.hash)
                    .expect("chain read")
                    .expect("payload");
                encode_block(&block.header, payload.as_ref())
            })
            .collect();
        assert!(
            kept.len() < shared.len() + experts.len() + 1,
            "some expert is left out"
        );
        Self::open_serving(edit, Model::Blocks(kept)).await
    }

    async fn start_serving(edit: impl FnOnce(&mut NodeConfig), with_model: bool) -> Node {
        let model = if with_model { Model::Seed } else { Model::None };
        Self::open_serving(edit, model).await
    }

    /// A node whose chain gets `model`, serving it.
    async fn open_serving(edit: impl FnOnce(&mut NodeConfig), model: Model) -> Node {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = NodeConfig::defaults();
        config.listen = "127.0.0.1:0".parse().expect("address");
        config.data_dir = dir.path().to_owned();
        // Test blocks need not survive power loss; fsync per block only slows the tests down.
        config.chain.durability = blyan_primitives::Durability::Unsynced;
        // Tests make many requests from one address; the limits get their own test.
        config.api.rate_limit.per_ip_per_minute = 10_000;
        config.api.rate_limit.per_wallet_per_minute = 10_000;
        config.api.free_tier.requests_per_hour_per_ip = 10_000;
        // The API's tests run on the untrained random model: its text is noise that never ends
        // early. The shipped model's start has tests of its own (bins/blyan-node's cli.rs).
        config.model.seed = blyan_node_core::SeedChoice::Random;
        edit(&mut config);
        let mut state = NodeState::open(config).await.expect("node state opens");
        if let Model::Blocks(blocks) = &model {
            let chain = state.chain().expect("a chain");
            for block in blocks {
                chain.submit(block).expect("the block is accepted");
            }
        }
        if model == Model::Seed {
            state
                .ensure_seed_model(&AuthorKey::generate())
                .await
                .expect("the seed model is published");
        }
        if model != Model::None {
            state = state
                .load_model()
                .await
                .expect("the model loads from the chain");
            assert!(state.generator().is_some(), "the chain holds the model");
        }
        let state = Arc::new(state);
        let app = AppState::new(Arc::clone(&state)).expect("the sign-in store opens");
        let server = Server::bind(app).await.expect("bind loopback");
        let addr = server.local_addr().expect("bound address");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(server.serve(async move {
            let _ = stopped.await;
        }));
        Node {
            addr,
            state,
            http: reqwest::Client::new(),
            stop: Some(stop),
            task: Some(task),
            _dir: dir,
        }
    }

    /// A node with the shipped defaults, without a model.
    pub(crate) async fn start() -> Node {
        Self::start_with(|_| {}).await
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// The host[:port] a sign-in message for this node names.
    pub(crate) fn domain(&self) -> String {
        self.addr.to_string()
    }

    pub(crate) async fn get(&self, path: &str, token: Option<&str>) -> (u16, Value) {
        let mut request = self.http.get(self.url(path));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        into_json(request.send().await.expect("GET answers")).await
    }

    /// The Prometheus text of `GET /metrics`.
    pub(crate) async fn metrics(&self) -> String {
        let response = self.http.get(self.url("/metrics")).send().await;
        response
            .expect("GET /metrics answers")
            .text()
            .await
            .expect("a text body")
    }

    pub(crate) async fn post(&self, path: &str, body: &Value, token: Option<&str>) -> (u16, Value) {
        let mut request = self.http.post(self.url(path)).json(body);
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        into_json(request.send().await.expect("POST answers")).await
    }

    /// Moves `bly` BLY from the treasury to `wallet`.
    pub(crate) async fn fund(&self, wallet: &str, bly: &str) {
        let ledger = self.state.ledger().expect("the node has a ledger");
        let address = wallet.parse().expect("wallet address");
        ledger
            .transfer(TransferRequest {
                key: IdempotencyKey::new(format!("fund-{wallet}-{bly}")).expect("key"),
                from: SystemAccount::Treasury.into(),
                to: AccountId::User(address),
                amount: bly.parse::<Amount>().expect("amount"),
                memo: "test funding".into(),
            })
            .await
            .expect("treasury pays");
    }

    /// `wallet`'s (available, held) balance in the node's ledger.
    pub(crate) async fn balance(&self, wallet: &str) -> (Amount, Amount) {
        let ledger = self.state.ledger().expect("the node has a ledger");
        let balance = ledger
            .balance(AccountId::User(wallet.parse().expect("wallet address")))
            .await
            .expect("balance");
        (balance.available, balance.held)
    }

    /// A new version of `expert` whose payload is the served one's byte for byte, signed by
    /// `author`: the chain keeps it as a candidate.
    pub(crate) fn copy_of_served(&self, author: &AuthorKey, expert: &str) -> BlockHash {
        let store = self.state.chain().expect("the node has a chain");
        let current = store
            .expert_current(expert.parse().expect("expert name"))
            .expect("chain read")
            .expect("the expert is served");
        let served = store
            .header(&current.hash)
            .expect("chain read")
            .expect("served header");
        let payload = store
            .payload(&current.hash)
            .expect("chain read")
            .expect("served payload");
        let parent = store.tip(ChainId::Parameters);
        let stamp = store
            .header(&parent.hash)
            .expect("chain read")
            .expect("tip header")
            .timestamp_ms
            + 1;
        let mut header =
            BlockHeader::new_child(&parent, BlockKind::Expert, payload.as_ref(), stamp);
        header.meta = served.meta.clone();
        header.meta.version = current.version + 1;
        header.sign(author);
        store
            .append(&header, payload.as_ref())
            .expect("the candidate is stored")
    }

    /// Claims `candidates` over the served model with `claimed` losses, signed by `author` on
    /// chain D's tip as a block from the network would come (the author's bond is locked).
    pub(crate) async fn claim(
        &self,
        author: &AuthorKey,
        candidates: Vec<BlockHash>,
        claimed: blyan_pol::Losses,
    ) -> BlockHash {
        let store = self.state.chain().expect("the node has a chain");
        let record = blyan_pol::PolRecord::Claim(blyan_pol::Claim {
            candidates,
            base_model: blyan_pol::ModelBlocks::served(store)
                .expect("the served model")
                .meta,
            claimed,
            data_commitment: blake3::hash(b"training text").to_hex().to_string(),
            data_blocks: Vec::new(),
        });
        let parent = store.tip(ChainId::Dataset);
        let mut not_before = store
            .header(&parent.hash)
            .expect("chain read")
            .expect("tip header")
            .timestamp_ms;
        for dependency in record.required_dependencies() {
            if let Some(header) = store.header(&dependency).expect("chain read") {
                not_before = not_before.max(header.timestamp_ms);
            }
        }
        let (header, payload) = blyan_pol::record_block(&parent, not_before, &record, author, 0);
        self.state
            .submit_block(encode_block(&header, &payload))
            .await
            .expect("the claim is accepted onto the chain")
            .0
    }

    /// Stops the server and waits for it to drain.
    pub(crate) async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.await
                .expect("server task")
                .expect("server stops cleanly");
        }
    }
}

impl Node {
    /// Asks the server to stop, as the node binary does on SIGTERM or Ctrl-C (its services'
    /// stop signal ends `Server::serve`), without waiting.
    pub(crate) fn request_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Waits (at most 60 s) for the server to have stopped after [`Node::request_stop`].
    pub(crate) async fn stopped(&mut self) -> blyan_api::Result<()> {
        let task = self.task.take().expect("the server runs");
        tokio::time::timeout(Duration::from_secs(60), task)
            .await
            .expect("the server stops within 60 s")
            .expect("the server task ends without a panic")
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub(crate) async fn into_json(response: reqwest::Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let value = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    (status, value)
}

/// The `error.code` of an error body.
pub(crate) fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<no error code>")
}

/// Asserts an error answer with this status and code.
#[track_caller]
pub(crate) fn check_refused(answer: &(u16, Value), status: u16, expected_code: &str) {
    assert_eq!(
        (answer.0, code(&answer.1)),
        (status, expected_code),
        "body: {}",
        answer.1
    );
    assert!(
        answer.1["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "{}",
        answer.1
    );
}

/// A wallet holding a test key.
pub(crate) struct TestWallet {
    pub key: SigningKey,
    pub address: String,
}

pub(crate) fn rfc3339(time: SystemTime) -> String {
    time::OffsetDateTime::from(time)
        .format(&time::format_description::well_known::Rfc3339)
        .expect("formats")
}

/// Fields of a sign-in message, to be varied by tests.
pub(crate) struct MessageFields {
    pub domain: String,
    pub uri: String,
    pub chain_id: u64,
    pub nonce: String,
    pub issued_at: SystemTime,
    pub expiration: Option<SystemTime>,
}

impl TestWallet {
    pub(crate) fn new(seed: u8) -> TestWallet {
        let key = SigningKey::from_slice(&[seed; 32]).expect("valid scalar");
        let point = key.verifying_key().to_encoded_point(false);
        let hash = Keccak256::digest(&point.as_bytes()[1..]);
        let mut bytes = [0_u8; 20];
        bytes.copy_from_slice(&hash[12..]);
        let address = blyan_primitives::Address::from_bytes(bytes).to_string();
        TestWallet { key, address }
    }

    /// `personal_sign`: the EIP-191 prefixed keccak of `message`, signed recoverably; hex with
    /// `v` = 27/28 as wallets return it.
    pub(crate) fn personal_sign(&self, message: &[u8]) -> String {
        let mut prefixed = format!("\x19Ethereum Signed Message:\n{}", message.len()).into_bytes();
        prefixed.extend_from_slice(message);
        let (signature, recovery) = self
            .key
            .sign_digest_recoverable(Keccak256::new_with_prefix(&prefixed))
            .expect("signs");
        let mut bytes = signature.to_bytes().to_vec();
        bytes.push(27 + recovery.to_byte());
        format!("0x{}", hex::encode(bytes))
    }

    pub(crate) fn message(&self, fields: &MessageFields) -> String {
        let mut text = format!(
            "{} wants you to sign in with your Ethereum account:\n{}\n\nSign in to Blyan.\n\nURI: {}\nVersion: 1\nChain ID: {}\nNonce: {}\nIssued At: {}",
            fields.domain,
            self.address,
            fields.uri,
            fields.chain_id,
            fields.nonce,
            rfc3339(fields.issued_at)
        );
        if let Some(expiration) = fields.expiration {
            text.push_str(&format!("\nExpiration Time: {}", rfc3339(expiration)));
        }
        text
    }

    /// Good fields for `node` with a fresh nonce from it.
    pub(crate) async fn fields(&self, node: &Node) -> MessageFields {
        let (status, nonce) = node.get("/auth/nonce", None).await;
        assert_eq!(status, 200, "{nonce}");
        let now = SystemTime::now();
        MessageFields {
            domain: node.domain(),
            uri: format!("http://{}/", node.domain()),
            chain_id: nonce["chain_id"].as_u64().expect("chain id"),
            nonce: nonce["nonce"].as_str().expect("nonce").to_owned(),
            issued_at: now,
            expiration: Some(now + Duration::from_secs(600)),
        }
    }

    /// Sends a signed message to `POST /auth/verify`.
    pub(crate) async fn verify(&self, node: &Node, message: &str, signature: &str) -> (u16, Value) {
        node.post(
            "/auth/verify",
            &serde_json::json!({ "message": message, "signature": signature }),
            None,
        )
        .await
    }

    /// Signs in to `node`: the tokens.
    pub(crate) async fn sign_in(&self, node: &Node) -> TokenResponse {
        let message = self.message(&self.fields(node).await);
        let signature = self.personal_sign(message.as_bytes());
        let (status, body) = self.verify(node, &message, &signature).await;
        assert_eq!(status, 200, "{body}");
        serde_json::from_value(body).expect("token response")
    }
}

/// One Server-Sent Event.
#[derive(Debug, Clone)]
pub(crate) struct SseEvent {
    /// `event:` name (`message` when absent).
    pub name: String,
    /// `data:` lines joined.
    pub data: String,
}

/// Splits complete events off the front of `buffer`.
pub(crate) fn take_events(buffer: &mut String) -> Vec<SseEvent> {
    let mut events = Vec::new();
    while let Some(end) = buffer.find("\n\n") {
        let block: String = buffer.drain(..end + 2).collect();
        let mut name = "message".to_owned();
        let mut data = Vec::new();
        for line in block.lines() {
            if let Some(value) = line.strip_prefix("event:") {
                name = value.trim().to_owned();
            } else if let Some(value) = line.strip_prefix("data:") {
                data.push(value.strip_prefix(' ').unwrap_or(value).to_owned());
            }
        }
        if !data.is_empty() {
            events.push(SseEvent {
                name,
                data: data.join("\n"),
            });
        }
    }
    events
}

/// Reads a whole event stream.
pub(crate) async fn read_events(response: reqwest::Response) -> Vec<SseEvent> {
    let text = response.text().await.expect("event stream");
    let mut buffer = text.replace("\r\n", "\n");
    take_events(&mut buffer)
}

/// A chat message list with one user message.
pub(crate) fn user_says(text: &str) -> Value {
    serde_json::json!([{ "role": "user", "content": text }])
}
