//! The read-only open: no byte of the store changes, nothing is created, every write is refused
//! with a typed error, and verification reports (without removing) an unacknowledged tail.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use blyan_chain::{
    AuthorKey, BlockKind, CHAIN_DIR_NAME, ChainId, ChainStore, Error, GenesisSpec, NewerSegment,
    UnacknowledgedTail, encode_block,
};

use crate::common::{append_entry, assert_verifies, bytes, fast_config, on_tip, open};

/// Every file under `dir` (relative path → bytes).
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

fn assert_same_files(before: &BTreeMap<PathBuf, Vec<u8>>, after: &BTreeMap<PathBuf, Vec<u8>>) {
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>(),
        "files were created or removed"
    );
    for (path, bytes) in before {
        assert!(after[path] == *bytes, "{} changed", path.display());
    }
}

fn open_read_only(dir: &Path) -> ChainStore {
    ChainStore::open_read_only_with(dir, fast_config(), &GenesisSpec::shipped()).unwrap()
}

#[test]
fn a_read_only_store_changes_no_byte_refuses_writes_and_reports_the_tail() {
    let dir = tempfile::tempdir().unwrap();
    let key = AuthorKey::generate();
    let kept = {
        let store = open(dir.path());
        (0..4)
            .map(|seed| append_entry(&store, &bytes(seed, 5000), &key))
            .collect::<Vec<_>>()
    };
    let segments = dir.path().join("segments");
    let newest = segments.join("0000000001.seg");
    let committed_end = std::fs::metadata(&newest).unwrap().len();
    OpenOptions::new()
        .append(true)
        .open(&newest)
        .unwrap()
        .write_all(&[0xee; 12_345])
        .unwrap();
    std::fs::write(segments.join("0000000002.seg"), [0xdd; 100]).unwrap();
    let before = snapshot(dir.path());

    let store = open_read_only(dir.path());
    assert!(store.is_read_only());
    assert_eq!(store.chain_info(ChainId::Dataset).blocks, 5);
    for (seed, hash) in kept.iter().enumerate() {
        let payload = store.payload_verified(hash).unwrap().unwrap();
        assert_eq!(&*payload, &bytes(seed as u64, 5000)[..]);
    }

    let header = on_tip(
        &store,
        ChainId::Dataset,
        BlockKind::DatasetEntry,
        b"refused",
        &key,
    );
    fn refused<T: std::fmt::Debug>(result: blyan_chain::Result<T>, store: &Path, operation: &str) {
        match result {
            Err(Error::ReadOnly {
                path,
                operation: got,
            }) => {
                assert_eq!(path, store);
                assert_eq!(got, operation);
            }
            other => panic!("{operation}: expected ReadOnly, got {other:?}"),
        }
    }
    refused(store.append(&header, b"refused"), dir.path(), "append");
    refused(
        store.append_reader(&header, &b"refused"[..]),
        dir.path(),
        "append",
    );
    refused(
        store.submit(&encode_block(&header, b"refused")),
        dir.path(),
        "submit",
    );
    let mut export = Vec::new();
    store
        .export(ChainId::Dataset, 0, u64::MAX, &mut export)
        .unwrap();
    refused(store.import(&export[..]), dir.path(), "import");
    store.flush().unwrap();

    let report = store.verify(|_| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.first_bad);
    assert_eq!(report.blocks, 7);
    assert_eq!(
        report.unacknowledged_tail,
        Some(UnacknowledgedTail {
            segment: 1,
            committed_end,
            tail_bytes: 12_345,
            newer_segments: vec![NewerSegment {
                segment: 2,
                bytes: 100,
            }],
        })
    );
    drop(store);
    assert_same_files(&before, &snapshot(dir.path()));

    // A read-write open recovers: the tail is gone, and verification finds none.
    drop(open(dir.path()));
    assert_eq!(std::fs::metadata(&newest).unwrap().len(), committed_end);
    assert!(!segments.join("0000000002.seg").exists());
    let report = open_read_only(dir.path()).verify(|_| {}).unwrap();
    assert!(report.is_ok() && report.unacknowledged_tail.is_none());
}

#[test]
fn a_read_only_open_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    match ChainStore::open_read_only(dir.path()) {
        Err(Error::NoStore { path }) => assert_eq!(path, dir.path()),
        other => panic!("expected NoStore, got {other:?}"),
    }
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    let absent = dir.path().join("absent");
    assert!(matches!(
        ChainStore::open_read_only(&absent),
        Err(Error::NoStore { .. })
    ));
    assert!(!absent.exists());
}

#[test]
fn locate_accepts_a_store_or_a_data_dir_holding_one() {
    let data_dir = tempfile::tempdir().unwrap();
    let store_dir = data_dir.path().join(CHAIN_DIR_NAME);
    drop(open(&store_dir));
    assert_eq!(ChainStore::locate(&store_dir).unwrap(), store_dir);
    assert_eq!(ChainStore::locate(data_dir.path()).unwrap(), store_dir);
    let elsewhere = tempfile::tempdir().unwrap();
    let error = ChainStore::locate(elsewhere.path()).unwrap_err();
    assert!(
        matches!(&error, Error::NoStore { path } if path == elsewhere.path()),
        "{error:?}"
    );
    let message = error.to_string();
    assert!(
        message.contains("holds no chain store") && message.contains("chain/"),
        "{message}"
    );
}

#[test]
fn a_read_only_store_beside_a_writer_sees_the_store_as_it_opened() {
    let dir = tempfile::tempdir().unwrap();
    let writer = open(dir.path());
    let key = AuthorKey::generate();
    let first = append_entry(&writer, &bytes(1, 3000), &key);
    writer.flush().unwrap();

    let reader = open_read_only(dir.path());
    assert_eq!(reader.tip(ChainId::Dataset).hash, first);
    let later = append_entry(&writer, &bytes(2, 3000), &key);
    // The writer's store moved on; the reader's view did not, and it still verifies.
    assert_eq!(reader.tip(ChainId::Dataset).hash, first);
    assert!(!reader.contains(&later).unwrap());
    let report = reader.verify(|_| {}).unwrap();
    assert!(report.is_ok(), "{:?}", report.first_bad);
    assert_eq!(report.blocks, 4);
    assert_eq!(
        &*reader.payload_verified(&first).unwrap().unwrap(),
        &bytes(1, 3000)[..]
    );
    assert_verifies(&writer);
}
