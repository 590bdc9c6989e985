//! A node on a temp data dir, and a funded wallet.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use blyan_api_types::{ChatMessage, ChatRequest};
use blyan_chain::AuthorKey;
use blyan_ledger::{
    AccountId, Amount, IdempotencyKey, Ledger as _, SystemAccount, TransferRequest,
};
use blyan_node_core::{ChatObserver, LedgerOutcome, Node, NodeConfig};
use blyan_primitives::{Address, Durability};

/// A node and the directory it lives in (removed when dropped).
pub(crate) struct TestNode {
    pub node: Arc<Node>,
    pub _dir: tempfile::TempDir,
}

/// A node with the shipped defaults changed by `edit`; with the seed model published and
/// served when `with_model`.
pub(crate) async fn node_with(edit: impl FnOnce(&mut NodeConfig), with_model: bool) -> TestNode {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut config = NodeConfig::defaults();
    config.data_dir = dir.path().to_owned();
    // Test blocks need not survive power loss.
    config.chain.durability = Durability::Unsynced;
    edit(&mut config);
    let mut node = Node::open(config).await.expect("the node opens");
    if with_model {
        node.ensure_seed_model(&AuthorKey::generate())
            .await
            .expect("the seed model is published");
        node = node.load_model().await.expect("the model loads");
        assert!(node.generator().is_some(), "the chain holds the model");
    }
    TestNode {
        node: Arc::new(node),
        _dir: dir,
    }
}

/// A node serving the seed model with the shipped defaults.
pub(crate) async fn serving() -> TestNode {
    node_with(|_| {}, true).await
}

/// A wallet address made from one byte.
pub(crate) fn wallet(seed: u8) -> Address {
    Address::from_bytes([seed; 20])
}

/// Moves `bly` BLY from the treasury to `wallet`.
pub(crate) async fn fund(node: &Node, wallet: Address, bly: &str) {
    let ledger = node.ledger().expect("the node has a ledger");
    ledger
        .transfer(TransferRequest {
            key: IdempotencyKey::new(format!("fund-{wallet}-{bly}")).unwrap(),
            from: SystemAccount::Treasury.into(),
            to: AccountId::User(blyan_ledger::Address::from_bytes(*wallet.as_bytes())),
            amount: bly.parse::<Amount>().unwrap(),
            memo: "test funding".into(),
        })
        .await
        .expect("the treasury pays");
}

/// `wallet`'s (available, held) balance.
pub(crate) async fn balance(node: &Node, wallet: Address) -> (Amount, Amount) {
    let ledger = node.ledger().expect("the node has a ledger");
    let balance = ledger
        .balance(AccountId::User(blyan_ledger::Address::from_bytes(
            *wallet.as_bytes(),
        )))
        .await
        .expect("balance");
    (balance.available, balance.held)
}

/// Waits (up to 10 s) until `wallet` holds nothing in escrow.
pub(crate) async fn wait_until_nothing_held(node: &Node, wallet: Address) {
    for _ in 0..200 {
        if balance(node, wallet).await.1 == Amount::ZERO {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("the hold was never released");
}

/// A chat request with one user message.
pub(crate) fn request(text: &str, max_tokens: Option<u32>) -> ChatRequest {
    ChatRequest {
        messages: vec![ChatMessage {
            role: "user".to_owned(),
            content: text.into(),
        }],
        max_tokens,
        temperature: None,
        top_p: None,
        seed: Some(5),
        model: None,
        stop: None,
    }
}

/// An observer that remembers the ledger calls and token counts it was told of.
#[derive(Debug, Default)]
pub(crate) struct Recorder {
    pub ledger: Mutex<Vec<(&'static str, &'static str)>>,
    pub tokens: Mutex<Vec<(&'static str, u64, u64)>>,
    pub first_tokens: Mutex<u32>,
}

impl ChatObserver for Recorder {
    fn ledger_operation(&self, operation: &'static str, outcome: LedgerOutcome) {
        self.ledger
            .lock()
            .unwrap()
            .push((operation, outcome.name()));
    }

    fn first_token(&self, _elapsed: Duration) {
        *self.first_tokens.lock().unwrap() += 1;
    }

    fn tokens(&self, tier: &'static str, prompt: u64, completion: u64) {
        self.tokens.lock().unwrap().push((tier, prompt, completion));
    }
}
