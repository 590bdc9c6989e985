//! The background learner on a real node (RocksDB chain store, the seed model, text cut from
//! the repository's docs/): its held-out loss falls, chats complete while it runs, a restart
//! resumes it from its saved state, and a published candidate changes only its experts.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use blyan_api_types::LearningStatus;
use blyan_chain::{AuthorKey, ExpertName};
use blyan_node_core::{LEARNING_DIR_NAME, Learner, NoObserver, Node, NodeConfig, Payer, Services};
use blyan_primitives::Durability;

use crate::support::request;

/// Bound on each wait for the learner to reach a state (not a timing assertion: a slow
/// machine only waits longer).
const LEARNER_WAIT: Duration = Duration::from_secs(600);

/// The repository's docs/ cut into one file per paragraph, so the held-out split (by content,
/// per piece) has many pieces to choose from.
pub(crate) fn docs_corpus(dir: &Path) -> PathBuf {
    let docs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
    let corpus = dir.join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    let mut count = 0;
    let mut files: Vec<PathBuf> = std::fs::read_dir(&docs)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "md"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        for paragraph in text.split("\n\n").filter(|p| !p.trim().is_empty()) {
            std::fs::write(
                corpus.join(format!("{count:05}.txt")),
                format!("{paragraph}\n\n"),
            )
            .unwrap();
            count += 1;
        }
    }
    assert!(count > 100, "docs/ holds {count} paragraphs");
    corpus
}

fn experts(names: &[&str]) -> Vec<ExpertName> {
    names.iter().map(|name| name.parse().unwrap()).collect()
}

/// Learning on over `corpus`, evaluating every 4 steps.
fn learning_config(
    data_dir: &Path,
    corpus: &Path,
    edit: impl FnOnce(&mut NodeConfig),
) -> NodeConfig {
    let mut config = NodeConfig::defaults();
    config.data_dir = data_dir.to_owned();
    config.chain.durability = Durability::Unsynced;
    let learning = &mut config.learning;
    learning.enabled = true;
    learning.corpus = vec![corpus.to_owned()];
    learning.experts = experts(&["layer0.expert0", "layer0.expert1", "layer3.expert2"]);
    learning.eval_every = 4;
    learning.eval_tokens = 512;
    learning.held_out_per_mille = 100;
    learning.learning_rate = 3e-3;
    // Tests assert what happens, never how fast: a slow machine must not shrink the batch.
    learning.slice_ms = 200;
    edit(&mut config);
    config
}

/// A node on `config` serving its first model (`model.seed`: the shipped one by default).
async fn open_node(config: NodeConfig) -> Arc<Node> {
    let node = Node::open(config).await.expect("the node opens");
    node.ensure_seed_model(&AuthorKey::generate())
        .await
        .expect("the seed model is published");
    Arc::new(node.load_model().await.expect("the model loads"))
}

/// The node's services with `learner` running, stopped through the returned sender.
struct Running {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<blyan_node_core::Result<()>>,
}

fn run_learner(node: &Arc<Node>, learner: Learner) -> Running {
    let mut services = Services::new(Arc::clone(node));
    services.spawn(learner);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(services.run_until(async move {
        let _ = stopped.await;
    }));
    Running { stop, task }
}

impl Running {
    async fn stop(self) {
        let _ = self.stop.send(());
        self.task
            .await
            .expect("the services' task")
            .expect("the services stop cleanly");
    }
}

/// Waits until the node's learning status satisfies `done`, failing on state `failed`.
async fn wait_for(
    node: &Node,
    what: &str,
    done: impl Fn(&LearningStatus) -> bool,
) -> LearningStatus {
    let deadline = Instant::now() + LEARNER_WAIT;
    loop {
        let status = node.learning_status();
        assert_ne!(
            status.state, "failed",
            "the learner failed: {:?}",
            status.error
        );
        if done(&status) {
            return status;
        }
        assert!(
            Instant::now() < deadline,
            "the learner never reached: {what}: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_held_out_loss_falls_and_a_restart_resumes_the_saved_run() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = docs_corpus(dir.path());
    let data_dir = dir.path().join("node");
    let config = learning_config(&data_dir, &corpus, |config| {
        // No candidate: this test follows the loss and the state, not publishing.
        config.learning.min_improvement = 0.99;
    });

    let node = open_node(config.clone()).await;
    assert_eq!(node.learning_status().state, "not_started");
    let running = run_learner(&node, Learner::new());
    let status = wait_for(&node, "5 points on the curve", |status| {
        status.history.len() >= 5
    })
    .await;
    running.stop().await;
    let stopped = node.learning_status();
    assert_eq!(stopped.state, "stopped");
    let baseline = status.baseline.expect("the served weights were scored");
    assert_eq!(status.history[0].step, 0);
    assert_eq!(status.history[0].eval_loss, baseline.eval_loss);
    let last = status.history.last().unwrap();
    assert!(
        last.eval_loss < baseline.eval_loss,
        "held-out loss {} → {} over {} steps",
        baseline.eval_loss,
        last.eval_loss,
        last.step
    );
    assert!(
        status
            .history
            .windows(2)
            .all(|pair| pair[0].step < pair[1].step)
    );
    assert!(
        status.history[1..]
            .iter()
            .all(|point| point.train_loss.is_some())
    );
    assert_eq!(status.experts, config.learning.experts);
    assert!(status.tokens >= status.steps * u64::from(status.positions));
    // Layer 0's shares sum to 1 once it saw tokens.
    let layer0: f64 = status.expert_shares[0].iter().sum();
    assert!(
        (layer0 - 1.0).abs() < 1e-9,
        "layer 0 shares sum to {layer0}"
    );
    assert!(
        data_dir
            .join(LEARNING_DIR_NAME)
            .join("state")
            .join(blyan_moe::STATE_FILE)
            .is_file()
    );
    let saved_steps = stopped.steps;
    let saved_history = stopped.history.clone();
    drop(node);

    // A restart on the same data directory resumes where the run stopped.
    let node = open_node(config).await;
    let running = run_learner(&node, Learner::new());
    let resumed = wait_for(&node, "running again", |status| {
        status.state == "running" || status.state == "paused"
    })
    .await;
    assert!(
        resumed.steps >= saved_steps,
        "resumed at step {} after stopping at {saved_steps}",
        resumed.steps
    );
    assert_eq!(
        resumed.history[..saved_history.len()],
        saved_history[..],
        "the curve continues the saved one"
    );
    wait_for(&node, "a step past the saved ones", |status| {
        status.steps > saved_steps
    })
    .await;
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chats_complete_while_the_learner_runs() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = docs_corpus(dir.path());
    let config = learning_config(&dir.path().join("node"), &corpus, |config| {
        config.learning.min_improvement = 0.99;
    });
    let node = open_node(config).await;
    let running = run_learner(&node, Learner::new());
    wait_for(&node, "a first step", |status| status.steps > 0).await;

    let mut chats = Vec::new();
    for index in 0..4 {
        let node = Arc::clone(&node);
        chats.push(tokio::spawn(async move {
            let plan = node
                .plan_chat(
                    Payer::Free,
                    &request(&format!("question {index}"), Some(24)),
                )
                .expect("a valid chat");
            plan.start(Arc::clone(&node), Arc::new(NoObserver))
                .await
                .expect("the chat starts")
                .finish()
                .await
        }));
    }
    for chat in chats {
        let done = chat.await.unwrap().expect("the chat completes");
        assert!(done.usage.completion_tokens > 0);
    }
    assert_eq!(
        node.inference_gate().in_flight(),
        0,
        "every chat left the gate"
    );
    let after_chats = node.learning_status().steps;
    wait_for(&node, "learning again after the chats", |status| {
        status.steps > after_chats
    })
    .await;
    running.stop().await;
    assert_eq!(node.learning_status().state, "stopped");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_candidate_writes_only_its_experts_and_is_served() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = docs_corpus(dir.path());
    let config = learning_config(&dir.path().join("node"), &corpus, |config| {
        config.learning.experts = experts(&["layer1.expert4"]);
        config.learning.min_improvement = 0.0;
        config.learning.publish = true;
        // Proof of work: what is published is served as it lands.
        config.pol.mode = blyan_pol::PolMode::Pow;
    });
    let node = open_node(config).await;
    let chain = Arc::clone(node.chain().unwrap());
    let before = chain.experts().unwrap();
    let running = run_learner(&node, Learner::with_key(AuthorKey::generate()));
    let status = wait_for(&node, "a published candidate", |status| {
        status.last_candidate.as_ref().is_some_and(|c| c.published)
    })
    .await;
    running.stop().await;
    let candidate = status.last_candidate.unwrap();
    assert!(candidate.eval_loss_after <= candidate.eval_loss_before);
    assert!(Path::new(&candidate.dir).join("config.json").is_file());
    let after = chain.experts().unwrap();
    let trained: ExpertName = "layer1.expert4".parse().unwrap();
    for version in &after {
        let old = before
            .iter()
            .find(|old| old.expert == version.expert)
            .expect("the same experts");
        if version.expert == trained {
            assert!(version.version > old.version, "{trained} got a new version");
        } else {
            assert_eq!(version.hash, old.hash, "{} is unchanged", version.expert);
        }
    }
    // The node serves on, with the new version.
    let done = node
        .plan_chat(Payer::Free, &request("after publishing", Some(8)))
        .unwrap()
        .start(Arc::clone(&node), Arc::new(NoObserver))
        .await
        .unwrap()
        .finish()
        .await
        .expect("the node still chats");
    assert!(done.usage.completion_tokens > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chain_d_without_text_adds_nothing_beside_a_corpus_and_is_refused_alone() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = docs_corpus(dir.path());

    // Beside a corpus, an empty chain D is nothing to learn from yet: the learner runs.
    let config = learning_config(&dir.path().join("with-corpus"), &corpus, |config| {
        config.learning.dataset = true;
    });
    let node = open_node(config).await;
    let running = run_learner(&node, Learner::new());
    wait_for(&node, "a step", |status| status.steps > 0).await;
    running.stop().await;

    // Alone, it is the learner's error, naming chain D.
    let config = learning_config(&dir.path().join("alone"), &corpus, |config| {
        config.learning.dataset = true;
        config.learning.corpus.clear();
    });
    let node = open_node(config).await;
    let running = run_learner(&node, Learner::new());
    let deadline = Instant::now() + LEARNER_WAIT;
    let status = loop {
        let status = node.learning_status();
        if status.state == "failed" {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the learner never failed: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let error = status.error.unwrap_or_default();
    assert!(error.contains("chain D"), "{error}");
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_published_candidate_is_claimed_when_the_node_certifies() {
    let dir = tempfile::tempdir().unwrap();
    let corpus = docs_corpus(dir.path());
    let config = learning_config(&dir.path().join("node"), &corpus, |config| {
        config.learning.experts = experts(&["layer1.expert4"]);
        config.learning.min_improvement = 0.0;
        config.learning.publish = true;
        config.pol.eval.windows = 8;
        config.pol.eval.positions = 32;
    });
    let node = open_node(config).await;
    let chain = Arc::clone(node.chain().unwrap());
    let trained: ExpertName = "layer1.expert4".parse().unwrap();
    let served = chain.expert_current(trained).unwrap().unwrap();
    let key = AuthorKey::generate();
    crate::support::fund(&node, key.address(), "1000").await;
    let running = run_learner(&node, Learner::with_key(key.clone()));
    wait_for(&node, "a published candidate", |status| {
        status.last_candidate.as_ref().is_some_and(|c| c.published)
    })
    .await;
    running.stop().await;
    // Stored as a candidate, not served, and claimed by the learner's key with its bond locked.
    assert_eq!(chain.expert_current(trained).unwrap().unwrap(), served);
    let claims = blyan_pol::all_claims(&chain).unwrap();
    let claim = claims.first().expect("the learner claimed its candidate");
    assert_eq!(claim.block.author, key.address());
    assert_eq!(claim.claim.candidates.len(), 1);
    let header = chain.header(&claim.claim.candidates[0]).unwrap().unwrap();
    assert_eq!(header.meta.expert, Some(trained));
    assert!(chain.is_candidate(&claim.claim.candidates[0]).unwrap());
    let (_, held) = crate::support::balance(&node, key.address()).await;
    assert_eq!(held, "100".parse().unwrap());
}
