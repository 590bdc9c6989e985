//! `blyan-validator` as a user runs it, against real chain stores in temp dirs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
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
            1_800_000_000_000 + u64::from(index),
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

#[test]
fn refuses_a_directory_without_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let output = validator()
        .args(["verify", "--store"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("holds no chain store"));
}
