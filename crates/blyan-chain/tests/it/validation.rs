//! One test per validation failure: each refused with its own typed error, and the store
//! unchanged by the refusal.

use std::borrow::Cow;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use blyan_chain::{
    Admission, AuthorKey, BLOCKS_PAGE_COUNT_MAX, BlockHash, BlockHeader, BlockKind, ChainId,
    ChainStore, DEPENDS_ON_COUNT_MAX, Dtype, Error, ExpertName, ForkRule, ForkRules, GenesisSpec,
    HEADER_FORMAT_VERSION, OfferedBlock, PolAcceptance, PolRejection, SignatureFault, StoreConfig,
    TENSOR_METAS_COUNT_MAX, TensorMeta, decode_block, encode_block,
};

use crate::common::{T0, append_entry, bytes, child_of, expert_block, fast_config, on_tip, open};

/// Appends and expects a refusal that leaves the block count unchanged.
fn refused(store: &ChainStore, header: &BlockHeader, payload: &[u8]) -> Error {
    let before = store.block_count();
    let error = store
        .append(header, payload)
        .expect_err("the block must be refused");
    assert_eq!(
        store.block_count(),
        before,
        "a refused block changed the store"
    );
    assert!(!store.contains(&header.hash()).unwrap());
    error
}

#[test]
fn bad_encoding() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert!(matches!(
        store.submit(&[1, 2, 3]),
        Err(Error::Decode { .. })
    ));
    let key = AuthorKey::generate();
    let header = on_tip(
        &store,
        ChainId::Dataset,
        BlockKind::DatasetEntry,
        b"x",
        &key,
    );
    let mut encoded = encode_block(&header, b"x");
    // Corrupt the option tag of prev_hash inside the header (after version, chain, height).
    let tag_at = blyan_chain::BLOCK_PREFIX_BYTES + 2 + 1 + 8;
    assert_eq!(encoded[tag_at], 1);
    encoded[tag_at] = 7;
    assert!(matches!(
        store.submit(&encoded),
        Err(Error::Decode { what: "header", .. })
    ));
    assert!(matches!(decode_block(&encoded), Err(Error::Decode { .. })));
}

#[test]
fn unsupported_version() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = AuthorKey::generate();
    let mut header = BlockHeader::new_child(
        &store.tip(ChainId::Dataset),
        BlockKind::DatasetEntry,
        b"x",
        T0,
    );
    // The version after this build's: a format it cannot know.
    let next = HEADER_FORMAT_VERSION + 1;
    header.format_version = next;
    header.sign(&key);
    assert!(matches!(
        refused(&store, &header, b"x"),
        Error::UnsupportedVersion {
            got,
            supported: HEADER_FORMAT_VERSION
        } if got == next
    ));
    let encoded = encode_block(&header, b"x");
    assert!(matches!(
        store.submit(&encoded),
        Err(Error::UnsupportedVersion { got, .. }) if got == next
    ));
}

#[test]
fn wrong_header_hash() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let header = on_tip(
        &store,
        ChainId::Dataset,
        BlockKind::DatasetEntry,
        b"x",
        &AuthorKey::generate(),
    );
    let mut encoded = encode_block(&header, b"x");
    encoded[5] ^= 0x40;
    match store.submit(&encoded) {
        Err(Error::HeaderHashMismatch { got, expected }) => {
            assert_eq!(got, header.hash());
            assert_ne!(expected, got);
        }
        other => panic!("expected HeaderHashMismatch, got {other:?}"),
    }
}

#[test]
fn missing_signature() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut header = on_tip(
        &store,
        ChainId::Dataset,
        BlockKind::DatasetEntry,
        b"x",
        &AuthorKey::generate(),
    );
    header.signature = None;
    assert!(
        matches!(refused(&store, &header, b"x"), Error::MissingSignature { block } if block == header.hash())
    );
}

#[test]
fn bad_signature() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let header = on_tip(
        &store,
        ChainId::Dataset,
        BlockKind::DatasetEntry,
        b"x",
        &AuthorKey::generate(),
    );
    let signature = header.signature.unwrap();

    let mut zeroed = header.clone();
    zeroed.signature.as_mut().unwrap().0[..64].fill(0);
    assert!(matches!(
        refused(&store, &zeroed, b"x"),
        Error::BadSignature {
            fault: SignatureFault::Malformed,
            ..
        }
    ));

    let mut bad_v = header.clone();
    bad_v.signature.as_mut().unwrap().0[64] = 1;
    assert!(matches!(
        refused(&store, &bad_v, b"x"),
        Error::BadSignature {
            fault: SignatureFault::RecoveryByte,
            ..
        }
    ));

    // The high-s twin of a valid signature (EIP-2 forbids it).
    let parsed = k256::ecdsa::Signature::from_slice(&signature.0[..64]).unwrap();
    let (r, s) = parsed.split_scalars();
    let twin = k256::ecdsa::Signature::from_scalars(r, -*s).unwrap();
    let mut high_s = header.clone();
    let raw = &mut high_s.signature.as_mut().unwrap().0;
    raw[..64].copy_from_slice(&twin.to_bytes());
    raw[64] = if signature.0[64] == 27 { 28 } else { 27 };
    assert!(matches!(
        refused(&store, &high_s, b"x"),
        Error::BadSignature {
            fault: SignatureFault::HighS,
            ..
        }
    ));
}

#[test]
fn signed_by_someone_else() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let (author, other) = (AuthorKey::generate(), AuthorKey::generate());
    let mut header = on_tip(
        &store,
        ChainId::Dataset,
        BlockKind::DatasetEntry,
        b"x",
        &author,
    );
    header.signature = Some(other.sign_eip191(header.hash().as_bytes()));
    match refused(&store, &header, b"x") {
        Error::WrongSigner {
            author: named,
            signer,
            ..
        } => {
            assert_eq!(named, author.address());
            assert_eq!(signer, other.address());
        }
        other => panic!("expected WrongSigner, got {other:?}"),
    }
}

#[test]
fn payload_hash_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let header = on_tip(
        &store,
        ChainId::Dataset,
        BlockKind::DatasetEntry,
        b"abc",
        &AuthorKey::generate(),
    );
    assert!(matches!(
        refused(&store, &header, b"abd"),
        Error::PayloadHashMismatch { .. }
    ));
    assert!(matches!(
        store.append_reader(&header, &b"abd"[..]),
        Err(Error::PayloadHashMismatch { .. })
    ));
}

#[test]
fn payload_length_mismatch() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let header = on_tip(
        &store,
        ChainId::Dataset,
        BlockKind::DatasetEntry,
        b"abc",
        &AuthorKey::generate(),
    );
    assert!(matches!(
        refused(&store, &header, b"abcd"),
        Error::PayloadLengthMismatch {
            got: 4,
            expected: 3,
            ..
        }
    ));
    assert!(matches!(
        store.append_reader(&header, &b"ab"[..]),
        Err(Error::PayloadLengthMismatch {
            got: 2,
            expected: 3,
            ..
        })
    ));
}

#[test]
fn unknown_parent() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut tip = store.tip(ChainId::Dataset);
    tip.hash = BlockHash([0x5a; 32]);
    let header = child_of(&tip, BlockKind::DatasetEntry, b"x", &AuthorKey::generate());
    assert!(matches!(
        refused(&store, &header, b"x"),
        Error::UnknownParent { parent, .. } if parent == BlockHash([0x5a; 32])
    ));
}

#[test]
fn parent_on_another_chain() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut tip = store.tip(ChainId::Meta);
    tip.chain = ChainId::Dataset;
    let header = child_of(&tip, BlockKind::DatasetEntry, b"x", &AuthorKey::generate());
    assert!(matches!(
        refused(&store, &header, b"x"),
        Error::ParentOnOtherChain {
            chain: ChainId::Dataset,
            parent_chain: ChainId::Meta,
            ..
        }
    ));
}

#[test]
fn height_gap() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = AuthorKey::generate();
    let mut header = BlockHeader::new_child(
        &store.tip(ChainId::Dataset),
        BlockKind::DatasetEntry,
        b"x",
        T0,
    );
    header.height += 1;
    header.sign(&key);
    assert!(matches!(
        refused(&store, &header, b"x"),
        Error::HeightGap {
            height: 2,
            expected: 1,
            ..
        }
    ));
}

#[test]
fn fork_on_a_linear_chain() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = AuthorKey::generate();
    let genesis_tip = store.tip(ChainId::Dataset);
    let first = child_of(&genesis_tip, BlockKind::DatasetEntry, b"first", &key);
    let first_hash = store.append(&first, b"first").unwrap();
    let second = child_of(&genesis_tip, BlockKind::DatasetEntry, b"second", &key);
    match refused(&store, &second, b"second") {
        Error::Fork {
            chain,
            height,
            existing,
            ..
        } => {
            assert_eq!((chain, height, existing), (ChainId::Dataset, 1, first_hash));
        }
        other => panic!("expected Fork, got {other:?}"),
    }
}

#[test]
fn fork_allowed_where_the_rule_allows_it() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        fork_rules: ForkRules {
            dataset: ForkRule::AllowForks,
            ..ForkRules::default()
        },
        ..fast_config()
    };
    let store = ChainStore::open(dir.path(), config).unwrap();
    let key = AuthorKey::generate();
    let genesis_tip = store.tip(ChainId::Dataset);
    let first = store
        .append(
            &child_of(&genesis_tip, BlockKind::DatasetEntry, b"first", &key),
            b"first",
        )
        .unwrap();
    let second = store
        .append(
            &child_of(&genesis_tip, BlockKind::DatasetEntry, b"second", &key),
            b"second",
        )
        .unwrap();
    let mut at_one = store.block_hashes_at(ChainId::Dataset, 1).unwrap();
    at_one.sort();
    let mut expected = vec![first, second];
    expected.sort();
    assert_eq!(at_one, expected);
    assert_eq!(
        store.tip(ChainId::Dataset).hash,
        first.min(second),
        "the smallest hash at the greatest height is the tip, whichever came first"
    );
    // The same blocks in the other order: the same tip.
    let other_dir = tempfile::tempdir().unwrap();
    let other = ChainStore::open(other_dir.path(), config_with_forks()).unwrap();
    for payload in [&b"second"[..], b"first"] {
        other
            .append(
                &child_of(&genesis_tip, BlockKind::DatasetEntry, payload, &key),
                payload,
            )
            .unwrap();
    }
    assert_eq!(
        other.tip(ChainId::Dataset).hash,
        store.tip(ChainId::Dataset).hash
    );
    // A higher block is the tip whatever its hash.
    let third = store
        .append(
            &child_of(
                &store.tip(ChainId::Dataset),
                BlockKind::DatasetEntry,
                b"third",
                &key,
            ),
            b"third",
        )
        .unwrap();
    assert_eq!(store.tip(ChainId::Dataset).hash, third);
    crate::common::assert_verifies(&store);
}

fn config_with_forks() -> StoreConfig {
    StoreConfig {
        fork_rules: ForkRules {
            dataset: ForkRule::AllowForks,
            ..ForkRules::default()
        },
        ..fast_config()
    }
}

#[test]
fn unknown_dependency() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let mut header = BlockHeader::new_child(
        &store.tip(ChainId::Dataset),
        BlockKind::DatasetEntry,
        b"x",
        T0,
    );
    header.depends_on.push(BlockHash([0x77; 32]));
    header.sign(&AuthorKey::generate());
    assert!(matches!(
        refused(&store, &header, b"x"),
        Error::UnknownDependency { dependency, .. } if dependency == BlockHash([0x77; 32])
    ));
}

#[test]
fn dependency_stamped_later() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = AuthorKey::generate();
    let mut later = BlockHeader::new_child(
        &store.tip(ChainId::Meta),
        BlockKind::Meta,
        b"arch",
        T0 + 1000,
    );
    later.sign(&key);
    let later_hash = store.append(&later, b"arch").unwrap();
    let mut header = BlockHeader::new_child(
        &store.tip(ChainId::Dataset),
        BlockKind::DatasetEntry,
        b"x",
        T0,
    );
    header.depends_on.push(later_hash);
    header.sign(&key);
    assert!(matches!(
        refused(&store, &header, b"x"),
        Error::DependencyLater { dependency_timestamp_ms, timestamp_ms: T0, .. } if dependency_timestamp_ms == T0 + 1000
    ));
}

#[test]
fn stamped_before_its_parent() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = AuthorKey::generate();
    let mut parent = BlockHeader::new_child(
        &store.tip(ChainId::Dataset),
        BlockKind::DatasetEntry,
        b"p",
        T0 + 5,
    );
    parent.sign(&key);
    store.append(&parent, b"p").unwrap();
    let child = on_tip(
        &store,
        ChainId::Dataset,
        BlockKind::DatasetEntry,
        b"c",
        &key,
    );
    assert!(matches!(
        refused(&store, &child, b"c"),
        Error::TimestampBeforeParent { .. }
    ));
}

#[test]
fn duplicate_dependency() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let meta_genesis = store.tip(ChainId::Meta).hash;
    let mut header = BlockHeader::new_child(
        &store.tip(ChainId::Dataset),
        BlockKind::DatasetEntry,
        b"x",
        T0,
    );
    header.depends_on = vec![meta_genesis, meta_genesis];
    header.sign(&AuthorKey::generate());
    assert!(
        matches!(refused(&store, &header, b"x"), Error::DuplicateDependency { dependency, .. } if dependency == meta_genesis)
    );
}

#[test]
fn dependency_count_holds_at_the_bound_and_fails_one_past() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = AuthorKey::generate();
    let mut stored = Vec::new();
    for index in 0..=DEPENDS_ON_COUNT_MAX {
        stored.push(append_entry(&store, &index.to_le_bytes(), &key));
    }
    let mut header = BlockHeader::new_child(&store.tip(ChainId::Meta), BlockKind::Meta, b"m", T0);
    header.depends_on = stored.clone();
    header.sign(&key);
    assert!(matches!(
        refused(&store, &header, b"m"),
        Error::TooManyDependencies { count, max: DEPENDS_ON_COUNT_MAX, .. } if count == u64::from(DEPENDS_ON_COUNT_MAX) + 1
    ));
    header.depends_on.pop();
    header.sign(&key);
    let hash = store.append(&header, b"m").unwrap();
    assert_eq!(
        store.dependents(&stored[0]).unwrap().len(),
        2,
        "its child and the meta block"
    );
    assert_eq!(
        store.header(&hash).unwrap().unwrap().depends_on.len(),
        DEPENDS_ON_COUNT_MAX as usize
    );
}

#[test]
fn kind_not_allowed_on_chain() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let header = on_tip(
        &store,
        ChainId::Dataset,
        BlockKind::Router,
        b"x",
        &AuthorKey::generate(),
    );
    assert!(matches!(
        refused(&store, &header, b"x"),
        Error::KindNotAllowed {
            chain: ChainId::Dataset,
            kind: BlockKind::Router,
            ..
        }
    ));
}

#[test]
fn genesis_out_of_place() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = AuthorKey::generate();
    let late_genesis = on_tip(&store, ChainId::Dataset, BlockKind::Genesis, b"x", &key);
    assert!(matches!(
        refused(&store, &late_genesis, b"x"),
        Error::GenesisPlacement { height: 1, .. }
    ));
    let mut orphan = late_genesis.clone();
    orphan.kind = BlockKind::DatasetEntry;
    orphan.height = 0;
    orphan.prev_hash = None;
    orphan.sign(&key);
    assert!(matches!(
        refused(&store, &orphan, b"x"),
        Error::GenesisPlacement {
            has_parent: false,
            ..
        }
    ));
}

#[test]
fn genesis_of_another_covenant() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let other = GenesisSpec {
        covenant: Cow::Borrowed(b"other rules"),
        ..GenesisSpec::shipped()
    };
    let block = other.block(ChainId::Meta);
    assert!(matches!(
        refused(&store, &block.header, &block.payload),
        Error::GenesisMismatch {
            chain: ChainId::Meta,
            ..
        }
    ));
    // The right genesis is simply already there.
    let ours = GenesisSpec::shipped().block(ChainId::Meta);
    assert!(matches!(
        store.append(&ours.header, &ours.payload),
        Err(Error::AlreadyExists { .. })
    ));
    drop(store);
    // And a store made with one covenant does not open with another.
    assert!(matches!(
        ChainStore::open_with(dir.path(), fast_config(), &other, None),
        Err(Error::GenesisMismatch { .. })
    ));
}

#[test]
fn payload_limit_holds_at_the_bound_and_fails_one_past() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        payload_bytes_max: 1024,
        ..fast_config()
    };
    let store = ChainStore::open(dir.path(), config).unwrap();
    let key = AuthorKey::generate();
    let at_bound = bytes(1, 1024);
    store
        .append(
            &on_tip(
                &store,
                ChainId::Dataset,
                BlockKind::DatasetEntry,
                &at_bound,
                &key,
            ),
            &at_bound,
        )
        .unwrap();
    let past = bytes(2, 1025);
    let header = on_tip(
        &store,
        ChainId::Dataset,
        BlockKind::DatasetEntry,
        &past,
        &key,
    );
    assert!(matches!(
        refused(&store, &header, &past),
        Error::PayloadTooLarge {
            bytes: 1025,
            max: 1024,
            ..
        }
    ));
}

#[test]
fn proof_of_work_below_difficulty() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        pow_difficulty_bits: 8,
        ..fast_config()
    };
    let store = ChainStore::open(dir.path(), config).unwrap();
    let key = AuthorKey::generate();
    let mut header = BlockHeader::new_child(
        &store.tip(ChainId::Dataset),
        BlockKind::DatasetEntry,
        b"x",
        T0,
    );
    header.author = key.address();
    // Find a nonce whose hash is short of the difficulty (most are).
    while header.hash().leading_zero_bits() >= 8 {
        header.pow_nonce += 1;
    }
    header.sign(&key);
    assert!(matches!(
        refused(&store, &header, b"x"),
        Error::InsufficientWork {
            difficulty_bits: 8,
            ..
        }
    ));
    header.mine(8);
    header.sign(&key);
    store.append(&header, b"x").unwrap();
}

#[test]
fn expert_versions_must_follow_on() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = AuthorKey::generate();
    let skipping = expert_block(&store, "layer0.expert1", 2, b"w", &key);
    assert!(matches!(
        refused(&store, &skipping, b"w"),
        Error::ExpertVersionMismatch {
            got: 2,
            expected: 1,
            ..
        }
    ));
    store
        .append(&expert_block(&store, "layer0.expert1", 1, b"w", &key), b"w")
        .unwrap();
    let repeat = expert_block(&store, "layer0.expert1", 1, b"w2", &key);
    assert!(matches!(
        refused(&store, &repeat, b"w2"),
        Error::ExpertVersionMismatch {
            got: 1,
            expected: 2,
            ..
        }
    ));
}

#[test]
fn metadata_must_fit_the_kind() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let key = AuthorKey::generate();
    let nameless = on_tip(&store, ChainId::Parameters, BlockKind::Expert, b"w", &key);
    assert!(matches!(
        refused(&store, &nameless, b"w"),
        Error::MetaInvalid {
            kind: BlockKind::Expert,
            ..
        }
    ));

    let mut wrong_layer = expert_block(&store, "layer2.expert0", 1, b"w", &key);
    wrong_layer.meta.layer = Some(3);
    wrong_layer.sign(&key);
    assert!(matches!(
        refused(&store, &wrong_layer, b"w"),
        Error::MetaInvalid { .. }
    ));

    let mut many = on_tip(
        &store,
        ChainId::Dataset,
        BlockKind::DatasetEntry,
        b"d",
        &key,
    );
    let tensor = TensorMeta {
        name: "t".into(),
        dtype: Dtype::F32,
        shape: vec![1],
    };
    many.meta.tensors = vec![tensor; TENSOR_METAS_COUNT_MAX as usize];
    many.sign(&key);
    store.append(&many, b"d").unwrap();
    let mut too_many = on_tip(
        &store,
        ChainId::Dataset,
        BlockKind::DatasetEntry,
        b"e",
        &key,
    );
    too_many.meta.tensors = vec![many.meta.tensors[0].clone(); TENSOR_METAS_COUNT_MAX as usize + 1];
    too_many.sign(&key);
    assert!(matches!(
        refused(&store, &too_many, b"e"),
        Error::MetaInvalid { .. }
    ));
}

#[test]
fn already_stored() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    let header = on_tip(
        &store,
        ChainId::Dataset,
        BlockKind::DatasetEntry,
        b"x",
        &AuthorKey::generate(),
    );
    let hash = store.append(&header, b"x").unwrap();
    assert!(
        matches!(store.append(&header, b"x"), Err(Error::AlreadyExists { block }) if block == hash)
    );
}

#[test]
fn page_limit_holds_at_the_bound_and_fails_one_past() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(dir.path());
    assert_eq!(
        store
            .blocks(ChainId::Dataset, 0, BLOCKS_PAGE_COUNT_MAX)
            .unwrap()
            .len(),
        1
    );
    assert!(matches!(
        store.blocks(ChainId::Dataset, 0, BLOCKS_PAGE_COUNT_MAX + 1),
        Err(Error::LimitExceeded {
            what: "blocks per page",
            ..
        })
    ));
}

/// Decides by a payload's first byte: 0 serves, 1 stores a candidate, 2 promotes the blocks the
/// header depends on, anything else is refused. Counts its calls, remembers the last base.
#[derive(Default)]
struct FirstByteRules {
    calls: AtomicU64,
    last_base: std::sync::Mutex<Option<Option<BlockHash>>>,
}

impl PolAcceptance for FirstByteRules {
    fn admit(
        &self,
        store: &ChainStore,
        block: &OfferedBlock<'_>,
    ) -> Result<Admission, PolRejection> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        assert!(
            !store.contains(&block.hash).unwrap(),
            "the hook sees offered blocks, not stored ones"
        );
        *self.last_base.lock().unwrap() = Some(block.base.map(|base| base.hash));
        match block.payload.first() {
            Some(0) => Ok(Admission::Serve),
            Some(1) => Ok(Admission::Candidate),
            Some(2) => Ok(Admission::Promote(block.header.depends_on.clone())),
            _ => Err(PolRejection {
                code: "loss_not_improved",
                reason: "loss did not improve".into(),
            }),
        }
    }
}

/// A dataset entry on chain D's tip that depends on `targets`.
fn entry_depending_on(
    store: &ChainStore,
    payload: &[u8],
    targets: &[BlockHash],
    key: &AuthorKey,
) -> BlockHeader {
    let mut header = on_tip(
        store,
        ChainId::Dataset,
        BlockKind::DatasetEntry,
        payload,
        key,
    );
    header.depends_on = targets.to_vec();
    header.sign(key);
    header
}

#[test]
fn proof_of_learning_admissions_serve_hold_and_promote() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Arc::new(FirstByteRules::default());
    let config = StoreConfig {
        proof_of_learning: true,
        ..fast_config()
    };
    let open_with_hook = |hook: Arc<FirstByteRules>| {
        ChainStore::open_with(
            dir.path(),
            config.clone(),
            &GenesisSpec::shipped(),
            Some(hook),
        )
        .unwrap()
    };
    let store = open_with_hook(hook.clone());
    let key = AuthorKey::generate();
    let expert = ExpertName::parse("layer1.expert1").unwrap();

    // Served at once: the expert's current version.
    let first = expert_block(&store, "layer1.expert1", 1, &[0, 0], &key);
    let first_hash = store.append(&first, &[0, 0]).unwrap();
    assert_eq!(*hook.last_base.lock().unwrap(), Some(None));
    assert_eq!(
        store.expert_current(expert).unwrap().unwrap().hash,
        first_hash
    );
    assert!(!store.is_candidate(&first_hash).unwrap());

    // Two candidates on one base: stored, not current, both version 2.
    let a = expert_block(&store, "layer1.expert1", 2, &[1, 0xa], &key);
    let a_hash = store.append(&a, &[1, 0xa]).unwrap();
    assert_eq!(*hook.last_base.lock().unwrap(), Some(Some(first_hash)));
    let b = expert_block(&store, "layer1.expert1", 2, &[1, 0xb], &key);
    let b_hash = store.append_reader(&b, &[1u8, 0xb][..]).unwrap();
    for candidate in [a_hash, b_hash] {
        assert!(store.is_candidate(&candidate).unwrap());
    }
    assert_eq!(
        store.expert_current(expert).unwrap().unwrap().hash,
        first_hash
    );
    assert_eq!(store.expert_versions(expert).unwrap().len(), 1);

    // Refused, with the hook's code, and nothing left behind (streamed too).
    let rejected = expert_block(&store, "layer1.expert1", 2, &[3, 0], &key);
    match refused(&store, &rejected, &[3, 0]) {
        Error::PolRejected { code, reason, .. } => {
            assert_eq!(code, "loss_not_improved");
            assert_eq!(reason, "loss did not improve");
        }
        other => panic!("expected PolRejected, got {other:?}"),
    }
    let rejected_stream = expert_block(&store, "layer1.expert1", 2, &[5, 5, 5], &key);
    assert!(matches!(
        store.append_reader(&rejected_stream, &[5u8, 5, 5][..]),
        Err(Error::PolRejected { .. })
    ));

    // Promoting a block that is not a candidate is refused.
    let bad = entry_depending_on(&store, &[2, 1], &[first_hash], &key);
    match refused(&store, &bad, &[2, 1]) {
        Error::PromotionInvalid { candidate, .. } => assert_eq!(candidate, first_hash),
        other => panic!("expected PromotionInvalid, got {other:?}"),
    }

    // A promotes: current, no longer a candidate, indexed as version 2.
    let promote_a = entry_depending_on(&store, &[2, 2], &[a_hash], &key);
    store.append(&promote_a, &[2, 2]).unwrap();
    let current = store.expert_current(expert).unwrap().unwrap();
    assert_eq!((current.hash, current.version), (a_hash, 2));
    assert!(!store.is_candidate(&a_hash).unwrap());
    assert!(store.is_candidate(&b_hash).unwrap());

    // B's base is gone: promoting it now is refused.
    let promote_b = entry_depending_on(&store, &[2, 3], &[b_hash], &key);
    match refused(&store, &promote_b, &[2, 3]) {
        Error::PromotionInvalid {
            candidate, reason, ..
        } => {
            assert_eq!(candidate, b_hash);
            assert!(reason.contains("next version is 3"), "{reason}");
        }
        other => panic!("expected PromotionInvalid, got {other:?}"),
    }
    // Every offered block went to the hook, refused ones included.
    assert_eq!(hook.calls.load(Ordering::SeqCst), 8);
    crate::common::assert_verifies(&store);

    // The state survives a reopen.
    drop(store);
    let store = open_with_hook(Arc::new(FirstByteRules::default()));
    assert_eq!(store.expert_current(expert).unwrap().unwrap().hash, a_hash);
    assert!(store.is_candidate(&b_hash).unwrap());
    assert!(!store.is_candidate(&a_hash).unwrap());
    crate::common::assert_verifies(&store);
}

#[test]
fn proof_of_learning_off_never_calls_the_hook() {
    let dir = tempfile::tempdir().unwrap();
    let hook = Arc::new(FirstByteRules::default());
    let store = ChainStore::open_with(
        dir.path(),
        fast_config(),
        &GenesisSpec::shipped(),
        Some(hook.clone()),
    )
    .unwrap();
    let key = AuthorKey::generate();
    // A first byte the hook would refuse.
    store
        .append(&expert_block(&store, "layer0.expert0", 1, &[7], &key), &[7])
        .unwrap();
    assert_eq!(hook.calls.load(Ordering::SeqCst), 0);
}

#[test]
fn proof_of_learning_on_needs_a_hook() {
    let dir = tempfile::tempdir().unwrap();
    let config = StoreConfig {
        proof_of_learning: true,
        ..fast_config()
    };
    assert!(matches!(
        ChainStore::open(dir.path(), config),
        Err(Error::PolHookMissing)
    ));
}
