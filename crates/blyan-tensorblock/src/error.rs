//! The crate's one error type.

/// Which byte region of a tensor an error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Region {
    /// The tensor's elements.
    Data,
    /// The per-channel scales of a quantized tensor.
    Scales,
}

impl std::fmt::Display for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Data => "data",
            Self::Scales => "scales",
        })
    }
}

/// Everything that can go wrong reading, writing or viewing a tensor block.
///
/// Parse errors carry the tensor's name once it is known (names are decoded before any other
/// field of an entry), else its index in the table.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The payload is shorter than the header or than the length the header declares.
    #[error("truncated tensor block: {needed} bytes needed, {available} available")]
    Truncated {
        /// Bytes the header says the payload has (or the fixed preamble size).
        needed: u64,
        /// Bytes actually given.
        available: u64,
    },
    /// The payload is longer than the length its header declares.
    #[error("tensor block has {actual} bytes but its header declares {declared}")]
    TrailingBytes {
        /// Length written in the header.
        declared: u64,
        /// Length of the bytes given.
        actual: u64,
    },
    /// The first 8 bytes are not the tensor-block magic.
    #[error("not a tensor block: magic {found:02x?}")]
    BadMagic {
        /// The 8 bytes found where the magic belongs.
        found: [u8; 8],
    },
    /// A format version this build does not read.
    #[error("tensor block format version {found} is not supported (this build reads {supported})")]
    UnsupportedVersion {
        /// Version in the header.
        found: u16,
        /// The version this build reads and writes.
        supported: u16,
    },
    /// A reserved field or flag is not zero (a newer writer, or corruption).
    #[error("reserved field at byte {offset} is not zero")]
    ReservedNotZero {
        /// Byte offset of the field in the payload.
        offset: u64,
    },
    /// More tensors than `TENSOR_COUNT_MAX`.
    #[error("{count} tensors in one block, at most {max} allowed")]
    TooManyTensors {
        /// Count given.
        count: u64,
        /// `TENSOR_COUNT_MAX`.
        max: u32,
    },
    /// The header (preamble, table, names) is larger than `TENSOR_HEADER_BYTES_MAX`.
    #[error("tensor block header of {bytes} bytes, at most {max} allowed")]
    HeaderTooLarge {
        /// Header size given or needed.
        bytes: u64,
        /// `TENSOR_HEADER_BYTES_MAX`.
        max: u32,
    },
    /// The declared header size cannot hold the preamble and the tensor table.
    #[error("header of {header_bytes} bytes cannot hold a table of {tensor_count} tensors")]
    HeaderTooSmall {
        /// Header size in the preamble.
        header_bytes: u32,
        /// Tensor count in the preamble.
        tensor_count: u32,
    },
    /// A tensor name lies outside the header's name area.
    #[error("name of tensor #{index} lies outside the header's name area")]
    NameOutOfBounds {
        /// Index of the entry in the table.
        index: u32,
    },
    /// A tensor name is empty or longer than `TENSOR_NAME_BYTES_MAX`.
    #[error("name of tensor #{index} has {bytes} bytes, 1 to {max} allowed")]
    BadNameLength {
        /// Index of the entry in the table.
        index: u32,
        /// Length given.
        bytes: u64,
        /// `TENSOR_NAME_BYTES_MAX`.
        max: u32,
    },
    /// A tensor name is not UTF-8.
    #[error("name of tensor #{index} is not UTF-8")]
    NameNotUtf8 {
        /// Index of the entry in the table.
        index: u32,
    },
    /// Two tensors share a name.
    #[error("tensor name {name:?} appears twice")]
    DuplicateName {
        /// The repeated name.
        name: String,
    },
    /// A dtype code this build does not know.
    #[error("tensor {tensor:?} has unknown dtype code {code}")]
    UnknownDtype {
        /// Tensor name.
        tensor: String,
        /// Code found.
        code: u8,
    },
    /// A quantization scheme code this build does not know.
    #[error("tensor {tensor:?} has unknown quantization code {code}")]
    UnknownQuantization {
        /// Tensor name.
        tensor: String,
        /// Code found.
        code: u8,
    },
    /// More dimensions than `TENSOR_RANK_MAX`.
    #[error("tensor {tensor:?} has rank {rank}, at most {max} allowed")]
    RankTooLarge {
        /// Tensor name.
        tensor: String,
        /// Rank given.
        rank: u64,
        /// `TENSOR_RANK_MAX`.
        max: u32,
    },
    /// The product of the dimensions (or its size in bytes) overflows, or exceeds what
    /// libtorch can index (`i64::MAX`).
    #[error("tensor {tensor:?}: shape {shape:?} overflows the element count")]
    ElementCountOverflow {
        /// Tensor name.
        tensor: String,
        /// Shape given.
        shape: Vec<u64>,
    },
    /// A region's stored length differs from what the shape and dtype require.
    #[error("tensor {tensor:?}: {region} length {found} bytes, shape and dtype require {expected}")]
    LengthMismatch {
        /// Tensor name.
        tensor: String,
        /// Which region.
        region: Region,
        /// Length shape × dtype size requires.
        expected: u64,
        /// Length stored in the entry.
        found: u64,
    },
    /// A region does not start on a `DATA_ALIGNMENT_BYTES` boundary.
    #[error("tensor {tensor:?}: {region} offset {offset} is not a multiple of {alignment}")]
    MisalignedOffset {
        /// Tensor name.
        tensor: String,
        /// Which region.
        region: Region,
        /// Offset given.
        offset: u64,
        /// `DATA_ALIGNMENT_BYTES`.
        alignment: u64,
    },
    /// A region reaches into the header or past the end of the payload.
    #[error(
        "tensor {tensor:?}: {region} bytes [{offset}, +{bytes}) are outside the data area \
         [{data_start}, {payload_bytes})"
    )]
    RegionOutOfBounds {
        /// Tensor name.
        tensor: String,
        /// Which region.
        region: Region,
        /// Offset given.
        offset: u64,
        /// Length given.
        bytes: u64,
        /// First byte after the header's padding.
        data_start: u64,
        /// Payload length.
        payload_bytes: u64,
    },
    /// Two regions share bytes.
    #[error("tensor {first:?} {first_region} overlaps tensor {second:?} {second_region}")]
    OverlappingTensors {
        /// Tensor whose region starts first.
        first: String,
        /// Its region.
        first_region: Region,
        /// Tensor whose region starts inside the first.
        second: String,
        /// Its region.
        second_region: Region,
    },
    /// A quantization scheme used with a dtype, rank or parameter it does not fit.
    #[error("tensor {tensor:?}: {reason}")]
    QuantizationMismatch {
        /// Tensor name.
        tensor: String,
        /// What does not fit.
        reason: &'static str,
    },
    /// A quantization scale that is NaN, infinite or negative.
    #[error("tensor {tensor:?}: scale of channel {channel} is {value}, must be finite and >= 0")]
    InvalidScale {
        /// Tensor name.
        tensor: String,
        /// Output channel (row).
        channel: u64,
        /// The scale read.
        value: f32,
    },
    /// A weight to quantize is NaN or infinite.
    #[error("tensor {tensor:?}: weight {index} is {value}, cannot quantize a non-finite value")]
    NonFiniteWeight {
        /// Tensor name (empty for an unnamed slice).
        tensor: String,
        /// Flat index of the weight.
        index: u64,
        /// The value.
        value: f32,
    },
    /// A flat weight slice that is not a whole number of rows.
    #[error("{elements} weights do not form rows of {cols}")]
    BadMatrix {
        /// Length of the slice.
        elements: u64,
        /// Row length asked for.
        cols: u64,
    },
    /// No tensor of that name in the block.
    #[error("no tensor named {name:?} in the block")]
    UnknownTensor {
        /// Name asked for.
        name: String,
    },
    /// The operation needs a tensor that is (or is not) quantized.
    #[error("tensor {tensor:?} is {found}, the operation needs {expected}")]
    WrongQuantization {
        /// Tensor name.
        tensor: String,
        /// What the operation needs.
        expected: &'static str,
        /// What the tensor is.
        found: &'static str,
    },
    /// Bytes handed to the writer do not match the layout it writes.
    #[error("writer: {reason}")]
    WriterMisuse {
        /// What went wrong.
        reason: String,
    },
    /// The owner's bytes are not aligned for the tensor's element type in memory.
    #[error("tensor {tensor:?} starts at address {address:#x}, not aligned to {required} bytes")]
    UnalignedOwner {
        /// Tensor name.
        tensor: String,
        /// Address of the tensor's first byte.
        address: usize,
        /// Alignment its dtype needs.
        required: usize,
    },
    /// A tensor handed to the encoder cannot be stored (dtype, device, layout).
    #[error("tensor {tensor:?} cannot be encoded: {reason}")]
    UnsupportedTensor {
        /// Tensor name.
        tensor: String,
        /// Why.
        reason: String,
    },
    /// libtorch refused an operation.
    #[cfg(feature = "tch")]
    #[error("libtorch: {0}")]
    Torch(#[from] tch::TchError),
    /// The C++ shim failed to make a tensor over the payload.
    #[error("libtorch from_blob for {tensor:?} failed: {message}")]
    FromBlob {
        /// Tensor name.
        tensor: String,
        /// libtorch's message.
        message: String,
    },
    /// libtorch's CUDA backend (`libtorch_cuda.so`) could not be loaded.
    #[error("libtorch's CUDA backend could not be loaded: {reason}")]
    CudaBackend {
        /// The dynamic loader's message.
        reason: String,
    },
    /// Writing the encoded block failed.
    #[error("writing tensor block: {0}")]
    Io(#[from] std::io::Error),
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
