//! Staged payloads: written in ranges, in any order, by several writers, resumed after a
//! restart, then adopted as a segment by `append_staged` (no copy); refusals leave the stage and
//! the store as they were; a crash between adoption's rename and the commit loses the download
//! but not the store's consistency.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use blyan_chain::{
    AuthorKey, BlockHeader, BlockKind, ChainId, ChainStore, Durability, Error, GenesisSpec,
    NewerSegment, PAYLOAD_ALIGN_BYTES, PayloadStage, StoreConfig, hash_payload,
};
use proptest::prelude::*;

use crate::common::{append_entry, assert_verifies, bytes, fast_config, on_tip, open};

const BLOCK: u64 = PayloadStage::BLOCK_BYTES;

fn synced_config() -> StoreConfig {
    StoreConfig {
        durability: Durability::Synced,
        ..StoreConfig::default()
    }
}

fn entry_header(store: &ChainStore, payload: &[u8], key: &AuthorKey) -> BlockHeader {
    on_tip(
        store,
        ChainId::Dataset,
        BlockKind::DatasetEntry,
        payload,
        key,
    )
}

/// Segment files, by name, ascending.
fn segment_files(store_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(store_dir.join("segments"))
        .unwrap()
        .map(|entry| entry.unwrap().file_name().into_string().unwrap())
        .collect();
    names.sort();
    names
}

fn staging_file(store_dir: &Path, stage: &PayloadStage, extension: &str) -> PathBuf {
    store_dir.join("staging").join(format!(
        "{}.{extension}",
        hex_of(stage.payload_hash().as_bytes())
    ))
}

/// A list of one range (clippy reads `vec![a..b]` as a likely mistake).
fn only(range: std::ops::Range<u64>) -> Vec<std::ops::Range<u64>> {
    std::iter::once(range).collect()
}

fn hex_of(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

/// Writes `payload[range]` for each block-aligned range of `chunk_blocks` blocks, in `order`.
fn write_chunks(stage: &PayloadStage, payload: &[u8], chunk_blocks: u64, reverse: bool) {
    let chunk = (chunk_blocks * BLOCK) as usize;
    let mut starts: Vec<usize> = (0..payload.len()).step_by(chunk).collect();
    if reverse {
        starts.reverse();
    }
    for start in starts {
        let end = (start + chunk).min(payload.len());
        stage.write_at(start as u64, &payload[start..end]).unwrap();
    }
}

#[test]
fn a_payload_staged_in_reverse_order_is_adopted_without_a_copy_and_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let store = ChainStore::open(dir.path(), synced_config()).unwrap();
    let key = AuthorKey::generate();
    let payload = bytes(1, (5 * BLOCK + 1000) as usize);
    let header = entry_header(&store, &payload, &key);
    let stage = store.stage_payload(&header).unwrap();
    assert_eq!(stage.payload_hash(), header.payload_hash);
    assert_eq!(stage.len(), payload.len() as u64);
    assert_eq!(stage.missing(), only(0..payload.len() as u64));

    // Reverse order; the last range is the short one ending the payload.
    write_chunks(&stage, &payload, 2, true);
    assert!(stage.is_complete());
    assert!(stage.missing().is_empty());
    stage.flush().unwrap();
    let staged_inode = std::fs::metadata(staging_file(dir.path(), &stage, "part"))
        .unwrap()
        .ino();
    let segments_before = segment_files(dir.path());

    let hash = store.append_staged(&header, stage).unwrap();
    assert_eq!(hash, header.hash());
    let read = store.payload_verified(&hash).unwrap().unwrap();
    assert_eq!(&*read, &payload[..]);
    assert_eq!(read.as_ptr() as usize % PAYLOAD_ALIGN_BYTES as usize, 0);
    assert_eq!(store.tip(ChainId::Dataset).hash, hash);

    // Adopted, not copied: the staging file is the new segment, and nothing is left staged.
    let segments_after = segment_files(dir.path());
    assert_eq!(segments_after.len(), segments_before.len() + 1);
    let newest = dir
        .path()
        .join("segments")
        .join(segments_after.last().unwrap());
    assert_eq!(std::fs::metadata(&newest).unwrap().ino(), staged_inode);
    assert_eq!(
        std::fs::read_dir(dir.path().join("staging"))
            .unwrap()
            .count(),
        0
    );

    // The next ordinary append lands after it, in the adopted segment, and reads back.
    let next = bytes(2, 3000);
    let next_hash = append_entry(&store, &next, &key);
    assert_eq!(
        &*store.payload_verified(&next_hash).unwrap().unwrap(),
        &next[..]
    );
    assert_eq!(segment_files(dir.path()), segments_after);
    assert_verifies(&store);

    // And it all survives a reopen, read-write and read-only.
    drop(read);
    drop(store);
    let store = ChainStore::open(dir.path(), synced_config()).unwrap();
    assert_eq!(
        &*store.payload_verified(&hash).unwrap().unwrap(),
        &payload[..]
    );
    assert_eq!(
        &*store.payload_verified(&next_hash).unwrap().unwrap(),
        &next[..]
    );
    assert_verifies(&store);
    drop(store);
    let store = ChainStore::open_read_only(dir.path()).unwrap();
    let report = assert_verifies(&store);
    assert!(report.unacknowledged_tail.is_none());
}

#[test]
fn several_writers_fill_one_stage_while_other_blocks_are_appended() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let key = AuthorKey::generate();
    let payload = Arc::new(bytes(3, (24 * BLOCK + 17) as usize));
    let mut header = BlockHeader::new_child(
        &store.tip(ChainId::Meta),
        BlockKind::Meta,
        &payload,
        crate::common::T0,
    );
    header.sign(&key);
    let stage = Arc::new(store.stage_payload(&header).unwrap());
    let writers: Vec<_> = (0..4u64)
        .map(|writer| {
            let stage = Arc::clone(&stage);
            let payload = Arc::clone(&payload);
            std::thread::spawn(move || {
                // Writer w takes every fourth block.
                let blocks = (payload.len() as u64).div_ceil(BLOCK);
                for block in (writer..blocks).step_by(4) {
                    let start = (block * BLOCK) as usize;
                    let end = (start + BLOCK as usize).min(payload.len());
                    stage.write_at(start as u64, &payload[start..end]).unwrap();
                }
            })
        })
        .collect();
    let appender = {
        let store = Arc::clone(&store);
        let key = key.clone();
        std::thread::spawn(move || {
            (0..6)
                .map(|seed| {
                    let entry = bytes(100 + seed, 5000);
                    (append_entry(&store, &entry, &key), entry)
                })
                .collect::<Vec<_>>()
        })
    };
    for writer in writers {
        writer.join().unwrap();
    }
    let entries = appender.join().unwrap();
    let stage = Arc::try_unwrap(stage).expect("the writers are done");
    assert!(stage.is_complete());
    let hash = store.append_staged(&header, stage).unwrap();
    assert_eq!(
        &*store.payload_verified(&hash).unwrap().unwrap(),
        &payload[..]
    );
    for (entry_hash, entry) in entries {
        assert_eq!(
            &*store.payload_verified(&entry_hash).unwrap().unwrap(),
            &entry[..]
        );
    }
    assert_verifies(&store);
}

#[test]
fn a_stage_resumes_after_a_restart_from_what_was_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let key = AuthorKey::generate();
    let payload = bytes(4, (8 * BLOCK + 5) as usize);
    let len = payload.len() as u64;
    let header = {
        let store = open(dir.path());
        let header = entry_header(&store, &payload, &key);
        let stage = store.stage_payload(&header).unwrap();
        stage.write_at(0, &payload[..(4 * BLOCK) as usize]).unwrap();
        stage.flush().unwrap();
        // Written after the last flush: a resumed stage must not count it.
        stage
            .write_at(
                6 * BLOCK,
                &payload[(6 * BLOCK) as usize..(7 * BLOCK) as usize],
            )
            .unwrap();
        header
    };
    let store = open(dir.path());
    let stage = store.stage_payload(&header).unwrap();
    assert_eq!(stage.missing(), only(4 * BLOCK..len));
    assert!(!stage.is_complete());
    stage
        .write_at(4 * BLOCK, &payload[(4 * BLOCK) as usize..])
        .unwrap();
    assert!(stage.is_complete());
    let hash = store.append_staged(&header, stage).unwrap();
    assert_eq!(
        &*store.payload_verified(&hash).unwrap().unwrap(),
        &payload[..]
    );
    assert_verifies(&store);
}

#[test]
fn a_corrupt_sidecar_means_nothing_was_written() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = AuthorKey::generate();
    let payload = bytes(5, (3 * BLOCK) as usize);
    let header = entry_header(&store, &payload, &key);
    let stage = store.stage_payload(&header).unwrap();
    write_chunks(&stage, &payload, 1, false);
    stage.flush().unwrap();
    let sidecar = staging_file(dir.path(), &stage, "blocks");
    drop(stage);
    let mut sidecar_bytes = std::fs::read(&sidecar).unwrap();
    sidecar_bytes[70] ^= 1;
    std::fs::write(&sidecar, &sidecar_bytes).unwrap();
    let stage = store.stage_payload(&header).unwrap();
    assert_eq!(stage.missing(), only(0..payload.len() as u64));
    // A truncated one likewise.
    std::fs::write(&sidecar, &sidecar_bytes[..10]).unwrap();
    drop(stage);
    let stage = store.stage_payload(&header).unwrap();
    assert_eq!(stage.missing(), only(0..payload.len() as u64));
}

#[test]
fn wrong_or_missing_bytes_are_refused_and_leave_the_stage_and_the_store_as_they_were() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = AuthorKey::generate();
    let payload = bytes(6, (3 * BLOCK + 100) as usize);
    let header = entry_header(&store, &payload, &key);
    let info_before = store.info();
    let segments_before = segment_files(dir.path());

    // Incomplete: one block missing.
    let stage = store.stage_payload(&header).unwrap();
    stage.write_at(0, &payload[..(2 * BLOCK) as usize]).unwrap();
    stage
        .write_at(3 * BLOCK, &payload[(3 * BLOCK) as usize..])
        .unwrap();
    match store.append_staged(&header, stage) {
        Err(Error::StageIncomplete {
            block,
            missing_bytes,
        }) => {
            assert_eq!(block, header.hash());
            assert_eq!(missing_bytes, BLOCK);
        }
        other => panic!("expected StageIncomplete, got {other:?}"),
    }
    // The refusal kept the progress: the stage resumes with that one block missing.
    let stage = store.stage_payload(&header).unwrap();
    assert_eq!(stage.missing(), only(2 * BLOCK..3 * BLOCK));

    // Wrong bytes in the missing block: a hash mismatch.
    let mut wrong = payload.clone();
    wrong[(2 * BLOCK) as usize] ^= 0xff;
    stage
        .write_at(
            2 * BLOCK,
            &wrong[(2 * BLOCK) as usize..(3 * BLOCK) as usize],
        )
        .unwrap();
    let part = staging_file(dir.path(), &stage, "part");
    let part_before = std::fs::read(&part).unwrap();
    match store.append_staged(&header, stage) {
        Err(Error::PayloadHashMismatch {
            block,
            got,
            expected,
        }) => {
            assert_eq!(block, header.hash());
            assert_eq!(got, hash_payload(&wrong));
            assert_eq!(expected, header.payload_hash);
        }
        other => panic!("expected PayloadHashMismatch, got {other:?}"),
    }
    assert_eq!(
        std::fs::read(&part).unwrap(),
        part_before,
        "the stage changed"
    );
    assert!(!store.contains(&header.hash()).unwrap());
    assert_eq!(store.info(), info_before);
    assert_eq!(segment_files(dir.path()), segments_before);
    assert_verifies(&store);

    // A header whose length differs from the stage's.
    let stage = store.stage_payload(&header).unwrap();
    assert!(stage.is_complete());
    let longer = bytes(6, payload.len() + 1);
    let other_header = entry_header(&store, &longer, &key);
    match store.append_staged(&other_header, stage) {
        Err(Error::PayloadLengthMismatch { got, expected, .. }) => {
            assert_eq!((got, expected), (payload.len() as u64, longer.len() as u64));
        }
        other => panic!("expected PayloadLengthMismatch, got {other:?}"),
    }

    // Rewriting the bad block fixes it; the append then succeeds.
    let stage = store.stage_payload(&header).unwrap();
    stage
        .write_at(
            2 * BLOCK,
            &payload[(2 * BLOCK) as usize..(3 * BLOCK) as usize],
        )
        .unwrap();
    let hash = store.append_staged(&header, stage).unwrap();
    assert_eq!(
        &*store.payload_verified(&hash).unwrap().unwrap(),
        &payload[..]
    );
    assert_verifies(&store);
}

#[test]
fn a_discarded_stage_starts_over() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = AuthorKey::generate();
    let payload = bytes(7, (2 * BLOCK) as usize);
    let header = entry_header(&store, &payload, &key);
    let stage = store.stage_payload(&header).unwrap();
    stage.write_at(0, &payload[..BLOCK as usize]).unwrap();
    stage.flush().unwrap();
    let part = staging_file(dir.path(), &stage, "part");
    let sidecar = staging_file(dir.path(), &stage, "blocks");
    // Not while it is open.
    match store.discard_stage(&header.payload_hash) {
        Err(Error::StageBusy { payload }) => assert_eq!(payload, header.payload_hash),
        other => panic!("expected StageBusy, got {other:?}"),
    }
    drop(stage);
    store.discard_stage(&header.payload_hash).unwrap();
    assert!(!part.exists() && !sidecar.exists());
    // Twice is fine.
    store.discard_stage(&header.payload_hash).unwrap();
    let stage = store.stage_payload(&header).unwrap();
    assert_eq!(stage.missing(), only(0..2 * BLOCK));
}

/// Dates `path`'s modification time `age` back.
fn age_file(path: &Path, age: std::time::Duration) {
    let file = std::fs::File::options().write(true).open(path).unwrap();
    file.set_modified(std::time::SystemTime::now() - age)
        .unwrap();
}

#[test]
fn only_stages_closed_and_idle_for_the_given_time_are_pruned() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = AuthorKey::generate();
    let day = std::time::Duration::from_secs(24 * 3600);
    let mut stages = Vec::new();
    for seed in 1..=3 {
        let payload = bytes(seed, (2 * BLOCK) as usize);
        let header = entry_header(&store, &payload, &key);
        let stage = store.stage_payload(&header).unwrap();
        stage.write_at(0, &payload[..BLOCK as usize]).unwrap();
        stage.flush().unwrap();
        stages.push((header, stage));
    }
    let (abandoned, fresh, open_stage) = (&stages[0], &stages[1], &stages[2]);
    for (header, stage) in [abandoned, open_stage] {
        for extension in ["part", "blocks"] {
            age_file(&staging_file(dir.path(), stage, extension), 2 * day);
        }
        assert!(
            store
                .staged_payloads()
                .unwrap()
                .contains(&header.payload_hash)
        );
    }
    let abandoned_part = staging_file(dir.path(), &abandoned.1, "part");
    let (abandoned_hash, fresh_hash, open_hash) = (
        abandoned.0.payload_hash,
        fresh.0.payload_hash,
        open_stage.0.payload_hash,
    );
    let mut stages = stages;
    let (_, kept_open) = stages.pop().unwrap();
    drop(stages);
    assert_eq!(store.prune_stages(day).unwrap(), vec![abandoned_hash]);
    assert!(!abandoned_part.exists());
    let mut left = vec![fresh_hash, open_hash];
    left.sort_unstable();
    assert_eq!(store.staged_payloads().unwrap(), left);
    // Once closed, the old one goes too; the fresh one stays until it is as old.
    drop(kept_open);
    assert_eq!(store.prune_stages(day).unwrap(), vec![open_hash]);
    assert_eq!(store.staged_payloads().unwrap(), vec![fresh_hash]);
    assert_eq!(
        store.prune_stages(std::time::Duration::ZERO).unwrap(),
        vec![fresh_hash]
    );
    assert!(store.staged_payloads().unwrap().is_empty());
}

#[test]
fn misaligned_or_out_of_bounds_writes_and_bad_stages_are_refused_with_their_variant() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = AuthorKey::generate();
    let payload = bytes(8, (2 * BLOCK + 10) as usize);
    let len = payload.len() as u64;
    let header = entry_header(&store, &payload, &key);
    let stage = store.stage_payload(&header).unwrap();
    let misaligned =
        |offset: u64, count: u64| match stage.write_at(offset, &vec![0; count as usize]) {
            Err(Error::StageMisaligned {
                payload,
                offset: got_offset,
                bytes,
                block_bytes,
            }) => {
                assert_eq!(
                    (payload, got_offset, bytes, block_bytes),
                    (header.payload_hash, offset, count, BLOCK)
                );
            }
            other => panic!("{offset}+{count}: expected StageMisaligned, got {other:?}"),
        };
    misaligned(1, BLOCK);
    misaligned(0, BLOCK - 1);
    misaligned(BLOCK, BLOCK + 1);
    misaligned(BLOCK + 64, len - BLOCK - 64);
    let out_of_bounds =
        |offset: u64, count: u64| match stage.write_at(offset, &vec![0; count as usize]) {
            Err(Error::StageOutOfBounds {
                payload,
                offset: got_offset,
                bytes,
                payload_bytes,
            }) => {
                assert_eq!(
                    (payload, got_offset, bytes, payload_bytes),
                    (header.payload_hash, offset, count, len)
                );
            }
            other => panic!("{offset}+{count}: expected StageOutOfBounds, got {other:?}"),
        };
    // One byte past the end, at and past the last block.
    out_of_bounds(2 * BLOCK, 11);
    out_of_bounds(3 * BLOCK, 0);
    out_of_bounds(u64::MAX - 3, 8);
    // At the bound: the short last block, exactly to the end.
    stage
        .write_at(2 * BLOCK, &payload[(2 * BLOCK) as usize..])
        .unwrap();
    assert_eq!(stage.missing(), only(0..2 * BLOCK));

    // One open stage per payload.
    match store.stage_payload(&header) {
        Err(Error::StageBusy { payload }) => assert_eq!(payload, header.payload_hash),
        other => panic!("expected StageBusy, got {other:?}"),
    }
    drop(stage);

    // A block already stored.
    let stored = bytes(9, 100);
    let stored_header = entry_header(&store, &stored, &key);
    store.append(&stored_header, &stored).unwrap();
    match store.stage_payload(&stored_header) {
        Err(Error::AlreadyExists { block }) => assert_eq!(block, stored_header.hash()),
        other => panic!("expected AlreadyExists, got {other:?}"),
    }
    // A header that fails the stateless checks.
    let mut unsigned = entry_header(&store, &payload, &key);
    unsigned.signature = None;
    assert!(matches!(
        store.stage_payload(&unsigned),
        Err(Error::MissingSignature { .. })
    ));
    // A stage of another store.
    let other_dir = tempfile::tempdir().unwrap();
    let other = open(other_dir.path());
    let foreign = other.stage_payload(&header).unwrap();
    foreign.write_at(0, &payload).unwrap();
    match store.append_staged(&header, foreign) {
        Err(Error::StageOfAnotherStore { payload }) => assert_eq!(payload, header.payload_hash),
        other => panic!("expected StageOfAnotherStore, got {other:?}"),
    }
    assert!(!store.contains(&header.hash()).unwrap());
    // A read-only store stages nothing.
    drop(store);
    let read_only = ChainStore::open_read_only(dir.path()).unwrap();
    assert!(matches!(
        read_only.stage_payload(&header),
        Err(Error::ReadOnly { .. })
    ));
    assert!(matches!(
        read_only.discard_stage(&header.payload_hash),
        Err(Error::ReadOnly { .. })
    ));
}

#[test]
fn an_empty_payload_is_complete_at_once_and_appends() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = AuthorKey::generate();
    let header = entry_header(&store, &[], &key);
    let stage = store.stage_payload(&header).unwrap();
    assert!(stage.is_complete() && stage.is_empty());
    assert!(stage.missing().is_empty());
    stage.write_at(0, &[]).unwrap();
    let segments_before = segment_files(dir.path());
    let hash = store.append_staged(&header, stage).unwrap();
    assert!(store.payload_verified(&hash).unwrap().unwrap().is_empty());
    assert_eq!(segment_files(dir.path()), segments_before);
    assert_eq!(
        std::fs::read_dir(dir.path().join("staging"))
            .unwrap()
            .count(),
        0
    );
    assert_verifies(&store);
}

#[test]
fn leftover_staging_files_are_ignored_by_verification_and_read_only_opens() {
    let dir = tempfile::tempdir().unwrap();
    let key = AuthorKey::generate();
    let header = {
        let store = open(dir.path());
        assert!(store.staged_payloads().unwrap().is_empty());
        let payload = bytes(10, (3 * BLOCK) as usize);
        let header = entry_header(&store, &payload, &key);
        let stage = store.stage_payload(&header).unwrap();
        stage.write_at(0, &payload[..BLOCK as usize]).unwrap();
        stage.flush().unwrap();
        std::fs::write(dir.path().join("staging").join("stray.tmp"), b"junk").unwrap();
        header
    };
    let store = ChainStore::open_read_only(dir.path()).unwrap();
    let report = assert_verifies(&store);
    assert!(report.unacknowledged_tail.is_none());
    assert_eq!(store.staged_payloads().unwrap(), vec![header.payload_hash]);
    drop(store);
    let store = open(dir.path());
    assert_verifies(&store);
    let staging = dir.path().join("staging");
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 3);
    // Listed until discarded; the stray file is not a stage, and stays.
    assert_eq!(store.staged_payloads().unwrap(), vec![header.payload_hash]);
    store.discard_stage(&header.payload_hash).unwrap();
    assert!(store.staged_payloads().unwrap().is_empty());
    assert_eq!(std::fs::read_dir(&staging).unwrap().count(), 1);
}

/// What adoption leaves on disk when the process dies after its rename and before the RocksDB
/// batch: the staging file, its header naming the next segment id, renamed into `segments/`.
fn adopt_without_commit(store_dir: &Path, part: &Path) -> PathBuf {
    let newest: u64 = segment_files(store_dir)
        .last()
        .unwrap()
        .trim_end_matches(".seg")
        .parse()
        .unwrap();
    let mut staged = std::fs::read(part).unwrap();
    staged[8..16].copy_from_slice(&(newest + 1).to_le_bytes());
    staged[16..24].fill(0);
    std::fs::write(part, &staged).unwrap();
    let target = store_dir
        .join("segments")
        .join(format!("{:010}.seg", newest + 1));
    std::fs::rename(part, &target).unwrap();
    target
}

#[test]
fn a_crash_between_adoption_and_commit_loses_the_download_not_the_store() {
    let dir = tempfile::tempdir().unwrap();
    let key = AuthorKey::generate();
    let payload = bytes(11, (4 * BLOCK) as usize);
    let (header, kept) = {
        let store = ChainStore::open(dir.path(), synced_config()).unwrap();
        let kept = append_entry(&store, &bytes(12, 700), &key);
        let header = entry_header(&store, &payload, &key);
        let stage = store.stage_payload(&header).unwrap();
        write_chunks(&stage, &payload, 1, true);
        stage.flush().unwrap();
        let part = staging_file(dir.path(), &stage, "part");
        drop(stage);
        drop(store);
        let adopted = adopt_without_commit(dir.path(), &part);
        assert!(adopted.exists());
        (header, kept)
    };
    // Read-only, the adopted segment is reported as unacknowledged, and left alone.
    let store = ChainStore::open_read_only(dir.path()).unwrap();
    let report = store.verify(|_| {}).unwrap();
    assert!(report.is_ok());
    let tail = report
        .unacknowledged_tail
        .expect("the adopted segment is reported");
    assert_eq!(
        tail.newer_segments,
        vec![NewerSegment {
            segment: tail.segment + 1,
            bytes: 64 + payload.len() as u64,
        }]
    );
    drop(store);

    // Read-write, recovery removes it: the block is absent, the store verifies clean.
    let store = ChainStore::open(dir.path(), synced_config()).unwrap();
    assert!(!store.contains(&header.hash()).unwrap());
    assert_eq!(segment_files(dir.path()).len(), tail.segment as usize);
    assert!(store.payload_verified(&kept).unwrap().is_some());
    assert_verifies(&store);
    // Later appends work, ordinary and staged (the download starts over).
    let later = bytes(13, 2000);
    let later_hash = append_entry(&store, &later, &key);
    assert_eq!(
        &*store.payload_verified(&later_hash).unwrap().unwrap(),
        &later[..]
    );
    let header = entry_header(&store, &payload, &key);
    let stage = store.stage_payload(&header).unwrap();
    assert_eq!(stage.missing(), only(0..payload.len() as u64));
    write_chunks(&stage, &payload, 3, false);
    let hash = store.append_staged(&header, stage).unwrap();
    assert_eq!(
        &*store.payload_verified(&hash).unwrap().unwrap(),
        &payload[..]
    );
    assert_verifies(&store);
    drop(store);
    let store =
        ChainStore::open_read_only_with(dir.path(), synced_config(), &GenesisSpec::shipped())
            .unwrap();
    assert!(assert_verifies(&store).unacknowledged_tail.is_none());
}

#[test]
fn staged_appends_roll_segments_like_ordinary_ones() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        segment_bytes_target: blyan_chain::SEGMENT_BYTES_TARGET_MIN,
        ..fast_config()
    };
    let store = ChainStore::open(dir.path(), config).unwrap();
    let key = AuthorKey::generate();
    let mut expected = Vec::new();
    let segments_before = segment_files(dir.path()).len();
    for round in 0..3u64 {
        let payload = bytes(20 + round, (3 * BLOCK + round) as usize);
        let header = entry_header(&store, &payload, &key);
        let stage = store.stage_payload(&header).unwrap();
        write_chunks(&stage, &payload, 1, round % 2 == 0);
        expected.push((store.append_staged(&header, stage).unwrap(), payload));
        let small = bytes(30 + round, 500);
        expected.push((append_entry(&store, &small, &key), small));
    }
    // Every staged payload got a segment of its own, and every small one, past the 4 KiB
    // target after it, rolled over to a new one.
    assert_eq!(segment_files(dir.path()).len(), segments_before + 6);
    for (hash, payload) in &expected {
        assert_eq!(
            &*store.payload_verified(hash).unwrap().unwrap(),
            &payload[..]
        );
    }
    assert_verifies(&store);
    drop(store);
    let store = open(dir.path());
    for (hash, payload) in &expected {
        assert_eq!(
            &*store.payload_verified(hash).unwrap().unwrap(),
            &payload[..]
        );
    }
    assert_verifies(&store);
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Any write order and chunking (in whole blocks, the last range short) stages the same
    /// payload.
    #[test]
    fn any_write_order_and_chunking_stages_an_identical_payload(
        len in 0..(6 * BLOCK + 1),
        chunk_blocks in 1..4u64,
        order_seed in any::<u64>(),
        payload_seed in any::<u64>(),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let store = open(dir.path());
        let key = AuthorKey::generate();
        let payload = bytes(payload_seed, len as usize);
        let header = entry_header(&store, &payload, &key);
        let stage = store.stage_payload(&header).unwrap();
        let chunk = chunk_blocks * BLOCK;
        let mut starts: Vec<u64> = (0..len).step_by(chunk as usize).collect();
        // A seeded Fisher-Yates shuffle of the ranges.
        let mut state = order_seed | 1;
        for index in (1..starts.len()).rev() {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            starts.swap(index, (state % (index as u64 + 1)) as usize);
        }
        for start in starts {
            prop_assert!(!stage.is_complete());
            let end = (start + chunk).min(len);
            stage.write_at(start, &payload[start as usize..end as usize]).unwrap();
        }
        prop_assert!(stage.is_complete());
        let hash = store.append_staged(&header, stage).unwrap();
        let read = store.payload_verified(&hash).unwrap().unwrap();
        prop_assert_eq!(&*read, &payload[..]);
    }
}
