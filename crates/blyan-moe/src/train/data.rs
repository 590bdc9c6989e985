//! Training text: files and directories read into documents, tokenized with the model's own
//! tokenizer, and split into a training part and a held-out part that training never sees.
//!
//! The split is by content: each document is cut into pieces of at most [`PIECE_BYTES_MAX`]
//! at line ends, and a piece is held out when the blake3 hash of its bytes falls in the
//! held-out fraction. The same text gives the same split whatever order it is read in and
//! whatever else is in the corpus, so a validator re-deriving the split agrees.

use std::path::{Path, PathBuf};

use crate::error::{MoeError, Result};
use crate::rng::Rng;
use crate::tokenizer::Tokenizer;

/// Largest piece of a document the split decides on, in bytes.
pub const PIECE_BYTES_MAX: usize = 16 << 10;
/// Largest corpus read, in bytes of text.
pub const CORPUS_BYTES_MAX: u64 = 2 << 30;
/// Held-out share of the corpus by default, in thousandths.
pub const HELD_OUT_PER_MILLE_DEFAULT: u32 = 50;

/// One text of a corpus, named by where it came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TextDocument {
    /// A file path, or a dataset block's hash.
    pub name: String,
    /// The text.
    pub text: String,
}

/// What reading a corpus found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CorpusRead {
    /// The texts, sorted by name.
    pub documents: Vec<TextDocument>,
    /// Files under a directory skipped because they are not UTF-8 text.
    pub skipped: Vec<PathBuf>,
}

/// Reads `paths`: a file is read whole and must be UTF-8 text; a directory is walked
/// (sorted, symbolic links not followed) and every file in it that is UTF-8 text without NUL
/// bytes is taken, the others listed as skipped.
///
/// A path that cannot be read is [`MoeError::Io`]; a named file that is not text and a corpus
/// with no text at all are [`MoeError::Corpus`].
pub fn read_corpus(paths: &[PathBuf]) -> Result<CorpusRead> {
    let mut read = CorpusRead::default();
    let mut bytes = 0u64;
    for path in paths {
        let metadata = std::fs::metadata(path).map_err(|error| MoeError::io(path, error))?;
        if metadata.is_dir() {
            walk(path, &mut read, &mut bytes)?;
        } else {
            let text = read_text(path)?.ok_or_else(|| MoeError::Corpus {
                reason: format!("{} is not UTF-8 text", path.display()),
            })?;
            add(&mut read, path, text, &mut bytes)?;
        }
    }
    read.documents.sort_by(|a, b| a.name.cmp(&b.name));
    read.documents.dedup_by(|a, b| a.name == b.name);
    if read
        .documents
        .iter()
        .all(|document| document.text.trim().is_empty())
    {
        return Err(MoeError::Corpus {
            reason: format!(
                "no text in {}",
                paths
                    .iter()
                    .map(|path| path.display().to_string())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    Ok(read)
}

fn add(read: &mut CorpusRead, path: &Path, text: String, bytes: &mut u64) -> Result<()> {
    *bytes += text.len() as u64;
    if *bytes > CORPUS_BYTES_MAX {
        return Err(MoeError::Corpus {
            reason: format!("more than {CORPUS_BYTES_MAX} bytes of text"),
        });
    }
    read.documents.push(TextDocument {
        name: path.display().to_string(),
        text,
    });
    Ok(())
}

fn walk(dir: &Path, read: &mut CorpusRead, bytes: &mut u64) -> Result<()> {
    let mut entries = std::fs::read_dir(dir)
        .map_err(|error| MoeError::io(dir, error))?
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<std::io::Result<Vec<_>>>()
        .map_err(|error| MoeError::io(dir, error))?;
    entries.sort();
    for path in entries {
        let metadata =
            std::fs::symlink_metadata(&path).map_err(|error| MoeError::io(&path, error))?;
        if metadata.is_dir() {
            walk(&path, read, bytes)?;
        } else if metadata.is_file() {
            match read_text(&path)? {
                Some(text) => add(read, &path, text, bytes)?,
                None => read.skipped.push(path),
            }
        }
    }
    Ok(())
}

/// The file's text, or `None` when it is not UTF-8 or holds a NUL byte.
fn read_text(path: &Path) -> Result<Option<String>> {
    let bytes = std::fs::read(path).map_err(|error| MoeError::io(path, error))?;
    if bytes.contains(&0) {
        return Ok(None);
    }
    Ok(String::from_utf8(bytes).ok())
}

/// A tokenized corpus split into training and held-out tokens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenCorpus {
    train: Vec<u32>,
    held_out: Vec<u32>,
    train_bytes: u64,
    held_out_bytes: u64,
    fingerprint: String,
    held_out_per_mille: u32,
}

/// Whether a piece with these bytes is held out.
fn is_held_out(piece: &str, per_mille: u32) -> bool {
    let hash = blake3::hash(piece.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash.as_bytes()[..8]);
    u64::from_le_bytes(first) % 1000 < u64::from(per_mille)
}

/// `text` cut into pieces of at most [`PIECE_BYTES_MAX`] bytes (see [`text_pieces`]).
fn pieces(text: &str) -> impl Iterator<Item = &str> {
    text_pieces(text, PIECE_BYTES_MAX)
}

/// `text` cut into pieces of at most `max_bytes` bytes (at least one character each), each
/// ending at a line end where there is one (at a character boundary otherwise).
pub fn text_pieces(text: &str, max_bytes: usize) -> impl Iterator<Item = &str> {
    let mut rest = text;
    std::iter::from_fn(move || {
        if rest.is_empty() {
            return None;
        }
        let mut end = rest.len().min(max_bytes.max(4));
        while !rest.is_char_boundary(end) {
            end -= 1;
        }
        if end < rest.len()
            && let Some(newline) = rest[..end].rfind('\n')
            && newline > 0
        {
            end = newline + 1;
        }
        let (piece, tail) = rest.split_at(end);
        rest = tail;
        Some(piece)
    })
}

impl TokenCorpus {
    /// Tokenizes `documents` with `tokenizer`, holding out `held_out_per_mille` thousandths
    /// of the pieces (by content, see the module's documentation). Each document ends with
    /// `end_of_text` when given.
    ///
    /// A split that leaves either part without tokens is [`MoeError::Corpus`].
    pub fn new(
        tokenizer: &Tokenizer,
        documents: &[TextDocument],
        held_out_per_mille: u32,
        end_of_text: Option<u32>,
    ) -> Result<Self> {
        if held_out_per_mille == 0 || held_out_per_mille >= 1000 {
            return Err(MoeError::Corpus {
                reason: format!("held-out share {held_out_per_mille}‰ must be within 1‰..999‰"),
            });
        }
        let mut corpus = Self {
            train: Vec::new(),
            held_out: Vec::new(),
            train_bytes: 0,
            held_out_bytes: 0,
            fingerprint: String::new(),
            held_out_per_mille,
        };
        let mut hasher = blake3::Hasher::new();
        for document in documents {
            hasher.update(&(document.text.len() as u64).to_le_bytes());
            hasher.update(document.text.as_bytes());
            let mut last_train = true;
            for piece in pieces(&document.text) {
                let tokens = tokenizer.encode_plain(piece)?;
                if is_held_out(piece, held_out_per_mille) {
                    corpus.held_out.extend_from_slice(&tokens);
                    corpus.held_out_bytes += piece.len() as u64;
                    last_train = false;
                } else {
                    corpus.train.extend_from_slice(&tokens);
                    corpus.train_bytes += piece.len() as u64;
                    last_train = true;
                }
            }
            if let Some(end) = end_of_text {
                if last_train {
                    corpus.train.push(end);
                } else {
                    corpus.held_out.push(end);
                }
            }
        }
        hasher.update(&held_out_per_mille.to_le_bytes());
        corpus.fingerprint = hasher.finalize().to_hex().to_string();
        if corpus.train.len() < 2 || corpus.held_out.len() < 2 {
            return Err(MoeError::Corpus {
                reason: format!(
                    "the corpus is too small to split: {} training and {} held-out tokens",
                    corpus.train.len(),
                    corpus.held_out.len()
                ),
            });
        }
        Ok(corpus)
    }

    /// Training tokens.
    pub fn train(&self) -> &[u32] {
        &self.train
    }

    /// Held-out tokens: never drawn for training.
    pub fn held_out(&self) -> &[u32] {
        &self.held_out
    }

    /// Bytes of text behind the training tokens.
    pub fn train_bytes(&self) -> u64 {
        self.train_bytes
    }

    /// Bytes of text behind the held-out tokens.
    pub fn held_out_bytes(&self) -> u64 {
        self.held_out_bytes
    }

    /// Held-out share, in thousandths of the pieces.
    pub fn held_out_per_mille(&self) -> u32 {
        self.held_out_per_mille
    }

    /// blake3 (hex) of the documents' texts, in order, and the held-out share: what a
    /// checkpoint records so that a resume on other data is refused.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// The training batch of one micro-step: `batch` windows of `positions + 1` tokens at
    /// offsets drawn from a stream fixed by `(seed, step, micro)`. Returns inputs and targets,
    /// each `batch × positions` tokens, row-major.
    ///
    /// The draw depends on nothing else, so a resumed run draws what an uninterrupted one would.
    pub(crate) fn batch(
        &self,
        seed: u64,
        step: u64,
        micro: u32,
        batch: usize,
        positions: usize,
    ) -> (Vec<u32>, Vec<u32>) {
        let window = positions + 1;
        let span = self.train.len().saturating_sub(window) as u64 + 1;
        let mut rng = Rng::for_name(seed, &format!("batch/{step}/{micro}"));
        let mut inputs = Vec::with_capacity(batch * positions);
        let mut targets = Vec::with_capacity(batch * positions);
        for _ in 0..batch {
            let start = (rng.next_u64() % span) as usize;
            let end = (start + window).min(self.train.len());
            let tokens = &self.train[start..end];
            let tokens = pad(tokens, window);
            inputs.extend_from_slice(&tokens[..positions]);
            targets.extend_from_slice(&tokens[1..]);
        }
        (inputs, targets)
    }
}

/// `tokens` repeated to `window` tokens (a corpus shorter than one window).
fn pad(tokens: &[u32], window: usize) -> Vec<u32> {
    tokens.iter().copied().cycle().take(window).collect()
}

/// The texts of a corpus split as [`TokenCorpus::new`] splits it (the same pieces, the same
/// held-out test), before tokenization.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TextSplit {
    /// The training pieces, concatenated in corpus order.
    pub train: String,
    /// The held-out pieces, concatenated in corpus order: the text training never sees.
    pub held_out: String,
}

/// The training and held-out texts of `documents` under `held_out_per_mille`: byte for byte
/// what [`TokenCorpus::new`] tokenizes into its two parts (its end-of-text tokens aside). What
/// a baseline that reads text rather than tokens, such as a general-purpose compressor given
/// the training text as context, is measured on.
///
/// A held-out share outside 1‰..999‰ is [`MoeError::Corpus`], as for [`TokenCorpus::new`].
pub fn split_texts(documents: &[TextDocument], held_out_per_mille: u32) -> Result<TextSplit> {
    if held_out_per_mille == 0 || held_out_per_mille >= 1000 {
        return Err(MoeError::Corpus {
            reason: format!("held-out share {held_out_per_mille}‰ must be within 1‰..999‰"),
        });
    }
    let mut split = TextSplit::default();
    for document in documents {
        for piece in pieces(&document.text) {
            if is_held_out(piece, held_out_per_mille) {
                split.held_out.push_str(piece);
            } else {
                split.train.push_str(piece);
            }
        }
    }
    Ok(split)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn documents(texts: &[&str]) -> Vec<TextDocument> {
        texts
            .iter()
            .enumerate()
            .map(|(index, text)| TextDocument {
                name: format!("doc{index}"),
                text: (*text).to_owned(),
            })
            .collect()
    }

    #[test]
    fn pieces_end_at_lines_and_cover_the_text() {
        let line = "a line of text, not long.\n";
        let text = line.repeat(2000);
        let cut: Vec<&str> = pieces(&text).collect();
        assert!(cut.len() > 1);
        assert_eq!(cut.concat(), text);
        assert!(cut.iter().all(|piece| piece.len() <= PIECE_BYTES_MAX));
        assert!(
            cut[..cut.len() - 1]
                .iter()
                .all(|piece| piece.ends_with('\n'))
        );
        // No line end: cut at a character boundary.
        let wide = "é".repeat(PIECE_BYTES_MAX);
        let cut: Vec<&str> = pieces(&wide).collect();
        assert_eq!(cut.concat(), wide);
        // A wide character across the limit, line ends before it.
        let text = format!("{}\n{}", "a".repeat(PIECE_BYTES_MAX - 10), "─".repeat(100));
        let cut: Vec<&str> = pieces(&text).collect();
        assert_eq!(cut.concat(), text);
        assert_eq!(cut[0].len(), PIECE_BYTES_MAX - 9);
    }

    #[test]
    fn the_split_is_by_content_and_disjoint() {
        let tokenizer = Tokenizer::byte_level();
        let mut texts: Vec<String> = (0..400)
            .map(|index| {
                format!(
                    "paragraph {index}: {}\n",
                    "words and more words ".repeat(900)
                )
            })
            .collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let corpus = TokenCorpus::new(&tokenizer, &documents(&refs), 100, None).expect("split");
        let held = corpus.held_out_bytes() as f64;
        let share = held / (held + corpus.train_bytes() as f64);
        assert!((0.03..0.25).contains(&share), "held-out share {share}");
        assert_eq!(corpus.held_out().len() as u64, corpus.held_out_bytes());
        // Reordering the documents moves no piece between the parts.
        texts.reverse();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let reordered = TokenCorpus::new(&tokenizer, &documents(&refs), 100, None).expect("split");
        assert_eq!(reordered.held_out_bytes(), corpus.held_out_bytes());
        assert_ne!(reordered.fingerprint(), corpus.fingerprint());
    }

    #[test]
    fn batches_are_fixed_by_seed_step_and_micro_step() {
        let tokenizer = Tokenizer::byte_level();
        let text = "the quick brown fox jumps over the lazy dog\n".repeat(3000);
        let corpus = TokenCorpus::new(
            &tokenizer,
            &documents(&[&text, &text.to_uppercase()]),
            300,
            None,
        )
        .expect("split");
        let (inputs, targets) = corpus.batch(1, 5, 0, 4, 16);
        assert_eq!((inputs.len(), targets.len()), (64, 64));
        assert_eq!(&inputs[1..16], &targets[..15]);
        assert_eq!(corpus.batch(1, 5, 0, 4, 16), (inputs.clone(), targets));
        assert_ne!(corpus.batch(1, 6, 0, 4, 16).0, inputs);
        assert_ne!(corpus.batch(1, 5, 1, 4, 16).0, inputs);
        assert_ne!(corpus.batch(2, 5, 0, 4, 16).0, inputs);
    }

    #[test]
    fn an_empty_or_unsplittable_corpus_is_refused() {
        let tokenizer = Tokenizer::byte_level();
        assert!(matches!(
            TokenCorpus::new(&tokenizer, &documents(&["tiny"]), 50, None),
            Err(MoeError::Corpus { .. })
        ));
        let dir = tempfile::tempdir().expect("temp dir");
        assert!(matches!(
            read_corpus(&[dir.path().to_owned()]),
            Err(MoeError::Corpus { .. })
        ));
        let binary = dir.path().join("image.bin");
        std::fs::write(&binary, [0u8, 159, 146, 150]).expect("write");
        assert!(matches!(
            read_corpus(std::slice::from_ref(&binary)),
            Err(MoeError::Corpus { .. })
        ));
        assert!(matches!(
            read_corpus(&[dir.path().join("absent.txt")]),
            Err(MoeError::Io { .. })
        ));
        std::fs::write(dir.path().join("a.txt"), "some text\n").expect("write");
        let read = read_corpus(&[dir.path().to_owned()]).expect("reads");
        assert_eq!(read.documents.len(), 1);
        assert_eq!(read.skipped, vec![binary]);
    }

    #[test]
    fn split_texts_are_the_texts_token_corpus_tokenizes() {
        let tokenizer = Tokenizer::byte_level();
        let texts: Vec<String> = (0..300)
            .map(|index| format!("section {index}: {}\n", "some words ".repeat(2000)))
            .collect();
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let documents = documents(&refs);
        let corpus = TokenCorpus::new(&tokenizer, &documents, 100, None).expect("split");
        let split = split_texts(&documents, 100).expect("split");
        assert_eq!(split.train.len() as u64, corpus.train_bytes());
        assert_eq!(split.held_out.len() as u64, corpus.held_out_bytes());
        assert_eq!(
            tokenizer.encode_plain(&split.held_out).expect("tokens"),
            corpus.held_out()
        );
        assert_eq!(
            tokenizer.encode_plain(&split.train).expect("tokens"),
            corpus.train()
        );
        assert!(matches!(
            split_texts(&documents, 1000),
            Err(MoeError::Corpus { .. })
        ));
    }
}
