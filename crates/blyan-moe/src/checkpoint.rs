//! Hugging Face checkpoints: import (checked before anything else happens) and export, bit-exact.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::chat_template::{
    ChatFormat, TOKENIZER_CONFIG_FILE_NAME, TOKENIZER_CONFIG_JSON_BYTES_MAX,
};
use crate::config::{CONFIG_JSON_BYTES_MAX, Config};
use crate::error::{MoeError, Result};
use crate::expert::parameter_layout;
use crate::generate::Generator;
use crate::model::{Model, ModelOptions};
use crate::tokenizer::{TOKENIZER_JSON_BYTES_MAX, Tokenizer};
use crate::weights::{
    SHARD_INDEX_NAME, SINGLE_FILE_NAME, SafetensorsSource, WeightSource, is_model_dtype,
    model_dtype_of, read_bounded, safetensors_dtype, shape_of, tensor_to_bytes,
};

/// `config.json`.
pub const CONFIG_FILE_NAME: &str = "config.json";
/// `generation_config.json`.
pub const GENERATION_CONFIG_FILE_NAME: &str = "generation_config.json";
/// `tokenizer.json`.
pub const TOKENIZER_FILE_NAME: &str = "tokenizer.json";
/// Default largest shard written by [`export_checkpoint`], in bytes (transformers' default).
pub const EXPORT_SHARD_BYTES_DEFAULT: u64 = 5 << 30;

/// A Hugging Face Mixtral checkpoint directory, checked on open: the architecture is Mixtral,
/// every tensor the configuration implies is present with its shape and a float dtype, no other
/// tensor is present, and `tokenizer.json` parses.
pub struct Checkpoint {
    dir: PathBuf,
    config: Config,
    config_json: Vec<u8>,
    generation_config_json: Option<Vec<u8>>,
    tokenizer_json: Vec<u8>,
    tokenizer_config_json: Option<Vec<u8>>,
    weights: Arc<SafetensorsSource>,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Checkpoint")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl Checkpoint {
    /// Opens and checks the checkpoint in `dir`. Nothing is loaded beyond headers and JSON.
    pub fn open(dir: &Path) -> Result<Self> {
        let config_path = dir.join(CONFIG_FILE_NAME);
        if !config_path.is_file() {
            return Err(MoeError::MissingFile { path: config_path });
        }
        let config_json = read_bounded(&config_path, CONFIG_JSON_BYTES_MAX)?;
        let config = Config::from_json(&config_json)?;

        let tokenizer_path = dir.join(TOKENIZER_FILE_NAME);
        if !tokenizer_path.is_file() {
            return Err(MoeError::MissingFile {
                path: tokenizer_path,
            });
        }
        let tokenizer_json = read_bounded(&tokenizer_path, TOKENIZER_JSON_BYTES_MAX)?;
        let tokenizer = Tokenizer::from_json(&tokenizer_json)?;
        check_tokenizer_fits(&tokenizer, &config)?;

        let generation_path = dir.join(GENERATION_CONFIG_FILE_NAME);
        let generation_config_json = if generation_path.is_file() {
            Some(read_bounded(&generation_path, CONFIG_JSON_BYTES_MAX)?)
        } else {
            None
        };

        // Its chat template is compiled now: a broken one is refused before anything is
        // published.
        let tokenizer_config_path = dir.join(TOKENIZER_CONFIG_FILE_NAME);
        let tokenizer_config_json = if tokenizer_config_path.is_file() {
            let json = read_bounded(&tokenizer_config_path, TOKENIZER_CONFIG_JSON_BYTES_MAX)?;
            ChatFormat::from_tokenizer_config(Some(&json))?;
            Some(json)
        } else {
            None
        };

        let weights = SafetensorsSource::open(dir)?;
        check_tensors(&weights, &config)?;
        Ok(Self {
            dir: dir.to_owned(),
            config,
            config_json,
            generation_config_json,
            tokenizer_json,
            tokenizer_config_json,
            weights: Arc::new(weights),
        })
    }

    /// The checkpoint directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The parsed configuration.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// `config.json` exactly as read.
    pub fn config_json(&self) -> &[u8] {
        &self.config_json
    }

    /// `generation_config.json` exactly as read, when present.
    pub fn generation_config_json(&self) -> Option<&[u8]> {
        self.generation_config_json.as_deref()
    }

    /// `tokenizer.json` exactly as read.
    pub fn tokenizer_json(&self) -> &[u8] {
        &self.tokenizer_json
    }

    /// `tokenizer_config.json` exactly as read, when present.
    pub fn tokenizer_config_json(&self) -> Option<&[u8]> {
        self.tokenizer_config_json.as_deref()
    }

    /// Its JSON files as read, for publishing or exporting.
    pub fn files(&self) -> CheckpointFiles<'_> {
        CheckpointFiles {
            config_json: self.config_json(),
            generation_config_json: self.generation_config_json(),
            tokenizer_json: self.tokenizer_json(),
            tokenizer_config_json: self.tokenizer_config_json(),
        }
    }

    /// The tokenizer.
    pub fn tokenizer(&self) -> Result<Tokenizer> {
        Tokenizer::from_json(&self.tokenizer_json)
    }

    /// The weights, by Hugging Face name.
    pub fn weights(&self) -> Arc<SafetensorsSource> {
        Arc::clone(&self.weights)
    }

    /// The model, straight from the files.
    pub fn load_model(&self, options: ModelOptions) -> Result<Model> {
        let source: Arc<dyn WeightSource> = self.weights();
        Model::load(&self.config, source, options)
    }

    /// A generator over the model and tokenizer, straight from the files.
    pub fn load_generator(&self, options: ModelOptions) -> Result<Generator> {
        let chat_format = ChatFormat::from_tokenizer_config(self.tokenizer_config_json())?;
        Ok(
            Generator::new(self.load_model(options)?, self.tokenizer()?, false)
                .with_chat_format(chat_format),
        )
    }
}

/// Refuses a tokenizer whose ids the model has no embedding for.
pub(crate) fn check_tokenizer_fits(tokenizer: &Tokenizer, config: &Config) -> Result<()> {
    if tokenizer.vocab_size() > config.vocab_size {
        return Err(MoeError::Config {
            field: "vocab_size",
            reason: format!(
                "{} is smaller than the tokenizer's vocabulary of {}",
                config.vocab_size,
                tokenizer.vocab_size()
            ),
        });
    }
    Ok(())
}

fn check_tensors(weights: &SafetensorsSource, config: &Config) -> Result<()> {
    let layout = parameter_layout(config)?;
    let expected: HashSet<&str> = layout.iter().map(|spec| spec.name.as_str()).collect();
    // Unknown tensors first: a checkpoint of another layout (fused experts, another model)
    // is named by what it has that we do not know, not by everything it lacks.
    if let Some(name) = weights
        .names()
        .into_iter()
        .find(|name| !expected.contains(name))
    {
        return Err(MoeError::UnexpectedTensor {
            name: name.to_owned(),
        });
    }
    for spec in &layout {
        let (dtype, shape) = weights
            .info(&spec.name)
            .ok_or_else(|| MoeError::MissingTensor {
                name: spec.name.clone(),
            })?;
        if model_dtype_of(dtype).is_none() {
            return Err(MoeError::UnsupportedDtype {
                name: spec.name.clone(),
                dtype: dtype.to_string(),
            });
        }
        if shape != spec.shape.as_slice() {
            return Err(MoeError::WrongShape {
                name: spec.name.clone(),
                got: shape.to_vec(),
                expected: spec.shape.clone(),
            });
        }
    }
    Ok(())
}

/// The non-tensor files of a checkpoint to write.
#[derive(Debug, Clone, Copy)]
pub struct CheckpointFiles<'a> {
    /// `config.json`, written as given.
    pub config_json: &'a [u8],
    /// `generation_config.json`, written as given when present.
    pub generation_config_json: Option<&'a [u8]>,
    /// `tokenizer.json`, written as given.
    pub tokenizer_json: &'a [u8],
    /// `tokenizer_config.json` (the chat template), written as given when present.
    pub tokenizer_config_json: Option<&'a [u8]>,
}

/// What [`export_checkpoint`] wrote: a Hugging Face checkpoint's tensors and shards (not the
/// chain's block export, `blyan_chain::ExportSummary`, which counts blocks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckpointExportSummary {
    /// Tensors written.
    pub tensors: u64,
    /// Bytes of tensor data written.
    pub tensor_bytes: u64,
    /// Safetensors files written (1 for an unsharded checkpoint).
    pub shards: u64,
}

struct OwnedTensor {
    dtype: safetensors::Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl safetensors::View for &OwnedTensor {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Writes a Hugging Face checkpoint into `dir`: the given JSON files, and every tensor of
/// `config` read from `source` in its stored dtype, as `model.safetensors`, or as shards of at
/// most `shard_bytes_max` with `model.safetensors.index.json` when they do not fit in one.
pub fn export_checkpoint(
    dir: &Path,
    config: &Config,
    files: CheckpointFiles<'_>,
    source: &dyn WeightSource,
    shard_bytes_max: u64,
) -> Result<CheckpointExportSummary> {
    std::fs::create_dir_all(dir).map_err(|error| MoeError::io(dir, error))?;
    let write = |name: &str, bytes: &[u8]| -> Result<()> {
        let path = dir.join(name);
        std::fs::write(&path, bytes).map_err(|error| MoeError::io(&path, error))
    };
    write(CONFIG_FILE_NAME, files.config_json)?;
    if let Some(generation) = files.generation_config_json {
        write(GENERATION_CONFIG_FILE_NAME, generation)?;
    }
    write(TOKENIZER_FILE_NAME, files.tokenizer_json)?;
    if let Some(tokenizer_config) = files.tokenizer_config_json {
        write(TOKENIZER_CONFIG_FILE_NAME, tokenizer_config)?;
    }

    // Plan shards from sizes alone, then load one shard's tensors at a time.
    let layout = parameter_layout(config)?;
    let mut shards: Vec<Vec<usize>> = vec![Vec::new()];
    let mut shard_bytes = 0u64;
    let mut total_bytes = 0u64;
    for (index, spec) in layout.iter().enumerate() {
        // Every stored dtype is at most 4 bytes; the real size is checked on load.
        let bytes = spec.shape.iter().product::<u64>() * stored_element_bytes(source, &spec.name)?;
        let current = shards.last_mut().expect("there is always a current shard");
        if !current.is_empty() && shard_bytes + bytes > shard_bytes_max {
            shards.push(vec![index]);
            shard_bytes = bytes;
        } else {
            current.push(index);
            shard_bytes += bytes;
        }
        total_bytes += bytes;
    }

    let shard_count = shards.len();
    let mut weight_map = BTreeMap::new();
    for (number, indices) in shards.iter().enumerate() {
        let file_name = if shard_count == 1 {
            SINGLE_FILE_NAME.to_owned()
        } else {
            format!("model-{:05}-of-{shard_count:05}.safetensors", number + 1)
        };
        let mut tensors = Vec::with_capacity(indices.len());
        for index in indices {
            let spec = &layout[*index];
            let tensor = source.tensor(&spec.name)?;
            let got = shape_of(&tensor);
            if got != spec.shape {
                return Err(MoeError::WrongShape {
                    name: spec.name.clone(),
                    got,
                    expected: spec.shape.clone(),
                });
            }
            let dtype = blyan_tensorblock::dtype_of(tensor.kind())
                .filter(|dtype| is_model_dtype(*dtype))
                .and_then(safetensors_dtype)
                .ok_or_else(|| MoeError::UnsupportedDtype {
                    name: spec.name.clone(),
                    dtype: format!("{:?}", tensor.kind()),
                })?;
            tensors.push((
                spec.name.clone(),
                OwnedTensor {
                    dtype,
                    shape: got.iter().map(|d| *d as usize).collect(),
                    bytes: tensor_to_bytes(&tensor)?,
                },
            ));
            weight_map.insert(spec.name.clone(), file_name.clone());
        }
        let path = dir.join(&file_name);
        let metadata = HashMap::from([("format".to_owned(), "pt".to_owned())]);
        safetensors::serialize_to_file(
            tensors.iter().map(|(name, tensor)| (name.as_str(), tensor)),
            Some(metadata),
            &path,
        )
        .map_err(|error| MoeError::Safetensors {
            path: path.clone(),
            reason: error.to_string(),
        })?;
    }
    let index_path = dir.join(SHARD_INDEX_NAME);
    if shard_count > 1 {
        let index = serde_json::json!({
            "metadata": {"total_size": total_bytes},
            "weight_map": weight_map,
        });
        let mut bytes =
            serde_json::to_vec_pretty(&index).map_err(|error| MoeError::ShardIndex {
                path: index_path.clone(),
                reason: error.to_string(),
            })?;
        bytes.push(b'\n');
        write(SHARD_INDEX_NAME, &bytes)?;
    } else if index_path.exists() {
        // A stale index would make readers ignore the single file just written.
        std::fs::remove_file(&index_path).map_err(|error| MoeError::io(&index_path, error))?;
    }
    Ok(CheckpointExportSummary {
        tensors: layout.len() as u64,
        tensor_bytes: total_bytes,
        shards: shard_count as u64,
    })
}

/// Bytes per element of a tensor as the source stores it, asked of the source cheaply where it
/// can say (a checkpoint's header), else from the tensor itself.
fn stored_element_bytes(source: &dyn WeightSource, name: &str) -> Result<u64> {
    Ok(source.tensor_spec(name)?.dtype.size_bytes())
}
