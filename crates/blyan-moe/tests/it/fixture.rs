//! The tiny Mixtral fixture, generated once per test run by the reference implementation
//! (`scripts/fixtures/make_tiny_mixtral.py` in the project's Python environment).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use blyan_moe::SafetensorsSource;
use tch::Tensor;

/// One prompt of the fixture with what the reference computed for it.
#[derive(Debug, serde::Deserialize)]
pub(crate) struct Case {
    pub prompt: String,
    pub input_ids: Vec<u32>,
    pub greedy_ids: Vec<u32>,
    pub greedy_text: String,
}

#[derive(Debug, serde::Deserialize)]
pub(crate) struct Expected {
    pub greedy_new_tokens: u32,
    pub transformers: String,
    pub cases: Vec<Case>,
}

pub(crate) struct Fixture {
    pub dir: PathBuf,
    pub expected: Expected,
}

impl Fixture {
    /// The single-file checkpoint.
    pub(crate) fn checkpoint(&self) -> PathBuf {
        self.dir.join("checkpoint")
    }

    /// The same weights in shards with an index.
    pub(crate) fn sharded(&self) -> PathBuf {
        self.dir.join("checkpoint_sharded")
    }

    /// The reference logits `[prompt_len, vocab]` of case `index`.
    pub(crate) fn logits(&self, index: usize) -> Tensor {
        use blyan_moe::WeightSource;
        SafetensorsSource::open_file(&self.dir.join("expected.safetensors"))
            .unwrap()
            .tensor(&format!("logits_{index}"))
            .unwrap()
    }
}

/// The Python interpreter of the project's environment (see `scripts/env.sh`).
pub(crate) fn python() -> PathBuf {
    if let Some(python) = std::env::var_os("BLYAN_PYTHON") {
        return PathBuf::from(python);
    }
    let venv = std::env::var_os("BLYAN_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repository_root().join(".venv"));
    let python = venv.join("bin/python");
    if python.is_file() {
        return python;
    }
    PathBuf::from("python3")
}

pub(crate) fn repository_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn generate() -> Fixture {
    let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
    let dir = base.join(format!("tiny-mixtral-{}", std::process::id()));
    // Fixtures of earlier runs are of no use: every run proves the reference again.
    if let Ok(entries) = std::fs::read_dir(base) {
        for entry in entries.flatten() {
            let name = entry.file_name();
            if name.to_string_lossy().starts_with("tiny-mixtral-") && entry.path() != dir {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let script = repository_root().join("scripts/fixtures/make_tiny_mixtral.py");
    let python = python();
    let output = Command::new(&python)
        .arg(&script)
        .arg("--out")
        .arg(&dir)
        .env("HF_HUB_OFFLINE", "1")
        .env("TRANSFORMERS_VERBOSITY", "error")
        .env("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        .output()
        .unwrap_or_else(|error| {
            panic!(
                "the parity fixture needs the project's Python ({}): {error}; \
                 run scripts/setup.sh (or set BLYAN_PYTHON)",
                python.display()
            )
        });
    assert!(
        output.status.success(),
        "the reference fixture script failed ({}): {}\nrun scripts/setup.sh to install \
         torch and transformers into the project's Python environment",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let expected: Expected =
        serde_json::from_slice(&std::fs::read(dir.join("expected.json")).unwrap()).unwrap();
    Fixture { dir, expected }
}

/// The fixture, generated on first use.
pub(crate) fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(generate)
}

/// A fresh copy of the single-file checkpoint that a test may change.
pub(crate) fn checkpoint_copy(into: &Path) -> PathBuf {
    let source = fixture().checkpoint();
    let target = into.join("checkpoint");
    std::fs::create_dir_all(&target).unwrap();
    for entry in std::fs::read_dir(&source).unwrap() {
        let entry = entry.unwrap();
        std::fs::copy(entry.path(), target.join(entry.file_name())).unwrap();
    }
    target
}
