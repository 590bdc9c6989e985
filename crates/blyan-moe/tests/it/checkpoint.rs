//! Hugging Face checkpoint import and export: bit-exact round trips, and bad checkpoints refused
//! with an error naming what is wrong.

use std::collections::BTreeMap;
use std::path::Path;

use blyan_moe::{
    Checkpoint, EXPORT_SHARD_BYTES_DEFAULT, MoeError, SafetensorsSource, export_checkpoint,
};

use crate::fixture::{checkpoint_copy, fixture};

fn export(
    checkpoint: &Checkpoint,
    out: &Path,
    shard_bytes_max: u64,
) -> blyan_moe::CheckpointExportSummary {
    let files = checkpoint.files();
    export_checkpoint(
        out,
        checkpoint.config(),
        files,
        &*checkpoint.weights(),
        shard_bytes_max,
    )
    .unwrap()
}

/// Every tensor of `a` and `b`: same names, dtypes, shapes and bytes.
pub(crate) fn assert_same_tensors(a: &Path, b: &Path) {
    let a = SafetensorsSource::open(a).unwrap();
    let b = SafetensorsSource::open(b).unwrap();
    assert_eq!(a.names(), b.names());
    for name in a.names() {
        assert_eq!(a.info(name), b.info(name), "{name}");
        assert!(
            a.raw_bytes(name).unwrap() == b.raw_bytes(name).unwrap(),
            "{name} differs"
        );
    }
}

#[test]
fn export_of_an_import_is_bit_exact() {
    let fixture = fixture();
    let out = tempfile::tempdir().unwrap();
    let checkpoint = Checkpoint::open(&fixture.checkpoint()).unwrap();
    let summary = export(&checkpoint, out.path(), EXPORT_SHARD_BYTES_DEFAULT);
    assert_eq!(summary.shards, 1);
    for file in [
        "config.json",
        "generation_config.json",
        "tokenizer.json",
        "model.safetensors",
    ] {
        let original = std::fs::read(fixture.checkpoint().join(file)).unwrap();
        let exported = std::fs::read(out.path().join(file)).unwrap();
        assert!(original == exported, "{file} differs after the round trip");
    }
}

#[test]
fn sharded_import_and_sharded_export_keep_every_tensor() {
    let fixture = fixture();
    let out = tempfile::tempdir().unwrap();
    let checkpoint = Checkpoint::open(&fixture.sharded()).unwrap();
    let summary = export(&checkpoint, out.path(), 300_000);
    assert!(summary.shards > 1, "{summary:?}");
    assert!(out.path().join("model.safetensors.index.json").is_file());
    Checkpoint::open(out.path()).unwrap();
    assert_same_tensors(&fixture.checkpoint(), out.path());
}

type Tensors = BTreeMap<String, (safetensors::Dtype, Vec<usize>, Vec<u8>)>;

/// Rewrites a single-file checkpoint's weights through `edit`.
fn rewrite_weights(dir: &Path, edit: impl FnOnce(&mut Tensors)) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Tensors = file
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            (
                name,
                (view.dtype(), view.shape().to_vec(), view.data().to_vec()),
            )
        })
        .collect();
    edit(&mut tensors);
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, (dtype, shape, data))| {
            (
                name.clone(),
                safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
}

fn edit_config(dir: &Path, edit: impl FnOnce(&mut serde_json::Value)) {
    let path = dir.join("config.json");
    let mut config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    edit(&mut config);
    std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
}

/// A copy of the fixture checkpoint broken by `damage`, and the error opening it gives.
pub(crate) fn broken(
    damage: impl FnOnce(&Path),
) -> (tempfile::TempDir, std::path::PathBuf, MoeError) {
    let temp = tempfile::tempdir().unwrap();
    let dir = checkpoint_copy(temp.path());
    damage(&dir);
    let error = Checkpoint::open(&dir).expect_err("a broken checkpoint must be refused");
    (temp, dir, error)
}

pub(crate) const EXPERT_W2: &str = "model.layers.2.block_sparse_moe.experts.5.w2.weight";

#[test]
fn missing_tensor_is_named() {
    let (_temp, _, error) = broken(|dir| {
        rewrite_weights(dir, |tensors| {
            tensors.remove(EXPERT_W2);
        })
    });
    assert!(
        matches!(&error, MoeError::MissingTensor { name } if name == EXPERT_W2),
        "{error}"
    );
}

#[test]
fn wrong_shape_is_named_with_both_shapes() {
    let (_temp, _, error) = broken(|dir| {
        rewrite_weights(dir, |tensors| {
            tensors.get_mut(EXPERT_W2).unwrap().1 = vec![128, 64];
        })
    });
    match error {
        MoeError::WrongShape {
            name,
            got,
            expected,
        } => {
            assert_eq!(name, EXPERT_W2);
            assert_eq!((got, expected), (vec![128, 64], vec![64, 128]));
        }
        other => panic!("expected WrongShape, got {other}"),
    }
}

#[test]
fn unsupported_architecture_is_refused() {
    let (_temp, _, error) = broken(|dir| {
        edit_config(dir, |config| {
            config["architectures"] = serde_json::json!(["LlamaForCausalLM"]);
            config["model_type"] = serde_json::json!("llama");
        })
    });
    assert!(
        matches!(error, MoeError::UnsupportedArchitecture { .. }),
        "{error}"
    );
}

#[test]
fn unexpected_tensor_and_unsupported_dtype_are_refused() {
    let (_temp, _, error) = broken(|dir| {
        rewrite_weights(dir, |tensors| {
            let norm = tensors["model.norm.weight"].clone();
            tensors.insert(
                "model.layers.0.block_sparse_moe.experts.gate_up_proj".into(),
                norm,
            );
        })
    });
    assert!(
        matches!(error, MoeError::UnexpectedTensor { .. }),
        "{error}"
    );

    let (_temp, _, error) = broken(|dir| {
        rewrite_weights(dir, |tensors| {
            tensors.get_mut("model.norm.weight").unwrap().0 = safetensors::Dtype::I32;
        })
    });
    assert!(
        matches!(&error, MoeError::UnsupportedDtype { name, dtype } if name == "model.norm.weight" && dtype == "I32"),
        "{error}"
    );
}

#[test]
fn missing_files_are_named() {
    for file in ["config.json", "tokenizer.json", "model.safetensors"] {
        let (_temp, dir, error) = broken(|dir| std::fs::remove_file(dir.join(file)).unwrap());
        match error {
            MoeError::MissingFile { path } => assert_eq!(path, dir.join(file)),
            MoeError::NoWeights { dir: missing } => {
                assert_eq!(file, "model.safetensors");
                assert_eq!(missing, dir);
            }
            other => panic!("{file}: unexpected {other}"),
        }
    }
}

#[test]
fn truncated_weights_file_is_refused() {
    let length = std::fs::metadata(fixture().checkpoint().join("model.safetensors"))
        .unwrap()
        .len();
    let (_temp, dir, error) = broken(|dir| {
        let path = dir.join("model.safetensors");
        let file = std::fs::OpenOptions::new().write(true).open(&path).unwrap();
        file.set_len(length - 100).unwrap();
    });
    match error {
        MoeError::SafetensorsLength {
            path,
            expected,
            found,
        } => {
            assert_eq!(path, dir.join("model.safetensors"));
            assert_eq!((expected, found), (length, length - 100));
        }
        other => panic!("expected SafetensorsLength, got {other}"),
    }
}

/// The header's length is checked against `SAFETENSORS_HEADER_BYTES_MAX` before the header is
/// read: one past it is refused as too large; at it, the file is then too short for it.
#[test]
fn a_safetensors_header_is_bounded_before_it_is_read() {
    let temp = tempfile::tempdir().unwrap();
    let path = temp.path().join("model.safetensors");
    for (declared, too_large) in [
        (blyan_moe::SAFETENSORS_HEADER_BYTES_MAX + 1, true),
        (blyan_moe::SAFETENSORS_HEADER_BYTES_MAX, false),
    ] {
        let mut bytes = declared.to_le_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        std::fs::write(&path, &bytes).unwrap();
        match (SafetensorsSource::open_file(&path).unwrap_err(), too_large) {
            (
                MoeError::SafetensorsHeaderTooLarge {
                    bytes, bytes_max, ..
                },
                true,
            ) => {
                assert_eq!(
                    (bytes, bytes_max),
                    (declared, blyan_moe::SAFETENSORS_HEADER_BYTES_MAX)
                );
            }
            (
                MoeError::SafetensorsLength {
                    expected, found, ..
                },
                false,
            ) => {
                assert_eq!((expected, found), (8 + declared, 10));
            }
            (other, _) => panic!("declared {declared}: unexpected {other}"),
        }
    }
    // A header the library refuses (offsets that are not contiguous) is its typed error.
    let header = br#"{"w":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0; 8]);
    std::fs::write(&path, &bytes).unwrap();
    assert!(matches!(
        SafetensorsSource::open_file(&path).unwrap_err(),
        MoeError::Safetensors { .. }
    ));
}
