//! Our import and forward pass against transformers' `MixtralForCausalLM` (eager, float32).

use blyan_moe::{
    CancelToken, Checkpoint, ExpertUsage, FinishReason, Logits, ModelOptions, SamplingParams,
};
use tch::Tensor;

use crate::fixture::fixture;

/// Largest accepted relative error: max |ours − reference| over max |reference|, per prompt.
const RELATIVE_ERROR_MAX: f64 = 1e-4;

fn relative_error(ours: &Tensor, reference: &Tensor) -> f64 {
    let difference = (ours - reference).abs().max().double_value(&[]);
    difference / reference.abs().max().double_value(&[])
}

fn check_logits(checkpoint_dir: &std::path::Path) {
    let fixture = fixture();
    let checkpoint = Checkpoint::open(checkpoint_dir).unwrap();
    let tokenizer = checkpoint.tokenizer().unwrap();
    let mut model = checkpoint.load_model(ModelOptions::default()).unwrap();
    for (index, case) in fixture.expected.cases.iter().enumerate() {
        assert_eq!(
            tokenizer.encode(&case.prompt).unwrap(),
            case.input_ids,
            "tokenization of {:?}",
            case.prompt
        );
        let mut cache = model.new_kv_cache();
        let mut usage = ExpertUsage::new(model.config());
        let ours = model
            .forward(&case.input_ids, &mut cache, &mut usage, Logits::All)
            .unwrap();
        let reference = fixture.logits(index);
        assert_eq!(ours.size(), reference.size());
        let error = relative_error(&ours, &reference);
        println!("prompt {index}: relative error {error:e}");
        assert!(
            error <= RELATIVE_ERROR_MAX,
            "prompt {index} {:?}: relative error {error:e} > {RELATIVE_ERROR_MAX:e} \
             (transformers {})",
            case.prompt,
            fixture.expected.transformers
        );
        // Each prompt token visits top-k experts in every layer.
        let routed: u32 = usage.tokens.iter().flatten().sum();
        assert_eq!(
            routed as usize,
            case.input_ids.len() * 2 * model.config().num_hidden_layers as usize
        );
    }
}

#[test]
fn logits_match_the_reference() {
    check_logits(&fixture().checkpoint());
}

#[test]
fn sharded_checkpoint_gives_the_same_logits() {
    check_logits(&fixture().sharded());
}

#[test]
fn greedy_generation_matches_the_reference_token_for_token() {
    let fixture = fixture();
    let generator = Checkpoint::open(&fixture.checkpoint())
        .unwrap()
        .load_generator(ModelOptions::default())
        .unwrap();
    for case in &fixture.expected.cases {
        let params = SamplingParams {
            ignore_eos: true,
            ..SamplingParams::greedy(fixture.expected.greedy_new_tokens)
        };
        let generation = generator
            .stream_ids(case.input_ids.clone(), params, CancelToken::new())
            .unwrap()
            .finish()
            .unwrap();
        assert_eq!(
            generation.token_ids, case.greedy_ids,
            "prompt {:?}",
            case.prompt
        );
        assert_eq!(
            generation.text, case.greedy_text,
            "prompt {:?}",
            case.prompt
        );
        assert_eq!(generation.finish_reason, FinishReason::Length);
    }
}
