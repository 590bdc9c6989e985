//! Recovering an unsynced store after a power loss: dropping the blocks whose payload bytes
//! did not reach the disk.
//!
//! Under [`Durability::Unsynced`](blyan_primitives::Durability) nothing is fsynced, so a power
//! loss may persist RocksDB's index further than the segment files it points into: a block's
//! payload may lie past its segment's real end, or its segment may be gone. Such a store used to
//! refuse to open. On a read-write open under unsynced durability, [`roll_back_lost_blocks`]
//! scans every payload record (one sequential pass over the `payloads` column family, no payload
//! read) for an extent past its segment's length. If one is found (evidence of a power loss),
//! the blocks still held by the damaged segments are hashed too, since their bytes may be stale.
//! The store is then rolled back to the state just before the first lost block by sequence
//! number: that block and every later one (which includes every block depending on it, since a
//! block is stored after what it depends on) leave the index in one synced batch; chain tips,
//! counters, expert heads and the candidates the dropped blocks promoted are restored; the
//! active segment becomes the one holding the last kept payload. Dropping whole sequence
//! suffixes keeps the append sequence gapless, so the store verifies afterwards.
//!
//! These are exactly the blocks the unsynced promise allows to lose: appended, never made
//! durable. A synced store is not repaired: there an index pointing past a segment's end is
//! corruption, reported at open. A lost genesis block is corruption too.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use blyan_primitives::{BlockHash, PayloadHash};
use rocksdb::{ColumnFamily, DB, Direction, IteratorMode, ReadOptions, WriteBatch, WriteOptions};

use super::open::Loaded;
use crate::chain::{BlockKind, ChainId};
use crate::error::{Error, Result, db_error, io_error};
use crate::header::BlockHeader;
use crate::schema::{
    ActiveSegment, CF_BY_HEIGHT, CF_BY_SEQ, CF_CANDIDATES, CF_DEPENDENTS, CF_EXPERT_HEADS,
    CF_EXPERT_VERSIONS, CF_HEADERS, CF_PAYLOADS, MetaKey, PayloadRecord, decode_record,
    encode_record, expert_version_key, hash_from_bytes, height_key, pair_key, parse_height_key,
};
use crate::segment::{SEGMENT_HEADER_BYTES, segment_path};

/// Bytes read per step when hashing a payload of a damaged segment.
const HASH_CHUNK_BYTES: usize = 4 << 20;

/// Bytes of an `expert_heads` value: version (u32 BE) ‖ block hash (as `records.rs` writes it).
const EXPERT_HEAD_BYTES: usize = 4 + 32;

fn cf<'db>(db: &'db DB, name: &'static str) -> &'db ColumnFamily {
    db.cf_handle(name)
        .expect("every column family is opened with the store")
}

/// Drops the blocks a power loss took the payload bytes of (see the module doc), returning the
/// state to open with; `loaded` unchanged when nothing was lost.
pub(super) fn roll_back_lost_blocks(
    db: &DB,
    segments_dir: &Path,
    loaded: Loaded,
) -> Result<Loaded> {
    let mut lengths: HashMap<u64, u64> = HashMap::new();
    let mut first_lost: Option<u64> = None;
    let mut damaged_segments = BTreeSet::new();
    // The common case (nothing lost) streams the records without keeping them.
    for item in payload_records(db) {
        let (_, record) = item?;
        if record.len == 0 {
            continue;
        }
        let length = segment_len(segments_dir, record.segment, &mut lengths)?;
        let end = record.offset.saturating_add(record.len);
        if end > length {
            damaged_segments.insert(record.segment);
            first_lost = Some(first_lost.map_or(record.seq, |seq: u64| seq.min(record.seq)));
        }
    }
    let Some(mut first_lost) = first_lost else {
        return Ok(loaded);
    };
    let records: Vec<(BlockHash, PayloadRecord)> = payload_records(db).collect::<Result<_>>()?;
    // The segments that lost their tail may hold stale bytes before it too: hash what they
    // still hold, oldest first; the first mismatch is lost as well.
    let mut suspects: Vec<&(BlockHash, PayloadRecord)> = records
        .iter()
        .filter(|(_, record)| {
            record.len > 0 && record.seq < first_lost && damaged_segments.contains(&record.segment)
        })
        .collect();
    suspects.sort_unstable_by_key(|(_, record)| record.seq);
    for (_, record) in suspects {
        if hash_extent(segments_dir, record)? != record.hash {
            first_lost = record.seq;
            break;
        }
    }
    let genesis_count = ChainId::ALL.len() as u64;
    if first_lost < genesis_count {
        return Err(Error::Corruption {
            what: format!(
                "the payload of genesis block {first_lost} (by sequence) is lost from its segment"
            ),
        });
    }
    let seq_of: HashMap<BlockHash, u64> = records
        .iter()
        .map(|(hash, record)| (*hash, record.seq))
        .collect();
    let kept_active = records
        .iter()
        .filter(|(_, record)| record.len > 0 && record.seq < first_lost)
        .max_by_key(|(_, record)| record.seq)
        .map_or(
            ActiveSegment {
                id: 1,
                end: SEGMENT_HEADER_BYTES,
            },
            |(_, record)| ActiveSegment {
                id: record.segment,
                end: record.offset + record.len,
            },
        );
    let rolled = RollBack::new(db, first_lost, loaded, &seq_of).apply(kept_active)?;
    tracing::warn!(
        dropped_blocks = rolled.dropped,
        first_dropped_seq = first_lost,
        damaged_segments = ?damaged_segments,
        "unsynced chain store lost payload bytes to a power loss: dropped the blocks appended \
         since the first lost one; they were never made durable"
    );
    Ok(rolled.loaded)
}

/// Every payload record, with its block, in the order of block hashes.
fn payload_records(db: &DB) -> impl Iterator<Item = Result<(BlockHash, PayloadRecord)>> + '_ {
    db.iterator_cf(cf(db, CF_PAYLOADS), IteratorMode::Start)
        .map(|item| {
            let (key, value) = item.map_err(db_error("scan payload records"))?;
            let block = hash_from_bytes(&key, "payload record key")?;
            Ok((block, decode_record(&value, "payload record")?))
        })
}

/// The length of segment `id`'s file, 0 when it is missing.
fn segment_len(dir: &Path, id: u64, lengths: &mut HashMap<u64, u64>) -> Result<u64> {
    if let Some(length) = lengths.get(&id) {
        return Ok(*length);
    }
    let path = segment_path(dir, id);
    let length = match std::fs::metadata(&path) {
        Ok(meta) => meta.len(),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => 0,
        Err(source) => return Err(Error::Io { path, source }),
    };
    lengths.insert(id, length);
    Ok(length)
}

/// The blake3 of the bytes `record` names, read in bounded steps.
fn hash_extent(dir: &Path, record: &PayloadRecord) -> Result<PayloadHash> {
    let path = segment_path(dir, record.segment);
    let file = File::open(&path).map_err(io_error(&path))?;
    let mut hasher = blake3::Hasher::new();
    let mut buffer = vec![0u8; HASH_CHUNK_BYTES];
    let mut done = 0u64;
    while done < record.len {
        let step = usize::try_from(record.len - done)
            .unwrap_or(usize::MAX)
            .min(HASH_CHUNK_BYTES);
        file.read_exact_at(&mut buffer[..step], record.offset + done)
            .map_err(io_error(&path))?;
        hasher.update(&buffer[..step]);
        done += step as u64;
    }
    Ok(PayloadHash(*hasher.finalize().as_bytes()))
}

/// The outcome of a roll-back.
struct Rolled {
    loaded: Loaded,
    dropped: u64,
}

/// One roll-back to the state before sequence number `first_lost`, built as one batch.
struct RollBack<'a> {
    db: &'a DB,
    first_lost: u64,
    loaded: Loaded,
    seq_of: &'a HashMap<BlockHash, u64>,
    batch: WriteBatch,
    /// Dropped blocks.
    dropped: HashSet<BlockHash>,
    /// `expert_versions` keys removed (dropped blocks', demoted candidates').
    removed_versions: HashSet<[u8; 12]>,
    touched_experts: BTreeSet<[u8; 8]>,
    touched_chains: BTreeSet<usize>,
}

impl<'a> RollBack<'a> {
    fn new(
        db: &'a DB,
        first_lost: u64,
        loaded: Loaded,
        seq_of: &'a HashMap<BlockHash, u64>,
    ) -> Self {
        Self {
            db,
            first_lost,
            loaded,
            seq_of,
            batch: WriteBatch::default(),
            dropped: HashSet::new(),
            removed_versions: HashSet::new(),
            touched_experts: BTreeSet::new(),
            touched_chains: BTreeSet::new(),
        }
    }

    fn header(&self, block: &BlockHash) -> Result<BlockHeader> {
        let bytes = self
            .db
            .get_pinned_cf(cf(self.db, CF_HEADERS), block.as_bytes())
            .map_err(db_error("read header"))?
            .ok_or_else(|| Error::Corruption {
                what: format!("block {block} has a payload record but no header"),
            })?;
        BlockHeader::decode(&bytes)
    }

    fn apply(mut self, active: ActiveSegment) -> Result<Rolled> {
        let lost: Vec<(u64, BlockHash)> = {
            let start = self.first_lost.to_be_bytes();
            self.db
                .iterator_cf(
                    cf(self.db, CF_BY_SEQ),
                    IteratorMode::From(&start, Direction::Forward),
                )
                .map(|item| {
                    let (key, value) = item.map_err(db_error("scan by_seq"))?;
                    let seq_bytes: [u8; 8] = (*key).try_into().map_err(|_| Error::Corruption {
                        what: "by_seq key".into(),
                    })?;
                    Ok((
                        u64::from_be_bytes(seq_bytes),
                        hash_from_bytes(&value, "by_seq value")?,
                    ))
                })
                .collect::<Result<_>>()?
        };
        self.dropped = lost.iter().map(|(_, block)| *block).collect();
        for (seq, block) in &lost {
            self.drop_block(*seq, *block)?;
        }
        for chain in std::mem::take(&mut self.touched_chains) {
            self.restore_tip(ChainId::ALL[chain])?;
        }
        for expert in std::mem::take(&mut self.touched_experts) {
            self.restore_expert_head(expert)?;
        }
        let Self {
            db,
            first_lost,
            mut loaded,
            mut batch,
            ..
        } = self;
        batch.put(MetaKey::NEXT_SEQ, encode_record(&first_lost));
        batch.put(MetaKey::ACTIVE_SEGMENT, encode_record(&active));
        for chain in ChainId::ALL {
            batch.put(
                MetaKey::chain(chain),
                encode_record(&loaded.chains[chain.index()]),
            );
        }
        let mut options = WriteOptions::default();
        options.set_sync(true);
        db.write_opt(batch, &options)
            .map_err(db_error("roll back lost blocks"))?;
        let dropped = loaded.next_seq.saturating_sub(first_lost);
        loaded.next_seq = first_lost;
        loaded.active = active;
        Ok(Rolled { loaded, dropped })
    }

    /// Removes every record of `block` (sequence `seq`) and undoes its promotions.
    fn drop_block(&mut self, seq: u64, block: BlockHash) -> Result<()> {
        let header = self.header(&block)?;
        let record: PayloadRecord = {
            let bytes = self
                .db
                .get_pinned_cf(cf(self.db, CF_PAYLOADS), block.as_bytes())
                .map_err(db_error("read payload record"))?
                .ok_or_else(|| Error::Corruption {
                    what: format!("block {block} has no payload record"),
                })?;
            decode_record(&bytes, "payload record")?
        };
        let db = self.db;
        self.batch.delete_cf(cf(db, CF_HEADERS), block.as_bytes());
        self.batch.delete_cf(cf(db, CF_PAYLOADS), block.as_bytes());
        self.batch.delete_cf(cf(db, CF_BY_SEQ), seq.to_be_bytes());
        self.batch.delete_cf(
            cf(db, CF_BY_HEIGHT),
            height_key(header.chain, header.height, &block),
        );
        if let Some(parent) = header.prev_hash {
            self.batch
                .delete_cf(cf(db, CF_DEPENDENTS), pair_key(&parent, &block));
        }
        for dependency in &header.depends_on {
            self.batch
                .delete_cf(cf(db, CF_DEPENDENTS), pair_key(dependency, &block));
        }
        self.batch
            .delete_cf(cf(db, CF_CANDIDATES), block.as_bytes());
        self.remove_expert_version(&header, block)?;
        self.undo_promotions(block)?;
        let chain = &mut self.loaded.chains[header.chain.index()];
        chain.blocks = chain.blocks.saturating_sub(1);
        chain.payload_bytes = chain.payload_bytes.saturating_sub(record.len);
        self.touched_chains.insert(header.chain.index());
        Ok(())
    }

    /// Removes `block`'s `expert_versions` entry, if it is an expert block holding one.
    fn remove_expert_version(&mut self, header: &BlockHeader, block: BlockHash) -> Result<()> {
        if header.kind != BlockKind::Expert {
            return Ok(());
        }
        let Some(expert) = header.meta.expert else {
            return Ok(());
        };
        let name = expert.to_key_bytes();
        let key = expert_version_key(name, header.meta.version);
        let holder = self
            .db
            .get_pinned_cf(cf(self.db, CF_EXPERT_VERSIONS), key)
            .map_err(db_error("read expert version"))?;
        if holder.is_some_and(|holder| *holder == *block.as_bytes()) {
            self.batch.delete_cf(cf(self.db, CF_EXPERT_VERSIONS), key);
            self.removed_versions.insert(key);
            self.touched_experts.insert(name);
        }
        Ok(())
    }

    /// Makes the kept candidates `block` promoted candidates again.
    fn undo_promotions(&mut self, block: BlockHash) -> Result<()> {
        let key = MetaKey::promoted(&block);
        let Some(bytes) = self.db.get(key).map_err(db_error("read promotions"))? else {
            return Ok(());
        };
        self.batch.delete(key);
        let candidates: Vec<BlockHash> = decode_record(&bytes, "promotions")?;
        for candidate in candidates {
            let kept = self
                .seq_of
                .get(&candidate)
                .is_some_and(|seq| *seq < self.first_lost);
            if !kept {
                continue;
            }
            self.batch
                .put_cf(cf(self.db, CF_CANDIDATES), candidate.as_bytes(), []);
            let header = self.header(&candidate)?;
            self.remove_expert_version(&header, candidate)?;
        }
        Ok(())
    }

    /// Puts `chain`'s tip back: the greatest height among kept blocks, the smallest hash there.
    fn restore_tip(&mut self, chain: ChainId) -> Result<()> {
        let lower = [chain.letter()];
        let upper = [chain.letter() + 1];
        let mut options = ReadOptions::default();
        options.set_iterate_lower_bound(lower.to_vec());
        options.set_iterate_upper_bound(upper.to_vec());
        let mut tip: Option<(u64, BlockHash)> = None;
        for item in self
            .db
            .iterator_cf_opt(cf(self.db, CF_BY_HEIGHT), options, IteratorMode::End)
        {
            let (key, _) = item.map_err(db_error("scan by_height"))?;
            let (_, height, block) = parse_height_key(&key)?;
            if self.dropped.contains(&block) {
                continue;
            }
            match tip {
                Some((tip_height, _)) if height < tip_height => break,
                // Backwards within one height: each kept hash is smaller than the last.
                _ => tip = Some((height, block)),
            }
        }
        let (height, block) = tip.ok_or_else(|| Error::Corruption {
            what: format!("chain {chain} keeps no block after the roll-back"),
        })?;
        let record = &mut self.loaded.chains[chain.index()];
        record.tip_height = height;
        record.tip_hash = block;
        Ok(())
    }

    /// Puts `expert`'s head back on its greatest kept version, or removes it.
    fn restore_expert_head(&mut self, name: [u8; 8]) -> Result<()> {
        let mut upper = name;
        // The prefix's upper bound: `name` + 1 as a big-endian number (names never end in
        // eight 0xff bytes: layer and index are bounded).
        for byte in upper.iter_mut().rev() {
            let (next, carry) = byte.overflowing_add(1);
            *byte = next;
            if !carry {
                break;
            }
        }
        let mut options = ReadOptions::default();
        options.set_iterate_lower_bound(name.to_vec());
        options.set_iterate_upper_bound(upper.to_vec());
        let mut head = None;
        for item in
            self.db
                .iterator_cf_opt(cf(self.db, CF_EXPERT_VERSIONS), options, IteratorMode::End)
        {
            let (key, value) = item.map_err(db_error("scan expert versions"))?;
            let key: [u8; 12] = (*key).try_into().map_err(|_| Error::Corruption {
                what: "expert_versions key".into(),
            })?;
            if self.removed_versions.contains(&key) {
                continue;
            }
            let mut bytes = [0u8; EXPERT_HEAD_BYTES];
            bytes[..4].copy_from_slice(&key[8..]);
            bytes[4..].copy_from_slice(hash_from_bytes(&value, "expert version")?.as_bytes());
            head = Some(bytes);
            break;
        }
        match head {
            Some(bytes) => self.batch.put_cf(cf(self.db, CF_EXPERT_HEADS), name, bytes),
            None => self.batch.delete_cf(cf(self.db, CF_EXPERT_HEADS), name),
        }
        Ok(())
    }
}
