//! Element types of stored tensors: one enum for the tensor payload format, the chain header's
//! tensor summaries, checkpoints and config, spelled the same way everywhere.

use std::fmt;

use bincode::de::Decoder;
use bincode::enc::Encoder;
use bincode::error::{DecodeError, EncodeError};

use crate::error::{Error, Result, clip};

/// Element type of a stored tensor. Exactly the types a tensor payload can hold: a header that
/// describes its payload can name no other.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Dtype {
    /// IEEE 754 binary32.
    F32,
    /// IEEE 754 binary16.
    F16,
    /// bfloat16 (the upper half of an f32).
    BF16,
    /// Signed 8-bit integer: raw, or the codes of an INT8-quantized tensor.
    I8,
}

impl Dtype {
    /// Every dtype, in code order.
    pub const ALL: [Dtype; 4] = [Dtype::F32, Dtype::F16, Dtype::BF16, Dtype::I8];

    /// The byte that names this dtype on disk and in block headers. Codes are never reused.
    pub const fn code(self) -> u8 {
        match self {
            Self::F32 => 1,
            Self::F16 => 2,
            Self::BF16 => 3,
            Self::I8 => 4,
        }
    }

    /// The dtype a code names, if any.
    pub fn from_code(code: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|dtype| dtype.code() == code)
    }

    /// Bytes per element (also the alignment an element needs in memory).
    pub const fn size_bytes(self) -> u64 {
        match self {
            Self::F32 => 4,
            Self::F16 | Self::BF16 => 2,
            Self::I8 => 1,
        }
    }

    /// The lower-case name used in text (`f32`, `f16`, `bf16`, `i8`), as safetensors and
    /// PyTorch users write it.
    pub const fn name(self) -> &'static str {
        match self {
            Self::F32 => "f32",
            Self::F16 => "f16",
            Self::BF16 => "bf16",
            Self::I8 => "i8",
        }
    }

    /// Parses a name written by [`Dtype::name`].
    pub fn parse(input: &str) -> Result<Self> {
        Self::ALL
            .into_iter()
            .find(|dtype| dtype.name() == input)
            .ok_or_else(|| Error::UnknownDtype { input: clip(input) })
    }
}

impl fmt::Display for Dtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Encoded as its one-byte [`Dtype::code`], the same byte the tensor payload format uses.
impl bincode::Encode for Dtype {
    fn encode<E: Encoder>(&self, encoder: &mut E) -> std::result::Result<(), EncodeError> {
        bincode::Encode::encode(&self.code(), encoder)
    }
}

impl<Context> bincode::Decode<Context> for Dtype {
    fn decode<D: Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> std::result::Result<Self, DecodeError> {
        let code: u8 = bincode::Decode::decode(decoder)?;
        Self::from_code(code).ok_or(DecodeError::Other("unknown dtype code"))
    }
}
bincode::impl_borrow_decode!(Dtype);

crate::text::text_form!(Dtype);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_names_round_trip() {
        for dtype in Dtype::ALL {
            assert_eq!(Dtype::from_code(dtype.code()), Some(dtype));
            assert_eq!(Dtype::parse(dtype.name()), Ok(dtype));
            let json = serde_json::to_string(&dtype).unwrap();
            assert_eq!(serde_json::from_str::<Dtype>(&json).unwrap(), dtype);
            let config = bincode::config::standard();
            let bytes = bincode::encode_to_vec(dtype, config).unwrap();
            assert_eq!(bytes, [dtype.code()]);
            let (back, _): (Dtype, usize) = bincode::decode_from_slice(&bytes, config).unwrap();
            assert_eq!(back, dtype);
        }
        assert_eq!(Dtype::from_code(0), None);
        assert_eq!(Dtype::from_code(5), None);
        assert!(Dtype::parse("BF16").is_err());
        let config = bincode::config::standard();
        assert!(bincode::decode_from_slice::<Dtype, _>(&[9], config).is_err());
    }
}
