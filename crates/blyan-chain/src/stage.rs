//! Staged payloads: a payload downloaded in verified ranges, in any order, by several writers at
//! once and across restarts, into a file that becomes a payload segment when its block is
//! appended ([`crate::ChainStore::append_staged`]), so its bytes are written once.
//!
//! Files, under `<store>/staging/`:
//! - `<payload hash hex>.part`, laid out exactly as a segment holding one payload: the 64-byte
//!   segment header (magic, id 0 until adoption, and a random tag naming this file's
//!   incarnation), then the payload at offset 64, sparse until written. Adoption writes the real
//!   id into the header and renames the file into `segments/`.
//! - `<payload hash hex>.blocks`, the sidecar: which [`PayloadStage::BLOCK_BYTES`] blocks are
//!   written. Only [`PayloadStage::flush`] writes it, after fsyncing the data, and it replaces it
//!   atomically (a temporary file, fsynced, renamed), so a resumed stage never claims bytes that
//!   were not durable. Format version [`SIDECAR_FORMAT_VERSION`], little endian:
//!
//! | bytes | field                                                     |
//! |-------|-----------------------------------------------------------|
//! | 8     | magic `BLYSTAGE`                                          |
//! | 4     | format version                                            |
//! | 4     | block bytes ([`PayloadStage::BLOCK_BYTES`])               |
//! | 32    | payload hash                                              |
//! | 8     | payload bytes                                             |
//! | 8     | tag of the `.part` incarnation it describes               |
//! | ⌈blocks / 8⌉ | written blocks, bit `i % 8` of byte `i / 8` for block `i` |
//! | 32    | blake3 of every byte before                               |
//!
//! A sidecar that is missing, corrupt, of another version, or describes another payload or
//! another incarnation of the `.part` file means "nothing written": the download starts over,
//! it never panics and never trusts bytes it cannot account for. A `.part` file of the wrong
//! length or header is started over the same way.
//!
//! Nothing here is read by recovery, verification or read-only opens: leftover staging files
//! are ignored until a stage for their payload is opened again or discarded.

use std::collections::HashSet;
use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::ops::Range;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use blyan_primitives::PayloadHash;

use crate::error::{Error, Result, io_error};
use crate::segment::{
    PAYLOAD_ALIGN_BYTES, SEGMENT_HEADER_BYTES, StagedPayload, map_staged, parse_segment_header,
    segment_header, sync_dir,
};
use crate::space::DiskFloor;

/// The staging directory inside a store.
pub(crate) const STAGING_DIR_NAME: &str = "staging";

/// Version of the sidecar layout in this module's docs.
pub const SIDECAR_FORMAT_VERSION: u32 = 1;

const SIDECAR_MAGIC: [u8; 8] = *b"BLYSTAGE";

/// Bytes of the sidecar before its bitmap.
const SIDECAR_PREFIX_BYTES: usize = 8 + 4 + 4 + 32 + 8 + 8;

/// Bytes of the sidecar's trailing checksum.
const SIDECAR_CHECKSUM_BYTES: usize = 32;

/// A staging file's segment id until adoption gives it its real one (segment ids start at 1).
const STAGING_SEGMENT_ID: u64 = 0;

// Blocks of whole 64-byte units keep every written range's file offset aligned like payloads.
const _: () = assert!(PayloadStage::BLOCK_BYTES.is_multiple_of(PAYLOAD_ALIGN_BYTES));
// The block is a bao-tree chunk group: 2^4 chunks of 1 KiB, so verified ranges map onto blocks.
const _: () = assert!(PayloadStage::BLOCK_BYTES == (1 << 4) * 1024);

/// The payloads with an open [`PayloadStage`] in one store: at most one stage per payload, so
/// one writer owns each staging file (what makes mapping it for the append safe).
#[derive(Debug, Default)]
pub(crate) struct StageRegistry(Mutex<HashSet<PayloadHash>>);

impl StageRegistry {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<PayloadHash>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Holds `payload`'s place in the registry; gives it back when dropped.
#[derive(Debug)]
struct Registration {
    registry: Arc<StageRegistry>,
    payload: PayloadHash,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.lock().remove(&self.payload);
    }
}

/// Which blocks of a stage are written.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Blocks {
    /// Bit `i % 8` of byte `i / 8` is block `i` (the sidecar's layout).
    bits: Vec<u8>,
    count: u64,
    written: u64,
}

impl Blocks {
    fn empty(count: u64) -> Result<Self> {
        let bytes = usize::try_from(count.div_ceil(8)).map_err(|_| Error::LimitExceeded {
            what: "staged payload blocks",
            got: count,
            max: usize::MAX as u64,
        })?;
        Ok(Self {
            bits: vec![0; bytes],
            count,
            written: 0,
        })
    }

    fn is_set(&self, block: u64) -> bool {
        self.bits[(block / 8) as usize] & (1 << (block % 8)) != 0
    }

    fn mark(&mut self, blocks: Range<u64>) {
        for block in blocks {
            let byte = &mut self.bits[(block / 8) as usize];
            let bit = 1 << (block % 8);
            if *byte & bit == 0 {
                *byte |= bit;
                self.written += 1;
            }
        }
        debug_assert!(self.written <= self.count);
    }
}

/// Where a stage's two files live.
#[derive(Clone, Debug)]
pub(crate) struct StagePaths {
    pub(crate) dir: PathBuf,
    pub(crate) data: PathBuf,
    pub(crate) sidecar: PathBuf,
    sidecar_temp: PathBuf,
}

impl StagePaths {
    pub(crate) fn new(dir: &Path, payload: &PayloadHash) -> Self {
        let name = hex::encode(payload.as_bytes());
        Self {
            dir: dir.to_path_buf(),
            data: dir.join(format!("{name}.part")),
            sidecar: dir.join(format!("{name}.blocks")),
            sidecar_temp: dir.join(format!("{name}.blocks.tmp")),
        }
    }

    /// The payload whose staging data file `path` is, if it is one (`<64 hex digits>.part`).
    pub(crate) fn payload_of(path: &Path) -> Option<PayloadHash> {
        let name = path.file_name()?.to_str()?;
        let digits = name.strip_suffix(".part")?;
        if digits.len() != 64
            || !digits
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return None;
        }
        PayloadHash::parse(digits).ok()
    }

    /// Removes every file of the stage; missing ones are fine.
    pub(crate) fn remove_all(&self) -> Result<()> {
        for path in [&self.data, &self.sidecar, &self.sidecar_temp] {
            remove_if_present(path)?;
        }
        Ok(())
    }
}

fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Err(error) if error.kind() != std::io::ErrorKind::NotFound => Err(Error::Io {
            path: path.to_path_buf(),
            source: error,
        }),
        _ => Ok(()),
    }
}

/// A payload being downloaded into the store: a staging file laid out as a one-payload
/// segment, written in [`PayloadStage::BLOCK_BYTES`] blocks in any order, resumable after a
/// restart from what [`PayloadStage::flush`] last persisted. Opened by
/// [`crate::ChainStore::stage_payload`], consumed by [`crate::ChainStore::append_staged`] (which
/// adopts the file as a segment: no copy) or removed by [`crate::ChainStore::discard_stage`].
///
/// `Send + Sync`: share it in an `Arc` and let several tasks [`PayloadStage::write_at`] at once
/// (positional writes, no lock held while writing). A store opens at most one stage per payload
/// at a time ([`Error::StageBusy`] otherwise); dropping the stage closes it, keeping its files.
///
/// ```
/// use blyan_chain::{AuthorKey, BlockHeader, BlockKind, ChainId, ChainStore, PayloadStage, StoreConfig};
///
/// # fn main() -> blyan_chain::Result<()> {
/// # let dir = tempfile::tempdir().expect("temp dir");
/// let store = ChainStore::open(dir.path(), StoreConfig::default())?;
/// let payload = vec![7u8; 40_000]; // arrives from peers, range by verified range
/// let mut header = BlockHeader::new_child(
///     &store.tip(ChainId::Dataset), BlockKind::DatasetEntry, &payload, 1_770_000_000_000);
/// header.sign(&AuthorKey::generate());
///
/// let stage = store.stage_payload(&header)?; // or resumes one after a restart
/// for range in stage.missing() {
///     for start in range.clone().step_by(PayloadStage::BLOCK_BYTES as usize) {
///         let end = (start + PayloadStage::BLOCK_BYTES).min(range.end);
///         stage.write_at(start, &payload[start as usize..end as usize])?;
///     }
/// }
/// stage.flush()?; // progress survives a restart
/// let hash = store.append_staged(&header, stage)?; // adopted as a segment: no copy
/// assert_eq!(&*store.payload_verified(&hash)?.expect("appended"), &payload[..]);
/// # Ok(())
/// # }
/// ```
#[derive(Debug)]
pub struct PayloadStage {
    payload: PayloadHash,
    len: u64,
    /// The incarnation of the `.part` file, in its header and in every sidecar describing it.
    tag: u64,
    paths: StagePaths,
    file: File,
    blocks: Mutex<Blocks>,
    /// Serializes flushes: they share the sidecar's temporary file.
    flushing: Mutex<()>,
    registration: Registration,
    /// The store's free-disk floor, checked before every write.
    floor: DiskFloor,
}

const _: () = {
    const fn shareable<T: Send + Sync + 'static>() {}
    shareable::<PayloadStage>();
};

impl PayloadStage {
    /// Granularity of the resume bookkeeping: writes start on a multiple of it and cover whole
    /// blocks (but the payload's last, which may be short). A bao-tree chunk group of 16 chunks.
    pub const BLOCK_BYTES: u64 = 16 * 1024;

    /// Opens the stage of `payload` (`len` bytes) in `dir`, resuming what a sidecar proves
    /// written, or starting over. Refuses with [`Error::StageBusy`] while another stage of the
    /// same payload is open.
    pub(crate) fn open(
        dir: &Path,
        payload: PayloadHash,
        len: u64,
        registry: &Arc<StageRegistry>,
        floor: DiskFloor,
    ) -> Result<Self> {
        if !registry.lock().insert(payload) {
            return Err(Error::StageBusy { payload });
        }
        let registration = Registration {
            registry: Arc::clone(registry),
            payload,
        };
        std::fs::create_dir_all(dir).map_err(io_error(dir))?;
        let paths = StagePaths::new(dir, &payload);
        let block_count = len.div_ceil(Self::BLOCK_BYTES);
        let (file, tag, blocks) = match resume(&paths, payload, len, block_count)? {
            Some(resumed) => resumed,
            None => {
                // The sidecar goes first: a crash between the two steps must not leave it
                // describing the new, empty file (the tag would catch it too).
                remove_if_present(&paths.sidecar)?;
                let tag = rand::random::<u64>();
                let file = OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create(true)
                    .truncate(true)
                    .open(&paths.data)
                    .map_err(io_error(&paths.data))?;
                file.write_all_at(&segment_header(STAGING_SEGMENT_ID, tag), 0)
                    .map_err(io_error(&paths.data))?;
                file.set_len(SEGMENT_HEADER_BYTES + len)
                    .map_err(io_error(&paths.data))?;
                (file, tag, Blocks::empty(block_count)?)
            }
        };
        tracing::debug!(
            %payload,
            payload_bytes = len,
            written_blocks = blocks.written,
            block_count,
            "payload stage open"
        );
        Ok(Self {
            payload,
            len,
            tag,
            paths,
            file,
            blocks: Mutex::new(blocks),
            flushing: Mutex::new(()),
            registration,
            floor,
        })
    }

    /// The hash of the payload being staged.
    pub fn payload_hash(&self) -> PayloadHash {
        self.payload
    }

    /// The payload's length in bytes.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the payload is empty (then the stage is complete from the start).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Writes verified bytes at payload offset `offset` (a positional write, concurrent with
    /// other writers) and marks their blocks written. `offset` must be a multiple of
    /// [`PayloadStage::BLOCK_BYTES`], and so must `bytes.len()` unless the write ends the
    /// payload ([`Error::StageMisaligned`]); the range must lie within the payload
    /// ([`Error::StageOutOfBounds`]). Writing a block again overwrites it. Not durable until
    /// [`PayloadStage::flush`]. Refused with [`Error::DiskFull`], nothing written, when the
    /// bytes would leave less free disk than the store's
    /// [`crate::StoreConfig::free_bytes_min`].
    pub fn write_at(&self, offset: u64, bytes: &[u8]) -> Result<()> {
        let count = bytes.len() as u64;
        let end = offset
            .checked_add(count)
            .filter(|end| *end <= self.len)
            .ok_or(Error::StageOutOfBounds {
                payload: self.payload,
                offset,
                bytes: count,
                payload_bytes: self.len,
            })?;
        if !offset.is_multiple_of(Self::BLOCK_BYTES)
            || (!count.is_multiple_of(Self::BLOCK_BYTES) && end != self.len)
        {
            return Err(Error::StageMisaligned {
                payload: self.payload,
                offset,
                bytes: count,
                block_bytes: Self::BLOCK_BYTES,
            });
        }
        if count == 0 {
            return Ok(());
        }
        self.floor.check(count)?;
        self.file
            .write_all_at(bytes, SEGMENT_HEADER_BYTES + offset)
            .map_err(io_error(&self.paths.data))?;
        self.lock_blocks()
            .mark(offset / Self::BLOCK_BYTES..end.div_ceil(Self::BLOCK_BYTES));
        Ok(())
    }

    /// Persists progress: fsyncs the data, then atomically replaces the sidecar with the blocks
    /// written before the fsync, so a resumed stage never claims bytes that were not durable.
    /// Always syncs, whatever the store's durability.
    pub fn flush(&self) -> Result<()> {
        let _serial = self.flushing.lock().unwrap_or_else(PoisonError::into_inner);
        // Invariant: every block in this snapshot had its write return before the fsync below.
        let blocks = self.lock_blocks().clone();
        self.file.sync_data().map_err(io_error(&self.paths.data))?;
        let encoded = encode_sidecar(self.payload, self.len, self.tag, &blocks);
        let temp = &self.paths.sidecar_temp;
        let mut file = File::create(temp).map_err(io_error(temp))?;
        file.write_all(&encoded).map_err(io_error(temp))?;
        file.sync_all().map_err(io_error(temp))?;
        drop(file);
        std::fs::rename(temp, &self.paths.sidecar).map_err(io_error(&self.paths.sidecar))?;
        // Makes the `.part` file's entry and the sidecar's rename durable.
        sync_dir(&self.paths.dir)
    }

    /// The byte ranges not yet written, ascending and coalesced.
    pub fn missing(&self) -> Vec<Range<u64>> {
        let blocks = self.lock_blocks();
        let mut missing: Vec<Range<u64>> = Vec::new();
        for block in (0..blocks.count).filter(|block| !blocks.is_set(*block)) {
            let start = block * Self::BLOCK_BYTES;
            let end = (start + Self::BLOCK_BYTES).min(self.len);
            match missing.last_mut() {
                Some(last) if last.end == start => last.end = end,
                _ => missing.push(start..end),
            }
        }
        missing
    }

    /// Bytes not yet written.
    pub fn missing_bytes(&self) -> u64 {
        self.missing()
            .iter()
            .map(|range| range.end - range.start)
            .sum()
    }

    /// Whether every byte is written.
    pub fn is_complete(&self) -> bool {
        let blocks = self.lock_blocks();
        blocks.written == blocks.count
    }

    fn lock_blocks(&self) -> std::sync::MutexGuard<'_, Blocks> {
        self.blocks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether this stage was opened by the store owning `registry`.
    pub(crate) fn belongs_to(&self, registry: &Arc<StageRegistry>) -> bool {
        Arc::ptr_eq(&self.registration.registry, registry)
    }

    pub(crate) fn paths(&self) -> &StagePaths {
        &self.paths
    }

    /// The staged payload mapped read-only; the guard borrows the stage mutably, so no write
    /// reaches the file while it lives.
    pub(crate) fn map(&mut self) -> Result<StagedPayload<'_>> {
        map_staged(&mut self.file, &self.paths.data, self.len)
    }

    /// A second handle on the staging file, for the segment writer that adopts it. The stage is
    /// consumed by the same append, so nothing writes through the first handle afterwards.
    pub(crate) fn adoption_file(&self) -> Result<File> {
        self.file.try_clone().map_err(io_error(&self.paths.data))
    }
}

/// The staging file and the blocks its sidecar proves written, if both describe `payload`.
fn resume(
    paths: &StagePaths,
    payload: PayloadHash,
    len: u64,
    block_count: u64,
) -> Result<Option<(File, u64, Blocks)>> {
    let file = match OpenOptions::new().read(true).write(true).open(&paths.data) {
        Ok(file) => file,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => {
            return Err(Error::Io {
                path: paths.data.clone(),
                source: error,
            });
        }
    };
    let file_len = file.metadata().map_err(io_error(&paths.data))?.len();
    let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
    let tag = match file.read_exact_at(&mut header, 0) {
        Ok(()) if file_len == SEGMENT_HEADER_BYTES + len => match parse_segment_header(&header) {
            Some((STAGING_SEGMENT_ID, tag)) => tag,
            _ => return Ok(start_over(paths, "the staging file has no staging header")),
        },
        _ => return Ok(start_over(paths, "the staging file has the wrong length")),
    };
    let blocks = match std::fs::read(&paths.sidecar) {
        Ok(bytes) => match decode_sidecar(&bytes, payload, len, tag, block_count) {
            Ok(blocks) => blocks,
            Err(reason) => {
                tracing::warn!(sidecar = %paths.sidecar.display(), reason, "ignoring the stage's sidecar: nothing counts as written");
                Blocks::empty(block_count)?
            }
        },
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Blocks::empty(block_count)?,
        Err(error) => {
            return Err(Error::Io {
                path: paths.sidecar.clone(),
                source: error,
            });
        }
    };
    Ok(Some((file, tag, blocks)))
}

fn start_over<T>(paths: &StagePaths, reason: &'static str) -> Option<T> {
    tracing::warn!(staging = %paths.data.display(), reason, "starting the stage over");
    None
}

fn encode_sidecar(payload: PayloadHash, len: u64, tag: u64, blocks: &Blocks) -> Vec<u8> {
    let mut out =
        Vec::with_capacity(SIDECAR_PREFIX_BYTES + blocks.bits.len() + SIDECAR_CHECKSUM_BYTES);
    out.extend_from_slice(&SIDECAR_MAGIC);
    out.extend_from_slice(&SIDECAR_FORMAT_VERSION.to_le_bytes());
    out.extend_from_slice(&(PayloadStage::BLOCK_BYTES as u32).to_le_bytes());
    out.extend_from_slice(payload.as_bytes());
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&tag.to_le_bytes());
    out.extend_from_slice(&blocks.bits);
    let checksum = blake3::hash(&out);
    out.extend_from_slice(checksum.as_bytes());
    out
}

/// The blocks a sidecar records, if it is whole, of this version, and about this payload and
/// incarnation; otherwise why not.
fn decode_sidecar(
    bytes: &[u8],
    payload: PayloadHash,
    len: u64,
    tag: u64,
    block_count: u64,
) -> std::result::Result<Blocks, &'static str> {
    let mut blocks = Blocks::empty(block_count).map_err(|_| "too many blocks")?;
    if bytes.len() != SIDECAR_PREFIX_BYTES + blocks.bits.len() + SIDECAR_CHECKSUM_BYTES {
        return Err("wrong length");
    }
    let (body, checksum) = bytes.split_at(bytes.len() - SIDECAR_CHECKSUM_BYTES);
    if blake3::hash(body).as_bytes() != checksum {
        return Err("checksum mismatch");
    }
    let (prefix, bits) = body.split_at(SIDECAR_PREFIX_BYTES);
    let field = |range: Range<usize>| &prefix[range];
    if field(0..8) != SIDECAR_MAGIC {
        return Err("not a stage sidecar");
    }
    if field(8..12) != SIDECAR_FORMAT_VERSION.to_le_bytes() {
        return Err("another format version");
    }
    if field(12..16) != (PayloadStage::BLOCK_BYTES as u32).to_le_bytes() {
        return Err("another block size");
    }
    if field(16..48) != payload.as_bytes() || field(48..56) != len.to_le_bytes() {
        return Err("describes another payload");
    }
    if field(56..64) != tag.to_le_bytes() {
        return Err("describes another staging file");
    }
    blocks.bits.copy_from_slice(bits);
    let written: u64 = blocks
        .bits
        .iter()
        .map(|byte| u64::from(byte.count_ones()))
        .sum();
    if (block_count..blocks.bits.len() as u64 * 8).any(|block| blocks.is_set(block)) {
        return Err("marks blocks past the payload's end");
    }
    blocks.written = written;
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Blocks of `count` with the `(start, end)` block ranges marked.
    fn marked(count: u64, marks: &[(u64, u64)]) -> Blocks {
        let mut blocks = Blocks::empty(count).unwrap();
        for (start, end) in marks {
            blocks.mark(*start..*end);
        }
        blocks
    }

    #[test]
    fn sidecar_round_trips() {
        let payload = PayloadHash([7; 32]);
        for (count, marks) in [
            (0, vec![]),
            (1, vec![(0, 1)]),
            (9, vec![(0, 3), (5, 9)]),
            (17, vec![(16, 17)]),
        ] {
            let blocks = marked(count, &marks);
            let len = count * PayloadStage::BLOCK_BYTES;
            let encoded = encode_sidecar(payload, len, 42, &blocks);
            assert_eq!(
                decode_sidecar(&encoded, payload, len, 42, count),
                Ok(blocks)
            );
        }
    }

    #[test]
    fn a_sidecar_that_does_not_match_counts_as_nothing_written() {
        let payload = PayloadHash([7; 32]);
        let len = 9 * PayloadStage::BLOCK_BYTES;
        let good = encode_sidecar(payload, len, 42, &marked(9, &[(0, 9)]));
        let check = |bytes: &[u8], expected: &str| {
            assert_eq!(
                decode_sidecar(bytes, payload, len, 42, 9),
                Err(expected),
                "{expected}"
            );
        };
        check(&good[..good.len() - 1], "wrong length");
        check(&[], "wrong length");
        let mut flipped = good.clone();
        flipped[SIDECAR_PREFIX_BYTES] ^= 0x80;
        check(&flipped, "checksum mismatch");
        assert_eq!(
            decode_sidecar(&good, PayloadHash([8; 32]), len, 42, 9),
            Err("describes another payload")
        );
        assert_eq!(
            decode_sidecar(&good, payload, len, 43, 9),
            Err("describes another staging file")
        );
        // A future version, correctly checksummed, is refused by its version field.
        let mut future = good[..good.len() - SIDECAR_CHECKSUM_BYTES].to_vec();
        future[8..12].copy_from_slice(&(SIDECAR_FORMAT_VERSION + 1).to_le_bytes());
        let checksum = blake3::hash(&future);
        future.extend_from_slice(checksum.as_bytes());
        check(&future, "another format version");
        // Bits past the last block, correctly checksummed, are refused.
        let mut beyond = encode_sidecar(payload, len, 42, &marked(9, &[]));
        let body_len = beyond.len() - SIDECAR_CHECKSUM_BYTES;
        beyond[SIDECAR_PREFIX_BYTES + 1] = 0x80;
        let checksum = blake3::hash(&beyond[..body_len]);
        beyond[body_len..].copy_from_slice(checksum.as_bytes());
        check(&beyond, "marks blocks past the payload's end");
    }

    #[test]
    fn marking_counts_each_block_once() {
        let blocks = marked(20, &[(0, 4), (2, 6), (19, 20)]);
        assert_eq!(blocks.written, 7);
        assert!(blocks.is_set(5) && !blocks.is_set(6) && blocks.is_set(19));
    }
}
