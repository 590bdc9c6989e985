//! blyan-quality benches, each against a baseline measured in the same run:
//! - L0: `screen_l0` of fresh samples (clean ones and near duplicates) against an
//!   [`AcceptedIndex`] of 100,000 accepted samples, in samples/s and MB/s, vs the schema-only
//!   cost of the same samples (`Sample::validate`: limits, normalization and the blake3 of the
//!   normalized text), with the near-duplicate search's share (MinHash signature and LSH
//!   lookup) and of language identification (`whatlang`) measured alone;
//! - submission: the node's path for one new sample against chain D holding 100,000 samples,
//!   its gate state kept and advanced (screen against the kept index, apply the block) vs
//!   replayed and re-indexed for each submission, as the node did before; printed as a ratio;
//! - L1: `score_bits_per_byte` of a batch of texts under the shipped default model vs the
//!   model's plain forward passes over the same padded batches (`ScorePlan::padded` and
//!   `Model::forward_sequences`, no tokenizing, planning or loss), goal ≥ 0.9×.
//!
//! Samples are English-like sentences drawn from a fixed word list by a seeded generator, so
//! every run judges the same texts and the LSH buckets hold the collisions real prose gives
//! (common words, common three-word runs).
//!
//! `source scripts/env.sh && cargo bench -p blyan-quality --profile test --config
//! 'profile.test.package.blyan-quality.opt-level=3' --bench gates`; criterion's medians are
//! printed as ratios at the end of each group.
// criterion_group! generates a public function no doc comment can reach.
#![allow(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

// The shipped model as the L1 tests load it (`support::teacher`); its scoring helper is the
// tests' own.
#[allow(dead_code)]
#[path = "../tests/it/support.rs"]
mod support;

use std::hint::black_box;
use std::time::{Duration, Instant};

use blyan_chain::{Address, BlockHash};
use blyan_moe::ExpertUsage;
use blyan_quality::{
    AcceptedIndex, DataBlock, DataRecord, GateParams, GateView, L0Config, Licence, Sample,
    SampleContent, SampleState, ScoreOptions, ScorePlan, Signature, score_bits_per_byte, screen_l0,
    screen_signed_where,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

/// Accepted samples in the index L0 searches.
const ACCEPTED: usize = 100_000;
/// Fresh samples screened per iteration: half clean, half near duplicates of accepted ones.
const SCREENED: usize = 256;
/// Texts scored per L1 iteration.
const SCORED: usize = 64;

/// Common English words, most frequent first: sentences draw from them with a skew towards the
/// front, as prose does.
const WORDS: &[&str] = &[
    "the",
    "of",
    "and",
    "to",
    "a",
    "in",
    "is",
    "that",
    "it",
    "was",
    "for",
    "on",
    "are",
    "as",
    "with",
    "his",
    "they",
    "at",
    "be",
    "this",
    "from",
    "have",
    "or",
    "by",
    "one",
    "had",
    "not",
    "but",
    "what",
    "all",
    "were",
    "when",
    "we",
    "there",
    "can",
    "an",
    "your",
    "which",
    "their",
    "said",
    "if",
    "do",
    "will",
    "each",
    "about",
    "how",
    "up",
    "out",
    "them",
    "then",
    "she",
    "many",
    "some",
    "so",
    "these",
    "would",
    "other",
    "into",
    "has",
    "more",
    "her",
    "two",
    "like",
    "him",
    "see",
    "time",
    "could",
    "no",
    "make",
    "than",
    "first",
    "been",
    "its",
    "who",
    "now",
    "people",
    "my",
    "made",
    "over",
    "did",
    "down",
    "only",
    "way",
    "find",
    "use",
    "may",
    "water",
    "long",
    "little",
    "very",
    "after",
    "words",
    "called",
    "just",
    "where",
    "most",
    "know",
    "get",
    "through",
    "back",
    "much",
    "before",
    "go",
    "good",
    "new",
    "write",
    "our",
    "used",
    "me",
    "man",
    "too",
    "any",
    "day",
    "same",
    "right",
    "look",
    "think",
    "also",
    "around",
    "another",
    "came",
    "come",
    "work",
    "three",
    "word",
    "must",
    "because",
    "does",
    "part",
    "even",
    "place",
    "well",
    "such",
    "here",
    "take",
    "why",
    "things",
    "help",
    "put",
    "years",
    "different",
    "away",
    "again",
    "off",
    "went",
    "old",
    "number",
    "great",
    "tell",
    "men",
    "say",
    "small",
    "every",
    "found",
    "still",
    "between",
    "name",
    "should",
    "home",
    "big",
    "give",
    "air",
    "line",
    "set",
    "own",
    "under",
    "read",
    "last",
    "never",
    "us",
    "left",
    "end",
    "along",
    "while",
    "might",
    "next",
    "sound",
    "below",
    "saw",
    "something",
    "thought",
    "both",
    "few",
    "those",
    "always",
    "looked",
    "show",
    "large",
    "often",
    "together",
    "asked",
    "house",
    "world",
    "going",
    "want",
    "school",
    "important",
    "until",
    "form",
    "food",
    "keep",
    "children",
    "feet",
    "land",
    "side",
    "without",
    "boy",
    "once",
    "animals",
    "life",
    "enough",
    "took",
    "sometimes",
    "four",
    "head",
    "above",
    "kind",
    "began",
    "almost",
    "live",
    "page",
    "got",
    "earth",
    "need",
    "far",
    "hand",
    "high",
    "year",
    "mother",
    "light",
    "parts",
    "country",
    "father",
    "let",
    "night",
    "following",
    "picture",
    "being",
    "study",
    "second",
    "eyes",
    "soon",
    "times",
    "story",
    "boys",
    "since",
    "white",
    "days",
    "paper",
    "hard",
    "near",
    "sentence",
    "better",
    "best",
    "across",
    "during",
    "today",
    "others",
    "however",
    "sure",
    "means",
    "knew",
    "try",
    "told",
    "young",
    "miles",
    "sun",
    "ways",
    "thing",
    "whole",
    "hear",
    "example",
    "heard",
    "several",
    "change",
    "answer",
    "room",
    "sea",
    "against",
    "top",
    "turned",
    "learn",
    "point",
    "city",
    "play",
    "toward",
    "five",
    "using",
    "himself",
    "usually",
    "money",
    "river",
    "garden",
    "window",
    "morning",
    "winter",
    "market",
    "letter",
    "bridge",
    "forest",
    "mountain",
    "kitchen",
    "village",
    "teacher",
    "doctor",
    "engine",
    "harbour",
    "station",
    "library",
    "weather",
    "journey",
    "silver",
    "orchard",
    "lantern",
    "meadow",
];

/// xorshift64*: a fixed, seeded stream, the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// A word, skewed towards the frequent ones (the smaller of two uniform draws, half the time).
    fn word(&mut self) -> &'static str {
        let index = if self.next() & 1 == 0 {
            self.below(WORDS.len()).min(self.below(WORDS.len()))
        } else {
            self.below(WORDS.len())
        };
        WORDS[index]
    }
}

/// An English-like text of 3–6 sentences of 8–16 words each (≈ 250–550 bytes).
fn text(rng: &mut Rng) -> String {
    let sentences = 3 + rng.below(4);
    let mut text = String::new();
    for sentence in 0..sentences {
        if sentence > 0 {
            text.push(' ');
        }
        let words = 8 + rng.below(9);
        for position in 0..words {
            let word = rng.word();
            if position == 0 {
                let mut chars = word.chars();
                if let Some(first) = chars.next() {
                    text.extend(first.to_uppercase());
                    text.push_str(chars.as_str());
                }
            } else {
                text.push(' ');
                text.push_str(word);
            }
        }
        text.push('.');
    }
    text
}

/// `text` with one word in twenty replaced: a near duplicate (Jaccard of 3-word shingles ≈ 0.8).
fn edited(text: &str, rng: &mut Rng) -> String {
    text.split(' ')
        .enumerate()
        .map(
            |(position, word)| {
                if position % 20 == 7 { rng.word() } else { word }
            },
        )
        .collect::<Vec<_>>()
        .join(" ")
}

fn sample(text: String) -> Sample {
    Sample::new(
        SampleContent::Text { text },
        Licence::Cc0,
        "own writing",
        "en",
        Address::ZERO,
    )
    .expect("a generated sample is well formed")
}

fn block(index: usize) -> BlockHash {
    let mut hash = [0u8; 32];
    hash[..8].copy_from_slice(&(index as u64).to_le_bytes());
    BlockHash(hash)
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn bench_l0(c: &mut Criterion) {
    let config = L0Config::default();
    let mut rng = Rng(0x626c_7961_6e2d_6c30);
    let started = Instant::now();
    let mut index = AcceptedIndex::new();
    let mut accepted = Vec::with_capacity(ACCEPTED);
    while index.len() < ACCEPTED {
        let text = text(&mut rng);
        if index.insert(&sample(text.clone()), block(index.len())) {
            accepted.push(text);
        }
    }
    println!(
        "l0: index of {} accepted samples built in {:.1} s",
        index.len(),
        started.elapsed().as_secs_f64()
    );

    // Fresh samples: clean ones that pass, and edited copies of accepted ones that are refused
    // as near duplicates; each kind checked once so the bench measures what it names.
    let mut screened = Vec::with_capacity(SCREENED);
    let (mut clean, mut near) = (0, 0);
    while screened.len() < SCREENED {
        let candidate = if screened.len() % 2 == 0 {
            sample(text(&mut rng))
        } else {
            let of = &accepted[rng.below(accepted.len())];
            sample(edited(of, &mut rng))
        };
        match screen_l0(&candidate, &index, &config) {
            Ok(()) if screened.len() % 2 == 0 => clean += 1,
            Err(refusal) if screened.len() % 2 == 1 && refusal.code() == "near_duplicate" => {
                near += 1;
            }
            // A fresh text that happens to be near an accepted one, or an edit that moved too
            // far: drawn again, so the batch is half of each.
            _ => continue,
        }
        screened.push(candidate);
    }
    let bytes: usize = screened
        .iter()
        .map(|sample| sample.content.text_bytes())
        .sum();
    println!("l0: screening {clean} clean and {near} near-duplicate samples, {bytes} bytes");

    let mut group = c.benchmark_group("l0");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("screen_l0_100k", |b| {
        b.iter(|| {
            for sample in &screened {
                let _ = black_box(screen_l0(sample, &index, &config));
            }
        });
    });
    group.bench_function("near_duplicate_search", |b| {
        b.iter(|| near_search(&screened, &index, &config))
    });
    group.bench_function("validate_baseline", |b| {
        b.iter(|| {
            for sample in &screened {
                black_box(sample.validate()).expect("valid");
            }
        });
    });
    group.finish();

    // The ratio, measured here so it can be printed (criterion keeps its numbers to itself):
    // rounds of both, alternated, each round's pass timed whole.
    let (mut screen_s, mut near_s, mut language_s, mut baseline_s) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for _ in 0..15 {
        let start = Instant::now();
        for sample in &screened {
            let _ = black_box(screen_l0(sample, &index, &config));
        }
        screen_s.push(start.elapsed().as_secs_f64());
        let start = Instant::now();
        near_search(&screened, &index, &config);
        near_s.push(start.elapsed().as_secs_f64());
        let start = Instant::now();
        for sample in &screened {
            black_box(whatlang::detect(&sample.training_text()));
        }
        language_s.push(start.elapsed().as_secs_f64());
        let start = Instant::now();
        for sample in &screened {
            black_box(sample.validate()).expect("valid");
        }
        baseline_s.push(start.elapsed().as_secs_f64());
    }
    let (screen, near, language, baseline) = (
        median(&mut screen_s),
        median(&mut near_s),
        median(&mut language_s),
        median(&mut baseline_s),
    );
    println!(
        "l0: screen_l0 against {ACCEPTED} accepted: {:.0} samples/s, {:.2} MB/s; schema only \
         (validate + blake3): {:.0} samples/s, {:.1} MB/s; ratio {:.3} (L0 costs {:.1}× the \
         schema check); of L0's time, the near-duplicate search (signature + LSH lookup) takes \
         {:.0} % and language identification (whatlang) {:.0} %",
        SCREENED as f64 / screen,
        bytes as f64 / screen / 1e6,
        SCREENED as f64 / baseline,
        bytes as f64 / baseline / 1e6,
        baseline / screen,
        screen / baseline,
        near / screen * 100.0,
        language / screen * 100.0,
    );
}

/// Submissions timed in the bench of the node's submission path, each way.
const SUBMITTED: usize = 64;
/// Submissions timed the old way (a replay and an index rebuild each: seconds apiece).
const SUBMITTED_REBUILT: usize = 3;

/// Whether a sample in `state` no longer counts for L0.
fn refused(state: SampleState) -> bool {
    matches!(
        state,
        SampleState::L1Refused | SampleState::Refused | SampleState::ReviewRefused
    )
}

/// A sample's `DatasetEntry` document at chain D height `height`.
fn data_block(height: usize, sample: Sample) -> DataBlock {
    DataBlock {
        hash: block(height),
        author: Address::ZERO,
        height: height as u64,
        timestamp_ms: 1_770_000_000_000 + height as u64,
        record: DataRecord::Sample(sample),
    }
}

/// The node's submission path against chain D holding 100,000 samples: the L0 screen of a new
/// sample and taking it into the gate state, done as the node did before it kept the state
/// (replay chain D's documents into a `GateView`, rebuild the L0 index from the samples that
/// count, screen) and as it does now (screen against the kept index, judging only the matches
/// against the kept view, then apply the new block to both). Chain D's reads from RocksDB are
/// left out of both, so the old way's figure is a floor.
fn bench_submission(_c: &mut Criterion) {
    let config = L0Config::default();
    let params = GateParams::default();
    let no_validator = |_: Address, _: u64| false;
    let mut rng = Rng(0x626c_7961_6e2d_7375);
    let mut blocks = Vec::with_capacity(ACCEPTED);
    let mut seen = std::collections::HashSet::new();
    while blocks.len() < ACCEPTED {
        let sample = sample(text(&mut rng));
        if seen.insert(sample.content_hash.clone()) {
            blocks.push(data_block(blocks.len() + 1, sample));
        }
    }
    let fresh: Vec<Sample> = (0..SUBMITTED).map(|_| sample(text(&mut rng))).collect();
    let now = 1_770_000_000_000 + 2 * ACCEPTED as u64;

    // Before: every submission replays chain D and rebuilds the index.
    let mut rebuilt_s = Vec::new();
    for submitted in fresh.iter().take(SUBMITTED_REBUILT) {
        let start = Instant::now();
        let view = GateView::replay(params.clone(), &blocks, &no_validator);
        let mut index = AcceptedIndex::new();
        for other in view.samples() {
            if !refused(other.state(view.params(), now)) {
                index.insert(&other.sample, other.hash);
            }
        }
        black_box(screen_l0(submitted, &index, &config)).ok();
        rebuilt_s.push(start.elapsed().as_secs_f64());
    }

    // Now: the view and an index of every sample are kept and advanced by each new block.
    let started = Instant::now();
    let mut view = GateView::replay(params.clone(), &blocks, &no_validator);
    let mut index = AcceptedIndex::new();
    for data in &blocks {
        if let DataRecord::Sample(sample) = &data.record {
            index.insert_every(sample, &Signature::of(&sample.normalized_text()), data.hash);
        }
    }
    println!(
        "submission: chain D of {} samples replayed and indexed once in {:.1} s",
        blocks.len(),
        started.elapsed().as_secs_f64()
    );
    let start = Instant::now();
    let mut height = blocks.len();
    for submitted in &fresh {
        let counts = |id: BlockHash| {
            view.sample(&id)
                .is_some_and(|other| !refused(other.state(view.params(), now)))
        };
        let signature = screen_signed_where(submitted, &index, &config, &counts).ok();
        height += 1;
        let data = data_block(height, submitted.clone());
        if let Some(signature) = signature {
            index.insert_every(submitted, &signature, data.hash);
        }
        view.apply(&data, &no_validator);
    }
    let kept = start.elapsed().as_secs_f64() / SUBMITTED as f64;
    let rebuilt = median(&mut rebuilt_s);
    println!(
        "submission against {ACCEPTED} samples on chain D: replay + index rebuild per \
         submission {:.3} s ({:.2} submissions/s); kept state {:.3} ms ({:.0} submissions/s); \
         ratio {:.0}× (kept / rebuilt throughput)",
        rebuilt,
        1.0 / rebuilt,
        kept * 1e3,
        1.0 / kept,
        rebuilt / kept,
    );
}

/// The near-duplicate part of L0 alone: each sample's MinHash signature and its LSH lookup.
fn near_search(screened: &[Sample], index: &AcceptedIndex, config: &L0Config) {
    for sample in screened {
        let signature = Signature::of(&sample.normalized_text());
        black_box(index.nearest(&signature, config.near_duplicate_jaccard));
    }
}

fn bench_l1(c: &mut Criterion) {
    let teacher = support::teacher();
    let generator = &teacher.generator;
    let tokenizer = generator.tokenizer();
    let mut rng = Rng(0x626c_7961_6e2d_6c31);
    let texts: Vec<String> = (0..SCORED).map(|_| text(&mut rng)).collect();
    let bytes: usize = texts.iter().map(String::len).sum();
    let options = ScoreOptions::default();
    let plan = generator
        .with_model(|model| ScorePlan::new(model, tokenizer, &texts, &options))
        .expect("the model is free")
        .expect("the texts plan");
    let padded: Vec<(Vec<u32>, usize)> = (0..plan.batches.len())
        .map(|index| plan.padded(index))
        .collect();
    println!(
        "l1: {SCORED} texts, {bytes} bytes, {} tokens scored in {} forward passes",
        plan.tokens(),
        plan.batches.len()
    );

    let score = || {
        generator
            .with_model(|model| {
                score_bits_per_byte(model, tokenizer, &texts, &options, &mut |_| {})
            })
            .expect("the model is free")
            .expect("the texts score")
    };
    // The floor: the same forward passes on the same padded batches, nothing else.
    let forward = || {
        generator
            .with_model(|model| {
                tch::no_grad(|| {
                    for (windows, (tokens, _)) in plan.batches.iter().zip(&padded) {
                        let mut usage = ExpertUsage::new(model.config());
                        let output = model
                            .forward_sequences(tokens, windows.len(), &mut usage)
                            .expect("the batch runs");
                        black_box(output.logits.size());
                    }
                });
            })
            .expect("the model is free");
    };

    let mut group = c.benchmark_group("l1");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Bytes(bytes as u64));
    group.bench_function("score_bits_per_byte", |b| b.iter(|| black_box(score())));
    group.bench_function("forward_baseline", |b| b.iter(forward));
    group.finish();

    // Rounds of both, alternated, so the machine's load falls on each alike.
    let mut ratios = Vec::new();
    let (mut score_s, mut forward_s) = (Vec::new(), Vec::new());
    for _ in 0..7 {
        let start = Instant::now();
        black_box(score());
        let scored = start.elapsed().as_secs_f64();
        let start = Instant::now();
        forward();
        let floor = start.elapsed().as_secs_f64();
        ratios.push(floor / scored);
        score_s.push(scored);
        forward_s.push(floor);
    }
    let (scored, floor) = (median(&mut score_s), median(&mut forward_s));
    println!(
        "l1: score_bits_per_byte {:.0} texts/s, {:.1} KB/s; plain forward passes {:.0} texts/s, \
         {:.1} KB/s; ratio {:.2} (goal ≥ 0.9)",
        SCORED as f64 / scored,
        bytes as f64 / scored / 1e3,
        SCORED as f64 / floor,
        bytes as f64 / floor / 1e3,
        median(&mut ratios),
    );
}

criterion_group!(benches, bench_l0, bench_submission, bench_l1);
criterion_main!(benches);
