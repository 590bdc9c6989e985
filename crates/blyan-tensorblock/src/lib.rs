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
//! non-negative scales, unique names). Tensors from a [`TensorBlock`] are read-only, and the
//! compiler holds the caller to it: the safe constructors take only owners implementing
//! [`ImmutableBytes`] (the chain's mapped payload handle, `memmap2::Mmap`), whose bytes lie in a
//! read-only mapping where a write through a tensor faults instead of changing the block. Heap
//! bytes get there only through the `unsafe` [`AssumeImmutable::new`], whose caller promises no
//! in-place operation ever touches the tensors.
//!
//! It depends on no other Blyan crate but `blyan-primitives`, for [`Dtype`], the limits a block
//! header's tensor summaries share with this format ([`TENSOR_NAME_BYTES_MAX`],
//! [`TENSOR_RANK_MAX`]) and [`ImmutableBytes`]. Without the default `tch` feature the crate is
//! the pure format (parser, writer, INT8 arithmetic), with no libtorch; that is what the fuzz
//! target builds.
//!
//! Where unsafe lives: the crate denies `unsafe_code`; two modules allow it. `view.rs` makes
//! tensors over a payload's bytes (`at::from_blob` through the C++ shim, the deleter that
//! releases the owner) and `cuda.rs` opens libtorch's CUDA backend with `dlopen`. Each block
//! there carries its `// SAFETY:` argument.
//!
//! ## libtorch
//! The `tch` feature links libtorch through `tch` and `torch-sys` 0.24, which are built for
//! libtorch **2.11.0** exactly (torch-sys refuses another version unless
//! `LIBTORCH_BYPASS_VERSION_CHECK` is set). torch-sys finds it at build time: `LIBTORCH` names an
//! unpacked libtorch (or `LIBTORCH_LIB` and `LIBTORCH_INCLUDE` its two halves), or
//! `LIBTORCH_USE_PYTORCH=1` takes the one inside the active Python's `torch==2.11.0` wheel (what
//! this repository's `scripts/env.sh` does). This crate's build script compiles a few lines of
//! C++ against libtorch's headers (a C++17 compiler; `LIBTORCH_CXX11_ABI`, default 1, must match
//! libtorch's ABI, as for torch-sys).
//!
//! Link arguments do not reach dependents, so a downstream binary must itself tell the dynamic
//! loader where `libtorch_cpu.so` and `libc10.so` are. Either depend on `torch-sys` (`=0.24.0`)
//! and embed the directory it linked as an rpath from the binary package's build script, as
//! every libtorch package of this repository does:
//!
//! ```ignore
//! // build.rs of the binary's package; torch-sys must be a direct dependency for
//! // DEP_TCH_LIBTORCH_LIB to be set.
//! fn main() {
//!     println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
//!     if let Ok(dir) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
//!         println!("cargo:rustc-link-arg=-Wl,-rpath,{dir}");
//!     }
//! }
//! ```
//!
//! or run it with `LD_LIBRARY_PATH` set to libtorch's `lib/` directory, or ship the libraries
//! beside it with an `$ORIGIN` rpath (this repository's `scripts/install.sh`). The GPU backend
//! is found the same way: [`load_cuda_backend`] opens `libtorch_cuda.so` by name. Without the
//! `tch` feature nothing of libtorch is needed.
//!
//! Start reading from [`TensorBlock`] (the zero-copy view), [`BlockLayout`] (the parsed header),
//! [`BlockWriter`] (the streaming encoder) and [`Int8Weight`].
//!
//! ```
//! # #[cfg(feature = "tch")] {
//! use blyan_tensorblock::{AssumeImmutable, EncodeTensor, TensorBlock, encode_tensors_to_vec};
//! use tch::{Kind, Tensor};
//!
//! let w1 = Tensor::randn([8, 4], (Kind::Float, tch::Device::Cpu));
//! let w2 = Tensor::randn([4, 8], (Kind::Float, tch::Device::Cpu));
//! let bytes = encode_tensors_to_vec(&[EncodeTensor::as_is("w1", &w1), EncodeTensor::int8("w2", &w2)])?;
//!
//! // The payload's owner: on a node the chain's mapped payload handle. Here a heap `Vec`, which
//! // only an `unsafe` promise lets in:
//! // SAFETY: no in-place operation is applied to a tensor of this block.
//! let owner = unsafe { AssumeImmutable::new(bytes) };
//! let block = TensorBlock::new(owner)?;
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
#![cfg_attr(not(test), warn(unused_crate_dependencies))]
#![deny(unsafe_code)]

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

pub use blyan_primitives::{
    AssumeImmutable, Dtype, ImmutableBytes, TENSOR_NAME_BYTES_MAX, TENSOR_RANK_MAX,
};
pub use error::{Error, Region, Result};
pub use format::{
    ByteRange, DATA_ALIGNMENT_BYTES, FORMAT_VERSION, MAGIC, PREAMBLE_BYTES, Quantization,
    TABLE_ENTRY_BYTES, TENSOR_COUNT_MAX, TENSOR_HEADER_BYTES_MAX, TensorInfo, TensorSpec,
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
