//! Where a model computes and in which floating-point dtype: [`ComputeDevice`] (`cpu`,
//! `cuda:N`) and [`ComputeDtype`] (`f32`, `bf16`, `f16`), the node config's `model.device` and
//! `model.dtype`, parsed from and written as those strings.
//!
//! Every weight is held in the compute dtype. A payload tensor already stored in it, on the
//! CPU, is used as it is: a view of the mapped block, no copy (`f_to_kind` and `f_to_device`
//! return the same storage when nothing changes). Any other is converted once, when loaded: an
//! f32 payload served in bf16 costs a copy of half its size, an INT8 one is dequantized and
//! then converted, and every tensor of a CUDA model is copied to the GPU.

use std::fmt;
use std::str::FromStr;

use blyan_tensorblock::Dtype;
use tch::{Device, Kind};

use crate::error::{MoeError, Result};

/// Highest CUDA device index `cuda:N` accepts (a bound on the input, far above any machine).
pub const CUDA_DEVICE_INDEX_MAX: u32 = 255;

/// Where a model computes.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub enum ComputeDevice {
    /// The CPU (`cpu`).
    #[default]
    Cpu,
    /// The CUDA device of this index (`cuda:N`), which must be present when the model loads.
    Cuda(u32),
}

impl ComputeDevice {
    /// The libtorch device. Naming it checks nothing: [`ComputeDevice::check_available`] (run by
    /// [`crate::Model::load`]) does.
    pub fn torch(self) -> Device {
        match self {
            Self::Cpu => Device::Cpu,
            Self::Cuda(index) => Device::Cuda(index as usize),
        }
    }

    /// The device of a libtorch one (`None` for devices other than the CPU and CUDA).
    pub fn from_torch(device: Device) -> Option<Self> {
        match device {
            Device::Cpu => Some(Self::Cpu),
            Device::Cuda(index) => u32::try_from(index).ok().map(Self::Cuda),
            _ => None,
        }
    }

    /// Checks the device can be computed on: always for the CPU; for `cuda:N`, loads libtorch's
    /// CUDA backend ([`blyan_tensorblock::load_cuda_backend`]) and requires a device of index N.
    /// Either failure (a CPU-only libtorch or no driver, or fewer devices) is
    /// [`MoeError::CudaUnavailable`] naming the device and the reason.
    pub fn check_available(self) -> Result<()> {
        let Self::Cuda(index) = self else {
            return Ok(());
        };
        let unavailable = |reason: String| MoeError::CudaUnavailable {
            device: self.to_string(),
            reason,
        };
        blyan_tensorblock::load_cuda_backend().map_err(|error| unavailable(error.to_string()))?;
        let available = tch::Cuda::device_count();
        if i64::from(index) >= available {
            return Err(unavailable(format!(
                "this machine has {available} CUDA device(s)"
            )));
        }
        Ok(())
    }
}

impl fmt::Display for ComputeDevice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => f.write_str("cpu"),
            Self::Cuda(index) => write!(f, "cuda:{index}"),
        }
    }
}

impl FromStr for ComputeDevice {
    type Err = MoeError;

    fn from_str(text: &str) -> Result<Self> {
        let invalid = |reason: String| MoeError::InvalidComputeDevice {
            text: text.to_owned(),
            reason,
        };
        if text == "cpu" {
            return Ok(Self::Cpu);
        }
        let Some(index) = text.strip_prefix("cuda:") else {
            return Err(invalid("expected `cpu` or `cuda:N`".into()));
        };
        let index: u32 = index
            .parse()
            .map_err(|_| invalid("the device index is not a decimal integer".into()))?;
        if index > CUDA_DEVICE_INDEX_MAX {
            return Err(invalid(format!(
                "the device index is above the maximum of {CUDA_DEVICE_INDEX_MAX}"
            )));
        }
        Ok(Self::Cuda(index))
    }
}

impl TryFrom<String> for ComputeDevice {
    type Error = MoeError;

    fn try_from(text: String) -> Result<Self> {
        text.parse()
    }
}

impl From<ComputeDevice> for String {
    fn from(device: ComputeDevice) -> Self {
        device.to_string()
    }
}

/// The floating-point dtype a model holds its weights and activations in.
///
/// Whatever it is, the numerics that need range or precision run in f32, as transformers does
/// for a bf16 Mixtral: RMSNorm's variance, the attention and router softmaxes, the rotary
/// frequencies, the routing weights' renormalisation; and the logits are handed out in f32.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, Default, serde::Serialize, serde::Deserialize,
)]
#[serde(try_from = "String", into = "String")]
pub enum ComputeDtype {
    /// IEEE single precision (`f32`): the reference numerics, 4 bytes a parameter.
    #[default]
    F32,
    /// bfloat16 (`bf16`): f32's range with 8 significant bits, 2 bytes a parameter; what
    /// Mixtral is published in.
    BF16,
    /// IEEE half precision (`f16`): 11 significant bits but a range up to 65504, 2 bytes a
    /// parameter.
    F16,
}

impl ComputeDtype {
    /// The libtorch kind.
    pub fn kind(self) -> Kind {
        match self {
            Self::F32 => Kind::Float,
            Self::BF16 => Kind::BFloat16,
            Self::F16 => Kind::Half,
        }
    }

    /// The tensor-block dtype: a payload stored in it is served without a copy on the CPU.
    pub fn dtype(self) -> Dtype {
        match self {
            Self::F32 => Dtype::F32,
            Self::BF16 => Dtype::BF16,
            Self::F16 => Dtype::F16,
        }
    }

    /// Bytes of one parameter.
    pub fn size_bytes(self) -> u64 {
        self.dtype().size_bytes()
    }

    /// The compute dtype of a stored one (`None` for i8, which is only ever a quantized code).
    pub fn from_dtype(dtype: Dtype) -> Option<Self> {
        match dtype {
            Dtype::F32 => Some(Self::F32),
            Dtype::BF16 => Some(Self::BF16),
            Dtype::F16 => Some(Self::F16),
            _ => None,
        }
    }
}

impl fmt::Display for ComputeDtype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::F32 => "f32",
            Self::BF16 => "bf16",
            Self::F16 => "f16",
        })
    }
}

impl FromStr for ComputeDtype {
    type Err = MoeError;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "f32" => Ok(Self::F32),
            "bf16" => Ok(Self::BF16),
            "f16" => Ok(Self::F16),
            _ => Err(MoeError::InvalidComputeDtype {
                text: text.to_owned(),
            }),
        }
    }
}

impl TryFrom<String> for ComputeDtype {
    type Error = MoeError;

    fn try_from(text: String) -> Result<Self> {
        text.parse()
    }
}

impl From<ComputeDtype> for String {
    fn from(dtype: ComputeDtype) -> Self {
        dtype.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn devices_parse_and_print_the_same_text() {
        for (text, device) in [
            ("cpu", ComputeDevice::Cpu),
            ("cuda:0", ComputeDevice::Cuda(0)),
            ("cuda:7", ComputeDevice::Cuda(7)),
            ("cuda:255", ComputeDevice::Cuda(CUDA_DEVICE_INDEX_MAX)),
        ] {
            assert_eq!(text.parse::<ComputeDevice>().expect(text), device);
            assert_eq!(device.to_string(), text);
            assert_eq!(ComputeDevice::from_torch(device.torch()), Some(device));
        }
    }

    #[test]
    fn bad_device_texts_are_refused_with_the_reason() {
        for (text, reason) in [
            ("gpu", "expected `cpu` or `cuda:N`"),
            ("cuda", "expected `cpu` or `cuda:N`"),
            ("CPU", "expected `cpu` or `cuda:N`"),
            ("cuda:", "not a decimal integer"),
            ("cuda:-1", "not a decimal integer"),
            ("cuda:x", "not a decimal integer"),
            ("cuda:256", "above the maximum of 255"),
        ] {
            match text.parse::<ComputeDevice>() {
                Err(MoeError::InvalidComputeDevice {
                    text: got,
                    reason: why,
                }) => {
                    assert_eq!(got, text);
                    assert!(why.contains(reason), "{text}: {why}");
                }
                other => panic!("{text}: expected InvalidComputeDevice, got {other:?}"),
            }
        }
    }

    #[test]
    fn the_cpu_is_always_available() {
        ComputeDevice::Cpu.check_available().expect("the CPU");
    }

    /// On a machine without a usable GPU (this test's CI), `cuda:N` is refused naming the
    /// device; with one, a device index past the last is refused the same way.
    #[test]
    fn a_cuda_device_this_machine_lacks_is_refused_naming_it() {
        let beyond = if blyan_tensorblock::load_cuda_backend().is_ok() && tch::Cuda::is_available()
        {
            u32::try_from(tch::Cuda::device_count()).expect("a device count")
        } else {
            0
        };
        let device = ComputeDevice::Cuda(beyond);
        match device.check_available() {
            Err(MoeError::CudaUnavailable {
                device: named,
                reason,
            }) => {
                assert_eq!(named, format!("cuda:{beyond}"));
                assert!(!reason.is_empty());
            }
            other => panic!("expected CudaUnavailable, got {other:?}"),
        }
    }

    #[test]
    fn dtypes_parse_print_and_match_their_kinds() {
        for (text, dtype, kind, bytes) in [
            ("f32", ComputeDtype::F32, Kind::Float, 4),
            ("bf16", ComputeDtype::BF16, Kind::BFloat16, 2),
            ("f16", ComputeDtype::F16, Kind::Half, 2),
        ] {
            assert_eq!(text.parse::<ComputeDtype>().expect(text), dtype);
            assert_eq!(dtype.to_string(), text);
            assert_eq!(dtype.kind(), kind);
            assert_eq!(dtype.size_bytes(), bytes);
            assert_eq!(ComputeDtype::from_dtype(dtype.dtype()), Some(dtype));
        }
        assert_eq!(ComputeDtype::from_dtype(Dtype::I8), None);
        for text in ["float32", "F32", "int8", ""] {
            assert!(
                matches!(
                    text.parse::<ComputeDtype>(),
                    Err(MoeError::InvalidComputeDtype { text: ref got }) if got == text
                ),
                "{text}"
            );
        }
    }
}
