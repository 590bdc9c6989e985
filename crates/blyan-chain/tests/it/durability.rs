//! A node facing a full disk: the free-disk floor refuses writes while reads go on, and a write
//! that fails anyway (a file size limit, standing in for `ENOSPC`) is rolled back, leaving the
//! store writable again the moment space returns, without a restart.
//!
//! The forced write failure runs in a child process (this test binary, re-run on one ignored
//! test) under `RLIMIT_FSIZE`, with `SIGXFSZ` ignored so that a write past the limit fails with
//! `EFBIG` instead of killing the process: the limit is per process, and the other tests of this
//! binary must not run under it.

use std::path::{Path, PathBuf};
use std::process::Command;

use blyan_chain::{
    AuthorKey, BlockHash, BlockKind, ChainId, ChainStore, Durability, Error, StoreConfig,
};
use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};

use crate::common::{append_entry, assert_verifies, bytes, on_tip, open};

const FSIZE_CHILD_DIR_ENV: &str = "BLYAN_FSIZE_CHILD_DIR";

/// What the child writes once it is done, so the parent knows its assertions ran.
const CHILD_DONE_FILE: &str = "child-done";

fn expect_disk_full<T: std::fmt::Debug>(
    result: blyan_chain::Result<T>,
    write_bytes: u64,
    floor: u64,
) {
    match result {
        Err(error @ Error::DiskFull { .. }) => {
            assert!(error.is_out_of_space());
            assert!(
                !error.is_invalid_block(),
                "a full disk is not the block's fault"
            );
            let Error::DiskFull {
                free_bytes,
                write_bytes: got_write,
                floor_bytes,
                ..
            } = error
            else {
                unreachable!("matched above");
            };
            assert!(free_bytes < floor_bytes, "{free_bytes} < {floor_bytes}");
            assert_eq!(got_write, write_bytes);
            assert_eq!(floor_bytes, floor);
        }
        other => panic!("expected DiskFull, got {other:?}"),
    }
}

#[test]
fn appends_below_the_free_disk_floor_are_refused_while_reads_go_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = AuthorKey::generate();
    let kept_payload = bytes(1, 4096);
    let kept = append_entry(&store, &kept_payload, &key);

    // A floor above everything free: the disk is "full" for the store.
    let free = store.free_bytes().unwrap();
    let floor = free + (1 << 40);
    store.set_free_bytes_min(floor);
    let payload = bytes(2, 40_000);
    let header = on_tip(
        &store,
        ChainId::Dataset,
        BlockKind::DatasetEntry,
        &payload,
        &key,
    );
    expect_disk_full(store.append(&header, &payload), 40_000, floor);
    expect_disk_full(store.append_reader(&header, &payload[..]), 40_000, floor);
    expect_disk_full(store.stage_payload(&header), 40_000, floor);

    // Reads go on.
    assert_eq!(
        &*store.payload_verified(&kept).unwrap().unwrap(),
        &kept_payload[..]
    );
    assert_eq!(store.chain_info(ChainId::Dataset).blocks, 2);
    assert_verifies(&store);

    // A stage opened before the disk filled refuses its writes, and its append, too.
    store.set_free_bytes_min(0);
    let stage = store.stage_payload(&header).unwrap();
    store.set_free_bytes_min(floor);
    expect_disk_full(stage.write_at(0, &payload), 40_000, floor);
    assert_eq!(stage.missing_bytes(), 40_000, "nothing was written");

    // Space returns: the same store, not reopened, accepts again.
    store.set_free_bytes_min(free / 2);
    assert_eq!(store.free_bytes_min(), free / 2);
    stage.write_at(0, &payload).unwrap();
    let staged = store.append_staged(&header, stage).unwrap();
    assert_eq!(
        &*store.payload_verified(&staged).unwrap().unwrap(),
        &payload[..]
    );
    append_entry(&store, &bytes(3, 1000), &key);
    assert_eq!(store.chain_info(ChainId::Dataset).blocks, 4);
    assert_verifies(&store);
}

fn newest_segment(store_dir: &Path) -> PathBuf {
    std::fs::read_dir(store_dir.join("segments"))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "seg"))
        .max()
        .expect("a store has a segment")
}

fn file_len(path: &Path) -> u64 {
    std::fs::metadata(path).unwrap().len()
}

fn expect_rolled_back(result: blyan_chain::Result<BlockHash>, block: BlockHash) {
    match result {
        Err(error @ Error::PayloadWrite { .. }) => {
            assert!(error.is_out_of_space(), "{error}");
            assert_eq!(error.block(), Some(block));
            let Error::PayloadWrite { source, .. } = error else {
                unreachable!("matched above");
            };
            assert_eq!(source.kind(), std::io::ErrorKind::FileTooLarge, "{source}");
        }
        other => panic!("expected a rolled-back PayloadWrite, got {other:?}"),
    }
}

#[test]
#[ignore = "the child process of a_write_failure_rolls_back_and_appends_resume_without_a_restart"]
fn fsize_child() {
    let dir = std::env::var_os(FSIZE_CHILD_DIR_ENV)
        .expect("BLYAN_FSIZE_CHILD_DIR names the store directory");
    fsize_child_run(Path::new(&dir));
}

fn fsize_child_run(dir: &Path) {
    let config = StoreConfig {
        durability: Durability::Synced,
        free_bytes_min: 0,
        ..StoreConfig::default()
    };
    let store = ChainStore::open(dir, config).unwrap();
    let key = AuthorKey::generate();
    let before: Vec<(BlockHash, Vec<u8>)> = (0..4)
        .map(|seed| {
            let payload = bytes(seed, 64 * 1024);
            (append_entry(&store, &payload, &key), payload)
        })
        .collect();
    let segment = newest_segment(dir);
    let committed = file_len(&segment);

    // Files may no longer grow past 16 KiB beyond the segment's end: the next payload fails
    // halfway through its write, as on a disk that fills up.
    let unlimited = getrlimit(Resource::Fsize);
    setrlimit(
        Resource::Fsize,
        Rlimit {
            current: Some(committed + 16 * 1024),
            maximum: unlimited.maximum,
        },
    )
    .unwrap();
    let big = bytes(99, 256 * 1024);
    let header = on_tip(
        &store,
        ChainId::Dataset,
        BlockKind::DatasetEntry,
        &big,
        &key,
    );
    expect_rolled_back(store.append(&header, &big), header.hash());
    assert_eq!(
        file_len(&segment),
        committed,
        "the partial write is cut off"
    );
    expect_rolled_back(store.append_reader(&header, &big[..]), header.hash());
    assert_eq!(
        file_len(&segment),
        committed,
        "the partial write is cut off"
    );

    // Reads go on, and nothing was committed.
    for (hash, payload) in &before {
        assert_eq!(
            &*store.payload_verified(hash).unwrap().unwrap(),
            &payload[..]
        );
    }
    assert!(!store.contains(&header.hash()).unwrap());
    assert_eq!(store.chain_info(ChainId::Dataset).blocks, 5);

    // Space returns: the same store, not reopened, appends the same block.
    setrlimit(Resource::Fsize, unlimited).unwrap();
    let hash = store.append(&header, &big).unwrap();
    assert_eq!(&*store.payload_verified(&hash).unwrap().unwrap(), &big[..]);
    append_entry(&store, &bytes(100, 1000), &key);
    assert_eq!(store.chain_info(ChainId::Dataset).blocks, 7);
    assert_verifies(&store);
    std::fs::write(dir.join(CHILD_DONE_FILE), hash.to_string()).unwrap();
}

/// Runs this test binary's ignored test `name` in a child with `SIGXFSZ` ignored (an ignored
/// signal stays ignored across `exec`), the store directory in `env`.
fn run_child_ignoring_sigxfsz(name: &str, env: &str, dir: &Path) {
    let exe = std::env::current_exe().unwrap();
    let status = Command::new("sh")
        .arg("-c")
        .arg("trap '' XFSZ; exec \"$0\" \"$@\"")
        .arg(exe)
        .args([
            name,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
        ])
        .env(env, dir)
        .status()
        .unwrap();
    assert!(status.success(), "the child failed: {status}");
}

#[test]
fn a_write_failure_rolls_back_and_appends_resume_without_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let store_dir = dir.path().join("store");
    run_child_ignoring_sigxfsz("durability::fsize_child", FSIZE_CHILD_DIR_ENV, &store_dir);
    let done = std::fs::read_to_string(store_dir.join(CHILD_DONE_FILE))
        .expect("the child ran its assertions to the end");

    // Reopened, the store holds what the child appended after the failure.
    let store = open(&store_dir);
    assert_eq!(store.chain_info(ChainId::Dataset).blocks, 7);
    let appended = BlockHash::parse(&done).unwrap();
    assert!(store.contains(&appended).unwrap());
    assert_verifies(&store);
}
