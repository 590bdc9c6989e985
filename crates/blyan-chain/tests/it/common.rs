//! Helpers shared by the scenarios: stores in temp dirs, signed blocks built on a chain's tip.

use std::path::Path;

use blyan_chain::{
    AuthorKey, BlockHash, BlockHeader, BlockKind, ChainId, ChainStore, ChainTip, Durability,
    ExpertName, GENESIS_TIMESTAMP_MS, StoreConfig,
};

/// Whether `BLYAN_STRESS` asks for the long variants of the crash and concurrency tests (not
/// run in CI).
pub(crate) fn stress() -> bool {
    std::env::var_os("BLYAN_STRESS").is_some_and(|value| value != "0")
}

/// A timestamp after genesis; blocks in tests share it unless a test is about time.
pub(crate) const T0: u64 = GENESIS_TIMESTAMP_MS + 86_400_000;

/// Config for tests that do not exercise durability: unsynced, so fsync does not dominate.
pub(crate) fn fast_config() -> StoreConfig {
    StoreConfig {
        durability: Durability::Unsynced,
        ..StoreConfig::default()
    }
}

pub(crate) fn open(dir: &Path) -> ChainStore {
    ChainStore::open(dir, fast_config()).unwrap()
}

/// A signed child of `parent` of `kind` committing to `payload`.
pub(crate) fn child_of(
    parent: &ChainTip,
    kind: BlockKind,
    payload: &[u8],
    key: &AuthorKey,
) -> BlockHeader {
    let mut header = BlockHeader::new_child(parent, kind, payload, T0);
    header.sign(key);
    header
}

/// A signed block on the tip of `chain`.
pub(crate) fn on_tip(
    store: &ChainStore,
    chain: ChainId,
    kind: BlockKind,
    payload: &[u8],
    key: &AuthorKey,
) -> BlockHeader {
    child_of(&store.tip(chain), kind, payload, key)
}

/// Appends a dataset entry on chain D's tip; returns its hash.
pub(crate) fn append_entry(store: &ChainStore, payload: &[u8], key: &AuthorKey) -> BlockHash {
    let header = on_tip(
        store,
        ChainId::Dataset,
        BlockKind::DatasetEntry,
        payload,
        key,
    );
    store.append(&header, payload).unwrap()
}

/// A signed expert block for `expert` at `version` on chain B's tip.
pub(crate) fn expert_block(
    store: &ChainStore,
    expert: &str,
    version: u32,
    payload: &[u8],
    key: &AuthorKey,
) -> BlockHeader {
    let mut header = BlockHeader::new_child(
        &store.tip(ChainId::Parameters),
        BlockKind::Expert,
        payload,
        T0,
    );
    let name = ExpertName::parse(expert).unwrap();
    header.meta.expert = Some(name);
    header.meta.layer = Some(name.layer());
    header.meta.version = version;
    header.sign(key);
    header
}

/// Deterministic pseudo-random bytes (xorshift), so payloads differ without a dependency.
pub(crate) fn bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// Asserts a full verification finds nothing wrong, printing the first bad block if it does.
pub(crate) fn assert_verifies(store: &ChainStore) -> blyan_chain::VerifyReport {
    let report = store.verify(|_| {}).unwrap();
    assert!(
        report.is_ok(),
        "verification failed: {:?}",
        report.first_bad
    );
    assert_eq!(
        report.blocks,
        store.info().chains.iter().map(|c| c.blocks).sum::<u64>()
    );
    report
}
