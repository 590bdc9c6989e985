//! Encoding libtorch tensors into a block, streamed in bounded chunks.

use std::io::Write;

use tch::{Kind, Tensor};

use crate::error::{Error, Result};
use crate::format::TensorSpec;
use crate::int8::quantize_rows;
use crate::view::dtype_of;
use crate::writer::BlockWriter;

/// Largest staging buffer the encoder uses between libtorch and the writer: the memory a block
/// costs to encode beyond the tensors themselves, whatever their size.
pub const ENCODE_CHUNK_BYTES: usize = 4 * 1024 * 1024;

/// How a tensor is stored in the block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Encoding {
    /// As it is: f32, f16, bf16 or i8, little-endian.
    AsIs,
    /// INT8 per-output-channel symmetric quantization of a 2-D floating-point weight: a quarter
    /// of the f32 size plus one f32 scale per row.
    Int8PerChannel,
}

/// One tensor to encode.
#[derive(Debug, Clone, Copy)]
pub struct EncodeTensor<'a> {
    /// Unique name inside the block.
    pub name: &'a str,
    /// The values, on any device, contiguous or not.
    pub tensor: &'a Tensor,
    /// How to store them.
    pub encoding: Encoding,
}

impl<'a> EncodeTensor<'a> {
    /// Stores `tensor` as it is.
    pub fn as_is(name: &'a str, tensor: &'a Tensor) -> Self {
        Self {
            name,
            tensor,
            encoding: Encoding::AsIs,
        }
    }

    /// Stores `tensor` INT8-quantized per output channel.
    pub fn int8(name: &'a str, tensor: &'a Tensor) -> Self {
        Self {
            name,
            tensor,
            encoding: Encoding::Int8PerChannel,
        }
    }

    fn spec(&self) -> Result<TensorSpec> {
        let unsupported = |reason: String| Error::UnsupportedTensor {
            tensor: self.name.to_owned(),
            reason,
        };
        let shape: Vec<u64> = self.tensor.size().iter().map(|dim| *dim as u64).collect();
        match self.encoding {
            Encoding::AsIs => {
                let kind = self.tensor.kind();
                let dtype = dtype_of(kind)
                    .ok_or_else(|| unsupported(format!("kind {kind:?} has no stored dtype")))?;
                Ok(TensorSpec::new(self.name, dtype, &shape))
            }
            Encoding::Int8PerChannel => match shape.as_slice() {
                [rows, cols] if self.tensor.is_floating_point() => {
                    Ok(TensorSpec::int8_per_channel(self.name, *rows, *cols))
                }
                _ => Err(unsupported(format!(
                    "INT8 per-channel quantization takes a 2-D floating-point tensor, got \
                     {:?} {shape:?}",
                    self.tensor.kind()
                ))),
            },
        }
    }
}

/// Encodes tensors into `out`, in order, streaming each through a buffer of at most
/// [`ENCODE_CHUNK_BYTES`] (quantized weights are quantized chunk by chunk of rows), so the
/// encoded block is never held in memory unless `out` holds it.
pub fn encode_tensors<W: Write>(out: W, tensors: &[EncodeTensor<'_>]) -> Result<W> {
    let specs = tensors
        .iter()
        .map(EncodeTensor::spec)
        .collect::<Result<Vec<_>>>()?;
    let mut writer = BlockWriter::new(out, &specs)?;
    let mut buffer = Vec::new();
    for tensor in tensors {
        match tensor.encoding {
            Encoding::AsIs => write_as_is(&mut writer, tensor.tensor, &mut buffer)?,
            Encoding::Int8PerChannel => {
                write_int8(&mut writer, tensor.name, tensor.tensor, &mut buffer)?;
            }
        }
    }
    writer.finish()
}

/// Encodes tensors into a new `Vec`.
pub fn encode_tensors_to_vec(tensors: &[EncodeTensor<'_>]) -> Result<Vec<u8>> {
    encode_tensors(Vec::new(), tensors)
}

fn write_as_is<W: Write>(
    writer: &mut BlockWriter<W>,
    tensor: &Tensor,
    buffer: &mut Vec<u8>,
) -> Result<()> {
    let element_bytes = tensor.kind().elt_size_in_bytes();
    let flat = tensor.f_contiguous()?.f_reshape([-1])?;
    let count = flat.size()[0];
    let chunk_elements = (ENCODE_CHUNK_BYTES / element_bytes) as i64;
    let mut start = 0;
    while start < count {
        let elements = chunk_elements.min(count - start);
        let bytes = elements as usize * element_bytes;
        buffer.resize(bytes, 0);
        flat.f_narrow(0, start, elements)?
            .f_copy_data_u8(buffer, elements as usize)?;
        writer.write_data(buffer)?;
        start += elements;
    }
    Ok(())
}

fn write_int8<W: Write>(
    writer: &mut BlockWriter<W>,
    name: &str,
    weight: &Tensor,
    buffer: &mut Vec<u8>,
) -> Result<()> {
    let size = weight.size();
    let (rows, cols) = (size[0], size[1]);
    // Rows per chunk so that the f32 temporaries stay near ENCODE_CHUNK_BYTES.
    let chunk_rows = (ENCODE_CHUNK_BYTES as i64 / (cols.max(1) * 4)).max(1);
    let mut scales = Vec::with_capacity(rows as usize);
    let mut row = 0;
    while row < rows {
        let count = chunk_rows.min(rows - row);
        let chunk = weight.f_narrow(0, row, count)?;
        let (codes, chunk_scales) = quantize_rows(name, &chunk).map_err(|error| match error {
            Error::NonFiniteWeight {
                tensor,
                index,
                value,
            } => Error::NonFiniteWeight {
                tensor,
                index: index + (row * cols) as u64,
                value,
            },
            other => other,
        })?;
        let bytes = (count * cols) as usize;
        buffer.resize(bytes, 0);
        codes.f_copy_data_u8(buffer, bytes)?;
        writer.write_data(buffer)?;
        let mut chunk_values = vec![0f32; count as usize];
        chunk_scales
            .f_to_kind(Kind::Float)?
            .f_copy_data(&mut chunk_values, count as usize)?;
        scales.extend_from_slice(&chunk_values);
        row += count;
    }
    // A weight without rows has no scales to write (the writer has moved past it).
    if rows > 0 {
        writer.write_scales(&scales)?;
    }
    Ok(())
}
