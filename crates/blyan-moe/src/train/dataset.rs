//! Training text from the dataset chain (D): every `DatasetEntry` block whose payload is UTF-8
//! text becomes a [`TextDocument`] named by its block hash.
//!
//! Each payload is read with `payload_verified` (hashed against what was stored) and checked
//! once more against its header's `payload_hash` and `payload_bytes`, so a changed byte is
//! [`MoeError::Chain`] or [`MoeError::BadBlock`] naming the block, never training text.
//! [`read_dataset`] reads whatever text chain D holds; [`read_dataset_selected`] lets the caller
//! say which entries are training text and what their text is (the node passes the dataset
//! gates' usable samples, `blyan-quality`, which this crate must not depend on). An entry that
//! is not selected (binary, holding a NUL byte, or refused by the selector) is listed as skipped.

use blyan_chain::{BlockHash, BlockKind, ChainId, ChainStore, SealedHeader, hash_payload};

use super::data::{CORPUS_BYTES_MAX, TextDocument};
use crate::error::{MoeError, Result};

/// What reading chain D found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatasetRead {
    /// The texts, in chain order, each named by its block hash (`0x…`).
    pub documents: Vec<TextDocument>,
    /// `DatasetEntry` blocks whose payload is not UTF-8 text.
    pub skipped: Vec<BlockHash>,
}

/// Reads the text of every `DatasetEntry` block on `store`'s dataset chain, in height order.
///
/// A chain D with no text at all (today's usual case: it holds only its genesis) is
/// [`MoeError::Corpus`] saying the dataset is empty; more than [`CORPUS_BYTES_MAX`] bytes of text
/// is [`MoeError::Corpus`] too.
pub fn read_dataset(store: &ChainStore) -> Result<DatasetRead> {
    read_dataset_selected(store, &|_, payload| match std::str::from_utf8(payload) {
        Ok(text) if !text.contains('\0') => Some(text.to_owned()),
        _ => None,
    })
}

/// Reads the training text of the `DatasetEntry` blocks of `store`'s dataset chain that
/// `select(block, payload)` picks (returning their text), in height order; the others are
/// listed as skipped. Errors as [`read_dataset`].
pub fn read_dataset_selected(
    store: &ChainStore,
    select: &dyn Fn(BlockHash, &[u8]) -> Option<String>,
) -> Result<DatasetRead> {
    let mut read = DatasetRead::default();
    let mut bytes = 0u64;
    for sealed in store.headers_from(ChainId::Dataset, 0) {
        let sealed = sealed?;
        if sealed.header.kind == BlockKind::DatasetEntry {
            read_entry(store, &sealed, select, &mut read, &mut bytes)?;
        }
    }
    if read
        .documents
        .iter()
        .all(|document| document.text.trim().is_empty())
    {
        return Err(MoeError::Corpus {
            reason: format!(
                "the dataset (chain D of {}) is empty: no dataset entry holds text ({} not text)",
                store.path().display(),
                read.skipped.len()
            ),
        });
    }
    Ok(read)
}

/// Reads one dataset entry into `read`: its text, or its hash among the skipped.
fn read_entry(
    store: &ChainStore,
    sealed: &SealedHeader,
    select: &dyn Fn(BlockHash, &[u8]) -> Option<String>,
    read: &mut DatasetRead,
    bytes: &mut u64,
) -> Result<()> {
    let block = sealed.hash;
    let payload = store
        .payload_verified(&block)?
        .ok_or_else(|| MoeError::BadBlock {
            block,
            reason: "dataset entry without a stored payload".to_owned(),
        })?;
    let payload: &[u8] = &payload;
    // Both sides: what the store kept beside the payload, and what the header commits.
    if payload.len() as u64 != sealed.header.payload_bytes
        || hash_payload(payload) != sealed.header.payload_hash
    {
        return Err(MoeError::BadBlock {
            block,
            reason: "the stored payload does not match its header".to_owned(),
        });
    }
    let Some(text) = select(block, payload) else {
        read.skipped.push(block);
        return Ok(());
    };
    *bytes += text.len() as u64;
    if *bytes > CORPUS_BYTES_MAX {
        return Err(MoeError::Corpus {
            reason: format!(
                "chain D of {} holds more than {CORPUS_BYTES_MAX} bytes of text",
                store.path().display()
            ),
        });
    }
    read.documents.push(TextDocument {
        name: block.to_string(),
        text,
    });
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use blyan_chain::{AuthorKey, BlockHeader, StoreConfig};

    fn append(store: &ChainStore, key: &AuthorKey, payload: &[u8]) -> BlockHash {
        let tip = store.tip(ChainId::Dataset);
        let mut header =
            BlockHeader::new_child(&tip, BlockKind::DatasetEntry, payload, 1_770_000_000_000);
        header.sign(key);
        store.append(&header, payload).expect("append")
    }

    #[test]
    fn an_empty_dataset_chain_says_so() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = ChainStore::open(dir.path(), StoreConfig::default()).expect("store");
        match read_dataset(&store) {
            Err(MoeError::Corpus { reason }) => assert!(reason.contains("is empty"), "{reason}"),
            other => panic!("expected an empty dataset, got {other:?}"),
        }
    }

    #[test]
    fn text_entries_are_read_by_block_hash_and_binary_ones_skipped() {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = ChainStore::open(dir.path(), StoreConfig::default()).expect("store");
        let key = AuthorKey::generate();
        let first = append(&store, &key, b"The first entry.\n");
        let binary = append(&store, &key, &[0xff, 0x00, 0xfe]);
        let second = append(&store, &key, "Zweiter Eintrag: schön.\n".as_bytes());
        let read = read_dataset(&store).expect("two texts");
        assert_eq!(read.skipped, vec![binary]);
        assert_eq!(
            read.documents,
            vec![
                TextDocument {
                    name: first.to_string(),
                    text: "The first entry.\n".to_owned(),
                },
                TextDocument {
                    name: second.to_string(),
                    text: "Zweiter Eintrag: schön.\n".to_owned(),
                },
            ]
        );
    }
}
