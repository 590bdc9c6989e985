//! The shipped model: blocks built without a key, the same on every build, imported only by a
//! store whose genesis pins their hashes; a changed byte or an unpinned store is refused and
//! leaves the store as it was.

use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;

use blyan_chain::{AuthorKey, BlockHash, ChainStore, Dtype, Durability, GenesisSpec, StoreConfig};
use blyan_moe::{
    CastWeights, Checkpoint, Generator, ModelOptions, MoeError, PublishOptions, SeedModel,
    SeedWritten, build_pinned_model, ensure_model, import_shipped_model, write_shipped_model,
};

use crate::fixture::fixture;

fn config() -> StoreConfig {
    StoreConfig {
        durability: Durability::Unsynced,
        ..StoreConfig::default()
    }
}

fn options() -> PublishOptions {
    PublishOptions {
        description: "the parity fixture, shipped".into(),
        ..PublishOptions::default()
    }
}

/// Ships the fixture (as float16) into `dir`; returns the pinned hashes.
fn ship(dir: &Path) -> Vec<BlockHash> {
    let checkpoint = Checkpoint::open(&fixture().checkpoint()).unwrap();
    let weights = CastWeights::new(checkpoint.weights(), Dtype::F16).unwrap();
    let model = build_pinned_model(
        checkpoint.config(),
        checkpoint.files(),
        &weights,
        &options(),
    )
    .unwrap();
    let files = write_shipped_model(dir, &model, "test model").unwrap();
    assert!(files.segments.len() >= 2, "{:?}", files.segments);
    model
        .blocks
        .iter()
        .map(|(header, _)| header.hash())
        .collect()
}

fn pinned_store(dir: &Path, pinned: &[BlockHash]) -> Arc<ChainStore> {
    let genesis = GenesisSpec {
        pinned: Cow::Owned(pinned.to_vec()),
        ..GenesisSpec::shipped()
    };
    Arc::new(ChainStore::open_with(dir, config(), &genesis, None).unwrap())
}

#[test]
fn the_same_checkpoint_gives_the_same_pinned_blocks() {
    let temp = tempfile::tempdir().unwrap();
    let first = ship(&temp.path().join("a"));
    let second = ship(&temp.path().join("b"));
    assert_eq!(first, second);
    for name in std::fs::read_dir(temp.path().join("a")).unwrap() {
        let name = name.unwrap().file_name();
        assert_eq!(
            std::fs::read(temp.path().join("a").join(&name)).unwrap(),
            std::fs::read(temp.path().join("b").join(&name)).unwrap(),
            "{name:?}"
        );
    }
}

#[test]
fn a_store_that_pins_the_blocks_serves_the_shipped_model() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("shipped");
    let pinned = ship(&dir);
    let store = pinned_store(&temp.path().join("chain"), &pinned);
    let key = AuthorKey::generate();
    let seed = SeedModel::Shipped(dir.clone());
    let written = ensure_model(&store, &key, &seed).unwrap();
    assert!(
        matches!(written, Some(SeedWritten::Shipped(_))),
        "{written:?}"
    );
    assert_eq!(store.block_count(), 3 + pinned.len() as u64);
    // A second start writes nothing.
    assert_eq!(ensure_model(&store, &key, &seed).unwrap(), None);

    let generator = Generator::from_chain(Arc::clone(&store), ModelOptions::default()).unwrap();
    assert!(!generator.info().untrained);
    assert!(
        generator
            .info()
            .description
            .contains("the parity fixture, shipped")
    );
    // Every block is unsigned and by no author.
    for hash in &pinned {
        let header = store.header(hash).unwrap().unwrap();
        assert!(header.signature.is_none());
        assert_eq!(header.author, blyan_chain::Address::ZERO);
    }
}

#[test]
fn an_unpinned_store_or_a_changed_byte_is_refused_and_nothing_is_imported() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("shipped");
    let pinned = ship(&dir);

    // The network's genesis does not pin these blocks: they need signatures.
    let store = Arc::new(ChainStore::open(temp.path().join("plain"), config()).unwrap());
    let error = import_shipped_model(&store, &dir).unwrap_err();
    assert!(
        matches!(
            error,
            MoeError::Chain(blyan_chain::Error::MissingSignature { .. })
        ),
        "{error}"
    );
    assert_eq!(store.block_count(), 3);

    // One byte of a payload changed: its block no longer hashes to a pinned hash.
    let mut segments: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| {
            path.extension()
                .is_some_and(|extension| extension == "blyexp")
        })
        .collect();
    segments.sort();
    let first = &segments[0];
    let mut bytes = std::fs::read(first).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 1;
    std::fs::write(first, bytes).unwrap();
    let store = pinned_store(&temp.path().join("pinned"), &pinned);
    assert!(import_shipped_model(&store, &dir).is_err());
    assert_eq!(store.block_count(), 3);

    // A directory without a shipped model says so.
    let empty = temp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    assert!(matches!(
        import_shipped_model(&store, &empty),
        Err(MoeError::NoShippedModel { .. })
    ));
}
