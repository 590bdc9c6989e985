//! Expert weights as self-describing payloads, viewed as libtorch tensors without a copy.
//!
//! A *tensor block* is the payload of a parameter block on the chain: a small header (magic,
//! format version, a table of named tensors with dtype, shape, byte range and quantization),
//! then each tensor's bytes at a 64-byte-aligned offset, little-endian. One block holds one
//! expert's `w1`/`w2`/`w3`, or any set of named tensors. The format is specified in
//! `docs/tensorblock-format.md`.
//!
//! This crate owns that format and the path from a payload's bytes to `tch::Tensor`s:
//! - the parser ([`BlockLayout::parse`]) checks every offset, length and product against the
//!   payload before any pointer is formed, never panics on any input, and touches only the
//!   header (and the scales of quantized tensors), so its cost does not grow with the payload;
//! - the view ([`TensorBlock`]) hands out tensors whose data pointer lies inside the payload,
//!   and whose storage holds an `Arc` of the payload's owner: no tensor, view or shallow clone
//!   can outlive the bytes;
//! - the writer ([`BlockWriter`], [`encode_tensors`], [`encode_raw`]) streams a block into any
//!   `io::Write`, so a large expert is never held twice;
//! - INT8 per-output-channel symmetric quantization ([`Int8Weight`],
//!   [`quantize_int8_per_channel`]): dequantized on load ([`TensorBlock::load_f32`], the fast
//!   path on CPU), or computed on directly ([`Int8Weight::linear`], a quarter of the memory).
//!
//! It also loads libtorch's CUDA backend on demand ([`load_cuda_backend`]), so processes that
//! never use a GPU do not pay for it at start.
//!
//! Invariants: a [`BlockLayout`] exists only for bytes that satisfy every rule of the format
//! (regions in bounds, aligned, non-overlapping, lengths equal to shape × dtype size, finite
//! non-negative scales, unique names); tensors from a [`TensorBlock`] are read-only by contract
//! (see its documentation for what enforces it).
//!
//! It depends on no other Blyan crate: the chain's payload handle, a `memmap2::Mmap` and a
//! `Vec<u8>` are all just owners of bytes (`AsRef<[u8]> + Send + Sync + 'static`). Without the
//! default `tch` feature the crate is the pure format (parser, writer, INT8 arithmetic), with no
//! libtorch; that is what the fuzz target builds.
//!
//! Start reading from [`TensorBlock`] (the zero-copy view), [`BlockLayout`] (the parsed header),
//! [`BlockWriter`] (the streaming encoder) and [`Int8Weight`].
//!
//! ```
//! # #[cfg(feature = "tch")] {
//! use blyan_tensorblock::{EncodeTensor, TensorBlock, encode_tensors_to_vec};
//! use tch::{Kind, Tensor};
//!
//! let w1 = Tensor::randn([8, 4], (Kind::Float, tch::Device::Cpu));
//! let w2 = Tensor::randn([4, 8], (Kind::Float, tch::Device::Cpu));
//! let bytes = encode_tensors_to_vec(&[EncodeTensor::as_is("w1", &w1), EncodeTensor::int8("w2", &w2)])?;
//!
//! // The payload's owner: here a Vec, on a node the chain's mapped payload handle.
//! let block = TensorBlock::new(bytes)?;
//! let view = block.tensor("w1")?; // no copy: points into the block's bytes
//! assert!(view.equal(&w1));
//! let x = Tensor::randn([2, 8], (Kind::Float, tch::Device::Cpu));
//! let y = block.int8("w2")?.linear(&x)?; // x @ w2ᵀ on the INT8 codes
//! assert_eq!(y.size(), [2, 4]);
//! drop(block); // the tensors keep the bytes alive
//! assert_eq!(view.size(), [8, 4]);
//! # }
//! # Ok::<(), blyan_tensorblock::Error>(())
//! ```

mod error;
mod format;
mod layout;
mod quant;
mod writer;

#[cfg(feature = "tch")]
mod cuda;
#[cfg(feature = "tch")]
mod encode;
#[cfg(feature = "tch")]
mod int8;
#[cfg(feature = "tch")]
mod view;

pub use error::{Error, Region, Result};
pub use format::{
    ByteRange, DATA_ALIGNMENT_BYTES, Dtype, FORMAT_VERSION, HEADER_BYTES_MAX, MAGIC,
    PREAMBLE_BYTES, Quantization, TABLE_ENTRY_BYTES, TENSOR_COUNT_MAX, TENSOR_NAME_BYTES_MAX,
    TENSOR_RANK_MAX, TensorInfo, TensorSpec,
};
pub use layout::{BlockLayout, BlockRef};
pub use quant::{
    INT8_CODE_MAX, Int8Matrix, dequantize_int8_per_channel, quantize_int8_per_channel, quantize_row,
};
pub use writer::{BlockWriter, RawTensor, encode_raw, encode_raw_to_vec};

#[cfg(feature = "tch")]
pub use cuda::{CUDA_BACKEND_LIBRARY, load_cuda_backend};
#[cfg(feature = "tch")]
pub use encode::{
    ENCODE_CHUNK_BYTES, EncodeTensor, Encoding, encode_tensors, encode_tensors_to_vec,
};
#[cfg(feature = "tch")]
pub use int8::Int8Weight;
#[cfg(feature = "tch")]
pub use view::{TensorBlock, dtype_of, kind_of};
