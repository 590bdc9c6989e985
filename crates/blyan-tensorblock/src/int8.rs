//! INT8 per-channel weights as libtorch tensors: quantize, dequantize, and `x @ Wᵀ`.

use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::quant::INT8_CODE_MAX;

/// A quantized `[rows, cols]` weight: i8 codes and f32 scales `[rows]`, value = code × scale of
/// its row. Over a block ([`crate::TensorBlock::int8`]) both tensors borrow the payload.
#[derive(Debug)]
pub struct Int8Weight {
    data: Tensor,
    scales: Tensor,
}

impl Int8Weight {
    /// Quantizes a 2-D floating-point weight (rows are output channels), on its device.
    /// Produces the same codes and scales as [`crate::quantize_int8_per_channel`].
    pub fn quantize(weight: &Tensor) -> Result<Self> {
        let (data, scales) = quantize_rows("", weight)?;
        Ok(Self { data, scales })
    }

    /// Pairs codes with scales, checking kinds and shapes.
    pub(crate) fn from_parts(data: Tensor, scales: Tensor) -> Result<Self> {
        let size = data.size();
        let rows_match = matches!(size.as_slice(), [rows, _] if scales.size() == [*rows]);
        if data.kind() != Kind::Int8 || scales.kind() != Kind::Float || !rows_match {
            return Err(Error::QuantizationMismatch {
                tensor: String::new(),
                reason: "INT8 weight needs i8 codes [rows, cols] and f32 scales [rows]",
            });
        }
        Ok(Self { data, scales })
    }

    /// The i8 codes `[rows, cols]`.
    pub fn data(&self) -> &Tensor {
        &self.data
    }

    /// The f32 scales `[rows]`.
    pub fn scales(&self) -> &Tensor {
        &self.scales
    }

    /// Output channels.
    pub fn rows(&self) -> i64 {
        self.data.size()[0]
    }

    /// Input features.
    pub fn cols(&self) -> i64 {
        self.data.size()[1]
    }

    /// A new f32 `[rows, cols]` tensor with the weight's values (a copy by nature).
    pub fn dequantize(&self) -> Result<Tensor> {
        // One pass: i8 × f32 promotes to f32 inside the kernel (each code converted exactly,
        // then multiplied in f32), with no intermediate f32 copy of the codes.
        Ok(self.data.f_mul(&self.scales.f_unsqueeze(1)?)?)
    }

    /// `x @ Wᵀ` for `x` of shape `[..., cols]` (f32, f16 or bf16), computed on the INT8 codes
    /// directly (libtorch's weight-only INT8 kernel reads each code once and applies the row's
    /// scale to the dot product): no f32 copy of the weight is made. Result `[..., rows]` in
    /// `x`'s kind.
    ///
    /// This is the memory-saving path (the weight stays a quarter of its f32 size), not the
    /// fast one: on the x86 CPUs measured (`benches/tensorblock.rs`, libtorch 2.11) the kernel
    /// is several times slower than an f32 matmul. For throughput, dequantize once on load
    /// ([`crate::TensorBlock::load_f32`]) and multiply in f32.
    ///
    /// bf16 input is computed in f32: libtorch 2.11's bf16 CPU kernel reads out of bounds
    /// (SIGSEGV) when `cols` is not a multiple of 16. Empty shapes take the dequantizing path.
    pub fn linear(&self, x: &Tensor) -> Result<Tensor> {
        let (flat, out_size) = self.flatten_input(x)?;
        if flat.numel() == 0 || self.data.numel() == 0 {
            return self.linear_dequantized(x);
        }
        let compute_kind = match flat.kind() {
            Kind::BFloat16 => Kind::Float,
            kind => kind,
        };
        let input = flat.f_to_kind(compute_kind)?;
        let scales = self.scales.f_to_kind(compute_kind)?;
        let codes = self.data.f_contiguous()?;
        let out = input.f_internal_weight_int8pack_mm(&codes, &scales)?;
        Ok(out.f_to_kind(x.kind())?.f_reshape(out_size.as_slice())?)
    }

    /// `x @ Wᵀ` by dequantizing first and calling the f32 matmul: the reference
    /// [`Int8Weight::linear`] is checked against, and the path for kinds its kernel lacks.
    pub fn linear_dequantized(&self, x: &Tensor) -> Result<Tensor> {
        let weight = self.dequantize()?.f_to_kind(x.kind())?;
        Ok(x.f_matmul(&weight.f_tr()?)?)
    }

    fn flatten_input(&self, x: &Tensor) -> Result<(Tensor, Vec<i64>)> {
        let size = x.size();
        let cols = self.cols();
        let mismatch = || Error::QuantizationMismatch {
            tensor: String::new(),
            reason: "x's last dimension must equal the weight's column count",
        };
        let (last, batch) = size.split_last().ok_or_else(mismatch)?;
        if *last != cols {
            return Err(mismatch());
        }
        if !matches!(x.kind(), Kind::Float | Kind::Half | Kind::BFloat16) {
            return Err(Error::UnsupportedTensor {
                tensor: String::new(),
                reason: format!(
                    "INT8 linear takes f32, f16 or bf16 input, got {:?}",
                    x.kind()
                ),
            });
        }
        let mut out_size = batch.to_vec();
        out_size.push(self.rows());
        let flat = x.f_reshape([-1, cols])?.f_contiguous()?;
        Ok((flat, out_size))
    }
}

/// Quantizes a `[rows, cols]` floating-point chunk: i8 codes and f32 scales. `name` only labels
/// errors. Same arithmetic as `quant::quantize_row`: `scale = max|w| / 127`, codes
/// `round_half_even(w / scale)` clamped to ±127, scale 0 and codes 0 for a zero row.
pub(crate) fn quantize_rows(name: &str, weight: &Tensor) -> Result<(Tensor, Tensor)> {
    if weight.dim() != 2 || !weight.is_floating_point() {
        return Err(Error::UnsupportedTensor {
            tensor: name.to_owned(),
            reason: format!(
                "INT8 per-channel quantization takes a 2-D floating-point tensor, got {:?} {:?}",
                weight.kind(),
                weight.size()
            ),
        });
    }
    let values = weight.f_to_kind(Kind::Float)?;
    let finite = values.f_isfinite()?;
    if finite.f_all()?.f_int64_value(&[])? == 0 {
        // argmax of the 0/1 "is not finite" flags: the first non-finite weight.
        let flat_index = finite
            .f_logical_not()?
            .f_to_kind(Kind::Uint8)?
            .f_reshape([-1])?
            .f_argmax(0, false)?;
        let index = flat_index.f_int64_value(&[])?;
        let value = values.f_reshape([-1])?.f_double_value(&[index])? as f32;
        return Err(Error::NonFiniteWeight {
            tensor: name.to_owned(),
            index: index as u64,
            value,
        });
    }
    let scales = values
        .f_abs()?
        .f_amax([1i64].as_slice(), false)?
        .f_div_scalar(f64::from(INT8_CODE_MAX))?;
    // A zero row has scale 0: divide it by 1 instead (its values are all 0, so codes are 0).
    let divisors = scales.f_where_scalarother(&scales.f_gt(0.0)?, 1.0)?;
    let codes = values
        .f_div(&divisors.f_unsqueeze(1)?)?
        .f_round()?
        .f_clamp(-f64::from(INT8_CODE_MAX), f64::from(INT8_CODE_MAX))?
        .f_to_kind(Kind::Int8)?;
    Ok((codes, scales))
}
