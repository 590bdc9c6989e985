//! The shipped default model (`models/default`), imported into a temporary chain store: the
//! teacher every L1 test scores with.

use std::path::Path;
use std::sync::Arc;

use blyan_chain::{ChainStore, Durability, GenesisSpec, StoreConfig};
use blyan_moe::{Generator, ModelOptions, SHIPPED_MODEL_DIR, import_shipped_model};
use blyan_quality::ScoreOptions;

/// The shipped model, served as a node serves it, and the directory holding its store.
pub(crate) struct Teacher {
    pub(crate) generator: Generator,
    _dir: tempfile::TempDir,
}

pub(crate) fn teacher() -> Teacher {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let config = StoreConfig {
        durability: Durability::Unsynced,
        ..StoreConfig::default()
    };
    let store = Arc::new(
        ChainStore::open_with(dir.path(), config, &GenesisSpec::shipped(), None)
            .expect("the store opens"),
    );
    import_shipped_model(&store, Path::new(SHIPPED_MODEL_DIR)).expect("the shipped model imports");
    let generator =
        Generator::from_chain(store, ModelOptions::default()).expect("the shipped model loads");
    Teacher {
        generator,
        _dir: dir,
    }
}

impl Teacher {
    /// Bits per byte of each text, `batch` windows per pass.
    pub(crate) fn score(&self, texts: &[String], batch: usize) -> Vec<f64> {
        let options = ScoreOptions {
            batch_windows: batch,
            ..ScoreOptions::default()
        };
        let tokenizer = self.generator.tokenizer();
        self.generator
            .with_model(|model| {
                blyan_quality::score_bits_per_byte(model, tokenizer, texts, &options, &mut |_| {})
            })
            .expect("the model is free")
            .expect("the texts score")
    }
}
