//! `blyan-miner train` end to end on the seed configuration (`models/default/config.json`) and
//! the repository's own `docs/`: bad input refused before anything is written, `--json`
//! reporting, a stopped run resumed, and an expert fine-tune whose upload writes only those
//! experts, with text from files and from chain D.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Output;

use blyan_chain::{AuthorKey, BlockHeader, BlockKind, ChainId, ChainStore, StoreConfig};
use serde_json::Value;

use common::{miner, root, stdout};

/// The seed model's configuration.
fn seed_config() -> PathBuf {
    root().join("models/default/config.json")
}

fn docs() -> PathBuf {
    root().join("docs")
}

/// `train` with small, fast settings, then `extra`.
fn train(extra: &[&dyn AsRef<std::ffi::OsStr>]) -> Output {
    let mut args: Vec<OsString> = [
        "train",
        "--threads",
        "1",
        "--batch-size",
        "2",
        "--positions",
        "32",
        "--eval-tokens",
        "512",
        // docs/ is a handful of pieces: hold out half, so both sides hold some.
        "--held-out-per-mille",
        "500",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    args.extend(extra.iter().map(|arg| arg.as_ref().to_owned()));
    miner(&args)
}

/// The command's stderr, after asserting it failed.
fn failure(output: &Output) -> String {
    assert!(
        !output.status.success(),
        "expected a failure:\n{}",
        String::from_utf8_lossy(&output.stdout)
    );
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// Every `--json` line of a run's stdout.
fn json_lines(stdout: &str) -> Vec<Value> {
    stdout
        .lines()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|error| panic!("{line}: {error}")))
        .collect()
}

fn number(line: &Value, field: &str) -> f64 {
    line[field]
        .as_f64()
        .unwrap_or_else(|| panic!("`{field}` in {line}"))
}

#[test]
fn bad_input_is_refused_before_training_and_before_out_is_written() {
    let temp = tempfile::tempdir().unwrap();
    let out = temp.path().join("out");
    let empty = temp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let binary = temp.path().join("binary.txt");
    std::fs::write(&binary, [0xff, 0xfe, 0x00, 0x01]).unwrap();
    let init = seed_config();
    let steps: [&dyn AsRef<std::ffi::OsStr>; 2] = [&"--steps", &"2"];
    let refused = |args: &[&dyn AsRef<std::ffi::OsStr>], expected: &str| {
        let mut all: Vec<&dyn AsRef<std::ffi::OsStr>> = steps.to_vec();
        all.extend_from_slice(args);
        all.extend_from_slice(&[&"--out", &out]);
        let stderr = failure(&train(&all));
        assert!(stderr.contains(expected), "{expected:?} not in:\n{stderr}");
        assert!(!out.exists(), "--out was written for {expected:?}");
    };

    refused(
        &[&"--init", &init, &"--corpus", &empty],
        "corpus: no text in",
    );
    refused(
        &[
            &"--init",
            &init,
            &"--corpus",
            &temp.path().join("absent.txt"),
        ],
        "absent.txt",
    );
    refused(
        &[&"--init", &init, &"--corpus", &binary],
        "binary.txt is not UTF-8 text",
    );
    refused(
        &[
            &"--init",
            &init,
            &"--corpus",
            &docs(),
            &"--experts",
            &"layer9.expert0",
        ],
        "unknown expert layer9.expert0: the model has 4 layers of 8 experts",
    );
    refused(
        &[&"--from-data-dir", &empty, &"--corpus", &docs()],
        "opening the chain store in",
    );
    refused(&[&"--init", &init], "--corpus <PATH>");
    refused(
        &[&"--init", &init, &"--dataset", &empty, &"--corpus", &docs()],
        "opening the chain store in",
    );

    // A run to resume from, then resumed with another model and with other text.
    let first = temp.path().join("first");
    stdout(&train(&[
        &"--init",
        &init,
        &"--corpus",
        &docs(),
        &"--steps",
        &"1",
        &"--out",
        &first,
    ]));
    let state = first.join("train-state");
    let narrow = temp.path().join("narrow.json");
    let mut config: Value = serde_json::from_slice(&std::fs::read(&init).unwrap()).unwrap();
    config["hidden_size"] = 64.into();
    std::fs::write(&narrow, serde_json::to_vec(&config).unwrap()).unwrap();
    refused(
        &[
            &"--init",
            &narrow,
            &"--corpus",
            &docs(),
            &"--resume",
            &state,
        ],
        "trained on a model of another configuration",
    );
    refused(
        &[
            &"--init",
            &init,
            &"--corpus",
            &docs(),
            &root().join("README.md"),
            &"--resume",
            &state,
        ],
        "it was trained on corpus",
    );
}

#[test]
fn json_reports_each_evaluation_the_loss_falls_and_a_stopped_run_resumes() {
    let temp = tempfile::tempdir().unwrap();
    let out = temp.path().join("out");
    let docs = docs();
    let run = |extra: &[&dyn AsRef<std::ffi::OsStr>]| {
        let mut args: Vec<&dyn AsRef<std::ffi::OsStr>> = vec![
            &"--corpus",
            &docs,
            &"--json",
            &"--eval-every",
            &"10",
            &"--out",
            &out,
        ];
        args.extend_from_slice(extra);
        json_lines(&stdout(&train(&args)))
    };
    let init = seed_config();
    let lines = run(&[
        &"--init",
        &init,
        &"--steps",
        &"40",
        &"--stop-after",
        &"30",
        &"--learning-rate",
        &"0.01",
    ]);
    // Before, at steps 10 and 20, after; then the summary.
    let steps: Vec<(String, u64)> = lines
        .iter()
        .map(|line| {
            let event = line["event"].as_str().unwrap().to_owned();
            let step = line["step"].as_u64().or(line["steps"].as_u64()).unwrap();
            (event, step)
        })
        .collect();
    let expected: Vec<(String, u64)> = [
        ("eval", 0),
        ("eval", 10),
        ("eval", 20),
        ("eval", 30),
        ("done", 30),
    ]
    .iter()
    .map(|(event, step)| ((*event).to_owned(), *step))
    .collect();
    assert_eq!(steps, expected, "{lines:?}");
    let done = lines.last().unwrap();
    let (before, after) = (
        number(done, "eval_loss_before"),
        number(done, "eval_loss_after"),
    );
    assert!(after < before, "held-out loss {before} → {after}");
    assert!(number(done, "eval_bits_per_byte_after") > 0.0, "{done}");
    assert!(number(done, "tokens") >= 30.0 * 2.0 * 32.0, "{done}");
    assert!(number(done, "seconds") > 0.0, "{done}");
    assert_eq!(number(&lines[3], "eval_loss"), after);
    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        assert!(out.join(file).is_file(), "{file}");
    }

    // The resumed run starts where the first stopped and ends at the schedule's 40 steps.
    let state = out.join("train-state");
    let resumed = run(&[&"--init", &init, &"--resume", &state]);
    let first = &resumed[0];
    assert_eq!(
        (first["event"].as_str(), first["step"].as_u64()),
        (Some("eval"), Some(30))
    );
    assert_eq!(number(first, "eval_loss"), after, "the same weights");
    let done = resumed.last().unwrap();
    assert_eq!(done["event"], "done");
    assert_eq!(done["steps"], 40, "{done}");
}

/// Appends `text` to chain D of the store in `data_dir` as a sample that went through every
/// gate under the shipped settings: the teacher passed it, a vote of 100 BLY accepted it (its
/// windows long closed) and the node's own key (`data_dir/node.key`, the validator of a node
/// without `pol.validators`) approved it. Plain text, or a sample stopped at a gate, is not
/// read.
fn add_dataset_entry(data_dir: &Path, text: &str) {
    use blyan_quality::{
        DataRecord, L1Outcome, Licence, Review, ReviewVerdict, Sample, SampleContent,
        TeacherResult, VoteCommit, VoteReveal, VoteVerdict, encode_record, vote_commitment,
    };
    const DAY_MS: u64 = 24 * 3600 * 1000;
    let node_key = data_dir.join("node.key");
    let validator = if node_key.is_file() {
        AuthorKey::read_file(&node_key).unwrap()
    } else {
        let key = AuthorKey::generate();
        key.write_file(&node_key).unwrap();
        key
    };
    let store = ChainStore::open(data_dir.join("chain"), StoreConfig::default()).unwrap();
    let contributor = AuthorKey::generate();
    let voter = AuthorKey::generate();
    // After whatever chain D already holds (an earlier call's review is two days on).
    let tip = store.tip(ChainId::Dataset);
    let tip_ms = store.header(&tip.hash).unwrap().unwrap().timestamp_ms;
    let t0 = tip_ms.max(1_770_000_000_000) + 1;
    let append = |key: &AuthorKey, at: u64, record: DataRecord| {
        let payload = encode_record(&record);
        let tip = store.tip(ChainId::Dataset);
        let mut header = BlockHeader::new_child(&tip, BlockKind::DatasetEntry, &payload, at);
        header.sign(key);
        store.append(&header, &payload).unwrap()
    };
    let sample = Sample::new(
        SampleContent::Text { text: text.into() },
        Licence::Cc0,
        "the miner's tests",
        "en",
        contributor.address(),
    )
    .unwrap();
    let sample = append(&contributor, t0, DataRecord::Sample(sample));
    append(
        &validator,
        t0 + 1,
        DataRecord::TeacherResult(TeacherResult {
            sample,
            bits_per_byte_micros: 2_000_000,
            band_min_micros: 300_000,
            band_max_micros: 8_000_000,
            outcome: L1Outcome::Pass,
        }),
    );
    let salt = [7u8; 32];
    let commit = append(
        &voter,
        t0 + 2,
        DataRecord::VoteCommit(VoteCommit {
            sample,
            voter: voter.address(),
            commitment: vote_commitment(sample, VoteVerdict::Accept, &salt, voter.address()),
            stake: 100,
        }),
    );
    append(
        &voter,
        t0 + 1 + DAY_MS,
        DataRecord::VoteReveal(VoteReveal {
            commit,
            verdict: VoteVerdict::Accept,
            salt: hex::encode(salt),
        }),
    );
    append(
        &validator,
        t0 + 1 + 2 * DAY_MS,
        DataRecord::Review(Review {
            samples: vec![sample],
            verdict: ReviewVerdict::Approve,
            note: String::new(),
        }),
    );
    store.flush().unwrap();
}

#[test]
fn an_expert_fine_tune_uploads_only_its_experts_and_reads_chain_d() {
    let temp = tempfile::tempdir().unwrap();
    let key = temp.path().join("miner.key");
    stdout(&miner(&[
        "keygen".as_ref(),
        "--out".as_ref(),
        key.as_os_str(),
    ]));
    let upload = |checkpoint: &Path, data: &Path| {
        stdout(&miner(&[
            "upload".as_ref(),
            "--checkpoint".as_ref(),
            checkpoint.as_os_str(),
            "--key".as_ref(),
            key.as_os_str(),
            "--data-dir".as_ref(),
            data.as_os_str(),
        ]))
    };
    // A model on a chain: one step from the seed configuration, published.
    let base = temp.path().join("base");
    stdout(&train(&[
        &"--init",
        &seed_config(),
        &"--corpus",
        &docs(),
        &"--steps",
        &"1",
        &"--out",
        &base,
    ]));
    let data = temp.path().join("data");
    let first = upload(&base, &data);
    assert!(first.contains("experts: 32 written"), "{first}");

    // Chain D is empty: training on it alone is refused, naming the cause.
    let tuned = temp.path().join("tuned");
    let stderr = failure(&train(&[
        &"--from-data-dir",
        &data,
        &"--dataset",
        &data,
        &"--steps",
        &"1",
        &"--out",
        &tuned,
    ]));
    assert!(stderr.contains("the dataset (chain D of"), "{stderr}");
    assert!(stderr.contains("is empty"), "{stderr}");
    assert!(!tuned.exists());

    add_dataset_entry(&data, "The database keeps every block of every expert.\n");
    add_dataset_entry(
        &data,
        "Miners fine-tune experts and publish new versions.\n",
    );
    // Fine-tune the expert of layers 1 and 3 that the chain's model routes the most of the
    // first batch to (a one-step probe with the same seed draws the same batch): an expert its
    // router never picks gets no gradient, so nothing of it would change.
    let probe = temp.path().join("probe");
    let lines = json_lines(&stdout(&train(&[
        &"--from-data-dir",
        &data,
        &"--dataset",
        &data,
        &"--corpus",
        &docs(),
        &"--experts",
        &"layer0.expert0",
        &"--steps",
        &"1",
        &"--out",
        &probe,
        &"--json",
    ])));
    let shares = &lines.last().unwrap()["expert_shares"];
    let busiest = |layer: usize| -> String {
        let layer_shares: Vec<f64> = shares[layer]
            .as_array()
            .unwrap()
            .iter()
            .map(|share| share.as_f64().unwrap())
            .collect();
        let expert = (0..layer_shares.len())
            .max_by(|a, b| layer_shares[*a].total_cmp(&layer_shares[*b]))
            .unwrap();
        format!("layer{layer}.expert{expert}")
    };
    let (first_expert, second_expert) = (busiest(1), busiest(3));
    let experts = format!("{first_expert},{second_expert}");
    let trained = train(&[
        &"--from-data-dir",
        &data,
        &"--dataset",
        &data,
        &"--corpus",
        &docs(),
        &"--experts",
        &experts,
        &"--steps",
        &"3",
        &"--out",
        &tuned,
    ]);
    stdout(&trained);
    let stderr = String::from_utf8_lossy(&trained.stderr);
    let documents = std::fs::read_dir(docs()).unwrap().count() + 2;
    assert!(
        stderr.contains(&format!("corpus: {documents} documents")),
        "{stderr}"
    );

    let second = upload(&tuned, &data);
    assert!(
        second.contains("shared blocks: 0 written, 10 unchanged; experts: 2 written, 30 unchanged"),
        "{second}"
    );
    let store = ChainStore::open_read_only(data.join("chain")).unwrap();
    for expert in [
        first_expert.as_str(),
        second_expert.as_str(),
        "layer0.expert0",
    ] {
        let version = store
            .expert_current(expert.parse().unwrap())
            .unwrap()
            .unwrap()
            .version;
        let expected = if expert == "layer0.expert0" { 1 } else { 2 };
        assert_eq!(version, expected, "{expert}");
    }
}
