//! Serving in bf16 and f16 (`model.dtype`): the shipped model's blocks (float16) re-published
//! as bfloat16 payloads; experts stored in the compute dtype are views of their blocks, the
//! greedy text and the logits agree with the float32 reference within bf16 rounding.

use std::path::Path;
use std::sync::Arc;

use blyan_chain::{AuthorKey, ChainStore, Dtype, GenesisSpec, PayloadHandle};
use blyan_moe::{
    CancelToken, CastWeights, ChainSource, ComputeDtype, ExpertUsage, Generator, Logits,
    ModelOptions, PublishOptions, SHIPPED_MODEL_DIR, SamplingParams, WeightSource,
    import_shipped_model, publish_model,
};
use tch::Kind;

use crate::chain::open_store;

/// A store holding the shipped model, whose payloads are float16.
fn shipped_store(dir: &Path) -> Arc<ChainStore> {
    let store = Arc::new(
        ChainStore::open_with(
            dir,
            blyan_chain::StoreConfig {
                durability: blyan_chain::Durability::Unsynced,
                ..blyan_chain::StoreConfig::default()
            },
            &GenesisSpec::shipped(),
            None,
        )
        .unwrap(),
    );
    import_shipped_model(&store, Path::new(SHIPPED_MODEL_DIR)).unwrap();
    store
}

/// A store holding the same model with every tensor re-encoded as `dtype` (what a miner
/// publishing a bf16 Hugging Face checkpoint writes: payloads in the checkpoint's dtype).
fn store_in(dtype: Dtype, shipped: &Arc<ChainStore>, dir: &Path) -> Arc<ChainStore> {
    let source = Arc::new(ChainSource::open(Arc::clone(shipped)).unwrap());
    let store = open_store(dir);
    let weights = CastWeights::new(Arc::clone(&source) as Arc<dyn WeightSource>, dtype).unwrap();
    publish_model(
        &*store,
        &AuthorKey::generate(),
        source.config(),
        source.files(),
        &weights,
        &PublishOptions {
            description: format!("the shipped model in {dtype}"),
            ..PublishOptions::default()
        },
        &mut |_| {},
    )
    .unwrap();
    store
}

fn options(dtype: ComputeDtype) -> ModelOptions {
    ModelOptions {
        dtype,
        ..ModelOptions::default()
    }
}

/// Whether `tensor`'s bytes lie inside the payload `handle` maps.
fn inside(tensor: &tch::Tensor, handle: &PayloadHandle) -> bool {
    let payload: &[u8] = handle.as_ref();
    let start = payload.as_ptr() as usize;
    let address = tensor.data_ptr() as usize;
    let bytes = tensor.numel() * tensor.kind().elt_size_in_bytes();
    start <= address && address + bytes <= start + payload.len()
}

/// Every expert the model's cache holds is in `kind`; returns how many of its matrices are
/// views of their block's payload (out of 3 per expert).
fn cached_views(generator: &Generator, store: &ChainStore, kind: Kind) -> (usize, usize) {
    let (mut views, mut matrices) = (0, 0);
    for version in store.experts().unwrap() {
        let handle = store.payload(&version.hash).unwrap().unwrap();
        let weights = generator
            .with_model(|model| model.expert_cache_mut().get(version.expert))
            .unwrap()
            .unwrap();
        for tensor in [&weights.w1, &weights.w2, &weights.w3] {
            assert_eq!(tensor.kind(), kind, "{}", version.expert);
            matrices += 1;
            views += usize::from(inside(tensor, &handle));
        }
    }
    (views, matrices)
}

fn logits(generator: &Generator, ids: &[u32]) -> tch::Tensor {
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

/// The done-when of `model.dtype: bf16`: a bf16 checkpoint served in bf16 holds its experts as
/// views of the mapped payloads (data pointers inside them, no copy), and its greedy output is
/// the float32 reference's.
///
/// The reference is the shipped model served in float32. The tolerance on the logits, 3% of
/// their largest magnitude, is bf16's budget: 8 significant bits round every weight and every
/// activation by up to 2⁻⁹ ≈ 0.2% relative, and the errors of 4 layers' attention and expert
/// outputs add up along the residual stream (measured: 0.9%). Greedy tokens are
/// compared exactly: the shipped model is trained, so its top token leads the next by far more
/// than that.
#[test]
fn a_bf16_chain_served_in_bf16_uses_its_payloads_in_place_and_matches_the_f32_reference() {
    let temp = tempfile::tempdir().unwrap();
    let shipped = shipped_store(&temp.path().join("shipped"));
    let bf16 = store_in(Dtype::BF16, &shipped, &temp.path().join("bf16"));

    let served = Generator::from_chain(Arc::clone(&bf16), options(ComputeDtype::BF16)).unwrap();
    let (views, matrices) = cached_views(&served, &bf16, Kind::BFloat16);
    assert_eq!(matrices, 3 * 32);
    assert_eq!(
        views, matrices,
        "every bf16 expert matrix is a view of its block"
    );

    let reference = Generator::from_chain(Arc::clone(&shipped), ModelOptions::default()).unwrap();
    let prompt = "The quick brown fox";
    let ids = reference.tokenizer().encode(prompt).unwrap();
    let expected = logits(&reference, &ids);
    let got = logits(&served, &ids);
    assert_eq!(got.kind(), Kind::Float, "logits are float32 in any dtype");
    assert_eq!(got.size(), expected.size());
    let scale = expected.abs().max().double_value(&[]);
    let error = (&got - &expected).abs().max().double_value(&[]) / scale;
    assert!(error <= 0.03, "relative error {error:e}");

    let params = SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(16)
    };
    let reference_text = reference
        .generate(prompt, params.clone(), CancelToken::new())
        .unwrap();
    let served_text = served.generate(prompt, params, CancelToken::new()).unwrap();
    assert_eq!(served_text.token_ids, reference_text.token_ids);
    assert_eq!(served_text.text, reference_text.text);
}

/// Payloads in another dtype than the compute dtype are converted once, when loaded: the
/// shipped float16 blocks served in bf16 are copies (in bf16), served in f16 they are views,
/// and served in float32 (the default) copies in float32.
#[test]
fn payloads_in_another_dtype_are_converted_once_and_those_in_it_are_views() {
    let temp = tempfile::tempdir().unwrap();
    let shipped = shipped_store(&temp.path().join("shipped"));
    for (dtype, views_expected) in [
        (ComputeDtype::F16, true),
        (ComputeDtype::BF16, false),
        (ComputeDtype::F32, false),
    ] {
        let generator = Generator::from_chain(Arc::clone(&shipped), options(dtype)).unwrap();
        let (views, matrices) = cached_views(&generator, &shipped, dtype.kind());
        assert_eq!(matrices, 3 * 32);
        let expected = if views_expected { matrices } else { 0 };
        assert_eq!(views, expected, "{dtype}");
        let stats = generator
            .with_model(|model| model.expert_cache().stats())
            .unwrap();
        // The budget counts experts at their size in the compute dtype.
        let config = ChainSource::open(Arc::clone(&shipped)).unwrap();
        let config = config.config();
        let expert_bytes = 3
            * u64::from(config.hidden_size)
            * u64::from(config.intermediate_size)
            * dtype.size_bytes();
        assert_eq!(stats.bytes_resident, 32 * expert_bytes, "{dtype}");
    }
    // What the source hands out is the stored dtype, viewed in place.
    let source = ChainSource::open(Arc::clone(&shipped)).unwrap();
    let tensor = source.tensor("model.embed_tokens.weight").unwrap();
    assert_eq!(tensor.kind(), Kind::Half);
}
