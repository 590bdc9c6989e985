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

/// `blyan-miner` with `password` in `BLYAN_KEYSTORE_PASSWORD` (or none at all).
fn miner_with_password(args: &[&std::ffi::OsStr], password: Option<&str>) -> std::process::Output {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_blyan-miner"));
    command.args(args).env_remove("BLYAN_KEYSTORE_PASSWORD");
    if let Some(password) = password {
        command.env("BLYAN_KEYSTORE_PASSWORD", password);
    }
    command.output().unwrap()
}

/// The Web3 Secret Storage specification's PBKDF2 test vector: what a wallet exports.
const SPEC_KEYSTORE: &str = r#"{"crypto":{"cipher":"aes-128-ctr","cipherparams":{"iv":"6087dab2f9fdbbfaddc31a909735c1e6"},"ciphertext":"5318b4d5bcd28de64ee5559e671353e16f075ecae9f99c7a79a38af5f869aa46","kdf":"pbkdf2","kdfparams":{"c":262144,"dklen":32,"prf":"hmac-sha256","salt":"ae3cd4e7013836a3df6bd7241b12db061dbe2c6785853cce422d148a624ce0bd"},"mac":"517ead924a9d0dc3124507e3393d175ce3ff7c1e96529c6c555ce9e51205e9b2"},"id":"3198bc9c-6672-5ab3-d995-4942343ae5b6","version":3}"#;
/// The address of the specification vector's key.
const SPEC_ADDRESS: &str = "0x008aeeda4d805471df9b2a5b0f38a0c3bcba786b";

/// `keygen --keystore` writes an encrypted keystore that `upload --key` opens with the password
/// from the environment or a file, never from the command line; a wallet's keystore (the
/// specification's vector) signs as its own address; the description given is the one
/// published, and `export` records it with the versions it wrote.
#[test]
fn keystores_sign_uploads_and_the_description_is_the_one_given() {
    let temp = tempfile::tempdir().unwrap();
    let keystore = temp.path().join("miner.json");
    let created = miner_with_password(
        &[
            "keygen".as_ref(),
            "--out".as_ref(),
            keystore.as_os_str(),
            "--keystore".as_ref(),
        ],
        Some("correct horse"),
    );
    let address = stdout(&created).trim().to_owned();
    let document: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&keystore).unwrap()).unwrap();
    assert_eq!(document["version"], 3);
    assert_eq!(document["crypto"]["kdf"], "scrypt");
    assert_eq!(
        format!("0x{}", document["address"].as_str().unwrap()),
        address.to_ascii_lowercase()
    );
    // No password: refused, saying how to give one.
    let without = miner_with_password(
        &[
            "keygen".as_ref(),
            "--out".as_ref(),
            temp.path().join("other.json").as_os_str(),
            "--keystore".as_ref(),
        ],
        None,
    );
    assert!(!without.status.success());
    assert!(String::from_utf8_lossy(&without.stderr).contains("BLYAN_KEYSTORE_PASSWORD"));

    let checkpoint = fixture(&temp.path().join("fixture"));
    let data = temp.path().join("data");
    let upload = |key: &Path, password: Option<&str>, extra: &[&str]| {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "upload".as_ref(),
            "--checkpoint".as_ref(),
            checkpoint.as_os_str(),
            "--key".as_ref(),
            key.as_os_str(),
            "--data-dir".as_ref(),
            data.as_os_str(),
        ];
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        miner_with_password(&args, password)
    };
    let wrong = upload(&keystore, Some("wrong"), &[]);
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("wrong password"));
    assert!(!data.exists(), "nothing written with a wrong password");
    let missing = upload(&keystore, None, &[]);
    assert!(String::from_utf8_lossy(&missing.stderr).contains("--password-file"));

    let first = stdout(&upload(
        &keystore,
        Some("correct horse"),
        &["--description", "tiny Mixtral fixture"],
    ));
    assert!(first.contains(&format!("author {address}")), "{first}");

    // A wallet's keystore, its password in a file: its blocks are signed by its address (the
    // same checkpoint quantized, so there is something new to sign).
    let wallet = temp.path().join("wallet.json");
    std::fs::write(&wallet, SPEC_KEYSTORE).unwrap();
    let password_file = temp.path().join("password.txt");
    std::fs::write(&password_file, "testpassword\n").unwrap();
    let signed = stdout(&upload(
        &wallet,
        None,
        &[
            "--password-file",
            password_file.to_str().unwrap(),
            "--quantize",
            "int8",
            "--force",
            "--description",
            "tiny Mixtral fixture",
        ],
    ));
    assert!(
        signed
            .to_ascii_lowercase()
            .contains(&format!("author {SPEC_ADDRESS}")),
        "{signed}"
    );

    let out = temp.path().join("export");
    stdout(&miner(&[
        "export".as_ref(),
        "--data-dir".as_ref(),
        data.as_os_str(),
        "--out".as_ref(),
        out.as_os_str(),
    ]));
    let record: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out.join("fetched-from.json")).unwrap()).unwrap();
    assert_eq!(record["description"], "tiny Mixtral fixture");
    let experts = record["experts"].as_array().unwrap();
    assert_eq!(experts.len(), 32);
    assert!(
        experts.iter().all(|expert| expert["version"] == 2),
        "{record}"
    );
    let text = std::fs::read_to_string(out.join("fetched-from.json")).unwrap();
    assert!(
        !text.contains(checkpoint.to_str().unwrap()),
        "no local path is published: {text}"
    );
}
