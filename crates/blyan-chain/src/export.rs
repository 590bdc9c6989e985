//! Export and import of a chain segment as one file, for sync and backups.
//!
//! File layout (integers little endian):
//!
//! ```text
//! magic "BLYEXP01" (8) ‖ chain letter (1) ‖ zero (7) ‖ from_height (u64) ‖ to_height (u64)
//! repeated: 0x01 ‖ block in encode_block form (hash ‖ header length u32 ‖ header ‖ payload)
//! trailer:  0x00 ‖ block count (u64) ‖ blake3 of the concatenated block hashes (32)
//! ```
//!
//! Blocks are in (height, hash) order, so every parent precedes its children. Import checks
//! each block exactly as an append does (signature, hashes, links) and the trailer's count and
//! hash, so a truncated or reordered file is reported. Importing a stream is block-atomic, not
//! file-atomic: the valid blocks before a bad one stay imported. Importing a file first checks
//! its whole framing without appending, so a truncated or reordered file changes nothing.

use std::fs::{File, OpenOptions};
use std::io::{BufReader, BufWriter, Read, Write};
use std::path::Path;

use blyan_primitives::BlockHash;

use crate::chain::ChainId;
use crate::error::{Error, Result, io_error};
use crate::header::{BLOCK_PREFIX_BYTES, BlockHeader, decode_block_prefix, decode_claimed_header};
use crate::schema::{CF_BY_HEIGHT, height_prefix, parse_height_key};
use crate::store::ChainStore;

const EXPORT_MAGIC: [u8; 8] = *b"BLYEXP01";
const FILE_HEADER_BYTES: usize = 32;
const TAG_BLOCK: u8 = 1;
const TAG_END: u8 = 0;
/// Block count (u64) ‖ blake3 of the block hashes.
const TRAILER_BYTES: usize = 8 + 32;

/// What an export wrote.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExportSummary {
    /// The exported chain.
    pub chain: ChainId,
    /// First height asked for.
    pub from_height: u64,
    /// Last height asked for (inclusive).
    pub to_height: u64,
    /// Blocks written.
    pub blocks: u64,
    /// Payload bytes written.
    pub payload_bytes: u64,
}

/// What an import did.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImportSummary {
    /// The chain the file holds.
    pub chain: ChainId,
    /// Blocks in the file.
    pub blocks: u64,
    /// Blocks appended to the store.
    pub imported: u64,
    /// Blocks the store already held (skipped).
    pub already_present: u64,
    /// Payload bytes appended.
    pub payload_bytes: u64,
}

/// Counts bytes read, for error offsets.
struct Counting<R> {
    inner: R,
    offset: u64,
}

impl<R: Read> Read for Counting<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let read = self.inner.read(buf)?;
        self.offset += read as u64;
        Ok(read)
    }
}

impl<R: Read> Counting<R> {
    fn read_exact_or(&mut self, buf: &mut [u8], what: &str) -> Result<()> {
        let offset = self.offset;
        self.read_exact(buf).map_err(|error| Error::ExportFormat {
            offset,
            reason: format!("reading {what}: {error}"),
        })
    }
}

/// Writes an export stream block by block, for blocks that are not (yet) in a store: the
/// format [`ChainStore::export`] writes and [`ChainStore::import`] reads. The caller gives the
/// blocks of one chain in (height, hash) order, parents first.
pub struct ExportWriter<W: Write> {
    out: W,
    hashes: blake3::Hasher,
    summary: ExportSummary,
}

fn stream_error(source: std::io::Error) -> Error {
    Error::Io {
        path: "<export stream>".into(),
        source,
    }
}

impl<W: Write> ExportWriter<W> {
    /// Starts a stream of `chain`'s blocks with heights `from_height..=to_height`.
    pub fn new(mut out: W, chain: ChainId, from_height: u64, to_height: u64) -> Result<Self> {
        let mut file_header = [0u8; FILE_HEADER_BYTES];
        file_header[..8].copy_from_slice(&EXPORT_MAGIC);
        file_header[8] = chain.letter();
        file_header[16..24].copy_from_slice(&from_height.to_le_bytes());
        file_header[24..32].copy_from_slice(&to_height.to_le_bytes());
        out.write_all(&file_header).map_err(stream_error)?;
        Ok(Self {
            out,
            hashes: blake3::Hasher::new(),
            summary: ExportSummary {
                chain,
                from_height,
                to_height,
                blocks: 0,
                payload_bytes: 0,
            },
        })
    }

    /// Writes one block. A block of another chain, outside the heights, or whose payload is not
    /// the one its header commits to is refused ([`Error::ExportFormat`]).
    pub fn block(&mut self, header: &BlockHeader, payload: &[u8]) -> Result<()> {
        let summary = &self.summary;
        let hash = header.hash();
        let wrong = |reason: String| Error::ExportFormat {
            offset: 0,
            reason: format!("block {hash}: {reason}"),
        };
        if header.chain != summary.chain {
            return Err(wrong(format!(
                "it is on chain {}, not {}",
                header.chain, summary.chain
            )));
        }
        if !(summary.from_height..=summary.to_height).contains(&header.height) {
            return Err(wrong(format!(
                "height {} is outside the stream's",
                header.height
            )));
        }
        if crate::hash::hash_payload(payload) != header.payload_hash {
            return Err(wrong(
                "its payload is not the one its header commits to".into(),
            ));
        }
        let header_bytes = header.encode();
        let out = &mut self.out;
        out.write_all(&[TAG_BLOCK]).map_err(stream_error)?;
        out.write_all(hash.as_bytes()).map_err(stream_error)?;
        out.write_all(&(header_bytes.len() as u32).to_le_bytes())
            .map_err(stream_error)?;
        out.write_all(&header_bytes).map_err(stream_error)?;
        out.write_all(payload).map_err(stream_error)?;
        self.hashes.update(hash.as_bytes());
        self.summary.blocks += 1;
        self.summary.payload_bytes += payload.len() as u64;
        Ok(())
    }

    /// Writes the trailer and flushes.
    pub fn finish(mut self) -> Result<ExportSummary> {
        self.out.write_all(&[TAG_END]).map_err(stream_error)?;
        self.out
            .write_all(&self.summary.blocks.to_le_bytes())
            .map_err(stream_error)?;
        self.out
            .write_all(self.hashes.finalize().as_bytes())
            .map_err(stream_error)?;
        self.out.flush().map_err(stream_error)?;
        Ok(self.summary)
    }
}

impl ChainStore {
    /// Writes the blocks of `chain` with heights in `from_height..=to_height` to `out`, payloads
    /// straight from their mappings. Heights past the tip are simply absent.
    pub fn export(
        &self,
        chain: ChainId,
        from_height: u64,
        to_height: u64,
        mut out: impl Write,
    ) -> Result<ExportSummary> {
        let mut writer = ExportWriter::new(&mut out, chain, from_height, to_height)?;
        let start = height_prefix(chain, from_height);
        let end = match to_height.checked_add(1) {
            Some(next) => height_prefix(chain, next).to_vec(),
            None => vec![chain.letter() + 1],
        };
        for item in self.scan(CF_BY_HEIGHT, &start, &end) {
            let (key, _) = item?;
            let (_, _, hash) = parse_height_key(&key)?;
            let header = self.header(&hash)?.ok_or_else(|| Error::Corruption {
                what: format!("by_height names {hash}, which has no header"),
            })?;
            let payload = self.payload(&hash)?.ok_or_else(|| Error::Corruption {
                what: format!("block {hash} has no payload record"),
            })?;
            writer.block(&header, &payload)?;
        }
        let summary = writer.finish()?;
        tracing::info!(%chain, from_height, to_height, blocks = summary.blocks, "chain exported");
        Ok(summary)
    }

    /// [`ChainStore::export`] into a new file at `path` (replaced if it exists), fsynced.
    pub fn export_file(
        &self,
        chain: ChainId,
        from_height: u64,
        to_height: u64,
        path: &Path,
    ) -> Result<ExportSummary> {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(path)
            .map_err(io_error(path))?;
        let mut out = BufWriter::with_capacity(1 << 20, file);
        let summary = self
            .export(chain, from_height, to_height, &mut out)
            .map_err(|error| match error {
                Error::Io { source, .. } => Error::Io {
                    path: path.to_path_buf(),
                    source,
                },
                other => other,
            })?;
        let file = out.into_inner().map_err(|error| Error::Io {
            path: path.to_path_buf(),
            source: error.into_error(),
        })?;
        file.sync_all().map_err(io_error(path))?;
        Ok(summary)
    }

    /// Imports an export stream: every block not yet stored is validated and appended (its
    /// payload streamed into the store), blocks already stored are skipped. The trailer must
    /// match the blocks read. Block-atomic: a stream cut short or a block refused stops the
    /// import there, and the valid blocks before it stay imported ([`ChainStore::import_file`]
    /// checks a file's framing first). A read-only store refuses with [`Error::ReadOnly`].
    pub fn import(&self, input: impl Read) -> Result<ImportSummary> {
        self.ensure_writable("import")?;
        let mut input = Counting {
            inner: input,
            offset: 0,
        };
        let chain = read_file_header(&mut input)?;
        let mut summary = ImportSummary {
            chain,
            blocks: 0,
            imported: 0,
            already_present: 0,
            payload_bytes: 0,
        };
        let mut hashes = blake3::Hasher::new();
        while read_record_tag(&mut input)? == TAG_BLOCK {
            let (hash, header) = read_block_header(&mut input, chain)?;
            if self.contains(&hash)? {
                skip_payload(&mut input, hash, header.payload_bytes)?;
                summary.already_present += 1;
            } else {
                self.append_reader(&header, input.by_ref().take(header.payload_bytes))?;
                summary.imported += 1;
                summary.payload_bytes += header.payload_bytes;
            }
            hashes.update(hash.as_bytes());
            summary.blocks += 1;
        }
        read_trailer(&mut input, summary.blocks, hashes)?;
        tracing::info!(%chain, imported = summary.imported, skipped = summary.already_present, "chain imported");
        Ok(summary)
    }

    /// [`ChainStore::import`] from the file at `path`, after a first pass over the file's
    /// framing (file header, each block's header and hash, payload lengths, trailer) that reads
    /// no payload and appends nothing: a truncated, reordered or padded file is refused before
    /// the store changes. A block that then fails validation (a bad signature, a payload that
    /// does not match its hash) stops the import there, as for [`ChainStore::import`].
    pub fn import_file(&self, path: &Path) -> Result<ImportSummary> {
        self.ensure_writable("import")?;
        let open = || -> Result<BufReader<File>> {
            let file = File::open(path).map_err(io_error(path))?;
            Ok(BufReader::with_capacity(1 << 20, file))
        };
        let file_bytes = std::fs::metadata(path).map_err(io_error(path))?.len();
        check_framing(open()?, file_bytes)?;
        self.import(open()?)
    }
}

/// Reads the file header; returns the chain the file holds.
fn read_file_header<R: Read>(input: &mut Counting<R>) -> Result<ChainId> {
    let mut file_header = [0u8; FILE_HEADER_BYTES];
    input.read_exact_or(&mut file_header, "the file header")?;
    if file_header[..8] != EXPORT_MAGIC {
        return Err(Error::ExportFormat {
            offset: 0,
            reason: "not a Blyan chain export (bad magic)".into(),
        });
    }
    ChainId::from_letter(file_header[8]).ok_or_else(|| Error::ExportFormat {
        offset: 8,
        reason: format!("unknown chain letter {}", file_header[8]),
    })
}

/// Reads a record tag: [`TAG_BLOCK`] or [`TAG_END`], anything else is refused.
fn read_record_tag<R: Read>(input: &mut Counting<R>) -> Result<u8> {
    let mut tag = [0u8; 1];
    input.read_exact_or(&mut tag, "a record tag")?;
    match tag[0] {
        TAG_BLOCK | TAG_END => Ok(tag[0]),
        other => Err(Error::ExportFormat {
            offset: input.offset - 1,
            reason: format!("unknown record tag {other}"),
        }),
    }
}

/// Reads one block's prefix and header, checks the header hashes to the claimed hash and is on
/// `chain`; leaves the input at the payload.
fn read_block_header<R: Read>(
    input: &mut Counting<R>,
    chain: ChainId,
) -> Result<(BlockHash, BlockHeader)> {
    let record_offset = input.offset;
    let mut prefix = [0u8; BLOCK_PREFIX_BYTES];
    input.read_exact_or(&mut prefix, "a block prefix")?;
    let (claimed, header_len) = decode_block_prefix(&prefix)?;
    let mut header_bytes = vec![0u8; header_len];
    input.read_exact_or(&mut header_bytes, "a block header")?;
    let header = decode_claimed_header(claimed, &header_bytes)?;
    if header.chain != chain {
        return Err(Error::ExportFormat {
            offset: record_offset,
            reason: format!(
                "block {claimed} is on chain {}, the file holds chain {chain}",
                header.chain
            ),
        });
    }
    Ok((claimed, header))
}

/// Reads past a payload of `bytes` bytes of block `block`.
fn skip_payload<R: Read>(input: &mut Counting<R>, block: BlockHash, bytes: u64) -> Result<()> {
    let skipped =
        std::io::copy(&mut input.by_ref().take(bytes), &mut std::io::sink()).map_err(|error| {
            Error::ExportFormat {
                offset: input.offset,
                reason: format!("reading the payload of {block}: {error}"),
            }
        })?;
    if skipped != bytes {
        return Err(Error::ExportFormat {
            offset: input.offset,
            reason: format!("payload of {block} is cut short"),
        });
    }
    Ok(())
}

/// Reads the trailer, checks it names `blocks` blocks whose hashes `hashes` took in, and that
/// nothing follows it.
fn read_trailer<R: Read>(
    input: &mut Counting<R>,
    blocks: u64,
    hashes: blake3::Hasher,
) -> Result<()> {
    let mut trailer = [0u8; TRAILER_BYTES];
    input.read_exact_or(&mut trailer, "the trailer")?;
    let mut count = [0u8; 8];
    count.copy_from_slice(&trailer[..8]);
    let count = u64::from_le_bytes(count);
    if count != blocks || trailer[8..] != *hashes.finalize().as_bytes() {
        return Err(Error::ExportFormat {
            offset: input.offset - TRAILER_BYTES as u64,
            reason: format!("trailer names {count} blocks that differ from the {blocks} read"),
        });
    }
    let mut extra = [0u8; 1];
    let extra_read = input
        .read(&mut extra)
        .map_err(|error| Error::ExportFormat {
            offset: input.offset,
            reason: format!("reading past the trailer: {error}"),
        })?;
    if extra_read != 0 {
        return Err(Error::ExportFormat {
            offset: input.offset - 1,
            reason: "bytes after the trailer".into(),
        });
    }
    Ok(())
}

/// The framing pass of [`ChainStore::import_file`]: everything [`ChainStore::import`] checks
/// of the file's structure, with payloads skipped by seeking (their lengths checked against the
/// file's length `file_bytes`) rather than read.
fn check_framing(file: BufReader<File>, file_bytes: u64) -> Result<()> {
    let mut input = Counting {
        inner: file,
        offset: 0,
    };
    let chain = read_file_header(&mut input)?;
    let mut blocks = 0u64;
    let mut hashes = blake3::Hasher::new();
    while read_record_tag(&mut input)? == TAG_BLOCK {
        let (hash, header) = read_block_header(&mut input, chain)?;
        let cut_short = || Error::ExportFormat {
            offset: file_bytes,
            reason: format!("payload of {hash} is cut short"),
        };
        let payload_end = input
            .offset
            .checked_add(header.payload_bytes)
            .filter(|end| *end <= file_bytes)
            .ok_or_else(cut_short)?;
        let skip = i64::try_from(header.payload_bytes).map_err(|_| cut_short())?;
        input
            .inner
            .seek_relative(skip)
            .map_err(|error| Error::ExportFormat {
                offset: input.offset,
                reason: format!("skipping the payload of {hash}: {error}"),
            })?;
        input.offset = payload_end;
        hashes.update(hash.as_bytes());
        blocks += 1;
    }
    read_trailer(&mut input, blocks, hashes)
}
