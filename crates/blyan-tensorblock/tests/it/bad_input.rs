//! Every kind of malformed block is refused with its typed error.
//!
//! Blocks are corrupted at the byte offsets `docs/tensorblock-format.md` specifies, so these
//! tests also hold the document to the code.

use blyan_tensorblock::{
    BlockLayout, BlockRef, DATA_ALIGNMENT_BYTES, Dtype, Error, MAGIC, RawTensor, Region,
    TENSOR_COUNT_MAX, TENSOR_HEADER_BYTES_MAX, TENSOR_NAME_BYTES_MAX, TensorBlock, TensorSpec,
    encode_raw_to_vec,
};

use crate::support;

// Preamble fields (docs/tensorblock-format.md, "Preamble").
const VERSION: usize = 8;
const FLAGS: usize = 10;
const TENSOR_COUNT: usize = 12;
const HEADER_BYTES: usize = 16;
const RESERVED: usize = 20;
const PAYLOAD_BYTES: usize = 24;
// Table entry fields, from the start of an entry (docs, "Tensor table").
const ENTRY_START: usize = 32;
const ENTRY_BYTES: usize = 128;
const NAME_OFFSET: usize = 0;
const NAME_BYTES: usize = 4;
const DTYPE: usize = 6;
const RANK: usize = 7;
const QUANTIZATION: usize = 8;
const DATA_OFFSET: usize = 16;
const DATA_BYTES: usize = 24;
const SCALES_OFFSET: usize = 32;
const SCALES_BYTES: usize = 40;
const SHAPE: usize = 48;
const RESERVED_TAIL: usize = 112;

// Entries of `support::expert_block()`.
const W1: usize = 0;
const W2: usize = 1;

fn entry(index: usize, field: usize) -> usize {
    ENTRY_START + index * ENTRY_BYTES + field
}

fn read_u64(bytes: &[u8], at: usize) -> u64 {
    u64::from_le_bytes(bytes[at..at + 8].try_into().unwrap())
}

fn put(bytes: &mut [u8], at: usize, value: &[u8]) {
    bytes[at..at + value.len()].copy_from_slice(value);
}

/// The expert block with `corrupt` applied, parsed.
fn parse_corrupted(corrupt: impl FnOnce(&mut Vec<u8>)) -> Error {
    let mut bytes = support::expert_block();
    corrupt(&mut bytes);
    BlockLayout::parse(&bytes).expect_err("corrupted block parsed")
}

#[test]
fn the_uncorrupted_block_parses() {
    let bytes = support::expert_block();
    let layout = BlockLayout::parse(&bytes).unwrap();
    assert_eq!(layout.tensors().len(), 3);
}

#[test]
fn wrong_magic() {
    let error = parse_corrupted(|bytes| bytes[0] = b'X');
    assert!(
        matches!(error, Error::BadMagic { found } if found[0] == b'X' && found[1..] == MAGIC[1..])
    );
    assert!(matches!(
        BlockLayout::parse(&[0u8; 64]),
        Err(Error::BadMagic { .. })
    ));
}

#[test]
fn unknown_version() {
    let error = parse_corrupted(|bytes| put(bytes, VERSION, &2u16.to_le_bytes()));
    assert!(matches!(
        error,
        Error::UnsupportedVersion {
            found: 2,
            supported: 1
        }
    ));
}

#[test]
fn truncated_data() {
    let bytes = support::expert_block();
    for length in [0, 8, 31, 32, bytes.len() / 2, bytes.len() - 1] {
        assert!(
            matches!(
                BlockLayout::parse(&bytes[..length]),
                Err(Error::Truncated { .. })
            ),
            "length {length}"
        );
    }
    assert!(matches!(
        BlockLayout::parse(&bytes[..31]),
        Err(Error::Truncated {
            needed: 32,
            available: 31
        })
    ));
}

#[test]
fn trailing_bytes() {
    let error = parse_corrupted(|bytes| bytes.push(0));
    assert!(matches!(error, Error::TrailingBytes { .. }));
}

#[test]
fn reserved_fields_not_zero() {
    for at in [
        FLAGS,
        RESERVED,
        entry(W1, 9),
        entry(W1, 15),
        entry(W1, RESERVED_TAIL + 3),
    ] {
        let error = parse_corrupted(|bytes| bytes[at] = 1);
        assert!(
            matches!(error, Error::ReservedNotZero { offset } if offset == at as u64),
            "{at}"
        );
    }
    // A shape dimension past the rank.
    let at = entry(W1, SHAPE + 8 * 2);
    let error = parse_corrupted(|bytes| bytes[at] = 1);
    assert!(matches!(error, Error::ReservedNotZero { offset } if offset == at as u64));
    // Scales on a tensor that is not quantized.
    let error = parse_corrupted(|bytes| bytes[entry(W1, SCALES_BYTES)] = 4);
    assert!(matches!(error, Error::ReservedNotZero { .. }));
}

#[test]
fn misaligned_offset() {
    let error = parse_corrupted(|bytes| {
        let offset = read_u64(bytes, entry(W1, DATA_OFFSET));
        put(bytes, entry(W1, DATA_OFFSET), &(offset + 4).to_le_bytes());
    });
    assert!(matches!(
        error,
        Error::MisalignedOffset {
            region: Region::Data,
            alignment: 64,
            ..
        }
    ));
    let error = parse_corrupted(|bytes| {
        let offset = read_u64(bytes, entry(W2, SCALES_OFFSET));
        put(bytes, entry(W2, SCALES_OFFSET), &(offset + 1).to_le_bytes());
    });
    assert!(matches!(
        error,
        Error::MisalignedOffset {
            region: Region::Scales,
            ..
        }
    ));
}

#[test]
fn overlapping_tensors() {
    let error = parse_corrupted(|bytes| {
        let w1 = read_u64(bytes, entry(W1, DATA_OFFSET));
        put(bytes, entry(W2, DATA_OFFSET), &w1.to_le_bytes());
    });
    assert!(matches!(
        error,
        Error::OverlappingTensors { ref first, ref second, .. } if first == "w1" && second == "w2"
    ));
    // Scales placed inside another tensor's data.
    let error = parse_corrupted(|bytes| {
        let w1 = read_u64(bytes, entry(W1, DATA_OFFSET));
        put(bytes, entry(W2, SCALES_OFFSET), &w1.to_le_bytes());
    });
    assert!(matches!(
        error,
        Error::OverlappingTensors {
            second_region: Region::Scales,
            ..
        }
    ));
}

#[test]
fn element_count_overflow() {
    let shapes: [&[u64]; 4] = [
        &[1 << 32, 1 << 32],    // 2^64 elements
        &[1 << 62, 1],          // 2^62 elements × 4 bytes
        &[u64::MAX],            // beyond i64
        &[0, 1 << 40, 1 << 40], // no elements, but strides overflow
    ];
    for shape in shapes {
        let error = parse_corrupted(|bytes| {
            bytes[entry(W1, RANK)] = shape.len() as u8;
            for dim in 0..3 {
                let value = shape.get(dim).copied().unwrap_or(0);
                put(bytes, entry(W1, SHAPE + 8 * dim), &value.to_le_bytes());
            }
        });
        assert!(
            matches!(error, Error::ElementCountOverflow { .. }),
            "{shape:?}: {error}"
        );
        assert!(matches!(
            BlockLayout::plan(&[TensorSpec::new("w", Dtype::F32, shape)]),
            Err(Error::ElementCountOverflow { .. })
        ));
    }
}

/// Found by the fuzzer: an INT8 `[rows, 0]` weight has no elements, so its element count did
/// not bound `rows`, and `4 × rows` (the scales' size) overflowed.
#[test]
fn int8_rows_whose_scale_bytes_overflow() {
    for rows in [1u64 << 62, (1 << 61) + 1, u64::MAX / 4 + 1] {
        let error = parse_corrupted(|bytes| {
            put(bytes, entry(W2, SHAPE), &rows.to_le_bytes());
            put(bytes, entry(W2, SHAPE + 8), &0u64.to_le_bytes());
        });
        assert!(
            matches!(error, Error::ElementCountOverflow { .. }),
            "{rows}: {error}"
        );
        assert!(matches!(
            BlockLayout::plan(&[TensorSpec::int8_per_channel("w", rows, 0)]),
            Err(Error::ElementCountOverflow { .. })
        ));
    }
    // The largest row count whose scales fit i64 is a length question, not an overflow.
    let rows = i64::MAX as u64 / 4;
    let error = parse_corrupted(|bytes| {
        put(bytes, entry(W2, SHAPE), &rows.to_le_bytes());
        put(bytes, entry(W2, SHAPE + 8), &0u64.to_le_bytes());
    });
    assert!(matches!(error, Error::LengthMismatch { .. }), "{error}");
}

#[test]
fn length_differs_from_shape_times_dtype_size() {
    let error = parse_corrupted(|bytes| {
        let length = read_u64(bytes, entry(W1, DATA_BYTES));
        put(bytes, entry(W1, DATA_BYTES), &(length - 4).to_le_bytes());
    });
    assert!(matches!(
        error,
        Error::LengthMismatch {
            expected: 60,
            found: 56,
            ..
        }
    ));
    let error = parse_corrupted(|bytes| put(bytes, entry(W2, SCALES_BYTES), &8u64.to_le_bytes()));
    assert!(matches!(
        error,
        Error::LengthMismatch {
            region: Region::Scales,
            expected: 16,
            found: 8,
            ..
        }
    ));
}

#[test]
fn region_outside_the_data_area() {
    // Past the end.
    let error = parse_corrupted(|bytes| {
        let end = read_u64(bytes, PAYLOAD_BYTES).next_multiple_of(DATA_ALIGNMENT_BYTES);
        put(bytes, entry(W1, DATA_OFFSET), &end.to_le_bytes());
    });
    assert!(matches!(error, Error::RegionOutOfBounds { .. }));
    // Inside the header.
    let error = parse_corrupted(|bytes| put(bytes, entry(W1, DATA_OFFSET), &0u64.to_le_bytes()));
    assert!(matches!(error, Error::RegionOutOfBounds { offset: 0, .. }));
    // Offset + length wraps around u64.
    let error = parse_corrupted(|bytes| {
        put(
            bytes,
            entry(W1, DATA_OFFSET),
            &(u64::MAX - 63).to_le_bytes(),
        );
    });
    assert!(matches!(error, Error::RegionOutOfBounds { .. }));
}

#[test]
fn nan_and_infinite_and_negative_scales() {
    for (channel, value) in [
        (0u64, f32::NAN),
        (1, f32::INFINITY),
        (3, f32::NEG_INFINITY),
        (2, -1.0),
    ] {
        let error = parse_corrupted(|bytes| {
            let scales = read_u64(bytes, entry(W2, SCALES_OFFSET)) as usize;
            put(bytes, scales + 4 * channel as usize, &value.to_le_bytes());
        });
        assert!(
            matches!(error, Error::InvalidScale { channel: c, ref tensor, .. } if c == channel && tensor == "w2"),
            "{value}: {error}"
        );
    }
}

#[test]
fn duplicate_names() {
    let error = parse_corrupted(|bytes| {
        let at = u32::from_le_bytes(bytes[entry(W2, NAME_OFFSET)..][..4].try_into().unwrap());
        bytes[at as usize + 1] = b'1';
    });
    assert!(matches!(error, Error::DuplicateName { ref name } if name == "w1"));
    let specs = [
        TensorSpec::new("a", Dtype::I8, &[1]),
        TensorSpec::new("a", Dtype::I8, &[1]),
    ];
    assert!(matches!(
        BlockLayout::plan(&specs),
        Err(Error::DuplicateName { .. })
    ));
}

#[test]
fn bad_names() {
    let error = parse_corrupted(|bytes| put(bytes, entry(W1, NAME_BYTES), &0u16.to_le_bytes()));
    assert!(matches!(
        error,
        Error::BadNameLength {
            index: 0,
            bytes: 0,
            ..
        }
    ));
    let error = parse_corrupted(|bytes| put(bytes, entry(W1, NAME_OFFSET), &0u32.to_le_bytes()));
    assert!(matches!(error, Error::NameOutOfBounds { index: 0 }));
    let error =
        parse_corrupted(|bytes| put(bytes, entry(W1, NAME_OFFSET), &u32::MAX.to_le_bytes()));
    assert!(matches!(error, Error::NameOutOfBounds { index: 0 }));
    let error = parse_corrupted(|bytes| {
        let at = u32::from_le_bytes(bytes[entry(W1, NAME_OFFSET)..][..4].try_into().unwrap());
        bytes[at as usize] = 0xff;
    });
    assert!(matches!(error, Error::NameNotUtf8 { index: 0 }));
}

#[test]
fn name_length_at_the_bound_and_one_past() {
    let at_max = "n".repeat(TENSOR_NAME_BYTES_MAX as usize);
    let bytes = encode_raw_to_vec(&[RawTensor {
        name: &at_max,
        dtype: Dtype::I8,
        shape: &[1],
        data: &[1],
        scales: None,
    }])
    .unwrap();
    assert_eq!(
        BlockRef::parse(&bytes).unwrap().data(&at_max).unwrap(),
        &[1]
    );
    let past = "n".repeat(TENSOR_NAME_BYTES_MAX as usize + 1);
    assert!(matches!(
        BlockLayout::plan(&[TensorSpec::new(past, Dtype::I8, &[1])]),
        Err(Error::BadNameLength { bytes: 257, .. })
    ));
    let mut bytes = bytes;
    put(
        &mut bytes,
        entry(0, NAME_BYTES),
        &(TENSOR_NAME_BYTES_MAX as u16 + 1).to_le_bytes(),
    );
    assert!(matches!(
        BlockLayout::parse(&bytes),
        Err(Error::BadNameLength { bytes: 257, .. })
    ));
}

#[test]
fn unknown_codes_and_rank() {
    let error = parse_corrupted(|bytes| bytes[entry(W1, DTYPE)] = 9);
    assert!(matches!(error, Error::UnknownDtype { code: 9, ref tensor } if tensor == "w1"));
    let error = parse_corrupted(|bytes| bytes[entry(W1, DTYPE)] = 0);
    assert!(matches!(error, Error::UnknownDtype { code: 0, .. }));
    let error = parse_corrupted(|bytes| bytes[entry(W1, QUANTIZATION)] = 7);
    assert!(matches!(error, Error::UnknownQuantization { code: 7, .. }));
    let error = parse_corrupted(|bytes| bytes[entry(W1, RANK)] = 9);
    assert!(matches!(
        error,
        Error::RankTooLarge {
            rank: 9,
            max: 8,
            ..
        }
    ));
}

#[test]
fn quantization_that_does_not_fit_its_tensor() {
    let error = parse_corrupted(|bytes| bytes[entry(W2, DTYPE)] = Dtype::F32.code());
    assert!(matches!(error, Error::QuantizationMismatch { .. }));
    let error = parse_corrupted(|bytes| bytes[entry(W2, RANK)] = 1);
    // Rank 1 leaves the second dimension set: refused as a reserved field first.
    assert!(matches!(error, Error::ReservedNotZero { .. }));
}

#[test]
fn too_many_tensors_at_the_bound_and_one_past() {
    let names: Vec<String> = (0..TENSOR_COUNT_MAX).map(|i| format!("t{i}")).collect();
    let data = [0u8];
    let tensors: Vec<RawTensor<'_>> = names
        .iter()
        .map(|name| RawTensor {
            name,
            dtype: Dtype::I8,
            shape: &[1],
            data: &data,
            scales: None,
        })
        .collect();
    let bytes = encode_raw_to_vec(&tensors).unwrap();
    assert_eq!(
        BlockLayout::parse(&bytes).unwrap().tensors().len(),
        TENSOR_COUNT_MAX as usize
    );

    let mut more = tensors.clone();
    let extra = "extra".to_owned();
    more.push(RawTensor {
        name: &extra,
        dtype: Dtype::I8,
        shape: &[1],
        data: &data,
        scales: None,
    });
    assert!(matches!(
        encode_raw_to_vec(&more),
        Err(Error::TooManyTensors { count: 4097, .. })
    ));

    let mut bytes = bytes;
    put(
        &mut bytes,
        TENSOR_COUNT,
        &(TENSOR_COUNT_MAX + 1).to_le_bytes(),
    );
    assert!(matches!(
        BlockLayout::parse(&bytes),
        Err(Error::TooManyTensors { count: 4097, .. })
    ));
}

/// A block of no tensors whose header (all reserved space) is `header_bytes` long.
fn empty_block_with_header(header_bytes: u32) -> Vec<u8> {
    let mut bytes = vec![0u8; header_bytes as usize];
    put(&mut bytes, 0, &MAGIC);
    put(&mut bytes, VERSION, &1u16.to_le_bytes());
    put(&mut bytes, HEADER_BYTES, &header_bytes.to_le_bytes());
    put(
        &mut bytes,
        PAYLOAD_BYTES,
        &u64::from(header_bytes).to_le_bytes(),
    );
    bytes
}

#[test]
fn header_size_at_the_bound_and_one_past() {
    let layout = BlockLayout::parse(&empty_block_with_header(TENSOR_HEADER_BYTES_MAX)).unwrap();
    assert!(layout.tensors().is_empty());
    assert!(matches!(
        BlockLayout::parse(&empty_block_with_header(TENSOR_HEADER_BYTES_MAX + 1)),
        Err(Error::HeaderTooLarge { bytes, .. }) if bytes == u64::from(TENSOR_HEADER_BYTES_MAX) + 1
    ));
}

#[test]
fn header_too_small_for_its_table() {
    let error = parse_corrupted(|bytes| put(bytes, HEADER_BYTES, &100u32.to_le_bytes()));
    assert!(matches!(
        error,
        Error::HeaderTooSmall {
            header_bytes: 100,
            tensor_count: 3
        }
    ));
}

#[test]
fn view_errors_are_typed() {
    let block = TensorBlock::new(support::immutable(support::expert_block())).unwrap();
    assert!(matches!(
        block.tensor("w9"),
        Err(Error::UnknownTensor { .. })
    ));
    assert!(matches!(
        block.scales("w1"),
        Err(Error::WrongQuantization { .. })
    ));
    assert!(matches!(
        block.int8("w3"),
        Err(Error::WrongQuantization { .. })
    ));
    assert!(matches!(
        TensorBlock::new(support::immutable(vec![0u8; 10])),
        Err(Error::Truncated { .. })
    ));
}
