//! Export a chain segment to a file and import it elsewhere, verifying on the way in.

use blyan_chain::{AuthorKey, BlockKind, ChainId, Error, ExpertName};

use crate::common::{append_entry, assert_verifies, bytes, expert_block, on_tip, open};

#[test]
fn a_chain_moves_between_stores() {
    let (source_dir, target_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let source = open(source_dir.path());
    let key = AuthorKey::generate();
    let mut payload_bytes = 0;
    for seed in 0..12u64 {
        let payload = bytes(seed, (seed as usize * 997) % 5000);
        payload_bytes += payload.len() as u64;
        let name = format!("layer{}.expert{}", seed % 2, seed % 3);
        let current = source
            .expert_current(ExpertName::parse(&name).unwrap())
            .unwrap();
        let version = current.map_or(1, |v| v.version + 1);
        let header = expert_block(&source, &name, version, &payload, &key);
        source.append(&header, &payload).unwrap();
    }
    let file = source_dir.path().join("parameters.blyx");
    let exported = source
        .export_file(ChainId::Parameters, 0, u64::MAX, &file)
        .unwrap();
    assert_eq!(
        (exported.blocks, exported.payload_bytes),
        (13, payload_bytes)
    );

    let target = open(target_dir.path());
    let imported = target.import_file(&file).unwrap();
    assert_eq!(
        (imported.blocks, imported.imported, imported.already_present),
        (13, 12, 1)
    );
    assert_eq!(imported.payload_bytes, payload_bytes);
    assert_eq!(
        target.chain_info(ChainId::Parameters).tip,
        source.chain_info(ChainId::Parameters).tip
    );
    assert_eq!(target.experts().unwrap(), source.experts().unwrap());
    for block in source.blocks(ChainId::Parameters, 0, 100).unwrap() {
        assert_eq!(target.sealed_header(&block.hash).unwrap().unwrap(), block);
        assert_eq!(
            &*target.payload(&block.hash).unwrap().unwrap(),
            &*source.payload(&block.hash).unwrap().unwrap()
        );
    }
    assert_verifies(&target);

    let again = target.import_file(&file).unwrap();
    assert_eq!((again.imported, again.already_present), (0, 13));
}

#[test]
fn a_height_range_exports_only_that_range() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = AuthorKey::generate();
    for seed in 0..10 {
        append_entry(&store, &bytes(seed, 100), &key);
    }
    let mut out = Vec::new();
    let summary = store.export(ChainId::Dataset, 3, 5, &mut out).unwrap();
    assert_eq!(summary.blocks, 3);
    // Heights 3..=5 need heights 1..=2 first: importing them alone into a fresh store fails on
    // the unknown parent, naming it.
    let fresh_dir = tempfile::tempdir().unwrap();
    let fresh = open(fresh_dir.path());
    assert!(matches!(
        fresh.import(&out[..]),
        Err(Error::UnknownParent { .. })
    ));
    let mut head = Vec::new();
    store.export(ChainId::Dataset, 0, 2, &mut head).unwrap();
    fresh.import(&head[..]).unwrap();
    assert_eq!(fresh.import(&out[..]).unwrap().imported, 3);
    assert_eq!(fresh.tip(ChainId::Dataset).height, 5);
    assert_verifies(&fresh);
}

fn exported_entries() -> (tempfile::TempDir, Vec<u8>) {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = AuthorKey::generate();
    for seed in 0..4 {
        let payload = bytes(seed, 3000);
        store
            .append(
                &on_tip(
                    &store,
                    ChainId::Dataset,
                    BlockKind::DatasetEntry,
                    &payload,
                    &key,
                ),
                &payload,
            )
            .unwrap();
    }
    let mut out = Vec::new();
    store
        .export(ChainId::Dataset, 0, u64::MAX, &mut out)
        .unwrap();
    (dir, out)
}

#[test]
fn a_truncated_file_is_refused_and_keeps_the_valid_blocks() {
    let (_dir, file) = exported_entries();
    let target_dir = tempfile::tempdir().unwrap();
    let target = open(target_dir.path());
    let cut = file.len() - 2000;
    let error = target.import(&file[..cut]).unwrap_err();
    assert!(
        matches!(
            error,
            Error::PayloadLengthMismatch { .. } | Error::ExportFormat { .. }
        ),
        "{error:?}"
    );
    assert_eq!(
        target.chain_info(ChainId::Dataset).blocks,
        4,
        "genesis and the three whole blocks"
    );
    assert_verifies(&target);
    let cut_trailer = &file[..file.len() - 1];
    let fresh_dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        open(fresh_dir.path()).import(cut_trailer),
        Err(Error::ExportFormat { .. })
    ));
}

#[test]
fn a_tampered_payload_is_refused_on_import() {
    let (_dir, mut file) = exported_entries();
    let last = file.len() - 41 - 10;
    file[last] ^= 0xff;
    let target_dir = tempfile::tempdir().unwrap();
    let target = open(target_dir.path());
    assert!(matches!(
        target.import(&file[..]),
        Err(Error::PayloadHashMismatch { .. })
    ));
    assert_eq!(target.chain_info(ChainId::Dataset).blocks, 4);
    assert_verifies(&target);
}

#[test]
fn malformed_files_are_refused() {
    let (_dir, file) = exported_entries();
    let target_dir = tempfile::tempdir().unwrap();
    let target = open(target_dir.path());
    let mut bad_magic = file.clone();
    bad_magic[0] = b'X';
    assert!(matches!(
        target.import(&bad_magic[..]),
        Err(Error::ExportFormat { offset: 0, .. })
    ));
    let mut bad_tag = file.clone();
    bad_tag[32] = 9;
    assert!(matches!(
        target.import(&bad_tag[..]),
        Err(Error::ExportFormat { offset: 32, .. })
    ));
    let mut trailing = file.clone();
    trailing.push(0);
    assert!(matches!(
        target.import(&trailing[..]),
        Err(Error::ExportFormat { .. })
    ));
    let mut bad_trailer = file.clone();
    let at = bad_trailer.len() - 1;
    bad_trailer[at] ^= 1;
    let fresh_dir = tempfile::tempdir().unwrap();
    assert!(matches!(
        open(fresh_dir.path()).import(&bad_trailer[..]),
        Err(Error::ExportFormat { .. })
    ));
}

#[test]
fn importing_a_damaged_file_changes_nothing() {
    let (_dir, file) = exported_entries();
    let work = tempfile::tempdir().unwrap();
    let target_dir = tempfile::tempdir().unwrap();
    let target = open(target_dir.path());
    let info = target.info();
    // Cut inside the payload of a later block, cut the trailer, pad past it, swap the trailer's
    // hash: a stream import would keep the blocks before the damage; a file import keeps none.
    let cut_payload = file[..file.len() - 2000].to_vec();
    let cut_trailer = file[..file.len() - 1].to_vec();
    let mut padded = file.clone();
    padded.push(0);
    let mut bad_trailer = file.clone();
    let at = bad_trailer.len() - 1;
    bad_trailer[at] ^= 1;
    for (name, bytes) in [
        ("cut_payload", cut_payload),
        ("cut_trailer", cut_trailer),
        ("padded", padded),
        ("bad_trailer", bad_trailer),
    ] {
        let path = work.path().join(name);
        std::fs::write(&path, &bytes).unwrap();
        let error = target.import_file(&path).unwrap_err();
        assert!(
            matches!(error, Error::ExportFormat { .. }),
            "{name}: {error:?}"
        );
        assert_eq!(target.info(), info, "{name} changed the store");
    }
    assert_verifies(&target);
    // The whole file still imports.
    let whole = work.path().join("whole");
    std::fs::write(&whole, &file).unwrap();
    let summary = target.import_file(&whole).unwrap();
    // Genesis is in the file and already stored; the four entries are new.
    assert_eq!((summary.imported, summary.already_present), (4, 1));
    assert_verifies(&target);
}
