//! INT8 symmetric per-output-channel quantization, in plain Rust.
//!
//! Each row (output channel) of a `[rows, cols]` weight gets its own scale
//! `scale = max|w| / 127`, and its codes are `round_half_even(w / scale)` clamped to ±127
//! (−128 is never produced, so negation stays exact). A row of zeros has scale 0 and codes 0.
//! The libtorch path (`Int8Weight::quantize`) computes the same numbers with the same rounding,
//! so both produce identical blocks.

use crate::error::{Error, Result};

/// Largest code magnitude: the grid is symmetric, −127..=127.
pub const INT8_CODE_MAX: f32 = 127.0;

/// A quantized `[rows, cols]` weight as it is stored: codes (two's complement bytes) and scales.
#[derive(Debug, Clone, PartialEq)]
pub struct Int8Matrix {
    /// `rows × cols` codes, row-major, each an `i8` stored as its byte.
    pub data: Vec<u8>,
    /// One scale per row.
    pub scales: Vec<f32>,
    /// Row length.
    pub cols: usize,
}

impl Int8Matrix {
    /// Number of rows (output channels).
    pub fn rows(&self) -> usize {
        self.scales.len()
    }

    /// The weights the codes stand for: `code × scale` per row.
    pub fn dequantize(&self) -> Vec<f32> {
        dequantize_int8_per_channel(&self.data, &self.scales, self.cols)
    }
}

/// Quantizes a row-major `[rows, cols]` f32 weight, `rows = weights.len() / cols`.
pub fn quantize_int8_per_channel(weights: &[f32], cols: usize) -> Result<Int8Matrix> {
    let rows = matrix_rows(weights.len(), cols)?;
    let mut data = vec![0u8; weights.len()];
    let mut scales = Vec::with_capacity(rows);
    if cols > 0 {
        for (row_index, (row, codes)) in weights
            .chunks_exact(cols)
            .zip(data.chunks_exact_mut(cols))
            .enumerate()
        {
            scales.push(quantize_row(row, codes, row_index * cols)?);
        }
    } else {
        scales.resize(rows, 0.0);
    }
    Ok(Int8Matrix { data, scales, cols })
}

/// Quantizes one row into `codes` (same length) and returns its scale. `first_index` is the
/// row's flat index, only used to name a non-finite weight in the error.
pub fn quantize_row(row: &[f32], codes: &mut [u8], first_index: usize) -> Result<f32> {
    debug_assert_eq!(row.len(), codes.len());
    let mut max_abs = 0.0f32;
    for (offset, value) in row.iter().enumerate() {
        if !value.is_finite() {
            return Err(Error::NonFiniteWeight {
                tensor: String::new(),
                index: (first_index + offset) as u64,
                value: *value,
            });
        }
        max_abs = max_abs.max(value.abs());
    }
    let scale = max_abs / INT8_CODE_MAX;
    if scale == 0.0 {
        codes.fill(0);
        return Ok(0.0);
    }
    for (code, value) in codes.iter_mut().zip(row) {
        let rounded = (value / scale)
            .round_ties_even()
            .clamp(-INT8_CODE_MAX, INT8_CODE_MAX);
        // In range by the clamp; `as` then converts exactly.
        *code = (rounded as i8) as u8;
    }
    Ok(scale)
}

/// The f32 weights INT8 codes stand for: `code × scale[row]`.
pub fn dequantize_int8_per_channel(data: &[u8], scales: &[f32], cols: usize) -> Vec<f32> {
    if cols == 0 {
        return Vec::new();
    }
    data.chunks_exact(cols)
        .zip(scales)
        .flat_map(|(row, scale)| row.iter().map(move |code| f32::from(*code as i8) * scale))
        .collect()
}

fn matrix_rows(elements: usize, cols: usize) -> Result<usize> {
    match (elements, cols) {
        (0, 0) => Ok(0),
        (_, 0) => Err(Error::BadMatrix {
            elements: elements as u64,
            cols: 0,
        }),
        _ if !elements.is_multiple_of(cols) => Err(Error::BadMatrix {
            elements: elements as u64,
            cols: cols as u64,
        }),
        _ => Ok(elements / cols),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_maximum_maps_to_127_and_zero_rows_have_scale_zero() {
        let matrix = quantize_int8_per_channel(&[1.0, -2.0, 0.5, 0.0, 0.0, 0.0], 3).unwrap();
        assert_eq!(matrix.scales, vec![2.0 / 127.0, 0.0]);
        assert_eq!(matrix.data[1] as i8, -127);
        assert_eq!(&matrix.data[3..], &[0, 0, 0]);
    }

    #[test]
    fn rounding_is_half_to_even_like_torch_round() {
        // max 127 → scale 1; 2.5 → 2 and 3.5 → 4 under half-to-even.
        let matrix = quantize_int8_per_channel(&[127.0, 2.5, 3.5, -2.5], 4).unwrap();
        let codes: Vec<i8> = matrix.data.iter().map(|byte| *byte as i8).collect();
        assert_eq!(codes, vec![127, 2, 4, -2]);
    }

    #[test]
    fn dequantized_error_is_at_most_half_a_step() {
        let weights: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) / 7.0)
            .collect();
        let matrix = quantize_int8_per_channel(&weights, 16).unwrap();
        for (row, (original, restored)) in weights
            .chunks(16)
            .zip(matrix.dequantize().chunks(16))
            .enumerate()
        {
            let half_step = matrix.scales[row] / 2.0;
            for (a, b) in original.iter().zip(restored) {
                assert!((a - b).abs() <= half_step * 1.0001, "{a} vs {b}");
            }
        }
    }

    #[test]
    fn non_finite_weights_and_ragged_matrices_are_refused() {
        assert!(matches!(
            quantize_int8_per_channel(&[1.0, f32::NAN], 2),
            Err(Error::NonFiniteWeight { index: 1, .. })
        ));
        assert!(matches!(
            quantize_int8_per_channel(&[1.0, 2.0, 3.0], 2),
            Err(Error::BadMatrix {
                elements: 3,
                cols: 2
            })
        ));
        assert!(matches!(
            quantize_int8_per_channel(&[1.0], 0),
            Err(Error::BadMatrix { .. })
        ));
    }
}
