//! Tensors from the safe API cannot change the block: their bytes lie in a read-only mapping,
//! so a write through them faults. Checked over a `memmap2::Mmap` and over a chain payload.

use std::collections::BTreeMap;
use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};

use blyan_chain::{
    AuthorKey, BlockHash, BlockHeader, BlockKind, ChainId, ChainStore, ExpertName,
    GENESIS_TIMESTAMP_MS, StoreConfig,
};
use blyan_tensorblock::TensorBlock;
use memmap2::Mmap;
use tch::Tensor;

use crate::support;

/// Environment variable carrying the block file's path to the child process.
const BLOCK_PATH_ENV: &str = "BLYAN_TENSORBLOCK_BLOCK_PATH";
/// Environment variables carrying the chain store's directory and the block's hash.
const STORE_DIR_ENV: &str = "BLYAN_TENSORBLOCK_STORE_DIR";
const BLOCK_HASH_ENV: &str = "BLYAN_TENSORBLOCK_BLOCK_HASH";

fn mapped(path: &Path) -> TensorBlock<Mmap> {
    // SAFETY: the file is private to this test and not modified while mapped.
    let map = unsafe { Mmap::map(&File::open(path).unwrap()) }.unwrap();
    TensorBlock::new(map).unwrap()
}

#[test]
fn tensors_over_a_memmap_point_into_a_read_only_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("expert.tb");
    std::fs::write(&path, support::expert_block()).unwrap();
    let block = mapped(&path);
    for name in ["w1", "w2", "w3"] {
        let tensor = block.tensor(name).unwrap();
        assert!(!tensor.requires_grad());
        let permissions = support::mapping_permissions(tensor.data_ptr() as usize);
        assert!(
            permissions.starts_with("r-"),
            "{name} is in a {permissions} mapping"
        );
    }
}

/// An in-place op on a tensor over a read-only mapping kills the process with SIGSEGV, and the
/// file keeps its bytes. The write runs in a child process of the test binary, which the parent
/// expects to die.
#[test]
fn a_write_through_a_tensor_faults_instead_of_changing_the_block() {
    const TEST: &str = "read_only::a_write_through_a_tensor_faults_instead_of_changing_the_block";
    if support::is_child(TEST) {
        let path = std::env::var_os(BLOCK_PATH_ENV).expect("block path from the parent");
        let block = mapped(Path::new(&path));
        let mut tensor = block.tensor("w1").unwrap();
        let _ = tensor.fill_(42.0);
        // Unreachable when the mapping is read-only; printing it fails the parent's check.
        println!("write succeeded");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("expert.tb");
    let bytes = support::expert_block();
    std::fs::write(&path, &bytes).unwrap();
    let output = support::run_as_child(TEST, &[(BLOCK_PATH_ENV, path.as_os_str())]);
    let log = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.signal(),
        Some(libc::SIGSEGV),
        "child should die of SIGSEGV, ended with {}:\n{log}",
        output.status
    );
    assert!(!log.contains("write succeeded"));
    assert_eq!(std::fs::read(&path).unwrap(), bytes);
}

/// Every payload segment file under a store directory, with its bytes.
fn segment_files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|extension| extension == "seg") {
                files.insert(path.clone(), std::fs::read(&path).unwrap());
            }
        }
    }
    files
}

/// The chain's payload handle through the safe API: an in-place add on an expert tensor kills
/// the process with SIGSEGV (or SIGBUS), because the chain maps its segments read-only, and
/// every segment file keeps its bytes. The add runs in a child process of the test binary.
#[test]
fn an_in_place_add_on_a_chain_payload_tensor_faults_and_leaves_the_segment_unchanged() {
    const TEST: &str = "read_only::an_in_place_add_on_a_chain_payload_tensor_faults_and_leaves_the_segment_unchanged";
    if support::is_child(TEST) {
        let dir = std::env::var_os(STORE_DIR_ENV).expect("store directory from the parent");
        let hash = std::env::var(BLOCK_HASH_ENV).expect("block hash from the parent");
        let store = ChainStore::open(Path::new(&dir), StoreConfig::default()).unwrap();
        let handle = store.payload(&BlockHash::parse(&hash).unwrap()).unwrap();
        let block = TensorBlock::new(handle.expect("the parent appended the block")).unwrap();
        let mut w1 = block.tensor("w1").unwrap();
        let ones = Tensor::ones_like(&w1);
        let _ = w1.f_add_(&ones);
        // Unreachable when the mapping is read-only; printing it fails the parent's check.
        println!("write succeeded");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let payload = support::expert_block();
    let hash = {
        let store = ChainStore::open(dir.path(), StoreConfig::default()).unwrap();
        let tip = store.tip(ChainId::Parameters);
        let mut header = BlockHeader::new_child(
            &tip,
            BlockKind::Expert,
            &payload,
            GENESIS_TIMESTAMP_MS + 1_000,
        );
        header.meta.expert = Some(ExpertName::new(0, 0).unwrap());
        header.meta.version = 1;
        header.sign(&AuthorKey::generate());
        store.append(&header, &payload).unwrap()
    };
    let before = segment_files(dir.path());
    assert!(
        before
            .values()
            .any(|bytes| bytes.windows(payload.len()).any(|window| window == payload)),
        "the payload lies in a segment file"
    );

    let output = support::run_as_child(
        TEST,
        &[
            (STORE_DIR_ENV, dir.path().as_os_str()),
            (BLOCK_HASH_ENV, hash.to_string().as_ref()),
        ],
    );
    let log = String::from_utf8_lossy(&output.stdout);
    assert!(
        matches!(output.status.signal(), Some(libc::SIGSEGV | libc::SIGBUS)),
        "child should die of SIGSEGV or SIGBUS, ended with {}:\n{log}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(!log.contains("write succeeded"));
    assert_eq!(segment_files(dir.path()), before);
    // And the store still serves the block as written.
    let store = ChainStore::open(dir.path(), StoreConfig::default()).unwrap();
    let handle = store.payload_verified(&hash).unwrap().unwrap();
    assert_eq!(AsRef::<[u8]>::as_ref(&handle), payload.as_slice());
}
