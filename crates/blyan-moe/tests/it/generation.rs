//! Generation on the fixture model: seeds, stop tokens, token budgets, cancellation, streaming.

use std::sync::Arc;

use blyan_moe::{
    CancelToken, Checkpoint, Delta, FinishReason, Generator, Model, ModelOptions, SamplingParams,
    TokenIds,
};

use crate::fixture::fixture;

fn generator() -> Generator {
    Checkpoint::open(&fixture().checkpoint())
        .unwrap()
        .load_generator(ModelOptions::default())
        .unwrap()
}

fn sampled(seed: u64, max_tokens: u32) -> SamplingParams {
    SamplingParams {
        max_tokens,
        temperature: 1.0,
        top_k: Some(50),
        top_p: Some(0.95),
        seed,
        ignore_eos: true,
        ..SamplingParams::default()
    }
}

const PROMPT: &str = "the chain holds the experts";

#[test]
fn same_seed_same_tokens_other_seed_other_tokens() {
    let generator = generator();
    let run = |seed| {
        generator
            .generate(PROMPT, sampled(seed, 24), CancelToken::new())
            .unwrap()
            .token_ids
    };
    let first = run(7);
    assert_eq!(first.len(), 24);
    assert_eq!(run(7), first);
    assert_ne!(run(8), first);
}

#[test]
fn stop_token_ends_generation_before_it() {
    let generator = generator();
    let free = generator
        .generate(
            PROMPT,
            SamplingParams {
                ignore_eos: true,
                ..SamplingParams::greedy(16)
            },
            CancelToken::new(),
        )
        .unwrap();
    let stop = free.token_ids[6];
    let first = free.token_ids.iter().position(|id| *id == stop).unwrap();
    let stopped = generator
        .generate(
            PROMPT,
            SamplingParams {
                stop_token_ids: vec![stop],
                ignore_eos: true,
                ..SamplingParams::greedy(16)
            },
            CancelToken::new(),
        )
        .unwrap();
    assert_eq!(stopped.token_ids, free.token_ids[..first]);
    assert_eq!(stopped.finish_reason, FinishReason::Stop { token_id: stop });
    assert_eq!(
        stopped.text,
        generator
            .tokenizer()
            .decode(&free.token_ids[..first])
            .unwrap()
    );
}

#[test]
fn model_end_of_sequence_token_stops_unless_ignored() {
    let fixture = fixture();
    let checkpoint = Checkpoint::open(&fixture.checkpoint()).unwrap();
    let free = checkpoint
        .load_generator(ModelOptions::default())
        .unwrap()
        .generate(
            PROMPT,
            SamplingParams {
                ignore_eos: true,
                ..SamplingParams::greedy(8)
            },
            CancelToken::new(),
        )
        .unwrap();
    // The same weights under a config whose end-of-sequence token is the fourth greedy token.
    let mut config = checkpoint.config().clone();
    let eos = free.token_ids[3];
    config.eos_token_id = Some(TokenIds::Many(vec![eos]));
    let model = Model::load(&config, checkpoint.weights(), ModelOptions::default()).unwrap();
    let generator = Generator::new(model, checkpoint.tokenizer().unwrap(), false);
    let stopped = generator
        .generate(PROMPT, SamplingParams::greedy(8), CancelToken::new())
        .unwrap();
    let first = free.token_ids.iter().position(|id| *id == eos).unwrap();
    assert_eq!(stopped.token_ids, free.token_ids[..first]);
    assert_eq!(stopped.finish_reason, FinishReason::Stop { token_id: eos });
    let ignored = generator
        .generate(
            PROMPT,
            SamplingParams {
                ignore_eos: true,
                ..SamplingParams::greedy(8)
            },
            CancelToken::new(),
        )
        .unwrap();
    assert_eq!(ignored.token_ids, free.token_ids);
}

#[test]
fn max_tokens_bounds_the_generation() {
    let generator = generator();
    for max_tokens in [1, 5] {
        let generation = generator
            .generate(PROMPT, sampled(3, max_tokens), CancelToken::new())
            .unwrap();
        assert_eq!(generation.token_ids.len(), max_tokens as usize);
        assert_eq!(generation.finish_reason, FinishReason::Length);
    }
}

#[test]
fn context_limit_shortens_the_generation() {
    let generator = generator();
    let context = generator.info().config.max_position_embeddings as usize;
    let prompt: Vec<u32> = (0..context as u32 - 3).map(|i| 10 + i % 200).collect();
    let generation = generator
        .stream_ids(prompt, sampled(1, 50), CancelToken::new())
        .unwrap()
        .finish()
        .unwrap();
    // Prompt plus every generated token but the last fit the context.
    assert_eq!(generation.token_ids.len(), 4);
    assert_eq!(generation.finish_reason, FinishReason::Length);
    let full: Vec<u32> = vec![10; context];
    assert!(matches!(
        generator.stream_ids(full, sampled(1, 5), CancelToken::new()),
        Err(blyan_moe::MoeError::ContextTooLong { .. })
    ));
}

#[test]
fn cancellation_stops_the_stream_at_the_next_token() {
    let generator = generator();
    let cancel = CancelToken::new();
    let mut stream = generator
        .stream(PROMPT, sampled(5, 30), cancel.clone())
        .unwrap();
    let mut received = Vec::new();
    for delta in stream.by_ref() {
        received.push(delta.unwrap());
        if received.len() == 3 {
            cancel.cancel();
        }
    }
    let tokens = received
        .iter()
        .filter(|delta| delta.token_id.is_some())
        .count();
    assert_eq!(tokens, 3);
    assert_eq!(stream.finish_reason(), Some(FinishReason::Cancelled));

    let cancelled = CancelToken::new();
    cancelled.cancel();
    let generation = generator
        .generate(PROMPT, sampled(5, 30), cancelled)
        .unwrap();
    assert!(generation.token_ids.is_empty());
    assert_eq!(generation.finish_reason, FinishReason::Cancelled);
}

#[test]
fn streamed_deltas_concatenate_to_the_full_text() {
    let generator = generator();
    for (prompt, seed) in [
        (PROMPT, 11),
        ("héllo blocks 🦊", 12),
        ("a block of the model", 13),
    ] {
        let stream = generator
            .stream(prompt, sampled(seed, 40), CancelToken::new())
            .unwrap();
        let deltas: Vec<Delta> = stream.map(Result::unwrap).collect();
        let streamed: String = deltas.iter().map(|delta| delta.text.as_str()).collect();
        let ids: Vec<u32> = deltas.iter().filter_map(|delta| delta.token_id).collect();
        let full = generator
            .generate(prompt, sampled(seed, 40), CancelToken::new())
            .unwrap();
        assert_eq!(ids, full.token_ids);
        assert_eq!(streamed, full.text);
        assert_eq!(streamed, generator.tokenizer().decode(&ids).unwrap());
    }
}

#[test]
fn concurrent_streams_share_one_model() {
    let generator = generator();
    let expected: Vec<Vec<u32>> = (0..3)
        .map(|seed| {
            generator
                .generate(PROMPT, sampled(seed, 12), CancelToken::new())
                .unwrap()
                .token_ids
        })
        .collect();
    let generator = Arc::new(generator);
    let handles: Vec<_> = (0..3)
        .map(|seed| {
            let generator = Arc::clone(&generator);
            std::thread::spawn(move || {
                generator
                    .generate(PROMPT, sampled(seed, 12), CancelToken::new())
                    .unwrap()
                    .token_ids
            })
        })
        .collect();
    let results: Vec<Vec<u32>> = handles
        .into_iter()
        .map(|handle| handle.join().unwrap())
        .collect();
    assert_eq!(results, expected);
}

const PROMPT_SET: [&str; 6] = [
    "the chain holds the experts",
    "a block of the model",
    "the quick brown fox jumps over the lazy dog",
    "miners upload experts",
    "validators check the proof of learning",
    "blocks",
];

/// Greedy generations of `PROMPT_SET`, every stream on its own thread, all started together.
fn concurrently(generator: &Generator, tokens: u32) -> Vec<Vec<u32>> {
    let barrier = Arc::new(std::sync::Barrier::new(PROMPT_SET.len()));
    let handles: Vec<_> = PROMPT_SET
        .iter()
        .map(|prompt| {
            let generator = generator.clone();
            let barrier = Arc::clone(&barrier);
            std::thread::spawn(move || {
                barrier.wait();
                let params = SamplingParams {
                    ignore_eos: true,
                    ..SamplingParams::greedy(tokens)
                };
                generator
                    .generate(prompt, params, CancelToken::new())
                    .unwrap()
                    .token_ids
            })
        })
        .collect();
    handles
        .into_iter()
        .map(|handle| handle.join().unwrap())
        .collect()
}

#[test]
fn concurrent_steps_are_batched_and_each_stream_gets_its_own_tokens() {
    let generator = generator();
    let alone: Vec<Vec<u32>> = PROMPT_SET
        .iter()
        .map(|prompt| {
            let params = SamplingParams {
                ignore_eos: true,
                ..SamplingParams::greedy(16)
            };
            generator
                .generate(prompt, params, CancelToken::new())
                .unwrap()
                .token_ids
        })
        .collect();
    let before = generator.decode_stats();
    assert_eq!(
        before.steps, before.batches,
        "streams run alone are never batched"
    );
    assert_eq!(concurrently(&generator, 16), alone);
    let after = generator.decode_stats();
    let (steps, batches) = (after.steps - before.steps, after.batches - before.batches);
    assert_eq!(
        steps,
        6 * 15,
        "one step per token after the first, which the prefill gives"
    );
    assert!(
        batches < steps,
        "{batches} forward passes for {steps} steps: nothing was batched"
    );
    assert_eq!(after.batches_split, 0);

    // Batching off: every step its own forward pass, the same tokens.
    generator.set_decode_batch_max(1);
    assert_eq!(concurrently(&generator, 16), alone);
    let off = generator.decode_stats();
    assert_eq!(off.steps - after.steps, off.batches - after.batches);
}
