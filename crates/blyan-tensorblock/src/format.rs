//! The format's vocabulary: limits, quantization schemes, and what a tensor is.
//!
//! Pure byte arithmetic: nothing here knows libtorch, so the fuzz target builds this module alone.
//! The layout is specified in `docs/tensorblock-format.md`; the constants below are its numbers.
//! The dtype and the limits a block header's tensor summaries share with this format
//! (`Dtype`, `TENSOR_NAME_BYTES_MAX`, `TENSOR_RANK_MAX`) are `blyan-primitives`'.

use blyan_primitives::{Dtype, TENSOR_NAME_BYTES_MAX};

use crate::error::{Error, Result};

/// First 8 bytes of every tensor block.
pub const MAGIC: [u8; 8] = *b"BLYANTB\0";
/// The format version this build reads and writes.
pub const FORMAT_VERSION: u16 = 1;
/// Size of the fixed preamble at the start of a block.
pub const PREAMBLE_BYTES: u32 = 32;
/// Size of one entry of the tensor table, which follows the preamble.
pub const TABLE_ENTRY_BYTES: u32 = 128;
/// Every data and scales region starts at a multiple of this offset (a cache line, and the
/// alignment the chain gives a payload's first byte, so tensors are aligned in memory too).
pub const DATA_ALIGNMENT_BYTES: u64 = 64;
/// Most tensors one block may hold (an expert holds 3; shared weights of a model a few hundred).
pub const TENSOR_COUNT_MAX: u32 = 4096;
/// Largest tensor-block header (preamble, table and names), so parsing is bounded before any
/// data is read. Not the chain's block header: that one is `BLOCK_HEADER_BYTES_MAX`.
pub const TENSOR_HEADER_BYTES_MAX: u32 = 2 * 1024 * 1024;

// A block at every limit at once must still fit the header bound, so no valid block is refused.
const _: () = assert!(
    PREAMBLE_BYTES as u64
        + TENSOR_COUNT_MAX as u64 * (TABLE_ENTRY_BYTES as u64 + TENSOR_NAME_BYTES_MAX as u64)
        <= TENSOR_HEADER_BYTES_MAX as u64
);
// Names are stored with a u16 length.
const _: () = assert!(TENSOR_NAME_BYTES_MAX <= u16::MAX as u32);
// Alignment is a power of two, so rounding up is a mask.
const _: () = assert!(DATA_ALIGNMENT_BYTES.is_power_of_two());

/// How a tensor's elements encode its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Quantization {
    /// The elements are the values.
    None,
    /// Symmetric INT8 per output channel: a 2-D `[rows, cols]` i8 tensor plus `rows` f32
    /// scales; value `[r][c] = data[r][c] × scale[r]`. Rows are output channels, as in a
    /// PyTorch `Linear` weight.
    Int8PerChannel,
}

impl Quantization {
    /// The byte that names this scheme on disk.
    pub fn code(self) -> u8 {
        match self {
            Self::None => 0,
            Self::Int8PerChannel => 1,
        }
    }

    /// The scheme a code names, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Self::None),
            1 => Some(Self::Int8PerChannel),
            _ => None,
        }
    }

    /// A short name for messages.
    pub fn describe(self) -> &'static str {
        match self {
            Self::None => "not quantized",
            Self::Int8PerChannel => "INT8 per-channel quantized",
        }
    }
}

/// A byte range inside a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ByteRange {
    /// First byte, from the start of the payload.
    pub offset: u64,
    /// Length in bytes.
    pub bytes: u64,
}

impl ByteRange {
    /// One past the last byte. Never overflows for a range of a parsed or planned layout.
    pub fn end(&self) -> u64 {
        self.offset.saturating_add(self.bytes)
    }

    /// The range as `usize` indices, for slicing bytes already checked to hold it.
    pub(crate) fn as_usize_range(&self) -> Option<std::ops::Range<usize>> {
        let start = usize::try_from(self.offset).ok()?;
        let end = usize::try_from(self.offset.checked_add(self.bytes)?).ok()?;
        Some(start..end)
    }
}

/// What the writer needs to know of a tensor before its bytes: name, dtype, shape, scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorSpec {
    /// Unique name inside the block, e.g. `w1`.
    pub name: String,
    /// Element type of the stored data (`I8` for a quantized tensor).
    pub dtype: Dtype,
    /// Dimensions, outermost first.
    pub shape: Vec<u64>,
    /// Encoding of the values.
    pub quantization: Quantization,
}

impl TensorSpec {
    /// A plain (unquantized) tensor.
    pub fn new(name: impl Into<String>, dtype: Dtype, shape: &[u64]) -> Self {
        Self {
            name: name.into(),
            dtype,
            shape: shape.to_vec(),
            quantization: Quantization::None,
        }
    }

    /// An INT8 per-channel quantized `[rows, cols]` weight.
    pub fn int8_per_channel(name: impl Into<String>, rows: u64, cols: u64) -> Self {
        Self {
            name: name.into(),
            dtype: Dtype::I8,
            shape: vec![rows, cols],
            quantization: Quantization::Int8PerChannel,
        }
    }
}

/// One tensor of a parsed or planned block. Its invariants hold by construction: the regions
/// lie in the payload's data area, are aligned, do not overlap, and have the length the shape
/// and dtype require.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    pub(crate) name: String,
    pub(crate) dtype: Dtype,
    pub(crate) shape: Vec<u64>,
    pub(crate) element_count: u64,
    pub(crate) quantization: Quantization,
    pub(crate) data: ByteRange,
    pub(crate) scales: Option<ByteRange>,
}

impl TensorInfo {
    /// The tensor's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Element type of the stored data.
    pub fn dtype(&self) -> Dtype {
        self.dtype
    }

    /// Dimensions, outermost first.
    pub fn shape(&self) -> &[u64] {
        &self.shape
    }

    /// Product of the dimensions (1 for a scalar); fits `i64`.
    pub fn element_count(&self) -> u64 {
        self.element_count
    }

    /// Encoding of the values.
    pub fn quantization(&self) -> Quantization {
        self.quantization
    }

    /// Where the elements lie in the payload.
    pub fn data(&self) -> ByteRange {
        self.data
    }

    /// Where the f32 scales lie, for a quantized tensor.
    pub fn scales(&self) -> Option<ByteRange> {
        self.scales
    }

    /// The spec a writer plans this tensor from (to re-encode a block canonically).
    pub fn spec(&self) -> TensorSpec {
        TensorSpec {
            name: self.name.clone(),
            dtype: self.dtype,
            shape: self.shape.clone(),
            quantization: self.quantization,
        }
    }

    /// Scale count a quantized tensor needs (its row count), `None` if not quantized.
    pub fn scale_count(&self) -> Option<u64> {
        match self.quantization {
            Quantization::None => None,
            Quantization::Int8PerChannel => self.shape.first().copied(),
        }
    }
}

/// Slices a region a parsed layout proved to lie inside `bytes`.
pub(crate) fn slice(bytes: &[u8], range: ByteRange) -> &[u8] {
    range
        .as_usize_range()
        .and_then(|range| bytes.get(range))
        .expect("the layout was parsed from these bytes, so the region lies inside them")
}

/// Little-endian f32s of a byte slice (a trailing partial value is ignored).
pub(crate) fn decode_f32(bytes: &[u8]) -> impl Iterator<Item = f32> + '_ {
    bytes.chunks_exact(4).map(|chunk| {
        f32::from_le_bytes(chunk.try_into().expect("chunks_exact yields 4-byte chunks"))
    })
}

/// Rounds up to `DATA_ALIGNMENT_BYTES`; callers pass values far below `u64::MAX`.
pub(crate) fn align_up(value: u64) -> u64 {
    value.div_ceil(DATA_ALIGNMENT_BYTES) * DATA_ALIGNMENT_BYTES
}

/// A fixed-size field of a record whose size was checked before.
pub(crate) fn read_array<const N: usize>(bytes: &[u8], at: usize) -> [u8; N] {
    bytes[at..at + N]
        .try_into()
        .expect("fixed field inside a fixed-size record")
}

/// Element count and data bytes of a shape, refusing anything libtorch could not index.
///
/// The product is taken over `max(dim, 1)` as well: contiguous strides multiply the non-zero
/// dimensions even when another dimension is 0, and they must fit `i64` too.
pub(crate) fn checked_sizes(name: &str, dtype: Dtype, shape: &[u64]) -> Result<(u64, u64)> {
    let overflow = || Error::ElementCountOverflow {
        tensor: name.to_owned(),
        shape: shape.to_vec(),
    };
    let limit = i64::MAX as u64;
    let mut span: u64 = 1;
    for dim in shape {
        span = span
            .checked_mul((*dim).max(1))
            .filter(|span| *span <= limit)
            .ok_or_else(overflow)?;
    }
    let count: u64 = if shape.contains(&0) { 0 } else { span };
    let bytes = count
        .checked_mul(dtype.size_bytes())
        .filter(|bytes| *bytes <= limit)
        .ok_or_else(overflow)?;
    Ok((count, bytes))
}

/// Checks a scheme fits the dtype and shape; returns the scale count it needs. The scales'
/// size in bytes (4 × count) is checked to fit `i64` too, so callers may multiply freely: the
/// row count of a `[rows, 0]` weight is not bounded by its (zero) element count.
pub(crate) fn quantization_scale_count(
    name: &str,
    quantization: Quantization,
    dtype: Dtype,
    shape: &[u64],
) -> Result<Option<u64>> {
    let mismatch = |reason| Error::QuantizationMismatch {
        tensor: name.to_owned(),
        reason,
    };
    match quantization {
        Quantization::None => Ok(None),
        Quantization::Int8PerChannel => {
            if dtype != Dtype::I8 {
                return Err(mismatch("INT8 per-channel quantization needs dtype i8"));
            }
            let [rows, _cols] = shape else {
                return Err(mismatch("INT8 per-channel quantization needs a 2-D tensor"));
            };
            let scale_bytes = rows
                .checked_mul(4)
                .filter(|bytes| *bytes <= i64::MAX as u64);
            if scale_bytes.is_none() {
                return Err(Error::ElementCountOverflow {
                    tensor: name.to_owned(),
                    shape: shape.to_vec(),
                });
            }
            Ok(Some(*rows))
        }
    }
}
