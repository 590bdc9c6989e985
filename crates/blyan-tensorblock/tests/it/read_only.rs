//! Tensors over a read-only mapping cannot change the block: a write faults.

use std::fs::File;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;

use blyan_tensorblock::TensorBlock;
use memmap2::Mmap;

use crate::support;

/// Environment variable carrying the block file's path to the child process.
const BLOCK_PATH_ENV: &str = "BLYAN_TENSORBLOCK_BLOCK_PATH";

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
