//! Training on the tiny fixture: the held-out loss falls, a resumed run matches an
//! uninterrupted one bit for bit, an expert fine-tune changes only its experts (and publishing
//! it writes only their blocks), and bad input is refused before anything trains.

use std::path::Path;
use std::sync::Arc;

use blyan_chain::AuthorKey;
use blyan_moe::{
    Checkpoint, ExpertName, ExpertQuantization, MoeError, SafetensorsSource, TextDocument,
    TokenCorpus, TrainOptions, TrainScope, Trainer, WeightSource, parameter_layout, read_corpus,
};

use crate::chain::{open_store, publish};
use crate::fixture::{fixture, repository_root};

/// The project's own documentation, one document per paragraph: real English text in over a
/// hundred pieces, so a tenth of them held out is (all but surely, and fixed by the text) some.
fn corpus(checkpoint: &Checkpoint) -> TokenCorpus {
    TokenCorpus::new(
        &checkpoint.tokenizer().unwrap(),
        &paragraphs(&["docs"]),
        100,
        None,
    )
    .unwrap()
}

fn paragraphs(paths: &[&str]) -> Vec<TextDocument> {
    let paths: Vec<_> = paths
        .iter()
        .map(|path| repository_root().join(path))
        .collect();
    let read = read_corpus(&paths).unwrap();
    let mut documents = Vec::new();
    for document in &read.documents {
        for (index, paragraph) in document.text.split("\n\n").enumerate() {
            documents.push(TextDocument {
                name: format!("{}#{index}", document.name),
                text: format!("{paragraph}\n\n"),
            });
        }
    }
    assert!(documents.len() > 100, "{} paragraphs", documents.len());
    documents
}

fn options(scope: TrainScope, steps: u64) -> TrainOptions {
    TrainOptions {
        seed: 3,
        batch_size: 4,
        positions: 32,
        eval_tokens_max: 2048,
        learning_rate: 1e-2,
        min_learning_rate: 1e-3,
        warmup_steps: 2,
        ..TrainOptions::new(scope, steps)
    }
}

fn trainer(checkpoint: &Checkpoint, options: TrainOptions) -> Trainer {
    Trainer::new(checkpoint.config(), checkpoint.weights(), options).unwrap()
}

#[test]
fn training_lowers_the_held_out_loss() {
    let checkpoint = Checkpoint::open(&fixture().checkpoint()).unwrap();
    let corpus = corpus(&checkpoint);
    let mut trainer = trainer(&checkpoint, options(TrainScope::Model, 40));
    let before = trainer.evaluate(&corpus).unwrap();
    let mut first_loss = None;
    for _ in 0..40 {
        let report = trainer.step(&corpus).unwrap();
        assert!(report.loss.is_finite() && report.grad_norm.is_finite());
        first_loss.get_or_insert(report.loss);
    }
    let after = trainer.evaluate(&corpus).unwrap();
    assert_eq!(
        before.tokens, after.tokens,
        "the same held-out windows are scored"
    );
    assert!(
        after.loss < before.loss * 0.8,
        "held-out loss {} → {}",
        before.loss,
        after.loss
    );
    assert!(after.bits_per_byte < before.bits_per_byte);
    assert_eq!(trainer.steps_done(), 40);
    assert_eq!(trainer.tokens_seen(), 40 * 4 * 32);
    let shares = trainer.expert_shares();
    assert_eq!(shares.len(), 4);
    for layer in shares {
        assert!((layer.iter().sum::<f64>() - 1.0).abs() < 1e-9);
    }
    // Nothing was written through the checkpoint's tensors: they are as on disk.
    let on_disk = SafetensorsSource::open(&fixture().checkpoint()).unwrap();
    let name = "model.layers.0.self_attn.q_proj.weight";
    assert!(
        on_disk
            .tensor(name)
            .unwrap()
            .equal(&checkpoint.weights().tensor(name).unwrap())
    );
}

fn all_tensors(source: &dyn WeightSource, checkpoint: &Checkpoint) -> Vec<(String, tch::Tensor)> {
    parameter_layout(checkpoint.config())
        .unwrap()
        .into_iter()
        .map(|spec| {
            let tensor = source.tensor(&spec.name).unwrap();
            (spec.name, tensor)
        })
        .collect()
}

#[test]
fn a_resumed_run_matches_an_uninterrupted_one_bit_for_bit() {
    let temp = tempfile::tempdir().unwrap();
    let checkpoint = Checkpoint::open(&fixture().checkpoint()).unwrap();
    let corpus = corpus(&checkpoint);
    let scope = TrainScope::Model;

    let mut straight = trainer(&checkpoint, options(scope.clone(), 6));
    for _ in 0..6 {
        straight.step(&corpus).unwrap();
    }

    let state = temp.path().join("state");
    let mut first = trainer(&checkpoint, options(scope, 6));
    for _ in 0..3 {
        first.step(&corpus).unwrap();
    }
    first.save(&state, &corpus).unwrap();
    drop(first);
    let mut resumed =
        Trainer::resume(&state, checkpoint.config(), checkpoint.weights(), &corpus).unwrap();
    assert_eq!(resumed.steps_done(), 3);
    for _ in 0..3 {
        resumed.step(&corpus).unwrap();
    }
    assert_eq!(resumed.tokens_seen(), straight.tokens_seen());
    let straight = straight.weights().unwrap();
    let resumed = resumed.weights().unwrap();
    let mut changed = 0;
    for ((name, a), (_, b)) in all_tensors(&straight, &checkpoint)
        .into_iter()
        .zip(all_tensors(&resumed, &checkpoint))
    {
        assert!(a.equal(&b), "{name} differs after the resume");
        if !a.equal(&checkpoint.weights().tensor(&name).unwrap()) {
            changed += 1;
        }
    }
    assert!(changed > 0, "training changed nothing");

    // A state of another corpus, or of another model, is refused.
    let other = TokenCorpus::new(
        &checkpoint.tokenizer().unwrap(),
        &paragraphs(&["README.md", "docs"]),
        100,
        None,
    )
    .unwrap();
    assert!(matches!(
        Trainer::resume(&state, checkpoint.config(), checkpoint.weights(), &other),
        Err(MoeError::TrainState { .. })
    ));
    let mut config = checkpoint.config().clone();
    config.rms_norm_eps = 1e-3;
    assert!(matches!(
        Trainer::resume(&state, &config, checkpoint.weights(), &corpus),
        Err(MoeError::TrainState { .. })
    ));
}

fn expert(text: &str) -> ExpertName {
    text.parse().unwrap()
}

#[test]
fn an_expert_fine_tune_changes_only_its_experts_and_publishes_only_them() {
    let temp = tempfile::tempdir().unwrap();
    let checkpoint = Checkpoint::open(&fixture().checkpoint()).unwrap();
    let corpus = corpus(&checkpoint);
    let chosen = [expert("layer1.expert3"), expert("layer2.expert0")];
    let scope = TrainScope::Experts {
        experts: chosen.to_vec(),
        router: false,
    };
    let mut trainer = trainer(&checkpoint, options(scope, 5));
    assert_eq!(trainer.trained_tensors().len(), 6);
    for _ in 0..5 {
        trainer.step(&corpus).unwrap();
    }
    let out = temp.path().join("fine-tuned");
    trainer.export(&out, checkpoint.files()).unwrap();

    let tuned = Checkpoint::open(&out).unwrap();
    let mut changed = Vec::new();
    for ((name, before), (_, after)) in all_tensors(&*checkpoint.weights(), &checkpoint)
        .into_iter()
        .zip(all_tensors(&*tuned.weights(), &checkpoint))
    {
        assert_eq!(before.kind(), after.kind(), "{name}");
        if !before.equal(&after) {
            changed.push(name);
        }
    }
    let mut expected: Vec<String> = chosen
        .iter()
        .flat_map(|id| {
            blyan_moe::ExpertMatrix::ALL.map(|matrix| blyan_moe::expert_tensor_name(*id, matrix))
        })
        .collect();
    expected.sort();
    changed.sort();
    assert_eq!(changed, expected);

    // Publishing the fine-tune over the original writes the two experts' blocks and a meta
    // block, nothing else.
    let store = open_store(&temp.path().join("chain"));
    let key = AuthorKey::generate();
    let _ = publish(
        &store,
        &key,
        &fixture().checkpoint(),
        ExpertQuantization::None,
    );
    let (summary, _) = publish(&store, &key, &out, ExpertQuantization::None);
    assert_eq!(summary.experts_written, 2);
    assert_eq!(summary.shared_written, 0);
    assert_eq!(summary.experts_unchanged, 30);
}

#[test]
fn with_the_router_the_layers_routers_train_too() {
    let checkpoint = Checkpoint::open(&fixture().checkpoint()).unwrap();
    let scope = TrainScope::Experts {
        experts: vec![expert("layer3.expert7")],
        router: true,
    };
    let trainer = trainer(&checkpoint, options(scope, 1));
    assert!(
        trainer
            .trained_tensors()
            .contains(&"model.layers.3.block_sparse_moe.gate.weight")
    );
    assert_eq!(trainer.trained_tensors().len(), 4);
}

#[test]
fn bad_runs_are_refused_before_training() {
    let checkpoint = Checkpoint::open(&fixture().checkpoint()).unwrap();
    let unknown = TrainScope::Experts {
        experts: vec![expert("layer9.expert0")],
        router: false,
    };
    let error = Trainer::new(
        checkpoint.config(),
        checkpoint.weights(),
        options(unknown, 1),
    )
    .unwrap_err();
    assert!(
        matches!(&error, MoeError::Training { reason } if reason.contains("layer9.expert0")),
        "{error}"
    );
    let mut long = options(TrainScope::Model, 1);
    long.positions = 100_000;
    assert!(matches!(
        Trainer::new(checkpoint.config(), checkpoint.weights(), long),
        Err(MoeError::Training { .. })
    ));
    let empty = tempfile::tempdir().unwrap();
    assert!(matches!(
        read_corpus(&[empty.path().to_owned()]),
        Err(MoeError::Corpus { .. })
    ));
    let _: &Path = empty.path();
    let _ = Arc::new(());
}

/// The fixture with layer 0's router zeroed: every token ties, and the tie goes to experts 0
/// and 1, so layer 0's expert 7 never sees a token.
struct ZeroRouter(Arc<dyn WeightSource>);

impl WeightSource for ZeroRouter {
    fn tensor(&self, name: &str) -> blyan_moe::Result<tch::Tensor> {
        let tensor = self.0.tensor(name)?;
        if name == "model.layers.0.block_sparse_moe.gate.weight" {
            return Ok(tensor.zeros_like());
        }
        Ok(tensor)
    }

    fn describe(&self) -> String {
        "the fixture with layer 0's router zeroed".into()
    }
}

#[test]
fn a_step_that_routes_nothing_to_the_trained_expert_changes_nothing_and_fails_nothing() {
    let checkpoint = Checkpoint::open(&fixture().checkpoint()).unwrap();
    let corpus = corpus(&checkpoint);
    let base: Arc<dyn WeightSource> = Arc::new(ZeroRouter(checkpoint.weights()));
    let scope = TrainScope::Experts {
        experts: vec![expert("layer0.expert7")],
        router: false,
    };
    let mut trainer =
        Trainer::new(checkpoint.config(), Arc::clone(&base), options(scope, 2)).unwrap();
    let report = trainer.step(&corpus).unwrap();
    assert!(report.loss.is_finite());
    assert_eq!(report.grad_norm, 0.0);
    assert_eq!(trainer.expert_shares()[0][7], 0.0);
    let name = blyan_moe::expert_tensor_name(expert("layer0.expert7"), blyan_moe::ExpertMatrix::W1);
    let after = trainer.weights().unwrap().tensor(&name).unwrap();
    assert!(after.equal(&base.tensor(&name).unwrap()));
}
