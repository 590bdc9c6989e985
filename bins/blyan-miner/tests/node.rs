//! `blyan-miner upload --node URL` against a real node (the `blyan-api` server on loopback, its
//! RocksDB chain store in a temp dir): in `pow` mode the node takes the blocks, validates them,
//! and serves the new model as soon as its meta block lands; in its default Proof-of-Learning
//! mode the upload is a candidate that `upload` claims and, with `--wait`, sees certified.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;

use std::sync::Arc;

use blyan_api::{AppState, Server};
use blyan_chain::AuthorKey;
use blyan_node_core::{Node as NodeState, NodeConfig};
use blyan_primitives::Durability;
use serde_json::Value;

use common::{Workspace, stdout};

/// A node serving the untrained seed model on `127.0.0.1:0`; stopped when dropped.
struct Node {
    addr: SocketAddr,
    state: Arc<NodeState>,
    runtime: tokio::runtime::Runtime,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    _dir: tempfile::TempDir,
}

impl Node {
    /// A node in `pow` mode: what it is sent is served as it lands.
    fn start(edit: impl FnOnce(&mut NodeConfig)) -> Node {
        Self::start_with(
            |config| {
                config.pol.mode = blyan_pol::PolMode::Pow;
                edit(config);
            },
            false,
        )
    }

    /// A node with its own configuration; `pol_service`: with the node's Proof-of-Learning
    /// service running (the node's key is the single validator by default).
    fn start_with(edit: impl FnOnce(&mut NodeConfig), pol_service: bool) -> Node {
        let dir = tempfile::tempdir().unwrap();
        let mut config = NodeConfig::defaults();
        config.listen = "127.0.0.1:0".parse().unwrap();
        config.data_dir = dir.path().to_owned();
        config.chain.durability = Durability::Unsynced;
        config.model.seed = blyan_node_core::SeedChoice::Random;
        edit(&mut config);
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr, state) = runtime.block_on(async move {
            let node = NodeState::open(config).await.unwrap();
            node.ensure_seed_model(&AuthorKey::generate())
                .await
                .unwrap();
            let node = Arc::new(node.load_model().await.unwrap());
            let server = Server::bind(AppState::new(Arc::clone(&node)).unwrap())
                .await
                .unwrap();
            let addr = server.local_addr().unwrap();
            tokio::spawn(server.serve(async move {
                let _ = stopped.await;
            }));
            if pol_service {
                let mut services = blyan_node_core::Services::new(Arc::clone(&node));
                services.spawn(blyan_node_core::PolService);
                // Until the runtime goes with the node.
                tokio::spawn(services.run_until(std::future::pending()));
            }
            (addr, node)
        });
        Node {
            addr,
            state,
            runtime,
            stop: Some(stop),
            _dir: dir,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn get(&self, path: &str) -> Value {
        let response = reqwest::blocking::get(format!("{}{path}", self.url())).unwrap();
        assert!(response.status().is_success(), "GET {path}: {response:?}");
        response.json().unwrap()
    }

    fn post(&self, path: &str, body: &Value) -> Value {
        let response = reqwest::blocking::Client::new()
            .post(format!("{}{path}", self.url()))
            .json(body)
            .send()
            .unwrap();
        assert!(response.status().is_success(), "POST {path}: {response:?}");
        response.json().unwrap()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Give the server a moment to close its connections before the runtime goes.
        self.runtime.block_on(tokio::task::yield_now());
    }
}

/// The meta block hash an upload's summary line names.
fn meta_block(summary: &str) -> String {
    summary
        .split_whitespace()
        .nth(2)
        .expect("`meta block <hash> …`")
        .to_owned()
}

/// Ids of the experts the node holds in its cache now.
fn cached(node: &Node) -> Vec<String> {
    node.get("/experts")["experts"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|expert| expert["cached"] == true)
        .map(|expert| expert["id"].as_str().unwrap().to_owned())
        .collect()
}

fn chat(node: &Node) -> Value {
    node.post(
        "/chat",
        &serde_json::json!({
            "messages": [{"role": "user", "content": "Blocks of experts"}],
            "max_tokens": 8,
            "temperature": 0,
        }),
    )
}

#[test]
fn upload_to_a_running_node_switches_what_it_serves() {
    let workspace = Workspace::new();
    let node = Node::start(|_| {});
    let seed = node.get("/model");
    assert_eq!(seed["chain"]["model"], "untrained seed", "{seed}");
    assert_eq!(seed["serving"]["meta_block"], seed["chain"]["meta_block"]);
    let blocks_before = node.get("/chain/B")["blocks"].as_u64().unwrap();

    let url = node.url();
    let upload = |extra: &[&str]| {
        let mut args = vec!["--node", url.as_str()];
        args.extend_from_slice(extra);
        stdout(&workspace.upload(&args))
    };
    let first = upload(&[]);
    assert!(first.contains("(new)"), "{first}");
    assert!(
        first.contains("shared blocks: 10 written, 0 unchanged; experts: 32 written, 0 unchanged"),
        "{first}"
    );
    let uploaded = meta_block(&first);
    assert_eq!(
        node.get("/chain/B")["blocks"].as_u64().unwrap(),
        blocks_before + 42
    );

    // The node serves the uploaded model at once: no restart.
    let model = node.get("/model");
    assert_eq!(model["chain"]["meta_block"], uploaded.as_str(), "{model}");
    assert_eq!(model["serving"]["meta_block"], uploaded.as_str(), "{model}");
    assert_eq!(model["serving"]["model"], "trained");
    assert_eq!(node.get("/health")["model"], "trained");
    let answer = chat(&node);
    assert!(
        answer["usage"]["completion_tokens"].as_u64().unwrap() > 0,
        "{answer}"
    );
    let warm = cached(&node);
    assert!(!warm.is_empty(), "the chat loaded experts");

    // Uploading the same checkpoint again writes nothing.
    let again = upload(&[]);
    assert!(
        again.contains("(unchanged)")
            && again.contains(
                "shared blocks: 0 written, 10 unchanged; experts: 0 written, 32 unchanged"
            ),
        "{again}"
    );
    assert_eq!(cached(&node), warm, "nothing changed, nothing evicted");

    // INT8 experts are new payloads: 32 new expert versions, the cached ones dropped.
    let int8 = upload(&["--quantize", "int8"]);
    assert!(
        int8.contains("(unchanged)") && int8.contains("experts: 32 written"),
        "{int8}"
    );
    assert!(
        cached(&node).is_empty(),
        "every cached expert had a new version"
    );
    // Version 1 is the seed model's, 2 the float upload's, 3 the INT8 one's.
    let version = node.get("/chain/experts/layer0.expert0");
    assert_eq!(version["version"], 3, "{version}");
    chat(&node);
    let experts = node.get("/experts");
    let served = experts["experts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|expert| expert["id"] == "layer0.expert0")
        .unwrap()
        .clone();
    assert_eq!(served["version"], 3, "{served}");
}

#[test]
fn a_node_demanding_proof_of_work_gets_mined_blocks() {
    let workspace = Workspace::new();
    let node = Node::start(|config| config.chain.pow_difficulty_bits = 8);
    assert_eq!(node.get("/chain/B")["pow_difficulty_bits"], 8);
    let summary = stdout(&workspace.upload(&["--node", &node.url()]));
    let uploaded = meta_block(&summary);
    assert_eq!(
        node.get("/model")["serving"]["meta_block"],
        uploaded.as_str()
    );
    let header = node.get(&format!("/blocks/{uploaded}"));
    assert!(
        uploaded.starts_with("0x00"),
        "8 leading zero bits: {uploaded} {header}"
    );
}

#[test]
fn bad_destinations_are_refused_with_a_clear_error() {
    let workspace = Workspace::new();
    let failed = |extra: &[&str]| {
        let output = workspace.upload(extra);
        assert!(!output.status.success(), "{extra:?} succeeded");
        String::from_utf8(output.stderr).unwrap()
    };

    // Nothing listens on port 9 of loopback.
    let stderr = failed(&["--node", "http://127.0.0.1:9"]);
    assert!(
        stderr.contains("connecting to the node at http://127.0.0.1:9"),
        "{stderr}"
    );
    let stderr = failed(&["--node", "ftp://127.0.0.1:9"]);
    assert!(stderr.contains("http:// or https://"), "{stderr}");
    let data = workspace.temp.path().join("data");
    let stderr = failed(&[
        "--node",
        "http://127.0.0.1:9",
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    assert!(stderr.contains("cannot be used with"), "{stderr}");
    let stderr = failed(&[]);
    assert!(stderr.contains("--node <URL>|--data-dir <DIR>"), "{stderr}");
    assert!(!data.exists(), "no store was created");

    // A server that is not a Blyan node.
    let node = Node::start(|_| {});
    let stderr = failed(&["--node", &format!("{}/health", node.url())]);
    assert!(stderr.contains("is this a Blyan node?"), "{stderr}");
}

/// `train --from-node` fetches the node's model block by block, checked, reuses it for a run on
/// the same node state, and its fine-tune of two experts uploads back as exactly two new expert
/// versions.
#[test]
fn a_fine_tune_from_a_node_uploads_back_only_its_experts() {
    let temp = tempfile::tempdir().unwrap();
    let key = temp.path().join("miner.key");
    stdout(&common::miner(&[
        "keygen".as_ref(),
        "--out".as_ref(),
        key.as_os_str(),
    ]));
    let node = Node::start(|_| {});
    let url = node.url();
    let out = temp.path().join("tuned");
    let docs = common::root().join("docs");
    let train = |steps: &str| {
        let output = common::miner(&[
            "train".as_ref(),
            "--from-node".as_ref(),
            url.as_ref(),
            "--corpus".as_ref(),
            docs.as_os_str(),
            "--experts".as_ref(),
            "layer0.expert1,layer2.expert5".as_ref(),
            "--steps".as_ref(),
            steps.as_ref(),
            "--batch-size".as_ref(),
            "2".as_ref(),
            "--positions".as_ref(),
            "32".as_ref(),
            "--eval-tokens".as_ref(),
            "512".as_ref(),
            "--held-out-per-mille".as_ref(),
            "500".as_ref(),
            "--threads".as_ref(),
            "1".as_ref(),
            "--json".as_ref(),
            "--out".as_ref(),
            out.as_os_str(),
        ]);
        let lines = stdout(&output);
        let done: Value = serde_json::from_str(lines.lines().last().unwrap()).unwrap();
        assert_eq!(done["event"], "done", "{lines}");
        done
    };
    let done = train("3");
    assert_eq!(done["steps"], 3, "{done}");
    let base = out.join("base-model");
    let fetched: Value =
        serde_json::from_slice(&std::fs::read(base.join("fetched-from.json")).unwrap()).unwrap();
    assert_eq!(
        fetched["meta_block"],
        node.get("/model")["chain"]["meta_block"],
        "{fetched}"
    );
    assert_eq!(fetched["experts"].as_array().unwrap().len(), 32);

    // The same node state: the fetched checkpoint is reused, not written again.
    let weights = base.join("model.safetensors");
    let written = std::fs::metadata(&weights).unwrap().modified().unwrap();
    train("2");
    assert_eq!(
        std::fs::metadata(&weights).unwrap().modified().unwrap(),
        written
    );

    let summary = stdout(&common::miner(&[
        "upload".as_ref(),
        "--checkpoint".as_ref(),
        out.as_os_str(),
        "--key".as_ref(),
        key.as_os_str(),
        "--node".as_ref(),
        url.as_ref(),
    ]));
    assert!(
        summary
            .contains("shared blocks: 0 written, 10 unchanged; experts: 2 written, 30 unchanged"),
        "{summary}"
    );
    for (expert, version) in [
        ("layer0.expert1", 2),
        ("layer2.expert5", 2),
        ("layer0.expert0", 1),
    ] {
        let info = node.get(&format!("/chain/experts/{expert}"));
        assert_eq!(info["version"], version, "{expert}: {info}");
    }
    assert_eq!(
        node.get("/model")["serving"]["meta_block"].as_str(),
        Some(meta_block(&summary).as_str())
    );
}

#[test]
fn train_from_an_unreachable_node_names_it_and_writes_nothing() {
    let temp = tempfile::tempdir().unwrap();
    let out = temp.path().join("out");
    let output = common::miner(&[
        "train".as_ref(),
        "--from-node".as_ref(),
        "http://127.0.0.1:9".as_ref(),
        "--corpus".as_ref(),
        common::root().join("docs").as_os_str(),
        "--steps".as_ref(),
        "1".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
    ]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("reading the current model of the node at http://127.0.0.1:9"),
        "{stderr}"
    );
    assert!(!out.exists());
}

/// The default single-node network learns end to end: `train --from-node` fine-tunes four
/// experts, `upload --wait` stores them as candidates, claims them (bond locked), and the node's
/// in-process validator seeds, re-evaluates, votes and certifies; the upload sees `accepted`,
/// the node serves the new versions, and the author got the bond back and the learning reward.
#[test]
fn a_single_node_certifies_an_uploaded_fine_tune() {
    let temp = tempfile::tempdir().unwrap();
    let key_file = temp.path().join("miner.key");
    let address = stdout(&common::miner(&[
        "keygen".as_ref(),
        "--out".as_ref(),
        key_file.as_os_str(),
    ]));
    let node = Node::start_with(
        |config| {
            config.pol.eval.windows = 16;
            config.pol.eval.positions = 64;
            config.pol.eval.threads = 1;
            config.pol.interval_ms = 100;
        },
        true,
    );
    let author: blyan_primitives::Address = address.trim().parse().unwrap();
    let ledger = Arc::clone(node.state.ledger().unwrap());
    node.runtime.block_on(async {
        use blyan_ledger::Ledger as _;
        ledger
            .transfer(blyan_ledger::TransferRequest {
                key: blyan_ledger::IdempotencyKey::new("fund-author").unwrap(),
                from: blyan_ledger::SystemAccount::Treasury.into(),
                to: blyan_ledger::AccountId::User(blyan_ledger::Address::from_bytes(
                    *author.as_bytes(),
                )),
                amount: "1000".parse().unwrap(),
                memo: "test funding".into(),
            })
            .await
            .unwrap();
    });
    let url = node.url();
    let out = temp.path().join("tuned");
    let docs = common::root().join("docs");
    let trained = stdout(&common::miner(&[
        "train".as_ref(),
        "--from-node".as_ref(),
        url.as_ref(),
        "--corpus".as_ref(),
        docs.as_os_str(),
        "--experts".as_ref(),
        "layer0.expert0,layer1.expert0,layer2.expert0,layer3.expert0".as_ref(),
        "--steps".as_ref(),
        "30".as_ref(),
        "--batch-size".as_ref(),
        "8".as_ref(),
        "--positions".as_ref(),
        "64".as_ref(),
        "--learning-rate".as_ref(),
        "0.01".as_ref(),
        "--eval-tokens".as_ref(),
        "512".as_ref(),
        "--held-out-per-mille".as_ref(),
        "500".as_ref(),
        "--threads".as_ref(),
        "1".as_ref(),
        "--json".as_ref(),
        "--out".as_ref(),
        out.as_os_str(),
    ]));
    assert!(trained.contains("\"done\""), "{trained}");
    let served_before = node.get("/model")["serving"]["meta_block"].clone();
    let output = common::miner(&[
        "upload".as_ref(),
        "--checkpoint".as_ref(),
        out.as_os_str(),
        "--key".as_ref(),
        key_file.as_os_str(),
        "--node".as_ref(),
        url.as_ref(),
        "--data".as_ref(),
        docs.as_os_str(),
        "--wait".as_ref(),
        "300".as_ref(),
    ]);
    let report = stdout(&output);
    assert!(report.contains(": accepted"), "{report}");
    assert!(report.contains("vote by"), "{report}");
    assert!(report.contains("(learning)"), "{report}");
    // The node serves the certified model: a new meta block and the four new expert versions.
    let served = node.get("/model")["serving"]["meta_block"].clone();
    assert_ne!(served, served_before);
    assert_eq!(served, node.get("/model")["chain"]["meta_block"]);
    for expert in ["layer0.expert0", "layer3.expert0"] {
        assert_eq!(
            node.get(&format!("/chain/experts/{expert}"))["version"],
            2,
            "{expert}"
        );
    }
    assert_eq!(node.get("/chain/experts/layer0.expert1")["version"], 1);
    let status = node.get("/pol/status");
    let claim = &status["claims"][0];
    assert_eq!(claim["status"], "accepted", "{status}");
    let certificate = &claim["certificate"];
    assert_eq!(certificate["bond"], "refund");
    let reward = certificate["payments"][0]["amount"]
        .as_str()
        .unwrap()
        .to_owned();
    let balance = node.runtime.block_on(async {
        use blyan_ledger::Ledger as _;
        ledger
            .balance(blyan_ledger::AccountId::User(
                blyan_ledger::Address::from_bytes(*author.as_bytes()),
            ))
            .await
            .unwrap()
    });
    let expected = "1000"
        .parse::<blyan_ledger::Amount>()
        .unwrap()
        .checked_add(reward.parse().unwrap())
        .unwrap();
    assert_eq!(balance.available, expected, "reward {reward}");
    assert_eq!(balance.held, blyan_ledger::Amount::ZERO);
}

/// The version of `expert` the node holds now.
fn version_of(node: &Node, expert: &str) -> u64 {
    node.get(&format!("/chain/experts/{expert}"))["version"]
        .as_u64()
        .unwrap()
}

/// `export --node` records the versions it fetched; an upload of that export after others
/// published newer versions is refused (nothing written) unless `--force`; a checkpoint with no
/// record replaces placeholders and its author's own versions but not another author's; and
/// `--experts` publishes only the experts it names, attached to the current model.
#[test]
fn a_stale_export_does_not_revert_newer_versions_unless_forced() {
    let workspace = Workspace::new();
    let node = Node::start(|_| {});
    let url = node.url();
    let blocks = || node.get("/chain/B")["blocks"].as_u64().unwrap();

    // A fresh checkpoint replaces the untrained seed model (placeholders); its description is
    // the model's name, never the local directory.
    stdout(&workspace.upload(&["--node", &url]));
    assert_eq!(version_of(&node, "layer0.expert0"), 2);
    let description = node.get("/model")["chain"]["description"].clone();
    assert_eq!(
        description, "MixtralForCausalLM checkpoint",
        "{description}"
    );

    let export = workspace.temp.path().join("export");
    let exported = stdout(&common::miner(&[
        "export".as_ref(),
        "--node".as_ref(),
        url.as_ref(),
        "--out".as_ref(),
        export.as_os_str(),
    ]));
    assert!(exported.contains("(32 experts)"), "{exported}");
    let record: Value =
        serde_json::from_slice(&std::fs::read(export.join("fetched-from.json")).unwrap()).unwrap();
    assert_eq!(record["description"], description);
    assert_eq!(
        record["meta_block"],
        node.get("/model")["chain"]["meta_block"]
    );
    let experts = record["experts"].as_array().unwrap();
    assert_eq!(experts.len(), 32);
    assert!(
        experts.iter().all(|expert| expert["version"] == 2),
        "{record}"
    );

    // Another author's fresh checkpoint may not replace the first author's versions.
    let other_key = workspace.temp.path().join("other.key");
    stdout(&common::miner(&[
        "keygen".as_ref(),
        "--out".as_ref(),
        other_key.as_os_str(),
    ]));
    let upload_as = |checkpoint: &std::path::Path, extra: &[&str]| {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "upload".as_ref(),
            "--checkpoint".as_ref(),
            checkpoint.as_os_str(),
            "--key".as_ref(),
            other_key.as_os_str(),
            "--node".as_ref(),
            url.as_ref(),
        ];
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        common::miner(&args)
    };
    let before = blocks();
    let refused = upload_as(&workspace.checkpoint, &["--quantize", "int8"]);
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("32 expert(s) have newer versions")
            && stderr.contains("records no version it came from"),
        "{stderr}"
    );
    assert_eq!(blocks(), before, "nothing written");

    // Its own author may (re-uploading quantized): version 3.
    stdout(&workspace.upload(&["--node", &url, "--quantize", "int8"]));
    assert_eq!(version_of(&node, "layer0.expert0"), 3);

    // The export came from version 2: publishing it would revert version 3.
    let before = blocks();
    let stale = upload_as(&export, &[]);
    assert!(!stale.status.success());
    let stderr = String::from_utf8_lossy(&stale.stderr);
    assert!(
        stderr.contains("layer0.expert0 is at version 3 on the chain")
            && stderr.contains("exported from version 2")
            && stderr.contains("--force"),
        "{stderr}"
    );
    assert_eq!(blocks(), before, "nothing written");
    assert_eq!(version_of(&node, "layer0.expert0"), 3);

    // Forced, and only two named experts: two blocks, the model's meta block kept.
    let meta = node.get("/model")["chain"]["meta_block"].clone();
    let forced = stdout(&upload_as(
        &export,
        &["--force", "--experts", "layer0.expert0,layer1.expert2"],
    ));
    assert!(
        forced.contains("(unchanged)")
            && forced.contains(
                "shared blocks: 0 written, 10 unchanged; experts: 2 written, 0 unchanged"
            ),
        "{forced}"
    );
    assert_eq!(node.get("/model")["chain"]["meta_block"], meta);
    assert_eq!(blocks(), before + 2);
    assert_eq!(version_of(&node, "layer0.expert0"), 4);
    assert_eq!(version_of(&node, "layer1.expert2"), 4);
    assert_eq!(version_of(&node, "layer0.expert1"), 3);

    // A pattern that names no expert of the model is refused before anything is sent.
    let none = upload_as(&export, &["--force", "--experts", "layer9.*"]);
    let stderr = String::from_utf8_lossy(&none.stderr);
    assert!(stderr.contains("selects no expert"), "{stderr}");
}

/// `dataset submit` sends each sample of a JSONL file and of a plain text file (one per
/// paragraph) in a block signed by the miner's key, and the node lists them under that
/// address, waiting for L1.
#[test]
fn dataset_submit_sends_samples_the_node_lists_under_the_miners_address() {
    let node = Node::start(|_| {});
    let temp = tempfile::tempdir().unwrap();
    let key = AuthorKey::generate();
    let key_file = temp.path().join("miner.key");
    key.write_file(&key_file).unwrap();
    let lines = temp.path().join("pairs.jsonl");
    std::fs::write(
        &lines,
        "{\"prompt\": \"What does the router of a layer do?\", \"response\": \"It picks the two experts that compute each token.\"}\n",
    )
    .unwrap();
    let plain = temp.path().join("notes.txt");
    std::fs::write(
        &plain,
        "Every expert of the model is one block on the chain.\n\nA node loads only the experts its router picks.\n",
    )
    .unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_blyan-miner"))
        .args(["dataset", "submit"])
        .arg(&lines)
        .arg(&plain)
        .arg("--key")
        .arg(&key_file)
        .args(["--node", &node.url(), "--licence", "CC0-1.0"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    assert_eq!(stdout(&output).lines().count(), 3, "{}", stdout(&output));
    let listed = node.get("/datasets");
    let samples = listed["samples"].as_array().unwrap();
    assert_eq!(samples.len(), 3, "{listed}");
    for sample in samples {
        assert_eq!(
            sample["contributor"].as_str().unwrap().to_lowercase(),
            key.address().to_lower_hex(),
            "{sample}"
        );
        assert_eq!(sample["licence"], "CC0-1.0", "{sample}");
        assert_eq!(sample["state"], "submitted", "{sample}");
    }
    assert!(
        samples.iter().any(|sample| sample["text"]
            .as_str()
            .unwrap()
            .contains("It picks the two experts")),
        "{listed}"
    );
}

/// The node screens each sample `dataset submit` sends (L0): a copy of a sample it holds is
/// refused with its code, reported on stderr with the line it came from, the other samples are
/// still sent, and the command fails.
#[test]
fn dataset_submit_reports_the_samples_the_node_refuses_and_sends_the_others() {
    let node = Node::start(|_| {});
    let temp = tempfile::tempdir().unwrap();
    let key = AuthorKey::generate();
    let key_file = temp.path().join("miner.key");
    key.write_file(&key_file).unwrap();
    let submit = |file: &std::path::Path| {
        std::process::Command::new(env!("CARGO_BIN_EXE_blyan-miner"))
            .args(["dataset", "submit"])
            .arg(file)
            .arg("--key")
            .arg(&key_file)
            .args(["--node", &node.url(), "--licence", "CC0-1.0"])
            .output()
            .unwrap()
    };
    let first = temp.path().join("first.txt");
    std::fs::write(
        &first,
        "Every expert of the model is one block on the chain.\n",
    )
    .unwrap();
    assert!(submit(&first).status.success());
    let second = temp.path().join("second.jsonl");
    std::fs::write(
        &second,
        "{\"text\": \"Every expert of the model is one block on the chain.\"}\n\
         {\"text\": \"A node loads only the experts its router picks.\"}\n",
    )
    .unwrap();
    let output = submit(&second);
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("refused exact_duplicate ") && stderr.contains("second.jsonl:1"),
        "{stderr}"
    );
    assert!(stderr.contains("refused 1 of 2 samples"), "{stderr}");
    let sent = String::from_utf8_lossy(&output.stdout);
    assert_eq!(sent.lines().count(), 1, "{sent}");
    assert!(sent.contains("second.jsonl:2"), "{sent}");
    let listed = node.get("/datasets");
    assert_eq!(listed["total"], 2, "{listed}");
}
