//! Where weights come from: one trait, [`WeightSource`], with a safetensors checkpoint and a
//! seeded random initialisation here, and the chain in `chain.rs`. The model asks for tensors by
//! their Hugging Face names and never learns where the bytes came from.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use tch::{Kind, Tensor};

use crate::config::Config;
use crate::error::{MoeError, Result};
use crate::expert::{
    ExpertMatrix, ExpertName, ExpertWeights, TensorRole, expert_tensor_name, parameter_layout,
};
use crate::rng::Rng;

/// Largest safetensors header read, in bytes (the safetensors library's own limit).
pub const SAFETENSORS_HEADER_BYTES_MAX: u64 = 100_000_000;
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

    /// Kind and shape of a tensor as stored, without loading its data where the source can
    /// tell (the default loads it).
    fn tensor_info(&self, name: &str) -> Result<TensorInfo> {
        let tensor = self.tensor(name)?;
        Ok(TensorInfo {
            kind: tensor.kind(),
            shape: shape_of(&tensor),
        })
    }

    /// A few words for logs: what the weights are and where they come from.
    fn describe(&self) -> String;
}

/// Kind and shape of a stored tensor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TensorInfo {
    /// Element kind as stored (before any conversion for computing).
    pub kind: Kind,
    /// Shape.
    pub shape: Vec<u64>,
}

/// The libtorch kind of a safetensors dtype name, for the dtypes a model may be stored in.
pub fn kind_of_dtype(dtype: &str) -> Option<Kind> {
    match dtype {
        "F32" => Some(Kind::Float),
        "F16" => Some(Kind::Half),
        "BF16" => Some(Kind::BFloat16),
        _ => None,
    }
}

/// The safetensors dtype of a libtorch kind, for the kinds a model may be stored in.
pub fn dtype_of_kind(kind: Kind) -> Option<safetensors::Dtype> {
    match kind {
        Kind::Float => Some(safetensors::Dtype::F32),
        Kind::Half => Some(safetensors::Dtype::F16),
        Kind::BFloat16 => Some(safetensors::Dtype::BF16),
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
    dtype: String,
    shape: Vec<u64>,
    /// Absolute offset of the first byte in the file.
    offset: u64,
    bytes: u64,
}

/// A Hugging Face safetensors checkpoint, single-file or sharded, read tensor by tensor with
/// positioned reads (no whole-file copy, no memory map).
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

#[derive(serde::Deserialize)]
struct HeaderEntry {
    dtype: String,
    shape: Vec<u64>,
    data_offsets: (u64, u64),
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
        let bad = |reason: String| MoeError::Safetensors {
            path: path.to_owned(),
            reason,
        };
        let file = File::open(path).map_err(|error| MoeError::io(path, error))?;
        let file_bytes = file
            .metadata()
            .map_err(|error| MoeError::io(path, error))?
            .len();
        let mut length = [0u8; 8];
        file.read_exact_at(&mut length, 0)
            .map_err(|error| bad(format!("cannot read the header length: {error}")))?;
        let header_bytes = u64::from_le_bytes(length);
        if header_bytes > SAFETENSORS_HEADER_BYTES_MAX || header_bytes + 8 > file_bytes {
            return Err(bad(format!(
                "header of {header_bytes} bytes does not fit the file of {file_bytes} bytes \
                 (limit {SAFETENSORS_HEADER_BYTES_MAX})"
            )));
        }
        let mut header =
            vec![0u8; usize::try_from(header_bytes).map_err(|_| bad("header too large".into()))?];
        file.read_exact_at(&mut header, 8)
            .map_err(|error| bad(format!("cannot read the header: {error}")))?;
        let entries: HashMap<String, serde_json::Value> =
            serde_json::from_slice(&header).map_err(|error| bad(error.to_string()))?;
        let data_start = 8 + header_bytes;
        let data_bytes = file_bytes - data_start;
        let file_index = self.files.len();
        for (name, value) in entries {
            if name == "__metadata__" {
                continue;
            }
            let entry: HeaderEntry = serde_json::from_value(value)
                .map_err(|error| bad(format!("entry `{name}`: {error}")))?;
            let (start, end) = entry.data_offsets;
            if start > end || end > data_bytes {
                return Err(bad(format!(
                    "tensor `{name}` spans {start}..{end}, outside the {data_bytes} data bytes"
                )));
            }
            if let Some(kind) = kind_of_dtype(&entry.dtype) {
                let element_bytes = kind.elt_size_in_bytes() as u64;
                let expected = entry
                    .shape
                    .iter()
                    .try_fold(element_bytes, |total, dimension| {
                        total.checked_mul(*dimension)
                    });
                if expected != Some(end - start) {
                    return Err(bad(format!(
                        "tensor `{name}` of shape {:?} and dtype {} has {} bytes",
                        entry.shape,
                        entry.dtype,
                        end - start
                    )));
                }
            }
            let location = TensorLocation {
                file: file_index,
                dtype: entry.dtype,
                shape: entry.shape,
                offset: data_start + start,
                bytes: end - start,
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

    /// The safetensors dtype name and shape of a tensor, without reading its data.
    pub fn info(&self, name: &str) -> Option<(&str, &[u64])> {
        self.tensors
            .get(name)
            .map(|location| (location.dtype.as_str(), location.shape.as_slice()))
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
        let (dtype, shape) = self.info(name).ok_or_else(|| MoeError::MissingTensor {
            name: name.to_owned(),
        })?;
        let kind = kind_of_dtype(dtype).ok_or_else(|| MoeError::UnsupportedDtype {
            name: name.to_owned(),
            dtype: dtype.to_owned(),
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

    fn tensor_info(&self, name: &str) -> Result<TensorInfo> {
        let (dtype, shape) = self.info(name).ok_or_else(|| MoeError::MissingTensor {
            name: name.to_owned(),
        })?;
        let kind = kind_of_dtype(dtype).ok_or_else(|| MoeError::UnsupportedDtype {
            name: name.to_owned(),
            dtype: dtype.to_owned(),
        })?;
        Ok(TensorInfo {
            kind,
            shape: shape.to_vec(),
        })
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
