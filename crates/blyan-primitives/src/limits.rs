//! Limits that more than one crate enforces. Each is declared once here; a crate with a limit of
//! its own names it after what it bounds (`BLOCK_HEADER_BYTES_MAX`, `TENSOR_HEADER_BYTES_MAX`),
//! never with a name another crate uses for something else.

/// Longest tensor name, in UTF-8 bytes: in a tensor payload's table and in a block header's
/// tensor summaries, which describe the same tensors.
pub const TENSOR_NAME_BYTES_MAX: u32 = 256;

/// Most dimensions of a tensor, in a payload and in a header's summaries.
pub const TENSOR_RANK_MAX: u32 = 8;

/// Hard ceiling on one block payload (4 GiB): the largest expert the chain stores. A store's
/// configured payload limit may only lower it.
pub const BLOCK_PAYLOAD_BYTES_MAX: u64 = 4 << 30;

/// Highest proof-of-work difficulty a config may ask for, in leading zero bits of the block
/// hash. 64 bits is ~1.8e19 hashes: beyond it a chain could never grow.
pub const POW_DIFFICULTY_BITS_MAX: u32 = 64;

/// Largest layer index an expert name may carry (1024 layers).
pub const EXPERT_LAYER_INDEX_MAX: u32 = 1023;

/// Largest expert index within a layer (65 536 experts per layer).
pub const EXPERT_INDEX_MAX: u32 = 65_535;

// Tensor names are stored with a u16 length in the payload format.
const _: () = assert!(TENSOR_NAME_BYTES_MAX <= u16::MAX as u32);
// A payload's length is a u64 on disk and must also be addressable as one mapping on a 64-bit
// host; 4 GiB leaves room under every limit a u64 offset arithmetic needs.
const _: () = assert!(BLOCK_PAYLOAD_BYTES_MAX <= u32::MAX as u64 + 1);
// A block hash has 256 bits: a difficulty beyond that could never be met.
const _: () = assert!(POW_DIFFICULTY_BITS_MAX <= 256);
