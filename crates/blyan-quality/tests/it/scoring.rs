//! L1 scoring under the shipped model: batching changes no score beyond float rounding, long
//! texts are scored window by window, progress reaches its total, and the default band passes
//! prose and refuses noise.

use blyan_quality::{
    L1Verdict, QualityError, ScoreOptions, ScorePlan, ScoreProgress, TeacherBand, Window, judge_l1,
};

use crate::support::teacher;

const PROSE: &str = "The file system is organised as a tree of directories. Each user has a \
    home directory where personal files are kept, and programs read their configuration from \
    files under the etc directory when they start.";

#[test]
fn batched_scores_equal_scores_one_text_at_a_time() {
    let teacher = teacher();
    let texts: Vec<String> = vec![
        PROSE.into(),
        "A short line of text.".into(),
        "Another sentence, of a different length, about the weather in spring.".into(),
    ];
    let batched = teacher.score(&texts, 8);
    for (text, batched) in texts.iter().zip(&batched) {
        let alone = teacher.score(std::slice::from_ref(text), 1)[0];
        assert!(
            (alone - batched).abs() < 1e-4,
            "{alone} vs {batched} for {text:?}"
        );
    }
}

#[test]
fn a_text_longer_than_the_context_is_scored_in_windows_with_progress() {
    let teacher = teacher();
    // Windows of 128 byte tokens: this text needs many.
    let long: String = std::iter::repeat_n(PROSE, 4).collect::<Vec<_>>().join(" ");
    let options = ScoreOptions {
        batch_windows: 2,
        ..ScoreOptions::default()
    };
    let plan = teacher
        .generator
        .with_model(|model| {
            ScorePlan::new(
                model,
                teacher.generator.tokenizer(),
                std::slice::from_ref(&long),
                &options,
            )
        })
        .unwrap()
        .unwrap();
    let windows: Vec<&Window> = plan.batches.iter().flatten().collect();
    assert!(windows.len() > 10);
    for window in &windows {
        assert!(window.inputs.len() <= options.window_tokens);
        // Every window after the first opens with at least half a window of context.
        assert!(window.scored_from == 0 || window.scored_from >= options.window_tokens / 2);
    }
    assert_eq!(
        windows
            .iter()
            .filter(|window| window.scored_from == 0)
            .count(),
        1
    );
    let tokenizer = teacher.generator.tokenizer();
    let mut reports: Vec<ScoreProgress> = Vec::new();
    let scores = teacher
        .generator
        .with_model(|model| {
            blyan_quality::score_bits_per_byte(
                model,
                tokenizer,
                &[long.clone(), PROSE.to_owned()],
                &options,
                &mut |progress| reports.push(progress),
            )
        })
        .unwrap()
        .unwrap();
    let last = *reports.last().unwrap();
    assert_eq!(last.tokens_done, last.tokens_total);
    assert_eq!(last.batches_done, last.batches_total);
    assert_eq!(reports.len(), last.batches_total as usize);
    // Every byte of both texts is predicted once (byte-level tokenizer: one token per byte).
    assert_eq!(last.tokens_total, (long.len() + PROSE.len()) as u64);
    // The passage read again is more predictable than read once.
    assert!(scores[0] < scores[1], "{scores:?}");
}

#[test]
fn an_empty_text_or_batch_is_refused() {
    let teacher = teacher();
    let tokenizer = teacher.generator.tokenizer();
    let outcome = teacher
        .generator
        .with_model(|model| {
            blyan_quality::score_bits_per_byte(
                model,
                tokenizer,
                &["text".into(), String::new()],
                &ScoreOptions::default(),
                &mut |_| {},
            )
        })
        .unwrap();
    assert!(matches!(outcome, Err(QualityError::EmptyText { index: 1 })));
    let outcome = teacher
        .generator
        .with_model(|model| {
            let options = ScoreOptions {
                batch_windows: 0,
                ..ScoreOptions::default()
            };
            blyan_quality::score_bits_per_byte(
                model,
                tokenizer,
                &["text".into()],
                &options,
                &mut |_| {},
            )
        })
        .unwrap();
    assert!(matches!(outcome, Err(QualityError::EmptyBatch)));
}

#[test]
fn the_default_band_passes_prose_and_refuses_noise() {
    let teacher = teacher();
    let noise = "xq7#Vb2!pZ0@kL9$wR4%mN8^tY1&cJ6*hG3(fD5)sA-=_+[]{}|;:',.<>/?`~ QwErTy \
        zXcVbN mLkJhG fDsA pOiUyT rEwQ 9a8s7d6f5g4h3j2k1l";
    let scores = teacher.score(&[PROSE.into(), noise.into()], 4);
    let band = TeacherBand::default();
    let verdict = |score| judge_l1(score, "en", &band);
    assert!(
        matches!(verdict(scores[0]), L1Verdict::Pass { .. }),
        "{scores:?}"
    );
    assert!(
        matches!(verdict(scores[1]), L1Verdict::TooSurprising { .. }),
        "{scores:?}"
    );
}
