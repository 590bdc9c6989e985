//! Streaming encoder: a block is written front to back into any `io::Write`, tensor by tensor,
//! in chunks, so a multi-gigabyte expert is never held twice in memory.

use std::io::Write;

use blyan_primitives::Dtype;

use crate::error::{Error, Region, Result};
use crate::format::{ByteRange, Quantization, TensorInfo, TensorSpec};
use crate::layout::BlockLayout;

/// Zeros for the padding before an aligned region (at most `DATA_ALIGNMENT_BYTES - 1`).
const PADDING: [u8; crate::format::DATA_ALIGNMENT_BYTES as usize] =
    [0; crate::format::DATA_ALIGNMENT_BYTES as usize];

/// Writes one block: the header at construction, then each tensor's data (in one or many
/// chunks) and, for a quantized tensor, its scales, in the order of the layout.
///
/// ```
/// use blyan_tensorblock::{BlockRef, BlockWriter, Dtype, TensorSpec};
///
/// let mut writer = BlockWriter::new(Vec::new(), &[TensorSpec::new("bias", Dtype::F32, &[2])])?;
/// writer.write_data(&1.5f32.to_le_bytes())?; // chunks may be any size
/// writer.write_data(&(-2.0f32).to_le_bytes())?;
/// let bytes = writer.finish()?;
/// assert_eq!(BlockRef::parse(&bytes)?.data("bias")?.len(), 8);
/// # Ok::<(), blyan_tensorblock::Error>(())
/// ```
#[derive(Debug)]
pub struct BlockWriter<W: Write> {
    out: W,
    layout: BlockLayout,
    // Bytes written so far; always ≤ the layout's payload length.
    position: u64,
    // Index of the tensor being written; `tensors().len()` once all are done.
    tensor: usize,
    data_written: u64,
    scales_written: bool,
}

impl<W: Write> BlockWriter<W> {
    /// Plans the layout of `specs` (in order, see [`BlockLayout::plan`]), writes its header, and
    /// waits for the first tensor's data.
    pub fn new(mut out: W, specs: &[TensorSpec]) -> Result<Self> {
        let layout = BlockLayout::plan(specs)?;
        let header = layout.encode_header();
        out.write_all(&header)?;
        let mut writer = Self {
            out,
            position: header.len() as u64,
            layout,
            tensor: 0,
            data_written: 0,
            scales_written: false,
        };
        writer.settle();
        Ok(writer)
    }

    /// The layout being written.
    pub fn layout(&self) -> &BlockLayout {
        &self.layout
    }

    /// The tensor the next bytes belong to, `None` once every tensor is complete.
    pub fn current(&self) -> Option<&TensorInfo> {
        self.layout.tensors().get(self.tensor)
    }

    /// Appends a chunk of the current tensor's data (little-endian elements, or INT8 codes).
    pub fn write_data(&mut self, chunk: &[u8]) -> Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        let Some(tensor) = self.layout.tensors().get(self.tensor) else {
            return Err(misuse("data written after every tensor was complete"));
        };
        let range = tensor.data();
        let remaining = range.bytes - self.data_written;
        if chunk.len() as u64 > remaining {
            return Err(misuse(format!(
                "{} bytes for tensor {:?}, only {remaining} of its data remain",
                chunk.len(),
                tensor.name()
            )));
        }
        if self.data_written == 0 {
            self.pad_to(range)?;
        }
        self.out.write_all(chunk)?;
        self.position += chunk.len() as u64;
        self.data_written += chunk.len() as u64;
        self.settle();
        Ok(())
    }

    /// Writes the scales of the current (quantized) tensor, after all of its data.
    pub fn write_scales(&mut self, scales: &[f32]) -> Result<()> {
        let Some(tensor) = self.layout.tensors().get(self.tensor) else {
            return Err(misuse("scales written after every tensor was complete"));
        };
        let (Some(range), Some(count)) = (tensor.scales(), tensor.scale_count()) else {
            return Err(Error::WrongQuantization {
                tensor: tensor.name().to_owned(),
                expected: Quantization::Int8PerChannel.describe(),
                found: tensor.quantization().describe(),
            });
        };
        if self.data_written != tensor.data().bytes {
            return Err(misuse(format!(
                "scales of tensor {:?} before the last {} bytes of its data",
                tensor.name(),
                tensor.data().bytes - self.data_written
            )));
        }
        if scales.len() as u64 != count {
            return Err(misuse(format!(
                "{} scales for tensor {:?}, it has {count} rows",
                scales.len(),
                tensor.name()
            )));
        }
        for (channel, value) in (0u64..).zip(scales) {
            if !value.is_finite() || *value < 0.0 {
                return Err(Error::InvalidScale {
                    tensor: tensor.name().to_owned(),
                    channel,
                    value: *value,
                });
            }
        }
        let encoded: Vec<u8> = scales
            .iter()
            .flat_map(|scale| scale.to_le_bytes())
            .collect();
        self.pad_to(range)?;
        self.out.write_all(&encoded)?;
        self.position += encoded.len() as u64;
        self.scales_written = true;
        self.settle();
        Ok(())
    }

    /// Checks every tensor is complete, flushes, and returns the writer.
    pub fn finish(mut self) -> Result<W> {
        if let Some(tensor) = self.current() {
            return Err(misuse(format!(
                "finished with tensor {:?} incomplete ({} of {} data bytes{})",
                tensor.name(),
                self.data_written,
                tensor.data().bytes,
                if tensor.scales().is_some() {
                    ", scales pending"
                } else {
                    ""
                }
            )));
        }
        let end = ByteRange {
            offset: self.layout.payload_bytes(),
            bytes: 0,
        };
        self.pad_to(end)?;
        debug_assert_eq!(self.position, self.layout.payload_bytes());
        self.out.flush()?;
        Ok(self.out)
    }

    /// Moves past every tensor that needs nothing more (including empty ones).
    fn settle(&mut self) {
        while let Some(tensor) = self.layout.tensors().get(self.tensor) {
            let data_done = self.data_written == tensor.data().bytes;
            let scales_done = self.scales_written || tensor.scales().is_none_or(|r| r.bytes == 0);
            if !(data_done && scales_done) {
                return;
            }
            self.tensor += 1;
            self.data_written = 0;
            self.scales_written = false;
        }
    }

    fn pad_to(&mut self, range: ByteRange) -> Result<()> {
        // Invariant: regions are planned in write order, so the next one never starts behind.
        debug_assert!(range.offset >= self.position);
        let gap = range.offset.saturating_sub(self.position);
        let gap_bytes = usize::try_from(gap)
            .ok()
            .filter(|gap| *gap <= PADDING.len());
        let Some(gap_bytes) = gap_bytes else {
            return Err(misuse(format!(
                "padding of {gap} bytes before offset {}",
                range.offset
            )));
        };
        self.out.write_all(&PADDING[..gap_bytes])?;
        self.position += gap;
        Ok(())
    }
}

/// A tensor already in its stored form: little-endian elements (or INT8 codes) and, for a
/// quantized tensor, its scales.
#[derive(Debug, Clone, Copy)]
pub struct RawTensor<'a> {
    /// Unique name inside the block.
    pub name: &'a str,
    /// Element type of `data` (`I8` when `scales` is given).
    pub dtype: Dtype,
    /// Dimensions, outermost first.
    pub shape: &'a [u64],
    /// `element count × dtype size` bytes.
    pub data: &'a [u8],
    /// One scale per row of a `[rows, cols]` INT8 tensor; `None` for a plain tensor.
    pub scales: Option<&'a [f32]>,
}

impl RawTensor<'_> {
    /// The spec the layout is planned from.
    pub fn spec(&self) -> TensorSpec {
        TensorSpec {
            name: self.name.to_owned(),
            dtype: self.dtype,
            shape: self.shape.to_vec(),
            quantization: match self.scales {
                None => Quantization::None,
                Some(_) => Quantization::Int8PerChannel,
            },
        }
    }
}

/// Encodes tensors already in their stored form into `out`.
pub fn encode_raw<W: Write>(out: W, tensors: &[RawTensor<'_>]) -> Result<W> {
    let specs: Vec<TensorSpec> = tensors.iter().map(RawTensor::spec).collect();
    let mut writer = BlockWriter::new(out, &specs)?;
    for (index, tensor) in tensors.iter().enumerate() {
        let info = &writer.layout().tensors()[index];
        let expected = info.data().bytes;
        if tensor.data.len() as u64 != expected {
            return Err(Error::LengthMismatch {
                tensor: tensor.name.to_owned(),
                region: Region::Data,
                expected,
                found: tensor.data.len() as u64,
            });
        }
        let rows = info.scale_count().unwrap_or(0);
        writer.write_data(tensor.data)?;
        if let Some(scales) = tensor.scales {
            if scales.len() as u64 != rows {
                return Err(Error::LengthMismatch {
                    tensor: tensor.name.to_owned(),
                    region: Region::Scales,
                    expected: rows * 4,
                    found: scales.len() as u64 * 4,
                });
            }
            // A tensor without rows has no scales to write (the writer has moved past it).
            if rows > 0 {
                writer.write_scales(scales)?;
            }
        }
    }
    writer.finish()
}

/// Encodes tensors already in their stored form into a new `Vec`.
pub fn encode_raw_to_vec(tensors: &[RawTensor<'_>]) -> Result<Vec<u8>> {
    encode_raw(Vec::new(), tensors)
}

fn misuse(reason: impl Into<String>) -> Error {
    Error::WriterMisuse {
        reason: reason.into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::BlockRef;

    #[test]
    fn data_may_arrive_in_any_chunks() {
        let values: Vec<u8> = (0..=255).collect();
        let specs = [
            TensorSpec::new("a", Dtype::I8, &[256]),
            TensorSpec::new("b", Dtype::F16, &[3]),
        ];
        let mut writer = BlockWriter::new(Vec::new(), &specs).unwrap();
        for chunk in values.chunks(7) {
            writer.write_data(chunk).unwrap();
        }
        assert_eq!(writer.current().unwrap().name(), "b");
        writer.write_data(&[1, 2, 3, 4, 5, 6]).unwrap();
        let bytes = writer.finish().unwrap();
        let block = BlockRef::parse(&bytes).unwrap();
        assert_eq!(block.data("a").unwrap(), &values[..]);
        assert_eq!(block.data("b").unwrap(), &[1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn misuse_is_refused() {
        let specs = [TensorSpec::int8_per_channel("w", 2, 2)];
        let mut writer = BlockWriter::new(Vec::new(), &specs).unwrap();
        assert!(matches!(
            writer.write_data(&[0; 5]),
            Err(Error::WriterMisuse { .. })
        ));
        writer.write_data(&[0; 3]).unwrap();
        assert!(matches!(
            writer.write_scales(&[1.0, 1.0]),
            Err(Error::WriterMisuse { .. })
        ));
        writer.write_data(&[0; 1]).unwrap();
        assert!(matches!(
            writer.write_scales(&[1.0]),
            Err(Error::WriterMisuse { .. })
        ));
        assert!(matches!(
            writer.write_scales(&[1.0, f32::INFINITY]),
            Err(Error::InvalidScale { channel: 1, .. })
        ));
        writer.write_scales(&[1.0, 0.5]).unwrap();
        assert!(matches!(
            writer.write_data(&[0]),
            Err(Error::WriterMisuse { .. })
        ));
        writer.finish().unwrap();
    }

    #[test]
    fn finishing_early_names_the_incomplete_tensor() {
        let specs = [TensorSpec::new("w", Dtype::F32, &[2])];
        let mut writer = BlockWriter::new(Vec::new(), &specs).unwrap();
        writer.write_data(&[0; 4]).unwrap();
        let error = writer.finish().unwrap_err();
        assert!(error.to_string().contains("\"w\""), "{error}");
    }

    #[test]
    fn empty_tensors_need_no_write() {
        let bytes = encode_raw_to_vec(&[
            RawTensor {
                name: "e",
                dtype: Dtype::F32,
                shape: &[0, 3],
                data: &[],
                scales: None,
            },
            RawTensor {
                name: "s",
                dtype: Dtype::I8,
                shape: &[],
                data: &[7],
                scales: None,
            },
        ])
        .unwrap();
        let block = BlockRef::parse(&bytes).unwrap();
        assert!(block.data("e").unwrap().is_empty());
        assert_eq!(block.data("s").unwrap(), &[7]);
    }

    #[test]
    fn raw_tensor_of_the_wrong_length_is_refused() {
        let result = encode_raw_to_vec(&[RawTensor {
            name: "w",
            dtype: Dtype::F32,
            shape: &[2],
            data: &[0; 7],
            scales: None,
        }]);
        assert!(matches!(
            result,
            Err(Error::LengthMismatch {
                expected: 8,
                found: 7,
                ..
            })
        ));
    }
}
