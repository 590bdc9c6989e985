//! Proof-of-Learning end to end on one node: real chain store with its gate, real ledger, the
//! node's own PoL pass, and three validators run as tasks (the same pass, each with its own key).
//! Honest candidates are certified, served and paid; every refusal is typed and serves nothing.

use std::path::PathBuf;
use std::sync::Arc;

use blyan_chain::{AuthorKey, BlockHash, BlockKind, ChainId, ChainStore, encode_block};
use blyan_ledger::{Amount, Ledger as _};
use blyan_moe::{
    ChainSource, ExpertName, ExpertQuantization, PublishEvent, PublishOptions, TextDocument,
    WeightSource, publish_model,
};
use blyan_node_core::{Error, Node, PolContext, SeedChoice, pol_tick};
use blyan_pol::{
    Beacon, Certificate, Claim, EvalPool, HiddenEval, Losses, ModelBlocks, Outcome, PolRecord,
    QaBook, QaCommit, QaKeeper, QaReveal, QaStatus, StoreBlocks, ValidatorSet, ValidatorStake,
    Verdict, Vote, build_claim, qa_commitment, qa_epoch, record_block, reveal_opens, scan_records,
    validator_set_message,
};
use blyan_primitives::Address;

use crate::fine_tune::{docs_paragraphs, fine_tune, paragraphs};
use crate::support::{TestNode, balance, fund, node_with};

/// A node serving the untrained seed model whose validators are `validators` (stake 1 each),
/// evaluating `windows` windows of 64 tokens.
pub(crate) async fn pol_node(
    validators: &[Address],
    edit: impl FnOnce(&mut blyan_node_core::NodeConfig),
) -> TestNode {
    let validators = validators.to_vec();
    node_with(
        move |config| {
            config.model.seed = SeedChoice::Random;
            config.pol.validators = validators
                .iter()
                .map(|address| blyan_pol::ValidatorStake {
                    address: *address,
                    stake: 1,
                })
                .collect();
            config.pol.eval.windows = 16;
            config.pol.eval.positions = 64;
            config.pol.eval.threads = 1;
            edit(config);
        },
        true,
    )
    .await
}

/// What validator `key` runs: the node's rules and pool, its own key, and hidden QA sets kept by
/// `qa` when given.
fn validator_with(node: &Node, key: &AuthorKey, qa: Option<QaKeeper>) -> Arc<PolContext> {
    let context = node.pol().expect("the node certifies");
    Arc::new(PolContext {
        params: context.params.clone(),
        pool: context.pool.clone(),
        key: key.clone(),
        pow_bits: 0,
        threads: 1,
        qa,
    })
}

/// Validators `keys`, each keeping hidden QA sets of 8 KiB drawn from `documents`, stored in its
/// own directory under `root`.
fn qa_validators(
    node: &Node,
    keys: &[AuthorKey],
    documents: &[TextDocument],
    root: &std::path::Path,
) -> Vec<Arc<PolContext>> {
    keys.iter()
        .map(|key| {
            let dir = root.join(key.address().to_string());
            let keeper = QaKeeper::new(documents, dir, 8 << 10).unwrap();
            validator_with(node, key, Some(keeper))
        })
        .collect()
}

/// One pass of each of `validators`, then of the node itself (which certifies and settles).
async fn run_contexts(node: &TestNode, validators: &[Arc<PolContext>]) {
    for context in validators {
        pol_tick(&node.node, context, &mut Default::default())
            .await
            .expect("a validator's pass");
    }
    let own = Arc::clone(node.node.pol().unwrap());
    pol_tick(&node.node, &own, &mut Default::default())
        .await
        .expect("the node's pass");
}

/// One pass of each validator (no hidden QA sets), then of the node itself.
pub(crate) async fn run_validators(node: &TestNode, validators: &[AuthorKey]) {
    let contexts: Vec<_> = validators
        .iter()
        .map(|key| validator_with(&node.node, key, None))
        .collect();
    run_contexts(node, &contexts).await;
}

pub(crate) fn chain(node: &Node) -> Arc<ChainStore> {
    Arc::clone(node.chain().unwrap())
}

/// Trains `experts` of the served model on `documents` and writes the new versions (candidates).
pub(crate) fn train_candidate(
    node: &Node,
    author: &AuthorKey,
    experts: &[&str],
    documents: &[TextDocument],
    steps: u64,
    learning_rate: f64,
) -> Vec<BlockHash> {
    let experts = experts.iter().map(|name| name.parse().unwrap()).collect();
    fine_tune(
        &chain(node),
        author,
        experts,
        documents,
        steps,
        learning_rate,
    )
}

/// Publishes `weights` over the served model into the node's chain (only changed experts are
/// written); the blocks written.
fn publish_weights(node: &Node, author: &AuthorKey, weights: &dyn WeightSource) -> Vec<BlockHash> {
    blyan_pol::publish_over_served(&chain(node), author, weights, ExpertQuantization::None).unwrap()
}

/// A new version of `expert` with small noise (below any threshold), written by `author`.
fn noisy_version(node: &Node, author: &AuthorKey, expert: &str) -> Vec<BlockHash> {
    let source = ChainSource::open(chain(node)).unwrap();
    publish_weights(
        node,
        author,
        &NoisyExpert {
            base: &source,
            expert: expert.parse().unwrap(),
            noise: 1e-3,
        },
    )
}

/// The claim of `candidates` by `author`, its losses measured as an author does (public draw of
/// `pool`), or `claimed` when given.
pub(crate) fn claim_record(
    node: &Node,
    candidates: Vec<BlockHash>,
    pool: &EvalPool,
    claimed: Option<Losses>,
) -> Claim {
    let store = chain(node);
    let base = ModelBlocks::served(&store).unwrap();
    let spec = &node.pol().unwrap().params.eval;
    let commitment = blake3::hash(b"training text").to_hex().to_string();
    let mut claim = build_claim(
        &StoreBlocks(&store),
        &base,
        candidates,
        pool,
        spec,
        commitment,
    )
    .unwrap();
    if let Some(losses) = claimed {
        claim.claimed = losses;
    }
    claim
}

/// Submits `record` signed by `key` on chain D's tip, as a block from the network would come.
pub(crate) async fn submit(
    node: &Node,
    key: &AuthorKey,
    record: &PolRecord,
) -> Result<BlockHash, Error> {
    submit_with_work(node, key, record, 0).await
}

/// [`submit`] with `bits` of proof of work.
async fn submit_with_work(
    node: &Node,
    key: &AuthorKey,
    record: &PolRecord,
    bits: u32,
) -> Result<BlockHash, Error> {
    let store = chain(node);
    let parent = store.tip(ChainId::Dataset);
    let mut not_before = store.header(&parent.hash).unwrap().unwrap().timestamp_ms;
    for dependency in record.required_dependencies() {
        if let Some(header) = store.header(&dependency).unwrap() {
            not_before = not_before.max(header.timestamp_ms);
        }
    }
    let (header, payload) = record_block(&parent, not_before, record, key, bits);
    node.submit_block(encode_block(&header, &payload))
        .await
        .map(|(hash, _)| hash)
}

/// Submits `vote` signed by `key`.
async fn vote(node: &Node, key: &AuthorKey, vote: Vote) -> Result<BlockHash, Error> {
    submit(node, key, &PolRecord::Vote(vote)).await
}

fn pol_code(error: &Error) -> &'static str {
    match error {
        Error::BlockRefused(blyan_chain::Error::PolRejected { code, .. }) => code,
        other => panic!("expected a Proof-of-Learning refusal, got {other}"),
    }
}

fn served_expert(node: &Node, expert: &str) -> BlockHash {
    chain(node)
        .expert_current(expert.parse().unwrap())
        .unwrap()
        .unwrap()
        .hash
}

pub(crate) fn keys(count: usize) -> Vec<AuthorKey> {
    (0..count).map(|_| AuthorKey::generate()).collect()
}

pub(crate) fn addresses(keys: &[AuthorKey]) -> Vec<Address> {
    keys.iter().map(AuthorKey::address).collect()
}

pub(crate) fn state(node: &Node, claim: BlockHash) -> blyan_pol::ClaimState {
    blyan_pol::ClaimState::read(&chain(node), claim)
        .unwrap()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_honest_fine_tune_is_certified_by_three_validators_served_and_paid() {
    let validators = keys(3);
    let node = pol_node(&addresses(&validators), |_| {}).await;
    // Every fourth paragraph of the docs is the validators' hidden QA text; the author trains
    // on the others.
    let (hidden, training): (Vec<_>, Vec<_>) = docs_paragraphs()
        .into_iter()
        .enumerate()
        .partition(|(index, _)| index % 4 == 0);
    let hidden: Vec<TextDocument> = hidden.into_iter().map(|(_, document)| document).collect();
    let training: Vec<TextDocument> = training.into_iter().map(|(_, document)| document).collect();
    let qa_root = tempfile::tempdir().unwrap();
    let contexts = qa_validators(&node.node, &validators, &hidden, qa_root.path());
    let author = AuthorKey::generate();
    fund(&node.node, author.address(), "1000").await;
    let (before, _) = balance(&node.node, author.address()).await;

    let experts = [
        "layer0.expert0",
        "layer1.expert0",
        "layer2.expert0",
        "layer3.expert0",
    ];
    let old = served_expert(&node.node, "layer0.expert0");
    let candidates = train_candidate(&node.node, &author, &experts, &training, 30, 1e-2);
    assert_eq!(
        candidates.len(),
        experts.len(),
        "one new version per trained expert"
    );
    // Stored, not served.
    assert_eq!(served_expert(&node.node, "layer0.expert0"), old);
    for candidate in &candidates {
        assert!(chain(&node.node).is_candidate(candidate).unwrap());
    }
    let pool = node.node.pol().unwrap().pool.clone();
    let claim = claim_record(&node.node, candidates.clone(), &pool, None);
    assert!(
        claim.claimed.delta_bps() >= 100,
        "the author measured {:?}",
        claim.claimed
    );
    let claim_hash = submit(&node.node, &author, &PolRecord::Claim(claim))
        .await
        .unwrap();
    let bond: Amount = "100".parse().unwrap();
    let (locked, held) = balance(&node.node, author.address()).await;
    assert_eq!(
        (locked, held),
        (before.checked_sub(bond).unwrap(), bond),
        "the bond is locked"
    );

    run_contexts(&node, &contexts).await;
    let decided = state(&node.node, claim_hash);
    assert_eq!(decided.votes.len(), 3);
    assert!(
        decided
            .votes
            .iter()
            .all(|(_, vote)| vote.verdict == Verdict::Accept),
        "{:?}",
        decided.votes
    );
    // Each validator committed its hidden set for the epoch and measured the candidate on it:
    // text the author never saw improves too.
    let book = QaBook::from_records(&scan_records(&chain(&node.node), 1).unwrap());
    for (block, vote) in &decided.votes {
        let hidden = vote.hidden.expect("measured on the hidden set");
        let commit = book.commit(&hidden.commit).unwrap();
        assert_eq!(commit.author, block.author);
        assert!(hidden.losses.delta_bps() >= 50, "{hidden:?}");
    }
    // Same build, same thread count: the three validators measured the same bits.
    let losses: Vec<_> = decided.votes.iter().map(|(_, vote)| vote.losses).collect();
    assert!(
        losses.windows(2).all(|pair| pair[0] == pair[1]),
        "{losses:?}"
    );
    let (_, certificate) = decided.certificate.clone().expect("certified");
    assert_eq!(certificate.outcome, Outcome::Accepted);

    // Served: the expert's current version is the candidate, and the node serves it.
    assert_eq!(served_expert(&node.node, "layer0.expert0"), candidates[0]);
    assert!(!chain(&node.node).is_candidate(&candidates[0]).unwrap());
    let generator = node.node.generator().unwrap();
    assert!(generator.info().description.contains("UNTRAINED") || !generator.info().untrained);

    // Paid exactly: bond back, plus 20 000 BLY per 1 % of the certified improvement.
    let delta = losses[0].delta_bps();
    let reward = node
        .node
        .ledger()
        .unwrap()
        .tokenomics()
        .learning_reward(u32::try_from(delta).unwrap())
        .unwrap();
    let (after, held) = balance(&node.node, author.address()).await;
    assert_eq!(held, Amount::ZERO);
    assert_eq!(after, before.checked_add(reward).unwrap());
    // Each validator got its validation reward, once.
    for key in &validators {
        let (paid, _) = balance(&node.node, key.address()).await;
        assert_eq!(
            paid,
            node.node
                .ledger()
                .unwrap()
                .tokenomics()
                .validation_reward(16)
                .unwrap()
        );
    }
    // A second pass (a restart's replay) pays nothing twice.
    run_contexts(&node, &contexts).await;
    assert_eq!(balance(&node.node, author.address()).await.0, after);

    let status = node.node.pol_status().await.unwrap();
    let shown = &status.claims[0];
    assert_eq!(shown.status, "accepted");
    let payments = &shown.certificate.as_ref().unwrap().payments;
    assert_eq!(
        payments
            .iter()
            .filter(|payment| payment.kind == "validation")
            .count(),
        3
    );
    assert_eq!(payments[0].amount, reward.to_string());
    let hidden_shown = shown.votes[0].hidden.as_ref().expect("shown");
    assert_eq!(hidden_shown.status, "open");
    assert_eq!(status.qa.len(), 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fresh_keys_upload_is_a_candidate_and_changes_nothing_served() {
    let node = pol_node(&[], |_| {}).await;
    let stranger = AuthorKey::generate();
    let before = served_expert(&node.node, "layer0.expert0");
    let meta_before = node.node.generator().unwrap().info().meta_block;
    // A whole new model (new description: a new meta block) from a fresh key.
    let store = chain(&node.node);
    let source = ChainSource::open(Arc::clone(&store)).unwrap();
    let random = blyan_moe::RandomInit::new(source.config(), 99).unwrap();
    let mut written = Vec::new();
    publish_model(
        &*store,
        &stranger,
        source.config(),
        source.files(),
        &random,
        &PublishOptions {
            expert_quantization: blyan_moe::ExpertQuantization::None,
            untrained: false,
            description: "replacement".into(),
        },
        &mut |event| {
            if let PublishEvent::Written { block, .. } = event {
                written.push(*block);
            }
        },
    )
    .unwrap();
    node.node.reload_model().await;
    assert_eq!(served_expert(&node.node, "layer0.expert0"), before);
    assert_eq!(
        node.node.generator().unwrap().info().meta_block,
        meta_before
    );
    assert_eq!(
        blyan_moe::current_model(&store).unwrap().0,
        meta_before.unwrap()
    );
    let candidates = written
        .iter()
        .filter(|block| {
            let kind = store.header(block).unwrap().unwrap().kind;
            kind == BlockKind::Expert || kind == BlockKind::Meta
        })
        .count();
    assert!(candidates > 1);
    assert!(written.iter().all(|block| {
        let header = store.header(block).unwrap().unwrap();
        !matches!(header.kind, BlockKind::Expert | BlockKind::Meta)
            || store.is_candidate(block).unwrap()
    }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_noise_and_unpaid_bonds_are_refused_and_nothing_is_served() {
    let validators = keys(3);
    let node = pol_node(&addresses(&validators), |_| {}).await;
    let author = AuthorKey::generate();
    fund(&node.node, author.address(), "1000").await;
    let pool = node.node.pol().unwrap().pool.clone();
    let store = chain(&node.node);
    let served = served_expert(&node.node, "layer1.expert2");

    // A copy of the current weights: the same payload under a new version.
    let source = ChainSource::open(Arc::clone(&store)).unwrap();
    let copy_blocks = vec![copy_of_served(&node.node, &author, "layer1.expert2")];
    // Claiming a big improvement does not make it one.
    let copy_claim = claim_record(
        &node.node,
        copy_blocks.clone(),
        &pool,
        Some(Losses {
            base: 5_000_000,
            candidate: 4_000_000,
        }),
    );
    let copy_hash = submit(&node.node, &author, &PolRecord::Claim(copy_claim))
        .await
        .unwrap();
    run_validators(&node, &validators).await;
    let decided = state(&node.node, copy_hash);
    assert!(
        decided
            .votes
            .iter()
            .all(|(_, vote)| vote.verdict == Verdict::NotReproduced),
        "{:?}",
        decided.votes
    );
    assert_eq!(
        decided.certificate.as_ref().unwrap().1.outcome,
        Outcome::Rejected
    );
    assert_eq!(served_expert(&node.node, "layer1.expert2"), served);
    assert!(store.is_candidate(&copy_blocks[0]).unwrap());
    // The bond burned.
    let (available, held) = balance(&node.node, author.address()).await;
    assert_eq!((available, held), ("900".parse().unwrap(), Amount::ZERO));

    // The copy plus small noise, claimed honestly: below the threshold.
    let noisy = NoisyExpert {
        base: &source,
        expert: "layer1.expert2".parse().unwrap(),
        noise: 1e-3,
    };
    let noisy_blocks = publish_weights(&node.node, &author, &noisy);
    let noisy_claim = claim_record(&node.node, noisy_blocks.clone(), &pool, None);
    let noisy_hash = submit(&node.node, &author, &PolRecord::Claim(noisy_claim))
        .await
        .unwrap();
    run_validators(&node, &validators).await;
    let decided = state(&node.node, noisy_hash);
    assert!(
        decided
            .votes
            .iter()
            .all(|(_, vote)| vote.verdict == Verdict::BelowThreshold),
        "{:?}",
        decided.votes
    );
    assert_eq!(
        decided.certificate.as_ref().unwrap().1.outcome,
        Outcome::Rejected
    );
    assert_eq!(served_expert(&node.node, "layer1.expert2"), served);

    // An author who cannot pay the bond: refused, nothing stored.
    let poor = AuthorKey::generate();
    let poor_blocks = noisy_version(&node.node, &poor, "layer2.expert2");
    let poor_claim = claim_record(&node.node, poor_blocks, &pool, None);
    let tip = store.tip(ChainId::Dataset);
    let error = submit(&node.node, &poor, &PolRecord::Claim(poor_claim))
        .await
        .unwrap_err();
    assert!(matches!(error, Error::BondUnpaid { .. }), "{error}");
    assert_eq!(store.tip(ChainId::Dataset), tip);

    // Someone else's candidates cannot be claimed (their author locks the bond).
    let theirs = noisy_version(&node.node, &author, "layer3.expert3");
    fund(&node.node, poor.address(), "500").await;
    let stolen = claim_record(&node.node, theirs, &pool, None);
    let error = submit(&node.node, &poor, &PolRecord::Claim(stolen))
        .await
        .unwrap_err();
    assert_eq!(pol_code(&error), "not_the_author");
    // Its bond came back.
    assert_eq!(
        balance(&node.node, poor.address()).await,
        ("500".parse().unwrap(), Amount::ZERO)
    );
}

/// A new version of `expert` whose payload is the served one's, byte for byte.
fn copy_of_served(node: &Node, author: &AuthorKey, expert: &str) -> BlockHash {
    let store = chain(node);
    let current = store
        .expert_current(expert.parse().unwrap())
        .unwrap()
        .unwrap();
    let served = store.header(&current.hash).unwrap().unwrap();
    let payload = store.payload(&current.hash).unwrap().unwrap();
    let parent = store.tip(ChainId::Parameters);
    let stamp = store.header(&parent.hash).unwrap().unwrap().timestamp_ms + 1;
    let mut header =
        blyan_chain::BlockHeader::new_child(&parent, BlockKind::Expert, payload.as_ref(), stamp);
    header.meta = served.meta.clone();
    header.meta.version = current.version + 1;
    header.sign(author);
    store.append(&header, payload.as_ref()).unwrap()
}

/// The served model with one expert's matrices plus `noise` × a fixed random direction.
struct NoisyExpert<'a> {
    base: &'a ChainSource,
    expert: ExpertName,
    noise: f64,
}

impl WeightSource for NoisyExpert<'_> {
    fn tensor(&self, name: &str) -> blyan_moe::Result<tch::Tensor> {
        let tensor = self.base.tensor(name)?;
        let ours =
            blyan_moe::parse_expert_tensor_name(name).is_some_and(|(id, _)| id == self.expert);
        if !ours {
            // A copy of what is stored.
            return Ok(tensor.copy());
        }
        tch::manual_seed(7);
        Ok(&tensor + tch::Tensor::randn_like(&tensor) * self.noise)
    }

    fn describe(&self) -> String {
        "served weights with noise".into()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn votes_by_strangers_replayed_certificates_and_double_votes_are_refused_or_slashed() {
    let validators = keys(3);
    let node = pol_node(&addresses(&validators), |_| {}).await;
    let author = AuthorKey::generate();
    fund(&node.node, author.address(), "1000").await;
    let pool = node.node.pol().unwrap().pool.clone();
    let store = chain(&node.node);
    let blocks = noisy_version(&node.node, &author, "layer0.expert5");
    let claim = claim_record(&node.node, blocks.clone(), &pool, None);
    let claim_hash = submit(&node.node, &author, &PolRecord::Claim(claim))
        .await
        .unwrap();

    // A vote before any beacon: not seeded.
    let params = node.node.pol().unwrap().params.clone();
    let forged = |beacon: BlockHash, verdict: Verdict, candidate: u64| Vote {
        claim: claim_hash,
        beacon,
        eval: params.eval.clone(),
        losses: Losses {
            base: 5_000_000,
            candidate,
        },
        verdict,
        detail: String::new(),
        hidden: None,
    };
    let not_a_beacon = store.block_hashes_at(ChainId::Dataset, 0).unwrap()[0];
    let error = vote(
        &node.node,
        &validators[0],
        forged(not_a_beacon, Verdict::Accept, 4_000_000),
    )
    .await
    .unwrap_err();
    assert_eq!(pol_code(&error), "not_seeded");
    // A beacon by a stranger: not a validator.
    let stranger = AuthorKey::generate();
    let beacon = PolRecord::Beacon(blyan_pol::Beacon {
        claims: vec![claim_hash],
        randomness: "00".repeat(32),
    });
    assert_eq!(
        pol_code(&submit(&node.node, &stranger, &beacon).await.unwrap_err()),
        "not_a_validator"
    );
    let beacon_hash = submit(&node.node, &validators[0], &beacon).await.unwrap();
    let accept = forged(beacon_hash, Verdict::Accept, 4_000_000);
    // A vote by a stranger.
    let error = vote(&node.node, &stranger, accept.clone())
        .await
        .unwrap_err();
    assert_eq!(pol_code(&error), "not_a_validator");

    // Validator 0 accepts, then votes again differently: admitted as evidence, then slashed.
    let first = vote(&node.node, &validators[0], accept.clone())
        .await
        .unwrap();
    let same = vote(&node.node, &validators[0], accept.clone())
        .await
        .unwrap_err();
    assert_eq!(pol_code(&same), "duplicate_vote");
    let second = vote(
        &node.node,
        &validators[0],
        forged(beacon_hash, Verdict::BelowThreshold, 5_000_000),
    )
    .await
    .unwrap();
    // Two forged accepts of validators 1 and 2 plus validator 0's would be > 2/3, but validator 0
    // equivocated: its votes count for nothing.
    let v1 = vote(&node.node, &validators[1], accept.clone())
        .await
        .unwrap();
    let certificate = |votes: Vec<BlockHash>| {
        PolRecord::Certificate(Certificate {
            claim: claim_hash,
            outcome: Outcome::Accepted,
            votes,
        })
    };
    let error = submit(&node.node, &stranger, &certificate(vec![first, v1]))
        .await
        .unwrap_err();
    assert_eq!(pol_code(&error), "equivocation");
    let error = submit(&node.node, &stranger, &certificate(vec![v1]))
        .await
        .unwrap_err();
    assert_eq!(pol_code(&error), "no_quorum");

    // The node records the evidence; validator 0's stake is gone.
    let own = Arc::clone(node.node.pol().unwrap());
    let tick = pol_tick(&node.node, &own, &mut Default::default())
        .await
        .unwrap();
    assert_eq!(tick.slashes, 1);
    let status = node.node.pol_status().await.unwrap();
    let slashed: Vec<_> = status
        .validators
        .iter()
        .filter(|validator| validator.slashed)
        .collect();
    assert_eq!(slashed.len(), 1);
    assert_eq!(slashed[0].address, validators[0].address().to_string());
    let error = vote(&node.node, &validators[0], accept.clone())
        .await
        .unwrap_err();
    assert_eq!(pol_code(&error), "validator_slashed");
    let _ = second;

    // A certificate of another claim's votes, replayed for this one: foreign votes.
    let other_blocks = noisy_version(&node.node, &author, "layer2.expert6");
    let other = claim_record(&node.node, other_blocks, &pool, None);
    let other_hash = submit(&node.node, &author, &PolRecord::Claim(other))
        .await
        .unwrap();
    let replayed = PolRecord::Certificate(Certificate {
        claim: other_hash,
        outcome: Outcome::Accepted,
        votes: vec![v1],
    });
    let error = submit(&node.node, &stranger, &replayed).await.unwrap_err();
    assert_eq!(pol_code(&error), "foreign_vote");
    assert_ne!(served_expert(&node.node, "layer0.expert5"), blocks[0]);
    assert!(store.is_candidate(&blocks[0]).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_candidate_overfit_on_the_public_pool_is_refused_by_the_hidden_qa_sets() {
    let validators = keys(3);
    let dir = tempfile::tempdir().unwrap();
    // The public pool: a few paragraphs anyone can read (and train on).
    let public = dir.path().join("public.txt");
    let text: String = docs_paragraphs()
        .iter()
        .take(40)
        .map(|paragraph| paragraph.text.as_str())
        .collect();
    std::fs::write(&public, &text).unwrap();
    let node = pol_node(&addresses(&validators), |config| {
        // The trained default model: overfitting it on a few paragraphs hurts elsewhere.
        config.model.seed = SeedChoice::Shipped;
        config.pol.eval.corpus = vec![public.clone()];
    })
    .await;
    // The validators' hidden text: the shipped held-out pool, which no author sees.
    let held_out =
        blyan_moe::read_corpus(&[PathBuf::from(blyan_moe::SHIPPED_MODEL_DIR).join("eval")])
            .unwrap()
            .documents;
    let qa_root = tempfile::tempdir().unwrap();
    let contexts = qa_validators(&node.node, &validators, &held_out, qa_root.path());
    let author = AuthorKey::generate();
    fund(&node.node, author.address(), "1000").await;
    let documents = paragraphs(vec![TextDocument {
        name: "public".into(),
        text: text.clone(),
    }]);
    let experts: Vec<String> = (0..4)
        .flat_map(|layer| (0..8).map(move |expert| format!("layer{layer}.expert{expert}")))
        .collect();
    let experts: Vec<&str> = experts.iter().map(String::as_str).collect();
    let candidates = train_candidate(&node.node, &author, &experts, &documents, 40, 3e-3);
    let public_pool = node.node.pol().unwrap().pool.clone();
    let claim = claim_record(&node.node, candidates.clone(), &public_pool, None);
    assert!(
        claim.claimed.delta_bps() >= 100,
        "overfitting shows on the public text: {:?}",
        claim.claimed
    );
    let claim_hash = submit(&node.node, &author, &PolRecord::Claim(claim))
        .await
        .unwrap();
    run_contexts(&node, &contexts).await;
    let decided = state(&node.node, claim_hash);
    // Two refusals (more than 1/3 of the stake) decide before the third validator's turn.
    assert!(decided.votes.len() >= 2, "{:?}", decided.votes);
    for (_, vote) in &decided.votes {
        // The public pool's drawn batch reproduces the improvement; the hidden set does not.
        assert!(vote.losses.delta_bps() >= 100, "{vote:?}");
        let hidden = vote.hidden.expect("measured on the hidden set");
        assert!(hidden.losses.delta_bps() < 50, "{hidden:?}");
        assert_eq!(vote.verdict, Verdict::Overfit, "{vote:?}");
    }
    assert_eq!(
        decided.certificate.as_ref().unwrap().1.outcome,
        Outcome::Rejected
    );
    assert_ne!(served_expert(&node.node, "layer0.expert0"), candidates[0]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hidden_qa_sets_are_revealed_after_their_epoch_and_a_false_reveal_voids_the_epochs_votes() {
    const EPOCH_MS: u64 = 1_000;
    let validators = keys(3);
    let node = pol_node(&addresses(&validators), |config| {
        config.pol.qa.epoch_ms = EPOCH_MS;
    })
    .await;
    let author = AuthorKey::generate();
    fund(&node.node, author.address(), "1000").await;
    let pool = node.node.pol().unwrap().pool.clone();
    let params = node.node.pol().unwrap().params.clone();
    let blocks = noisy_version(&node.node, &author, "layer0.expert5");
    let claim = claim_record(&node.node, blocks.clone(), &pool, None);
    let claim_hash = submit(&node.node, &author, &PolRecord::Claim(claim))
        .await
        .unwrap();
    let beacon = submit(
        &node.node,
        &validators[0],
        &PolRecord::Beacon(Beacon {
            claims: vec![claim_hash],
            randomness: "ab".repeat(32),
        }),
    )
    .await
    .unwrap();

    // Validator 0 commits a set for the next epoch (so it cannot be revealed for a while).
    let set = vec!["the hidden text of validator zero\n".to_owned()];
    let next = qa_epoch(blyan_pol::now_ms(), EPOCH_MS) + 1;
    let commit = |epoch: u64| {
        PolRecord::QaCommit(QaCommit {
            epoch,
            commitment: qa_commitment(&set),
        })
    };
    let committed = submit(&node.node, &validators[0], &commit(next))
        .await
        .unwrap();
    let error = submit(&node.node, &validators[0], &commit(next))
        .await
        .unwrap_err();
    assert_eq!(pol_code(&error), "qa_already_committed");
    let error = submit(&node.node, &validators[0], &commit(next + 5))
        .await
        .unwrap_err();
    assert_eq!(pol_code(&error), "qa_wrong_epoch");
    let error = submit(&node.node, &AuthorKey::generate(), &commit(next))
        .await
        .unwrap_err();
    assert_eq!(pol_code(&error), "not_a_validator");
    let reveal = |documents: Vec<String>| {
        PolRecord::QaReveal(QaReveal {
            commit: committed,
            documents,
        })
    };
    let error = submit(&node.node, &validators[0], &reveal(set.clone()))
        .await
        .unwrap_err();
    assert_eq!(pol_code(&error), "qa_epoch_open");

    // Three accepting votes; validator 0's names its hidden set, validator 1 cannot name it.
    let accept = |hidden: Option<BlockHash>| Vote {
        claim: claim_hash,
        beacon,
        eval: params.eval.clone(),
        losses: Losses {
            base: 5_000_000,
            candidate: 4_000_000,
        },
        verdict: Verdict::Accept,
        detail: String::new(),
        hidden: hidden.map(|commit| HiddenEval {
            commit,
            losses: Losses {
                base: 5_000_000,
                candidate: 4_500_000,
            },
        }),
    };
    let error = vote(&node.node, &validators[1], accept(Some(committed)))
        .await
        .unwrap_err();
    assert_eq!(pol_code(&error), "qa_not_the_author");
    let v0 = vote(&node.node, &validators[0], accept(Some(committed)))
        .await
        .unwrap();
    let v1 = vote(&node.node, &validators[1], accept(None))
        .await
        .unwrap();
    let v2 = vote(&node.node, &validators[2], accept(None))
        .await
        .unwrap();

    // Once the epoch closed, validator 0 reveals text that is not what it committed: admitted,
    // as the evidence that voids its vote.
    let opens = reveal_opens(next, EPOCH_MS);
    tokio::time::sleep(std::time::Duration::from_millis(
        opens.saturating_sub(blyan_pol::now_ms()) + 20,
    ))
    .await;
    let error = submit(&node.node, &validators[1], &reveal(set.clone()))
        .await
        .unwrap_err();
    assert_eq!(pol_code(&error), "qa_not_the_author");
    let false_reveal = submit(
        &node.node,
        &validators[0],
        &reveal(vec!["other text\n".to_owned()]),
    )
    .await
    .unwrap();
    let error = submit(&node.node, &validators[0], &reveal(set.clone()))
        .await
        .unwrap_err();
    assert_eq!(pol_code(&error), "qa_already_revealed");
    let book = QaBook::from_records(&scan_records(&chain(&node.node), 1).unwrap());
    let state_now = book.commit(&committed).unwrap();
    assert_eq!(state_now.reveal.as_ref().unwrap().block, false_reveal);
    assert_eq!(
        state_now.status(blyan_pol::now_ms(), EPOCH_MS),
        QaStatus::Mismatch
    );
    // A set once revealed cannot be evaluated on.
    let error = vote(&node.node, &validators[0], accept(Some(committed)))
        .await
        .unwrap_err();
    assert_eq!(pol_code(&error), "qa_revealed");
    // Validator 0's vote counts for nothing: three accepting votes no longer certify.
    for (votes, code) in [
        (vec![v0, v1, v2], "qa_invalid"),
        (vec![v1, v2], "no_quorum"),
    ] {
        let certificate = PolRecord::Certificate(Certificate {
            claim: claim_hash,
            outcome: Outcome::Accepted,
            votes,
        });
        let error = submit(&node.node, &author, &certificate).await.unwrap_err();
        assert_eq!(pol_code(&error), code);
    }
    // Nor does the node's own pass certify it.
    let own = Arc::clone(node.node.pol().unwrap());
    pol_tick(&node.node, &own, &mut Default::default())
        .await
        .unwrap();
    assert!(state(&node.node, claim_hash).certificate.is_none());
    let status = node.node.pol_status().await.unwrap();
    let shown = status
        .claims
        .iter()
        .find(|claim| claim.claim == claim_hash)
        .unwrap();
    let voided = shown.votes.iter().find(|vote| vote.block == v0).unwrap();
    assert_eq!(voided.hidden.as_ref().unwrap().status, "mismatch");
    assert_eq!(status.qa[0].status, "mismatch");

    // An honest validator's own pass: commits a set, and once its epoch closed reveals exactly
    // the committed text, then commits a fresh set that shares nothing with it.
    let qa_root = tempfile::tempdir().unwrap();
    let context = &qa_validators(
        &node.node,
        &validators[2..],
        &docs_paragraphs(),
        qa_root.path(),
    )[0];
    let first = pol_tick(&node.node, context, &mut Default::default())
        .await
        .unwrap();
    assert_eq!(first.qa_records, 1, "the epoch's commit");
    let me = validators[2].address();
    let book = QaBook::from_records(&scan_records(&chain(&node.node), 1).unwrap());
    let mine = book
        .commits()
        .find(|state| state.author == me)
        .unwrap()
        .clone();
    tokio::time::sleep(std::time::Duration::from_millis(
        reveal_opens(mine.commit.epoch, EPOCH_MS).saturating_sub(blyan_pol::now_ms()) + 20,
    ))
    .await;
    let second = pol_tick(&node.node, context, &mut Default::default())
        .await
        .unwrap();
    assert_eq!(
        second.qa_records, 2,
        "the reveal and the next epoch's commit"
    );
    let book = QaBook::from_records(&scan_records(&chain(&node.node), 1).unwrap());
    let revealed = book.commit(&mine.block).unwrap();
    assert_eq!(
        revealed.status(blyan_pol::now_ms(), EPOCH_MS),
        QaStatus::Revealed
    );
    let keeper = context.qa.as_ref().unwrap();
    let old = keeper.stored(mine.commit.epoch).unwrap().unwrap();
    let newest = book
        .commits()
        .filter(|state| state.author == me)
        .map(|state| state.commit.epoch)
        .max()
        .unwrap();
    assert!(newest > mine.commit.epoch);
    let fresh = keeper.stored(newest).unwrap().unwrap();
    assert!(old.documents.iter().all(|piece| book.is_revealed(piece)));
    assert!(fresh.documents.iter().all(|piece| !book.is_revealed(piece)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_meta_block_that_does_not_decode_is_skipped_and_the_node_restarts() {
    // In `pow` mode every block is served as it lands: the worst case for a bad meta block.
    let node = pol_node(&[], |config| config.pol.mode = blyan_pol::PolMode::Pow).await;
    let config = node.node.config().clone();
    let served = node.node.generator().unwrap().info().meta_block;
    let key = AuthorKey::generate();
    let store = chain(&node.node);
    for payload in [
        br#"{"format":"blyan-model/1","architecture":"#.to_vec(),
        br#"{"format":"blyan-model/1","architecture":{},"untrained":false}"#.to_vec(),
    ] {
        let parent = store.tip(ChainId::Meta);
        let stamp = store.header(&parent.hash).unwrap().unwrap().timestamp_ms + 1;
        let mut header =
            blyan_chain::BlockHeader::new_child(&parent, BlockKind::Meta, &payload, stamp);
        header.sign(&key);
        node.node
            .submit_block(encode_block(&header, &payload))
            .await
            .unwrap();
        assert_eq!(
            node.node.generator().unwrap().info().meta_block,
            served,
            "still serving the last good model"
        );
    }
    drop(store);
    let TestNode { node, _dir } = node;
    drop(node);
    let reopened = Node::open(config)
        .await
        .expect("the node opens")
        .load_model()
        .await
        .expect("and serves");
    assert_eq!(reopened.generator().unwrap().info().meta_block, served);
    drop(_dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hybrid_mode_needs_work_on_every_block_and_still_decides() {
    const BITS: u32 = 6;
    let node = pol_node(&[], |config| {
        config.pol.mode = blyan_pol::PolMode::Hybrid;
        config.chain.pow_difficulty_bits = BITS;
    })
    .await;
    let author = AuthorKey::generate();
    fund(&node.node, author.address(), "1000").await;
    let pool = node.node.pol().unwrap().pool.clone();
    let store = chain(&node.node);
    // Publishing mines (the store asks for work); the blocks are still only candidates.
    let blocks = noisy_version(&node.node, &author, "layer2.expert1");
    assert!(store.is_candidate(&blocks[0]).unwrap());
    let claim = PolRecord::Claim(claim_record(&node.node, blocks.clone(), &pool, None));
    let error = submit(&node.node, &author, &claim).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::BlockRefused(blyan_chain::Error::InsufficientWork { .. })
        ),
        "{error}"
    );
    let claim_hash = submit_with_work(&node.node, &author, &claim, BITS)
        .await
        .unwrap();
    // The node (the only validator) mines its beacon, vote and certificate; like the service,
    // a pass whose block lost a race to the tip is followed by another.
    let own = Arc::clone(node.node.pol().unwrap());
    for _ in 0..3 {
        pol_tick(&node.node, &own, &mut Default::default())
            .await
            .unwrap();
        if state(&node.node, claim_hash).certificate.is_some() {
            break;
        }
    }
    let decided = state(&node.node, claim_hash);
    let (certificate, record) = decided.certificate.expect("decided");
    assert_eq!(record.outcome, Outcome::Rejected);
    for block in [
        decided.beacon.unwrap().hash,
        decided.votes[0].0.hash,
        certificate.hash,
    ] {
        assert!(block.leading_zero_bits() >= BITS, "{block}");
    }
    assert!(store.is_candidate(&blocks[0]).unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_validator_set_changes_only_with_more_than_two_thirds_of_its_stake() {
    let validators = keys(3);
    let node = pol_node(&addresses(&validators), |_| {}).await;
    let newcomer = AuthorKey::generate();
    let new_set: Vec<ValidatorStake> = [&validators[0], &validators[1], &newcomer]
        .iter()
        .map(|key| ValidatorStake {
            address: key.address(),
            stake: 1,
        })
        .collect();
    let message = validator_set_message(BlockHash::ZERO, &new_set);
    let approve = |key: &AuthorKey| key.sign_eip191(&message).to_string();
    let change = |approvals: Vec<String>| {
        PolRecord::Validators(ValidatorSet {
            previous: BlockHash::ZERO,
            validators: new_set.clone(),
            approvals,
        })
    };
    // Two of three is not more than 2/3; a stranger's approval adds nothing.
    let stranger = AuthorKey::generate();
    let short = change(vec![
        approve(&validators[0]),
        approve(&validators[1]),
        approve(&stranger),
    ]);
    let error = submit(&node.node, &newcomer, &short).await.unwrap_err();
    assert_eq!(pol_code(&error), "no_quorum");
    let all = change(validators.iter().map(approve).collect());
    submit(&node.node, &newcomer, &all).await.unwrap();
    // The same change again replaces a set no longer in force.
    let error = submit(&node.node, &newcomer, &all).await.unwrap_err();
    assert_eq!(pol_code(&error), "stale_set");

    // The newcomer seeds claims now; the validator left out cannot.
    let author = AuthorKey::generate();
    fund(&node.node, author.address(), "1000").await;
    let pool = node.node.pol().unwrap().pool.clone();
    let blocks = noisy_version(&node.node, &author, "layer1.expert1");
    let claim = claim_record(&node.node, blocks, &pool, None);
    let claim_hash = submit(&node.node, &author, &PolRecord::Claim(claim))
        .await
        .unwrap();
    let beacon = PolRecord::Beacon(blyan_pol::Beacon {
        claims: vec![claim_hash],
        randomness: "11".repeat(32),
    });
    let error = submit(&node.node, &validators[2], &beacon)
        .await
        .unwrap_err();
    assert_eq!(pol_code(&error), "not_a_validator");
    submit(&node.node, &newcomer, &beacon).await.unwrap();
    let status = node.node.pol_status().await.unwrap();
    let shown: Vec<_> = status
        .validators
        .iter()
        .map(|validator| validator.address.clone())
        .collect();
    assert_eq!(
        shown,
        new_set
            .iter()
            .map(|validator| validator.address.to_string())
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_sent_twice_locks_one_bond_and_keeps_it() {
    let node = pol_node(&[], |_| {}).await;
    let author = AuthorKey::generate();
    fund(&node.node, author.address(), "1000").await;
    let pool = node.node.pol().unwrap().pool.clone();
    let blocks = noisy_version(&node.node, &author, "layer0.expert3");
    let claim = PolRecord::Claim(claim_record(&node.node, blocks, &pool, None));
    let store = chain(&node.node);
    let parent = store.tip(ChainId::Dataset);
    let stamp = store.header(&parent.hash).unwrap().unwrap().timestamp_ms;
    let (header, payload) = record_block(&parent, stamp, &claim, &author, 0);
    let wire = encode_block(&header, &payload);
    node.node.submit_block(wire.clone()).await.unwrap();
    let error = node.node.submit_block(wire).await.unwrap_err();
    assert!(
        matches!(
            error,
            Error::BlockRefused(blyan_chain::Error::AlreadyExists { .. })
        ),
        "{error}"
    );
    // One bond, still held.
    assert_eq!(
        balance(&node.node, author.address()).await,
        ("900".parse().unwrap(), "100".parse().unwrap())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_no_validator_decides_expires_and_its_bond_burns() {
    // Three validators that never act.
    let node = pol_node(&addresses(&keys(3)), |config| config.pol.expiry_blocks = 3).await;
    let author = AuthorKey::generate();
    fund(&node.node, author.address(), "1000").await;
    let pool = node.node.pol().unwrap().pool.clone();
    let blocks = noisy_version(&node.node, &author, "layer3.expert6");
    let claim = claim_record(&node.node, blocks.clone(), &pool, None);
    let claim_hash = submit(&node.node, &author, &PolRecord::Claim(claim))
        .await
        .unwrap();
    let own = Arc::clone(node.node.pol().unwrap());
    let store = chain(&node.node);
    let expiry = PolRecord::Certificate(Certificate {
        claim: claim_hash,
        outcome: Outcome::Expired,
        votes: Vec::new(),
    });
    let error = submit(&node.node, &author, &expiry).await.unwrap_err();
    assert_eq!(pol_code(&error), "not_expired");
    // Chain D moves on (dataset entries); the node's pass expires the claim once it is old.
    for index in 0..2u8 {
        pol_tick(&node.node, &own, &mut Default::default())
            .await
            .unwrap();
        assert!(state(&node.node, claim_hash).certificate.is_none());
        let parent = store.tip(ChainId::Dataset);
        let stamp = store.header(&parent.hash).unwrap().unwrap().timestamp_ms + 1;
        let payload = [b'e', index];
        let mut header =
            blyan_chain::BlockHeader::new_child(&parent, BlockKind::DatasetEntry, &payload, stamp);
        header.sign(&author);
        node.node
            .submit_block(encode_block(&header, &payload))
            .await
            .unwrap();
    }
    pol_tick(&node.node, &own, &mut Default::default())
        .await
        .unwrap();
    let decided = state(&node.node, claim_hash);
    assert_eq!(decided.certificate.unwrap().1.outcome, Outcome::Expired);
    assert!(store.is_candidate(&blocks[0]).unwrap());
    assert_eq!(
        balance(&node.node, author.address()).await,
        ("900".parse().unwrap(), Amount::ZERO)
    );
}
