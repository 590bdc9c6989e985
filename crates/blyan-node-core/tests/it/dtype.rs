//! `model.dtype` and `model.device` as a node applies them: a node configured for bf16 serves a
//! bf16 checkpoint from its blocks in place; a CUDA device the machine lacks stops the model
//! from loading, naming the device.

use std::sync::Arc;

use blyan_chain::{AuthorKey, Dtype};
use blyan_moe::{
    CastWeights, ChainSource, ComputeDevice, ComputeDtype, MoeError, PublishOptions,
    SamplingParams, WeightSource, publish_model,
};
use blyan_node_core::{Error, Node};
use tch::Kind;

use crate::support::node_with;

/// The done-when of `model.dtype: bf16`, through the node: the shipped model re-published as
/// bf16 payloads (what `blyan-miner upload` writes for a bf16 checkpoint) is what the node
/// serves, every expert matrix its cache holds lies inside its block's mapped payload, and it
/// chats.
#[tokio::test]
async fn a_node_configured_for_bf16_serves_a_bf16_checkpoint_from_its_payloads() {
    let test = node_with(
        |config| {
            config.model.dtype = ComputeDtype::BF16;
            // The re-published model is served as it lands, without a Proof-of-Learning round.
            config.pol.mode = blyan_pol::PolMode::Pow;
        },
        true,
    )
    .await;
    let node: &Node = &test.node;
    let store = Arc::clone(node.chain().expect("a chain"));
    let shipped = Arc::new(ChainSource::open(Arc::clone(&store)).unwrap());
    let weights =
        CastWeights::new(Arc::clone(&shipped) as Arc<dyn WeightSource>, Dtype::BF16).unwrap();
    publish_model(
        &*store,
        &AuthorKey::generate(),
        shipped.config(),
        shipped.files(),
        &weights,
        &PublishOptions {
            description: "the shipped model in bf16".into(),
            ..PublishOptions::default()
        },
        &mut |_| {},
    )
    .unwrap();
    node.reload_model().await;
    let generator = node.generator().expect("a model is served");
    assert!(
        generator.info().description.contains("in bf16"),
        "{}",
        generator.info().description
    );

    let experts = store.experts().unwrap();
    assert_eq!(experts.len(), 32);
    for version in experts {
        let handle = store.payload(&version.hash).unwrap().unwrap();
        let payload: &[u8] = handle.as_ref();
        let (start, end) = (
            payload.as_ptr() as usize,
            payload.as_ptr() as usize + payload.len(),
        );
        let weights = generator
            .with_model(|model| model.expert_cache_mut().get(version.expert))
            .unwrap()
            .unwrap();
        for tensor in [&weights.w1, &weights.w2, &weights.w3] {
            assert_eq!(tensor.kind(), Kind::BFloat16);
            let address = tensor.data_ptr() as usize;
            let bytes = tensor.numel() * tensor.kind().elt_size_in_bytes();
            assert!(
                start <= address && address + bytes <= end,
                "{}: [{address:#x}, +{bytes}) is outside its payload [{start:#x}, {end:#x})",
                version.expert
            );
        }
    }
    let text = generator
        .generate(
            "The quick brown fox",
            SamplingParams::greedy(8),
            blyan_moe::CancelToken::new(),
        )
        .unwrap();
    assert!(!text.token_ids.is_empty());
}

/// `cuda:N` on a machine without such a device: the model does not load and the error names
/// the device (on this CI machine, without a GPU, `cuda:0`; with GPUs, the index past the last).
#[tokio::test]
async fn a_cuda_device_the_machine_lacks_stops_the_model_from_loading() {
    let device = ComputeDevice::Cuda(blyan_moe::CUDA_DEVICE_INDEX_MAX);
    let test = node_with(|config| config.model.device = device, false).await;
    let Ok(node) = Arc::try_unwrap(test.node) else {
        panic!("the test holds the only handle on the node");
    };
    node.ensure_seed_model(&AuthorKey::generate())
        .await
        .expect("the seed model is published");
    match node.load_model().await {
        Err(Error::ModelLoad(MoeError::CudaUnavailable { device: named, .. })) => {
            assert_eq!(named, device.to_string());
        }
        Err(other) => panic!("expected CudaUnavailable, got {other}"),
        Ok(_) => panic!("the model loaded on {device}"),
    }
}
