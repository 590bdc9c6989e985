//! Every rule a block must pass, in one place. This module: the checks that need no store (a
//! header on its own, a payload against its header). `links.rs` (feature `store`): the checks
//! against the blocks already stored (parent, height, timestamps, fork rule, dependencies,
//! expert versions), which the store runs under its append lock. Full verification re-checks
//! stored blocks by the same rules.

#[cfg(feature = "store")]
mod links;

use blyan_primitives::{BlockHash, TENSOR_NAME_BYTES_MAX, TENSOR_RANK_MAX};

use crate::chain::{BlockKind, ChainId};
use crate::config::StoreConfig;
use crate::error::{Error, Result};
use crate::genesis::GenesisSpec;
use crate::hash::hash_payload;
use crate::header::{
    BLOCK_HEADER_BYTES_MAX, BlockHeader, DEPENDS_ON_COUNT_MAX, HEADER_FORMAT_VERSION,
    TENSOR_METAS_COUNT_MAX, canonical_config,
};

/// The block rules of one store, made from its config and its genesis hashes. The stateless
/// checks ([`Validator::check_header`], [`Validator::check_payload`]) need no store: the API and
/// the fuzz target use them so. The checks against stored blocks are run by the store itself,
/// under its append lock. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Validator {
    config: StoreConfig,
    genesis: [BlockHash; ChainId::ALL.len()],
    /// Sorted: blocks trusted by their hash ([`GenesisSpec::pinned`]).
    pinned: std::sync::Arc<[BlockHash]>,
}

impl Validator {
    /// Rules for `config` (checked) and the genesis made from `genesis`.
    pub fn new(config: StoreConfig, genesis: &GenesisSpec) -> Result<Self> {
        config.check()?;
        let mut pinned = genesis.pinned.to_vec();
        pinned.sort_unstable();
        pinned.dedup();
        Ok(Self {
            config,
            genesis: genesis.hashes(),
            pinned: pinned.into(),
        })
    }

    /// The config these rules enforce.
    pub fn config(&self) -> &StoreConfig {
        &self.config
    }

    /// Whether `block` is trusted by its hash alone ([`GenesisSpec::pinned`]).
    pub fn is_pinned(&self, block: &BlockHash) -> bool {
        self.pinned.binary_search(block).is_ok()
    }

    /// The expected genesis hash of `chain`.
    pub fn genesis_hash(&self, chain: ChainId) -> BlockHash {
        self.genesis[chain.index()]
    }

    /// Refuses `header` (whose hash is `block`) when it is stamped more than the config's
    /// [`StoreConfig::timestamp_skew_seconds_max`] ahead of `now_ms` (this node's clock, ms since
    /// the Unix epoch): [`Error::TimestampInFuture`]. Kept apart from
    /// [`Validator::check_header`] so that verifying stored blocks never depends on the clock;
    /// every append runs it.
    pub fn check_clock(&self, block: BlockHash, header: &BlockHeader, now_ms: u64) -> Result<()> {
        let skew_seconds_max = self.config.timestamp_skew_seconds_max;
        let latest_ms = now_ms.saturating_add(skew_seconds_max.saturating_mul(1000));
        if header.timestamp_ms > latest_ms {
            return Err(Error::TimestampInFuture {
                block,
                timestamp_ms: header.timestamp_ms,
                now_ms,
                skew_seconds_max,
            });
        }
        Ok(())
    }

    /// Checks everything about `header` that needs neither the store nor the payload, and
    /// returns its hash. Cheap checks come first; signature recovery (~0.2 ms) last.
    pub fn check_header(&self, header: &BlockHeader) -> Result<BlockHash> {
        if header.format_version != HEADER_FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                got: header.format_version,
                supported: HEADER_FORMAT_VERSION,
            });
        }
        let block = header.hash();
        let encoded_bytes = encoded_len(header);
        if encoded_bytes > u64::from(BLOCK_HEADER_BYTES_MAX) {
            return Err(Error::LimitExceeded {
                what: "header bytes",
                got: encoded_bytes,
                max: u64::from(BLOCK_HEADER_BYTES_MAX),
            });
        }
        if !header.chain.allows(header.kind) {
            return Err(Error::KindNotAllowed {
                block,
                chain: header.chain,
                kind: header.kind,
            });
        }
        let is_genesis = header.kind == BlockKind::Genesis;
        if is_genesis != (header.height == 0) || is_genesis != header.prev_hash.is_none() {
            return Err(Error::GenesisPlacement {
                block,
                kind: header.kind,
                height: header.height,
                has_parent: header.prev_hash.is_some(),
            });
        }
        check_dependencies(block, header)?;
        check_meta(block, header)?;
        if header.payload_bytes > self.config.payload_bytes_max {
            return Err(Error::PayloadTooLarge {
                block,
                bytes: header.payload_bytes,
                max: self.config.payload_bytes_max,
            });
        }
        if is_genesis {
            // Genesis blocks are fixed by the covenant, not signed: equality is the whole check.
            let expected = self.genesis_hash(header.chain);
            if block != expected {
                return Err(Error::GenesisMismatch {
                    chain: header.chain,
                    got: block,
                    expected,
                });
            }
            return Ok(block);
        }
        if header.signature.is_none()
            && header.author == blyan_primitives::Address::ZERO
            && self.is_pinned(&block)
        {
            // A pinned block (the shipped model) is trusted as genesis is: by its hash, which
            // commits every field and the payload's hash. It carries no signature and no work.
            return Ok(block);
        }
        let difficulty_bits = self.config.pow_difficulty_bits;
        if difficulty_bits > 0 && block.leading_zero_bits() < difficulty_bits {
            return Err(Error::InsufficientWork {
                block,
                leading_zero_bits: block.leading_zero_bits(),
                difficulty_bits,
            });
        }
        let signature = header.signature.ok_or(Error::MissingSignature { block })?;
        let signer = signature
            .recover_eip191(block.as_bytes())
            .map_err(|fault| Error::BadSignature { block, fault })?;
        if signer != header.author {
            return Err(Error::WrongSigner {
                block,
                author: header.author,
                signer,
            });
        }
        Ok(block)
    }

    /// Checks `payload` is exactly what `header` (whose hash is `block`) commits to.
    pub fn check_payload(
        &self,
        block: BlockHash,
        header: &BlockHeader,
        payload: &[u8],
    ) -> Result<()> {
        if payload.len() as u64 != header.payload_bytes {
            return Err(Error::PayloadLengthMismatch {
                block,
                got: payload.len() as u64,
                expected: header.payload_bytes,
            });
        }
        let got = hash_payload(payload);
        if got != header.payload_hash {
            return Err(Error::PayloadHashMismatch {
                block,
                got,
                expected: header.payload_hash,
            });
        }
        Ok(())
    }
}

/// This machine's clock, in milliseconds since the Unix epoch (0 for a clock set before it).
#[cfg(feature = "store")]
pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            u64::try_from(since.as_millis()).unwrap_or(u64::MAX)
        })
}

fn encoded_len(header: &BlockHeader) -> u64 {
    let mut counter = bincode::enc::write::SizeWriter::default();
    bincode::encode_into_writer(header, &mut counter, canonical_config())
        .expect("counting encoded bytes cannot fail");
    counter.bytes_written as u64
}

fn check_dependencies(block: BlockHash, header: &BlockHeader) -> Result<()> {
    let count = header.depends_on.len() as u64;
    if count > u64::from(DEPENDS_ON_COUNT_MAX) {
        return Err(Error::TooManyDependencies {
            block,
            count,
            max: DEPENDS_ON_COUNT_MAX,
        });
    }
    for (index, dependency) in header.depends_on.iter().enumerate() {
        if header.depends_on[..index].contains(dependency) {
            return Err(Error::DuplicateDependency {
                block,
                dependency: *dependency,
            });
        }
    }
    Ok(())
}

fn check_meta(block: BlockHash, header: &BlockHeader) -> Result<()> {
    let meta = &header.meta;
    let invalid = |reason: &'static str| Error::MetaInvalid {
        block,
        kind: header.kind,
        reason,
    };
    if meta.tensors.len() as u64 > u64::from(TENSOR_METAS_COUNT_MAX) {
        return Err(invalid("more tensors than TENSOR_METAS_COUNT_MAX"));
    }
    for tensor in &meta.tensors {
        if tensor.name.is_empty() || tensor.name.len() as u64 > u64::from(TENSOR_NAME_BYTES_MAX) {
            return Err(invalid(
                "tensor name empty or longer than TENSOR_NAME_BYTES_MAX",
            ));
        }
        if tensor.shape.len() as u64 > u64::from(TENSOR_RANK_MAX) {
            return Err(invalid("tensor rank above TENSOR_RANK_MAX"));
        }
    }
    match header.kind {
        BlockKind::Expert => {
            let expert = meta
                .expert
                .ok_or_else(|| invalid("an expert block must name its expert"))?;
            if meta.layer.is_some_and(|layer| layer != expert.layer()) {
                return Err(invalid("layer differs from the expert name's layer"));
            }
            if meta.version == 0 {
                return Err(invalid("expert versions start at 1"));
            }
        }
        BlockKind::Router => {
            if meta.layer.is_none() {
                return Err(invalid("a router block must name its layer"));
            }
            if meta.expert.is_some() {
                return Err(invalid("only expert blocks name an expert"));
            }
        }
        _ => {
            if meta.expert.is_some() {
                return Err(invalid("only expert blocks name an expert"));
            }
        }
    }
    Ok(())
}
