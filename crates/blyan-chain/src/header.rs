//! Block headers, their canonical encoding and hash, and the encoded-block wire form.
//!
//! **Canonical encoding.** bincode 2.0.1 with exactly one configuration, [`canonical_config`]:
//! `standard().with_fixed_int_encoding().with_little_endian()`
//! `.with_limit::<BLOCK_HEADER_BYTES_MAX>()`. Integers are fixed-width little endian, `Option`
//! is a `0`/`1` byte then the value, `Vec` and `String` are a `u64` length then the items, enums
//! a `u32` variant index (chains are their ASCII letter, one byte; a tensor's dtype is its
//! one-byte [`Dtype::code`]). Field order is the struct's field order below. Decoding then
//! re-encoding gives back the same bytes (tested by proptest and by the fuzz target), so a header
//! has exactly one encoding and one hash.
//!
//! **Block hash** = blake3(canonical encoding of every header field except `signature`).
//! The signature then signs that hash (EIP-191, see [`crate::AuthorKey`]).

use std::fmt;

use bincode::config::{Configuration, Fixint, LittleEndian};
use bincode::de::Decoder;
use bincode::enc::Encoder;
use bincode::enc::write::Writer;
use bincode::error::{DecodeError, EncodeError};

use blyan_primitives::{
    Address, BlockHash, Dtype, ExpertName, PayloadHash, TENSOR_NAME_BYTES_MAX, TENSOR_RANK_MAX,
};

use crate::chain::{BlockKind, ChainId};
use crate::error::{Error, Result};
use crate::hash::hash_payload;
use crate::key::{AuthorKey, Signature};

/// The header layout this code writes and reads. A header of another version is refused with
/// [`Error::UnsupportedVersion`] before the rest of it is decoded.
///
/// Version 2: a tensor summary's dtype is the one-byte [`Dtype::code`] shared with the tensor
/// payload format (version 1 encoded a chain-local enum as a `u32` variant index).
pub const HEADER_FORMAT_VERSION: u16 = 2;

/// Largest canonical header encoding, signature included. (The tensor payload format's own
/// header has its own, larger limit; the two bound different things.)
pub const BLOCK_HEADER_BYTES_MAX: u32 = 16 * 1024;

/// Most blocks one header may list in `depends_on`.
pub const DEPENDS_ON_COUNT_MAX: u32 = 64;

/// Most tensor descriptions in a header's metadata.
pub const TENSOR_METAS_COUNT_MAX: u32 = 16;

/// Bytes an encoded header needs beyond its variable-length parts (fixed fields, option tags,
/// length prefixes, the signature), rounded up generously.
const HEADER_FIXED_BYTES_BOUND: u32 = 512;

/// Bytes of one encoded tensor summary at the limits: a `u64`-prefixed name of at most
/// [`TENSOR_NAME_BYTES_MAX`] bytes, the one-byte dtype code, a `u64`-prefixed shape of at most
/// [`TENSOR_RANK_MAX`] `u64`s.
const TENSOR_META_BYTES_MAX: u32 = 8 + TENSOR_NAME_BYTES_MAX + 1 + 8 + TENSOR_RANK_MAX * 8;

// A header at every count limit must still fit in BLOCK_HEADER_BYTES_MAX, or valid headers would
// fail to decode: each dependency is 32 bytes, each tensor summary at most
// TENSOR_META_BYTES_MAX. Tensor names and ranks are the payload format's limits
// (blyan-primitives), so a payload's tensors can always be summarised in its header.
const _: () = assert!(
    HEADER_FIXED_BYTES_BOUND
        + DEPENDS_ON_COUNT_MAX * 32
        + TENSOR_METAS_COUNT_MAX * TENSOR_META_BYTES_MAX
        <= BLOCK_HEADER_BYTES_MAX
);

/// The one bincode configuration of every canonical encoding in this crate.
pub type CanonicalConfig = Configuration<
    LittleEndian,
    Fixint,
    bincode::config::Limit<{ BLOCK_HEADER_BYTES_MAX as usize }>,
>;

/// See the module documentation: the only configuration used for hashing and storage.
pub const fn canonical_config() -> CanonicalConfig {
    bincode::config::standard()
        .with_fixed_int_encoding()
        .with_little_endian()
        .with_limit::<{ BLOCK_HEADER_BYTES_MAX as usize }>()
}

/// A summary of one tensor in the payload, so explorers and schedulers can size a block without
/// reading it. The payload's own format stays the authority on its layout.
#[derive(
    Clone,
    PartialEq,
    Eq,
    Debug,
    bincode::Encode,
    bincode::Decode,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct TensorMeta {
    /// Tensor name within the payload (`w1`, `w2`, `w3`, …); at most [`TENSOR_NAME_BYTES_MAX`].
    pub name: String,
    /// Element type, as the payload format names it.
    pub dtype: Dtype,
    /// Dimensions, outermost first; at most [`TENSOR_RANK_MAX`] of them.
    pub shape: Vec<u64>,
}

/// Typed metadata of a block. Which fields a kind requires is checked by validation:
/// an expert block names its expert (and `layer`, if set, equals the name's layer); a router
/// block names its layer; no other kind names an expert.
#[derive(
    Clone,
    PartialEq,
    Eq,
    Debug,
    Default,
    bincode::Encode,
    bincode::Decode,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct BlockMeta {
    /// The expert this block is a version of (expert blocks only).
    pub expert: Option<ExpertName>,
    /// The model layer the block belongs to, where it belongs to one.
    pub layer: Option<u32>,
    /// Version of the named thing; an expert's versions count 1, 2, 3 … in append order.
    pub version: u32,
    /// Tensors in the payload, at most [`TENSOR_METAS_COUNT_MAX`].
    pub tensors: Vec<TensorMeta>,
}

/// A block header: everything about a block but its payload bytes, which it commits to by
/// `payload_hash` and `payload_bytes`.
///
/// The header's identity is [`BlockHeader::hash`]. To author a block: build it (for instance
/// with [`BlockHeader::new_child`]), set metadata and `depends_on`, [`BlockHeader::mine`] if the
/// store wants proof of work, then [`BlockHeader::sign`] (or set `author` and get `signature`
/// from a wallet's `personal_sign` over `hash()`).
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub struct BlockHeader {
    /// Layout version, [`HEADER_FORMAT_VERSION`].
    pub format_version: u16,
    /// The chain this block extends.
    pub chain: ChainId,
    /// Height on its chain; genesis is 0, a child is its parent's height + 1.
    pub height: u64,
    /// Parent on the same chain; `None` only for genesis.
    pub prev_hash: Option<BlockHash>,
    /// Blocks on any chain this one depends on; each must already be stored.
    pub depends_on: Vec<BlockHash>,
    /// What the payload is.
    pub kind: BlockKind,
    /// blake3 of the payload.
    pub payload_hash: PayloadHash,
    /// Length of the payload.
    pub payload_bytes: u64,
    /// Milliseconds since the Unix epoch, set by the author; never earlier than the parent's
    /// or any dependency's.
    pub timestamp_ms: u64,
    /// Ethereum address of the signer.
    pub author: Address,
    /// Proof-of-work counter; only meaningful when the store requires work.
    pub pow_nonce: u64,
    /// Typed metadata.
    pub meta: BlockMeta,
    /// EIP-191 signature of `hash()` by `author`; `None` only for genesis blocks.
    pub signature: Option<Signature>,
}

/// Encodes every field but the signature: the bytes the block hash is taken over.
struct UnsignedFields<'a>(&'a BlockHeader);

impl bincode::Encode for UnsignedFields<'_> {
    fn encode<E: Encoder>(&self, encoder: &mut E) -> std::result::Result<(), EncodeError> {
        let h = self.0;
        bincode::Encode::encode(&h.format_version, encoder)?;
        bincode::Encode::encode(&h.chain, encoder)?;
        bincode::Encode::encode(&h.height, encoder)?;
        bincode::Encode::encode(&h.prev_hash, encoder)?;
        bincode::Encode::encode(&h.depends_on, encoder)?;
        bincode::Encode::encode(&h.kind, encoder)?;
        bincode::Encode::encode(&h.payload_hash, encoder)?;
        bincode::Encode::encode(&h.payload_bytes, encoder)?;
        bincode::Encode::encode(&h.timestamp_ms, encoder)?;
        bincode::Encode::encode(&h.author, encoder)?;
        bincode::Encode::encode(&h.pow_nonce, encoder)?;
        bincode::Encode::encode(&h.meta, encoder)
    }
}

impl bincode::Encode for BlockHeader {
    fn encode<E: Encoder>(&self, encoder: &mut E) -> std::result::Result<(), EncodeError> {
        UnsignedFields(self).encode(encoder)?;
        bincode::Encode::encode(&self.signature, encoder)
    }
}

impl<Context> bincode::Decode<Context> for BlockHeader {
    fn decode<D: Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> std::result::Result<Self, DecodeError> {
        Ok(Self {
            format_version: bincode::Decode::decode(decoder)?,
            chain: bincode::Decode::decode(decoder)?,
            height: bincode::Decode::decode(decoder)?,
            prev_hash: bincode::Decode::decode(decoder)?,
            depends_on: bincode::Decode::decode(decoder)?,
            kind: bincode::Decode::decode(decoder)?,
            payload_hash: bincode::Decode::decode(decoder)?,
            payload_bytes: bincode::Decode::decode(decoder)?,
            timestamp_ms: bincode::Decode::decode(decoder)?,
            author: bincode::Decode::decode(decoder)?,
            pow_nonce: bincode::Decode::decode(decoder)?,
            meta: bincode::Decode::decode(decoder)?,
            signature: bincode::Decode::decode(decoder)?,
        })
    }
}
bincode::impl_borrow_decode!(BlockHeader);

/// Feeds encoder output straight into blake3, so hashing a header allocates nothing.
struct HashWriter(blake3::Hasher);

impl Writer for HashWriter {
    fn write(&mut self, bytes: &[u8]) -> std::result::Result<(), EncodeError> {
        self.0.update(bytes);
        Ok(())
    }
}

impl BlockHeader {
    /// A child of `parent` on the parent's chain, committing to `payload`, with empty metadata,
    /// no dependencies, nonce 0, and no author or signature yet.
    pub fn new_child(
        parent: &ChainTip,
        kind: BlockKind,
        payload: &[u8],
        timestamp_ms: u64,
    ) -> Self {
        Self {
            format_version: HEADER_FORMAT_VERSION,
            chain: parent.chain,
            height: parent.height + 1,
            prev_hash: Some(parent.hash),
            depends_on: Vec::new(),
            kind,
            payload_hash: hash_payload(payload),
            payload_bytes: payload.len() as u64,
            timestamp_ms,
            author: Address::ZERO,
            pow_nonce: 0,
            meta: BlockMeta::default(),
            signature: None,
        }
    }

    /// The block hash: blake3 over the canonical encoding of all fields but `signature`.
    pub fn hash(&self) -> BlockHash {
        let mut writer = HashWriter(blake3::Hasher::new());
        bincode::encode_into_writer(UnsignedFields(self), &mut writer, canonical_config())
            .expect("encoding into a hasher cannot fail");
        BlockHash(*writer.0.finalize().as_bytes())
    }

    /// The canonical encoding, signature included; what the store keeps and the wire carries.
    pub fn encode(&self) -> Vec<u8> {
        bincode::encode_to_vec(self, canonical_config()).expect("encoding into a Vec cannot fail")
    }

    /// Decodes exactly one header from `bytes`: the version first (another version is
    /// [`Error::UnsupportedVersion`]), then the rest; trailing bytes are an error.
    pub fn decode(bytes: &[u8]) -> Result<Self> {
        if bytes.len() > BLOCK_HEADER_BYTES_MAX as usize {
            return Err(Error::LimitExceeded {
                what: "header bytes",
                got: bytes.len() as u64,
                max: u64::from(BLOCK_HEADER_BYTES_MAX),
            });
        }
        let version_bytes: [u8; 2] =
            bytes
                .get(..2)
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| Error::Decode {
                    what: "header",
                    reason: "shorter than its version".into(),
                })?;
        let version = u16::from_le_bytes(version_bytes);
        if version != HEADER_FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                got: version,
                supported: HEADER_FORMAT_VERSION,
            });
        }
        let (header, read): (Self, usize) = bincode::decode_from_slice(bytes, canonical_config())
            .map_err(|error| Error::Decode {
            what: "header",
            reason: error.to_string(),
        })?;
        if read != bytes.len() {
            return Err(Error::Decode {
                what: "header",
                reason: format!("{} trailing bytes", bytes.len() - read),
            });
        }
        Ok(header)
    }

    /// Signs the block as `key`: sets `author` to the key's address, then signs the hash.
    pub fn sign(&mut self, key: &AuthorKey) {
        self.author = key.address();
        let hash = self.hash();
        self.signature = Some(key.sign_eip191(hash.as_bytes()));
    }

    /// The address that signed this header, recovered from the signature.
    pub fn signer(&self) -> Result<Address> {
        let hash = self.hash();
        let signature = self
            .signature
            .ok_or(Error::MissingSignature { block: hash })?;
        signature
            .recover_eip191(hash.as_bytes())
            .map_err(|fault| Error::BadSignature { block: hash, fault })
    }

    /// Advances `pow_nonce` until the hash has at least `difficulty_bits` leading zero bits and
    /// clears the signature (the nonce is part of what is signed: mine first, then sign).
    /// Returns the number of hashes tried.
    pub fn mine(&mut self, difficulty_bits: u32) -> u64 {
        self.signature = None;
        let mut tries = 1;
        while self.hash().leading_zero_bits() < difficulty_bits {
            self.pow_nonce = self.pow_nonce.wrapping_add(1);
            tries += 1;
        }
        tries
    }

    /// This header with its hash, as the store and the API hand it out.
    pub fn seal(self) -> SealedHeader {
        SealedHeader {
            hash: self.hash(),
            header: self,
        }
    }
}

/// A header with its hash. JSON: the header's fields plus `"hash"`.
#[derive(Clone, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub struct SealedHeader {
    /// [`BlockHeader::hash`] of `header`.
    pub hash: BlockHash,
    /// The header.
    #[serde(flatten)]
    pub header: BlockHeader,
}

/// The newest block of a chain: what a new block's parent usually is.
#[derive(Clone, Copy, PartialEq, Eq, Debug, serde::Serialize, serde::Deserialize)]
pub struct ChainTip {
    /// The chain.
    pub chain: ChainId,
    /// Height of the tip block.
    pub height: u64,
    /// Hash of the tip block.
    pub hash: BlockHash,
}

/// Bytes before the header in an encoded block: the claimed hash, then the header length.
pub const BLOCK_PREFIX_BYTES: usize = 32 + 4;

/// Encodes a block for the wire and export files:
/// `hash (32) ‖ header length (u32 LE) ‖ canonical header ‖ payload`.
/// The hash lets a receiver check the header before trusting anything else in it.
pub fn encode_block(header: &BlockHeader, payload: &[u8]) -> Vec<u8> {
    let header_bytes = header.encode();
    let mut out = Vec::with_capacity(BLOCK_PREFIX_BYTES + header_bytes.len() + payload.len());
    out.extend_from_slice(header.hash().as_bytes());
    out.extend_from_slice(&(header_bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(&header_bytes);
    out.extend_from_slice(payload);
    out
}

/// A block decoded from its wire form; the payload borrows the input.
#[derive(Clone, PartialEq, Eq)]
pub struct DecodedBlock<'a> {
    /// The block hash, checked against the header.
    pub hash: BlockHash,
    /// The decoded header.
    pub header: BlockHeader,
    /// The payload bytes; their length equals `header.payload_bytes` (their hash is checked on
    /// append).
    pub payload: &'a [u8],
}

impl fmt::Debug for DecodedBlock<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DecodedBlock")
            .field("hash", &self.hash)
            .field("header", &self.header)
            .field("payload_bytes", &self.payload.len())
            .finish()
    }
}

/// Parses the prefix of an encoded block: claimed hash and header length.
pub(crate) fn decode_block_prefix(prefix: &[u8; BLOCK_PREFIX_BYTES]) -> Result<(BlockHash, usize)> {
    let mut claimed = [0u8; 32];
    claimed.copy_from_slice(&prefix[..32]);
    let header_len = u32::from_le_bytes([prefix[32], prefix[33], prefix[34], prefix[35]]);
    if header_len > BLOCK_HEADER_BYTES_MAX {
        return Err(Error::LimitExceeded {
            what: "header bytes",
            got: u64::from(header_len),
            max: u64::from(BLOCK_HEADER_BYTES_MAX),
        });
    }
    Ok((BlockHash(claimed), header_len as usize))
}

/// Decodes a header and checks it against the hash claimed for it.
pub(crate) fn decode_claimed_header(
    claimed: BlockHash,
    header_bytes: &[u8],
) -> Result<BlockHeader> {
    let header = BlockHeader::decode(header_bytes)?;
    let hash = header.hash();
    if hash != claimed {
        return Err(Error::HeaderHashMismatch {
            got: hash,
            expected: claimed,
        });
    }
    Ok(header)
}

/// Decodes [`encode_block`]'s form: checks the header decodes canonically, that its hash is the
/// claimed one and that exactly `payload_bytes` follow. Signature and payload hash are checked
/// by [`crate::Validator`] (which `ChainStore::append` runs).
pub fn decode_block(bytes: &[u8]) -> Result<DecodedBlock<'_>> {
    let prefix: &[u8; BLOCK_PREFIX_BYTES] = bytes
        .get(..BLOCK_PREFIX_BYTES)
        .and_then(|p| p.try_into().ok())
        .ok_or_else(|| Error::Decode {
            what: "block",
            reason: "shorter than its hash and header length".into(),
        })?;
    let (claimed, header_len) = decode_block_prefix(prefix)?;
    let header_end = BLOCK_PREFIX_BYTES + header_len;
    let header_bytes = bytes
        .get(BLOCK_PREFIX_BYTES..header_end)
        .ok_or_else(|| Error::Decode {
            what: "block",
            reason: format!("header length {header_len} runs past the end"),
        })?;
    let header = decode_claimed_header(claimed, header_bytes)?;
    let payload = &bytes[header_end..];
    if payload.len() as u64 != header.payload_bytes {
        return Err(Error::PayloadLengthMismatch {
            block: claimed,
            got: payload.len() as u64,
            expected: header.payload_bytes,
        });
    }
    Ok(DecodedBlock {
        hash: claimed,
        header,
        payload,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> BlockHeader {
        let tip = ChainTip {
            chain: ChainId::Parameters,
            height: 4,
            hash: BlockHash([3; 32]),
        };
        let mut header =
            BlockHeader::new_child(&tip, BlockKind::Expert, b"weights", 1_800_000_000_000);
        header.meta.expert = Some(ExpertName::new(1, 2).unwrap());
        header.meta.version = 1;
        header.meta.tensors.push(TensorMeta {
            name: "w1".into(),
            dtype: Dtype::BF16,
            shape: vec![64, 128],
        });
        header.depends_on.push(BlockHash([9; 32]));
        header
    }

    #[test]
    fn signature_is_not_hashed() {
        let mut header = sample();
        let unsigned = header.hash();
        header.sign(&AuthorKey::generate());
        let author_set = {
            let mut copy = header.clone();
            copy.signature = None;
            copy.hash()
        };
        assert_eq!(header.hash(), author_set);
        assert_ne!(unsigned, author_set, "the author is part of the hash");
        assert_eq!(header.signer().unwrap(), header.author);
    }

    #[test]
    fn encoding_round_trips_and_rejects_trailing_bytes() {
        let mut header = sample();
        header.sign(&AuthorKey::generate());
        let bytes = header.encode();
        assert_eq!(BlockHeader::decode(&bytes).unwrap(), header);
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(
            BlockHeader::decode(&longer),
            Err(Error::Decode { .. })
        ));
    }

    #[test]
    fn other_versions_are_refused_before_decoding() {
        let mut bytes = sample().encode();
        bytes[..2].copy_from_slice(&1u16.to_le_bytes());
        assert!(matches!(
            BlockHeader::decode(&bytes),
            Err(Error::UnsupportedVersion {
                got: 1,
                supported: HEADER_FORMAT_VERSION
            })
        ));
    }

    #[test]
    fn mining_reaches_the_difficulty() {
        let mut header = sample();
        header.mine(8);
        assert!(header.hash().leading_zero_bits() >= 8);
        assert!(header.signature.is_none());
    }

    #[test]
    fn block_wire_form_round_trips_and_checks_its_hash() {
        let mut header = sample();
        header.sign(&AuthorKey::generate());
        let bytes = encode_block(&header, b"weights");
        let decoded = decode_block(&bytes).unwrap();
        assert_eq!(decoded.header, header);
        assert_eq!(decoded.payload, b"weights");

        let mut wrong_hash = bytes.clone();
        wrong_hash[0] ^= 1;
        assert!(matches!(
            decode_block(&wrong_hash),
            Err(Error::HeaderHashMismatch { .. })
        ));

        let short = &bytes[..bytes.len() - 1];
        assert!(matches!(
            decode_block(short),
            Err(Error::PayloadLengthMismatch { .. })
        ));
    }

    #[test]
    fn json_carries_hash_and_readable_fields() {
        let mut header = sample();
        header.sign(&AuthorKey::generate());
        let sealed = header.clone().seal();
        let json = serde_json::to_value(&sealed).unwrap();
        assert_eq!(json["hash"], sealed.hash.to_string());
        assert_eq!(json["chain"], "B");
        assert_eq!(json["kind"], "expert");
        assert_eq!(json["meta"]["expert"], "layer1.expert2");
        let back: SealedHeader = serde_json::from_value(json).unwrap();
        assert_eq!(back, sealed);
    }
}
