//! The crate's one error type. Each validation failure is its own variant carrying the hashes
//! and numbers that explain it, so callers (the HTTP API, sync) can report the precise reason.

use std::path::PathBuf;

use blyan_primitives::{Address, BlockHash, ExpertName, PayloadHash};

use crate::chain::{BlockKind, ChainId};
use crate::key::SignatureFault;

/// Result with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong in `blyan-chain`.
// Variant fields are not documented one by one: each variant's doc says what went wrong and
// its `#[error]` message names every field in context, which is what a reader of the error sees.
#[allow(missing_docs)]
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    // ---- parsing at the boundary ----
    /// A hash, address, expert name or dtype that does not parse (the shared types of
    /// `blyan-primitives`, whose error names the input and the reason), for callers that parse
    /// with `?` into this crate's [`Result`].
    #[error(transparent)]
    Primitive(#[from] blyan_primitives::Error),
    /// Text that is not a 65-byte hex signature.
    #[error("invalid signature {input:?}{}", fault.map(|f| format!(": {f}")).unwrap_or_default())]
    InvalidSignatureText {
        input: String,
        fault: Option<SignatureFault>,
    },
    /// A private key that is malformed or outside the curve order.
    #[error("invalid private key: {reason}")]
    InvalidKey { reason: &'static str },
    /// A key file whose content is not a key.
    #[error("key file {path}: {reason}")]
    KeyFile { path: PathBuf, reason: String },
    /// A chain name or letter that names no chain.
    #[error("unknown chain {input:?} (expected A/meta, B/parameters or D/dataset)")]
    InvalidChain { input: String },
    /// A config field outside its limit.
    #[error("config field `{field}`: {reason}")]
    Config { field: &'static str, reason: String },

    // ---- a block on its own ----
    /// Bytes that are not a canonical encoding of `what`.
    #[error("bad encoding of {what}: {reason}")]
    Decode { what: &'static str, reason: String },
    /// A header layout this code does not know.
    #[error("header format version {got} is not supported (this build reads {supported})")]
    UnsupportedVersion { got: u16, supported: u16 },
    /// An input larger than its named limit.
    #[error("{what}: {got} is above the limit {max}")]
    LimitExceeded {
        what: &'static str,
        got: u64,
        max: u64,
    },
    /// A header whose hash is not the one claimed for it.
    #[error("header hashes to {got}, but {expected} was claimed")]
    HeaderHashMismatch { got: BlockHash, expected: BlockHash },
    /// A non-genesis block without a signature.
    #[error("block {block} is not signed")]
    MissingSignature { block: BlockHash },
    /// A signature that does not verify.
    #[error("block {block} has a bad signature: {fault}")]
    BadSignature {
        block: BlockHash,
        fault: SignatureFault,
    },
    /// A valid signature by someone other than the header's author.
    #[error("block {block} names author {author} but was signed by {signer}")]
    WrongSigner {
        block: BlockHash,
        author: Address,
        signer: Address,
    },
    /// A payload whose length differs from the header's `payload_bytes`.
    #[error("payload of block {block} is {got} bytes, the header says {expected}")]
    PayloadLengthMismatch {
        block: BlockHash,
        got: u64,
        expected: u64,
    },
    /// A payload whose blake3 differs from the header's `payload_hash`.
    #[error("payload of block {block} hashes to {got}, the header says {expected}")]
    PayloadHashMismatch {
        block: BlockHash,
        got: PayloadHash,
        expected: PayloadHash,
    },
    /// The reader a streamed payload came from failed.
    #[error("reading the payload of block {block}: {source}")]
    PayloadRead {
        block: BlockHash,
        source: std::io::Error,
    },
    /// A payload above the store's `payload_bytes_max`.
    #[error("payload of block {block} is {bytes} bytes, above the limit {max}")]
    PayloadTooLarge {
        block: BlockHash,
        bytes: u64,
        max: u64,
    },
    /// A kind of block its chain does not hold.
    #[error("block {block}: chain {chain} does not hold {kind} blocks")]
    KindNotAllowed {
        block: BlockHash,
        chain: ChainId,
        kind: BlockKind,
    },
    /// Genesis not at height 0 without parent, or a height-0/parentless block that is not genesis.
    #[error(
        "block {block}: a {kind} block at height {height} (has parent: {has_parent}); only genesis \
         blocks, and all of them, sit at height 0 without a parent"
    )]
    GenesisPlacement {
        block: BlockHash,
        kind: BlockKind,
        height: u64,
        has_parent: bool,
    },
    /// A genesis block other than the one this store's covenant defines.
    #[error("genesis of chain {chain} is {got}, this store's covenant defines {expected}")]
    GenesisMismatch {
        chain: ChainId,
        got: BlockHash,
        expected: BlockHash,
    },
    /// More `depends_on` entries than [`crate::DEPENDS_ON_COUNT_MAX`].
    #[error("block {block} lists {count} dependencies, above the limit {max}")]
    TooManyDependencies {
        block: BlockHash,
        count: u64,
        max: u32,
    },
    /// The same block twice in `depends_on`.
    #[error("block {block} lists dependency {dependency} twice")]
    DuplicateDependency {
        block: BlockHash,
        dependency: BlockHash,
    },
    /// Metadata that does not fit the block's kind or exceeds a limit.
    #[error("block {block} ({kind}): invalid metadata: {reason}")]
    MetaInvalid {
        block: BlockHash,
        kind: BlockKind,
        reason: &'static str,
    },
    /// A block hash with fewer leading zero bits than the store's difficulty.
    #[error(
        "block {block} has {leading_zero_bits} leading zero bits, proof of work needs {difficulty_bits}"
    )]
    InsufficientWork {
        block: BlockHash,
        leading_zero_bits: u32,
        difficulty_bits: u32,
    },

    // ---- a block against the store ----
    /// A block the store already holds.
    #[error("block {block} is already stored")]
    AlreadyExists { block: BlockHash },
    /// A `prev_hash` naming no stored block.
    #[error("block {block}: parent {parent} is not stored")]
    UnknownParent { block: BlockHash, parent: BlockHash },
    /// A `prev_hash` naming a block of another chain.
    #[error("block {block} on chain {chain}: parent {parent} is on chain {parent_chain}")]
    ParentOnOtherChain {
        block: BlockHash,
        chain: ChainId,
        parent: BlockHash,
        parent_chain: ChainId,
    },
    /// A height other than the parent's + 1.
    #[error("block {block} claims height {height}, its parent's height + 1 is {expected}")]
    HeightGap {
        block: BlockHash,
        height: u64,
        expected: u64,
    },
    /// A second child of one parent on a chain whose fork rule is linear.
    #[error("block {block} forks chain {chain} at height {height}, where {existing} is stored")]
    Fork {
        block: BlockHash,
        chain: ChainId,
        height: u64,
        existing: BlockHash,
    },
    /// A `depends_on` entry naming no stored block.
    #[error("block {block}: dependency {dependency} is not stored")]
    UnknownDependency {
        block: BlockHash,
        dependency: BlockHash,
    },
    /// A dependency stamped later than the block that depends on it.
    #[error(
        "block {block} (time {timestamp_ms} ms) depends on {dependency}, stamped later \
         ({dependency_timestamp_ms} ms)"
    )]
    DependencyLater {
        block: BlockHash,
        dependency: BlockHash,
        dependency_timestamp_ms: u64,
        timestamp_ms: u64,
    },
    /// A block stamped earlier than its parent.
    #[error(
        "block {block} (time {timestamp_ms} ms) is stamped before its parent {parent} \
         ({parent_timestamp_ms} ms)"
    )]
    TimestampBeforeParent {
        block: BlockHash,
        parent: BlockHash,
        parent_timestamp_ms: u64,
        timestamp_ms: u64,
    },
    /// A block stamped further ahead of this node's clock than
    /// [`crate::StoreConfig::timestamp_skew_seconds_max`] allows.
    #[error(
        "block {block} is stamped {timestamp_ms} ms, more than {skew_seconds_max} s ahead of \
         this node's clock ({now_ms} ms)"
    )]
    TimestampInFuture {
        block: BlockHash,
        timestamp_ms: u64,
        now_ms: u64,
        skew_seconds_max: u64,
    },
    /// An expert block whose version is not the expert's current version + 1.
    #[error("block {block}: {expert} version {got}, the next version is {expected}")]
    ExpertVersionMismatch {
        block: BlockHash,
        expert: ExpertName,
        got: u32,
        expected: u32,
    },
    /// Proof-of-Learning refused a block.
    #[error("block {block} refused by Proof-of-Learning ({code}): {reason}")]
    PolRejected {
        block: BlockHash,
        /// The rejection's stable name ([`crate::PolRejection::code`]).
        code: &'static str,
        reason: String,
    },
    /// A block would promote a block that is not a stored candidate, or an expert version that
    /// is no longer its expert's next one.
    #[error("block {block} cannot promote {candidate}: {reason}")]
    PromotionInvalid {
        block: BlockHash,
        candidate: BlockHash,
        reason: String,
    },
    /// `proof_of_learning` is on but no hook was given to the store.
    #[error("config turns proof_of_learning on, but no PolAcceptance hook was given")]
    PolHookMissing,

    // ---- the store itself ----
    /// RocksDB failed.
    #[cfg(feature = "store")]
    #[error("database {operation}: {source}")]
    Database {
        operation: &'static str,
        source: rocksdb::Error,
    },
    /// A file operation failed.
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    /// Stored data that contradicts itself. Reported, never repaired silently.
    #[error("store corruption: {what}")]
    Corruption { what: String },
    /// A stored payload whose bytes no longer hash to what its header commits (a flipped bit on
    /// disk, an edited segment file), found when it was read with
    /// [`crate::ChainStore::payload_verified`]. The bytes are not served. Reported, never
    /// repaired.
    #[cfg(feature = "store")]
    #[error("stored payload of block {block} hashes to {got}, its header commits {expected}")]
    StoredPayloadCorrupt {
        block: BlockHash,
        got: PayloadHash,
        expected: PayloadHash,
    },
    /// A directory that holds no chain store where one was expected.
    #[cfg(feature = "store")]
    #[error(
        "{} holds no chain store: expected a chain store directory (holding db/ and \
         segments/) or a node data directory holding one in {}/",
        path.display(),
        crate::CHAIN_DIR_NAME
    )]
    NoStore { path: PathBuf },
    /// A write asked of a store opened with [`crate::ChainStore::open_read_only`].
    #[cfg(feature = "store")]
    #[error("the chain store in {} is open read-only: {operation} refused", path.display())]
    ReadOnly {
        path: PathBuf,
        operation: &'static str,
    },
    /// Writing `write_bytes` more would leave fewer than the store's floor
    /// ([`crate::StoreConfig::free_bytes_min`]) free on its file system. Nothing was written;
    /// reads keep working, and writes are accepted again as soon as space returns.
    #[cfg(feature = "store")]
    #[error(
        "disk full: {} has {free_bytes} bytes free, and writing {write_bytes} more would go \
         below the store's floor of {floor_bytes} (chain.free_bytes_min); reads still work",
        path.display()
    )]
    DiskFull {
        path: PathBuf,
        free_bytes: u64,
        write_bytes: u64,
        floor_bytes: u64,
    },
    /// Writing a block's payload into its segment failed (the disk filled up, a file size
    /// limit, an I/O error). The partial write was cut off again and nothing was committed: the
    /// store is as before the append and stays writable, so the same append may be retried.
    #[cfg(feature = "store")]
    #[error(
        "writing the payload of block {block} to {} failed, rolled back: {source}",
        path.display()
    )]
    PayloadWrite {
        block: BlockHash,
        path: PathBuf,
        source: std::io::Error,
    },
    /// An earlier write failed; the store refuses writes until it is reopened.
    #[error("store refuses writes after an earlier write failure; reopen it")]
    Poisoned,
    /// A store written by an unknown version of this crate.
    #[error("store format {got} is not supported (this build reads {supported})")]
    StoreFormat { got: u32, supported: u32 },
    /// A staged write whose offset, or whose length when it does not end the payload, is not a
    /// multiple of [`crate::PayloadStage::BLOCK_BYTES`].
    #[cfg(feature = "store")]
    #[error(
        "staged write of {bytes} bytes at offset {offset} of payload {payload}: not on \
         {block_bytes}-byte block boundaries (only a write ending the payload may be short)"
    )]
    StageMisaligned {
        payload: PayloadHash,
        offset: u64,
        bytes: u64,
        block_bytes: u64,
    },
    /// A staged write reaching past the end of its payload.
    #[cfg(feature = "store")]
    #[error(
        "staged write of {bytes} bytes at offset {offset} runs past the end of payload \
         {payload} ({payload_bytes} bytes)"
    )]
    StageOutOfBounds {
        payload: PayloadHash,
        offset: u64,
        bytes: u64,
        payload_bytes: u64,
    },
    /// [`crate::ChainStore::append_staged`] given a stage with bytes still missing.
    #[cfg(feature = "store")]
    #[error("payload of block {block} is staged with {missing_bytes} bytes still missing")]
    StageIncomplete {
        block: BlockHash,
        missing_bytes: u64,
    },
    /// A second stage of a payload whose stage is open, or a discard of an open stage.
    #[cfg(feature = "store")]
    #[error("payload {payload} has an open stage: close it (drop it) first")]
    StageBusy { payload: PayloadHash },
    /// [`crate::ChainStore::append_staged`] given a stage another store opened.
    #[cfg(feature = "store")]
    #[error("the stage of payload {payload} belongs to another store")]
    StageOfAnotherStore { payload: PayloadHash },
    /// An export file that is not well formed.
    #[error("export file, at byte {offset}: {reason}")]
    ExportFormat { offset: u64, reason: String },
    /// An export for a chain that has no block in the asked range.
    #[error("chain {chain} has no block at height {height}")]
    NoSuchHeight { chain: ChainId, height: u64 },
}

impl Error {
    /// The block this error is about, when it is about one.
    pub fn block(&self) -> Option<BlockHash> {
        match self {
            Error::MissingSignature { block }
            | Error::BadSignature { block, .. }
            | Error::WrongSigner { block, .. }
            | Error::PayloadLengthMismatch { block, .. }
            | Error::PayloadHashMismatch { block, .. }
            | Error::PayloadTooLarge { block, .. }
            | Error::PayloadRead { block, .. }
            | Error::KindNotAllowed { block, .. }
            | Error::GenesisPlacement { block, .. }
            | Error::TooManyDependencies { block, .. }
            | Error::DuplicateDependency { block, .. }
            | Error::MetaInvalid { block, .. }
            | Error::InsufficientWork { block, .. }
            | Error::AlreadyExists { block }
            | Error::UnknownParent { block, .. }
            | Error::ParentOnOtherChain { block, .. }
            | Error::HeightGap { block, .. }
            | Error::Fork { block, .. }
            | Error::UnknownDependency { block, .. }
            | Error::DependencyLater { block, .. }
            | Error::TimestampBeforeParent { block, .. }
            | Error::TimestampInFuture { block, .. }
            | Error::ExpertVersionMismatch { block, .. }
            | Error::PolRejected { block, .. }
            | Error::PromotionInvalid { block, .. } => Some(*block),
            #[cfg(feature = "store")]
            Error::StoredPayloadCorrupt { block, .. }
            | Error::StageIncomplete { block, .. }
            | Error::PayloadWrite { block, .. } => Some(*block),
            Error::HeaderHashMismatch { expected, .. } => Some(*expected),
            Error::GenesisMismatch { got, .. } => Some(*got),
            _ => None,
        }
    }

    /// Whether the error is the fault of the submitted block (an HTTP 4xx) rather than of this
    /// store or machine (a 5xx).
    pub fn is_invalid_block(&self) -> bool {
        match self {
            #[cfg(feature = "store")]
            Error::Database { .. }
            | Error::StoredPayloadCorrupt { .. }
            | Error::NoStore { .. }
            | Error::ReadOnly { .. }
            | Error::StageMisaligned { .. }
            | Error::StageOutOfBounds { .. }
            | Error::StageIncomplete { .. }
            | Error::StageBusy { .. }
            | Error::StageOfAnotherStore { .. }
            | Error::DiskFull { .. }
            | Error::PayloadWrite { .. } => false,
            Error::Io { .. }
            | Error::Corruption { .. }
            | Error::Poisoned
            | Error::StoreFormat { .. }
            | Error::PolHookMissing
            | Error::Config { .. }
            | Error::KeyFile { .. } => false,
            _ => true,
        }
    }
}

impl Error {
    /// Whether the error says the store's disk is full: refused at the free-disk floor
    /// ([`Error::DiskFull`]), or a write that ran out of space, quota or allowed file size
    /// (`ENOSPC`, `EDQUOT`, `EFBIG`). The HTTP API answers these 507 Insufficient Storage.
    pub fn is_out_of_space(&self) -> bool {
        match self {
            #[cfg(feature = "store")]
            Error::DiskFull { .. } => true,
            #[cfg(feature = "store")]
            Error::PayloadWrite { source, .. } => io_out_of_space(source),
            Error::Io { source, .. } => io_out_of_space(source),
            _ => false,
        }
    }
}

fn io_out_of_space(error: &std::io::Error) -> bool {
    matches!(
        error.kind(),
        std::io::ErrorKind::StorageFull
            | std::io::ErrorKind::QuotaExceeded
            | std::io::ErrorKind::FileTooLarge
    )
}

#[cfg(feature = "store")]
pub(crate) fn io_error(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Error {
    let path = path.into();
    move |source| Error::Io { path, source }
}

#[cfg(feature = "store")]
pub(crate) fn db_error(operation: &'static str) -> impl FnOnce(rocksdb::Error) -> Error {
    move |source| Error::Database { operation, source }
}
