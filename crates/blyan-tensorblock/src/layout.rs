//! The header: parsing and checking it, planning it for the writer, encoding it.
//!
//! Pure byte arithmetic: nothing here knows libtorch, so the fuzz target builds this module alone.
//! The byte offsets below are those of `docs/tensorblock-format.md`.

use blyan_primitives::{Dtype, TENSOR_NAME_BYTES_MAX, TENSOR_RANK_MAX};

use crate::error::{Error, Region, Result};
use crate::format::{
    ByteRange, DATA_ALIGNMENT_BYTES, FORMAT_VERSION, MAGIC, PREAMBLE_BYTES, Quantization,
    TABLE_ENTRY_BYTES, TENSOR_COUNT_MAX, TENSOR_HEADER_BYTES_MAX, TensorInfo, TensorSpec, align_up,
    checked_sizes, decode_f32, quantization_scale_count, read_array, slice,
};

// Preamble field offsets.
const PRE_MAGIC: usize = 0;
const PRE_VERSION: usize = 8;
const PRE_FLAGS: usize = 10;
const PRE_TENSOR_COUNT: usize = 12;
const PRE_HEADER_BYTES: usize = 16;
const PRE_RESERVED: usize = 20;
const PRE_PAYLOAD_BYTES: usize = 24;

// Table entry field offsets.
const ENTRY_NAME_OFFSET: usize = 0;
const ENTRY_NAME_BYTES: usize = 4;
const ENTRY_DTYPE: usize = 6;
const ENTRY_RANK: usize = 7;
const ENTRY_QUANTIZATION: usize = 8;
const ENTRY_RESERVED_CODES: usize = 9;
const ENTRY_DATA_OFFSET: usize = 16;
const ENTRY_DATA_BYTES: usize = 24;
const ENTRY_SCALES_OFFSET: usize = 32;
const ENTRY_SCALES_BYTES: usize = 40;
const ENTRY_SHAPE: usize = 48;
const ENTRY_RESERVED_TAIL: usize = ENTRY_SHAPE + 8 * TENSOR_RANK_MAX as usize;

// Entry fields: 16 bytes of name/codes, 4 × u64 of regions, the shape, then reserved bytes.
const _: () = assert!(ENTRY_SHAPE + 8 * TENSOR_RANK_MAX as usize <= TABLE_ENTRY_BYTES as usize);
// Version 1 of the format has exactly 8 shape slots per entry (docs/tensorblock-format.md): the
// shared rank limit may not change without a new format version.
const _: () = assert!(TENSOR_RANK_MAX == 8);

/// The parsed (or planned) header of a tensor block: where every tensor lies.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockLayout {
    header_bytes: u32,
    payload_bytes: u64,
    tensors: Vec<TensorInfo>,
    // Indices into `tensors`, sorted by name, for lookup by binary search.
    by_name: Vec<u32>,
}

impl BlockLayout {
    /// Parses and checks a block's header against the whole payload.
    ///
    /// Reads the preamble, the table and the names, then the scales of quantized tensors (to
    /// refuse NaN and infinities); never touches tensor data, so the cost does not grow with
    /// the payload. Every offset, length and product is checked before it is used.
    pub fn parse(bytes: &[u8]) -> Result<Self> {
        let available = bytes.len() as u64;
        let Some(preamble) = bytes.first_chunk::<{ PREAMBLE_BYTES as usize }>() else {
            return Err(Error::Truncated {
                needed: u64::from(PREAMBLE_BYTES),
                available,
            });
        };
        let magic: [u8; 8] = read_array(preamble, PRE_MAGIC);
        if magic != MAGIC {
            return Err(Error::BadMagic { found: magic });
        }
        let version = u16::from_le_bytes(read_array(preamble, PRE_VERSION));
        if version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion {
                found: version,
                supported: FORMAT_VERSION,
            });
        }
        if u16::from_le_bytes(read_array(preamble, PRE_FLAGS)) != 0 {
            return Err(Error::ReservedNotZero {
                offset: PRE_FLAGS as u64,
            });
        }
        if u32::from_le_bytes(read_array(preamble, PRE_RESERVED)) != 0 {
            return Err(Error::ReservedNotZero {
                offset: PRE_RESERVED as u64,
            });
        }
        let tensor_count = u32::from_le_bytes(read_array(preamble, PRE_TENSOR_COUNT));
        if tensor_count > TENSOR_COUNT_MAX {
            return Err(Error::TooManyTensors {
                count: u64::from(tensor_count),
                max: TENSOR_COUNT_MAX,
            });
        }
        let header_bytes = u32::from_le_bytes(read_array(preamble, PRE_HEADER_BYTES));
        if header_bytes > TENSOR_HEADER_BYTES_MAX {
            return Err(Error::HeaderTooLarge {
                bytes: u64::from(header_bytes),
                max: TENSOR_HEADER_BYTES_MAX,
            });
        }
        // Cannot overflow: both factors are bounded by the checks above.
        let table_end =
            u64::from(PREAMBLE_BYTES) + u64::from(tensor_count) * u64::from(TABLE_ENTRY_BYTES);
        if u64::from(header_bytes) < table_end {
            return Err(Error::HeaderTooSmall {
                header_bytes,
                tensor_count,
            });
        }
        let payload_bytes = u64::from_le_bytes(read_array(preamble, PRE_PAYLOAD_BYTES));
        if available < payload_bytes {
            return Err(Error::Truncated {
                needed: payload_bytes,
                available,
            });
        }
        if available > payload_bytes {
            return Err(Error::TrailingBytes {
                declared: payload_bytes,
                actual: available,
            });
        }
        if payload_bytes < u64::from(header_bytes) {
            return Err(Error::Truncated {
                needed: u64::from(header_bytes),
                available,
            });
        }
        let header = &bytes[..header_bytes as usize];
        let data_start = align_up(u64::from(header_bytes));

        let table = &header[PREAMBLE_BYTES as usize..table_end as usize];
        let entries: Vec<&[u8; TABLE_ENTRY_BYTES as usize]> = table
            .chunks_exact(TABLE_ENTRY_BYTES as usize)
            .map(|chunk| {
                chunk
                    .try_into()
                    .expect("chunks_exact yields entry-sized chunks")
            })
            .collect();

        let mut names = Vec::with_capacity(entries.len());
        for (index, entry) in (0u32..).zip(&entries) {
            names.push(parse_name(header, table_end, index, entry)?);
        }
        let by_name = index_by_name(&names)?;

        let mut tensors = Vec::with_capacity(entries.len());
        for (name, entry) in names.into_iter().zip(&entries) {
            let entry_offset = PREAMBLE_BYTES as usize + tensors.len() * TABLE_ENTRY_BYTES as usize;
            tensors.push(parse_entry(
                name,
                entry,
                entry_offset as u64,
                data_start,
                payload_bytes,
            )?);
        }
        check_no_overlap(&tensors)?;
        for tensor in &tensors {
            check_scales(bytes, tensor)?;
        }
        Ok(Self {
            header_bytes,
            payload_bytes,
            tensors,
            by_name,
        })
    }

    /// Lays out a block for the given tensors, in order: the header, then each tensor's data and
    /// (if quantized) scales, every region aligned to `DATA_ALIGNMENT_BYTES`.
    pub fn plan(specs: &[TensorSpec]) -> Result<Self> {
        let count = specs.len() as u64;
        if count > u64::from(TENSOR_COUNT_MAX) {
            return Err(Error::TooManyTensors {
                count,
                max: TENSOR_COUNT_MAX,
            });
        }
        let mut header_bytes = u64::from(PREAMBLE_BYTES) + count * u64::from(TABLE_ENTRY_BYTES);
        for (index, spec) in (0u32..).zip(specs) {
            let bytes = spec.name.len() as u64;
            if bytes == 0 || bytes > u64::from(TENSOR_NAME_BYTES_MAX) {
                return Err(Error::BadNameLength {
                    index,
                    bytes,
                    max: TENSOR_NAME_BYTES_MAX,
                });
            }
            header_bytes += bytes;
        }
        let header_bytes = u32::try_from(header_bytes)
            .ok()
            .filter(|bytes| *bytes <= TENSOR_HEADER_BYTES_MAX)
            .ok_or(Error::HeaderTooLarge {
                bytes: header_bytes,
                max: TENSOR_HEADER_BYTES_MAX,
            })?;
        let names: Vec<String> = specs.iter().map(|spec| spec.name.clone()).collect();
        let by_name = index_by_name(&names)?;

        let mut cursor = u64::from(header_bytes);
        let mut tensors = Vec::with_capacity(specs.len());
        for spec in specs {
            if spec.shape.len() > TENSOR_RANK_MAX as usize {
                return Err(Error::RankTooLarge {
                    tensor: spec.name.clone(),
                    rank: spec.shape.len() as u64,
                    max: TENSOR_RANK_MAX,
                });
            }
            let (element_count, data_bytes) = checked_sizes(&spec.name, spec.dtype, &spec.shape)?;
            let scale_count =
                quantization_scale_count(&spec.name, spec.quantization, spec.dtype, &spec.shape)?;
            let data = place(&mut cursor, data_bytes, &spec.name)?;
            let scales = match scale_count {
                None => None,
                // Cannot overflow: `quantization_scale_count` checked 4 × rows fits i64.
                Some(rows) => Some(place(&mut cursor, rows * 4, &spec.name)?),
            };
            tensors.push(TensorInfo {
                name: spec.name.clone(),
                dtype: spec.dtype,
                shape: spec.shape.clone(),
                element_count,
                quantization: spec.quantization,
                data,
                scales,
            });
        }
        Ok(Self {
            header_bytes,
            payload_bytes: cursor,
            tensors,
            by_name,
        })
    }

    /// The header's bytes (preamble, table, names), exactly `header_bytes()` long. Only for a
    /// planned layout, whose names fill the name area in table order.
    pub(crate) fn encode_header(&self) -> Vec<u8> {
        let mut header = vec![0u8; self.header_bytes as usize];
        header[PRE_MAGIC..PRE_MAGIC + 8].copy_from_slice(&MAGIC);
        header[PRE_VERSION..PRE_VERSION + 2].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
        let count = u32::try_from(self.tensors.len()).expect("tensor count ≤ TENSOR_COUNT_MAX");
        header[PRE_TENSOR_COUNT..PRE_TENSOR_COUNT + 4].copy_from_slice(&count.to_le_bytes());
        header[PRE_HEADER_BYTES..PRE_HEADER_BYTES + 4]
            .copy_from_slice(&self.header_bytes.to_le_bytes());
        header[PRE_PAYLOAD_BYTES..PRE_PAYLOAD_BYTES + 8]
            .copy_from_slice(&self.payload_bytes.to_le_bytes());
        let mut name_cursor =
            PREAMBLE_BYTES as usize + self.tensors.len() * TABLE_ENTRY_BYTES as usize;
        for (index, tensor) in self.tensors.iter().enumerate() {
            let at = PREAMBLE_BYTES as usize + index * TABLE_ENTRY_BYTES as usize;
            let entry = &mut header[at..at + TABLE_ENTRY_BYTES as usize];
            let name = tensor.name.as_bytes();
            let name_offset = u32::try_from(name_cursor).expect("names lie inside the header");
            let name_bytes = u16::try_from(name.len()).expect("name ≤ TENSOR_NAME_BYTES_MAX");
            put(entry, ENTRY_NAME_OFFSET, &name_offset.to_le_bytes());
            put(entry, ENTRY_NAME_BYTES, &name_bytes.to_le_bytes());
            entry[ENTRY_DTYPE] = tensor.dtype.code();
            entry[ENTRY_RANK] = u8::try_from(tensor.shape.len()).expect("rank ≤ TENSOR_RANK_MAX");
            entry[ENTRY_QUANTIZATION] = tensor.quantization.code();
            put(entry, ENTRY_DATA_OFFSET, &tensor.data.offset.to_le_bytes());
            put(entry, ENTRY_DATA_BYTES, &tensor.data.bytes.to_le_bytes());
            let scales = tensor.scales.unwrap_or(ByteRange {
                offset: 0,
                bytes: 0,
            });
            put(entry, ENTRY_SCALES_OFFSET, &scales.offset.to_le_bytes());
            put(entry, ENTRY_SCALES_BYTES, &scales.bytes.to_le_bytes());
            for (dim_index, dim) in tensor.shape.iter().enumerate() {
                put(entry, ENTRY_SHAPE + 8 * dim_index, &dim.to_le_bytes());
            }
            header[name_cursor..name_cursor + name.len()].copy_from_slice(name);
            name_cursor += name.len();
        }
        header
    }

    /// Size of the header (preamble, table and names), before the padding to the data area.
    pub fn header_bytes(&self) -> u32 {
        self.header_bytes
    }

    /// First byte of the data area: the header size rounded up to `DATA_ALIGNMENT_BYTES`.
    pub fn data_start(&self) -> u64 {
        align_up(u64::from(self.header_bytes))
    }

    /// Total length of the payload.
    pub fn payload_bytes(&self) -> u64 {
        self.payload_bytes
    }

    /// The tensors, in table order.
    pub fn tensors(&self) -> &[TensorInfo] {
        &self.tensors
    }

    /// The tensor of that name, if the block has one.
    pub fn get(&self, name: &str) -> Option<&TensorInfo> {
        let position = self
            .by_name
            .binary_search_by(|index| self.tensors[*index as usize].name.as_str().cmp(name))
            .ok()?;
        Some(&self.tensors[self.by_name[position] as usize])
    }

    /// The tensor of that name, or [`Error::UnknownTensor`].
    pub fn require(&self, name: &str) -> Result<&TensorInfo> {
        self.get(name).ok_or_else(|| Error::UnknownTensor {
            name: name.to_owned(),
        })
    }
}

/// A parsed block borrowing its bytes: the pure (libtorch-free) way to read tensor data.
#[derive(Debug, Clone)]
pub struct BlockRef<'a> {
    bytes: &'a [u8],
    layout: BlockLayout,
}

impl<'a> BlockRef<'a> {
    /// Parses `bytes` (see [`BlockLayout::parse`]).
    pub fn parse(bytes: &'a [u8]) -> Result<Self> {
        Ok(Self {
            layout: BlockLayout::parse(bytes)?,
            bytes,
        })
    }

    /// The parsed header.
    pub fn layout(&self) -> &BlockLayout {
        &self.layout
    }

    /// The whole payload.
    pub fn bytes(&self) -> &'a [u8] {
        self.bytes
    }

    /// The stored elements of a tensor, little-endian, borrowed from the payload.
    pub fn data(&self, name: &str) -> Result<&'a [u8]> {
        let tensor = self.layout.require(name)?;
        Ok(slice(self.bytes, tensor.data))
    }

    /// The scales of a quantized tensor, decoded.
    pub fn scales(&self, name: &str) -> Result<Vec<f32>> {
        let tensor = self.layout.require(name)?;
        let Some(range) = tensor.scales else {
            return Err(Error::WrongQuantization {
                tensor: name.to_owned(),
                expected: Quantization::Int8PerChannel.describe(),
                found: tensor.quantization.describe(),
            });
        };
        Ok(decode_f32(slice(self.bytes, range)).collect())
    }
}

/// Places a region of `bytes` at the next aligned offset and advances the cursor.
fn place(cursor: &mut u64, bytes: u64, tensor: &str) -> Result<ByteRange> {
    let offset = align_up(*cursor);
    let end = offset
        .checked_add(bytes)
        .filter(|end| *end <= i64::MAX as u64)
        .ok_or_else(|| Error::WriterMisuse {
            reason: format!("tensor {tensor:?} pushes the block past 2^63 bytes"),
        })?;
    *cursor = end;
    Ok(ByteRange { offset, bytes })
}

fn put(entry: &mut [u8], at: usize, value: &[u8]) {
    entry[at..at + value.len()].copy_from_slice(value);
}

fn parse_name(
    header: &[u8],
    table_end: u64,
    index: u32,
    entry: &[u8; TABLE_ENTRY_BYTES as usize],
) -> Result<String> {
    let offset = u64::from(u32::from_le_bytes(read_array(entry, ENTRY_NAME_OFFSET)));
    let bytes = u64::from(u16::from_le_bytes(read_array(entry, ENTRY_NAME_BYTES)));
    if bytes == 0 || bytes > u64::from(TENSOR_NAME_BYTES_MAX) {
        return Err(Error::BadNameLength {
            index,
            bytes,
            max: TENSOR_NAME_BYTES_MAX,
        });
    }
    // Both terms fit u32 + u16, so the sum cannot overflow u64.
    let end = offset + bytes;
    if offset < table_end || end > header.len() as u64 {
        return Err(Error::NameOutOfBounds { index });
    }
    let name = &header[offset as usize..end as usize];
    std::str::from_utf8(name)
        .map(str::to_owned)
        .map_err(|_| Error::NameNotUtf8 { index })
}

/// Indices sorted by name; refuses duplicates.
fn index_by_name(names: &[String]) -> Result<Vec<u32>> {
    let mut by_name: Vec<u32> = (0..).take(names.len()).collect();
    by_name.sort_unstable_by(|a, b| names[*a as usize].cmp(&names[*b as usize]));
    if let Some(pair) = by_name
        .windows(2)
        .find(|pair| names[pair[0] as usize] == names[pair[1] as usize])
    {
        return Err(Error::DuplicateName {
            name: names[pair[0] as usize].clone(),
        });
    }
    Ok(by_name)
}

fn parse_entry(
    name: String,
    entry: &[u8; TABLE_ENTRY_BYTES as usize],
    entry_offset: u64,
    data_start: u64,
    payload_bytes: u64,
) -> Result<TensorInfo> {
    let dtype_code = entry[ENTRY_DTYPE];
    let Some(dtype) = Dtype::from_code(dtype_code) else {
        return Err(Error::UnknownDtype {
            tensor: name,
            code: dtype_code,
        });
    };
    let rank = usize::from(entry[ENTRY_RANK]);
    if rank > TENSOR_RANK_MAX as usize {
        return Err(Error::RankTooLarge {
            tensor: name,
            rank: rank as u64,
            max: TENSOR_RANK_MAX,
        });
    }
    let quantization_code = entry[ENTRY_QUANTIZATION];
    let Some(quantization) = Quantization::from_code(quantization_code) else {
        return Err(Error::UnknownQuantization {
            tensor: name,
            code: quantization_code,
        });
    };
    let reserved_not_zero = |at: usize| Error::ReservedNotZero {
        offset: entry_offset + at as u64,
    };
    if let Some(at) = (ENTRY_RESERVED_CODES..ENTRY_DATA_OFFSET).find(|at| entry[*at] != 0) {
        return Err(reserved_not_zero(at));
    }
    if let Some(at) = (ENTRY_RESERVED_TAIL..TABLE_ENTRY_BYTES as usize).find(|at| entry[*at] != 0) {
        return Err(reserved_not_zero(at));
    }
    let shape_field: Vec<u64> = (0..TENSOR_RANK_MAX as usize)
        .map(|dim| u64::from_le_bytes(read_array(entry, ENTRY_SHAPE + 8 * dim)))
        .collect();
    if let Some(dim) = (rank..TENSOR_RANK_MAX as usize).find(|dim| shape_field[*dim] != 0) {
        return Err(reserved_not_zero(ENTRY_SHAPE + 8 * dim));
    }
    let shape = shape_field[..rank].to_vec();
    let (element_count, data_bytes) = checked_sizes(&name, dtype, &shape)?;
    let scale_count = quantization_scale_count(&name, quantization, dtype, &shape)?;

    let data = ByteRange {
        offset: u64::from_le_bytes(read_array(entry, ENTRY_DATA_OFFSET)),
        bytes: u64::from_le_bytes(read_array(entry, ENTRY_DATA_BYTES)),
    };
    let scales_field = ByteRange {
        offset: u64::from_le_bytes(read_array(entry, ENTRY_SCALES_OFFSET)),
        bytes: u64::from_le_bytes(read_array(entry, ENTRY_SCALES_BYTES)),
    };
    let check_region = |region: Region, range: ByteRange, expected: u64| -> Result<()> {
        if range.bytes != expected {
            return Err(Error::LengthMismatch {
                tensor: name.clone(),
                region,
                expected,
                found: range.bytes,
            });
        }
        if !range.offset.is_multiple_of(DATA_ALIGNMENT_BYTES) {
            return Err(Error::MisalignedOffset {
                tensor: name.clone(),
                region,
                offset: range.offset,
                alignment: DATA_ALIGNMENT_BYTES,
            });
        }
        let inside = range.offset >= data_start
            && range
                .offset
                .checked_add(range.bytes)
                .is_some_and(|end| end <= payload_bytes);
        if !inside {
            return Err(Error::RegionOutOfBounds {
                tensor: name.clone(),
                region,
                offset: range.offset,
                bytes: range.bytes,
                data_start,
                payload_bytes,
            });
        }
        Ok(())
    };
    check_region(Region::Data, data, data_bytes)?;
    let scales = match scale_count {
        None => {
            if scales_field.offset != 0 {
                return Err(reserved_not_zero(ENTRY_SCALES_OFFSET));
            }
            if scales_field.bytes != 0 {
                return Err(reserved_not_zero(ENTRY_SCALES_BYTES));
            }
            None
        }
        Some(rows) => {
            // Cannot overflow: `quantization_scale_count` checked 4 × rows fits i64.
            check_region(Region::Scales, scales_field, rows * 4)?;
            Some(scales_field)
        }
    };
    Ok(TensorInfo {
        name,
        dtype,
        shape,
        element_count,
        quantization,
        data,
        scales,
    })
}

/// Refuses two regions that share a byte. Empty regions hold no byte and overlap nothing.
fn check_no_overlap(tensors: &[TensorInfo]) -> Result<()> {
    let mut regions: Vec<(ByteRange, usize, Region)> = Vec::with_capacity(tensors.len() * 2);
    for (index, tensor) in tensors.iter().enumerate() {
        regions.push((tensor.data, index, Region::Data));
        if let Some(scales) = tensor.scales {
            regions.push((scales, index, Region::Scales));
        }
    }
    regions.retain(|(range, _, _)| range.bytes > 0);
    regions.sort_unstable_by_key(|(range, index, _)| (range.offset, *index));
    for pair in regions.windows(2) {
        let (first, first_index, first_region) = pair[0];
        let (second, second_index, second_region) = pair[1];
        if second.offset < first.end() {
            return Err(Error::OverlappingTensors {
                first: tensors[first_index].name.clone(),
                first_region,
                second: tensors[second_index].name.clone(),
                second_region,
            });
        }
    }
    Ok(())
}

/// Refuses NaN, infinite and negative scales.
fn check_scales(bytes: &[u8], tensor: &TensorInfo) -> Result<()> {
    let Some(range) = tensor.scales else {
        return Ok(());
    };
    for (channel, value) in (0u64..).zip(decode_f32(slice(bytes, range))) {
        if !value.is_finite() || value < 0.0 {
            return Err(Error::InvalidScale {
                tensor: tensor.name.clone(),
                channel,
                value,
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn expert_specs() -> Vec<TensorSpec> {
        vec![
            TensorSpec::new("w1", Dtype::F32, &[4, 3]),
            TensorSpec::int8_per_channel("w2", 3, 4),
            TensorSpec::new("w3", Dtype::BF16, &[5]),
            TensorSpec::new("scalar", Dtype::F16, &[]),
        ]
    }

    #[test]
    fn plan_aligns_every_region_and_orders_them() {
        let layout = BlockLayout::plan(&expert_specs()).unwrap();
        let mut previous_end = u64::from(layout.header_bytes());
        for tensor in layout.tensors() {
            for range in [Some(tensor.data()), tensor.scales()].into_iter().flatten() {
                assert_eq!(range.offset % DATA_ALIGNMENT_BYTES, 0);
                assert!(range.offset >= previous_end);
                previous_end = range.end();
            }
        }
        assert_eq!(layout.payload_bytes(), previous_end);
        assert_eq!(layout.get("w2").unwrap().scales().unwrap().bytes, 12);
        assert_eq!(layout.get("scalar").unwrap().element_count(), 1);
    }

    #[test]
    fn header_round_trips_through_parse() {
        let layout = BlockLayout::plan(&expert_specs()).unwrap();
        let mut bytes = layout.encode_header();
        bytes.resize(layout.payload_bytes() as usize, 0);
        assert_eq!(BlockLayout::parse(&bytes).unwrap(), layout);
    }

    #[test]
    fn lookup_by_name_finds_every_tensor_and_nothing_else() {
        let layout = BlockLayout::plan(&expert_specs()).unwrap();
        for spec in expert_specs() {
            assert_eq!(layout.get(&spec.name).unwrap().name(), spec.name);
        }
        assert!(layout.get("w4").is_none());
        assert!(matches!(
            layout.require("w4"),
            Err(Error::UnknownTensor { .. })
        ));
    }

    #[test]
    fn dtype_codes_are_the_formats_and_zero_is_no_dtype() {
        // The codes of docs/tensorblock-format.md: stored on disk, never renumbered.
        let codes: Vec<(Dtype, u8)> = Dtype::ALL.iter().map(|d| (*d, d.code())).collect();
        assert_eq!(
            codes,
            [
                (Dtype::F32, 1),
                (Dtype::F16, 2),
                (Dtype::BF16, 3),
                (Dtype::I8, 4)
            ]
        );
        for dtype in Dtype::ALL {
            assert_eq!(Dtype::from_code(dtype.code()), Some(dtype));
        }
        assert_eq!(Dtype::from_code(0), None);
        assert_eq!(Quantization::from_code(2), None);
    }

    #[test]
    fn plan_refuses_rank_past_the_maximum_and_accepts_it() {
        let at_max = vec![1u64; TENSOR_RANK_MAX as usize];
        assert!(BlockLayout::plan(&[TensorSpec::new("t", Dtype::F32, &at_max)]).is_ok());
        let past = vec![1u64; TENSOR_RANK_MAX as usize + 1];
        assert!(matches!(
            BlockLayout::plan(&[TensorSpec::new("t", Dtype::F32, &past)]),
            Err(Error::RankTooLarge { rank: 9, .. })
        ));
    }

    #[test]
    fn plan_refuses_quantization_that_does_not_fit() {
        let mut spec = TensorSpec::int8_per_channel("w", 2, 2);
        spec.dtype = Dtype::F32;
        assert!(matches!(
            BlockLayout::plan(&[spec]),
            Err(Error::QuantizationMismatch { .. })
        ));
        let mut spec = TensorSpec::int8_per_channel("w", 2, 2);
        spec.shape = vec![4];
        assert!(matches!(
            BlockLayout::plan(&[spec]),
            Err(Error::QuantizationMismatch { .. })
        ));
    }
}
