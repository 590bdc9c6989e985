//! Encode → decode gives back what went in, from raw bytes and from libtorch tensors.

use blyan_tensorblock::{
    BlockLayout, BlockRef, BlockWriter, Dtype, EncodeTensor, Int8Weight, RawTensor, TensorBlock,
    encode_raw_to_vec, encode_tensors_to_vec, kind_of, quantize_int8_per_channel,
};
use proptest::prelude::*;
use tch::{Kind, Tensor};

use crate::support;

/// One tensor in its stored form, owning its bytes.
#[derive(Debug, Clone)]
struct OwnedRaw {
    dtype: Dtype,
    shape: Vec<u64>,
    data: Vec<u8>,
    scales: Option<Vec<f32>>,
}

fn dtype_strategy() -> impl Strategy<Value = Dtype> {
    prop::sample::select(Dtype::ALL.to_vec())
}

fn plain_strategy() -> impl Strategy<Value = OwnedRaw> {
    (dtype_strategy(), prop::collection::vec(0u64..5, 0..4)).prop_flat_map(|(dtype, shape)| {
        let bytes = shape.iter().product::<u64>() * dtype.size_bytes();
        prop::collection::vec(any::<u8>(), bytes as usize).prop_map(move |data| OwnedRaw {
            dtype,
            shape: shape.clone(),
            data,
            scales: None,
        })
    })
}

fn quantized_strategy() -> impl Strategy<Value = OwnedRaw> {
    (0u64..5, 0u64..6).prop_flat_map(|(rows, cols)| {
        (
            prop::collection::vec(any::<u8>(), (rows * cols) as usize),
            prop::collection::vec(0.0f32..1e3, rows as usize),
        )
            .prop_map(move |(data, scales)| OwnedRaw {
                dtype: Dtype::I8,
                shape: vec![rows, cols],
                data,
                scales: Some(scales),
            })
    })
}

fn block_strategy() -> impl Strategy<Value = Vec<OwnedRaw>> {
    prop::collection::vec(
        prop_oneof![3 => plain_strategy(), 1 => quantized_strategy()],
        0..6,
    )
}

fn names(count: usize) -> Vec<String> {
    (0..count).map(|i| format!("layer0.expert{i}.w")).collect()
}

fn raw_tensors<'a>(names: &'a [String], tensors: &'a [OwnedRaw]) -> Vec<RawTensor<'a>> {
    names
        .iter()
        .zip(tensors)
        .map(|(name, tensor)| RawTensor {
            name,
            dtype: tensor.dtype,
            shape: &tensor.shape,
            data: &tensor.data,
            scales: tensor.scales.as_deref(),
        })
        .collect()
}

proptest! {
    #[test]
    fn raw_tensors_round_trip(tensors in block_strategy()) {
        let names = names(tensors.len());
        let raws = raw_tensors(&names, &tensors);
        let bytes = encode_raw_to_vec(&raws).unwrap();
        let block = BlockRef::parse(&bytes).unwrap();
        let specs: Vec<_> = raws.iter().map(RawTensor::spec).collect();
        prop_assert_eq!(block.layout(), &BlockLayout::plan(&specs).unwrap());
        prop_assert_eq!(block.layout().payload_bytes(), bytes.len() as u64);
        for (name, tensor) in names.iter().zip(&tensors) {
            prop_assert_eq!(block.data(name).unwrap(), &tensor.data[..]);
            let info = block.layout().get(name).unwrap();
            prop_assert_eq!(info.shape(), &tensor.shape[..]);
            prop_assert_eq!(info.dtype(), tensor.dtype);
            if let Some(scales) = &tensor.scales {
                prop_assert_eq!(&block.scales(name).unwrap(), scales);
            }
        }
    }

    #[test]
    fn chunked_writes_give_the_same_bytes(
        tensors in block_strategy(),
        chunk_bytes in 1usize..17,
    ) {
        let names = names(tensors.len());
        let raws = raw_tensors(&names, &tensors);
        let whole = encode_raw_to_vec(&raws).unwrap();
        let specs: Vec<_> = raws.iter().map(RawTensor::spec).collect();
        let mut writer = BlockWriter::new(Vec::new(), &specs).unwrap();
        for tensor in &tensors {
            for chunk in tensor.data.chunks(chunk_bytes) {
                writer.write_data(chunk).unwrap();
            }
            if let Some(scales) = tensor.scales.as_ref().filter(|scales| !scales.is_empty()) {
                writer.write_scales(scales).unwrap();
            }
        }
        prop_assert_eq!(writer.finish().unwrap(), whole);
    }
}

fn dims_strategy() -> impl Strategy<Value = Vec<i64>> {
    prop::collection::vec(0i64..6, 0..4)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn libtorch_tensors_round_trip_through_the_view(
        dims in dims_strategy(),
        dtype in dtype_strategy(),
        values in prop::collection::vec(-100.0f32..100.0, 125),
    ) {
        let count = dims.iter().product::<i64>() as usize;
        let original = Tensor::from_slice(&values[..count]).reshape(dims.as_slice()).to_kind(kind_of(dtype).unwrap());
        let transposed =
            if dims.len() >= 2 { original.transpose(0, 1) } else { original.shallow_clone() };
        let bytes = encode_tensors_to_vec(&[
            EncodeTensor::as_is("original", &original),
            EncodeTensor::as_is("transposed", &transposed),
        ]).unwrap();
        let block = TensorBlock::new(support::immutable(bytes)).unwrap();
        let viewed = block.tensor("original").unwrap();
        prop_assert_eq!(viewed.kind(), original.kind());
        prop_assert_eq!(viewed.size(), original.size());
        prop_assert!(viewed.equal(&original));
        prop_assert!(block.tensor("transposed").unwrap().equal(&transposed));
        let as_f32 = block.load_f32("original").unwrap();
        prop_assert!(as_f32.equal(&original.to_kind(Kind::Float)));
    }

    /// The libtorch quantizer and the plain-Rust one produce the same block, byte for byte.
    #[test]
    fn libtorch_and_rust_quantization_agree(
        rows in 1usize..9,
        cols in 1usize..17,
        values in prop::collection::vec(-100.0f32..100.0, 9 * 17),
        zero_row in any::<bool>(),
    ) {
        let mut weights = values[..rows * cols].to_vec();
        if zero_row {
            weights[..cols].fill(0.0);
        }
        let weight = Tensor::from_slice(&weights).reshape([rows as i64, cols as i64]);
        let expected = quantize_int8_per_channel(&weights, cols).unwrap();

        let quantized = Int8Weight::quantize(&weight).unwrap();
        let mut codes = vec![0u8; rows * cols];
        quantized.data().copy_data_u8(&mut codes, rows * cols);
        prop_assert_eq!(&codes, &expected.data);
        let mut scales = vec![0f32; rows];
        quantized.scales().copy_data(&mut scales, rows);
        prop_assert_eq!(&scales, &expected.scales);

        let from_torch = encode_tensors_to_vec(&[EncodeTensor::int8("w", &weight)]).unwrap();
        let from_rust = encode_raw_to_vec(&[RawTensor {
            name: "w",
            dtype: Dtype::I8,
            shape: &[rows as u64, cols as u64],
            data: &expected.data,
            scales: Some(&expected.scales),
        }]).unwrap();
        prop_assert_eq!(from_torch, from_rust);
    }
}

#[test]
fn tensors_larger_than_one_encode_chunk_round_trip() {
    // 1.5 encode chunks of f32, and an INT8 weight whose rows span several chunks.
    let large = Tensor::arange(1_572_864, (Kind::Float, tch::Device::Cpu)).reshape([1536, 1024]);
    let bytes = encode_tensors_to_vec(&[
        EncodeTensor::as_is("large", &large),
        EncodeTensor::int8("quantized", &large),
    ])
    .unwrap();
    let block = TensorBlock::new(support::immutable(bytes)).unwrap();
    assert!(block.tensor("large").unwrap().equal(&large));
    let restored = block.load_f32("quantized").unwrap();
    let error = (&restored - &large).abs().max().double_value(&[]);
    let largest_scale = block.scales("quantized").unwrap().max().double_value(&[]);
    assert!(
        error <= largest_scale / 2.0 * 1.0001,
        "{error} vs half step {}",
        largest_scale / 2.0
    );
}

#[test]
fn an_empty_block_round_trips() {
    let bytes = encode_tensors_to_vec(&[]).unwrap();
    let block = TensorBlock::new(support::immutable(bytes)).unwrap();
    assert!(block.layout().tensors().is_empty());
}

#[test]
fn unsupported_tensors_are_refused_by_the_encoder() {
    let double = Tensor::zeros([2], (Kind::Double, tch::Device::Cpu));
    assert!(matches!(
        encode_tensors_to_vec(&[EncodeTensor::as_is("d", &double)]),
        Err(blyan_tensorblock::Error::UnsupportedTensor { .. })
    ));
    let vector = Tensor::zeros([2], (Kind::Float, tch::Device::Cpu));
    assert!(matches!(
        encode_tensors_to_vec(&[EncodeTensor::int8("v", &vector)]),
        Err(blyan_tensorblock::Error::UnsupportedTensor { .. })
    ));
}
