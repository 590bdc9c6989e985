//! Expert names: `layer{L}.expert{E}`, the identity of one expert across its versions, the same
//! on the chain, in the model, in config and on the wire.

use std::fmt;

use bincode::de::Decoder;
use bincode::enc::Encoder;
use bincode::error::{DecodeError, EncodeError};

use crate::error::{Error, Result, clip};
use crate::limits::{EXPERT_INDEX_MAX, EXPERT_LAYER_INDEX_MAX};

/// Identifies an expert: layer `L`, expert `E`, written `layer{L}.expert{E}` with plain decimal
/// numbers (no sign, no leading zeros). Valid by construction: both indices within their limits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExpertName {
    layer: u32,
    expert: u32,
}

impl ExpertName {
    /// The expert `expert` of layer `layer`, if both are within [`EXPERT_LAYER_INDEX_MAX`] and
    /// [`EXPERT_INDEX_MAX`].
    pub fn new(layer: u32, expert: u32) -> Result<Self> {
        if layer > EXPERT_LAYER_INDEX_MAX {
            return Err(Error::InvalidExpertName {
                input: format!("layer{layer}.expert{expert}"),
                reason: "layer index above EXPERT_LAYER_INDEX_MAX",
            });
        }
        if expert > EXPERT_INDEX_MAX {
            return Err(Error::InvalidExpertName {
                input: format!("layer{layer}.expert{expert}"),
                reason: "expert index above EXPERT_INDEX_MAX",
            });
        }
        Ok(Self { layer, expert })
    }

    /// The layer index `L`.
    pub const fn layer(self) -> u32 {
        self.layer
    }

    /// The expert index `E` within its layer.
    pub const fn expert(self) -> u32 {
        self.expert
    }

    /// Parses `layer{L}.expert{E}`.
    pub fn parse(input: &str) -> Result<Self> {
        let invalid = |reason: &'static str| Error::InvalidExpertName {
            input: clip(input),
            reason,
        };
        let rest = input
            .strip_prefix("layer")
            .ok_or_else(|| invalid("must start with `layer`"))?;
        let (layer, expert) = rest
            .split_once(".expert")
            .ok_or_else(|| invalid("must read layer{L}.expert{E}"))?;
        let layer = parse_index(layer).ok_or_else(|| invalid("layer is not a plain decimal"))?;
        let expert = parse_index(expert).ok_or_else(|| invalid("expert is not a plain decimal"))?;
        Self::new(layer, expert).map_err(|error| match error {
            Error::InvalidExpertName { reason, .. } => invalid(reason),
            other => other,
        })
    }

    /// Fixed-width big-endian key, so names sort by layer then expert in an index.
    pub fn to_key_bytes(self) -> [u8; 8] {
        let mut key = [0u8; 8];
        key[..4].copy_from_slice(&self.layer.to_be_bytes());
        key[4..].copy_from_slice(&self.expert.to_be_bytes());
        key
    }

    /// The name a key written by [`ExpertName::to_key_bytes`] holds, if it is one.
    pub fn from_key_bytes(key: &[u8]) -> Option<Self> {
        let layer = u32::from_be_bytes(key.get(..4)?.try_into().ok()?);
        let expert = u32::from_be_bytes(key.get(4..8)?.try_into().ok()?);
        Self::new(layer, expert).ok()
    }
}

/// A decimal index: 1 to 10 ASCII digits, no leading zero unless it is `0`.
fn parse_index(digits: &str) -> Option<u32> {
    let valid = !digits.is_empty()
        && digits.len() <= 10
        && digits.bytes().all(|b| b.is_ascii_digit())
        && (digits == "0" || !digits.starts_with('0'));
    if valid { digits.parse().ok() } else { None }
}

impl fmt::Display for ExpertName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "layer{}.expert{}", self.layer, self.expert)
    }
}

impl fmt::Debug for ExpertName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExpertName({self})")
    }
}

impl bincode::Encode for ExpertName {
    fn encode<E: Encoder>(&self, encoder: &mut E) -> std::result::Result<(), EncodeError> {
        bincode::Encode::encode(&self.layer, encoder)?;
        bincode::Encode::encode(&self.expert, encoder)
    }
}

impl<Context> bincode::Decode<Context> for ExpertName {
    fn decode<D: Decoder<Context = Context>>(
        decoder: &mut D,
    ) -> std::result::Result<Self, DecodeError> {
        let layer: u32 = bincode::Decode::decode(decoder)?;
        let expert: u32 = bincode::Decode::decode(decoder)?;
        Self::new(layer, expert).map_err(|_| DecodeError::Other("expert index out of range"))
    }
}
bincode::impl_borrow_decode!(ExpertName);

crate::text::text_form!(ExpertName);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let name = ExpertName::parse("layer3.expert7").unwrap();
        assert_eq!((name.layer(), name.expert()), (3, 7));
        assert_eq!(name.to_string(), "layer3.expert7");
        assert_eq!(
            ExpertName::parse("layer0.expert0").unwrap(),
            ExpertName::new(0, 0).unwrap()
        );
        assert_eq!(ExpertName::from_key_bytes(&name.to_key_bytes()), Some(name));
    }

    #[test]
    fn limits_hold_at_the_bound_and_fail_one_past() {
        let at_bound = format!("layer{EXPERT_LAYER_INDEX_MAX}.expert{EXPERT_INDEX_MAX}");
        assert!(ExpertName::parse(&at_bound).is_ok());
        let layer_past = format!("layer{}.expert0", EXPERT_LAYER_INDEX_MAX + 1);
        assert!(matches!(
            ExpertName::parse(&layer_past),
            Err(Error::InvalidExpertName { .. })
        ));
        let expert_past = format!("layer0.expert{}", EXPERT_INDEX_MAX + 1);
        assert!(matches!(
            ExpertName::parse(&expert_past),
            Err(Error::InvalidExpertName { .. })
        ));
    }

    #[test]
    fn rejects_malformed_names() {
        for input in [
            "",
            "layer",
            "layer1",
            "layer1.expert",
            "layer.expert1",
            "layer01.expert1",
            "layer1.expert01",
            "layer+1.expert1",
            "layer1.expert-1",
            "Layer1.expert1",
            "layer1.expert1 ",
            "layer1.expert1.expert2",
            "layer99999999999.expert1",
        ] {
            assert!(
                matches!(
                    ExpertName::parse(input),
                    Err(Error::InvalidExpertName { .. })
                ),
                "{input:?}"
            );
        }
    }
}
