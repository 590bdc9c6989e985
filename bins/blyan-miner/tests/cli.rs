//! The miner's commands end to end: a key, a checkpoint made by the reference implementation
//! (`scripts/fixtures/make_tiny_mixtral.py`), upload into a real chain store, export back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::Path;

use common::{fixture, miner, stdout};

#[test]
fn keygen_upload_reupload_export() {
    let temp = tempfile::tempdir().unwrap();
    let key = temp.path().join("miner.key");
    let address = stdout(&miner(&[
        "keygen".as_ref(),
        "--out".as_ref(),
        key.as_os_str(),
    ]));
    let address = address.trim();
    assert!(
        address.starts_with("0x") && address.len() == 42,
        "{address}"
    );
    // A key file is never overwritten.
    let again = miner(&["keygen".as_ref(), "--out".as_ref(), key.as_os_str()]);
    assert!(!again.status.success());

    let checkpoint = fixture(&temp.path().join("fixture"));
    let data = temp.path().join("data");
    let upload = |extra: &[&str]| {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "upload".as_ref(),
            "--checkpoint".as_ref(),
            checkpoint.as_os_str(),
            "--key".as_ref(),
            key.as_os_str(),
            "--data-dir".as_ref(),
            data.as_os_str(),
        ];
        args.extend(extra.iter().map(|arg| std::ffi::OsStr::new(*arg)));
        stdout(&miner(&args))
    };
    let first = upload(&[]);
    assert!(
        first.contains("experts: 32 written, 0 unchanged"),
        "{first}"
    );
    assert!(first.contains(address), "{first}");
    let second = upload(&[]);
    assert!(second.contains("(unchanged)"), "{second}");
    assert!(
        second.contains("experts: 0 written, 32 unchanged"),
        "{second}"
    );

    let out = temp.path().join("export");
    stdout(&miner(&[
        "export".as_ref(),
        "--data-dir".as_ref(),
        data.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]));
    for file in ["config.json", "generation_config.json", "tokenizer.json"] {
        assert!(
            std::fs::read(checkpoint.join(file)).unwrap() == std::fs::read(out.join(file)).unwrap(),
            "{file} differs"
        );
    }
    let original = safetensors_tensors(&checkpoint.join("model.safetensors"));
    assert_eq!(
        original,
        safetensors_tensors(&out.join("model.safetensors"))
    );

    let quantized = upload(&["--quantize", "int8"]);
    assert!(quantized.contains("experts: 32 written"), "{quantized}");
}

fn safetensors_tensors(path: &Path) -> Vec<(String, Vec<usize>, Vec<u8>)> {
    let bytes = std::fs::read(path).unwrap();
    let header_len = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    let header: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&bytes[8..8 + header_len]).unwrap();
    let data = &bytes[8 + header_len..];
    let mut tensors: Vec<_> = header
        .into_iter()
        .filter(|(name, _)| name != "__metadata__")
        .map(|(name, entry)| {
            let shape = entry["shape"]
                .as_array()
                .unwrap()
                .iter()
                .map(|d| d.as_u64().unwrap() as usize)
                .collect();
            let offsets = entry["data_offsets"].as_array().unwrap();
            let (start, end) = (
                offsets[0].as_u64().unwrap() as usize,
                offsets[1].as_u64().unwrap() as usize,
            );
            (name, shape, data[start..end].to_vec())
        })
        .collect();
    tensors.sort();
    tensors
}

#[test]
fn a_bad_checkpoint_is_refused_before_the_store_is_touched() {
    let temp = tempfile::tempdir().unwrap();
    let key = temp.path().join("miner.key");
    stdout(&miner(&[
        "keygen".as_ref(),
        "--out".as_ref(),
        key.as_os_str(),
    ]));
    let checkpoint = temp.path().join("empty");
    std::fs::create_dir_all(&checkpoint).unwrap();
    std::fs::write(
        checkpoint.join("config.json"),
        br#"{"model_type": "llama", "architectures": ["LlamaForCausalLM"]}"#,
    )
    .unwrap();
    let data = temp.path().join("data");
    let output = miner(&[
        "upload".as_ref(),
        "--checkpoint".as_ref(),
        checkpoint.as_os_str(),
        "--key".as_ref(),
        key.as_os_str(),
        "--data-dir".as_ref(),
        data.as_os_str(),
    ]);
    assert!(!output.status.success());
    let error = String::from_utf8_lossy(&output.stderr);
    assert!(error.contains("refusing checkpoint"), "{error}");
    assert!(
        !data.exists(),
        "nothing may be written for a refused checkpoint"
    );
}
