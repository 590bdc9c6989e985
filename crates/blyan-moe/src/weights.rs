//! Where weights come from: one trait, [`WeightSource`], with a safetensors checkpoint and a
//! seeded random initialisation here, and the chain in `chain_source.rs`. The model asks for
//! tensors by their Hugging Face names and never learns where the bytes came from.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use blyan_tensorblock::{Dtype, TensorSpec};
use tch::{Kind, Tensor};

use crate::config::Config;
use crate::error::{MoeError, Result};
use crate::expert::{
    ExpertMatrix, ExpertName, ExpertWeights, TensorRole, expert_tensor_name, parameter_layout,
};
use crate::rng::Rng;

/// Largest safetensors header read, in bytes (the safetensors library's own limit, checked here
/// before the header is read, so an oversized one is a typed error, never an allocation).
pub const SAFETENSORS_HEADER_BYTES_MAX: u64 = 100_000_000;
/// Bytes of the length prefix before a safetensors header.
const SAFETENSORS_PREFIX_BYTES: u64 = 8;
/// Largest shard index (`model.safetensors.index.json`) read, in bytes.
pub const SHARD_INDEX_BYTES_MAX: u64 = 64 << 20;
/// Most shard files one checkpoint may have.
pub const SHARD_FILES_MAX: usize = 4096;

/// Supplies tensors by Hugging Face name. Implemented by a safetensors checkpoint
/// ([`SafetensorsSource`]), a seeded random initialisation ([`RandomInit`]) and the chain
/// ([`crate::ChainSource`]).
pub trait WeightSource: Send + Sync {
    /// The tensor named `name`, on the CPU, in the dtype it is stored in.
    ///
    /// A name the source does not hold is [`MoeError::MissingTensor`].
    fn tensor(&self, name: &str) -> Result<Tensor>;

    /// One expert's three matrices, on the CPU, in the dtype they are stored in.
    ///
    /// An expert the source does not hold is [`MoeError::MissingExpert`]. The default reads the
    /// three Hugging Face names through [`WeightSource::tensor`].
    fn expert(&self, id: ExpertName) -> Result<ExpertWeights> {
        let load = |matrix| match self.tensor(&expert_tensor_name(id, matrix)) {
            Err(MoeError::MissingTensor { .. }) => Err(MoeError::MissingExpert { expert: id }),
            other => other,
        };
        Ok(ExpertWeights {
            w1: load(ExpertMatrix::W1)?,
            w2: load(ExpertMatrix::W2)?,
            w3: load(ExpertMatrix::W3)?,
        })
    }

    /// Name, dtype and shape of the tensor [`WeightSource::tensor`] returns, without loading
    /// its data where the source can tell (the default loads it). Never quantized: sources hand
    /// out plain tensors. A tensor of a kind no tensor block stores is
    /// [`MoeError::UnsupportedDtype`].
    fn tensor_spec(&self, name: &str) -> Result<TensorSpec> {
        spec_of(name, &self.tensor(name)?)
    }

    /// A few words for logs: what the weights are and where they come from.
    fn describe(&self) -> String;
}

/// The spec of a tensor as it is: name, its dtype (one a tensor block stores) and shape.
pub(crate) fn spec_of(name: &str, tensor: &Tensor) -> Result<TensorSpec> {
    let kind = tensor.kind();
    let dtype = blyan_tensorblock::dtype_of(kind).ok_or_else(|| MoeError::UnsupportedDtype {
        name: name.to_owned(),
        dtype: format!("{kind:?}"),
    })?;
    Ok(TensorSpec::new(name, dtype, &shape_of(tensor)))
}

/// Whether a model's weights may be stored in `dtype`: the floating-point dtypes (i8 only ever
/// holds the codes of a quantized expert block, dequantized when loaded).
pub fn is_model_dtype(dtype: Dtype) -> bool {
    matches!(dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16)
}

/// The dtype of a safetensors dtype, for the dtypes a model may be stored in.
pub fn model_dtype_of(dtype: safetensors::Dtype) -> Option<Dtype> {
    match dtype {
        safetensors::Dtype::F32 => Some(Dtype::F32),
        safetensors::Dtype::F16 => Some(Dtype::F16),
        safetensors::Dtype::BF16 => Some(Dtype::BF16),
        _ => None,
    }
}

/// The safetensors dtype of a stored dtype (what export writes); `None` only for a dtype a
/// newer `blyan-primitives` may add.
pub fn safetensors_dtype(dtype: Dtype) -> Option<safetensors::Dtype> {
    match dtype {
        Dtype::F32 => Some(safetensors::Dtype::F32),
        Dtype::F16 => Some(safetensors::Dtype::F16),
        Dtype::BF16 => Some(safetensors::Dtype::BF16),
        Dtype::I8 => Some(safetensors::Dtype::I8),
        _ => None,
    }
}

/// The raw little-endian bytes of a CPU tensor, in its own dtype (what safetensors stores).
pub fn tensor_to_bytes(tensor: &Tensor) -> Result<Vec<u8>> {
    let tensor = tensor.f_contiguous()?;
    let elements = tensor.numel();
    let mut bytes = vec![0u8; elements * tensor.kind().elt_size_in_bytes()];
    tensor.f_copy_data_u8(&mut bytes, elements)?;
    Ok(bytes)
}

/// The shape of a tensor as unsigned sizes.
pub(crate) fn shape_of(tensor: &Tensor) -> Vec<u64> {
    tensor
        .size()
        .iter()
        .map(|dimension| u64::try_from(*dimension).unwrap_or(0))
        .collect()
}

/// Where one tensor lives inside one safetensors file.
#[derive(Debug, Clone)]
struct TensorLocation {
    file: usize,
    dtype: safetensors::Dtype,
    shape: Vec<u64>,
    /// Absolute offset of the first byte in the file.
    offset: u64,
    bytes: u64,
}

/// A Hugging Face safetensors checkpoint, single-file or sharded, read tensor by tensor with
/// positioned reads (no whole-file copy, no memory map). Headers are parsed and checked by the
/// `safetensors` crate (offsets contiguous, lengths equal to shape × dtype size) after this
/// type checked the header's size against [`SAFETENSORS_HEADER_BYTES_MAX`] and the file.
#[derive(Debug)]
pub struct SafetensorsSource {
    dir: PathBuf,
    files: Vec<(PathBuf, File)>,
    tensors: HashMap<String, TensorLocation>,
}

/// The name of a single-file checkpoint's weights.
pub const SINGLE_FILE_NAME: &str = "model.safetensors";
/// The name of a sharded checkpoint's index.
pub const SHARD_INDEX_NAME: &str = "model.safetensors.index.json";

#[derive(serde::Deserialize)]
struct ShardIndex {
    weight_map: HashMap<String, String>,
}

impl SafetensorsSource {
    /// Opens the weights of the checkpoint in `dir`: `model.safetensors.index.json` and its
    /// shards when the index exists, else `model.safetensors`.
    pub fn open(dir: &Path) -> Result<Self> {
        let index_path = dir.join(SHARD_INDEX_NAME);
        let single_path = dir.join(SINGLE_FILE_NAME);
        if index_path.is_file() {
            Self::open_sharded(dir, &index_path)
        } else if single_path.is_file() {
            Self::open_file(&single_path)
        } else {
            Err(MoeError::NoWeights {
                dir: dir.to_owned(),
            })
        }
    }

    /// Opens one safetensors file on its own (any tensors, not only a model's).
    pub fn open_file(path: &Path) -> Result<Self> {
        let mut source = Self {
            dir: path.parent().unwrap_or(Path::new(".")).to_owned(),
            files: Vec::new(),
            tensors: HashMap::new(),
        };
        source.add_file(path)?;
        Ok(source)
    }

    fn open_sharded(dir: &Path, index_path: &Path) -> Result<Self> {
        let bad = |reason: String| MoeError::ShardIndex {
            path: index_path.to_owned(),
            reason,
        };
        let text = read_bounded(index_path, SHARD_INDEX_BYTES_MAX)?;
        let index: ShardIndex =
            serde_json::from_slice(&text).map_err(|error| bad(error.to_string()))?;
        let mut shard_names: Vec<&String> = index.weight_map.values().collect();
        shard_names.sort_unstable();
        shard_names.dedup();
        if shard_names.len() > SHARD_FILES_MAX {
            return Err(bad(format!(
                "{} shard files; at most {SHARD_FILES_MAX}",
                shard_names.len()
            )));
        }
        let mut source = Self {
            dir: dir.to_owned(),
            files: Vec::new(),
            tensors: HashMap::new(),
        };
        for shard in shard_names {
            // A shard is a plain file name beside the index: never a path out of the directory.
            if shard.is_empty() || shard.contains(['/', '\\']) || shard == ".." || shard == "." {
                return Err(bad(format!(
                    "shard name {shard:?} is not a plain file name"
                )));
            }
            let path = dir.join(shard);
            if !path.is_file() {
                return Err(bad(format!("shard {shard} is missing")));
            }
            source.add_file(&path)?;
        }
        for (name, shard) in &index.weight_map {
            let location = source
                .tensors
                .get(name)
                .ok_or_else(|| bad(format!("tensor `{name}` is not in any shard")))?;
            let holder = &source.files[location.file].0;
            if holder.file_name().and_then(|file| file.to_str()) != Some(shard.as_str()) {
                return Err(bad(format!(
                    "tensor `{name}` is listed in {shard} but stored in {}",
                    holder.display()
                )));
            }
        }
        if let Some(name) = source
            .tensors
            .keys()
            .find(|name| !index.weight_map.contains_key(*name))
        {
            return Err(bad(format!(
                "tensor `{name}` is in a shard but not in the index"
            )));
        }
        Ok(source)
    }

    fn add_file(&mut self, path: &Path) -> Result<()> {
        let file = File::open(path).map_err(|error| MoeError::io(path, error))?;
        let file_bytes = file
            .metadata()
            .map_err(|error| MoeError::io(path, error))?
            .len();
        let length = |expected: u64| MoeError::SafetensorsLength {
            path: path.to_owned(),
            expected,
            found: file_bytes,
        };
        if file_bytes < SAFETENSORS_PREFIX_BYTES {
            return Err(length(SAFETENSORS_PREFIX_BYTES));
        }
        let mut prefix = [0u8; SAFETENSORS_PREFIX_BYTES as usize];
        file.read_exact_at(&mut prefix, 0)
            .map_err(|error| MoeError::io(path, error))?;
        let header_bytes = u64::from_le_bytes(prefix);
        if header_bytes > SAFETENSORS_HEADER_BYTES_MAX {
            return Err(MoeError::SafetensorsHeaderTooLarge {
                path: path.to_owned(),
                bytes: header_bytes,
                bytes_max: SAFETENSORS_HEADER_BYTES_MAX,
            });
        }
        // Cannot overflow: the header is at most SAFETENSORS_HEADER_BYTES_MAX.
        let data_start = SAFETENSORS_PREFIX_BYTES + header_bytes;
        if data_start > file_bytes {
            return Err(length(data_start));
        }
        let mut header = vec![0u8; header_bytes as usize];
        file.read_exact_at(&mut header, SAFETENSORS_PREFIX_BYTES)
            .map_err(|error| MoeError::io(path, error))?;
        // The crate's own header type: JSON, `__metadata__`, and its checks of every entry
        // (offsets contiguous from 0, length = shape × dtype size, no overflow).
        let metadata: safetensors::tensor::Metadata =
            serde_json::from_slice(&header).map_err(|error| MoeError::Safetensors {
                path: path.to_owned(),
                reason: error.to_string(),
            })?;
        let expected = data_start + metadata.data_len() as u64;
        if expected != file_bytes {
            return Err(length(expected));
        }
        let file_index = self.files.len();
        for (name, info) in metadata.tensors() {
            let (start, end) = info.data_offsets;
            let location = TensorLocation {
                file: file_index,
                dtype: info.dtype,
                shape: info
                    .shape
                    .iter()
                    .map(|dimension| *dimension as u64)
                    .collect(),
                offset: data_start + start as u64,
                bytes: (end - start) as u64,
            };
            if let Some(previous) = self.tensors.insert(name.clone(), location) {
                return Err(MoeError::DuplicateTensor {
                    name,
                    first: self.files[previous.file].0.clone(),
                    second: path.to_owned(),
                });
            }
        }
        self.files.push((path.to_owned(), file));
        Ok(())
    }

    /// The checkpoint directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Names of every tensor in the checkpoint, sorted.
    pub fn names(&self) -> Vec<&str> {
        let mut names: Vec<&str> = self.tensors.keys().map(String::as_str).collect();
        names.sort_unstable();
        names
    }

    /// The safetensors dtype and shape of a tensor, without reading its data.
    pub fn info(&self, name: &str) -> Option<(safetensors::Dtype, &[u64])> {
        self.tensors
            .get(name)
            .map(|location| (location.dtype, location.shape.as_slice()))
    }

    /// The stored dtype of a tensor the file holds, if a model may be stored in it.
    fn model_dtype(&self, name: &str) -> Result<(Dtype, &[u64])> {
        let (dtype, shape) = self.info(name).ok_or_else(|| MoeError::MissingTensor {
            name: name.to_owned(),
        })?;
        let model_dtype = model_dtype_of(dtype).ok_or_else(|| MoeError::UnsupportedDtype {
            name: name.to_owned(),
            dtype: dtype.to_string(),
        })?;
        Ok((model_dtype, shape))
    }

    /// The tensor's bytes exactly as stored in the file.
    pub fn raw_bytes(&self, name: &str) -> Result<Vec<u8>> {
        let location = self
            .tensors
            .get(name)
            .ok_or_else(|| MoeError::MissingTensor {
                name: name.to_owned(),
            })?;
        let (path, file) = &self.files[location.file];
        let length = usize::try_from(location.bytes).map_err(|_| MoeError::Safetensors {
            path: path.clone(),
            reason: format!("tensor `{name}` does not fit in memory"),
        })?;
        let mut bytes = vec![0u8; length];
        file.read_exact_at(&mut bytes, location.offset)
            .map_err(|error| MoeError::io(path, error))?;
        Ok(bytes)
    }
}

impl WeightSource for SafetensorsSource {
    fn tensor(&self, name: &str) -> Result<Tensor> {
        let (dtype, shape) = self.model_dtype(name)?;
        let kind = blyan_tensorblock::kind_of(dtype).ok_or_else(|| MoeError::UnsupportedDtype {
            name: name.to_owned(),
            dtype: dtype.name().to_owned(),
        })?;
        let shape: Vec<i64> = shape
            .iter()
            .map(|dimension| i64::try_from(*dimension))
            .collect::<std::result::Result<_, _>>()
            .map_err(|_| MoeError::WrongShape {
                name: name.to_owned(),
                got: shape.to_vec(),
                expected: Vec::new(),
            })?;
        let bytes = self.raw_bytes(name)?;
        Ok(Tensor::f_from_data_size(&bytes, &shape, kind)?)
    }

    fn tensor_spec(&self, name: &str) -> Result<TensorSpec> {
        let (dtype, shape) = self.model_dtype(name)?;
        Ok(TensorSpec::new(name, dtype, shape))
    }

    fn describe(&self) -> String {
        format!("safetensors checkpoint {}", self.dir.display())
    }
}

/// A seeded random initialisation of a configuration, as transformers initialises a fresh
/// `MixtralForCausalLM`: norms at one, every matrix normal with `initializer_range` deviation.
///
/// Each tensor draws from its own stream derived from the seed and its name, so the values do
/// not depend on the order tensors are requested. The weights are untrained: they produce text,
/// not sense.
#[derive(Debug, Clone)]
pub struct RandomInit {
    seed: u64,
    standard_deviation: f64,
    shapes: HashMap<String, (Vec<u64>, bool)>,
}

impl RandomInit {
    /// The random initialisation of `config` under `seed`.
    pub fn new(config: &Config, seed: u64) -> Result<Self> {
        let shapes = parameter_layout(config)?
            .into_iter()
            .map(|spec| {
                let is_norm = matches!(spec.role, TensorRole::Shared(_)) && spec.shape.len() == 1;
                (spec.name, (spec.shape, is_norm))
            })
            .collect();
        Ok(Self {
            seed,
            standard_deviation: config.initializer_range,
            shapes,
        })
    }
}

impl WeightSource for RandomInit {
    fn tensor(&self, name: &str) -> Result<Tensor> {
        let (shape, is_norm) = self
            .shapes
            .get(name)
            .ok_or_else(|| MoeError::MissingTensor {
                name: name.to_owned(),
            })?;
        let dims: Vec<i64> = shape.iter().map(|d| *d as i64).collect();
        if *is_norm {
            return Ok(Tensor::f_ones(&dims, (Kind::Float, tch::Device::Cpu))?);
        }
        let count: u64 = shape.iter().product();
        let mut rng = Rng::for_name(self.seed, name);
        let values: Vec<f32> = (0..count)
            .map(|_| (rng.next_normal() * self.standard_deviation) as f32)
            .collect();
        Ok(Tensor::f_from_slice(&values)?.f_reshape(&dims)?)
    }

    fn tensor_spec(&self, name: &str) -> Result<TensorSpec> {
        let (shape, _) = self
            .shapes
            .get(name)
            .ok_or_else(|| MoeError::MissingTensor {
                name: name.to_owned(),
            })?;
        Ok(TensorSpec::new(name, Dtype::F32, shape))
    }

    fn describe(&self) -> String {
        format!("untrained random initialisation (seed {})", self.seed)
    }
}

/// Reads a whole file, refusing one larger than `bytes_max`.
pub(crate) fn read_bounded(path: &Path, bytes_max: u64) -> Result<Vec<u8>> {
    let bytes = std::fs::metadata(path)
        .map_err(|error| MoeError::io(path, error))?
        .len();
    if bytes > bytes_max {
        return Err(MoeError::FileTooLarge {
            path: path.to_owned(),
            bytes,
            bytes_max,
        });
    }
    std::fs::read(path).map_err(|error| MoeError::io(path, error))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expert::expert_name;

    #[test]
    fn random_init_is_deterministic_and_order_free() {
        let config = Config::seed();
        let a = RandomInit::new(&config, 7).expect("valid");
        let b = RandomInit::new(&config, 7).expect("valid");
        let name = "model.layers.1.self_attn.q_proj.weight";
        let _ = b.tensor("model.embed_tokens.weight").expect("exists");
        let first = a.tensor(name).expect("exists");
        let second = b.tensor(name).expect("exists");
        assert!(first.equal(&second));
        let other = RandomInit::new(&config, 8)
            .expect("valid")
            .tensor(name)
            .expect("exists");
        assert!(!first.equal(&other));
        let norm = a.tensor("model.norm.weight").expect("exists");
        assert!(norm.equal(&Tensor::ones([128], (Kind::Float, tch::Device::Cpu))));
        let deviation = first.std(true).double_value(&[]);
        assert!((deviation - 0.02).abs() < 0.002, "std {deviation}");
    }

    #[test]
    fn random_init_names_missing_expert() {
        let source = RandomInit::new(&Config::seed(), 1).expect("valid");
        assert!(source.expert(expert_name(3, 7)).is_ok());
        assert!(matches!(
            source.expert(expert_name(4, 0)),
            Err(MoeError::MissingExpert { expert }) if expert == expert_name(4, 0)
        ));
    }
}
