//! `blyan-validator run` as processes against a real node (the HTTP API on loopback, its chain
//! store, gate and ledger in a temp dir, its Proof-of-Learning service certifying): three
//! validators, each its own process and key, seed, re-evaluate and vote on a fine-tuned
//! candidate; the node certifies it, serves it and pays its author.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../../crates/blyan-node-core/tests/fixtures/fine_tune.rs"]
mod fine_tune;

use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blyan_api::{AppState, Server};
use blyan_chain::{AuthorKey, encode_block};
use blyan_ledger::{AccountId, IdempotencyKey, Ledger as _, SystemAccount, TransferRequest};
use blyan_moe::ExpertName;
use blyan_node_core::{Node, NodeConfig, PolService, SeedChoice, Services};
use blyan_pol::{ModelBlocks, PolRecord, StoreBlocks, ValidatorStake, build_claim, record_block};
use serde_json::Value;

use fine_tune::{docs_paragraphs, fine_tune};

fn get(url: &str) -> Value {
    let response = reqwest::blocking::get(url).unwrap();
    assert!(response.status().is_success(), "GET {url}: {response:?}");
    response.json().unwrap()
}

#[test]
fn three_validator_processes_certify_a_fine_tune_that_is_then_served_and_paid() {
    let dir = tempfile::tempdir().unwrap();
    let keys: Vec<(AuthorKey, PathBuf)> = (0..3)
        .map(|index| {
            let key = AuthorKey::generate();
            let path = dir.path().join(format!("validator{index}.key"));
            key.write_file(&path).unwrap();
            (key, path)
        })
        .collect();
    let mut config = NodeConfig::defaults();
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.data_dir = dir.path().join("node");
    config.chain.durability = blyan_primitives::Durability::Unsynced;
    config.model.seed = SeedChoice::Random;
    config.pol.validators = keys
        .iter()
        .map(|(key, _)| ValidatorStake {
            address: key.address(),
            stake: 1,
        })
        .collect();
    config.pol.eval.windows = 16;
    config.pol.eval.positions = 64;
    config.pol.eval.threads = 1;
    config.pol.interval_ms = 100;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let (node, addr) = runtime.block_on(async {
        let node = Node::open(config).await.unwrap();
        node.ensure_seed_model(&AuthorKey::generate())
            .await
            .unwrap();
        let node = Arc::new(node.load_model().await.unwrap());
        let server = Server::bind(AppState::new(Arc::clone(&node)).unwrap())
            .await
            .unwrap();
        let addr = server.local_addr().unwrap();
        tokio::spawn(server.serve(std::future::pending()));
        let mut services = Services::new(Arc::clone(&node));
        services.spawn(PolService);
        tokio::spawn(services.run_until(std::future::pending()));
        (node, addr)
    });
    let url = format!("http://{addr}");

    // The author: funded, a fine-tune stored as candidates, and its claim.
    let author = AuthorKey::generate();
    let author_account = AccountId::User(blyan_ledger::Address::from_bytes(
        *author.address().as_bytes(),
    ));
    let ledger = Arc::clone(node.ledger().unwrap());
    runtime.block_on(async {
        ledger
            .transfer(TransferRequest {
                key: IdempotencyKey::new("fund-author").unwrap(),
                from: SystemAccount::Treasury.into(),
                to: author_account,
                amount: "1000".parse().unwrap(),
                memo: "test".into(),
            })
            .await
            .unwrap();
    });
    let store = Arc::clone(node.chain().unwrap());
    let experts = (0..4)
        .map(|layer| ExpertName::new(layer, 0).unwrap())
        .collect();
    let candidates = fine_tune(&store, &author, experts, &docs_paragraphs(), 30, 1e-2);
    let base = ModelBlocks::served(&store).unwrap();
    let context = Arc::clone(node.pol().unwrap());
    let commitment = blake3::hash(b"docs").to_hex().to_string();
    let claim = build_claim(
        &StoreBlocks(&store),
        &base,
        candidates.clone(),
        &context.pool,
        &context.params.eval,
        commitment,
    )
    .unwrap();
    let parent = store.tip(blyan_chain::ChainId::Dataset);
    let stamp = store.header(&parent.hash).unwrap().unwrap().timestamp_ms;
    let (header, payload) = record_block(&parent, stamp, &PolRecord::Claim(claim), &author, 0);
    let claim_hash = runtime
        .block_on(node.submit_block(encode_block(&header, &payload)))
        .unwrap()
        .0;

    // Three validator processes, one pass each.
    for (index, (key, path)) in keys.iter().enumerate() {
        let output = Command::new(env!("CARGO_BIN_EXE_blyan-validator"))
            .env("RUST_LOG", "warn")
            .args(["run", "--node", &url, "--key"])
            .arg(path)
            .args(["--threads", "1", "--once"])
            // Each keeps a hidden QA set of 8 KiB from the shipped held-out text.
            .arg("--qa-documents")
            .arg(PathBuf::from(blyan_moe::SHIPPED_MODEL_DIR).join("eval"))
            .arg("--qa-dir")
            .arg(dir.path().join(format!("qa{index}")))
            .args(["--qa-set-bytes", "8192"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "validator {index}: {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let vote: Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
        assert_eq!(vote["claim"], claim_hash.to_string(), "{stdout}");
        assert_eq!(vote["verdict"], "accept", "{stdout}");
        assert!(vote["hidden_delta_bps"].as_i64().unwrap() >= 50, "{stdout}");
        assert!(dir.path().join(format!("qa{index}")).is_dir());
        let _ = key;
    }

    // The node's service certifies, promotes and settles.
    let deadline = Instant::now() + Duration::from_secs(120);
    let status = loop {
        let status = get(&format!("{url}/pol/status"));
        if status["claims"][0]["status"] == "accepted" {
            break status;
        }
        assert!(Instant::now() < deadline, "never certified: {status}");
        std::thread::sleep(Duration::from_millis(100));
    };
    let claim = &status["claims"][0];
    assert_eq!(claim["votes"].as_array().unwrap().len(), 3);
    let first: Vec<_> = claim["votes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|vote| vote["losses"].clone())
        .collect();
    assert!(
        first.windows(2).all(|pair| pair[0] == pair[1]),
        "three processes, one result: {first:?}"
    );
    // Each vote names its validator's commit of the epoch, listed with the node's QA sets.
    assert_eq!(status["qa"].as_array().unwrap().len(), 3, "{status}");
    for vote in claim["votes"].as_array().unwrap() {
        assert_eq!(vote["hidden"]["status"], "open", "{vote}");
    }
    let expert = get(&format!("{url}/chain/experts/layer0.expert0"));
    assert_eq!(expert["block"], candidates[0].to_string(), "{expert}");
    let reward: blyan_ledger::Amount = claim["certificate"]["payments"][0]["amount"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    let balance = runtime.block_on(ledger.balance(author_account)).unwrap();
    assert_eq!(
        balance.available,
        "1000"
            .parse::<blyan_ledger::Amount>()
            .unwrap()
            .checked_add(reward)
            .unwrap()
    );
    // Each validator was paid for its vote.
    for (key, _) in &keys {
        let paid = runtime
            .block_on(
                ledger.balance(AccountId::User(blyan_ledger::Address::from_bytes(
                    *key.address().as_bytes(),
                ))),
            )
            .unwrap();
        assert!(paid.available > blyan_ledger::Amount::ZERO);
    }
    drop(runtime);
}
