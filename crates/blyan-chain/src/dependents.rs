//! Paged reads of the blocks that refer to a block: a block many others name (a popular
//! parent, a shared dependency) is listed a page at a time, never whole.

use blyan_primitives::BlockHash;

use crate::error::Result;
use crate::schema::{CF_DEPENDENTS, pair_key};
use crate::store::{ChainStore, Dependent};

/// Most dependents one [`ChainStore::dependents_page`] returns.
pub const DEPENDENTS_PAGE_COUNT_MAX: u32 = 1000;

impl ChainStore {
    /// At most `limit` (clamped to 1..=[`DEPENDENTS_PAGE_COUNT_MAX`]) of the blocks that name
    /// `block` as parent or dependency, in hash order, starting after `after` (exclusive; from
    /// the first when `None`). The next page starts after the last one returned; a page shorter
    /// than `limit` is the last. One seek and `limit` steps, whatever the number of dependents.
    pub fn dependents_page(
        &self,
        block: &BlockHash,
        after: Option<&BlockHash>,
        limit: u32,
    ) -> Result<Vec<Dependent>> {
        let limit = limit.clamp(1, DEPENDENTS_PAGE_COUNT_MAX) as usize;
        // Keys are `block ‖ dependent`; `block ‖ after ‖ 0` sorts right after `after`'s key.
        let mut start = Vec::with_capacity(65);
        match after {
            Some(after) => {
                start.extend_from_slice(&pair_key(block, after));
                start.push(0);
            }
            None => start.extend_from_slice(&pair_key(block, &BlockHash::ZERO)),
        }
        let mut end = [0u8; 65];
        end[..64].copy_from_slice(&pair_key(block, &BlockHash([0xff; 32])));
        self.scan(CF_DEPENDENTS, &start, &end)
            .take(limit)
            .map(|item| {
                let (key, value) = item?;
                crate::store::decode_dependent(&key, &value)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use crate::chain::{BlockKind, ChainId};
    use crate::config::{ForkRule, ForkRules, StoreConfig};
    use crate::header::BlockHeader;
    use crate::key::AuthorKey;
    use crate::store::ChainStore;

    use super::*;

    #[test]
    fn pages_list_every_dependent_once_in_hash_order() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            durability: blyan_primitives::Durability::Unsynced,
            fork_rules: ForkRules {
                dataset: ForkRule::AllowForks,
                ..ForkRules::default()
            },
            ..StoreConfig::default()
        };
        let store = ChainStore::open(dir.path(), config).unwrap();
        let genesis = store.tip(ChainId::Dataset);
        let key = AuthorKey::generate();
        // Five children of the genesis block (chain D keeps forks here).
        for index in 0..5u8 {
            let payload = [index];
            let mut header = BlockHeader::new_child(
                &genesis,
                BlockKind::DatasetEntry,
                &payload,
                crate::genesis::GENESIS_TIMESTAMP_MS + 1,
            );
            header.sign(&key);
            store.append(&header, &payload).unwrap();
        }
        let all = store.dependents(&genesis.hash).unwrap();
        assert_eq!(all.len(), 5);
        let mut paged = Vec::new();
        let mut after = None;
        loop {
            let page = store
                .dependents_page(&genesis.hash, after.as_ref(), 2)
                .unwrap();
            assert!(page.len() <= 2);
            paged.extend_from_slice(&page);
            match page.last() {
                Some(last) if page.len() == 2 => after = Some(last.block),
                _ => break,
            }
        }
        assert_eq!(paged, all);
        // Limits are clamped at their bounds.
        assert_eq!(
            store.dependents_page(&genesis.hash, None, 0).unwrap().len(),
            1
        );
        assert_eq!(
            store
                .dependents_page(&genesis.hash, None, DEPENDENTS_PAGE_COUNT_MAX + 1)
                .unwrap(),
            all
        );
    }
}
