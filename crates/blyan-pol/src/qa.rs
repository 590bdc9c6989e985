//! Hidden QA sets: evaluation text no candidate could have trained on.
//!
//! The public evaluation pool is public: an author can train on it until the drawn batch
//! improves while nothing else does. So each validator also keeps evaluation text off chain.
//! Time on chain D is cut into epochs of `qa_epoch_ms` of block time; in each epoch a
//! validator appends a [`QaCommit`] (the blake3 of the set it will use, [`qa_commitment`]),
//! measures every claim it votes on against that set too (the vote's [`HiddenEval`], drawn with
//! the claim's seed), and once the epoch closed appends a [`QaReveal`] with the set's text, so
//! anyone can check the commitment. A vote counts only while its set stays honest:
//!
//! - a reveal whose text does not hash to the commitment ([`QaStatus::Mismatch`]), a reveal
//!   holding a document revealed before ([`QaStatus::Reused`]: it may have been trained on),
//!   or no reveal by the end of the epoch after ([`QaStatus::Overdue`]) make every vote naming
//!   that commit invalid ([`QaBook::invalid_commits`]): tallies skip them;
//! - a vote naming a commit already revealed is refused by the gate (the set is public then).
//!
//! Revealed documents are public from then on: [`QaBook`] remembers their hashes and
//! [`QaKeeper`] never draws one into a later set. [`QaKeeper`] is the validator's side: its
//! documents, cut into pieces, and each epoch's set stored under its directory before the
//! commit is written, so a restarted validator still reveals what it committed.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use blyan_chain::BlockHash;
use blyan_moe::{TextDocument, text_pieces};
use blyan_primitives::Address;
use serde::{Deserialize, Serialize};

use crate::error::{PolError, Result};
use crate::eval::EvalPool;
use crate::record::{PolRecord, QaCommit, QaReveal, RecordBlock};

/// Most bytes one QA set's documents take as JSON strings (so a reveal fits in one record).
pub const QA_SET_BYTES_MAX: usize = 512 << 10;

/// Most documents one QA set holds.
pub const QA_SET_DOCUMENTS_MAX: usize = 4096;

/// Largest piece a validator's QA documents are cut into, in bytes.
pub const QA_PIECE_BYTES_MAX: usize = 2 << 10;

/// The commitment to a QA set: blake3 over each document's length and text, in order
/// (domain-separated from the public pool's commitment).
pub fn qa_commitment(documents: &[String]) -> String {
    let mut hasher = blake3::Hasher::new_derive_key("blyan-pol 1 hidden qa set");
    for document in documents {
        hasher.update(&(document.len() as u64).to_le_bytes());
        hasher.update(document.as_bytes());
    }
    hasher.finalize().to_hex().to_string()
}

/// The hash a revealed document is remembered by.
pub fn qa_document_hash(text: &str) -> [u8; 32] {
    *blake3::hash(text.as_bytes()).as_bytes()
}

/// The epoch block time `timestamp_ms` falls in.
pub fn qa_epoch(timestamp_ms: u64, epoch_ms: u64) -> u64 {
    timestamp_ms / epoch_ms.max(1)
}

/// The evaluation pool of a QA set's documents.
pub fn qa_pool(documents: &[String]) -> Result<EvalPool> {
    EvalPool::new(
        documents
            .iter()
            .enumerate()
            .map(|(index, text)| TextDocument {
                name: format!("qa-{index}"),
                text: text.clone(),
            })
            .collect(),
    )
}

/// Where one validator's commitment stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QaStatus {
    /// Not revealed, and its reveal is not due yet.
    Open,
    /// Revealed, and the text matches the commitment.
    Revealed,
    /// Revealed with text that does not match the commitment: its votes are invalid.
    Mismatch,
    /// Revealed with a document revealed before: its votes are invalid.
    Reused,
    /// Not revealed by the end of the epoch after its own: its votes are invalid.
    Overdue,
}

impl QaStatus {
    /// The snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            QaStatus::Open => "open",
            QaStatus::Revealed => "revealed",
            QaStatus::Mismatch => "mismatch",
            QaStatus::Reused => "reused",
            QaStatus::Overdue => "overdue",
        }
    }

    /// Whether votes naming a commit in this state count for nothing.
    pub fn invalidates(self) -> bool {
        matches!(
            self,
            QaStatus::Mismatch | QaStatus::Reused | QaStatus::Overdue
        )
    }
}

/// A reveal as the book judged it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QaRevealState {
    /// The reveal's block.
    pub block: BlockHash,
    /// Its block time.
    pub timestamp_ms: u64,
    /// Whether its text hashes to the commitment.
    pub matches: bool,
    /// Documents in it that an earlier reveal had already published.
    pub reused: usize,
    /// Documents and bytes revealed.
    pub documents: usize,
    /// Bytes of text revealed.
    pub bytes: u64,
}

/// A commit with its reveal, if any.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct QaCommitState {
    /// The commit's block.
    pub block: BlockHash,
    /// The validator.
    pub author: Address,
    /// Its block time.
    pub timestamp_ms: u64,
    /// The commit.
    pub commit: QaCommit,
    /// Its reveal, once appended.
    pub reveal: Option<QaRevealState>,
}

impl QaCommitState {
    /// Where it stands at block time `now_ms` with epochs of `epoch_ms`.
    pub fn status(&self, now_ms: u64, epoch_ms: u64) -> QaStatus {
        match &self.reveal {
            Some(reveal) if !reveal.matches => QaStatus::Mismatch,
            Some(reveal) if reveal.reused > 0 => QaStatus::Reused,
            Some(_) => QaStatus::Revealed,
            None if now_ms >= reveal_deadline(self.commit.epoch, epoch_ms) => QaStatus::Overdue,
            None => QaStatus::Open,
        }
    }
}

/// The first block time a reveal of `epoch` may carry: the epoch's end.
pub fn reveal_opens(epoch: u64, epoch_ms: u64) -> u64 {
    epoch.saturating_add(1).saturating_mul(epoch_ms)
}

/// The block time from which an unrevealed commit of `epoch` is overdue: the end of the
/// epoch after it.
pub fn reveal_deadline(epoch: u64, epoch_ms: u64) -> u64 {
    epoch.saturating_add(2).saturating_mul(epoch_ms)
}

/// Every QA commit and reveal on chain D, read in chain order.
#[derive(Clone, Debug, Default)]
pub struct QaBook {
    commits: BTreeMap<BlockHash, QaCommitState>,
    by_epoch: BTreeMap<(Address, u64), BlockHash>,
    revealed: BTreeSet<[u8; 32]>,
}

impl QaBook {
    /// The book of `records` (chain order).
    pub fn from_records(records: &[RecordBlock]) -> Self {
        let mut book = Self::default();
        for record in records {
            book.apply(record);
        }
        book
    }

    /// Takes in the next record of chain D (others than commits and reveals are ignored, and
    /// so is a reveal the gate would have refused).
    pub fn apply(&mut self, record: &RecordBlock) {
        match &record.record {
            PolRecord::QaCommit(commit) => {
                self.by_epoch
                    .entry((record.author, commit.epoch))
                    .or_insert(record.hash);
                self.commits.insert(
                    record.hash,
                    QaCommitState {
                        block: record.hash,
                        author: record.author,
                        timestamp_ms: record.timestamp_ms,
                        commit: commit.clone(),
                        reveal: None,
                    },
                );
            }
            PolRecord::QaReveal(reveal) => self.apply_reveal(record, reveal),
            _ => {}
        }
    }

    fn apply_reveal(&mut self, record: &RecordBlock, reveal: &QaReveal) {
        let Some(state) = self.commits.get_mut(&reveal.commit) else {
            return;
        };
        if state.author != record.author || state.reveal.is_some() {
            return;
        }
        let hashes: Vec<[u8; 32]> = reveal
            .documents
            .iter()
            .map(|text| qa_document_hash(text))
            .collect();
        let reused = hashes
            .iter()
            .filter(|hash| self.revealed.contains(*hash))
            .count();
        state.reveal = Some(QaRevealState {
            block: record.hash,
            timestamp_ms: record.timestamp_ms,
            matches: qa_commitment(&reveal.documents) == state.commit.commitment,
            reused,
            documents: reveal.documents.len(),
            bytes: reveal.documents.iter().map(|text| text.len() as u64).sum(),
        });
        self.revealed.extend(hashes);
    }

    /// Commit `block`.
    pub fn commit(&self, block: &BlockHash) -> Option<&QaCommitState> {
        self.commits.get(block)
    }

    /// The commit of `validator` for `epoch` (its first, when the chain holds two).
    pub fn commit_of(&self, validator: Address, epoch: u64) -> Option<&QaCommitState> {
        self.by_epoch
            .get(&(validator, epoch))
            .and_then(|block| self.commits.get(block))
    }

    /// Every commit, in block-hash order.
    pub fn commits(&self) -> impl Iterator<Item = &QaCommitState> {
        self.commits.values()
    }

    /// Whether a reveal already published `text`.
    pub fn is_revealed(&self, text: &str) -> bool {
        self.revealed.contains(&qa_document_hash(text))
    }

    /// The commits whose votes count for nothing at block time `now_ms`.
    pub fn invalid_commits(&self, now_ms: u64, epoch_ms: u64) -> BTreeSet<BlockHash> {
        self.commits
            .values()
            .filter(|state| state.status(now_ms, epoch_ms).invalidates())
            .map(|state| state.block)
            .collect()
    }
}

/// One epoch's set as the validator stored it before committing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredQaSet {
    /// The epoch.
    pub epoch: u64,
    /// [`qa_commitment`] of `documents`.
    pub commitment: String,
    /// The documents, in order.
    pub documents: Vec<String>,
}

/// A validator's hidden QA documents and the sets it drew from them.
#[derive(Debug)]
pub struct QaKeeper {
    pieces: Vec<String>,
    dir: PathBuf,
    set_bytes: usize,
}

impl QaKeeper {
    /// The keeper of `documents` (cut into pieces of at most [`QA_PIECE_BYTES_MAX`] at line
    /// ends, blank pieces dropped, ordered by their hash so a set mixes the documents), storing
    /// its sets under `dir`, `set_bytes` of text per set.
    pub fn new(documents: &[TextDocument], dir: PathBuf, set_bytes: usize) -> Result<Self> {
        if set_bytes == 0 || set_bytes > QA_SET_BYTES_MAX {
            return Err(PolError::Pool {
                reason: format!("a QA set of {set_bytes} bytes, not 1..={QA_SET_BYTES_MAX}"),
            });
        }
        let mut pieces: Vec<String> = documents
            .iter()
            .flat_map(|document| text_pieces(&document.text, QA_PIECE_BYTES_MAX))
            .filter(|piece| !piece.trim().is_empty())
            .map(str::to_owned)
            .collect();
        pieces.sort_by_key(|piece| qa_document_hash(piece));
        pieces.dedup();
        Ok(Self {
            pieces,
            dir,
            set_bytes,
        })
    }

    /// Pieces the documents were cut into.
    pub fn pieces(&self) -> usize {
        self.pieces.len()
    }

    fn path(&self, epoch: u64) -> PathBuf {
        self.dir.join(format!("epoch-{epoch}.json"))
    }

    /// The set stored for `epoch`, if one was drawn.
    pub fn stored(&self, epoch: u64) -> Result<Option<StoredQaSet>> {
        let path = self.path(epoch);
        let bytes = match std::fs::read(&path) {
            Ok(bytes) => bytes,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(io_error(&path, &error)),
        };
        let set: StoredQaSet = serde_json::from_slice(&bytes).map_err(|error| PolError::Pool {
            reason: format!("QA set {}: {error}", path.display()),
        })?;
        if set.epoch != epoch || qa_commitment(&set.documents) != set.commitment {
            return Err(PolError::Pool {
                reason: format!(
                    "QA set {} does not hold epoch {epoch}'s committed text",
                    path.display()
                ),
            });
        }
        Ok(Some(set))
    }

    /// The set of `epoch`: the one stored, or a new one drawn from pieces in no stored set and
    /// never revealed on chain (`book`), stored (synced) before it is returned. `None` when too
    /// little unused text is left for a set of at least half the configured size.
    pub fn set_for(&self, epoch: u64, book: &QaBook) -> Result<Option<StoredQaSet>> {
        if let Some(set) = self.stored(epoch)? {
            return Ok(Some(set));
        }
        let used = self.used()?;
        let mut documents = Vec::new();
        let mut bytes = 0;
        let mut encoded = 0;
        for piece in &self.pieces {
            if bytes >= self.set_bytes || documents.len() >= QA_SET_DOCUMENTS_MAX {
                break;
            }
            let piece_encoded = json_len(piece);
            if encoded + piece_encoded > QA_SET_BYTES_MAX
                || used.contains(&qa_document_hash(piece))
                || book.is_revealed(piece)
            {
                continue;
            }
            bytes += piece.len();
            encoded += piece_encoded;
            documents.push(piece.clone());
        }
        if bytes * 2 < self.set_bytes {
            return Ok(None);
        }
        let set = StoredQaSet {
            epoch,
            commitment: qa_commitment(&documents),
            documents,
        };
        self.store(&set)?;
        Ok(Some(set))
    }

    /// Hashes of every piece in a stored set.
    fn used(&self) -> Result<BTreeSet<[u8; 32]>> {
        let mut used = BTreeSet::new();
        let entries = match std::fs::read_dir(&self.dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(used),
            Err(error) => return Err(io_error(&self.dir, &error)),
        };
        for entry in entries {
            let entry = entry.map_err(|error| io_error(&self.dir, &error))?;
            let name = entry.file_name();
            let Some(epoch) = name
                .to_str()
                .and_then(|name| name.strip_prefix("epoch-"))
                .and_then(|name| name.strip_suffix(".json"))
                .and_then(|epoch| epoch.parse::<u64>().ok())
            else {
                continue;
            };
            if let Some(set) = self.stored(epoch)? {
                used.extend(set.documents.iter().map(|text| qa_document_hash(text)));
            }
        }
        Ok(used)
    }

    fn store(&self, set: &StoredQaSet) -> Result<()> {
        std::fs::create_dir_all(&self.dir).map_err(|error| io_error(&self.dir, &error))?;
        let path = self.path(set.epoch);
        let partial = path.with_extension("json.partial");
        let bytes = serde_json::to_vec(set).map_err(|error| PolError::Pool {
            reason: format!("QA set: {error}"),
        })?;
        let write = || -> std::io::Result<()> {
            use std::io::Write as _;
            let mut file = std::fs::File::create(&partial)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
            std::fs::rename(&partial, &path)?;
            std::fs::File::open(&self.dir)?.sync_all()
        };
        write().map_err(|error| io_error(&path, &error))
    }
}

/// Bytes `text` takes as a JSON string, with its separating comma.
fn json_len(text: &str) -> usize {
    serde_json::to_string(text).map_or(usize::MAX / 2, |encoded| encoded.len() + 1)
}

fn io_error(path: &Path, error: &std::io::Error) -> PolError {
    PolError::Pool {
        reason: format!("QA set {}: {error}", path.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(hash: u8, author: Address, timestamp_ms: u64, record: PolRecord) -> RecordBlock {
        RecordBlock {
            hash: BlockHash([hash; 32]),
            author,
            height: u64::from(hash),
            timestamp_ms,
            record,
        }
    }

    fn commit(epoch: u64, documents: &[String]) -> PolRecord {
        PolRecord::QaCommit(QaCommit {
            epoch,
            commitment: qa_commitment(documents),
        })
    }

    fn reveal(commit: u8, documents: &[String]) -> PolRecord {
        PolRecord::QaReveal(QaReveal {
            commit: BlockHash([commit; 32]),
            documents: documents.to_vec(),
        })
    }

    const EPOCH: u64 = 1_000;

    #[test]
    fn a_reveal_is_judged_against_its_commitment_and_earlier_reveals() {
        let alice = Address([1; 20]);
        let bob = Address([2; 20]);
        let set = vec!["one paragraph\n".to_owned(), "another\n".to_owned()];
        let other = vec!["third\n".to_owned()];
        let book = QaBook::from_records(&[
            record(1, alice, 100, commit(0, &set)),
            record(2, bob, 100, commit(0, &other)),
            record(3, alice, 1_000, commit(1, &other)),
            // Alice reveals the set she committed; Bob reveals text he did not commit.
            record(4, alice, 1_100, reveal(1, &set)),
            record(5, bob, 1_100, reveal(2, &set)),
        ]);
        let status = |block: u8, now| {
            book.commit(&BlockHash([block; 32]))
                .unwrap()
                .status(now, EPOCH)
        };
        assert_eq!(status(1, 1_100), QaStatus::Revealed);
        assert_eq!(status(2, 1_100), QaStatus::Mismatch);
        // Alice's epoch-1 commit is open until the end of epoch 2, overdue from then.
        assert_eq!(status(3, 2_999), QaStatus::Open);
        assert_eq!(status(3, 3_000), QaStatus::Overdue);
        assert!(book.is_revealed("another\n"));
        assert!(!book.is_revealed("third\n"));
        assert_eq!(
            book.invalid_commits(1_100, EPOCH),
            BTreeSet::from([BlockHash([2; 32])])
        );
        assert_eq!(book.commit_of(alice, 1).unwrap().block, BlockHash([3; 32]));
    }

    #[test]
    fn a_reveal_repeating_a_published_document_is_reused() {
        let alice = Address([1; 20]);
        let first = vec!["shared text\n".to_owned()];
        let second = vec!["shared text\n".to_owned(), "new text\n".to_owned()];
        let book = QaBook::from_records(&[
            record(1, alice, 0, commit(0, &first)),
            record(2, alice, 1_000, commit(1, &second)),
            record(3, alice, 1_000, reveal(1, &first)),
            record(4, alice, 2_000, reveal(2, &second)),
            // A second reveal of a revealed commit, and a reveal by someone else, change nothing.
            record(5, alice, 2_000, reveal(1, &second)),
        ]);
        let second = book.commit(&BlockHash([2; 32])).unwrap();
        assert_eq!(second.status(2_000, EPOCH), QaStatus::Reused);
        assert_eq!(second.reveal.as_ref().unwrap().reused, 1);
        let first = book.commit(&BlockHash([1; 32])).unwrap();
        assert_eq!(first.reveal.as_ref().unwrap().block, BlockHash([3; 32]));
    }

    #[test]
    fn the_keeper_never_draws_a_piece_twice_or_one_revealed() {
        let dir = tempfile::tempdir().unwrap();
        let text: String = (0..200)
            .map(|index| format!("line {index} of the hidden text, long enough to matter\n"))
            .collect();
        let documents = vec![TextDocument {
            name: "qa".into(),
            text,
        }];
        let keeper = QaKeeper::new(&documents, dir.path().to_owned(), 2_500).unwrap();
        assert!(keeper.pieces() >= 5);
        let book = QaBook::default();
        let first = keeper.set_for(7, &book).unwrap().unwrap();
        assert_eq!(first.commitment, qa_commitment(&first.documents));
        // Drawn again for the same epoch (after a restart): the same set.
        let again = QaKeeper::new(&documents, dir.path().to_owned(), 2_500)
            .unwrap()
            .set_for(7, &book)
            .unwrap()
            .unwrap();
        assert_eq!(again, first);
        let second = keeper.set_for(8, &book).unwrap().unwrap();
        assert!(
            second
                .documents
                .iter()
                .all(|piece| !first.documents.contains(piece))
        );
        // A piece revealed on chain by anyone is never drawn.
        let alice = Address([1; 20]);
        let other_dir = tempfile::tempdir().unwrap();
        let fresh = QaKeeper::new(&documents, other_dir.path().to_owned(), 2_500).unwrap();
        let book = QaBook::from_records(&[
            record(1, alice, 0, commit(0, &first.documents)),
            record(2, alice, 1_000, reveal(1, &first.documents)),
        ]);
        let drawn = fresh.set_for(1, &book).unwrap().unwrap();
        assert!(
            drawn
                .documents
                .iter()
                .all(|piece| !first.documents.contains(piece))
        );
        // A stored set edited after its commit is refused, not revealed as committed.
        let path = dir.path().join("epoch-7.json");
        let edited = std::fs::read_to_string(&path)
            .unwrap()
            .replacen("line", "LINE", 1);
        std::fs::write(&path, edited).unwrap();
        assert!(matches!(keeper.stored(7), Err(PolError::Pool { .. })));
    }

    #[test]
    fn the_keeper_runs_out_rather_than_drawing_a_small_set() {
        let dir = tempfile::tempdir().unwrap();
        let documents = vec![TextDocument {
            name: "qa".into(),
            text: "a short hidden text\n".into(),
        }];
        let keeper = QaKeeper::new(&documents, dir.path().to_owned(), 4_096).unwrap();
        assert_eq!(keeper.set_for(0, &QaBook::default()).unwrap(), None);
        assert!(QaKeeper::new(&documents, dir.path().to_owned(), 0).is_err());
        assert!(QaKeeper::new(&documents, dir.path().to_owned(), QA_SET_BYTES_MAX + 1).is_err());
    }
}
