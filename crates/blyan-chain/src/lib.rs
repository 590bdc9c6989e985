//! # blyan-chain: a signed DAG block store that never loses or half-writes a block
//!
//! Blyan's model, data and proofs live as blocks on three chains: **A** meta (architecture,
//! the covenant), **B** parameters (one block per expert version, routers, shared weights) and
//! **D** dataset. Each block has a parent on its own chain (`prev_hash`) and may depend on blocks
//! of any chain (`depends_on`), so together they form a DAG. This crate owns the block format,
//! its canonical encoding and hash, author signatures, validation, and the store.
//!
//! ## Invariants
//! - A header has exactly one encoding (bincode 2, one fixed config, see [`canonical_config`])
//!   and its hash is blake3 of that encoding minus the signature. The payload is committed by
//!   its own blake3 and length, so a header verifies without its payload.
//! - Every stored non-genesis block is signed (EIP-191 over its hash) by its `author`, an
//!   Ethereum address; genesis blocks are fixed by the covenant ([`GenesisSpec`]).
//! - Every stored block's parent and dependencies were stored before it: the graph is acyclic.
//!   On a linear chain no parent has two children. All these rules live in [`Validator`]
//!   (stateless ones, and the link checks an append runs against the store).
//! - What [`ChainStore::append`] acknowledged survives `kill -9` (and power loss under the
//!   default [`Durability::Synced`]); a crash never leaves half a block visible. Under
//!   [`Durability::Unsynced`] a power loss loses only the newest blocks: the next open drops
//!   those whose payload bytes did not reach the disk, and every block appended after them.
//! - A full disk never poisons the store: below [`StoreConfig::free_bytes_min`] free bytes
//!   writes are refused ([`Error::DiskFull`]) while reads go on, and a payload write that fails
//!   is rolled back ([`Error::PayloadWrite`]); only a failed index batch makes the store refuse
//!   writes until reopened ([`Error::Poisoned`]).
//! - Payload bytes are never copied on read: a [`PayloadHandle`] maps them from an immutable,
//!   64-byte-aligned segment file. [`ChainStore::payload`] does not re-hash them;
//!   [`ChainStore::payload_verified`] and [`ChainStore::verify`] do, and refuse bytes that do not
//!   match their header.
//! - A store opened with [`ChainStore::open_read_only`] writes nothing: no recovery, no genesis,
//!   every append refused with [`Error::ReadOnly`].
//! - A payload downloaded in ranges ([`ChainStore::stage_payload`], [`PayloadStage`]) is written
//!   once: [`ChainStore::append_staged`] checks it as `append` does and adopts its staging file
//!   as a segment (a rename), never copying it. A resumed stage claims only bytes a
//!   [`PayloadStage::flush`] made durable.
//!
//! ## Must not depend on
//! Any blyan crate but `blyan-primitives` (whose [`Address`], [`BlockHash`], [`PayloadHash`],
//! [`ExpertName`], [`Dtype`], [`Durability`] and shared limits it re-exports), libtorch, tokio
//! or HTTP. Proof-of-Learning plugs in through the [`PolAcceptance`] trait, implemented higher up.
//!
//! ## Features
//! `store` (default) adds the RocksDB store, payload segments, verification and export/import.
//! Without it the crate is the block format alone (encoding, hashes, keys, signatures, the
//! stateless [`Validator`]), which builds without RocksDB's C++: the fuzz target uses it so.
//!
//! ## Building
//! The `store` feature compiles RocksDB's C++ from source (`rocksdb` 0.24 with its `lz4` and
//! `bindgen-runtime` features): the build needs a C++ compiler and libclang, which bindgen loads
//! to read RocksDB's headers (Debian: `clang` and `libclang-dev`; set `LIBCLANG_PATH` to the
//! directory of `libclang.so` when bindgen does not find it). The first build takes about 20
//! minutes on 2 cores. RocksDB is linked statically: at run time only the C++ standard library is
//! needed. With `default-features = false` none of this is built.
//!
//! ## A network of your own
//! [`ChainStore::open`] creates or opens a store of the Blyan network: [`GenesisSpec::shipped`],
//! whose chain A genesis commits the covenant ([`COVENANT_TEXT`]) and which trusts the shipped
//! model's blocks by their hashes ([`SHIPPED_BLOCKS_TEXT`]). A private or test network builds
//! its own [`GenesisSpec`] (its covenant text, genesis timestamp and pinned block hashes) and
//! opens every store with [`ChainStore::open_with`]. Two stores agree on genesis exactly when
//! their specs are equal; a store created with one spec refuses to open with another
//! ([`Error::GenesisMismatch`]), and a peer on another genesis is refused the same way.
//!
//! ```
//! # #[cfg(feature = "store")] {
//! use std::borrow::Cow;
//! use blyan_chain::{ChainStore, Error, GenesisSpec, StoreConfig};
//!
//! # let dir = tempfile::tempdir().expect("temp dir");
//! let spec = GenesisSpec {
//!     covenant: Cow::Borrowed(b"The rules of a test network."),
//!     timestamp_ms: 1_770_000_000_000,
//!     pinned: Cow::Borrowed(&[]), // no block trusted without its author's signature
//! };
//! let store = ChainStore::open_with(dir.path(), StoreConfig::default(), &spec, None)?;
//! assert_eq!(store.info().covenant_hash, spec.covenant_hash());
//! drop(store);
//! // The Blyan network's genesis is another network's: the store refuses it.
//! assert!(matches!(
//!     ChainStore::open(dir.path(), StoreConfig::default()),
//!     Err(Error::GenesisMismatch { .. })
//! ));
//! # }
//! # Ok::<(), blyan_chain::Error>(())
//! ```
//!
//! ## Where unsafe lives
//! Only in the `segment` module (feature `store`): the three `memmap2` mappings of segment files
//! (committed payloads for [`PayloadHandle`]s; a just-written payload shown to the
//! Proof-of-Learning hook through a guard that borrows the segment writer, so the bytes cannot be
//! discarded while it is mapped; a staged payload checked by [`ChainStore::append_staged`]
//! through a guard that borrows its staging file mutably), and `PayloadHandle`'s `unsafe impl`
//! of [`blyan_primitives::ImmutableBytes`]. Each carries a `// SAFETY:` argument; the rest of the
//! crate denies `unsafe_code`.
//!
//! ## Where to start reading
//! [`BlockHeader`] (format and hash), [`Validator`] (block rules), [`ChainStore`] (open, append,
//! lookups, [`ChainStore::verify`], export/import), [`PayloadHandle`] (zero-copy bytes),
//! [`PayloadStage`] (a payload downloaded in ranges, appended without a copy). The
//! storage design and its measurements are in `docs/chain-storage.md`.
//!
//! ## Example
//! ```
//! use blyan_chain::{AuthorKey, BlockHeader, BlockKind, ChainId, ChainStore, StoreConfig};
//!
//! # fn main() -> blyan_chain::Result<()> {
//! # let dir = tempfile::tempdir().expect("temp dir");
//! let store = ChainStore::open(dir.path(), StoreConfig::default())?; // creates genesis
//! let key = AuthorKey::generate();
//! let payload = b"a data entry";
//! let tip = store.tip(ChainId::Dataset);
//! let mut header = BlockHeader::new_child(&tip, BlockKind::DatasetEntry, payload, 1_770_000_000_000);
//! header.sign(&key);
//! let hash = store.append(&header, payload)?;
//! assert_eq!(&*store.payload_verified(&hash)?.expect("just appended"), payload);
//! drop(store);
//!
//! // Verification opens read-only: it changes no byte of the store.
//! let store = ChainStore::open_read_only(dir.path())?;
//! let report = store.verify(|_| {})?;
//! assert!(report.is_ok() && report.unacknowledged_tail.is_none());
//! # Ok(())
//! # }
//! ```
#![cfg_attr(not(test), warn(unused_crate_dependencies))]
#![deny(unsafe_code)]

mod chain;
mod config;
mod error;
#[cfg(feature = "store")]
mod export;
mod genesis;
mod hash;
mod header;
mod key;
#[cfg(feature = "store")]
mod pol;
#[cfg(feature = "store")]
mod schema;
// The one module with `unsafe`: mapping segment files (see "Where unsafe lives" above).
#[cfg(feature = "store")]
mod dependents;
#[cfg(feature = "store")]
#[allow(unsafe_code)]
mod segment;
#[cfg(feature = "store")]
mod space;
#[cfg(feature = "store")]
mod stage;
#[cfg(feature = "store")]
mod store;
mod validate;
#[cfg(feature = "store")]
mod verify;

pub use blyan_primitives::{
    Address, BLOCK_PAYLOAD_BYTES_MAX, BlockHash, Dtype, Durability, EXPERT_INDEX_MAX,
    EXPERT_LAYER_INDEX_MAX, ExpertName, POW_DIFFICULTY_BITS_MAX, PayloadHash,
    TENSOR_NAME_BYTES_MAX, TENSOR_RANK_MAX, keccak256,
};
pub use chain::{BlockKind, ChainId};
pub use config::{
    FREE_BYTES_MIN_DEFAULT, FREE_BYTES_MIN_MAX, ForkRule, ForkRules, SEGMENT_BYTES_TARGET,
    SEGMENT_BYTES_TARGET_MIN, StoreConfig, TIMESTAMP_SKEW_SECONDS_DEFAULT,
    TIMESTAMP_SKEW_SECONDS_MAX,
};
#[cfg(feature = "store")]
pub use dependents::DEPENDENTS_PAGE_COUNT_MAX;
pub use error::{Error, Result};
#[cfg(feature = "store")]
pub use export::{ExportSummary, ExportWriter, ImportSummary};
pub use genesis::{
    COVENANT_TEXT, GENESIS_TIMESTAMP_MS, GenesisBlock, GenesisSpec, SHIPPED_BLOCKS_TEXT,
    parse_pinned_blocks,
};
pub use hash::{RAYON_HASH_BYTES_MIN, hash_payload};
pub use header::{
    BLOCK_HEADER_BYTES_MAX, BLOCK_PREFIX_BYTES, BlockHeader, BlockMeta, CanonicalConfig, ChainTip,
    DEPENDS_ON_COUNT_MAX, DecodedBlock, HEADER_FORMAT_VERSION, SealedHeader,
    TENSOR_METAS_COUNT_MAX, TensorMeta, canonical_config, decode_block, encode_block,
};
pub use key::{
    AuthorKey, SECRET_KEY_BYTES, SIGNATURE_BYTES, Signature, SignatureFault, eip191_hash,
};
#[cfg(feature = "store")]
pub use pol::{Admission, OfferedBlock, PolAcceptance, PolRejection};
#[cfg(feature = "store")]
pub use schema::{Relation, STORE_FORMAT_VERSION};
#[cfg(feature = "store")]
pub use segment::{PAYLOAD_ALIGN_BYTES, PayloadHandle};
#[cfg(feature = "store")]
pub use stage::{PayloadStage, SIDECAR_FORMAT_VERSION};
#[cfg(feature = "store")]
pub use store::{
    BLOCKS_PAGE_COUNT_MAX, CHAIN_DIR_NAME, ChainInfo, ChainStore, Dependent, ExpertVersion,
    StoreInfo,
};
pub use validate::Validator;
#[cfg(feature = "store")]
pub use verify::{BadBlock, NewerSegment, UnacknowledgedTail, VerifyProgress, VerifyReport};
