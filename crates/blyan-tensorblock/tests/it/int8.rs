//! INT8 per-channel weights: error bound, size, and both compute paths.

use blyan_tensorblock::{
    EncodeTensor, Error, Int8Weight, TensorBlock, dequantize_int8_per_channel,
    encode_tensors_to_vec,
};
use tch::{Device, Kind, Tensor};

use crate::support;

const ROWS: i64 = 512;
const COLS: i64 = 1024;
const BATCH: i64 = 16;

fn relative_error(approximation: &Tensor, exact: &Tensor) -> f64 {
    let difference = (approximation - exact).norm().double_value(&[]);
    difference / exact.norm().double_value(&[])
}

/// A fixed Gaussian weight and input (seeded in a private generator-free way: from a
/// deterministic Box-Muller over a counter, so parallel tests cannot disturb it).
fn gaussian(rows: i64, cols: i64, salt: u64) -> Tensor {
    let count = (rows * cols) as usize;
    let uniform = |i: u64| -> f64 {
        // SplitMix64 of the index: a deterministic, well-mixed 53-bit uniform in (0, 1).
        let mut z = i.wrapping_add(salt.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        ((z >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    };
    let values: Vec<f32> = (0..count as u64)
        .map(|i| {
            let (u1, u2) = (uniform(2 * i), uniform(2 * i + 1));
            ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
        })
        .collect();
    Tensor::from_slice(&values).reshape([rows, cols])
}

#[test]
fn matmul_error_on_gaussian_weights_is_under_one_percent() {
    let weight = gaussian(ROWS, COLS, 1);
    let x = gaussian(BATCH, COLS, 2);
    let exact = x.matmul(&weight.tr());
    let bytes = encode_tensors_to_vec(&[EncodeTensor::int8("w", &weight)]).unwrap();
    let block = TensorBlock::new(support::immutable(bytes)).unwrap();
    let quantized = block.int8("w").unwrap();

    let direct = quantized.linear(&x).unwrap();
    let dequantized = quantized.linear_dequantized(&x).unwrap();
    let loaded = x.matmul(&block.load_f32("w").unwrap().tr());
    let error_direct = relative_error(&direct, &exact);
    let error_dequantized = relative_error(&dequantized, &exact);
    println!(
        "relative error of x @ Wᵀ: int8 kernel {error_direct:.5}, dequantized {error_dequantized:.5}"
    );
    assert!(error_direct < 0.01, "{error_direct}");
    assert!(error_dequantized < 0.01, "{error_dequantized}");
    assert!(relative_error(&loaded, &dequantized) < 1e-6);
    // The two compute paths agree far more closely than either does with f32.
    assert!(relative_error(&direct, &dequantized) < 1e-4);
}

#[test]
fn quantized_block_is_a_quarter_of_f32() {
    let weight = gaussian(ROWS, COLS, 3);
    let f32_bytes = encode_tensors_to_vec(&[EncodeTensor::as_is("w", &weight)])
        .unwrap()
        .len();
    let int8_bytes = encode_tensors_to_vec(&[EncodeTensor::int8("w", &weight)])
        .unwrap()
        .len();
    let ratio = int8_bytes as f64 / f32_bytes as f64;
    println!("INT8 block {int8_bytes} B, f32 block {f32_bytes} B, ratio {ratio:.4}");
    // Codes are exactly a quarter; scales (one f32 per row) and the header add the rest.
    assert!((0.25..0.2515).contains(&ratio), "{ratio}");
}

#[test]
fn dequantize_on_load_matches_the_stored_codes_and_scales() {
    let weight = gaussian(8, 32, 4);
    let bytes = encode_tensors_to_vec(&[EncodeTensor::int8("w", &weight)]).unwrap();
    let block = blyan_tensorblock::BlockRef::parse(&bytes).unwrap();
    let expected =
        dequantize_int8_per_channel(block.data("w").unwrap(), &block.scales("w").unwrap(), 32);
    let view = TensorBlock::new(support::immutable(bytes.clone())).unwrap();
    let loaded = view.load_f32("w").unwrap();
    let mut values = vec![0f32; 256];
    loaded.copy_data(&mut values, 256);
    assert_eq!(values, expected);
    assert!(view.tensor("w").unwrap().kind() == Kind::Int8);
}

#[test]
fn linear_keeps_batch_dimensions_and_checks_the_input() {
    let weight = Int8Weight::quantize(&gaussian(6, 4, 5)).unwrap();
    let x = gaussian(6, 4, 6).reshape([2, 3, 4]);
    let y = weight.linear(&x).unwrap();
    assert_eq!(y.size(), [2, 3, 6]);
    assert!(relative_error(&y, &weight.linear_dequantized(&x).unwrap()) < 1e-5);
    let y16 = weight.linear(&x.to_kind(Kind::BFloat16)).unwrap();
    assert_eq!(y16.kind(), Kind::BFloat16);
    let wrong = Tensor::zeros([2, 5], (Kind::Float, Device::Cpu));
    assert!(matches!(
        weight.linear(&wrong),
        Err(Error::QuantizationMismatch { .. })
    ));
    let integers = Tensor::zeros([2, 4], (Kind::Int64, Device::Cpu));
    assert!(matches!(
        weight.linear(&integers),
        Err(Error::UnsupportedTensor { .. })
    ));
}

#[test]
fn non_finite_weights_cannot_be_quantized() {
    let mut values = vec![0.5f32; 12];
    values[7] = f32::NAN;
    let weight = Tensor::from_slice(&values).reshape([3, 4]);
    let result = Int8Weight::quantize(&weight);
    assert!(
        matches!(result, Err(Error::NonFiniteWeight { index: 7, .. })),
        "{result:?}"
    );
    assert!(matches!(
        encode_tensors_to_vec(&[EncodeTensor::int8("w", &weight)]),
        Err(Error::NonFiniteWeight { index: 7, .. })
    ));
}
