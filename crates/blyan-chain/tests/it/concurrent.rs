//! Concurrent appenders, on one chain and on several: no block lost, none duplicated, and the
//! store's invariants (contiguous heights on linear chains, consecutive expert versions) hold.

use std::collections::HashSet;
use std::sync::Arc;

use blyan_chain::{
    AuthorKey, BlockHash, BlockHeader, BlockKind, ChainId, ChainStore, Error, ExpertName, ForkRule,
    ForkRules, StoreConfig,
};

use crate::common::{T0, assert_verifies, bytes, fast_config, open, stress};

const THREADS: u64 = 4;

/// Blocks each thread appends: 40, or 400 under `BLYAN_STRESS=1`.
fn blocks_per_thread() -> u64 {
    if stress() { 400 } else { 40 }
}

/// Appends `count` blocks of `kind` on `chain`'s tip, retrying when another thread took the tip
/// first. Returns the hashes acknowledged.
fn append_racing(
    store: &ChainStore,
    chain: ChainId,
    kind: BlockKind,
    thread: u64,
    count: u64,
) -> Vec<BlockHash> {
    let key = AuthorKey::generate();
    let mut acknowledged = Vec::new();
    let mut attempt = 0;
    while (acknowledged.len() as u64) < count {
        attempt += 1;
        let payload = bytes(
            thread * 1_000_000 + attempt,
            500 + (attempt as usize % 7) * 300,
        );
        let mut header = BlockHeader::new_child(&store.tip(chain), kind, &payload, T0);
        if kind == BlockKind::Router {
            header.meta.layer = Some(0);
        }
        header.sign(&key);
        match store.append(&header, &payload) {
            Ok(hash) => acknowledged.push(hash),
            Err(Error::Fork { .. }) => continue,
            Err(other) => panic!("unexpected refusal: {other}"),
        }
    }
    acknowledged
}

fn check_linear_chain(store: &ChainStore, chain: ChainId, acknowledged: &[BlockHash]) {
    let unique: HashSet<_> = acknowledged.iter().collect();
    assert_eq!(
        unique.len(),
        acknowledged.len(),
        "a block was acknowledged twice"
    );
    let info = store.chain_info(chain);
    assert_eq!(info.blocks, acknowledged.len() as u64 + 1);
    assert_eq!(info.tip.height, acknowledged.len() as u64);
    let mut listed = HashSet::new();
    let mut from = 1;
    loop {
        let page = store.blocks(chain, from, 50).unwrap();
        if page.is_empty() {
            break;
        }
        for (offset, block) in page.iter().enumerate() {
            assert_eq!(
                block.header.height,
                from + offset as u64,
                "heights must be contiguous"
            );
            listed.insert(block.hash);
        }
        from += page.len() as u64;
    }
    assert_eq!(listed, acknowledged.iter().copied().collect::<HashSet<_>>());
}

#[test]
fn racing_appenders_on_one_linear_chain() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let threads: Vec<_> = (0..THREADS)
        .map(|thread| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                append_racing(
                    &store,
                    ChainId::Dataset,
                    BlockKind::DatasetEntry,
                    thread,
                    blocks_per_thread(),
                )
            })
        })
        .collect();
    let acknowledged: Vec<_> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(acknowledged.len() as u64, THREADS * blocks_per_thread());
    check_linear_chain(&store, ChainId::Dataset, &acknowledged);
    assert_verifies(&store);
}

#[test]
fn appenders_on_different_chains() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(dir.path()));
    let work = [
        (ChainId::Meta, BlockKind::Meta),
        (ChainId::Parameters, BlockKind::Router),
        (ChainId::Dataset, BlockKind::DatasetEntry),
    ];
    let threads: Vec<_> = work
        .into_iter()
        .enumerate()
        .map(|(thread, (chain, kind))| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                (
                    chain,
                    append_racing(&store, chain, kind, thread as u64, blocks_per_thread()),
                )
            })
        })
        .collect();
    for thread in threads {
        let (chain, acknowledged) = thread.join().unwrap();
        assert_eq!(acknowledged.len() as u64, blocks_per_thread());
        check_linear_chain(&store, chain, &acknowledged);
    }
    assert_verifies(&store);
}

#[test]
fn concurrent_children_of_one_parent_where_forks_are_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        fork_rules: ForkRules {
            dataset: ForkRule::AllowForks,
            ..ForkRules::default()
        },
        ..fast_config()
    };
    let store = Arc::new(ChainStore::open(dir.path(), config).unwrap());
    let genesis = store.tip(ChainId::Dataset);
    let threads: Vec<_> = (0..THREADS)
        .map(|thread| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let key = AuthorKey::generate();
                (0..blocks_per_thread())
                    .map(|index| {
                        let payload = bytes(thread * 1000 + index, 200);
                        let mut header =
                            BlockHeader::new_child(&genesis, BlockKind::DatasetEntry, &payload, T0);
                        header.sign(&key);
                        store.append(&header, &payload).unwrap()
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let acknowledged: HashSet<_> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert_eq!(acknowledged.len() as u64, THREADS * blocks_per_thread());
    let at_one: HashSet<_> = store
        .block_hashes_at(ChainId::Dataset, 1)
        .unwrap()
        .into_iter()
        .collect();
    assert_eq!(at_one, acknowledged);
    assert_eq!(
        store.dependents(&genesis.hash).unwrap().len() as u64,
        THREADS * blocks_per_thread()
    );
    assert_verifies(&store);
}

#[test]
fn racing_versions_of_one_expert() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        fork_rules: ForkRules {
            parameters: ForkRule::AllowForks,
            ..ForkRules::default()
        },
        ..fast_config()
    };
    let store = Arc::new(ChainStore::open(dir.path(), config).unwrap());
    let expert = ExpertName::parse("layer1.expert3").unwrap();
    let threads: Vec<_> = (0..THREADS)
        .map(|thread| {
            let store = Arc::clone(&store);
            std::thread::spawn(move || {
                let key = AuthorKey::generate();
                let mut won = Vec::new();
                let mut attempt = 0;
                while won.len() < 10 {
                    attempt += 1;
                    let version = store
                        .expert_current(expert)
                        .unwrap()
                        .map_or(1, |v| v.version + 1);
                    let payload = bytes(thread * 10_000 + attempt, 1000);
                    let mut header = BlockHeader::new_child(
                        &store.tip(ChainId::Parameters),
                        BlockKind::Expert,
                        &payload,
                        T0,
                    );
                    header.meta.expert = Some(expert);
                    header.meta.version = version;
                    header.sign(&key);
                    match store.append(&header, &payload) {
                        Ok(hash) => won.push((version, hash)),
                        Err(Error::ExpertVersionMismatch { .. }) => continue,
                        Err(other) => panic!("unexpected refusal: {other}"),
                    }
                }
                won
            })
        })
        .collect();
    let mut won: Vec<_> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    won.sort();
    let versions = store.expert_versions(expert).unwrap();
    assert_eq!(versions.len() as u64, THREADS * 10);
    assert_eq!(
        versions
            .iter()
            .map(|v| (v.version, v.hash))
            .collect::<Vec<_>>(),
        won,
        "versions are consecutive, each acknowledged once"
    );
    assert_eq!(
        store.expert_current(expert).unwrap().unwrap().version as u64,
        THREADS * 10
    );
    assert_verifies(&store);
}
