//! Opening a store: read-write (create with genesis, or load and recover a crash's leftovers),
//! read-only (load only: nothing on disk changes), and finding the store in a node's data
//! directory.

use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use blyan_primitives::{BlockHash, Durability};
use rocksdb::{
    BlockBasedOptions, ColumnFamilyDescriptor, DB, DBCompressionType, Options, WriteBatch,
};

use super::{ChainRecords, ChainStore, Writer};
use crate::chain::ChainId;
use crate::config::StoreConfig;
use crate::error::{Error, Result, db_error, io_error};
use crate::genesis::GenesisSpec;
use crate::pol::PolAcceptance;
use crate::schema::{
    ActiveSegment, COLUMN_FAMILIES, ChainRecord, MetaKey, STORE_FORMAT_VERSION,
    STORE_FORMAT_VERSION_UPGRADABLE, decode_record, encode_record,
};
use crate::segment::{self, SegmentMaps, SegmentWriter};
use crate::space::DiskFloor;
use crate::validate::Validator;

/// The directory under a node's data directory that holds its chain store. Tools given a path
/// accept either the store itself or a data directory holding one here
/// ([`ChainStore::locate`]).
pub const CHAIN_DIR_NAME: &str = "chain";

/// RocksDB's directory inside a store.
const DB_DIR_NAME: &str = "db";

/// The segment files' directory inside a store.
const SEGMENTS_DIR_NAME: &str = "segments";

/// The file every RocksDB database has once created: its presence is what makes a directory a
/// store.
const DB_MARKER_FILE_NAME: &str = "CURRENT";

/// The state a store keeps under its `default` column family, as loaded at open.
pub(super) struct Loaded {
    /// The format found: [`STORE_FORMAT_VERSION`] or [`STORE_FORMAT_VERSION_UPGRADABLE`].
    pub(super) format: u32,
    pub(super) next_seq: u64,
    pub(super) active: ActiveSegment,
    pub(super) chains: ChainRecords,
}

fn column_families(names: Vec<&'static str>) -> impl Iterator<Item = ColumnFamilyDescriptor> {
    let mut table = BlockBasedOptions::default();
    table.set_bloom_filter(10.0, false);
    let mut cf_options = Options::default();
    cf_options.set_compression_type(DBCompressionType::Lz4);
    cf_options.set_block_based_table_factory(&table);
    names
        .into_iter()
        .map(move |name| ColumnFamilyDescriptor::new(name, cf_options.clone()))
}

fn open_db(path: &Path) -> Result<DB> {
    let mut options = Options::default();
    options.create_if_missing(true);
    options.create_missing_column_families(true);
    options.set_compression_type(DBCompressionType::Lz4);
    options.set_max_background_jobs(2);
    options.set_keep_log_file_num(4);
    DB::open_cf_descriptors(&options, path, column_families(COLUMN_FAMILIES.to_vec()))
        .map_err(db_error("open"))
}

/// RocksDB's read-only open: replays the WAL into memory, writes no file (not even its info
/// log), takes no lock, so it may run beside a node serving the same store and sees the store
/// as of this moment. Opens the column families the database has: a store of the previous
/// format lacks `candidates`, and a read-only open cannot add it.
fn open_db_read_only(path: &Path) -> Result<DB> {
    let options = Options::default();
    let existing = DB::list_cf(&options, path).map_err(db_error("list column families"))?;
    let names = COLUMN_FAMILIES
        .into_iter()
        .filter(|name| existing.iter().any(|found| found == name))
        .collect();
    DB::open_cf_descriptors_read_only(&options, path, column_families(names), false)
        .map_err(db_error("open read-only"))
}

/// Whether `dir` holds a chain store (a RocksDB database under `db/`).
fn holds_store(dir: &Path) -> bool {
    dir.join(DB_DIR_NAME).join(DB_MARKER_FILE_NAME).is_file()
}

/// Reads the store's format, append sequence, active segment and chain records, and checks the
/// stored genesis is `validator`'s.
fn load(db: &DB, validator: &Validator) -> Result<Option<Loaded>> {
    let Some(format) = db.get(MetaKey::FORMAT).map_err(db_error("read format"))? else {
        return Ok(None);
    };
    let format: [u8; 4] = format
        .as_slice()
        .try_into()
        .map_err(|_| Error::Corruption {
            what: "format key is not 4 bytes".into(),
        })?;
    let format = u32::from_le_bytes(format);
    if format != STORE_FORMAT_VERSION && format != STORE_FORMAT_VERSION_UPGRADABLE {
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
    let chains: ChainRecords = chains.try_into().map_err(|_| Error::Corruption {
        what: "chain records".into(),
    })?;
    Ok(Some(Loaded {
        format,
        next_seq,
        active,
        chains,
    }))
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
    /// names (an append cut short by a crash) are removed. Under
    /// [`Durability::Unsynced`], blocks whose payload a power loss took (the index pointing
    /// past a segment's end, or stale bytes in such a segment) are dropped with every block
    /// appended after them, and a warning names how many; under synced durability that is
    /// corruption and the open fails. `pol` is used only when
    /// `config.proof_of_learning` is on.
    pub fn open_with(
        path: impl AsRef<Path>,
        config: StoreConfig,
        genesis: &GenesisSpec,
        pol: Option<Arc<dyn PolAcceptance>>,
    ) -> Result<Self> {
        let root = path.as_ref().to_path_buf();
        let _span =
            tracing::info_span!("chain_open", path = %root.display(), read_only = false).entered();
        let validator = Validator::new(config, genesis)?;
        let pol = if validator.config().proof_of_learning {
            Some(pol.ok_or(Error::PolHookMissing)?)
        } else {
            None
        };
        let segments_dir = root.join(SEGMENTS_DIR_NAME);
        std::fs::create_dir_all(&segments_dir).map_err(io_error(&segments_dir))?;
        let db = open_db(&root.join(DB_DIR_NAME))?;
        let durability = validator.config().durability;

        let (writer, fresh) = match load(&db, &validator)? {
            Some(loaded) => {
                if loaded.format == STORE_FORMAT_VERSION_UPGRADABLE {
                    // `open_db` created the empty `candidates` column family: all that differs.
                    db.put(MetaKey::FORMAT, STORE_FORMAT_VERSION.to_le_bytes())
                        .map_err(db_error("upgrade format"))?;
                    tracing::info!(
                        from = STORE_FORMAT_VERSION_UPGRADABLE,
                        to = STORE_FORMAT_VERSION,
                        "chain store format upgraded"
                    );
                }
                let loaded = if durability == Durability::Unsynced {
                    super::repair::roll_back_lost_blocks(&db, &segments_dir, loaded)?
                } else {
                    loaded
                };
                let segment = SegmentWriter::recover(&segments_dir, loaded.active)?;
                let writer = Writer {
                    segment,
                    next_seq: loaded.next_seq,
                    chains: loaded.chains,
                };
                (writer, false)
            }
            None => {
                // A crash while creating leaves at most segment files and no format key: start over.
                for entry in std::fs::read_dir(&segments_dir).map_err(io_error(&segments_dir))? {
                    let entry_path = entry.map_err(io_error(&segments_dir))?.path();
                    std::fs::remove_file(&entry_path).map_err(io_error(&entry_path))?;
                }
                // Genesis is made durable whatever the durability: creating is rare, and a store
                // whose genesis a power loss took could never be opened again.
                let segment = SegmentWriter::create(&segments_dir, 1, Durability::Synced)?;
                let empty = ChainRecord {
                    genesis: BlockHash::ZERO,
                    tip_height: 0,
                    tip_hash: BlockHash::ZERO,
                    blocks: 0,
                    payload_bytes: 0,
                };
                let writer = Writer {
                    segment,
                    next_seq: 0,
                    chains: [empty; ChainId::ALL.len()],
                };
                (writer, true)
            }
        };
        let maps = SegmentMaps::new(segments_dir, writer.segment.active());
        let chains = writer.chains;
        let floor = DiskFloor::new(root.clone(), validator.config().free_bytes_min);
        let store = Self {
            floor,
            root,
            db,
            validator,
            covenant_hash: genesis.covenant_hash(),
            pol,
            writer: Some(Mutex::new(writer)),
            chains: RwLock::new(chains),
            maps,
            poisoned: AtomicBool::new(false),
            stages: Arc::default(),
        };
        if fresh {
            store.create_genesis(genesis)?;
        }
        tracing::info!(fresh, "chain store open");
        Ok(store)
    }

    /// Opens the existing store in `path` for reading only, under the default config and the
    /// shipped genesis: what verification and inspection use. See
    /// [`ChainStore::open_read_only_with`].
    pub fn open_read_only(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_read_only_with(path, StoreConfig::default(), &GenesisSpec::shipped())
    }

    /// Opens the existing store in `path` without writing anything: RocksDB read-only (no lock
    /// taken, no file written), no recovery (payload bytes past the committed end stay on disk;
    /// [`ChainStore::verify`] reports them), no genesis created. Every append, import or other
    /// write is refused with [`Error::ReadOnly`]. `config` supplies the rules verification
    /// checks against (its proof-of-learning switch is ignored: nothing is appended).
    ///
    /// A directory without a store is [`Error::NoStore`]; a store of another format, or whose
    /// genesis is not `genesis`'s, is refused as on a read-write open. The store may be open in
    /// a running node meanwhile: this one sees it as of the moment it opened.
    pub fn open_read_only_with(
        path: impl AsRef<Path>,
        config: StoreConfig,
        genesis: &GenesisSpec,
    ) -> Result<Self> {
        let root = path.as_ref().to_path_buf();
        let _span =
            tracing::info_span!("chain_open", path = %root.display(), read_only = true).entered();
        if !holds_store(&root) {
            return Err(Error::NoStore { path: root });
        }
        let validator = Validator::new(config, genesis)?;
        let db = open_db_read_only(&root.join(DB_DIR_NAME))?;
        let loaded = load(&db, &validator)?.ok_or_else(|| Error::Corruption {
            what: "the database has no format key: the store's creation never completed".into(),
        })?;
        let segments_dir = root.join(SEGMENTS_DIR_NAME);
        segment::check_active(&segments_dir, loaded.active)?;
        // Nothing is written: no floor to keep.
        let floor = DiskFloor::new(root.clone(), 0);
        let store = Self {
            floor,
            root,
            db,
            validator,
            covenant_hash: genesis.covenant_hash(),
            pol: None,
            writer: None,
            chains: RwLock::new(loaded.chains),
            maps: SegmentMaps::new(segments_dir, loaded.active),
            poisoned: AtomicBool::new(false),
            stages: Arc::default(),
        };
        tracing::info!("chain store open read-only");
        Ok(store)
    }

    /// The chain store `path` names: `path` itself when it is a store, or `path/chain`
    /// ([`CHAIN_DIR_NAME`]) when `path` is a node's data directory holding one. Anything else is
    /// [`Error::NoStore`] naming `path`. Creates and changes nothing.
    pub fn locate(path: impl AsRef<Path>) -> Result<PathBuf> {
        let path = path.as_ref();
        if holds_store(path) {
            return Ok(path.to_path_buf());
        }
        let nested = path.join(CHAIN_DIR_NAME);
        if holds_store(&nested) {
            return Ok(nested);
        }
        Err(Error::NoStore {
            path: path.to_path_buf(),
        })
    }

    /// Writes the three genesis blocks and the store's format in one batch, synced whatever
    /// the store's durability: until the format key is durable, a crash or power loss leaves a
    /// store that the next open creates again; after it, genesis is on disk for good.
    fn create_genesis(&self, genesis: &GenesisSpec) -> Result<()> {
        let durability = Durability::Synced;
        let mut writer = self.lock_writer("create genesis")?;
        let mut batch = WriteBatch::default();
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
            let record =
                self.put_block(&mut batch, &block.header, hash, placement, seq, None, false);
            writer.segment.commit(placement);
            writer.next_seq += 1;
            writer.chains[chain.index()] = record;
        }
        batch.put(MetaKey::FORMAT, STORE_FORMAT_VERSION.to_le_bytes());
        batch.put(MetaKey::NEXT_SEQ, encode_record(&writer.next_seq));
        batch.put(
            MetaKey::ACTIVE_SEGMENT,
            encode_record(&writer.segment.active()),
        );
        let mut options = rocksdb::WriteOptions::default();
        options.set_sync(true);
        self.db
            .write_opt(batch, &options)
            .map_err(db_error("write genesis"))?;
        self.maps.set_active(writer.segment.active());
        *self.chains.write().unwrap_or_else(PoisonError::into_inner) = writer.chains;
        Ok(())
    }
}
