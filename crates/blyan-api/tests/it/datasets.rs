//! The data path end to end over real HTTP, on a node serving the shipped (trained) model:
//! signed-in wallets submit samples (L0 at submission), the node's dataset worker scores them
//! with the served model (L1), funded wallets commit and reveal stake-weighted votes (L2), the
//! node's key, the only validator, reviews them (L3), and a certified Proof-of-Learning
//! candidate whose `data_blocks` name them pays the contributor 20 BLY per used sample, once.
//! A `DatasetEntry` block sent whole (`POST /blocks`) meets the same L0 screen.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use blyan_chain::{AuthorKey, BlockHash, BlockHeader, BlockKind, ChainId, encode_block};
use blyan_ledger::Amount;
use blyan_node_core::{DatasetService, ServedTeacher, Services, pol_tick};
use blyan_quality::{DataRecord, Licence, Sample, SampleContent, VoteVerdict, encode_record};
use serde_json::{Value, json};

use crate::fine_tune::{docs_paragraphs, fine_tune};
use crate::support::{Node, TestWallet, check_refused};

/// Commit and reveal windows: long enough for the test's HTTP writes, short enough to wait out.
const WINDOW_MS: u64 = 1_500;

/// Bound on each wait for the worker (not a timing assertion).
const WAIT: Duration = Duration::from_secs(60);

/// English prose the shipped model scores inside the default L1 band (1.2–4.5 bits per byte).
const PROSE: [&str; 2] = [
    "The river rose slowly through the night, and by morning the lower fields were under a \
     sheet of brown water that reflected the grey sky.",
    "She kept her grandfather's letters in a tin box under the bed and read one of them \
     every winter evening when the house was quiet.",
];

/// Gibberish of the labelled set that the shipped model finds far above the band.
const GIBBERISH: &str = "qzv xkjw plmbq rtyvz wqxk jhgf vbnmq zxcv kjhq wpoq mnbv lkjh gfds \
    qwer tyui opas dfgh jklz xcvb nmqw erty uiop";

/// A node serving the shipped model whose public evaluation pool is `pool` (no hidden set), with
/// short vote windows, and its dataset worker running with the served model as L1 teacher.
async fn data_node(pool: PathBuf) -> (Node, tokio::sync::oneshot::Sender<()>) {
    let node = Node::serving_with(move |config| {
        config.model.seed = blyan_node_core::SeedChoice::Shipped;
        config.datasets.commit_window_ms = WINDOW_MS;
        config.datasets.reveal_window_ms = WINDOW_MS;
        config.datasets.quorum_stake = 20;
        config.datasets.vote_stake_min = 10;
        config.datasets.interval_ms = 50;
        config.pol.eval.corpus = vec![pool];
        config.pol.eval.windows = 16;
        config.pol.eval.positions = 64;
        config.pol.eval.threads = 1;
    })
    .await;
    assert!(
        node.state
            .set_teacher(Arc::new(ServedTeacher(Arc::clone(&node.state)))),
        "the teacher is set once"
    );
    let mut services = Services::new(Arc::clone(&node.state));
    services.spawn(DatasetService);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(services.run_until(async move {
        let _ = stopped.await;
    }));
    (node, stop)
}

/// Polls `GET path` until `done` holds for its body.
async fn wait_for(node: &Node, path: &str, what: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = node.get(path, None).await;
        assert_eq!(status, 200, "{body}");
        if done(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "never reached: {what}; last {body}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn sample_state(node: &Node, sample: &str) -> String {
    let (status, body) = node.get(&format!("/datasets/{sample}"), None).await;
    assert_eq!(status, 200, "{body}");
    body["state"].as_str().unwrap().to_owned()
}

/// The signed-in wallet's (available, held) balance, through `GET /wallet/balance`.
async fn wallet_balance(node: &Node, token: &str) -> (Amount, Amount) {
    let (status, body) = node.get("/wallet/balance", Some(token)).await;
    assert_eq!(status, 200, "{body}");
    let amount = |field: &str| body[field].as_str().unwrap().parse::<Amount>().unwrap();
    (amount("available"), amount("held"))
}

fn bly(text: &str) -> Amount {
    text.parse().unwrap()
}

/// Writes the first paragraphs of the repository's docs as the public evaluation pool.
fn docs_pool(dir: &std::path::Path) -> (PathBuf, Vec<blyan_moe::TextDocument>) {
    let documents: Vec<_> = docs_paragraphs().into_iter().take(40).collect();
    let text: String = documents
        .iter()
        .map(|paragraph| paragraph.text.as_str())
        .collect();
    let path = dir.join("public.txt");
    std::fs::write(&path, &text).unwrap();
    (
        path,
        vec![blyan_moe::TextDocument {
            name: "public".into(),
            text,
        }],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sample_passes_every_gate_over_http_and_pays_its_contributor_once_when_used() {
    let dir = tempfile::tempdir().unwrap();
    let (pool, documents) = docs_pool(dir.path());
    let (node, stop_services) = data_node(pool).await;
    let contributor = TestWallet::new(0x31);
    let voters = [TestWallet::new(0x32), TestWallet::new(0x33)];
    let contributor_token = contributor.sign_in(&node).await.access_token;
    let mut voter_tokens = Vec::new();
    for voter in &voters {
        // No route moves treasury money to a wallet: the test funds the voters in the ledger.
        node.fund(&voter.address, "100").await;
        voter_tokens.push(voter.sign_in(&node).await.access_token);
    }

    // L0 at submission: a licence outside the list is refused with its code.
    let submit = |text: &str, licence: &str| json!({ "text": text, "licence": licence, "source": "own writing", "language": "en" });
    let refused = node
        .post(
            "/datasets",
            &submit(PROSE[0], "GPL-3.0"),
            Some(&contributor_token),
        )
        .await;
    check_refused(&refused, 422, "licence");
    let mut samples = Vec::new();
    for text in PROSE.into_iter().chain([GIBBERISH]) {
        let (status, body) = node
            .post(
                "/datasets",
                &submit(text, "CC0-1.0"),
                Some(&contributor_token),
            )
            .await;
        assert_eq!(status, 200, "{body}");
        samples.push(body["block"].as_str().unwrap().to_owned());
    }
    let duplicate = node
        .post(
            "/datasets",
            &submit(PROSE[1], "CC0-1.0"),
            Some(&contributor_token),
        )
        .await;
    check_refused(&duplicate, 422, "exact_duplicate");

    // L1: the worker scores them with the served (shipped) model, off the request path.
    wait_for(
        &node,
        "/datasets/progress",
        "three samples scored",
        |body| body["scored"].as_u64() >= Some(3) && body["waiting"] == 0,
    )
    .await;
    for sample in &samples[..2] {
        let (_, shown) = node.get(&format!("/datasets/{sample}"), None).await;
        assert_eq!(shown["state"], "voting", "{shown}");
        let bits = shown["bits_per_byte"].as_f64().unwrap();
        assert!((1.2..=4.5).contains(&bits), "prose inside the band: {bits}");
    }
    let (_, gibberish) = node.get(&format!("/datasets/{}", samples[2]), None).await;
    assert_eq!(gibberish["state"], "l1_refused", "{gibberish}");
    assert!(gibberish["bits_per_byte"].as_f64().unwrap() > 4.5);
    let samples: Vec<String> = samples[..2].to_vec();

    // L2: the contributor may not vote on its own sample; two funded wallets commit 10 BLY each.
    let own = node
        .post(
            &format!("/datasets/{}/commit", samples[0]),
            &json!({ "commitment": "0".repeat(64), "stake": 10 }),
            Some(&contributor_token),
        )
        .await;
    check_refused(&own, 422, "own_sample");
    let mut commits = Vec::new();
    for (index, (voter, token)) in voters.iter().zip(&voter_tokens).enumerate() {
        for sample in &samples {
            let salt = [index as u8 + 1; 32];
            let commitment = blyan_quality::vote_commitment(
                sample.parse().unwrap(),
                VoteVerdict::Accept,
                &salt,
                voter.address.parse().unwrap(),
            );
            let (status, body) = node
                .post(
                    &format!("/datasets/{sample}/commit"),
                    &json!({ "commitment": commitment, "stake": 10 }),
                    Some(token),
                )
                .await;
            assert_eq!(status, 200, "{body}");
            commits.push((body["block"].as_str().unwrap().to_owned(), index, salt));
        }
    }
    assert_eq!(
        wallet_balance(&node, &voter_tokens[0]).await,
        (bly("80"), bly("20")),
        "each vote's stake is locked"
    );
    let reveal = |commit: &str, verdict: &str, salt: &[u8; 32]| json!({ "commit": commit, "verdict": verdict, "salt": hex::encode(salt) });
    // A reveal in the commit window would let others copy it.
    let early = node
        .post(
            "/datasets/reveal",
            &reveal(&commits[0].0, "accept", &commits[0].2),
            Some(&voter_tokens[0]),
        )
        .await;
    check_refused(&early, 422, "wrong_state");
    let sample = samples[0].clone();
    wait_for(
        &node,
        &format!("/datasets/{sample}"),
        "the reveal window",
        |body| body["state"] == "revealing",
    )
    .await;
    let mismatch = node
        .post(
            "/datasets/reveal",
            &reveal(&commits[0].0, "refuse", &commits[0].2),
            Some(&voter_tokens[0]),
        )
        .await;
    check_refused(&mismatch, 422, "reveal_mismatch");
    for (commit, voter, salt) in &commits {
        let (status, body) = node
            .post(
                "/datasets/reveal",
                &reveal(commit, "accept", salt),
                Some(&voter_tokens[*voter]),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
    for sample in &samples {
        wait_for(&node, &format!("/datasets/{sample}"), "the tally", |body| {
            body["state"] == "accepted"
        })
        .await;
    }
    // The worker gives revealed stakes back once the tally is in.
    let deadline = Instant::now() + WAIT;
    while wallet_balance(&node, &voter_tokens[0]).await != (bly("100"), Amount::ZERO) {
        assert!(
            Instant::now() < deadline,
            "the stakes were never given back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // L3: no route writes a review (a validator signs it with its own key); the node's key is
    // this network's only validator.
    node.state
        .submit_review(
            samples
                .iter()
                .map(|sample| sample.parse().unwrap())
                .collect(),
            blyan_quality::ReviewVerdict::Approve,
            "read and fine".into(),
        )
        .await
        .unwrap();
    for sample in &samples {
        assert_eq!(sample_state(&node, sample).await, "usable");
    }
    let (_, shown) = node.get(&format!("/datasets/{}", samples[1]), None).await;
    let events: Vec<&str> = shown["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|event| event["counted"] == true)
        .map(|event| event["event"].as_str().unwrap())
        .collect();
    assert_eq!(
        events,
        [
            "sample",
            "teacher_result",
            "vote_commit",
            "vote_commit",
            "vote_reveal",
            "vote_reveal",
            "tally",
            "review"
        ]
    );

    // L4: a candidate fine-tuned on the public pool, claimed with `data_blocks` naming both
    // samples (one twice), sent through `POST /blocks` and certified by the node's validator.
    let author = AuthorKey::generate();
    node.fund(&author.address().to_string(), "1000").await;
    let store = Arc::clone(node.state.chain().unwrap());
    let experts = (0..4)
        .map(|layer| format!("layer{layer}.expert0").parse().unwrap())
        .collect();
    let trained_store = Arc::clone(&store);
    let trained_author = author.clone();
    let candidates = tokio::task::spawn_blocking(move || {
        fine_tune(
            &trained_store,
            &trained_author,
            experts,
            &crate::fine_tune::paragraphs(documents),
            15,
            3e-3,
        )
    })
    .await
    .unwrap();
    let context = Arc::clone(node.state.pol().unwrap());
    let base = blyan_pol::ModelBlocks::served(&store).unwrap();
    let mut claim = blyan_pol::build_claim(
        &blyan_pol::StoreBlocks(&store),
        &base,
        candidates,
        &context.pool,
        &context.params.eval,
        String::new(),
    )
    .unwrap();
    let used: Vec<BlockHash> = [&samples[0], &samples[1], &samples[0]]
        .iter()
        .map(|sample| sample.parse().unwrap())
        .collect();
    claim.data_commitment = blyan_pol::data_blocks_commitment(&used);
    claim.data_blocks = used;
    let record = blyan_pol::PolRecord::Claim(claim);
    let parent = store.tip(ChainId::Dataset);
    let mut not_before = store.header(&parent.hash).unwrap().unwrap().timestamp_ms;
    for dependency in record.required_dependencies() {
        if let Some(header) = store.header(&dependency).unwrap() {
            not_before = not_before.max(header.timestamp_ms);
        }
    }
    let (header, payload) = blyan_pol::record_block(&parent, not_before, &record, &author, 0);
    let (status, body) = post_block(&node, &header, &payload).await;
    assert_eq!(status, 201, "{body}");
    let claim = body["hash"].as_str().unwrap().to_owned();
    let contributor_before = wallet_balance(&node, &contributor_token).await.0;
    let mut decided = Value::Null;
    for _ in 0..4 {
        pol_tick(&node.state, &context, &mut Default::default())
            .await
            .unwrap();
        let (status, body) = node.get(&format!("/pol/claims/{claim}"), None).await;
        assert_eq!(status, 200, "{body}");
        if !body["claim"]["certificate"].is_null() {
            decided = body["claim"].clone();
            break;
        }
    }
    assert_eq!(decided["status"], "accepted", "{decided}");
    let data_payments: Vec<&Value> = decided["certificate"]["payments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|payment| payment["kind"] == "data")
        .collect();
    assert_eq!(
        data_payments.len(),
        2,
        "one payment per used sample: {decided}"
    );
    for payment in data_payments {
        assert_eq!(payment["to"], json!(contributor.address), "{payment}");
        assert_eq!(payment["amount"], "20", "{payment}");
    }
    let paid = wallet_balance(&node, &contributor_token).await.0;
    assert_eq!(
        paid,
        contributor_before.checked_add(bly("40")).unwrap(),
        "20 BLY per used sample, the sample named twice paid once"
    );

    // Replaying the settlement (the node's pass again, as after a restart) pays nothing twice.
    for _ in 0..2 {
        pol_tick(&node.state, &context, &mut Default::default())
            .await
            .unwrap();
    }
    assert_eq!(wallet_balance(&node, &contributor_token).await.0, paid);
    let _ = stop_services.send(());
}

/// `POST /blocks` with `header` and `payload` in wire form.
async fn post_block(node: &Node, header: &BlockHeader, payload: &[u8]) -> (u16, Value) {
    let response = node
        .http
        .post(node.url("/blocks"))
        .header("content-type", "application/octet-stream")
        .body(encode_block(header, payload))
        .send()
        .await
        .unwrap();
    crate::support::into_json(response).await
}

/// A `DatasetEntry` block on chain D's tip holding `payload`, signed by `key`.
fn dataset_block(node: &Node, key: &AuthorKey, payload: &[u8]) -> BlockHeader {
    let store = node.state.chain().unwrap();
    let parent = store.tip(ChainId::Dataset);
    let stamp = store.header(&parent.hash).unwrap().unwrap().timestamp_ms;
    let mut header = BlockHeader::new_child(
        &parent,
        BlockKind::DatasetEntry,
        payload,
        blyan_pol::now_ms().max(stamp),
    );
    header.sign(key);
    header
}

fn sample_payload(key: &AuthorKey, text: &str) -> Vec<u8> {
    let sample = Sample::new(
        SampleContent::Text { text: text.into() },
        Licence::Cc0,
        "own writing",
        "en",
        key.address(),
    )
    .unwrap();
    encode_record(&DataRecord::Sample(sample))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sample_sent_as_a_whole_block_meets_the_l0_screen_and_a_refused_one_is_not_stored() {
    let node = Node::start().await;
    let key = AuthorKey::generate();
    let (status, body) = post_block(
        &node,
        &dataset_block(&node, &key, &sample_payload(&key, PROSE[0])),
        &sample_payload(&key, PROSE[0]),
    )
    .await;
    assert_eq!(status, 201, "{body}");
    let stored = node
        .state
        .chain()
        .unwrap()
        .chain_info(ChainId::Dataset)
        .blocks;

    let secret = format!(
        "The deploy script still holds the key AKIAIOSFODNN7EXAMPLE for the bucket, so {}",
        PROSE[1]
    );
    let mut wrong_licence = String::from_utf8(sample_payload(&key, PROSE[1])).unwrap();
    wrong_licence = wrong_licence.replace("CC0-1.0", "GPL-3.0");
    for (payload, expected) in [
        (sample_payload(&key, PROSE[0]), "exact_duplicate"),
        (sample_payload(&key, &secret), "secret"),
        (wrong_licence.into_bytes(), "licence"),
    ] {
        let header = dataset_block(&node, &key, &payload);
        let answer = post_block(&node, &header, &payload).await;
        check_refused(&answer, 422, expected);
        assert!(
            !node
                .state
                .chain()
                .unwrap()
                .contains(&header.hash())
                .unwrap(),
            "a refused sample is not stored"
        );
    }
    assert_eq!(
        node.state
            .chain()
            .unwrap()
            .chain_info(ChainId::Dataset)
            .blocks,
        stored
    );
    let (_, listed) = node.get("/datasets", None).await;
    assert_eq!(listed["total"], 1, "{listed}");
}
