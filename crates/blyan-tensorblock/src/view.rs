//! Zero-copy: libtorch tensors over a payload's bytes, each keeping the payload alive.
//!
//! The zero-copy contract lives here, and with it this crate's `unsafe` (besides `cuda.rs`'s
//! `dlopen`). What it keeps:
//! - only owners implementing [`ImmutableBytes`] are viewed: bytes that stay put and that no
//!   write changes while the owner lives, in a read-only mapping (or heap bytes whose owner
//!   promised, through the `unsafe` [`blyan_primitives::AssumeImmutable::new`], that no in-place
//!   operation touches the tensors);
//! - a tensor's data pointer and extent come from one `as_ref()` of the owner, checked against
//!   the parsed layout and against that very slice, aligned for the dtype;
//! - the tensor's storage holds a clone of the owner's `Arc`, released by libtorch when the
//!   storage dies: after the last tensor, view (`t()`, `narrow`, `reshape`) or shallow clone
//!   that shares it. So no tensor can outlive the bytes, whatever the caller does with it.
#![allow(unsafe_code)]

use std::ffi::{CStr, c_char, c_void};
use std::sync::Arc;

use blyan_primitives::{Dtype, ImmutableBytes};
use tch::{Kind, Tensor};

use crate::error::{Error, Region, Result};
use crate::format::{ByteRange, Quantization, TensorInfo};
use crate::int8::Int8Weight;
use crate::layout::BlockLayout;

#[cfg(target_endian = "big")]
compile_error!(
    "tensor blocks are little-endian and are viewed in place: big-endian hosts are not supported"
);

/// Longest libtorch error message kept from the shim.
const SHIM_ERROR_BYTES_MAX: usize = 512;

unsafe extern "C" {
    // src/shim/from_blob.cpp. Returns a heap `at::Tensor*` or null with a message in `error`.
    // Takes ownership of `ctx`: `release(ctx)` runs exactly once, on success when libtorch frees
    // the storage, on failure before the call returns.
    fn blyan_tensor_from_blob_with_deleter(
        data: *mut c_void,
        sizes: *const i64,
        strides: *const i64,
        rank: i64,
        dtype: i32,
        release: unsafe extern "C" fn(*mut c_void),
        ctx: *mut c_void,
        error: *mut c_char,
        error_bytes: usize,
    ) -> *mut torch_sys::C_tensor;
}

/// The libtorch kind of a stored dtype. Every dtype of this build has one; `None` is for a
/// dtype a newer `blyan-primitives` may add (the enum is non-exhaustive).
pub fn kind_of(dtype: Dtype) -> Option<Kind> {
    match dtype {
        Dtype::F32 => Some(Kind::Float),
        Dtype::F16 => Some(Kind::Half),
        Dtype::BF16 => Some(Kind::BFloat16),
        Dtype::I8 => Some(Kind::Int8),
        _ => None,
    }
}

/// The stored dtype of a libtorch kind, if the format has one.
pub fn dtype_of(kind: Kind) -> Option<Dtype> {
    match kind {
        Kind::Float => Some(Dtype::F32),
        Kind::Half => Some(Dtype::F16),
        Kind::BFloat16 => Some(Dtype::BF16),
        Kind::Int8 => Some(Dtype::I8),
        _ => None,
    }
}

/// A parsed tensor block over an owner of its bytes, handing out tensors that borrow them.
///
/// The owner is an [`ImmutableBytes`]: the chain's `PayloadHandle` or a `memmap2::Mmap` (both
/// read-only file mappings). [`TensorBlock::tensor`] copies nothing: the tensor's data pointer
/// lies inside the owner's bytes, and its storage holds an `Arc` of the owner, so the bytes stay
/// mapped for as long as the tensor, or any view or shallow clone made from it, is alive
/// (dropping the `TensorBlock` first is fine).
///
/// **Read-only, in the types.** The tensors alias bytes that the block's hash covers and that
/// other tensors may share, and libtorch has no read-only tensor: an in-place operation on them
/// or on a view of them (`add_`, `copy_`, `fill_`, `set_data`, an optimizer step) writes through
/// the data pointer. So the safe constructors take only owners whose bytes lie in a read-only
/// mapping, where such a write faults (SIGSEGV) instead of changing the block; the integration
/// tests kill a child process that way, over a `memmap2::Mmap` and over a chain payload, and
/// check the file's bytes did not change. Heap bytes, which nothing protects, need the `unsafe`
/// [`AssumeImmutable::new`](blyan_primitives::AssumeImmutable::new), whose caller promises that
/// no in-place operation ever touches the tensors. Use [`TensorBlock::load_f32`] for a writable
/// copy. The tensors are handed out with `requires_grad = false`, and libtorch refuses to resize
/// their storage.
///
/// A heap `Vec` is refused at compile time:
/// ```compile_fail,E0277
/// # use blyan_tensorblock::TensorBlock;
/// let block = TensorBlock::new(vec![0u8; 64]); // `Vec<u8>` is not `ImmutableBytes`
/// ```
/// and needs the promise, in an `unsafe` block:
/// ```
/// # use blyan_tensorblock::{AssumeImmutable, TensorBlock};
/// # let bytes = blyan_tensorblock::encode_raw_to_vec(&[])?;
/// // SAFETY: no in-place operation is applied to a tensor of this block.
/// let block = TensorBlock::new(unsafe { AssumeImmutable::new(bytes) })?;
/// # Ok::<(), blyan_tensorblock::Error>(())
/// ```
#[derive(Debug)]
pub struct TensorBlock<B> {
    owner: Arc<B>,
    layout: BlockLayout,
}

impl<B: ImmutableBytes> TensorBlock<B> {
    /// Parses the owner's bytes (header, table, names, scales; never the tensor data).
    pub fn new(owner: B) -> Result<Self> {
        Self::from_arc(Arc::new(owner))
    }

    /// Like [`TensorBlock::new`], for an owner already shared.
    pub fn from_arc(owner: Arc<B>) -> Result<Self> {
        let layout = BlockLayout::parse(bytes_of(&owner))?;
        Ok(Self { owner, layout })
    }

    /// The parsed header.
    pub fn layout(&self) -> &BlockLayout {
        &self.layout
    }

    /// The owner of the bytes.
    pub fn owner(&self) -> &Arc<B> {
        &self.owner
    }

    /// The whole payload.
    pub fn bytes(&self) -> &[u8] {
        bytes_of(&self.owner)
    }

    /// The stored tensor, without a copy: f32/f16/bf16 as stored, and the i8 codes of a
    /// quantized tensor (see [`TensorBlock::int8`] for its scales). Read-only by contract.
    pub fn tensor(&self, name: &str) -> Result<Tensor> {
        let info = self.layout.require(name)?;
        self.borrowed(info, Region::Data, info.data(), info.dtype(), info.shape())
    }

    /// The f32 scales `[rows]` of a quantized tensor, without a copy. Read-only by contract.
    pub fn scales(&self, name: &str) -> Result<Tensor> {
        let info = self.layout.require(name)?;
        let (Some(range), Some(rows)) = (info.scales(), info.scale_count()) else {
            return Err(wrong_quantization(info, Quantization::Int8PerChannel));
        };
        self.borrowed(info, Region::Scales, range, Dtype::F32, &[rows])
    }

    /// A quantized weight's codes and scales, both without a copy, ready for
    /// [`Int8Weight::linear`] or [`Int8Weight::dequantize`].
    pub fn int8(&self, name: &str) -> Result<Int8Weight> {
        let info = self.layout.require(name)?;
        if info.quantization() != Quantization::Int8PerChannel {
            return Err(wrong_quantization(info, Quantization::Int8PerChannel));
        }
        Int8Weight::from_parts(self.tensor(name)?, self.scales(name)?)
    }

    /// A new, writable f32 tensor with the tensor's values: dequantized if INT8, converted if
    /// f16/bf16, copied if f32. A copy by nature (for training, or for kernels that need f32).
    pub fn load_f32(&self, name: &str) -> Result<Tensor> {
        let info = self.layout.require(name)?;
        match info.quantization() {
            Quantization::Int8PerChannel => self.int8(name)?.dequantize(),
            Quantization::None => Ok(self.tensor(name)?.f_to_dtype(Kind::Float, false, true)?),
        }
    }

    fn borrowed(
        &self,
        info: &TensorInfo,
        region: Region,
        range: ByteRange,
        dtype: Dtype,
        shape: &[u64],
    ) -> Result<Tensor> {
        // One `as_ref()`: the pointer, the bounds check and the alignment check all use it.
        let payload = bytes_of(&self.owner);
        let Some(bytes) = range.as_usize_range().and_then(|range| payload.get(range)) else {
            // Unreachable for an owner that returns the same bytes every time (the layout was
            // parsed from them); a typed error, not a wild pointer, for one that does not.
            return Err(Error::RegionOutOfBounds {
                tensor: info.name().to_owned(),
                region,
                offset: range.offset,
                bytes: range.bytes,
                data_start: self.layout.data_start(),
                payload_bytes: payload.len() as u64,
            });
        };
        let address = bytes.as_ptr() as usize;
        let required = dtype.size_bytes() as usize;
        if !address.is_multiple_of(required) {
            return Err(Error::UnalignedOwner {
                tensor: info.name().to_owned(),
                address,
                required,
            });
        }
        let overflow = || Error::ElementCountOverflow {
            tensor: info.name().to_owned(),
            shape: shape.to_vec(),
        };
        let sizes = shape
            .iter()
            .map(|dim| i64::try_from(*dim).map_err(|_| overflow()))
            .collect::<Result<Vec<i64>>>()?;
        let strides = contiguous_strides(&sizes).ok_or_else(overflow)?;
        let rank = i64::try_from(sizes.len()).map_err(|_| overflow())?;

        let ctx = Box::into_raw(Box::new(Arc::clone(&self.owner))).cast::<c_void>();
        let mut error = [0 as c_char; SHIM_ERROR_BYTES_MAX];
        // SAFETY:
        // - `bytes` is `range` of the owner's payload, checked in bounds just above, and holds
        //   exactly `Π sizes × dtype size` bytes: the layout checked the length against shape
        //   and dtype (`LengthMismatch`), and `contiguous_strides` gives the dense row-major
        //   strides of those sizes, so libtorch never addresses a byte outside `bytes`.
        // - The address is aligned for the element type (checked above).
        // - The bytes stay valid and unchanged for as long as libtorch may read them: `ctx` is a
        //   boxed clone of the owner's `Arc`, and the shim hands it to the storage's deleter,
        //   which libtorch runs only when the storage dies, i.e. after every tensor, view and
        //   shallow clone sharing it is gone. The `Arc` keeps `B` alive, and `B: ImmutableBytes`
        //   promises its bytes keep their address and contents while it lives (clause 1) and
        //   that nobody writes them (clause 2). `B: Send + Sync` because the deleter may run on
        //   any thread.
        // - libtorch itself never writes through the pointer (`*mut` only because `from_blob`
        //   takes one); the storage is created non-resizable, so libtorch never frees or
        //   reallocates it. A caller's in-place op would write: `ImmutableBytes` clause 3 makes
        //   that a fault in a read-only mapping, or `AssumeImmutable::new`'s caller promised it
        //   never happens. Either way no byte Rust treats as immutable is changed.
        // - `release_owner::<B>` matches the type boxed in `ctx`, and the shim calls it exactly
        //   once on every path, so `ctx` is neither leaked nor freed twice; it is not used here
        //   after the call.
        // - `sizes` and `strides` hold `rank` values each and outlive the call; `error` holds
        //   `SHIM_ERROR_BYTES_MAX` bytes and the shim NUL-terminates what it writes there.
        let raw = unsafe {
            blyan_tensor_from_blob_with_deleter(
                bytes.as_ptr().cast_mut().cast::<c_void>(),
                sizes.as_ptr(),
                strides.as_ptr(),
                rank,
                i32::from(dtype.code()),
                release_owner::<B>,
                ctx,
                error.as_mut_ptr(),
                error.len(),
            )
        };
        if raw.is_null() {
            // SAFETY: the shim wrote a NUL-terminated string into `error` (or left it zeroed,
            // an empty string); the buffer's last byte is always NUL.
            let message = unsafe { CStr::from_ptr(error.as_ptr()) }
                .to_string_lossy()
                .into_owned();
            return Err(Error::FromBlob {
                tensor: info.name().to_owned(),
                message,
            });
        }
        // SAFETY: `raw` is a non-null `at::Tensor*` allocated with `new` by the shim and owned by
        // no one else; `tch::Tensor` takes ownership and frees it with `delete` (`at_free`).
        Ok(unsafe { Tensor::from_ptr(raw) })
    }
}

/// The deleter the shim attaches to a borrowed tensor's storage.
///
/// # Safety
/// `ctx` must come from `Box::into_raw(Box::new(Arc<B>))`, and this must run once per `ctx`.
unsafe extern "C" fn release_owner<B>(ctx: *mut c_void) {
    // SAFETY: per this function's contract, which `TensorBlock::borrowed` and the shim keep.
    drop(unsafe { Box::from_raw(ctx.cast::<Arc<B>>()) });
}

fn bytes_of<B: AsRef<[u8]>>(owner: &Arc<B>) -> &[u8] {
    AsRef::<[u8]>::as_ref(&**owner)
}

/// Dense row-major strides (in elements), `None` on overflow.
fn contiguous_strides(sizes: &[i64]) -> Option<Vec<i64>> {
    let mut strides = vec![0i64; sizes.len()];
    let mut stride: i64 = 1;
    for (size, slot) in sizes.iter().zip(strides.iter_mut()).rev() {
        *slot = stride;
        stride = stride.checked_mul((*size).max(1))?;
    }
    Some(strides)
}

fn wrong_quantization(info: &TensorInfo, expected: Quantization) -> Error {
    Error::WrongQuantization {
        tensor: info.name().to_owned(),
        expected: expected.describe(),
        found: info.quantization().describe(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strides_are_row_major_and_skip_zero_dims() {
        assert_eq!(contiguous_strides(&[2, 3, 4]), Some(vec![12, 4, 1]));
        assert_eq!(contiguous_strides(&[0, 3]), Some(vec![3, 1]));
        assert_eq!(contiguous_strides(&[]), Some(vec![]));
        assert_eq!(contiguous_strides(&[i64::MAX, 2]), None);
    }

    #[test]
    fn kinds_and_dtypes_map_both_ways() {
        for dtype in Dtype::ALL {
            let kind = kind_of(dtype).expect("every dtype has a kind");
            assert_eq!(dtype_of(kind), Some(dtype));
            assert_eq!(kind.elt_size_in_bytes() as u64, dtype.size_bytes());
        }
        assert_eq!(dtype_of(Kind::Double), None);
    }
}
