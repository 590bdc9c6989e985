//! The store's contract: genesis, lookups, indices, zero-copy payloads, reopen and reclaim.

use std::fs::OpenOptions;
use std::io::Write as _;

use blyan_chain::{
    AuthorKey, BlockKind, COVENANT_TEXT, ChainId, ChainStore, Durability, Error, ExpertName,
    GenesisSpec, PAYLOAD_ALIGN_BYTES, PayloadHandle, Relation, SEGMENT_BYTES_TARGET_MIN,
    StoreConfig, encode_block, hash_payload,
};

use crate::common::{
    append_entry, assert_verifies, bytes, expert_block, fast_config, on_tip, open,
};

#[test]
fn a_new_store_holds_the_three_genesis_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let spec = GenesisSpec::shipped();
    let info = store.info();
    assert_eq!(info.chains.len(), 3);
    for (chain, expected) in ChainId::ALL.iter().zip(spec.hashes()) {
        let chain_info = store.chain_info(*chain);
        assert_eq!(chain_info.genesis, expected);
        assert_eq!(
            (
                chain_info.tip.height,
                chain_info.tip.hash,
                chain_info.blocks
            ),
            (0, expected, 1)
        );
    }
    let meta_genesis = store.tip(ChainId::Meta).hash;
    assert_eq!(
        &*store.payload(&meta_genesis).unwrap().unwrap(),
        COVENANT_TEXT.as_bytes()
    );
    assert_eq!(info.covenant_hash, spec.covenant_hash());
    let dependents = store.dependents(&meta_genesis).unwrap();
    assert_eq!(dependents.len(), 2);
    assert!(dependents.iter().all(|d| d.relation == Relation::DependsOn));
    assert_verifies(&store);

    drop(store);
    let reopened = open(dir.path());
    assert_eq!(reopened.info().chains, info.chains);
}

fn assert_owner<T: AsRef<[u8]> + Send + Sync + Clone + 'static>() {}

#[test]
fn payload_handles_are_zero_copy_aligned_and_outlive_the_store() {
    assert_owner::<PayloadHandle>();
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = AuthorKey::generate();
    let mut hashes = Vec::new();
    for (seed, len) in [(1, 3), (2, 1000), (3, 70_000), (4, 1), (5, 0)] {
        hashes.push((
            append_entry(&store, &bytes(seed, len), &key),
            bytes(seed, len),
        ));
    }
    let mut handles = Vec::new();
    for (hash, expected) in &hashes {
        let first = store.payload(hash).unwrap().unwrap();
        let second = store.payload(hash).unwrap().unwrap();
        assert_eq!(&*first, &expected[..]);
        assert_eq!(
            first.as_ptr() as usize % PAYLOAD_ALIGN_BYTES as usize,
            0,
            "payload not 64-byte aligned"
        );
        assert_eq!(
            first.as_ptr(),
            second.as_ptr(),
            "two reads must share one mapping, not copy"
        );
        handles.push(first.clone());
    }
    drop(store);
    // The mappings outlive the store; reopening (and reclaiming the tail) does not disturb them.
    let reopened = open(dir.path());
    for (handle, (_, expected)) in handles.iter().zip(&hashes) {
        assert_eq!(&**handle, &expected[..]);
    }
    drop(reopened);
    let from_thread = std::thread::spawn(move || handles.iter().map(|h| h.len()).sum::<usize>());
    assert_eq!(from_thread.join().unwrap(), 3 + 1000 + 70_000 + 1);
}

#[test]
fn large_payloads_round_trip_through_both_append_paths() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = AuthorKey::generate();
    let big = bytes(9, 16 << 20);
    let sliced = store
        .append(&expert_block(&store, "layer0.expert0", 1, &big, &key), &big)
        .unwrap();
    let streamed_header = expert_block(&store, "layer0.expert0", 2, &big[1..], &key);
    let streamed = store.append_reader(&streamed_header, &big[1..]).unwrap();
    assert_eq!(
        &*store.payload_verified(&sliced).unwrap().unwrap(),
        &big[..]
    );
    assert_eq!(
        &*store.payload_verified(&streamed).unwrap().unwrap(),
        &big[1..]
    );
    assert_verifies(&store);
}

#[test]
fn a_refused_streamed_payload_leaves_nothing_behind() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = AuthorKey::generate();
    let good = bytes(1, 5000);
    let header = on_tip(
        &store,
        ChainId::Dataset,
        BlockKind::DatasetEntry,
        &good,
        &key,
    );
    let mut bad = good.clone();
    bad[4999] ^= 1;
    let segment = dir.path().join("segments").join("0000000001.seg");
    let segment_bytes = std::fs::read(&segment).unwrap();
    let blocks = store.block_count();
    match store.append_reader(&header, &bad[..]) {
        Err(Error::PayloadHashMismatch {
            block,
            got,
            expected,
        }) => {
            assert_eq!(block, header.hash());
            assert_eq!(got, hash_payload(&bad));
            assert_eq!(expected, header.payload_hash);
        }
        other => panic!("expected PayloadHashMismatch, got {other:?}"),
    }
    // The streamed bytes were cut off again: the segment is byte for byte what it was.
    assert_eq!(std::fs::read(&segment).unwrap(), segment_bytes);
    assert_eq!(store.block_count(), blocks);
    assert!(!store.contains(&header.hash()).unwrap());
    let hash = store.append_reader(&header, &good[..]).unwrap();
    assert_eq!(&*store.payload(&hash).unwrap().unwrap(), &good[..]);
    assert_verifies(&store);
}

#[test]
fn blocks_are_listed_by_height_and_found_by_hash() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = AuthorKey::generate();
    let hashes: Vec<_> = (0..10u32)
        .map(|i| append_entry(&store, &i.to_le_bytes(), &key))
        .collect();
    let page = store.blocks(ChainId::Dataset, 3, 4).unwrap();
    assert_eq!(
        page.iter().map(|b| b.header.height).collect::<Vec<_>>(),
        vec![3, 4, 5, 6]
    );
    assert_eq!(page[0].hash, hashes[2]);
    assert_eq!(store.blocks(ChainId::Dataset, 10, 100).unwrap().len(), 1);
    assert!(store.blocks(ChainId::Dataset, 11, 100).unwrap().is_empty());
    // The unpaged walk sees the same blocks in the same order, and stops at its chain's end.
    let walked: Vec<_> = store
        .headers_from(ChainId::Dataset, 3)
        .map(|sealed| sealed.unwrap().hash)
        .collect();
    assert_eq!(walked, hashes[2..].to_vec());
    assert_eq!(store.headers_from(ChainId::Dataset, 11).count(), 0);
    assert_eq!(
        store.blocks(ChainId::Meta, 0, 100).unwrap().len(),
        1,
        "chains do not mix"
    );
    assert_eq!(
        store.block_hashes_at(ChainId::Dataset, 5).unwrap(),
        vec![hashes[4]]
    );

    let sealed = store.sealed_header(&hashes[0]).unwrap().unwrap();
    let json = serde_json::to_value(&sealed).unwrap();
    assert_eq!(json["hash"], hashes[0].to_string());
    assert_eq!(json["height"], 1);
    assert_eq!(json["author"], key.address().to_string());
    assert_eq!(store.dependents(&hashes[0]).unwrap()[0].block, hashes[1]);
    assert_eq!(
        store.dependents(&hashes[0]).unwrap()[0].relation,
        Relation::Child
    );
    assert!(
        store
            .header(&blyan_chain::BlockHash([1; 32]))
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .payload(&blyan_chain::BlockHash([1; 32]))
            .unwrap()
            .is_none()
    );
}

#[test]
fn the_expert_index_keeps_versions_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = AuthorKey::generate();
    let name = ExpertName::parse("layer2.expert5").unwrap();
    let other = ExpertName::parse("layer0.expert7").unwrap();
    let mut versions = Vec::new();
    for version in 1..=4u32 {
        let payload = version.to_le_bytes();
        let header = expert_block(&store, "layer2.expert5", version, &payload, &key);
        versions.push(store.append(&header, &payload).unwrap());
        if version == 2 {
            store
                .append(&expert_block(&store, "layer0.expert7", 1, b"o", &key), b"o")
                .unwrap();
        }
    }
    let listed = store.expert_versions(name).unwrap();
    assert_eq!(
        listed.iter().map(|v| v.version).collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    assert_eq!(listed.iter().map(|v| v.hash).collect::<Vec<_>>(), versions);
    let current = store.expert_current(name).unwrap().unwrap();
    assert_eq!((current.version, current.hash), (4, versions[3]));
    let all = store.experts().unwrap();
    assert_eq!(
        all.iter()
            .map(|v| (v.expert, v.version))
            .collect::<Vec<_>>(),
        vec![(other, 1), (name, 4)]
    );
    assert!(
        store
            .expert_current(ExpertName::new(9, 9).unwrap())
            .unwrap()
            .is_none()
    );
}

#[test]
fn submit_takes_the_wire_form() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let header = on_tip(
        &store,
        ChainId::Dataset,
        BlockKind::DatasetEntry,
        b"wire",
        &AuthorKey::generate(),
    );
    let hash = store.submit(&encode_block(&header, b"wire")).unwrap();
    assert_eq!(hash, header.hash());
    assert_eq!(&*store.payload(&hash).unwrap().unwrap(), b"wire");
}

#[test]
fn reopening_reclaims_unacknowledged_bytes_and_segments() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = AuthorKey::generate();
    let kept = append_entry(&store, &bytes(1, 10_000), &key);
    drop(store);
    let segments = dir.path().join("segments");
    let active = segments.join("0000000001.seg");
    let committed = std::fs::metadata(&active).unwrap().len();
    // What a crash between the payload write and the index commit leaves behind.
    OpenOptions::new()
        .append(true)
        .open(&active)
        .unwrap()
        .write_all(&[0xee; 12_345])
        .unwrap();
    std::fs::write(segments.join("0000000002.seg"), [0xdd; 100]).unwrap();

    let store = open(dir.path());
    assert_eq!(std::fs::metadata(&active).unwrap().len(), committed);
    assert!(!segments.join("0000000002.seg").exists());
    assert_eq!(
        &*store.payload(&kept).unwrap().unwrap(),
        &bytes(1, 10_000)[..]
    );
    let next = append_entry(&store, b"after", &key);
    assert_eq!(&*store.payload(&next).unwrap().unwrap(), b"after");
    assert_verifies(&store);
}

#[test]
fn segments_roll_over_and_stay_readable() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        segment_bytes_target: SEGMENT_BYTES_TARGET_MIN,
        ..fast_config()
    };
    let store = ChainStore::open(dir.path(), config.clone()).unwrap();
    let key = AuthorKey::generate();
    let mut written = Vec::new();
    for (seed, len) in [(1, 3000), (2, 3000), (3, 9000), (4, 10), (5, 2000)] {
        written.push((
            append_entry(&store, &bytes(seed, len), &key),
            bytes(seed, len),
        ));
    }
    let segment_files = std::fs::read_dir(dir.path().join("segments"))
        .unwrap()
        .count();
    assert!(
        segment_files >= 4,
        "expected several segments, found {segment_files}"
    );
    for (hash, expected) in &written {
        assert_eq!(&*store.payload(hash).unwrap().unwrap(), &expected[..]);
    }
    assert_verifies(&store);
    drop(store);
    let store = ChainStore::open(dir.path(), config).unwrap();
    for (hash, expected) in &written {
        assert_eq!(&*store.payload(hash).unwrap().unwrap(), &expected[..]);
    }
    assert_verifies(&store);
}

#[test]
fn synced_stores_append_and_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        durability: Durability::Synced,
        ..StoreConfig::default()
    };
    let store = ChainStore::open(dir.path(), config.clone()).unwrap();
    let key = AuthorKey::generate();
    let hash = append_entry(&store, b"durable", &key);
    drop(store);
    let store = ChainStore::open(dir.path(), config).unwrap();
    assert_eq!(&*store.payload(&hash).unwrap().unwrap(), b"durable");
}
