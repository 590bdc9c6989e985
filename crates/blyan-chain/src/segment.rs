//! Payload segment files and the zero-copy [`PayloadHandle`].
//!
//! A segment is an append-only file `segments/<id>.seg`: a 64-byte header (magic, id), then
//! payloads, each starting at a 64-byte-aligned offset. Bytes below the committed end (recorded
//! in RocksDB with every append) never change, and a segment is never truncated below it while
//! the store is open; that is what keeps every mapping, and so every handle, valid.
//!
//! Crash order: payload bytes are written (and fsynced when durability is synced) before the
//! RocksDB batch that indexes them commits. On a read-write open, bytes past the committed end of
//! the active segment, and segments newer than it, are removed: they were never acknowledged. A
//! read-only open leaves them alone; [`scan_tail`] reports them.
//!
//! A staged payload (`stage.rs`) is downloaded into a staging file laid out as a segment holding
//! one payload (header with id 0, payload at offset 64). [`SegmentWriter::adopt`] makes it the
//! next segment: it seals the active segment, writes the new id into the staging file's header,
//! fsyncs it (synced durability), renames it into `segments/` and makes it the active segment;
//! the RocksDB batch commits after. A crash in between leaves a segment newer than the committed
//! active one, removed by recovery as above: the invariants hold unchanged.
//!
//! This is the crate's one module with `unsafe` (allowed in `lib.rs`): the three file mappings
//! ([`SegmentMaps`] for committed payloads, [`SegmentWriter::map_uncommitted`] for a payload
//! being appended, [`map_staged`] for a staged payload being checked) and `PayloadHandle`'s
//! `ImmutableBytes` impl, each with its `// SAFETY:` argument. The writer's mutating methods take
//! `&mut self` and the uncommitted mapping is an [`UncommittedPayload`] guard borrowing the
//! writer, so the compiler forbids discarding or writing bytes while they are mapped; the staged
//! mapping is a [`StagedPayload`] guard borrowing the staging file mutably, likewise.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::marker::PhantomData;
use std::ops::Deref;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use memmap2::{Mmap, MmapOptions};

use blyan_primitives::{Durability, PayloadHash};

use crate::error::{Error, Result, io_error};
use crate::hash::RAYON_HASH_BYTES_MIN;
use crate::schema::ActiveSegment;

/// Alignment of every payload's first byte, in the file and therefore in memory: enough for any
/// tensor element type and for AVX-512 loads.
pub const PAYLOAD_ALIGN_BYTES: u64 = 64;

/// Size of a segment's header; the first payload starts right after it.
pub(crate) const SEGMENT_HEADER_BYTES: u64 = 64;

const SEGMENT_MAGIC: [u8; 8] = *b"BLYSEG01";

/// The smallest page size of any platform this runs on: mappings start at a multiple of it.
const PAGE_BYTES_MIN: u64 = 4096;

/// Bytes read from a stream per write when a payload arrives through a reader.
const STREAM_CHUNK_BYTES: usize = 4 << 20;

// Page-aligned mappings plus 64-aligned offsets give 64-aligned pointers only if the header
// keeps the first payload aligned and pages are multiples of the alignment.
const _: () = assert!(SEGMENT_HEADER_BYTES.is_multiple_of(PAYLOAD_ALIGN_BYTES));
const _: () = assert!(PAGE_BYTES_MIN.is_multiple_of(PAYLOAD_ALIGN_BYTES));

pub(crate) fn segment_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("{id:010}.seg"))
}

fn segment_id_of(path: &Path) -> Option<u64> {
    let name = path.file_name()?.to_str()?;
    let digits = name.strip_suffix(".seg")?;
    if digits.len() == 10 && digits.bytes().all(|b| b.is_ascii_digit()) {
        digits.parse().ok()
    } else {
        None
    }
}

/// A segment's header: magic, id, then `tag` (0 in a segment; a staging file's incarnation
/// nonce, see `stage.rs`), then zeros.
pub(crate) fn segment_header(id: u64, tag: u64) -> [u8; SEGMENT_HEADER_BYTES as usize] {
    let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
    header[..8].copy_from_slice(&SEGMENT_MAGIC);
    header[8..16].copy_from_slice(&id.to_le_bytes());
    header[16..24].copy_from_slice(&tag.to_le_bytes());
    header
}

/// The id and tag of a header written by [`segment_header`], or `None` when the magic is not
/// a segment's.
pub(crate) fn parse_segment_header(
    header: &[u8; SEGMENT_HEADER_BYTES as usize],
) -> Option<(u64, u64)> {
    if header[..8] != SEGMENT_MAGIC {
        return None;
    }
    let id = u64::from_le_bytes(header[8..16].try_into().ok()?);
    let tag = u64::from_le_bytes(header[16..24].try_into().ok()?);
    Some((id, tag))
}

fn align_up(offset: u64) -> u64 {
    offset.div_ceil(PAYLOAD_ALIGN_BYTES) * PAYLOAD_ALIGN_BYTES
}

fn to_usize(value: u64, what: &str) -> Result<usize> {
    usize::try_from(value).map_err(|_| Error::Corruption {
        what: format!("{what} {value} does not fit in memory"),
    })
}

/// An empty payload still hands out a 64-byte-aligned pointer.
#[repr(C, align(64))]
struct AlignedEmpty([u8; 0]);
static EMPTY: AlignedEmpty = AlignedEmpty([]);

/// The bytes of one stored payload, mapped read-only from its segment file; no copy is made.
///
/// Cloning is cheap (an `Arc` of the mapping). The mapping stays valid while any handle lives,
/// even after the store is closed: segments are immutable below their committed end. The first
/// byte is 64-byte aligned. `blyan-tensorblock` takes it as an
/// `AsRef<[u8]> + Send + Sync + 'static` owner to build tensors over the bytes.
///
/// The bytes are the ones the index names; they are hashed on append and by
/// [`crate::ChainStore::verify`]. [`crate::ChainStore::payload`] does not re-hash them (a
/// handle on a 16 MiB payload costs ~0.4 µs, a hash pass milliseconds), so a bit flipped on
/// disk after the append is served by it; [`crate::ChainStore::payload_verified`] hashes on read
/// and refuses such bytes with [`Error::StoredPayloadCorrupt`]. Readers that build a model on
/// the bytes (`blyan-moe`) use the verified read.
#[derive(Clone)]
pub struct PayloadHandle {
    map: Option<Arc<Mmap>>,
    offset: usize,
    len: usize,
}

impl PayloadHandle {
    fn empty() -> Self {
        Self {
            map: None,
            offset: 0,
            len: 0,
        }
    }

    /// The payload bytes.
    pub fn as_slice(&self) -> &[u8] {
        match &self.map {
            Some(map) => &map[self.offset..self.offset + self.len],
            None => &EMPTY.0,
        }
    }
}

impl Deref for PayloadHandle {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.as_slice()
    }
}

impl AsRef<[u8]> for PayloadHandle {
    fn as_ref(&self) -> &[u8] {
        self.as_slice()
    }
}

// SAFETY: the bytes lie in a `PROT_READ` mapping (`Mmap::map`), held by the `Arc` for as long
// as this handle or a clone lives, so their address never changes and a write through them
// faults. Nobody writes them: a handle covers only committed bytes, which never change and are
// never truncated (this module's invariant, argued at `SegmentMaps::remap`), and the empty
// handle has no bytes.
unsafe impl blyan_primitives::ImmutableBytes for PayloadHandle {}

impl std::fmt::Debug for PayloadHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PayloadHandle")
            .field("len", &self.len)
            .finish_non_exhaustive()
    }
}

/// Where a payload was written, before its index commits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Placement {
    pub(crate) segment: u64,
    pub(crate) offset: u64,
    pub(crate) len: u64,
}

/// Read side: mappings of segments, shared by every handle.
pub(crate) struct SegmentMaps {
    dir: PathBuf,
    /// The longest mapping made of each segment so far.
    maps: RwLock<HashMap<u64, Arc<Mmap>>>,
    /// The writer's active segment and committed end, for choosing how much to map.
    active: RwLock<ActiveSegment>,
}

impl SegmentMaps {
    pub(crate) fn new(dir: PathBuf, active: ActiveSegment) -> Self {
        Self {
            dir,
            maps: RwLock::new(HashMap::new()),
            active: RwLock::new(active),
        }
    }

    /// The segment directory.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    /// The active segment and its committed end, as last set.
    pub(crate) fn active(&self) -> ActiveSegment {
        *self.active.read().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn set_active(&self, active: ActiveSegment) {
        *self.active.write().unwrap_or_else(PoisonError::into_inner) = active;
    }

    /// A handle on `len` bytes at `offset` of segment `segment`, all of them committed.
    pub(crate) fn handle(&self, segment: u64, offset: u64, len: u64) -> Result<PayloadHandle> {
        if len == 0 {
            return Ok(PayloadHandle::empty());
        }
        let end = offset.checked_add(len).ok_or_else(|| Error::Corruption {
            what: format!("payload at {offset}+{len} overflows"),
        })?;
        let existing = self
            .maps
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&segment)
            .cloned();
        let map = match existing {
            Some(map) if map.len() as u64 >= end => map,
            _ => self.remap(segment, end)?,
        };
        Ok(PayloadHandle {
            map: Some(map),
            offset: to_usize(offset, "payload offset")?,
            len: to_usize(len, "payload length")?,
        })
    }

    /// Maps segment `segment` over at least `[0, end)`, and never past its committed end.
    fn remap(&self, segment: u64, end: u64) -> Result<Arc<Mmap>> {
        let path = segment_path(&self.dir, segment);
        let file = File::open(&path).map_err(io_error(&path))?;
        let file_len = file.metadata().map_err(io_error(&path))?.len();
        if file_len < end {
            return Err(Error::Corruption {
                what: format!(
                    "segment {} is {file_len} bytes, the index needs {end}",
                    path.display()
                ),
            });
        }
        let active = *self.active.read().unwrap_or_else(PoisonError::into_inner);
        // A sealed segment (older than the active one) was truncated to its committed end when
        // it was sealed: all of it is immutable. In the active segment only the committed part
        // is, and `end` (from a committed index entry) is within it.
        let map_len = if segment < active.id {
            file_len
        } else if segment == active.id {
            end.max(active.end.min(file_len))
        } else {
            end
        };
        // SAFETY: the mapping is read-only and covers only committed bytes of a segment file.
        // One read-write store at a time writes a segment directory (RocksDB's LOCK file in the
        // same store directory keeps a second writer out; a read-only store writes nothing), it
        // only ever appends past the committed end, and it truncates only bytes past the
        // committed end (on open, on sealing, after a refused streamed payload). Committed ends
        // only grow, so bytes committed when this store (read-write, or read-only beside a
        // running writer) read its index stay below every later committed end: the mapped
        // bytes never change and the file never shrinks below them while the mapping lives.
        // Outside interference with the store's files is not defended against (documented in
        // docs/chain-storage.md).
        let map = unsafe {
            MmapOptions::new()
                .len(to_usize(map_len, "segment length")?)
                .map(&file)
        }
        .map_err(io_error(&path))?;
        let map = Arc::new(map);
        let mut maps = self.maps.write().unwrap_or_else(PoisonError::into_inner);
        let keep = maps.get(&segment).is_none_or(|old| old.len() < map.len());
        if keep {
            maps.insert(segment, Arc::clone(&map));
        }
        Ok(map)
    }
}

/// Write side: the active segment. Owned by the store's append lock.
pub(crate) struct SegmentWriter {
    dir: PathBuf,
    id: u64,
    file: File,
    /// Committed end: the first byte no index entry covers.
    end: u64,
}

impl SegmentWriter {
    /// Creates segment `id` with its header.
    pub(crate) fn create(dir: &Path, id: u64, durability: Durability) -> Result<Self> {
        let path = segment_path(dir, id);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .map_err(io_error(&path))?;
        file.write_all_at(&segment_header(id, 0), 0)
            .map_err(io_error(&path))?;
        if durability == Durability::Synced {
            file.sync_all().map_err(io_error(&path))?;
            sync_dir(dir)?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            id,
            file,
            end: SEGMENT_HEADER_BYTES,
        })
    }

    /// Reopens the active segment after a restart: checks its header, removes every byte past
    /// the committed end and every newer segment (never acknowledged).
    pub(crate) fn recover(dir: &Path, active: ActiveSegment) -> Result<Self> {
        for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
            let path = entry.map_err(io_error(dir))?.path();
            if segment_id_of(&path).is_some_and(|id| id > active.id) {
                tracing::info!(segment = %path.display(), "removing unacknowledged payload segment");
                std::fs::remove_file(&path).map_err(io_error(&path))?;
            }
        }
        let path = segment_path(dir, active.id);
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io_error(&path))?;
        let file_len = check_active_file(&file, &path, active)?;
        if file_len > active.end {
            tracing::info!(
                segment = %path.display(),
                reclaimed_bytes = file_len - active.end,
                "reclaiming unacknowledged payload bytes"
            );
            file.set_len(active.end).map_err(io_error(&path))?;
            file.sync_all().map_err(io_error(&path))?;
        }
        Ok(Self {
            dir: dir.to_path_buf(),
            id: active.id,
            file,
            end: active.end,
        })
    }

    pub(crate) fn active(&self) -> ActiveSegment {
        ActiveSegment {
            id: self.id,
            end: self.end,
        }
    }

    fn path(&self) -> PathBuf {
        segment_path(&self.dir, self.id)
    }

    /// Chooses where a payload of `len` bytes goes, sealing the active segment and starting a
    /// new one first when it would end past `target` bytes.
    pub(crate) fn place(
        &mut self,
        len: u64,
        target: u64,
        durability: Durability,
    ) -> Result<Placement> {
        if len == 0 {
            return Ok(Placement {
                segment: self.id,
                offset: self.end,
                len: 0,
            });
        }
        let offset = align_up(self.end);
        if offset + len > target && self.end > SEGMENT_HEADER_BYTES {
            // Seal: nothing past the committed end is worth keeping, and sealed segments are
            // mapped whole.
            let path = self.path();
            self.file.set_len(self.end).map_err(io_error(&path))?;
            if durability == Durability::Synced {
                self.file.sync_all().map_err(io_error(&path))?;
            }
            *self = Self::create(&self.dir, self.id + 1, durability)?;
            return Ok(Placement {
                segment: self.id,
                offset: SEGMENT_HEADER_BYTES,
                len,
            });
        }
        Ok(Placement {
            segment: self.id,
            offset,
            len,
        })
    }

    /// Writes `payload` at `placement` (and fsyncs it when synced). Not committed until the
    /// index batch is.
    pub(crate) fn write(
        &mut self,
        placement: Placement,
        payload: &[u8],
        durability: Durability,
    ) -> Result<()> {
        debug_assert_eq!(placement.segment, self.id);
        debug_assert_eq!(payload.len() as u64, placement.len);
        if payload.is_empty() {
            return Ok(());
        }
        let path = self.path();
        self.file
            .write_all_at(payload, placement.offset)
            .map_err(io_error(&path))?;
        if durability == Durability::Synced {
            self.file.sync_data().map_err(io_error(&path))?;
        }
        Ok(())
    }

    /// Streams up to `placement.len` bytes from `reader` into the segment, hashing them on the
    /// way. Returns how many bytes the reader gave (fewer when it ended early) and their blake3.
    /// A failing reader is [`StreamError::Reader`], kept apart from a failing segment write
    /// (which poisons the store).
    pub(crate) fn write_stream(
        &mut self,
        placement: Placement,
        reader: &mut dyn Read,
    ) -> std::result::Result<(u64, PayloadHash), StreamError> {
        let path = self.path();
        let mut hasher = blake3::Hasher::new();
        let mut buffer = vec![
            0u8;
            STREAM_CHUNK_BYTES
                .min(usize::try_from(placement.len).unwrap_or(usize::MAX))
                .max(1)
        ];
        let mut written = 0u64;
        while written < placement.len {
            let want = usize::try_from(placement.len - written)
                .unwrap_or(usize::MAX)
                .min(buffer.len());
            let got = match reader.read(&mut buffer[..want]) {
                Ok(0) => break,
                Ok(got) => got,
                Err(error) if error.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(error) => return Err(StreamError::Reader(error)),
            };
            let chunk = &buffer[..got];
            self.file
                .write_all_at(chunk, placement.offset + written)
                .map_err(|source| {
                    StreamError::Segment(Error::Io {
                        path: path.clone(),
                        source,
                    })
                })?;
            if chunk.len() >= RAYON_HASH_BYTES_MIN {
                hasher.update_rayon(chunk);
            } else {
                hasher.update(chunk);
            }
            written += got as u64;
        }
        Ok((written, PayloadHash(*hasher.finalize().as_bytes())))
    }

    /// fsyncs the segment (streamed payloads are synced once, after the hash check).
    pub(crate) fn sync(&self, durability: Durability) -> Result<()> {
        if durability == Durability::Synced {
            let path = self.path();
            self.file.sync_data().map_err(io_error(&path))?;
        }
        Ok(())
    }

    /// Adopts a staging file as the next segment, which becomes the active one: seals the
    /// active segment (as rolling over does), writes the new id into the staging file's header,
    /// renames it to `segments/<id + 1>.seg` (fsyncing file and directories when synced), and
    /// returns where its payload lies: `len` bytes at [`SEGMENT_HEADER_BYTES`]. Not committed
    /// until the index batch is; a crash before that leaves a segment newer than the committed
    /// active one, which recovery removes like any unacknowledged segment.
    ///
    /// `staged` is the staging file, read-write, laid out as a one-payload segment of exactly
    /// `SEGMENT_HEADER_BYTES + len` bytes and written by nothing else any more (the caller
    /// consumed its stage).
    pub(crate) fn adopt(
        &mut self,
        staged: File,
        staged_path: &Path,
        len: u64,
        durability: Durability,
    ) -> Result<Placement> {
        debug_assert!(len > 0, "an empty payload needs no segment");
        let staged_len = staged.metadata().map_err(io_error(staged_path))?.len();
        if staged_len != SEGMENT_HEADER_BYTES + len {
            return Err(Error::Corruption {
                what: format!(
                    "staging file {} is {staged_len} bytes, a payload of {len} needs {}",
                    staged_path.display(),
                    SEGMENT_HEADER_BYTES + len
                ),
            });
        }
        // Seal the active segment, as `place` does before rolling over.
        let path = self.path();
        self.file.set_len(self.end).map_err(io_error(&path))?;
        if durability == Durability::Synced {
            self.file.sync_all().map_err(io_error(&path))?;
        }
        let id = self.id + 1;
        staged
            .write_all_at(&segment_header(id, 0), 0)
            .map_err(io_error(staged_path))?;
        if durability == Durability::Synced {
            // The payload bytes too: the index must never name bytes that are not durable.
            staged.sync_all().map_err(io_error(staged_path))?;
        }
        let target = segment_path(&self.dir, id);
        std::fs::rename(staged_path, &target).map_err(io_error(&target))?;
        if durability == Durability::Synced {
            sync_dir(&self.dir)?;
            if let Some(staging_dir) = staged_path.parent() {
                sync_dir(staging_dir)?;
            }
        }
        *self = Self {
            dir: self.dir.clone(),
            id,
            file: staged,
            end: SEGMENT_HEADER_BYTES,
        };
        Ok(Placement {
            segment: id,
            offset: SEGMENT_HEADER_BYTES,
            len,
        })
    }

    /// Maps bytes written at `placement` but not committed, for the Proof-of-Learning hook of a
    /// streamed append. The guard borrows the writer, so the bytes can be neither discarded nor
    /// overwritten while it lives; the caller holds the append lock throughout.
    pub(crate) fn map_uncommitted(&self, placement: Placement) -> Result<UncommittedPayload<'_>> {
        debug_assert_eq!(placement.segment, self.id);
        debug_assert!(placement.offset >= self.end);
        let path = self.path();
        let start = to_usize(placement.offset, "payload offset")?;
        let end = to_usize(placement.offset + placement.len, "payload end")?;
        // Mapped from the start of the file: offset 0 is page aligned on every page size.
        // SAFETY: the range was just written by this writer, which holds the append lock, so no
        // other thread writes or truncates the file. Every method of this writer that writes or
        // truncates takes `&mut self`, and the returned guard borrows `self` for as long as the
        // mapping lives, so none of them can run (nor can the writer be dropped or replaced)
        // until the mapping is gone.
        let map =
            unsafe { MmapOptions::new().len(end).map(&self.file) }.map_err(io_error(&path))?;
        Ok(UncommittedPayload {
            map,
            start,
            end,
            _writer: PhantomData,
        })
    }

    /// Drops bytes written past the committed end (a refused streamed payload). Takes `&mut
    /// self`: no [`UncommittedPayload`] can still map them.
    pub(crate) fn discard(&mut self) -> Result<()> {
        let path = self.path();
        self.file.set_len(self.end).map_err(io_error(&path))
    }

    /// Advances the committed end after the index batch naming `placement` committed.
    pub(crate) fn commit(&mut self, placement: Placement) {
        if placement.len > 0 {
            debug_assert_eq!(placement.segment, self.id);
            debug_assert!(placement.offset >= self.end);
            self.end = placement.offset + placement.len;
        }
    }
}

/// A payload written into the active segment but not committed, mapped read-only. Borrows the
/// [`SegmentWriter`] that wrote it: while the guard lives the writer cannot discard, overwrite or
/// seal, which is what keeps the mapping valid.
pub(crate) struct UncommittedPayload<'writer> {
    map: Mmap,
    start: usize,
    end: usize,
    _writer: PhantomData<&'writer SegmentWriter>,
}

impl Deref for UncommittedPayload<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        &self.map[self.start..self.end]
    }
}

/// The payload of a staging file (a one-payload segment being downloaded), mapped read-only for
/// the checks of [`crate::ChainStore::append_staged`]: its hash and the Proof-of-Learning hook.
/// Borrows the staging file mutably: while the guard lives nothing can write through it.
pub(crate) struct StagedPayload<'stage> {
    /// `None` for an empty payload (an empty mapping is not allowed).
    map: Option<Mmap>,
    len: usize,
    _file: PhantomData<&'stage mut File>,
}

impl Deref for StagedPayload<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        match &self.map {
            Some(map) => {
                &map[SEGMENT_HEADER_BYTES as usize..SEGMENT_HEADER_BYTES as usize + self.len]
            }
            None => &EMPTY.0,
        }
    }
}

/// Maps the `len` payload bytes of the staging file `file` (at `path`), which must be exactly
/// `SEGMENT_HEADER_BYTES + len` bytes long ([`Error::Corruption`] otherwise).
///
/// The caller's contract, which `crate::stage::PayloadStage` keeps: `file` is the only handle
/// anything writes the staging file through (the store opens one stage per payload at a time,
/// and only that stage writes or truncates its file), so borrowing it mutably for the guard's
/// lifetime stops every write.
pub(crate) fn map_staged<'file>(
    file: &'file mut File,
    path: &Path,
    len: u64,
) -> Result<StagedPayload<'file>> {
    let file_len = file.metadata().map_err(io_error(path))?.len();
    if file_len != SEGMENT_HEADER_BYTES + len {
        return Err(Error::Corruption {
            what: format!(
                "staging file {} is {file_len} bytes, a payload of {len} needs {}",
                path.display(),
                SEGMENT_HEADER_BYTES + len
            ),
        });
    }
    let map = if len == 0 {
        None
    } else {
        let map_len = to_usize(file_len, "staging file length")?;
        // SAFETY: the mapping is read-only and within the file's length, just checked. The
        // staging file is written and truncated only through `file` (the caller's contract:
        // one stage per payload in a store, one read-write store per directory by RocksDB's
        // LOCK, read-only stores open no stage), and the returned guard borrows `file` mutably
        // for as long as the mapping lives, so no write or truncation can happen meanwhile.
        // Outside interference with the store's files is not defended against (as for
        // segments).
        Some(unsafe { MmapOptions::new().len(map_len).map(&*file) }.map_err(io_error(path))?)
    };
    Ok(StagedPayload {
        map,
        len: to_usize(len, "staged payload length")?,
        _file: PhantomData,
    })
}

/// Reads and checks the header of the active segment and that the file holds every committed
/// byte; returns the file's length. Writes nothing.
fn check_active_file(file: &File, path: &Path, active: ActiveSegment) -> Result<u64> {
    let mut header = [0u8; SEGMENT_HEADER_BYTES as usize];
    file.read_exact_at(&mut header, 0).map_err(io_error(path))?;
    if parse_segment_header(&header).is_none_or(|(id, _)| id != active.id) {
        return Err(Error::Corruption {
            what: format!("{} has no valid segment header", path.display()),
        });
    }
    let file_len = file.metadata().map_err(io_error(path))?.len();
    if file_len < active.end {
        return Err(Error::Corruption {
            what: format!(
                "{} is {file_len} bytes, the index committed {}",
                path.display(),
                active.end
            ),
        });
    }
    Ok(file_len)
}

/// Checks the active segment of a store opened read-only, as a read-write open would before
/// recovering it, without changing anything.
pub(crate) fn check_active(dir: &Path, active: ActiveSegment) -> Result<()> {
    let path = segment_path(dir, active.id);
    let file = File::open(&path).map_err(io_error(&path))?;
    check_active_file(&file, &path, active).map(|_| ())
}

/// Payload bytes on disk that no index names: what recovery on a read-write open removes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct TailScan {
    /// Bytes of the active segment past its committed end.
    pub(crate) tail_bytes: u64,
    /// Segment files newer than the active one: `(id, length in bytes)`, in id order.
    pub(crate) newer_segments: Vec<(u64, u64)>,
}

/// Looks (only) for payload bytes past the committed state of the segment directory.
pub(crate) fn scan_tail(dir: &Path, active: ActiveSegment) -> Result<TailScan> {
    let mut scan = TailScan::default();
    for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
        let path = entry.map_err(io_error(dir))?.path();
        if let Some(id) = segment_id_of(&path).filter(|id| *id > active.id) {
            let bytes = std::fs::metadata(&path).map_err(io_error(&path))?.len();
            scan.newer_segments.push((id, bytes));
        }
    }
    scan.newer_segments.sort_unstable();
    let path = segment_path(dir, active.id);
    let file_len = std::fs::metadata(&path).map_err(io_error(&path))?.len();
    scan.tail_bytes = file_len.saturating_sub(active.end);
    Ok(scan)
}

/// A streamed payload failed either on the reader's side or on the segment's.
pub(crate) enum StreamError {
    Reader(std::io::Error),
    Segment(Error),
}

/// fsyncs a directory so a newly created file's entry survives power loss.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io_error(dir))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip() {
        let dir = Path::new("/tmp");
        assert_eq!(segment_id_of(&segment_path(dir, 42)), Some(42));
        assert_eq!(segment_id_of(Path::new("/tmp/42.seg")), None);
        assert_eq!(segment_id_of(Path::new("/tmp/0000000042.tmp")), None);
    }

    #[test]
    fn empty_handle_is_aligned() {
        let handle = PayloadHandle::empty();
        assert!(handle.is_empty());
        assert_eq!(handle.as_ptr() as usize % PAYLOAD_ALIGN_BYTES as usize, 0);
    }

    #[test]
    fn alignment_rounds_up() {
        assert_eq!(align_up(64), 64);
        assert_eq!(align_up(65), 128);
        assert_eq!(align_up(0), 0);
    }
}
