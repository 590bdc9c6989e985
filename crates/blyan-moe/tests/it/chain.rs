//! The model on a real chain store: publish, run from blocks, differential re-publish, INT8,
//! export back, a missing expert, and the untrained seed model.

use std::path::Path;
use std::sync::Arc;

use blyan_chain::{
    AuthorKey, BlockHeader, BlockKind, ChainId, ChainStore, Durability, PayloadHandle, StoreConfig,
    encode_block,
};
use blyan_moe::{
    CancelToken, ChainSource, Checkpoint, CheckpointFiles, ExpertName, ExpertQuantization,
    ExpertUsage, FinishReason, Generator, Logits, ModelOptions, MoeError, PublishEvent,
    PublishOptions, PublishSummary, SafetensorsSource, SamplingParams, WeightSource, ensure_model,
    export_from_chain, publish_model, publish_seed_model,
};

use crate::checkpoint::{EXPERT_W2, assert_same_tensors};
use crate::fixture::{checkpoint_copy, fixture};

fn store_config() -> StoreConfig {
    StoreConfig {
        durability: Durability::Unsynced,
        ..StoreConfig::default()
    }
}

pub(crate) fn open_store(dir: &Path) -> Arc<ChainStore> {
    Arc::new(ChainStore::open(dir, store_config()).unwrap())
}

pub(crate) fn publish(
    store: &ChainStore,
    key: &AuthorKey,
    dir: &Path,
    quantization: ExpertQuantization,
) -> (PublishSummary, Vec<PublishEvent>) {
    let checkpoint = Checkpoint::open(dir).unwrap();
    let files = checkpoint.files();
    let options = PublishOptions {
        expert_quantization: quantization,
        untrained: false,
        description: "parity fixture".into(),
    };
    let mut events = Vec::new();
    let summary = publish_model(
        store,
        key,
        checkpoint.config(),
        files,
        &*checkpoint.weights(),
        &options,
        &mut |event| events.push(event.clone()),
    )
    .unwrap();
    (summary, events)
}

fn all_logits(generator: &Generator, ids: &[u32]) -> tch::Tensor {
    generator
        .with_model(|model| {
            let mut cache = model.new_kv_cache();
            let mut usage = ExpertUsage::new(model.config());
            model
                .forward(ids, &mut cache, &mut usage, Logits::All)
                .unwrap()
        })
        .unwrap()
}

#[test]
fn published_model_runs_from_blocks_like_the_reference_and_exports_bit_exact() {
    let fixture = fixture();
    let temp = tempfile::tempdir().unwrap();
    let store = open_store(&temp.path().join("chain"));
    let key = AuthorKey::generate();
    let (summary, events) = publish(
        &store,
        &key,
        &fixture.checkpoint(),
        ExpertQuantization::None,
    );
    // 1 embedding + 4 × (attention, router) + head; 32 experts.
    assert_eq!((summary.shared_written, summary.experts_written), (10, 32));
    assert!(summary.meta_written);
    assert!(matches!(events[0], PublishEvent::Checked { blocks: 43 }));
    assert_eq!(events.len(), 44);

    // Every block is signed by the key, each expert names itself.
    let experts = store.experts().unwrap();
    assert_eq!(experts.len(), 32);
    for version in &experts {
        let header = store.header(&version.hash).unwrap().unwrap();
        assert_eq!(header.kind, BlockKind::Expert);
        assert_eq!(header.meta.expert, Some(version.expert));
        assert_eq!(header.signer().unwrap(), key.address());
        assert_eq!(header.depends_on, vec![summary.meta_block]);
    }

    let generator = Generator::from_chain(Arc::clone(&store), ModelOptions::default()).unwrap();
    assert!(!generator.info().untrained);
    let from_files = Checkpoint::open(&fixture.checkpoint())
        .unwrap()
        .load_generator(ModelOptions::default())
        .unwrap();
    for (index, case) in fixture.expected.cases.iter().enumerate() {
        // Same bytes, same kernels: the chain's logits equal the files' exactly.
        let ours = all_logits(&generator, &case.input_ids);
        assert!(
            ours.equal(&all_logits(&from_files, &case.input_ids)),
            "case {index}"
        );
        let reference = fixture.logits(index);
        let error = (&ours - &reference).abs().max().double_value(&[])
            / reference.abs().max().double_value(&[]);
        assert!(error <= 1e-4, "case {index}: relative error {error:e}");
        let params = SamplingParams {
            ignore_eos: true,
            ..SamplingParams::greedy(fixture.expected.greedy_new_tokens)
        };
        let generation = generator
            .stream_ids(case.input_ids.clone(), params, CancelToken::new())
            .unwrap()
            .finish()
            .unwrap();
        assert_eq!(generation.token_ids, case.greedy_ids);
        assert_eq!(generation.finish_reason, FinishReason::Length);
    }
    let stats = generator.cache_stats();
    assert!(stats.misses > 0 && stats.hits > 0, "{stats:?}");

    let out = temp.path().join("export");
    let exported = export_from_chain(Arc::clone(&store), &out, u64::MAX).unwrap();
    assert_eq!(exported.shards, 1);
    assert_same_tensors(&fixture.checkpoint(), &out);
    for file in ["config.json", "generation_config.json", "tokenizer.json"] {
        let original = std::fs::read(fixture.checkpoint().join(file)).unwrap();
        assert!(
            original == std::fs::read(out.join(file)).unwrap(),
            "{file} differs"
        );
    }
}

/// Rewrites one tensor of a single-file checkpoint, scaled by `factor`.
fn scale_tensor(dir: &Path, name: &str, factor: f64) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = file
        .tensors()
        .into_iter()
        .map(|(tensor, view)| {
            (
                tensor,
                view.dtype(),
                view.shape().to_vec(),
                view.data().to_vec(),
            )
        })
        .collect();
    for (tensor, _, shape, data) in &mut tensors {
        if tensor.as_str() == name {
            let dims: Vec<i64> = shape.iter().map(|d| *d as i64).collect();
            let values = tch::Tensor::from_data_size(data, &dims, tch::Kind::Float) * factor;
            *data = blyan_moe::tensor_to_bytes(&values).unwrap();
        }
    }
    let views: Vec<_> = tensors
        .iter()
        .map(|(tensor, dtype, shape, data)| {
            (
                tensor.clone(),
                safetensors::tensor::TensorView::new(*dtype, shape.clone(), data).unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &path).unwrap();
}

#[test]
fn republishing_writes_only_what_changed() {
    let temp = tempfile::tempdir().unwrap();
    let store = open_store(&temp.path().join("chain"));
    let key = AuthorKey::generate();
    let dir = checkpoint_copy(temp.path());
    let (first, _) = publish(&store, &key, &dir, ExpertQuantization::None);
    let blocks = store.block_count();

    let (again, events) = publish(&store, &key, &dir, ExpertQuantization::None);
    assert_eq!(
        store.block_count(),
        blocks,
        "an unchanged checkpoint writes nothing"
    );
    assert_eq!(
        (
            again.meta_written,
            again.shared_written,
            again.experts_written
        ),
        (false, 0, 0)
    );
    assert_eq!((again.shared_unchanged, again.experts_unchanged), (10, 32));
    assert_eq!(again.meta_block, first.meta_block);
    assert!(
        events
            .iter()
            .skip(1)
            .all(|event| matches!(event, PublishEvent::Unchanged { .. }))
    );

    // One expert matrix changes: one block, version 2 of that expert.
    scale_tensor(&dir, EXPERT_W2, 0.5);
    let (changed, events) = publish(&store, &key, &dir, ExpertQuantization::None);
    assert_eq!(
        (
            changed.meta_written,
            changed.shared_written,
            changed.experts_written
        ),
        (false, 0, 1)
    );
    assert_eq!(store.block_count(), blocks + 1);
    let expert = ExpertName::new(2, 5).unwrap();
    assert!(events.contains(&PublishEvent::Written {
        name: "layer2.expert5".into(),
        block: store.expert_current(expert).unwrap().unwrap().hash,
        bytes: changed.bytes_written,
    }));
    assert_eq!(store.expert_current(expert).unwrap().unwrap().version, 2);
    // The chain now serves the new version.
    let source = ChainSource::open(Arc::clone(&store)).unwrap();
    let files = SafetensorsSource::open(&dir).unwrap();
    assert!(
        source
            .tensor(EXPERT_W2)
            .unwrap()
            .equal(&files.tensor(EXPERT_W2).unwrap())
    );

    // A router change writes that router's block and a new meta block listing it.
    scale_tensor(&dir, "model.layers.1.block_sparse_moe.gate.weight", 2.0);
    let (router, _) = publish(&store, &key, &dir, ExpertQuantization::None);
    assert_eq!(
        (
            router.meta_written,
            router.shared_written,
            router.experts_written
        ),
        (true, 1, 0)
    );
    assert_ne!(router.meta_block, first.meta_block);
    assert_eq!(
        ChainSource::open(Arc::clone(&store)).unwrap().meta_block(),
        router.meta_block
    );
}

#[test]
fn int8_experts_are_a_quarter_the_size_and_within_half_a_step() {
    let fixture = fixture();
    let temp = tempfile::tempdir().unwrap();
    let float_store = open_store(&temp.path().join("float"));
    let int8_store = open_store(&temp.path().join("int8"));
    let key = AuthorKey::generate();
    let (float, _) = publish(
        &float_store,
        &key,
        &fixture.checkpoint(),
        ExpertQuantization::None,
    );
    let (int8, _) = publish(
        &int8_store,
        &key,
        &fixture.checkpoint(),
        ExpertQuantization::Int8,
    );
    let expert_bytes = |store: &ChainStore| -> u64 {
        store
            .experts()
            .unwrap()
            .iter()
            .map(|version| store.header(&version.hash).unwrap().unwrap().payload_bytes)
            .sum()
    };
    let ratio = expert_bytes(&int8_store) as f64 / expert_bytes(&float_store) as f64;
    assert!(ratio < 0.3, "INT8 experts take {ratio} of float32");
    assert!(int8.bytes_written < float.bytes_written);

    // Each dequantized weight is within half a quantization step of the original: per row,
    // max |w| / 127 / 2.
    let source = ChainSource::open(Arc::clone(&int8_store)).unwrap();
    let files = Checkpoint::open(&fixture.checkpoint()).unwrap().weights();
    for version in int8_store.experts().unwrap() {
        let weights = source.expert(version.expert).unwrap();
        for (matrix, ours) in [
            ("w1", &weights.w1),
            ("w2", &weights.w2),
            ("w3", &weights.w3),
        ] {
            let name = format!(
                "model.layers.{}.block_sparse_moe.experts.{}.{matrix}.weight",
                version.expert.layer(),
                version.expert.expert()
            );
            let original = files.tensor(&name).unwrap();
            let step = original.abs().amax([1i64].as_slice(), true) / 127.0;
            let excess = ((ours - &original).abs() - step * 0.5 - 1e-7)
                .max()
                .double_value(&[]);
            assert!(excess <= 0.0, "{name}: off by {excess} beyond half a step");
        }
    }
    // The INT8 model runs end to end from the chain.
    let generator =
        Generator::from_chain(Arc::clone(&int8_store), ModelOptions::default()).unwrap();
    let case = &fixture.expected.cases[0];
    let generation = generator
        .stream_ids(
            case.input_ids.clone(),
            SamplingParams {
                ignore_eos: true,
                ..SamplingParams::greedy(8)
            },
            CancelToken::new(),
        )
        .unwrap()
        .finish()
        .unwrap();
    assert_eq!(generation.token_ids.len(), 8);
    // Switching to INT8 writes new versions of every expert, leaving shared blocks alone.
    let (switched, _) = publish(
        &float_store,
        &key,
        &fixture.checkpoint(),
        ExpertQuantization::Int8,
    );
    assert_eq!(
        (
            switched.shared_written,
            switched.experts_written,
            switched.meta_written
        ),
        (0, 32, false)
    );
}

#[test]
fn a_request_routed_to_an_expert_missing_from_the_chain_fails_naming_it() {
    let fixture = fixture();
    let temp = tempfile::tempdir().unwrap();
    let full = open_store(&temp.path().join("full"));
    let key = AuthorKey::generate();
    publish(&full, &key, &fixture.checkpoint(), ExpertQuantization::None);
    // Replay every block into a second store but the last one written: layer3.expert7.
    let partial = open_store(&temp.path().join("partial"));
    let blocks = |chain| full.blocks(chain, 1, 1000).unwrap();
    let parameters = blocks(ChainId::Parameters);
    let (shared, experts): (Vec<_>, Vec<_>) = parameters
        .into_iter()
        .partition(|block| block.header.kind != BlockKind::Expert);
    let missing = ExpertName::new(3, 7).unwrap();
    assert_eq!(experts.last().unwrap().header.meta.expert, Some(missing));
    for block in shared
        .iter()
        .chain(&blocks(ChainId::Meta))
        .chain(&experts[..experts.len() - 1])
    {
        let payload = full.payload(&block.hash).unwrap().unwrap();
        partial
            .submit(&encode_block(&block.header, &payload))
            .unwrap();
    }
    let generator = Generator::from_chain(Arc::clone(&partial), ModelOptions::default()).unwrap();
    let mut failed = 0;
    for case in &fixture.expected.cases {
        let params = SamplingParams {
            ignore_eos: true,
            ..SamplingParams::greedy(fixture.expected.greedy_new_tokens)
        };
        match generator
            .stream_ids(case.input_ids.clone(), params, CancelToken::new())
            .unwrap()
            .finish()
        {
            Ok(generation) => assert!(!generation.expert_usage.experts().contains(&missing)),
            Err(MoeError::MissingExpert { expert }) => {
                assert_eq!(expert, missing);
                failed += 1;
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert!(failed > 0, "no prompt reached {missing}");
    let error = MoeError::MissingExpert { expert: missing }.to_string();
    assert!(error.contains("layer3.expert7"), "{error}");
}

#[test]
fn a_bad_model_is_refused_before_any_block_is_written() {
    let temp = tempfile::tempdir().unwrap();
    let store = open_store(&temp.path().join("chain"));
    let key = AuthorKey::generate();
    let good = Checkpoint::open(&fixture().checkpoint()).unwrap();
    let dir = checkpoint_copy(temp.path());
    std::fs::remove_file(dir.join("model.safetensors")).unwrap();
    // Weights of another shape under the fixture's config: the router of layer 0 transposed.
    let mut tensors = Vec::new();
    let weights = good.weights();
    for name in weights.names() {
        let mut tensor = weights.tensor(name).unwrap();
        if name == "model.layers.0.block_sparse_moe.gate.weight" {
            tensor = tensor.tr().contiguous();
        }
        tensors.push((name.to_owned(), tensor));
    }
    let views: Vec<(String, Vec<u8>, Vec<usize>)> = tensors
        .iter()
        .map(|(name, tensor)| {
            (
                name.clone(),
                blyan_moe::tensor_to_bytes(tensor).unwrap(),
                tensor.size().iter().map(|d| *d as usize).collect(),
            )
        })
        .collect();
    let views: Vec<_> = views
        .iter()
        .map(|(name, data, shape)| {
            (
                name.clone(),
                safetensors::tensor::TensorView::new(safetensors::Dtype::F32, shape.clone(), data)
                    .unwrap(),
            )
        })
        .collect();
    safetensors::serialize_to_file(views, None, &dir.join("model.safetensors")).unwrap();
    let bad = SafetensorsSource::open(&dir).unwrap();
    let blocks = store.block_count();
    let files = CheckpointFiles {
        config_json: good.config_json(),
        generation_config_json: None,
        tokenizer_json: good.tokenizer_json(),
        tokenizer_config_json: None,
    };
    let error = publish_model(
        &*store,
        &key,
        good.config(),
        files,
        &bad,
        &PublishOptions::default(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(
        matches!(&error, MoeError::WrongShape { name, .. } if name == "model.layers.0.block_sparse_moe.gate.weight"),
        "{error}"
    );
    assert_eq!(store.block_count(), blocks);

    // A config.json that is not the configuration being published is refused too.
    let mut other = good.config().clone();
    other.rms_norm_eps = 1e-6;
    let error = publish_model(
        &*store,
        &key,
        &other,
        good.files(),
        &*good.weights(),
        &PublishOptions::default(),
        &mut |_| {},
    )
    .unwrap_err();
    assert!(matches!(error, MoeError::Config { .. }), "{error}");
    assert_eq!(store.block_count(), blocks);
}

#[test]
fn an_empty_chain_gets_the_untrained_seed_model_once() {
    let temp = tempfile::tempdir().unwrap();
    let store = open_store(&temp.path().join("chain"));
    let key = AuthorKey::generate();
    assert!(matches!(
        Generator::from_chain(Arc::clone(&store), ModelOptions::default()),
        Err(MoeError::NoModelOnChain)
    ));
    let random = blyan_moe::SeedModel::Random(blyan_moe::DEFAULT_SEED);
    let written = match ensure_model(&store, &key, &random).unwrap() {
        Some(blyan_moe::SeedWritten::Random(summary)) => summary,
        other => panic!("the chain was empty, yet {other:?}"),
    };
    assert_eq!((written.shared_written, written.experts_written), (10, 32));
    let blocks = store.block_count();
    assert_eq!(ensure_model(&store, &key, &random).unwrap(), None);
    assert_eq!(
        publish_seed_model(&store, &key, blyan_moe::DEFAULT_SEED)
            .unwrap()
            .experts_written,
        0
    );
    assert_eq!(store.block_count(), blocks);

    let generator = Generator::from_chain(Arc::clone(&store), ModelOptions::default()).unwrap();
    assert!(generator.info().untrained);
    assert!(
        generator.info().description.contains("UNTRAINED"),
        "{}",
        generator.info().description
    );
    let config = &generator.info().config;
    assert_eq!(
        (
            config.num_hidden_layers,
            config.num_local_experts,
            config.num_experts_per_tok
        ),
        (4, 8, 2)
    );
    let run = || {
        let params = SamplingParams {
            temperature: 0.7,
            seed: 5,
            ignore_eos: true,
            ..SamplingParams::greedy(8)
        };
        generator
            .generate("hello chain", params, CancelToken::new())
            .unwrap()
    };
    let first = run();
    assert_eq!(first.token_ids.len(), 8);
    assert_eq!(run().token_ids, first.token_ids);
}

/// A real store where another writer appends a foreign meta block just before this publisher's
/// first meta block: what a node sees when two publishers race.
struct RacedStore {
    store: Arc<ChainStore>,
    rival: AuthorKey,
    raced: std::cell::Cell<bool>,
}

impl blyan_moe::PublishTarget for RacedStore {
    fn tip(&self, chain: ChainId) -> blyan_moe::Result<blyan_chain::ChainTip> {
        blyan_moe::PublishTarget::tip(&*self.store, chain)
    }
    fn header(
        &self,
        block: &blyan_chain::BlockHash,
    ) -> blyan_moe::Result<Option<blyan_chain::BlockHeader>> {
        blyan_moe::PublishTarget::header(&*self.store, block)
    }
    fn expert_current(
        &self,
        expert: ExpertName,
    ) -> blyan_moe::Result<Option<blyan_chain::ExpertVersion>> {
        blyan_moe::PublishTarget::expert_current(&*self.store, expert)
    }
    fn current_model(
        &self,
    ) -> blyan_moe::Result<Option<(blyan_chain::BlockHash, blyan_moe::ModelDocument)>> {
        blyan_moe::PublishTarget::current_model(&*self.store)
    }
    fn pow_difficulty_bits(&self) -> u32 {
        0
    }
    fn payload_bytes_max(&self) -> u64 {
        blyan_moe::PublishTarget::payload_bytes_max(&*self.store)
    }
    fn append(
        &self,
        header: &blyan_chain::BlockHeader,
        payload: &[u8],
    ) -> blyan_moe::Result<blyan_chain::BlockHash> {
        if header.kind == BlockKind::Meta && !self.raced.replace(true) {
            let tip = self.store.tip(ChainId::Meta);
            let note = br#"{"note": "a rival's meta block"}"#;
            let mut rival = blyan_chain::BlockHeader::new_child(
                &tip,
                BlockKind::Meta,
                note,
                header.timestamp_ms,
            );
            rival.author = self.rival.address();
            rival.sign(&self.rival);
            self.store.append(&rival, note).unwrap();
        }
        blyan_moe::PublishTarget::append(&*self.store, header, payload)
    }
}

#[test]
fn a_block_made_on_a_tip_that_moved_is_rebuilt_on_the_new_tip() {
    let temp = tempfile::tempdir().unwrap();
    let store = open_store(&temp.path().join("chain"));
    let raced = RacedStore {
        store: Arc::clone(&store),
        rival: AuthorKey::generate(),
        raced: std::cell::Cell::new(false),
    };
    let checkpoint = Checkpoint::open(&fixture().checkpoint()).unwrap();
    let summary = publish_model(
        &raced,
        &AuthorKey::generate(),
        checkpoint.config(),
        checkpoint.files(),
        &*checkpoint.weights(),
        &PublishOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    assert!(raced.raced.get(), "the rival block was appended first");
    assert!(summary.meta_written);
    // Genesis, the rival's block, then ours on top of it.
    let tip = store.tip(ChainId::Meta);
    assert_eq!((tip.height, tip.hash), (2, summary.meta_block));
    let header = store.header(&summary.meta_block).unwrap().unwrap();
    assert_eq!(store.block_hashes_at(ChainId::Meta, 1).unwrap().len(), 1);
    assert_eq!(
        header.prev_hash,
        Some(store.block_hashes_at(ChainId::Meta, 1).unwrap()[0])
    );
    assert_eq!(
        blyan_moe::current_model(&store).unwrap().0,
        summary.meta_block
    );
    assert!(store.verify(|_| {}).unwrap().first_bad.is_none());
}

#[test]
fn a_block_over_the_chains_size_limit_is_refused_before_anything_is_written() {
    let temp = tempfile::tempdir().unwrap();
    let checkpoint = Checkpoint::open(&fixture().checkpoint()).unwrap();
    let config = checkpoint.config();
    // Room for any shared group but not for one float32 expert (three matrices).
    let expert_bytes = 3 * u64::from(config.hidden_size) * u64::from(config.intermediate_size) * 4;
    let store = Arc::new(
        ChainStore::open(
            temp.path().join("chain"),
            StoreConfig {
                payload_bytes_max: expert_bytes - 1,
                ..store_config()
            },
        )
        .unwrap(),
    );
    let blocks = store.block_count();
    let error = publish_model(
        &*store,
        &AuthorKey::generate(),
        config,
        checkpoint.files(),
        &*checkpoint.weights(),
        &PublishOptions::default(),
        &mut |_| {},
    )
    .unwrap_err();
    match &error {
        MoeError::BlockTooLarge {
            name,
            bytes,
            bytes_max,
        } => {
            assert!(
                name.starts_with("layer") && name.contains(".expert"),
                "{name}"
            );
            assert!(*bytes >= expert_bytes, "{bytes}");
            assert_eq!(*bytes_max, expert_bytes - 1);
        }
        other => panic!("expected BlockTooLarge, got {other}"),
    }
    assert_eq!(store.block_count(), blocks, "nothing was written");

    // INT8 experts are a quarter of the size: the same model fits.
    let options = PublishOptions {
        expert_quantization: ExpertQuantization::Int8,
        ..PublishOptions::default()
    };
    let summary = publish_model(
        &*store,
        &AuthorKey::generate(),
        config,
        checkpoint.files(),
        &*checkpoint.weights(),
        &options,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!(summary.experts_written, 32);
}

/// What docs/moe.md promises: tensors of unquantized blocks are views of the mapped segment.
/// Every expert tensor the source hands out, and every one the model's cache holds (f32 like
/// the fixture, so converting it to the compute kind copies nothing), lies inside its block's
/// payload bytes; so does every shared tensor.
#[test]
fn model_tensors_from_the_chain_point_inside_the_segment_mapping() {
    let fixture = fixture();
    let temp = tempfile::tempdir().unwrap();
    let store = open_store(&temp.path().join("chain"));
    publish(
        &store,
        &AuthorKey::generate(),
        &fixture.checkpoint(),
        ExpertQuantization::None,
    );
    let inside = |tensor: &tch::Tensor, handle: &PayloadHandle, what: &str| {
        let payload: &[u8] = handle.as_ref();
        let start = payload.as_ptr() as usize;
        let address = tensor.data_ptr() as usize;
        let bytes = tensor.numel() * tensor.kind().elt_size_in_bytes();
        assert!(
            start <= address && address + bytes <= start + payload.len(),
            "{what}: [{address:#x}, +{bytes}) is outside the payload [{start:#x}, +{})",
            payload.len()
        );
    };
    let source = ChainSource::open(Arc::clone(&store)).unwrap();
    let generator = Generator::from_chain(Arc::clone(&store), ModelOptions::default()).unwrap();
    let experts = store.experts().unwrap();
    assert_eq!(experts.len(), 32);
    for version in experts {
        let handle = store.payload(&version.hash).unwrap().unwrap();
        let served = source.expert(version.expert).unwrap();
        let cached = generator
            .with_model(|model| model.expert_cache_mut().get(version.expert))
            .unwrap()
            .unwrap();
        for (origin, weights) in [("source", &served), ("model cache", &cached)] {
            for (matrix, tensor) in [
                ("w1", &weights.w1),
                ("w2", &weights.w2),
                ("w3", &weights.w3),
            ] {
                inside(
                    tensor,
                    &handle,
                    &format!("{origin} {}.{matrix}", version.expert),
                );
            }
        }
    }
    for (group, block) in &source.document().shared {
        let handle = store.payload(block).unwrap().unwrap();
        let layout = blyan_tensorblock::BlockLayout::parse(handle.as_ref()).unwrap();
        for info in layout.tensors() {
            let tensor = source.tensor(info.name()).unwrap();
            inside(&tensor, &handle, &format!("{group} {}", info.name()));
        }
    }
}

/// A new version of an expert whose payload is right but whose header lists another shape is
/// refused when read, with an error naming the block.
#[test]
fn a_header_whose_tensor_list_differs_from_the_payload_is_refused_naming_the_block() {
    let temp = tempfile::tempdir().unwrap();
    let store = open_store(&temp.path().join("chain"));
    let key = AuthorKey::generate();
    publish_seed_model(&store, &key, 11).unwrap();
    let expert = ExpertName::new(1, 3).unwrap();
    let current = store.expert_current(expert).unwrap().unwrap();
    let current_header = store.header(&current.hash).unwrap().unwrap();
    let payload = store.payload(&current.hash).unwrap().unwrap();
    let payload: &[u8] = payload.as_ref();
    let parent = store.tip(ChainId::Parameters);
    let parent_ms = store.header(&parent.hash).unwrap().unwrap().timestamp_ms;
    let mut header = BlockHeader::new_child(&parent, BlockKind::Expert, payload, parent_ms + 1);
    header.meta = current_header.meta.clone();
    header.meta.version = current.version + 1;
    header.meta.tensors[1].shape.reverse();
    header.author = key.address();
    header.sign(&key);
    let forged = store.append(&header, payload).unwrap();

    let source = ChainSource::open(Arc::clone(&store)).unwrap();
    match source.expert(expert) {
        Err(MoeError::HeaderTensorMismatch {
            block,
            index,
            header: Some(listed),
            payload: Some(held),
        }) => {
            assert_eq!((block, index), (forged, 1));
            assert_ne!(listed, held);
            assert!(held.starts_with("model.layers.1.block_sparse_moe.experts.3.w2.weight"));
        }
        other => panic!("expected HeaderTensorMismatch, got {other:?}"),
    }
    let message = source.expert(expert).unwrap_err().to_string();
    assert!(message.contains(&forged.to_string()), "{message}");
    // The other experts are still served.
    assert!(source.expert(ExpertName::new(1, 2).unwrap()).is_ok());
}

/// A meta block may depend only on blocks its document lists: one that names another block is
/// refused when the model is opened.
#[test]
fn a_meta_block_depending_on_a_block_its_document_does_not_list_is_refused() {
    let temp = tempfile::tempdir().unwrap();
    let store = open_store(&temp.path().join("chain"));
    let key = AuthorKey::generate();
    let published = publish_seed_model(&store, &key, 12).unwrap();
    let document = store.payload(&published.meta_block).unwrap().unwrap();
    let document: &[u8] = document.as_ref();
    let stray = store
        .expert_current(ExpertName::new(0, 0).unwrap())
        .unwrap()
        .unwrap()
        .hash;
    let parent = store.tip(ChainId::Meta);
    let expert_ms = store.header(&stray).unwrap().unwrap().timestamp_ms;
    let mut header = BlockHeader::new_child(&parent, BlockKind::Meta, document, expert_ms + 1);
    header.depends_on = vec![stray];
    header.author = key.address();
    header.sign(&key);
    let meta = store.append(&header, document).unwrap();
    match ChainSource::open_at(Arc::clone(&store), meta) {
        Err(MoeError::BadMetaBlock { block, reason }) => {
            assert_eq!(block, meta.to_string());
            assert!(reason.contains(&stray.to_string()), "{reason}");
        }
        other => panic!("expected BadMetaBlock, got {other:?}"),
    }
    // The newest model that opens is the honest one: the bad meta block is skipped, so a node
    // keeps serving the last good model.
    assert_eq!(
        ChainSource::open(Arc::clone(&store)).unwrap().meta_block(),
        published.meta_block
    );
    assert!(ChainSource::open_at(Arc::clone(&store), published.meta_block).is_ok());
}

/// A small random model of `layers` layers (2 shared groups per layer, plus embedding and head),
/// published into a fresh store.
fn publish_layers(dir: &Path, layers: u32) -> (Arc<ChainStore>, PublishSummary) {
    let mut config = blyan_moe::Config::seed();
    config.num_hidden_layers = layers;
    config.hidden_size = 16;
    config.intermediate_size = 32;
    config.num_attention_heads = 2;
    config.num_key_value_heads = Some(1);
    config.num_local_experts = 2;
    let config_json = config.to_json().unwrap();
    let tokenizer_json = blyan_moe::Tokenizer::byte_level_json();
    let files = CheckpointFiles {
        config_json: &config_json,
        generation_config_json: None,
        tokenizer_json: &tokenizer_json,
        tokenizer_config_json: None,
    };
    let store = open_store(dir);
    let summary = publish_model(
        &*store,
        &AuthorKey::generate(),
        &config,
        files,
        &blyan_moe::RandomInit::new(&config, 5).unwrap(),
        &PublishOptions::default(),
        &mut |_| {},
    )
    .unwrap();
    (store, summary)
}

/// Mixtral-8x7B has 66 shared groups, past the 64 blocks a header may depend on. At 64 groups
/// the meta block depends on all of them; at 66 on 64 of them, and its document lists all 66,
/// every one of which the reader loads and checks.
#[test]
fn more_shared_groups_than_a_header_may_depend_on_are_all_listed_and_loaded() {
    let temp = tempfile::tempdir().unwrap();
    for (layers, groups) in [(31, 64), (32, 66)] {
        let (store, summary) = publish_layers(&temp.path().join(format!("layers{layers}")), layers);
        assert_eq!(summary.shared_written, groups);
        let source = ChainSource::open(Arc::clone(&store)).unwrap();
        let document = source.document();
        assert_eq!(document.shared.len(), groups as usize);
        let header = store.header(&summary.meta_block).unwrap().unwrap();
        let max = blyan_chain::DEPENDS_ON_COUNT_MAX as usize;
        assert_eq!(header.depends_on.len(), (groups as usize).min(max));
        let listed: std::collections::BTreeSet<_> = document.shared.values().collect();
        assert!(header.depends_on.iter().all(|block| listed.contains(block)));
        // The reader loaded every shared block: each group's tensors are served.
        for block in document.shared.values() {
            let handle = store.payload(block).unwrap().unwrap();
            let layout = blyan_tensorblock::BlockLayout::parse(handle.as_ref()).unwrap();
            for info in layout.tensors() {
                assert!(source.tensor(info.name()).is_ok(), "{}", info.name());
            }
        }
        let generator = Generator::from_chain(Arc::clone(&store), ModelOptions::default()).unwrap();
        let params = SamplingParams {
            ignore_eos: true,
            ..SamplingParams::greedy(2)
        };
        let generation = generator
            .generate("hi", params, CancelToken::new())
            .unwrap();
        assert_eq!(generation.token_ids.len(), 2);
    }
}
