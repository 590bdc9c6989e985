//! Remote experts: a model whose hook computes some experts elsewhere gives bit-identical
//! logits to one computing them all, makes one call per layer, and never loads remote experts.

use std::sync::{Arc, Mutex};

use blyan_moe::{
    Config, ExpertCache, ExpertCall, ExpertName, ExpertUsage, Logits, Model, ModelOptions,
    MoeError, RandomInit, RemoteExperts,
};
use tch::{Device, Kind, Tensor};

const SEED: u64 = 11;

/// Computes the experts `remote` selects with its own copy of the weights, as a peer would.
#[derive(Debug)]
struct Elsewhere {
    remote: fn(ExpertName) -> bool,
    cache: Mutex<ExpertCache>,
    calls: Mutex<Vec<(u32, usize)>>,
    fail: bool,
}

impl Elsewhere {
    fn new(config: &Config, remote: fn(ExpertName) -> bool) -> Self {
        let source = Arc::new(RandomInit::new(config, SEED).unwrap());
        let cache = ExpertCache::new(
            source,
            config.hidden_size,
            config.intermediate_size,
            Kind::Float,
            Device::Cpu,
            u64::MAX,
        );
        Self {
            remote,
            cache: Mutex::new(cache),
            calls: Mutex::new(Vec::new()),
            fail: false,
        }
    }
}

impl RemoteExperts for Elsewhere {
    fn is_remote(&self, expert: ExpertName) -> bool {
        (self.remote)(expert)
    }

    fn call_layer(&self, layer: u32, calls: Vec<ExpertCall>) -> blyan_moe::Result<Vec<Tensor>> {
        self.calls.lock().unwrap().push((layer, calls.len()));
        if self.fail {
            return Err(MoeError::RemoteExpert {
                expert: calls[0].expert,
                reason: "no holder answered".into(),
            });
        }
        let mut cache = self.cache.lock().unwrap();
        calls
            .iter()
            .map(|call| {
                assert_eq!(call.expert.layer(), layer);
                // Through bytes, as over the wire.
                let values = Vec::<f32>::try_from(call.hidden.flatten(0, -1)).unwrap();
                let hidden = Tensor::from_slice(&values).view([call.hidden.size()[0], -1]);
                cache.get(call.expert)?.forward(&hidden)
            })
            .collect()
    }
}

fn model(config: &Config) -> Model {
    let weights = Arc::new(RandomInit::new(config, SEED).unwrap());
    Model::load(config, weights, ModelOptions::default()).unwrap()
}

/// Logits of a prefill and three decode steps.
fn run(model: &mut Model) -> Vec<Vec<f32>> {
    let mut cache = model.new_kv_cache();
    let mut usage = ExpertUsage::new(model.config());
    let mut feed: Vec<u32> = vec![3, 17, 42, 7, 99, 12];
    let mut all = Vec::new();
    for _ in 0..4 {
        let logits = model
            .forward(&feed, &mut cache, &mut usage, Logits::All)
            .unwrap();
        let values = Vec::<f32>::try_from(logits.flatten(0, -1)).unwrap();
        let next = logits.get(-1).argmax(0, false).int64_value(&[]) as u32;
        all.push(values);
        feed = vec![next];
    }
    all
}

fn even_layers(expert: ExpertName) -> bool {
    expert.layer().is_multiple_of(2)
}

fn every_expert(_: ExpertName) -> bool {
    true
}

#[test]
fn remote_experts_give_bit_identical_logits_with_one_call_per_layer() {
    let config = Config::seed();
    let local = run(&mut model(&config));
    for remote in [even_layers as fn(ExpertName) -> bool, every_expert] {
        let hook = Arc::new(Elsewhere::new(&config, remote));
        let mut model = model(&config);
        model.set_remote_experts(Some(hook.clone()));
        let remote_logits = run(&mut model);
        assert_eq!(remote_logits.len(), local.len());
        for (got, expected) in remote_logits.iter().zip(&local) {
            let same = got
                .iter()
                .zip(expected)
                .all(|(a, b)| a.to_bits() == b.to_bits());
            assert!(same, "logits differ from the local run");
        }
        // One call per layer holding remote experts, per forward pass.
        let calls = hook.calls.lock().unwrap().clone();
        let layers_remote = (0..config.num_hidden_layers)
            .filter(|layer| remote(ExpertName::new(*layer, 0).unwrap()))
            .count();
        assert_eq!(calls.len(), 4 * layers_remote, "{calls:?}");
        for window in calls.chunks(layers_remote) {
            let layers: Vec<u32> = window.iter().map(|(layer, _)| *layer).collect();
            let mut sorted = layers.clone();
            sorted.dedup();
            assert_eq!(layers, sorted, "one call per layer: {calls:?}");
        }
        // The cache never loaded a remote expert.
        let resident = model.expert_cache().resident();
        assert!(
            resident.iter().all(|expert| !remote(*expert)),
            "{resident:?}"
        );
        if layers_remote == config.num_hidden_layers as usize {
            assert!(resident.is_empty());
        }
    }
}

#[test]
fn a_failed_remote_call_is_an_error_naming_the_expert() {
    let config = Config::seed();
    let mut hook = Elsewhere::new(&config, every_expert);
    hook.fail = true;
    let mut model = model(&config);
    model.set_remote_experts(Some(Arc::new(hook)));
    let mut cache = model.new_kv_cache();
    let mut usage = ExpertUsage::new(model.config());
    let error = model
        .forward(&[1, 2, 3], &mut cache, &mut usage, Logits::Last)
        .unwrap_err();
    assert!(
        matches!(error, MoeError::RemoteExpert { expert, .. } if expert.layer() == 0),
        "{error}"
    );
}

#[test]
fn without_a_hook_every_expert_is_local() {
    let config = Config::seed();
    let mut model = model(&config);
    assert!(model.remote_experts().is_none());
    run(&mut model);
    assert!(!model.expert_cache().resident().is_empty());
}
