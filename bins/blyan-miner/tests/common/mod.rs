//! What the miner's test binaries share: the miner binary, and a checkpoint made by the reference
//! implementation (`scripts/fixtures/make_tiny_mixtral.py`) with a fresh key beside it.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The tiny Mixtral checkpoint the fixture script writes under `out`.
pub(crate) fn fixture(out: &Path) -> PathBuf {
    let venv = std::env::var_os("BLYAN_VENV").map_or_else(|| root().join(".venv"), PathBuf::from);
    let output = Command::new(venv.join("bin/python"))
        .arg(root().join("scripts/fixtures/make_tiny_mixtral.py"))
        .arg("--out")
        .arg(out)
        .env("HF_HUB_OFFLINE", "1")
        .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        .output()
        .expect("the project's Python environment (scripts/setup.sh)");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    out.join("checkpoint")
}

pub(crate) fn miner<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_blyan-miner"))
        .args(args)
        .output()
        .unwrap()
}

/// The command's stdout, after asserting it succeeded (both streams shown if not).
pub(crate) fn stdout(output: &Output) -> String {
    assert!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

/// A temp dir holding the fixture checkpoint and a key made by `blyan-miner keygen`.
pub(crate) struct Workspace {
    pub temp: tempfile::TempDir,
    pub checkpoint: PathBuf,
    pub key: PathBuf,
}

impl Workspace {
    pub(crate) fn new() -> Workspace {
        let temp = tempfile::tempdir().unwrap();
        let checkpoint = fixture(&temp.path().join("fixture"));
        let key = temp.path().join("miner.key");
        stdout(&miner(&[
            "keygen".as_ref(),
            "--out".as_ref(),
            key.as_os_str(),
        ]));
        Workspace {
            temp,
            checkpoint,
            key,
        }
    }

    /// `upload --checkpoint … --key …` followed by `extra`.
    pub(crate) fn upload(&self, extra: &[&str]) -> Output {
        let mut args: Vec<&std::ffi::OsStr> = vec![
            "upload".as_ref(),
            "--checkpoint".as_ref(),
            self.checkpoint.as_os_str(),
            "--key".as_ref(),
            self.key.as_os_str(),
        ];
        args.extend(extra.iter().map(|arg| std::ffi::OsStr::new(*arg)));
        miner(&args)
    }
}
