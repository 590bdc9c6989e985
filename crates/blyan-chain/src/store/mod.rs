//! [`ChainStore`]: headers and indices in RocksDB, payloads in mapped segment files.
//!
//! By concept:
//! - `open.rs`: opening read-write (create with genesis, or load and recover) and read-only (no
//!   recovery, no genesis, nothing written), and finding a store in a node's data directory;
//! - `append.rs`: validated appends, in memory or streamed, with the Proof-of-Learning hook;
//! - `stage.rs`: staged payloads ([`crate::PayloadStage`], a download written in ranges) and
//!   their append, which adopts the staging file as a segment instead of copying it;
//! - `records.rs`: the RocksDB records one block writes (the layout itself is `schema.rs`);
//! - `repair.rs`: an unsynced store's roll-back of the blocks a power loss took the payload of;
//! - `read.rs`: lookups, pages, expert versions, dependents, summaries.
//!
//! The rules a block must pass, stateless and against the store, are `validate/`'s; full
//! verification is `verify.rs`; export and import `export.rs`.

mod append;
mod open;
mod read;
pub(crate) use read::decode_dependent;
mod records;
mod repair;
mod stage;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};

use blyan_primitives::{BlockHash, Durability, ExpertName, PayloadHash};
use rocksdb::{ColumnFamily, DB, WriteOptions};

use crate::chain::ChainId;
use crate::config::{ForkRule, StoreConfig};
use crate::error::{Error, Result, db_error};
use crate::header::ChainTip;
use crate::pol::PolAcceptance;
use crate::schema::{ChainRecord, Relation};
use crate::segment::{PayloadHandle, SegmentMaps, SegmentWriter};
use crate::space::DiskFloor;
use crate::stage::StageRegistry;
use crate::validate::Validator;

pub use open::CHAIN_DIR_NAME;
pub use read::BLOCKS_PAGE_COUNT_MAX;

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
    pub covenant_hash: PayloadHash,
    /// The config the store runs with.
    pub config: StoreConfig,
    /// One entry per chain, in [`ChainId::ALL`] order.
    pub chains: Vec<ChainInfo>,
}

/// Per-chain records, indexed like [`ChainId::ALL`].
pub(crate) type ChainRecords = [ChainRecord; ChainId::ALL.len()];

/// The writer's state, behind the append lock.
struct Writer {
    segment: SegmentWriter,
    next_seq: u64,
    chains: ChainRecords,
}

/// A signed DAG block store: headers and indices in RocksDB, payloads in mmapped segments.
///
/// `Send + Sync`: share it in an `Arc`; appends from many threads serialize on one lock for
/// their write, reads never take it. Opened read-write ([`ChainStore::open`]) it recovers from a
/// crash and creates genesis on first use; opened read-only ([`ChainStore::open_read_only`]) it
/// writes nothing and refuses appends.
pub struct ChainStore {
    root: PathBuf,
    pub(crate) db: DB,
    pub(crate) validator: Validator,
    covenant_hash: PayloadHash,
    pol: Option<Arc<dyn PolAcceptance>>,
    /// `None` when opened read-only: there is nothing to write with.
    writer: Option<Mutex<Writer>>,
    chains: RwLock<ChainRecords>,
    pub(crate) maps: SegmentMaps,
    poisoned: AtomicBool,
    /// Payloads with an open [`crate::PayloadStage`]: one stage per payload at a time.
    stages: Arc<StageRegistry>,
    /// The free-disk floor, checked before every write of payload bytes.
    floor: DiskFloor,
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
            .field("read_only", &self.is_read_only())
            .field("config", self.validator.config())
            .finish_non_exhaustive()
    }
}

impl ChainStore {
    /// Whether the store was opened with [`ChainStore::open_read_only`].
    pub fn is_read_only(&self) -> bool {
        self.writer.is_none()
    }

    /// Makes everything appended so far durable even under [`Durability::Unsynced`]: syncs the
    /// RocksDB WAL and the active segment. Also done when the store is dropped. A read-only
    /// store has appended nothing and has nothing to flush.
    pub fn flush(&self) -> Result<()> {
        if self.is_read_only() {
            return Ok(());
        }
        let writer = self.lock_writer("flush")?;
        writer.segment.sync(Durability::Synced)?;
        self.db.flush_wal(true).map_err(db_error("flush wal"))
    }

    /// Bytes that must stay free on the store's file system (see
    /// [`StoreConfig::free_bytes_min`]), as opened or last set.
    pub fn free_bytes_min(&self) -> u64 {
        self.floor.floor_bytes()
    }

    /// Changes the free-disk floor of the open store and of its open stages, from their next
    /// write on (an operator reserving or releasing space without a restart). 0 turns the check
    /// off.
    pub fn set_free_bytes_min(&self, bytes: u64) {
        self.floor.set_floor_bytes(bytes);
    }

    /// Bytes still free for this process on the store's file system.
    pub fn free_bytes(&self) -> Result<u64> {
        crate::space::free_bytes(&self.root)
    }

    /// Refuses `operation` on a read-only store.
    pub(crate) fn ensure_writable(&self, operation: &'static str) -> Result<()> {
        if self.is_read_only() {
            return Err(Error::ReadOnly {
                path: self.root.clone(),
                operation,
            });
        }
        Ok(())
    }

    /// The append lock, unless the store is read-only or poisoned.
    fn lock_writer(&self, operation: &'static str) -> Result<MutexGuard<'_, Writer>> {
        let Some(writer) = &self.writer else {
            return Err(Error::ReadOnly {
                path: self.root.clone(),
                operation,
            });
        };
        if self.poisoned.load(Ordering::Acquire) {
            return Err(Error::Poisoned);
        }
        writer.lock().map_err(|_| Error::Poisoned)
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
            .expect("every column family is opened with the store")
    }
}

impl Drop for ChainStore {
    fn drop(&mut self) {
        if self.is_read_only() || self.poisoned.load(Ordering::Acquire) {
            return;
        }
        if let Err(error) = self.flush() {
            tracing::warn!(%error, "flushing the chain store on close failed");
        }
    }
}
