//! Block uploads: a signed block in its wire form (`blyan_chain::encode_block`) taken as it
//! arrives, its header checked before any payload byte is accepted, its payload streamed into
//! the store.
//!
//! The phases: [`WireHeaderReader`] reads the claimed hash, the header length and the header
//! (at most [`blyan_chain::BLOCK_HEADER_BYTES_MAX`] bytes) and checks the header hashes to the
//! claim; [`Node::begin_upload`] runs every check that needs no payload (format, signature,
//! limits, then the links against the store as it is now); [`BlockUpload::write`] takes the
//! payload in order; [`Node::finish_upload`] appends the block and reacts to it as
//! [`Node::submit_block`] does. A payload of at most [`UPLOAD_MEMORY_BYTES_MAX`] is kept in
//! memory; a larger one is written into a [`PayloadStage`] in [`UPLOAD_CHUNK_BYTES`] pieces and
//! the staging file adopted as a segment by the append, so an upload holds at most two chunks
//! in memory whatever its size.
//!
//! Invariant: an upload that does not end in an append leaves nothing behind. A body shorter
//! ([`Error::UploadTruncated`]) or longer ([`Error::UploadOverrun`]) than its header says, a
//! payload whose blake3 is not the header's, or a refused append discards the stage; so does
//! dropping a [`BlockUpload`] (a request cancelled mid-body).

use std::sync::{Arc, Mutex, PoisonError};

use blyan_chain::{
    BLOCK_HEADER_BYTES_MAX, BLOCK_PREFIX_BYTES, BlockHash, BlockHeader, ChainStore, PayloadStage,
};
use blyan_ledger::Address as LedgerAddress;
use blyan_pol::{POL_RECORD_BYTES_MAX, PolRecord};

use crate::node::blocking;
use crate::{Error, Node, Result};

/// Largest payload an upload keeps in memory; a larger one is streamed into a staging file.
pub const UPLOAD_MEMORY_BYTES_MAX: u64 = 1 << 20;

/// Bytes of a staged upload buffered before they are written to the staging file (one write).
pub const UPLOAD_CHUNK_BYTES: usize = 1 << 20;

const _: () = assert!(
    UPLOAD_MEMORY_BYTES_MAX >= POL_RECORD_BYTES_MAX,
    "every Proof-of-Learning record is buffered, so a claim's bond is locked before its append"
);
const _: () = assert!(
    (UPLOAD_CHUNK_BYTES as u64).is_multiple_of(PayloadStage::BLOCK_BYTES),
    "a stage is written in whole blocks but for the payload's last"
);

/// Reads the header part of a block's wire form (`hash (32) ‖ header length (u32 LE) ‖
/// header`) from bytes as they arrive, holding at most
/// `BLOCK_PREFIX_BYTES + BLOCK_HEADER_BYTES_MAX` of them.
#[derive(Debug, Default)]
pub struct WireHeaderReader {
    buffer: Vec<u8>,
}

impl WireHeaderReader {
    /// A reader that has seen nothing yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Takes the next bytes of the body. Once the header is complete, returns it with how many
    /// bytes of `bytes` it used (the rest start the payload). A header length above
    /// [`BLOCK_HEADER_BYTES_MAX`], a header that does not decode, or one that does not hash to
    /// the claimed hash is [`Error::BlockRefused`].
    pub fn push(&mut self, bytes: &[u8]) -> Result<Option<(BlockHeader, usize)>> {
        let before = self.buffer.len();
        let wanted = match self.header_len()? {
            Some(header_len) => BLOCK_PREFIX_BYTES + header_len,
            None => BLOCK_PREFIX_BYTES,
        };
        let taken = (wanted - before).min(bytes.len());
        self.buffer.extend_from_slice(&bytes[..taken]);
        let Some(header_len) = self.header_len()? else {
            return Ok(None);
        };
        let end = BLOCK_PREFIX_BYTES + header_len;
        // The prefix may just have completed: take the header bytes from the same frame.
        let more = (end - self.buffer.len()).min(bytes.len() - taken);
        self.buffer.extend_from_slice(&bytes[taken..taken + more]);
        if self.buffer.len() < end {
            return Ok(None);
        }
        let mut claimed = [0u8; 32];
        claimed.copy_from_slice(&self.buffer[..32]);
        let claimed = BlockHash(claimed);
        let header = BlockHeader::decode(&self.buffer[BLOCK_PREFIX_BYTES..end])
            .map_err(Error::BlockRefused)?;
        let got = header.hash();
        if got != claimed {
            return Err(Error::BlockRefused(
                blyan_chain::Error::HeaderHashMismatch {
                    got,
                    expected: claimed,
                },
            ));
        }
        Ok(Some((header, taken + more)))
    }

    /// The body ended: the header is incomplete ([`Error::BlockRefused`], malformed).
    pub fn ended(&self) -> Error {
        Error::BlockRefused(blyan_chain::Error::Decode {
            what: "block",
            reason: format!(
                "the body ended after {} bytes, inside its hash, header length or header",
                self.buffer.len()
            ),
        })
    }

    /// The header length, once the prefix is complete.
    fn header_len(&self) -> Result<Option<usize>> {
        let Some(length) = self.buffer.get(32..BLOCK_PREFIX_BYTES) else {
            return Ok(None);
        };
        let length = u32::from_le_bytes([length[0], length[1], length[2], length[3]]);
        if length > BLOCK_HEADER_BYTES_MAX {
            return Err(Error::BlockRefused(blyan_chain::Error::LimitExceeded {
                what: "header bytes",
                got: u64::from(length),
                max: u64::from(BLOCK_HEADER_BYTES_MAX),
            }));
        }
        Ok(Some(length as usize))
    }
}

/// Where an upload's payload goes.
#[derive(Debug)]
enum Sink {
    /// A payload of at most [`UPLOAD_MEMORY_BYTES_MAX`].
    Memory(Vec<u8>),
    /// A larger one: the stage (shared with the blocking write in flight; `None` once handed
    /// to the append or discarded), and the bytes not yet written, fewer than a chunk.
    Staged {
        stage: Arc<Mutex<Option<PayloadStage>>>,
        pending: Vec<u8>,
        written: u64,
    },
}

/// A block whose header passed every check that needs no payload, taking its payload in
/// order ([`BlockUpload::write`]); appended by [`Node::finish_upload`]. Dropped unfinished, it
/// discards what it staged.
#[derive(Debug)]
pub struct BlockUpload {
    chain: Arc<ChainStore>,
    hash: BlockHash,
    header: BlockHeader,
    received: u64,
    sink: Sink,
}

impl BlockUpload {
    /// The block's hash.
    pub fn hash(&self) -> BlockHash {
        self.hash
    }

    /// The block's checked header (its `author` is the verified signer).
    pub fn header(&self) -> &BlockHeader {
        &self.header
    }

    /// Payload bytes taken so far.
    pub fn received(&self) -> u64 {
        self.received
    }

    /// Whether the payload goes to a staging file rather than memory.
    pub fn is_staged(&self) -> bool {
        matches!(self.sink, Sink::Staged { .. })
    }

    /// Takes the next payload bytes. More than the header's `payload_bytes` in all is
    /// [`Error::UploadOverrun`] (then drop or [`BlockUpload::discard`] the upload); a staging
    /// write that fails is [`Error::ChainFailed`].
    pub async fn write(&mut self, mut bytes: &[u8]) -> Result<()> {
        let expected = self.header.payload_bytes;
        if self.received + bytes.len() as u64 > expected {
            return Err(Error::UploadOverrun {
                block: self.hash,
                expected,
            });
        }
        self.received += bytes.len() as u64;
        match &mut self.sink {
            Sink::Memory(payload) => payload.extend_from_slice(bytes),
            Sink::Staged {
                stage,
                pending,
                written,
            } => {
                while !bytes.is_empty() {
                    let taken = (UPLOAD_CHUNK_BYTES - pending.len()).min(bytes.len());
                    pending.extend_from_slice(&bytes[..taken]);
                    bytes = &bytes[taken..];
                    if pending.len() == UPLOAD_CHUNK_BYTES {
                        let chunk =
                            std::mem::replace(pending, Vec::with_capacity(UPLOAD_CHUNK_BYTES));
                        write_chunk(stage, *written, chunk).await?;
                        *written += UPLOAD_CHUNK_BYTES as u64;
                    }
                }
            }
        }
        Ok(())
    }

    /// Gives the upload up, removing what it staged (on a blocking thread).
    pub async fn discard(mut self) {
        if let Sink::Staged { stage, .. } = &mut self.sink {
            let stage = Arc::clone(stage);
            let chain = Arc::clone(&self.chain);
            let _ = blocking("discarding an upload", move || discard(&chain, &stage)).await;
        }
    }
}

impl Drop for BlockUpload {
    fn drop(&mut self) {
        if let Sink::Staged { stage, .. } = &self.sink {
            let stage = Arc::clone(stage);
            let chain = Arc::clone(&self.chain);
            // Off the async threads when there is a runtime (unlinking a large file takes a
            // while); the lock waits for a write still in flight.
            match tokio::runtime::Handle::try_current() {
                Ok(runtime) => {
                    runtime.spawn_blocking(move || discard(&chain, &stage));
                }
                Err(_) => discard(&chain, &stage),
            }
        }
    }
}

/// Writes `chunk` at `offset` into the stage, on a blocking thread.
async fn write_chunk(
    stage: &Arc<Mutex<Option<PayloadStage>>>,
    offset: u64,
    chunk: Vec<u8>,
) -> Result<()> {
    let stage = Arc::clone(stage);
    blocking("writing an upload", move || {
        let guard = stage.lock().unwrap_or_else(PoisonError::into_inner);
        match guard.as_ref() {
            Some(stage) => stage.write_at(offset, &chunk).map_err(Error::ChainFailed),
            None => Err(Error::Task {
                what: "writing an upload",
                reason: "the stage was already discarded".to_owned(),
            }),
        }
    })
    .await?
}

/// Closes the stage (if still open) and removes its files. A stage already handed to the
/// append is left alone.
fn discard(chain: &ChainStore, stage: &Mutex<Option<PayloadStage>>) {
    let taken = stage.lock().unwrap_or_else(PoisonError::into_inner).take();
    let Some(taken) = taken else {
        return;
    };
    let payload = taken.payload_hash();
    // Closed first: an open stage cannot be discarded.
    drop(taken);
    match chain.discard_stage(&payload) {
        Ok(()) => tracing::debug!(%payload, "unfinished upload discarded"),
        Err(error) => tracing::warn!(%payload, %error, "discarding an unfinished upload failed"),
    }
}

impl Node {
    /// Starts the upload of the block `header` describes, after every check that needs no
    /// payload: the stateless ones and the signature ([`blyan_chain::Validator::check_header`]),
    /// then the links against the store as it is now
    /// ([`blyan_chain::Validator::check_links_now`]). A refusal is [`Error::BlockRefused`]
    /// (nothing was staged); the same payload already being staged is
    /// [`Error::UploadInProgress`].
    pub async fn begin_upload(&self, header: BlockHeader) -> Result<BlockUpload> {
        let store = self.chain().cloned().ok_or(Error::ChainUnavailable)?;
        blocking("checking an upload's header", move || {
            let refused = |error: blyan_chain::Error| {
                if error.is_invalid_block() {
                    Error::BlockRefused(error)
                } else {
                    Error::ChainFailed(error)
                }
            };
            let validator = store.validator();
            let hash = validator.check_header(&header).map_err(refused)?;
            validator
                .check_links_now(&store, &header, hash)
                .map_err(refused)?;
            let sink = if header.payload_bytes <= UPLOAD_MEMORY_BYTES_MAX {
                // Bounded by the constant: at most 1 MiB.
                Sink::Memory(Vec::with_capacity(header.payload_bytes as usize))
            } else {
                let stage = store.stage_payload(&header).map_err(|error| match error {
                    blyan_chain::Error::StageBusy { .. } => Error::UploadInProgress { block: hash },
                    error => refused(error),
                })?;
                Sink::Staged {
                    stage: Arc::new(Mutex::new(Some(stage))),
                    pending: Vec::with_capacity(UPLOAD_CHUNK_BYTES),
                    written: 0,
                }
            };
            Ok(BlockUpload {
                chain: store,
                hash,
                header,
                received: 0,
                sink,
            })
        })
        .await?
    }

    /// Appends an upload whose whole payload was written, then reacts to the block as
    /// [`Node::submit_block`] does. Fewer bytes than the header says is
    /// [`Error::UploadTruncated`]; a payload the store refuses (its blake3 is not the header's,
    /// a link that broke meanwhile) is [`Error::BlockRefused`]. Either way nothing is left
    /// staged.
    pub async fn finish_upload(&self, mut upload: BlockUpload) -> Result<(BlockHash, BlockHeader)> {
        let hash = upload.hash;
        let expected = upload.header.payload_bytes;
        if upload.received != expected {
            let received = upload.received;
            upload.discard().await;
            return Err(Error::UploadTruncated {
                block: hash,
                received,
                expected,
            });
        }
        let header = upload.header.clone();
        match &mut upload.sink {
            Sink::Memory(payload) => {
                let payload = std::mem::take(payload);
                // A dataset sample meets the L0 screen, as in `submit_block`.
                // Nothing is staged for a payload held in memory.
                let screened = self.screen_submitted(&header, &payload).await?;
                let claim = self.claim_of(hash, &header, &payload);
                let appended = self
                    .append_then_react(claim, move |chain| chain.append(&header, &payload))
                    .await;
                drop(screened);
                appended
            }
            Sink::Staged {
                stage,
                pending,
                written,
            } => {
                if !pending.is_empty() {
                    let last = std::mem::take(pending);
                    let length = last.len() as u64;
                    write_chunk(stage, *written, last).await?;
                    *written += length;
                }
                // Invariant: every byte the header announced reached the stage.
                debug_assert_eq!(*written, expected);
                let stage = Arc::clone(stage);
                // The claim of a Proof-of-Learning record is never staged: records are at most
                // `UPLOAD_MEMORY_BYTES_MAX`, and a larger one is no claim.
                self.append_then_react(None, move |chain| {
                    let taken = stage.lock().unwrap_or_else(PoisonError::into_inner).take();
                    let Some(taken) = taken else {
                        return Err(blyan_chain::Error::StageIncomplete {
                            block: hash,
                            missing_bytes: expected,
                        });
                    };
                    let payload = taken.payload_hash();
                    let appended = chain.append_staged(&header, taken);
                    if appended.is_err()
                        && let Err(error) = chain.discard_stage(&payload)
                    {
                        tracing::warn!(%payload, %error, "discarding a refused upload failed");
                    }
                    appended
                })
                .await
            }
        }
    }

    /// The claim (its hash and author) a block holds, when Proof-of-Learning is on and it is
    /// one; its bond is locked before it is appended.
    pub(crate) fn claim_of(
        &self,
        hash: BlockHash,
        header: &BlockHeader,
        payload: &[u8],
    ) -> Option<(BlockHash, LedgerAddress)> {
        self.pol()?;
        if header.kind != blyan_chain::BlockKind::PolProof {
            return None;
        }
        match PolRecord::from_payload(hash, payload).ok()? {
            PolRecord::Claim(_) => Some((hash, header.author)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use blyan_chain::{AuthorKey, BlockKind, ChainTip, encode_block};

    use super::*;

    fn sample_block() -> (BlockHeader, Vec<u8>) {
        let tip = ChainTip {
            chain: blyan_chain::ChainId::Dataset,
            height: 0,
            hash: BlockHash([1; 32]),
        };
        let payload = b"entry".to_vec();
        let mut header =
            BlockHeader::new_child(&tip, BlockKind::DatasetEntry, &payload, 1_800_000_000_000);
        header.sign(&AuthorKey::generate());
        (header, payload)
    }

    #[test]
    fn the_header_is_read_from_any_split_of_the_body() {
        let (header, payload) = sample_block();
        let wire = encode_block(&header, &payload);
        let header_end = wire.len() - payload.len();
        for frame in [1, 3, 35, 36, 37, 100, wire.len()] {
            let mut reader = WireHeaderReader::new();
            let mut offset = 0;
            let found = loop {
                let end = (offset + frame).min(wire.len());
                if let Some((read, used)) = reader.push(&wire[offset..end]).unwrap() {
                    break (read, offset + used);
                }
                offset = end;
                assert!(
                    offset < wire.len(),
                    "frame {frame}: the header never completed"
                );
            };
            assert_eq!(found.0, header, "frame {frame}");
            assert_eq!(
                found.1, header_end,
                "frame {frame}: payload starts after the header"
            );
        }
    }

    #[test]
    fn a_bad_prefix_or_header_is_refused() {
        let (header, payload) = sample_block();
        let mut wire = encode_block(&header, &payload);
        wire[0] ^= 1;
        let error = WireHeaderReader::new().push(&wire).unwrap_err();
        assert!(
            matches!(
                error,
                Error::BlockRefused(blyan_chain::Error::HeaderHashMismatch { .. })
            ),
            "{error}"
        );
        let mut long = vec![0u8; 32];
        long.extend_from_slice(&(BLOCK_HEADER_BYTES_MAX + 1).to_le_bytes());
        let error = WireHeaderReader::new().push(&long).unwrap_err();
        assert!(
            matches!(
                error,
                Error::BlockRefused(blyan_chain::Error::LimitExceeded { got, .. })
                    if got == u64::from(BLOCK_HEADER_BYTES_MAX) + 1
            ),
            "{error}"
        );
        // At the bound the length is accepted (and more bytes are awaited).
        let mut at_bound = vec![0u8; 32];
        at_bound.extend_from_slice(&BLOCK_HEADER_BYTES_MAX.to_le_bytes());
        assert!(WireHeaderReader::new().push(&at_bound).unwrap().is_none());
        let mut reader = WireHeaderReader::new();
        assert!(reader.push(&wire[..10]).unwrap().is_none());
        assert!(matches!(
            reader.ended(),
            Error::BlockRefused(blyan_chain::Error::Decode { .. })
        ));
    }
}
