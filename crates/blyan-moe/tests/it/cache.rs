//! The expert cache under a model: budgets, metrics, and a missing expert.

use std::path::Path;

use blyan_moe::{
    CancelToken, Checkpoint, ExpertName, Generator, Model, ModelOptions, MoeError,
    SafetensorsSource, SamplingParams,
};

use crate::checkpoint::{EXPERT_W2, broken};
use crate::fixture::fixture;

fn expert_bytes(checkpoint: &Checkpoint) -> u64 {
    let config = checkpoint.config();
    3 * u64::from(config.hidden_size) * u64::from(config.intermediate_size) * 4
}

fn generator_with_budget(checkpoint: &Checkpoint, expert_bytes_max: u64) -> Generator {
    checkpoint
        .load_generator(ModelOptions {
            expert_bytes_max,
            ..ModelOptions::default()
        })
        .unwrap()
}

const PROMPTS: [&str; 3] = [
    "the chain holds the experts",
    "a block of the model",
    "héllo",
];

fn run(generator: &Generator) -> Vec<Vec<u32>> {
    PROMPTS
        .iter()
        .map(|prompt| {
            let params = SamplingParams {
                ignore_eos: true,
                ..SamplingParams::greedy(12)
            };
            generator
                .generate(prompt, params, CancelToken::new())
                .unwrap()
                .token_ids
        })
        .collect()
}

#[test]
fn unlimited_budget_loads_each_expert_once() {
    let checkpoint = Checkpoint::open(&fixture().checkpoint()).unwrap();
    let generator = generator_with_budget(&checkpoint, u64::MAX);
    let mut used = std::collections::BTreeSet::new();
    for prompt in PROMPTS {
        let params = SamplingParams {
            ignore_eos: true,
            ..SamplingParams::greedy(12)
        };
        let generation = generator
            .generate(prompt, params, CancelToken::new())
            .unwrap();
        used.extend(generation.expert_usage.experts());
    }
    let stats = generator.cache_stats();
    assert_eq!(stats.misses, used.len() as u64);
    assert_eq!(stats.evictions, 0);
    assert_eq!(stats.experts_resident, used.len() as u64);
    assert_eq!(
        stats.bytes_resident,
        used.len() as u64 * expert_bytes(&checkpoint)
    );
    assert!(stats.hits > stats.misses, "{stats:?}");
    assert!(stats.load_seconds_total > 0.0);
}

#[test]
fn small_budgets_evict_but_never_change_the_output() {
    let checkpoint = Checkpoint::open(&fixture().checkpoint()).unwrap();
    let reference = run(&generator_with_budget(&checkpoint, u64::MAX));
    let all_experts = 32 * expert_bytes(&checkpoint);
    let mut hit_rates = Vec::new();
    for budget in [0, all_experts / 4, all_experts / 2] {
        let generator = generator_with_budget(&checkpoint, budget);
        assert_eq!(run(&generator), reference, "budget {budget}");
        let stats = generator.cache_stats();
        assert!(stats.bytes_resident <= budget, "{stats:?}");
        assert_eq!(stats.expert_bytes_max, budget);
        if budget > 0 {
            assert!(stats.evictions > 0, "{stats:?}");
        } else {
            assert_eq!((stats.hits, stats.experts_resident), (0, 0));
        }
        hit_rates.push(stats.hit_rate());
    }
    assert!(
        hit_rates.windows(2).all(|pair| pair[0] <= pair[1]),
        "{hit_rates:?}"
    );
}

#[test]
fn missing_expert_fails_the_request_naming_it() {
    // Real files without one expert's matrix: the weights load, the request that needs it fails.
    let (_temp, dir, _) = broken(|dir| remove_tensor(dir, EXPERT_W2));
    let checkpoint_config = Checkpoint::open(&fixture().checkpoint()).unwrap();
    let source = std::sync::Arc::new(SafetensorsSource::open(&dir).unwrap());
    let model = Model::load(checkpoint_config.config(), source, ModelOptions::default()).unwrap();
    let generator = Generator::new(model, checkpoint_config.tokenizer().unwrap(), false);
    let missing = ExpertName::new(2, 5).unwrap();
    // Some prompt routes a token to layer 2's expert 5; every prompt that does must fail.
    let mut failed = 0;
    for prompt in PROMPTS
        .iter()
        .chain(["the quick brown fox jumps over the lazy dog"].iter())
    {
        let params = SamplingParams {
            ignore_eos: true,
            ..SamplingParams::greedy(16)
        };
        match generator.generate(prompt, params, CancelToken::new()) {
            Ok(generation) => assert!(!generation.expert_usage.experts().contains(&missing)),
            Err(MoeError::MissingExpert { expert }) => {
                assert_eq!(expert, missing);
                assert!(
                    MoeError::MissingExpert { expert }
                        .to_string()
                        .contains("layer2.expert5")
                );
                failed += 1;
            }
            Err(other) => panic!("unexpected {other}"),
        }
    }
    assert!(failed > 0, "no prompt reached the missing expert");
}

/// Rounds of concurrent requests tried until one of them puts a failing decoding step into a
/// batch with others (whether it does depends on how the threads meet the model).
const SPLIT_ROUNDS_MAX: u32 = 8;

/// A request whose decoding step needs the missing expert fails; the batch holding that step
/// is split (counted in `DecodeStats::batches_split`), and every request ends exactly as it
/// does alone: the failing ones with the missing expert, the others with their tokens.
#[test]
fn a_missing_expert_fails_only_the_requests_that_need_it_when_batched() {
    let (_temp, dir, _) = broken(|dir| remove_tensor(dir, EXPERT_W2));
    let checkpoint_config = Checkpoint::open(&fixture().checkpoint()).unwrap();
    let source = std::sync::Arc::new(SafetensorsSource::open(&dir).unwrap());
    let model = Model::load(checkpoint_config.config(), source, ModelOptions::default()).unwrap();
    let generator = Generator::new(model, checkpoint_config.tokenizer().unwrap(), false);
    // Short prompts and generations: some reach layer 2's expert 5, some do not.
    let prompts = [
        "a", "b", "blocks", "hello", "chain", "zzz", "experts", "the", "x y", "42",
    ];
    let params = SamplingParams {
        ignore_eos: true,
        ..SamplingParams::greedy(3)
    };
    let outcome = |result: Result<blyan_moe::Generation, MoeError>| match result {
        Ok(generation) => Ok(generation.token_ids),
        Err(MoeError::MissingExpert { expert }) => Err(expert),
        Err(other) => panic!("unexpected {other}"),
    };
    let alone: Vec<_> = prompts
        .iter()
        .map(|prompt| outcome(generator.generate(prompt, params.clone(), CancelToken::new())))
        .collect();
    assert!(
        alone.iter().any(Result::is_ok) && alone.iter().any(Result::is_err),
        "{alone:?}"
    );
    // Only a step after the prefill is batched: some request must fail there, its prompt
    // clear of the missing expert and a generated token not.
    let fails_decoding = |prompt: &str| {
        let mut stream = generator
            .stream(prompt, params.clone(), CancelToken::new())
            .unwrap();
        let first = stream.next();
        matches!(first, Some(Ok(_))) && stream.any(|delta| delta.is_err())
    };
    assert!(
        prompts.iter().any(|prompt| fails_decoding(prompt)),
        "no prompt fails at a decoding step: nothing to split"
    );

    let concurrently = || -> Vec<_> {
        let barrier = std::sync::Arc::new(std::sync::Barrier::new(prompts.len()));
        std::thread::scope(|scope| {
            let handles: Vec<_> = prompts
                .iter()
                .map(|prompt| {
                    let (generator, barrier, params) = (&generator, &barrier, params.clone());
                    scope.spawn(move || {
                        barrier.wait();
                        generator.generate(prompt, params, CancelToken::new())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|handle| outcome(handle.join().unwrap()))
                .collect()
        })
    };
    let mut splits = 0;
    for _ in 0..SPLIT_ROUNDS_MAX {
        let before = generator.decode_stats();
        assert_eq!(concurrently(), alone);
        splits = generator.decode_stats().batches_split - before.batches_split;
        if splits > 0 {
            break;
        }
    }
    assert!(
        splits > 0,
        "in {SPLIT_ROUNDS_MAX} rounds no failing step was batched with others"
    );
}

fn remove_tensor(dir: &Path, name: &str) {
    let path = dir.join("model.safetensors");
    let bytes = std::fs::read(&path).unwrap();
    let file = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let kept: Vec<_> = file
        .tensors()
        .into_iter()
        .filter(|(tensor, _)| tensor != name)
        .collect();
    safetensors::serialize_to_file(kept, None, &path).unwrap();
}
