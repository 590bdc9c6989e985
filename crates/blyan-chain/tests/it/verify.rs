//! Full verification finds tampering and names the first bad block precisely.

use std::os::unix::fs::FileExt as _;
use std::path::Path;

use blyan_chain::{
    AuthorKey, BlockHash, ChainId, ChainStore, Error, GenesisSpec, PAYLOAD_ALIGN_BYTES,
    hash_payload,
};

use crate::common::{append_entry, assert_verifies, bytes, fast_config, open};

/// Opens the store's RocksDB directly, as an attacker or a disk fault would change it.
fn raw_db(store_dir: &Path) -> rocksdb::DB {
    let path = store_dir.join("db");
    let names = rocksdb::DB::list_cf(&rocksdb::Options::default(), &path).unwrap();
    rocksdb::DB::open_cf(&rocksdb::Options::default(), &path, names).unwrap()
}

#[test]
fn a_clean_store_verifies_and_reports_progress() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = AuthorKey::generate();
    for seed in 0..20 {
        append_entry(&store, &bytes(seed, 1000 + seed as usize), &key);
    }
    let mut calls = 0;
    let report = store
        .verify(|progress| {
            calls += 1;
            assert_eq!(progress.blocks, calls);
            assert_eq!(progress.blocks_total, 23);
        })
        .unwrap();
    assert!(report.is_ok());
    assert_eq!((report.blocks, calls), (23, 23));
    let expected_bytes: u64 =
        (0..20).map(|seed| 1000 + seed).sum::<u64>() + blyan_chain::COVENANT_TEXT.len() as u64;
    assert_eq!(report.payload_bytes, expected_bytes);
}

#[test]
fn a_flipped_payload_byte_names_its_block() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = AuthorKey::generate();
    let hashes: Vec<BlockHash> = (0..5)
        .map(|seed| append_entry(&store, &bytes(seed, 4096), &key))
        .collect();
    let target = hashes[3];
    // Find the payload's bytes in the segment and flip one.
    let handle = store.payload(&target).unwrap().unwrap();
    let needle = handle.to_vec();
    drop(handle);
    let segment = dir.path().join("segments").join("0000000001.seg");
    let contents = std::fs::read(&segment).unwrap();
    let offset = contents
        .windows(needle.len())
        .step_by(PAYLOAD_ALIGN_BYTES as usize)
        .position(|window| window == needle)
        .unwrap()
        * PAYLOAD_ALIGN_BYTES as usize;
    let file = std::fs::OpenOptions::new()
        .write(true)
        .open(&segment)
        .unwrap();
    file.write_all_at(&[needle[100] ^ 0x01], (offset + 100) as u64)
        .unwrap();

    let report = store.verify(|_| {}).unwrap();
    let bad = report.first_bad.expect("the flipped byte must be found");
    assert_eq!(bad.hash, Some(target));
    assert_eq!(
        (bad.chain, bad.height, bad.seq),
        (Some(ChainId::Dataset), Some(4), 6)
    );
    assert!(matches!(bad.error, Error::PayloadHashMismatch { block, .. } if block == target));
    assert_eq!(report.blocks, 6, "every block before it verified");
    assert!(matches!(
        store.payload_verified(&target),
        Err(Error::StoredPayloadCorrupt { block, .. }) if block == target
    ));
}

/// Flips the top bit of byte `at` of the stored payload whose bytes are `original`, in its
/// segment file, while no store is open.
fn flip_stored_byte(store_dir: &Path, original: &[u8], at: usize) {
    for entry in std::fs::read_dir(store_dir.join("segments")).unwrap() {
        let path = entry.unwrap().path();
        let contents = std::fs::read(&path).unwrap();
        if let Some(offset) = contents
            .windows(original.len())
            .step_by(PAYLOAD_ALIGN_BYTES as usize)
            .position(|window| window == original)
        {
            let offset = offset * PAYLOAD_ALIGN_BYTES as usize + at;
            let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
            file.write_all_at(&[original[at] ^ 0x80], offset as u64)
                .unwrap();
            return;
        }
    }
    panic!("the payload is in no segment");
}

/// What the read path guarantees about a payload changed on disk after its append:
/// `payload_verified` (what the model loader uses) and `verify` refuse it with typed errors
/// naming the block and both hashes; `payload` hands out the mapping without hashing it, so it
/// shows the changed bytes (its documented contract: hashing 16 MiB costs milliseconds, a handle
/// ~0.4 µs).
#[test]
fn a_flipped_payload_byte_is_refused_rather_than_served() {
    let dir = tempfile::tempdir().unwrap();
    let key = AuthorKey::generate();
    let original = bytes(7, 8192);
    let (target, committed) = {
        let store = open(dir.path());
        append_entry(&store, &bytes(6, 100), &key);
        let target = append_entry(&store, &original, &key);
        append_entry(&store, &bytes(8, 100), &key);
        let committed = store.header(&target).unwrap().unwrap().payload_hash;
        (target, committed)
    };
    flip_stored_byte(dir.path(), &original, 4000);
    let mut altered = original.clone();
    altered[4000] ^= 0x80;

    for read_only in [false, true] {
        let store = if read_only {
            ChainStore::open_read_only_with(dir.path(), fast_config(), &GenesisSpec::shipped())
                .unwrap()
        } else {
            open(dir.path())
        };
        match store.payload_verified(&target) {
            Err(Error::StoredPayloadCorrupt {
                block,
                got,
                expected,
            }) => {
                assert_eq!(block, target);
                assert_eq!(got, hash_payload(&altered));
                assert_eq!(expected, committed);
            }
            other => panic!("read_only {read_only}: expected StoredPayloadCorrupt, got {other:?}"),
        }
        let bad = store.verify(|_| {}).unwrap().first_bad.unwrap();
        assert_eq!(bad.hash, Some(target));
        assert!(
            matches!(
                bad.error,
                Error::PayloadHashMismatch { block, got, expected }
                    if block == target && got == hash_payload(&altered) && expected == committed
            ),
            "{:?}",
            bad.error
        );
        // The unverified read is not a check: it maps what is on disk.
        assert_eq!(&*store.payload(&target).unwrap().unwrap(), &altered[..]);
    }
}

#[test]
fn a_swapped_header_is_found_by_its_hash() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = AuthorKey::generate();
    let first = append_entry(&store, b"one", &key);
    let second = append_entry(&store, b"two", &key);
    drop(store);
    {
        let db = raw_db(dir.path());
        let headers = db.cf_handle("headers").unwrap();
        let other = db.get_cf(headers, first.as_bytes()).unwrap().unwrap();
        db.put_cf(headers, second.as_bytes(), other).unwrap();
    }
    let store = open(dir.path());
    let bad = store.verify(|_| {}).unwrap().first_bad.unwrap();
    assert_eq!(bad.hash, Some(second));
    assert!(
        matches!(bad.error, Error::HeaderHashMismatch { got, expected } if got == first && expected == second)
    );
    assert!(matches!(
        store.header(&second),
        Err(Error::Corruption { .. })
    ));
}

#[test]
fn a_missing_index_entry_is_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = AuthorKey::generate();
    let hash = append_entry(&store, b"indexed", &key);
    let height = store.header(&hash).unwrap().unwrap().height;
    drop(store);
    {
        let db = raw_db(dir.path());
        let by_height = db.cf_handle("by_height").unwrap();
        let mut key = vec![ChainId::Dataset.letter()];
        key.extend_from_slice(&height.to_be_bytes());
        key.extend_from_slice(hash.as_bytes());
        db.delete_cf(by_height, key).unwrap();
    }
    let store = open(dir.path());
    let bad = store.verify(|_| {}).unwrap().first_bad.unwrap();
    assert_eq!(bad.hash, Some(hash));
    assert!(matches!(bad.error, Error::Corruption { .. }));
}

#[test]
fn verification_after_many_blocks_stays_clean() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = AuthorKey::generate();
    for seed in 0..200 {
        append_entry(&store, &bytes(seed, (seed * 37 % 3000) as usize), &key);
    }
    assert_verifies(&store);
}
