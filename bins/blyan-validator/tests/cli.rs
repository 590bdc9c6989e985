//! `blyan-validator` as a user runs it, against real chain stores in temp dirs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;

use blyan_chain::{AuthorKey, BlockHeader, BlockKind, ChainId, ChainStore, StoreConfig};

fn validator() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_blyan-validator"));
    command.env_clear().env("RUST_LOG", "warn");
    command
}

/// A store with a few signed dataset blocks; returns the payloads' distinct marker bytes.
fn write_store(dir: &Path) -> Vec<u8> {
    let store = ChainStore::open(dir, StoreConfig::default()).unwrap();
    let key = AuthorKey::generate();
    let mut markers = Vec::new();
    for index in 0..4u8 {
        let marker = 0xA0 + index;
        let payload = vec![marker; 4096 + usize::from(index)];
        let tip = store.tip(ChainId::Dataset);
        let mut header = BlockHeader::new_child(
            &tip,
            BlockKind::DatasetEntry,
            &payload,
            1_770_000_000_000 + u64::from(index),
        );
        header.sign(&key);
        store.append(&header, &payload).unwrap();
        markers.push(marker);
    }
    markers
}

#[test]
fn help_runs_without_environment() {
    let output = validator().arg("--help").output().unwrap();
    assert!(output.status.success());
    let text = String::from_utf8(output.stdout).unwrap();
    assert!(text.contains("verify"), "{text}");
}

#[test]
fn verifies_a_sound_store() {
    let dir = tempfile::tempdir().unwrap();
    write_store(dir.path());
    let output = validator()
        .args(["verify", "--json", "--store"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{text} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["ok"], true);
    // Three genesis blocks and the four appended ones.
    assert_eq!(report["blocks"], 7);
}

#[test]
fn names_the_block_whose_payload_was_altered() {
    let dir = tempfile::tempdir().unwrap();
    let markers = write_store(dir.path());
    // Flip one byte of the third appended payload inside its segment file.
    let target = markers[2];
    let mut altered = false;
    for entry in std::fs::read_dir(dir.path().join("segments")).unwrap() {
        let path = entry.unwrap().path();
        let mut bytes = std::fs::read(&path).unwrap();
        let run = vec![target; 4096];
        if let Some(at) = bytes
            .windows(run.len())
            .position(|window| window == run.as_slice())
        {
            bytes[at + 100] ^= 0xFF;
            std::fs::write(&path, &bytes).unwrap();
            altered = true;
        }
    }
    assert!(altered, "the payload was found in a segment file");
    let output = validator()
        .args(["verify", "--json", "--store"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["ok"], false);
    assert_eq!(report["first_bad"]["chain"], "D");
    assert_eq!(report["first_bad"]["height"], 3);
    assert!(
        report["first_bad"]["error"]
            .as_str()
            .unwrap()
            .contains("payload"),
        "{report}"
    );
}

/// Every file under `dir` (relative path → bytes), recursively: the state a read-only tool must
/// leave exactly as it found it.
fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    fn walk(root: &Path, dir: &Path, files: &mut BTreeMap<PathBuf, Vec<u8>>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, files);
            } else {
                let relative = path.strip_prefix(root).unwrap().to_path_buf();
                files.insert(relative, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut files = BTreeMap::new();
    walk(dir, dir, &mut files);
    files
}

#[test]
fn verify_reports_an_unacknowledged_tail_and_changes_no_byte() {
    let dir = tempfile::tempdir().unwrap();
    write_store(dir.path());
    // What a crash between a payload write and its index commit leaves: bytes past the committed
    // end of the newest segment, and a segment file newer than any the index names.
    let segments = dir.path().join("segments");
    let newest = segments.join("0000000001.seg");
    let committed_end = std::fs::metadata(&newest).unwrap().len();
    OpenOptions::new()
        .append(true)
        .open(&newest)
        .unwrap()
        .write_all(&[0xee; 5000])
        .unwrap();
    std::fs::write(segments.join("0000000002.seg"), [0xdd; 100]).unwrap();
    let before = snapshot(dir.path());
    assert!(
        before.keys().any(|path| path.starts_with("db")),
        "the snapshot covers RocksDB's files: {:?}",
        before.keys().collect::<Vec<_>>()
    );

    let output = validator()
        .args(["verify", "--json", "--store"])
        .arg(dir.path())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "a tail is a finding, not a failure: {text} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["blocks"], 7, "{report}");
    let tail = &report["unacknowledged_tail"];
    assert_eq!(tail["segment"], 1, "{report}");
    assert_eq!(tail["committed_end"], committed_end, "{report}");
    assert_eq!(tail["tail_bytes"], 5000, "{report}");
    assert_eq!(
        tail["newer_segments"],
        serde_json::json!([{"segment": 2, "bytes": 100}]),
        "{report}"
    );

    // The text form says what the tail is.
    let output = validator()
        .args(["verify", "--store"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.starts_with("ok: 7 blocks"), "{text}");
    assert!(
        text.contains("unacknowledged tail: 5000 bytes past the committed end"),
        "{text}"
    );

    let after = snapshot(dir.path());
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "verification created or removed files"
    );
    for (path, bytes) in &before {
        assert!(
            after[path] == *bytes,
            "verification changed {}",
            path.display()
        );
    }
}

#[test]
fn store_accepts_a_node_data_directory() {
    let data_dir = tempfile::tempdir().unwrap();
    write_store(&data_dir.path().join("chain"));
    for store in [data_dir.path().to_path_buf(), data_dir.path().join("chain")] {
        let output = validator()
            .args(["verify", "--json", "--store"])
            .arg(&store)
            .output()
            .unwrap();
        assert!(
            output.status.success(),
            "{}: {}",
            store.display(),
            String::from_utf8_lossy(&output.stderr)
        );
        let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        assert_eq!(report["ok"], true, "{report}");
        assert_eq!(report["blocks"], 7, "{report}");
        assert_eq!(
            report["store"],
            data_dir.path().join("chain").display().to_string(),
            "{report}"
        );
    }
}

#[test]
fn refuses_a_directory_without_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let output = validator()
        .args(["verify", "--store"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("holds no chain store"), "{stderr}");
    // It names what it expected, and created nothing.
    assert!(stderr.contains("node data directory"), "{stderr}");
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
}
