//! [`ChainStore`]: open-or-create with genesis, validated append, and lookups.
//!
//! One append is: stateless checks and payload hashing (no lock, so appenders overlap), then
//! under the append lock: the checks against stored state, the payload write (+ fsync), and one
//! RocksDB write batch holding the header, payload record, every index entry, the chain's new
//! tip and counters, the next sequence number and the segment's new committed end. Every check
//! is a point lookup or a seek, so an append costs the same at height 10 as at height 10⁹.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};

use rocksdb::{
    BlockBasedOptions, ColumnFamily, ColumnFamilyDescriptor, DB, DBCompressionType, Direction,
    IteratorMode, Options, ReadOptions, WriteBatch, WriteOptions,
};

use crate::chain::{BlockKind, ChainId};
use crate::config::{Durability, ForkRule, StoreConfig};
use crate::error::{Error, Result, db_error, io_error};
use crate::expert::ExpertName;
use crate::genesis::GenesisSpec;
use crate::hash::{BlockHash, hash_payload};
use crate::header::{BlockHeader, ChainTip, SealedHeader, decode_block};
use crate::pol::{ExpertCandidate, PolAcceptance};
use crate::schema::{
    ActiveSegment, CF_BY_HEIGHT, CF_BY_SEQ, CF_DEPENDENTS, CF_EXPERT_HEADS, CF_EXPERT_VERSIONS,
    CF_HEADERS, CF_PAYLOADS, COLUMN_FAMILIES, ChainRecord, MetaKey, PayloadRecord, Relation,
    STORE_FORMAT_VERSION, decode_record, encode_record, expert_version_key, hash_from_bytes,
    height_key, height_prefix, pair_key, parse_height_key,
};
use crate::segment::{PayloadHandle, Placement, SegmentMaps, SegmentWriter, StreamError};
use crate::validate::Validator;

/// A RocksDB entry as an iterator yields it.
type KeyValue = (Box<[u8]>, Box<[u8]>);

/// Most headers one [`ChainStore::blocks`] call returns.
pub const BLOCKS_PAGE_COUNT_MAX: u32 = 1000;

/// One version of an expert: which block holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ExpertVersion {
    /// The expert.
    pub expert: ExpertName,
    /// Its version number, 1 for the first.
    pub version: u32,
    /// The block holding this version.
    pub hash: BlockHash,
}

/// A block that refers to another one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Dependent {
    /// The referring block.
    pub block: BlockHash,
    /// How it refers.
    pub relation: Relation,
}

/// Summary of one chain.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ChainInfo {
    /// The chain.
    pub chain: ChainId,
    /// Its genesis block.
    pub genesis: BlockHash,
    /// Its tip: the first block stored at its greatest height.
    pub tip: ChainTip,
    /// Number of blocks, genesis included.
    pub blocks: u64,
    /// Sum of its payload sizes.
    pub payload_bytes: u64,
    /// Its fork rule under the store's config.
    pub fork_rule: ForkRule,
}

/// Summary of a store.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct StoreInfo {
    /// Directory of the store.
    pub path: PathBuf,
    /// On-disk format version.
    pub format: u32,
    /// Blake3 of the covenant chain A's genesis commits.
    pub covenant_hash: crate::hash::PayloadHash,
    /// The config the store runs with.
    pub config: StoreConfig,
    /// One entry per chain, in [`ChainId::ALL`] order.
    pub chains: Vec<ChainInfo>,
}

/// The writer's state, behind the append lock.
struct Writer {
    segment: SegmentWriter,
    next_seq: u64,
    chains: [ChainRecord; ChainId::ALL.len()],
}

/// A signed DAG block store: headers and indices in RocksDB, payloads in mmapped segments.
///
/// `Send + Sync`: share it in an `Arc`; appends from many threads serialize on one lock for
/// their write, reads never take it.
pub struct ChainStore {
    root: PathBuf,
    pub(crate) db: DB,
    pub(crate) validator: Validator,
    covenant_hash: crate::hash::PayloadHash,
    pol: Option<Arc<dyn PolAcceptance>>,
    writer: Mutex<Writer>,
    chains: RwLock<[ChainRecord; ChainId::ALL.len()]>,
    pub(crate) maps: SegmentMaps,
    poisoned: AtomicBool,
}

// The HTTP API shares one store between async tasks through an `Arc`.
const _: () = {
    const fn shareable<T: Send + Sync + 'static>() {}
    shareable::<ChainStore>();
    shareable::<PayloadHandle>();
};

impl std::fmt::Debug for ChainStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChainStore")
            .field("root", &self.root)
            .field("config", self.validator.config())
            .finish_non_exhaustive()
    }
}

fn open_db(path: &Path) -> Result<DB> {
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    options.set_compression_type(DBCompressionType::Lz4);
    options.set_max_background_jobs(2);
    options.set_keep_log_file_num(4);
    let mut table = BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    let mut cf_options = Options::default();
    cf_options.set_compression_type(DBCompressionType::Lz4);
    cf_options.set_block_based_table_factory(&table);
    let descriptors = COLUMN_FAMILIES
        .iter()
        .map(|name| ColumnFamilyDescriptor::new(*name, cf_options.clone()));
    DB::open_cf_descriptors(&options, path, descriptors).map_err(db_error("open"))
}

impl ChainStore {
    /// Opens the store in directory `path`, creating it with the shipped genesis
    /// ([`GenesisSpec::shipped`]) if it does not exist. No Proof-of-Learning hook: fails with
    /// [`Error::PolHookMissing`] if `config.proof_of_learning` is on.
    pub fn open(path: impl AsRef<Path>, config: StoreConfig) -> Result<Self> {
        Self::open_with(path, config, &GenesisSpec::shipped(), None)
    }

    /// Opens or creates the store in `path` with an explicit genesis and Proof-of-Learning hook.
    ///
    /// On create, the three genesis blocks are written in one batch. On open, the stored genesis
    /// must be `genesis`'s ([`Error::GenesisMismatch`] otherwise), and payload bytes no index
    /// names (an append cut short by a crash) are removed. `pol` is used only when
    /// `config.proof_of_learning` is on.
    pub fn open_with(
        path: impl AsRef<Path>,
        config: StoreConfig,
        genesis: &GenesisSpec,
        pol: Option<Arc<dyn PolAcceptance>>,
    ) -> Result<Self> {
        let validator = Validator::new(config, genesis)?;
        let pol = if validator.config().proof_of_learning {
            Some(pol.ok_or(Error::PolHookMissing)?)
        } else {
            None
        };
        let root = path.as_ref().to_path_buf();
        let segments_dir = root.join("segments");
        std::fs::create_dir_all(&segments_dir).map_err(io_error(&segments_dir))?;
        let db = open_db(&root.join("db"))?;
        let durability = validator.config().durability;

        let format = db.get(MetaKey::FORMAT).map_err(db_error("read format"))?;
        let (writer, fresh) = match format {
            Some(bytes) => (Self::load(&db, &validator, &segments_dir, &bytes)?, false),
            None => {
                // A crash while creating leaves at most segment files and no format key: start over.
                for entry in std::fs::read_dir(&segments_dir).map_err(io_error(&segments_dir))? {
                    let entry_path = entry.map_err(io_error(&segments_dir))?.path();
                    std::fs::remove_file(&entry_path).map_err(io_error(&entry_path))?;
                }
                let segment = SegmentWriter::create(&segments_dir, 1, durability)?;
                let empty = ChainRecord {
                    genesis: BlockHash::ZERO,
                    tip_height: 0,
                    tip_hash: BlockHash::ZERO,
                    blocks: 0,
                    payload_bytes: 0,
                };
                (
                    Writer {
                        segment,
                        next_seq: 0,
                        chains: [empty; ChainId::ALL.len()],
                    },
                    true,
                )
            }
        };
        let maps = SegmentMaps::new(segments_dir, writer.segment.active());
        let chains = writer.chains;
        let store = Self {
            root,
            db,
            validator,
            covenant_hash: genesis.covenant_hash(),
            pol,
            writer: Mutex::new(writer),
            chains: RwLock::new(chains),
            maps,
            poisoned: AtomicBool::new(false),
        };
        if fresh {
            store.create_genesis(genesis)?;
        }
        tracing::info!(path = %store.root.display(), fresh, "chain store open");
        Ok(store)
    }

    fn load(db: &DB, validator: &Validator, segments_dir: &Path, format: &[u8]) -> Result<Writer> {
        let format: [u8; 4] = format.try_into().map_err(|_| Error::Corruption {
            what: "format key is not 4 bytes".into(),
        })?;
        let format = u32::from_le_bytes(format);
        if format != STORE_FORMAT_VERSION {
            return Err(Error::StoreFormat {
                got: format,
                supported: STORE_FORMAT_VERSION,
            });
        }
        let read = |key: &[u8], what: &str| -> Result<Vec<u8>> {
            db.get(key)
                .map_err(db_error("read metadata"))?
                .ok_or_else(|| Error::Corruption {
                    what: format!("{what} missing"),
                })
        };
        let next_seq: u64 = decode_record(&read(MetaKey::NEXT_SEQ, "next_seq")?, "next_seq")?;
        let active: ActiveSegment = decode_record(
            &read(MetaKey::ACTIVE_SEGMENT, "active_segment")?,
            "active_segment",
        )?;
        let mut chains = Vec::with_capacity(ChainId::ALL.len());
        for chain in ChainId::ALL {
            let what = format!("chain record {chain}");
            let record: ChainRecord = decode_record(&read(&MetaKey::chain(chain), &what)?, &what)?;
            let expected = validator.genesis_hash(chain);
            if record.genesis != expected {
                return Err(Error::GenesisMismatch {
                    chain,
                    got: record.genesis,
                    expected,
                });
            }
            chains.push(record);
        }
        let chains: [ChainRecord; 3] = chains.try_into().map_err(|_| Error::Corruption {
            what: "chain records".into(),
        })?;
        let segment = SegmentWriter::recover(segments_dir, active)?;
        Ok(Writer {
            segment,
            next_seq,
            chains,
        })
    }

    /// Writes the three genesis blocks and the store's format in one batch.
    fn create_genesis(&self, genesis: &GenesisSpec) -> Result<()> {
        let durability = self.durability();
        let mut writer = self.lock_writer()?;
        let mut batch = WriteBatch::default();
        let mut placements = Vec::new();
        for chain in ChainId::ALL {
            let block = genesis.block(chain);
            let hash = block.header.hash();
            debug_assert_eq!(hash, self.validator.genesis_hash(chain));
            let placement = writer.segment.place(
                block.payload.len() as u64,
                self.segment_target(),
                durability,
            )?;
            writer
                .segment
                .write(placement, &block.payload, durability)?;
            let seq = writer.next_seq;
            let record = self.put_block(&mut batch, &block.header, hash, placement, seq, None)?;
            writer.segment.commit(placement);
            writer.next_seq += 1;
            writer.chains[chain.index()] = record;
            placements.push(placement);
        }
        batch.put(MetaKey::FORMAT, STORE_FORMAT_VERSION.to_le_bytes());
        batch.put(MetaKey::NEXT_SEQ, encode_record(&writer.next_seq));
        batch.put(
            MetaKey::ACTIVE_SEGMENT,
            encode_record(&writer.segment.active()),
        );
        self.db
            .write_opt(batch, &self.write_options())
            .map_err(db_error("write genesis"))?;
        self.maps.set_active(writer.segment.active());
        *self.chains.write().unwrap_or_else(PoisonError::into_inner) = writer.chains;
        Ok(())
    }

    // ---------------------------------------------------------------- append

    /// Validates and appends a block whose payload is in memory (or mapped from a file).
    ///
    /// Checks, each failure its own [`Error`] variant: header version, size, kind on chain,
    /// genesis placement, dependency count and duplicates, metadata, payload limit, proof of
    /// work, signature and signer, payload length and hash; then against the store: already
    /// stored, parent known and on this chain, height, timestamp, fork rule, dependencies known
    /// and not later, expert version; then Proof-of-Learning for expert blocks when on.
    /// Returns the block hash once the block is durable per the config's durability.
    pub fn append(&self, header: &BlockHeader, payload: &[u8]) -> Result<BlockHash> {
        let block = self.validator.check_header(header)?;
        self.validator.check_payload(block, header, payload)?;
        if let Some(hook) = self.pol_hook_for(header) {
            // Check links first so the hook only evaluates blocks that could be appended.
            let chains = *self.chains.read().unwrap_or_else(PoisonError::into_inner);
            let base = self.check_links(&chains, header, block)?;
            self.run_pol(hook.as_ref(), header, block, base, payload)?;
        }
        let durability = self.durability();
        let mut writer = self.lock_writer()?;
        let chains = writer.chains;
        self.check_links(&chains, header, block)?;
        let placement = self.poison_on_err(writer.segment.place(
            payload.len() as u64,
            self.segment_target(),
            durability,
        ))?;
        self.maps.set_active(writer.segment.active());
        self.poison_on_err(writer.segment.write(placement, payload, durability))?;
        self.commit(&mut writer, header, block, placement)
    }

    /// Validates and appends a block whose payload arrives from `payload`, a reader giving at
    /// least `header.payload_bytes` bytes (exactly that many are read). The bytes go straight
    /// into the segment, hashed on the way, in bounded memory; if they do not match the header
    /// they are dropped. Holds the append lock while reading, so give it a fast reader (a file,
    /// a local buffer); the Proof-of-Learning hook, if on, also runs under the lock here.
    pub fn append_reader(&self, header: &BlockHeader, mut payload: impl Read) -> Result<BlockHash> {
        let block = self.validator.check_header(header)?;
        let durability = self.durability();
        let mut writer = self.lock_writer()?;
        let chains = writer.chains;
        let base = self.check_links(&chains, header, block)?;
        let placement = self.poison_on_err(writer.segment.place(
            header.payload_bytes,
            self.segment_target(),
            durability,
        ))?;
        self.maps.set_active(writer.segment.active());
        let streamed = writer.segment.write_stream(placement, &mut payload);
        let (got_bytes, got_hash) = match streamed {
            Ok(result) => result,
            Err(StreamError::Reader(source)) => {
                self.poison_on_err(writer.segment.discard())?;
                return Err(Error::PayloadRead { block, source });
            }
            Err(StreamError::Segment(error)) => return self.poison_on_err(Err(error)),
        };
        let mismatch = if got_bytes != header.payload_bytes {
            Some(Error::PayloadLengthMismatch {
                block,
                got: got_bytes,
                expected: header.payload_bytes,
            })
        } else if got_hash != header.payload_hash {
            Some(Error::PayloadHashMismatch {
                block,
                got: got_hash,
                expected: header.payload_hash,
            })
        } else {
            None
        };
        if let Some(error) = mismatch {
            self.poison_on_err(writer.segment.discard())?;
            return Err(error);
        }
        if let Some(hook) = self.pol_hook_for(header) {
            let verdict = {
                let (map, start) = self.poison_on_err(writer.segment.map_uncommitted(placement))?;
                let end = start
                    + usize::try_from(placement.len).map_err(|_| Error::PayloadTooLarge {
                        block,
                        bytes: placement.len,
                        max: usize::MAX as u64,
                    })?;
                self.run_pol(hook.as_ref(), header, block, base, &map[start..end])
            };
            if let Err(error) = verdict {
                self.poison_on_err(writer.segment.discard())?;
                return Err(error);
            }
        }
        self.poison_on_err(writer.segment.sync(durability))?;
        self.commit(&mut writer, header, block, placement)
    }

    /// Decodes a block in [`crate::encode_block`]'s form and appends it: what `POST /blocks`
    /// does with a request body.
    pub fn submit(&self, encoded: &[u8]) -> Result<BlockHash> {
        let decoded = decode_block(encoded)?;
        self.append(&decoded.header, decoded.payload)
    }

    fn pol_hook_for(&self, header: &BlockHeader) -> Option<&Arc<dyn PolAcceptance>> {
        if header.kind == BlockKind::Expert {
            self.pol.as_ref()
        } else {
            None
        }
    }

    fn run_pol(
        &self,
        hook: &dyn PolAcceptance,
        header: &BlockHeader,
        block: BlockHash,
        base: Option<ExpertVersion>,
        payload: &[u8],
    ) -> Result<()> {
        let expert = header.meta.expert.ok_or(Error::MetaInvalid {
            block,
            kind: header.kind,
            reason: "an expert block must name its expert",
        })?;
        let candidate = ExpertCandidate {
            hash: block,
            header,
            expert,
            base,
            payload,
        };
        hook.accept_expert(self, &candidate)
            .map_err(|rejection| Error::PolRejected {
                block,
                reason: rejection.reason,
            })
    }

    /// Every check against stored state. Returns the expert's current version for expert
    /// blocks (the base a Proof-of-Learning candidate replaces).
    fn check_links(
        &self,
        chains: &[ChainRecord; ChainId::ALL.len()],
        header: &BlockHeader,
        block: BlockHash,
    ) -> Result<Option<ExpertVersion>> {
        if self.contains(&block)? {
            return Err(Error::AlreadyExists { block });
        }
        let Some(parent_hash) = header.prev_hash else {
            // The validator accepts only this store's genesis, which is always stored.
            return Err(Error::AlreadyExists { block });
        };
        let parent = self.header(&parent_hash)?.ok_or(Error::UnknownParent {
            block,
            parent: parent_hash,
        })?;
        if parent.chain != header.chain {
            return Err(Error::ParentOnOtherChain {
                block,
                chain: header.chain,
                parent: parent_hash,
                parent_chain: parent.chain,
            });
        }
        if header.height != parent.height + 1 {
            return Err(Error::HeightGap {
                block,
                height: header.height,
                expected: parent.height + 1,
            });
        }
        if header.timestamp_ms < parent.timestamp_ms {
            return Err(Error::TimestampBeforeParent {
                block,
                parent: parent_hash,
                parent_timestamp_ms: parent.timestamp_ms,
                timestamp_ms: header.timestamp_ms,
            });
        }
        if self.validator.config().fork_rules.get(header.chain) == ForkRule::Linear {
            let tip = chains[header.chain.index()];
            if tip.tip_hash != parent_hash {
                let existing = self
                    .block_hashes_at(header.chain, header.height)?
                    .first()
                    .copied();
                return Err(Error::Fork {
                    block,
                    chain: header.chain,
                    height: header.height,
                    existing: existing.unwrap_or(tip.tip_hash),
                });
            }
        }
        for dependency in &header.depends_on {
            let stored = self.header(dependency)?.ok_or(Error::UnknownDependency {
                block,
                dependency: *dependency,
            })?;
            if stored.timestamp_ms > header.timestamp_ms {
                return Err(Error::DependencyLater {
                    block,
                    dependency: *dependency,
                    dependency_timestamp_ms: stored.timestamp_ms,
                    timestamp_ms: header.timestamp_ms,
                });
            }
        }
        if header.kind != BlockKind::Expert {
            return Ok(None);
        }
        let expert = header.meta.expert.ok_or(Error::MetaInvalid {
            block,
            kind: header.kind,
            reason: "an expert block must name its expert",
        })?;
        let current = self.expert_current(expert)?;
        let expected = current.map_or(1, |current| current.version.saturating_add(1));
        if header.meta.version != expected {
            return Err(Error::ExpertVersionMismatch {
                block,
                expert,
                got: header.meta.version,
                expected,
            });
        }
        Ok(current)
    }

    /// Puts every record of one block into `batch`; returns the chain's record after it.
    fn put_block(
        &self,
        batch: &mut WriteBatch,
        header: &BlockHeader,
        block: BlockHash,
        placement: Placement,
        seq: u64,
        chain_before: Option<ChainRecord>,
    ) -> Result<ChainRecord> {
        batch.put_cf(self.cf(CF_HEADERS), block.as_bytes(), header.encode());
        let payload = PayloadRecord {
            seq,
            segment: placement.segment,
            offset: placement.offset,
            len: placement.len,
            hash: header.payload_hash,
        };
        batch.put_cf(
            self.cf(CF_PAYLOADS),
            block.as_bytes(),
            encode_record(&payload),
        );
        batch.put_cf(self.cf(CF_BY_SEQ), seq.to_be_bytes(), block.as_bytes());
        batch.put_cf(
            self.cf(CF_BY_HEIGHT),
            height_key(header.chain, header.height, &block),
            [],
        );
        if let Some(parent) = header.prev_hash {
            batch.put_cf(
                self.cf(CF_DEPENDENTS),
                pair_key(&parent, &block),
                [Relation::Child.byte()],
            );
        }
        for dependency in &header.depends_on {
            batch.put_cf(
                self.cf(CF_DEPENDENTS),
                pair_key(dependency, &block),
                [Relation::DependsOn.byte()],
            );
        }
        if header.kind == BlockKind::Expert
            && let Some(expert) = header.meta.expert
        {
            let name = expert.key_bytes();
            batch.put_cf(
                self.cf(CF_EXPERT_VERSIONS),
                expert_version_key(name, header.meta.version),
                block.as_bytes(),
            );
            let mut head = [0u8; 36];
            head[..4].copy_from_slice(&header.meta.version.to_be_bytes());
            head[4..].copy_from_slice(block.as_bytes());
            batch.put_cf(self.cf(CF_EXPERT_HEADS), name, head);
        }
        let record = match chain_before {
            None => ChainRecord {
                genesis: block,
                tip_height: header.height,
                tip_hash: block,
                blocks: 1,
                payload_bytes: placement.len,
            },
            Some(before) => {
                let new_tip = header.height > before.tip_height;
                ChainRecord {
                    genesis: before.genesis,
                    tip_height: if new_tip {
                        header.height
                    } else {
                        before.tip_height
                    },
                    tip_hash: if new_tip { block } else { before.tip_hash },
                    blocks: before.blocks + 1,
                    payload_bytes: before.payload_bytes + placement.len,
                }
            }
        };
        batch.put(MetaKey::chain(header.chain), encode_record(&record));
        Ok(record)
    }

    /// Commits one block's batch, then advances the in-memory state to match.
    fn commit(
        &self,
        writer: &mut MutexGuard<'_, Writer>,
        header: &BlockHeader,
        block: BlockHash,
        placement: Placement,
    ) -> Result<BlockHash> {
        let chain = header.chain.index();
        let seq = writer.next_seq;
        let mut batch = WriteBatch::default();
        let record = self.put_block(
            &mut batch,
            header,
            block,
            placement,
            seq,
            Some(writer.chains[chain]),
        )?;
        let mut active = writer.segment.active();
        if placement.len > 0 {
            active = ActiveSegment {
                id: placement.segment,
                end: placement.offset + placement.len,
            };
        }
        batch.put(MetaKey::NEXT_SEQ, encode_record(&(seq + 1)));
        batch.put(MetaKey::ACTIVE_SEGMENT, encode_record(&active));
        self.poison_on_err(
            self.db
                .write_opt(batch, &self.write_options())
                .map_err(db_error("append batch")),
        )?;
        writer.segment.commit(placement);
        debug_assert_eq!(writer.segment.active(), active);
        writer.next_seq = seq + 1;
        writer.chains[chain] = record;
        self.maps.set_active(active);
        self.chains.write().unwrap_or_else(PoisonError::into_inner)[chain] = record;
        tracing::debug!(
            block = %block,
            chain = %header.chain,
            height = header.height,
            kind = %header.kind,
            payload_bytes = placement.len,
            "block appended"
        );
        Ok(block)
    }

    fn lock_writer(&self) -> Result<MutexGuard<'_, Writer>> {
        if self.poisoned.load(Ordering::Acquire) {
            return Err(Error::Poisoned);
        }
        self.writer.lock().map_err(|_| Error::Poisoned)
    }

    fn poison_on_err<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(error) = &result {
            tracing::error!(%error, "write failed; the store refuses writes until reopened");
            self.poisoned.store(true, Ordering::Release);
        }
        result
    }

    fn segment_target(&self) -> u64 {
        self.validator.config().segment_bytes_target
    }

    fn durability(&self) -> Durability {
        self.validator.config().durability
    }

    fn write_options(&self) -> WriteOptions {
        let mut options = WriteOptions::default();
        options.set_sync(self.durability() == Durability::Synced);
        options
    }

    pub(crate) fn cf(&self, name: &'static str) -> &ColumnFamily {
        self.db
            .cf_handle(name)
            .expect("every column family is created when the store opens")
    }

    /// Makes everything appended so far durable even under [`Durability::Unsynced`]: syncs the
    /// RocksDB WAL and the active segment. Also done when the store is dropped.
    pub fn flush(&self) -> Result<()> {
        let writer = self.lock_writer()?;
        writer.segment.sync(Durability::Synced)?;
        self.db.flush_wal(true).map_err(db_error("flush wal"))
    }

    // ---------------------------------------------------------------- reads

    /// The directory the store lives in.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The stateless rules this store applies (config and genesis), usable without the store.
    pub fn validator(&self) -> &Validator {
        &self.validator
    }

    /// The store's config.
    pub fn config(&self) -> &StoreConfig {
        self.validator.config()
    }

    /// Whether a block is stored.
    pub fn contains(&self, block: &BlockHash) -> Result<bool> {
        Ok(self
            .db
            .get_pinned_cf(self.cf(CF_HEADERS), block.as_bytes())
            .map_err(db_error("read header"))?
            .is_some())
    }

    /// A stored header, re-hashed on read (a mismatch is [`Error::Corruption`]).
    pub fn header(&self, block: &BlockHash) -> Result<Option<BlockHeader>> {
        let Some(bytes) = self
            .db
            .get_pinned_cf(self.cf(CF_HEADERS), block.as_bytes())
            .map_err(db_error("read header"))?
        else {
            return Ok(None);
        };
        let header = BlockHeader::decode(&bytes).map_err(|error| Error::Corruption {
            what: format!("stored header {block}: {error}"),
        })?;
        let hash = header.hash();
        if hash != *block {
            return Err(Error::Corruption {
                what: format!("header stored under {block} hashes to {hash}"),
            });
        }
        Ok(Some(header))
    }

    /// A stored header with its hash (the API's JSON form).
    pub fn sealed_header(&self, block: &BlockHash) -> Result<Option<SealedHeader>> {
        Ok(self.header(block)?.map(|header| SealedHeader {
            hash: *block,
            header,
        }))
    }

    pub(crate) fn payload_record(&self, block: &BlockHash) -> Result<Option<PayloadRecord>> {
        let Some(bytes) = self
            .db
            .get_pinned_cf(self.cf(CF_PAYLOADS), block.as_bytes())
            .map_err(db_error("read payload record"))?
        else {
            return Ok(None);
        };
        decode_record(&bytes, "payload record").map(Some)
    }

    /// The payload of a stored block, mapped, not copied; `None` if the block is not stored.
    pub fn payload(&self, block: &BlockHash) -> Result<Option<PayloadHandle>> {
        let Some(record) = self.payload_record(block)? else {
            return Ok(None);
        };
        self.maps
            .handle(record.segment, record.offset, record.len)
            .map(Some)
    }

    /// Like [`ChainStore::payload`], but hashes the bytes and reports a mismatch with the
    /// header as [`Error::Corruption`]. Costs one blake3 pass (~6 GB/s on two cores).
    pub fn payload_verified(&self, block: &BlockHash) -> Result<Option<PayloadHandle>> {
        let Some(record) = self.payload_record(block)? else {
            return Ok(None);
        };
        let handle = self
            .maps
            .handle(record.segment, record.offset, record.len)?;
        let got = hash_payload(&handle);
        if got != record.hash {
            return Err(Error::Corruption {
                what: format!(
                    "payload of {block} hashes to {got}, its header says {}",
                    record.hash
                ),
            });
        }
        Ok(Some(handle))
    }

    /// The tip of `chain`.
    pub fn tip(&self, chain: ChainId) -> ChainTip {
        let record = self.chains.read().unwrap_or_else(PoisonError::into_inner)[chain.index()];
        ChainTip {
            chain,
            height: record.tip_height,
            hash: record.tip_hash,
        }
    }

    /// Summary of `chain`.
    pub fn chain_info(&self, chain: ChainId) -> ChainInfo {
        let record = self.chains.read().unwrap_or_else(PoisonError::into_inner)[chain.index()];
        ChainInfo {
            chain,
            genesis: record.genesis,
            tip: ChainTip {
                chain,
                height: record.tip_height,
                hash: record.tip_hash,
            },
            blocks: record.blocks,
            payload_bytes: record.payload_bytes,
            fork_rule: self.validator.config().fork_rules.get(chain),
        }
    }

    /// Summary of the store and each chain.
    pub fn info(&self) -> StoreInfo {
        StoreInfo {
            path: self.root.clone(),
            format: STORE_FORMAT_VERSION,
            covenant_hash: self.covenant_hash,
            config: self.validator.config().clone(),
            chains: ChainId::ALL
                .iter()
                .map(|chain| self.chain_info(*chain))
                .collect(),
        }
    }

    /// Iterates `cf` over keys in `[start, end)`.
    pub(crate) fn scan<'a>(
        &'a self,
        cf: &'static str,
        start: &[u8],
        end: &[u8],
    ) -> impl Iterator<Item = Result<KeyValue>> + use<'a> {
        let mut options = ReadOptions::default();
        options.set_iterate_upper_bound(end.to_vec());
        self.db
            .iterator_cf_opt(
                self.cf(cf),
                options,
                IteratorMode::From(start, Direction::Forward),
            )
            .map(|item| item.map_err(db_error("scan")))
    }

    /// Hashes of the blocks at `height` on `chain` (one on a linear chain; more where forks are
    /// allowed), in hash order.
    pub fn block_hashes_at(&self, chain: ChainId, height: u64) -> Result<Vec<BlockHash>> {
        let start = height_prefix(chain, height);
        let end = match height.checked_add(1) {
            Some(next) => height_prefix(chain, next).to_vec(),
            None => vec![chain.letter() + 1],
        };
        self.scan(CF_BY_HEIGHT, &start, &end)
            .map(|item| item.and_then(|(key, _)| parse_height_key(&key).map(|(_, _, hash)| hash)))
            .collect()
    }

    /// Up to `limit` headers of `chain` from height `from_height` upwards, in (height, hash)
    /// order: the explorer's page. `limit` above [`BLOCKS_PAGE_COUNT_MAX`] is
    /// [`Error::LimitExceeded`].
    pub fn blocks(
        &self,
        chain: ChainId,
        from_height: u64,
        limit: u32,
    ) -> Result<Vec<SealedHeader>> {
        if limit > BLOCKS_PAGE_COUNT_MAX {
            return Err(Error::LimitExceeded {
                what: "blocks per page",
                got: u64::from(limit),
                max: u64::from(BLOCKS_PAGE_COUNT_MAX),
            });
        }
        let start = height_prefix(chain, from_height);
        let end = [chain.letter() + 1];
        let mut page = Vec::with_capacity(limit as usize);
        for item in self.scan(CF_BY_HEIGHT, &start, &end).take(limit as usize) {
            let (key, _) = item?;
            let (_, _, hash) = parse_height_key(&key)?;
            let header = self.header(&hash)?.ok_or_else(|| Error::Corruption {
                what: format!("by_height names {hash}, which has no header"),
            })?;
            page.push(SealedHeader { hash, header });
        }
        Ok(page)
    }

    /// The current version of `expert`: the last one appended.
    pub fn expert_current(&self, expert: ExpertName) -> Result<Option<ExpertVersion>> {
        let Some(bytes) = self
            .db
            .get_pinned_cf(self.cf(CF_EXPERT_HEADS), expert.key_bytes())
            .map_err(db_error("read expert head"))?
        else {
            return Ok(None);
        };
        parse_expert_head(expert, &bytes).map(Some)
    }

    /// Every version of `expert`, oldest first.
    pub fn expert_versions(&self, expert: ExpertName) -> Result<Vec<ExpertVersion>> {
        let name = expert.key_bytes();
        let start = expert_version_key(name, 0);
        let mut end = [0u8; 13];
        end[..12].copy_from_slice(&expert_version_key(name, u32::MAX));
        self.scan(CF_EXPERT_VERSIONS, &start, &end)
            .map(|item| {
                let (key, value) = item?;
                let version_bytes: [u8; 4] =
                    key[8..].try_into().map_err(|_| Error::Corruption {
                        what: "expert version key".into(),
                    })?;
                Ok(ExpertVersion {
                    expert,
                    version: u32::from_be_bytes(version_bytes),
                    hash: hash_from_bytes(&value, "expert version")?,
                })
            })
            .collect()
    }

    /// The current version of every expert, ordered by layer then expert index.
    pub fn experts(&self) -> Result<Vec<ExpertVersion>> {
        self.scan(CF_EXPERT_HEADS, &[], &[0xff; 9])
            .map(|item| {
                let (key, value) = item?;
                let expert = ExpertName::from_key_bytes(&key).ok_or_else(|| Error::Corruption {
                    what: "expert head key".into(),
                })?;
                parse_expert_head(expert, &value)
            })
            .collect()
    }

    /// Blocks that name `block` as parent or dependency, in hash order.
    pub fn dependents(&self, block: &BlockHash) -> Result<Vec<Dependent>> {
        let start = pair_key(block, &BlockHash::ZERO);
        let mut end = [0u8; 65];
        end[..64].copy_from_slice(&pair_key(block, &BlockHash([0xff; 32])));
        self.scan(CF_DEPENDENTS, &start, &end)
            .map(|item| {
                let (key, value) = item?;
                let relation = value
                    .first()
                    .copied()
                    .and_then(Relation::from_byte)
                    .ok_or_else(|| Error::Corruption {
                        what: "dependent relation byte".into(),
                    })?;
                Ok(Dependent {
                    block: hash_from_bytes(&key[32..], "dependent key")?,
                    relation,
                })
            })
            .collect()
    }

    /// Number of blocks in the store (all chains).
    pub fn block_count(&self) -> u64 {
        self.chains
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|c| c.blocks)
            .sum()
    }

    /// Iterates block hashes in append order from sequence number `from_seq`.
    pub(crate) fn hashes_by_seq(
        &self,
        from_seq: u64,
    ) -> impl Iterator<Item = Result<(u64, BlockHash)>> + '_ {
        self.scan(CF_BY_SEQ, &from_seq.to_be_bytes(), &[0xff; 9])
            .map(|item| {
                let (key, value) = item?;
                let seq_bytes: [u8; 8] = (*key).try_into().map_err(|_| Error::Corruption {
                    what: "by_seq key".into(),
                })?;
                Ok((
                    u64::from_be_bytes(seq_bytes),
                    hash_from_bytes(&value, "by_seq value")?,
                ))
            })
    }
}

fn parse_expert_head(expert: ExpertName, bytes: &[u8]) -> Result<ExpertVersion> {
    if bytes.len() != 36 {
        return Err(Error::Corruption {
            what: format!("expert head of {} bytes", bytes.len()),
        });
    }
    let version_bytes: [u8; 4] = bytes[..4].try_into().map_err(|_| Error::Corruption {
        what: "expert head".into(),
    })?;
    Ok(ExpertVersion {
        expert,
        version: u32::from_be_bytes(version_bytes),
        hash: hash_from_bytes(&bytes[4..], "expert head")?,
    })
}

impl Drop for ChainStore {
    fn drop(&mut self) {
        if self.poisoned.load(Ordering::Acquire) {
            return;
        }
        if let Err(error) = self.flush() {
            tracing::warn!(%error, "flushing the chain store on close failed");
        }
    }
}
