//! The data path end to end on one node: a contributor's samples pass L0 at submission, the
//! worker's L1 teacher, stake-weighted commit-reveal votes and a validator's review; a certified
//! candidate that used them pays the contributor 20 BLY per usable sample, once. The gate state
//! the node keeps (advanced as chain D grows) equals a replay of chain D from genesis after a
//! mix of submissions, votes and reviews.

use std::sync::Arc;
use std::time::Duration;

use blyan_chain::{AuthorKey, BlockHash, BlockHeader, BlockKind, ChainId, encode_block};
use blyan_ledger::Amount;
use blyan_node_core::{
    BoxError, Error, Node, SampleInput, Teacher, dataset_tick, gate_view, screen_l0,
};
use blyan_pol::{Outcome, PolRecord, data_blocks_commitment};
use blyan_primitives::Address;
use blyan_quality::{
    DataRecord, Licence, Review, ReviewVerdict, Sample, SampleContent, SampleState, VoteVerdict,
    encode_record, vote_commitment,
};

use crate::fine_tune::docs_paragraphs;
use crate::pol::{
    addresses, claim_record, keys, pol_node, run_validators, state, submit, train_candidate,
};
use crate::support::{TestNode, balance, fund};

/// A teacher that finds every text at 2 bits per byte (inside the shipped band).
struct Fixed;

impl Teacher for Fixed {
    fn bits_per_byte(&self, texts: &[String]) -> Result<Vec<f64>, BoxError> {
        Ok(vec![2.0; texts.len()])
    }
}

/// Commit and reveal windows: long enough for the test's writes, short enough to wait out.
const WINDOW_MS: u64 = 1_000;

fn refusal_code(error: &Error) -> &'static str {
    match error {
        Error::DatasetRefused(refusal) => refusal.code(),
        other => panic!("expected a dataset refusal, got {other}"),
    }
}

fn text(text: &str) -> SampleInput {
    SampleInput {
        content: SampleContent::Text { text: text.into() },
        licence: "CC0-1.0".into(),
        source: "own writing".into(),
        language: "en".into(),
    }
}

/// Appends an L3 review signed by `key` on chain D's tip.
async fn review(node: &Node, key: &AuthorKey, samples: Vec<BlockHash>) -> BlockHash {
    let store = node.chain().unwrap();
    let parent = store.tip(ChainId::Dataset);
    let stamp = store.header(&parent.hash).unwrap().unwrap().timestamp_ms;
    let payload = encode_record(&DataRecord::Review(Review {
        samples,
        verdict: ReviewVerdict::Approve,
        note: "read and fine".into(),
    }));
    let mut header = BlockHeader::new_child(
        &parent,
        BlockKind::DatasetEntry,
        &payload,
        blyan_pol::now_ms().max(stamp),
    );
    header.sign(key);
    node.submit_block(encode_block(&header, &payload))
        .await
        .unwrap()
        .0
}

/// A node whose validators are `validators`, with commit and reveal windows of `window_ms`,
/// votes locking 10 BLY and tallies needing `quorum_stake`.
async fn voting_node(validators: &[AuthorKey], window_ms: u64, quorum_stake: u64) -> TestNode {
    pol_node(&addresses(validators), |config| {
        config.datasets.commit_window_ms = window_ms;
        config.datasets.reveal_window_ms = window_ms;
        config.datasets.quorum_stake = quorum_stake;
        config.datasets.vote_stake_min = 10;
    })
    .await
}

async fn state_of(node: &Node, sample: BlockHash) -> String {
    node.dataset_sample(sample).await.unwrap().unwrap().state
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitted_samples_pass_the_gates_and_pay_their_contributor_once_when_used() {
    let validators = keys(3);
    let node = voting_node(&validators, WINDOW_MS, 20).await;
    let node_ref = &node.node;
    assert!(node_ref.set_teacher(Arc::new(Fixed)));
    let contributor = AuthorKey::generate().address();
    let voters = keys(2);
    for voter in &voters {
        fund(node_ref, voter.address(), "100").await;
    }

    // L0 at submission: a licence outside the list is refused with its code, nothing appended.
    let mut bad = text("A sentence long enough to be a sample, with a bad licence.");
    bad.licence = "GPL-3.0".into();
    let error = node_ref.submit_sample(contributor, bad).await.unwrap_err();
    assert_eq!(refusal_code(&error), "licence");
    let samples = [
        node_ref
            .submit_sample(
                contributor,
                text("Experts in a mixture each learn a part of the language."),
            )
            .await
            .unwrap(),
        node_ref
            .submit_sample(
                contributor,
                text("A router sends every token to the few experts it needs."),
            )
            .await
            .unwrap(),
    ];
    assert_eq!(state_of(node_ref, samples[0]).await, "submitted");
    let list = node_ref
        .dataset_list(Some(SampleState::Submitted), 0, 10)
        .await
        .unwrap();
    assert_eq!(list.total, 2);

    // L1: the worker scores both in one batch, off the request path.
    let mut settled = Default::default();
    assert_eq!(dataset_tick(node_ref, &mut settled).await.unwrap(), 2);
    assert_eq!(node_ref.dataset_progress().unwrap().scored(), 2);
    assert_eq!(state_of(node_ref, samples[0]).await, "voting");

    // L2: two voters commit (stake locked), the contributor may not vote.
    let own = node_ref
        .commit_vote(contributor, samples[0], "0".repeat(64), 10)
        .await
        .unwrap_err();
    assert_eq!(refusal_code(&own), "own_sample");
    let mut commits = Vec::new();
    for (index, voter) in voters.iter().enumerate() {
        for sample in samples {
            let salt = [index as u8 + 1; 32];
            let commitment = vote_commitment(sample, VoteVerdict::Accept, &salt, voter.address());
            let commit = node_ref
                .commit_vote(voter.address(), sample, commitment, 10)
                .await
                .unwrap();
            commits.push((commit, voter.address(), salt));
        }
    }
    assert_eq!(
        balance(node_ref, voters[0].address()).await,
        ("80".parse().unwrap(), "20".parse().unwrap()),
        "each vote's stake is held"
    );
    // A reveal in the commit window would let others copy it: refused.
    let early = node_ref
        .reveal_vote(
            commits[0].1,
            commits[0].0,
            VoteVerdict::Accept,
            hex::encode(commits[0].2),
        )
        .await
        .unwrap_err();
    assert_eq!(refusal_code(&early), "wrong_state");
    tokio::time::sleep(Duration::from_millis(WINDOW_MS + 50)).await;
    assert_eq!(state_of(node_ref, samples[0]).await, "revealing");
    // A reveal that does not open its commitment is refused.
    let wrong = node_ref
        .reveal_vote(
            commits[0].1,
            commits[0].0,
            VoteVerdict::Refuse,
            hex::encode(commits[0].2),
        )
        .await
        .unwrap_err();
    assert_eq!(refusal_code(&wrong), "reveal_mismatch");
    for (commit, voter, salt) in &commits {
        node_ref
            .reveal_vote(*voter, *commit, VoteVerdict::Accept, hex::encode(salt))
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(WINDOW_MS + 50)).await;
    assert_eq!(state_of(node_ref, samples[0]).await, "accepted");
    // The tally gives revealed stakes back.
    dataset_tick(node_ref, &mut settled).await.unwrap();
    assert_eq!(
        balance(node_ref, voters[0].address()).await,
        ("100".parse().unwrap(), Amount::ZERO)
    );

    // L3: the node's own key is no validator here; a validator's review makes them usable.
    let stranger = node_ref
        .submit_review(samples.to_vec(), ReviewVerdict::Approve, String::new())
        .await
        .unwrap_err();
    assert_eq!(refusal_code(&stranger), "not_a_validator");
    review(node_ref, &validators[0], samples.to_vec()).await;
    assert_eq!(state_of(node_ref, samples[0]).await, "usable");
    let shown = node_ref.dataset_sample(samples[1]).await.unwrap().unwrap();
    let events: Vec<_> = shown
        .history
        .iter()
        .filter(|event| event.counted)
        .map(|event| event.event.as_str())
        .collect();
    assert_eq!(
        events,
        [
            "sample",
            "teacher_result",
            "vote_commit",
            "vote_commit",
            "vote_reveal",
            "vote_reveal",
            "tally",
            "review"
        ]
    );

    // L4: a certified candidate that used both samples (and one twice) pays 20 BLY each, once
    // (a later claim using them again pays nothing for them: `blyan-pol`'s rewards tests).
    let author = AuthorKey::generate();
    fund(node_ref, author.address(), "1000").await;
    let pool = node_ref.pol().unwrap().pool.clone();
    let candidates = train_candidate(
        node_ref,
        &author,
        &[
            "layer0.expert0",
            "layer1.expert0",
            "layer2.expert0",
            "layer3.expert0",
        ],
        &docs_paragraphs(),
        30,
        1e-2,
    );
    let mut record = claim_record(node_ref, candidates, &pool, None);
    record.data_blocks = vec![samples[0], samples[1], samples[0]];
    record.data_commitment = data_blocks_commitment(&record.data_blocks);
    let claim = submit(node_ref, &author, &PolRecord::Claim(record))
        .await
        .unwrap();
    run_validators(&node, &validators).await;
    let decided = state(node_ref, claim);
    assert_eq!(
        decided.certificate.expect("certified").1.outcome,
        Outcome::Accepted
    );
    let paid = balance(node_ref, contributor).await.0;
    assert_eq!(paid, "40".parse().unwrap(), "20 BLY per used sample");

    // A replay of every certificate pays nothing twice.
    run_validators(&node, &validators).await;
    assert_eq!(balance(node_ref, contributor).await.0, paid);
}

/// A teacher that finds texts naming a zebra far above the band, the others at 2 bits per byte.
struct ZebraGibberish;

impl Teacher for ZebraGibberish {
    fn bits_per_byte(&self, texts: &[String]) -> Result<Vec<f64>, BoxError> {
        Ok(texts
            .iter()
            .map(|text| if text.contains("zebra") { 9.0 } else { 2.0 })
            .collect())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kept_gate_state_equals_a_fresh_replay_after_mixed_records() {
    const SHORT_MS: u64 = 400;
    let validators = keys(1);
    let node = voting_node(&validators, SHORT_MS, 10).await;
    let node_ref = &node.node;
    assert!(node_ref.set_teacher(Arc::new(ZebraGibberish)));
    let context = Arc::clone(node_ref.dataset_context().unwrap());
    let store = Arc::clone(node_ref.chain().unwrap());
    // The kept state and a replay from genesis agree on every sample, vote and review, and
    // their L0 screens agree on `probes` (copies of refused samples pass again).
    let check = |probes: &[&str]| {
        let fresh = gate_view(&store, context.params.clone(), &context.validators).unwrap();
        let now = blyan_pol::now_ms();
        let probes: Vec<Sample> = probes
            .iter()
            .map(|text| {
                Sample::new(
                    SampleContent::Text {
                        text: (*text).into(),
                    },
                    Licence::Cc0,
                    "probe",
                    "en",
                    Address::ZERO,
                )
                .unwrap()
            })
            .collect();
        context
            .with_gates(&store, |gates| {
                assert_eq!(gates.view(), &fresh, "kept state = replay");
                for probe in &probes {
                    assert_eq!(
                        gates.screen_new(probe, now),
                        screen_l0(probe, &fresh, now),
                        "{probe:?}"
                    );
                }
            })
            .unwrap();
    };
    let contributor = AuthorKey::generate().address();
    let voters = keys(2);
    for voter in &voters {
        fund(node_ref, voter.address(), "100").await;
    }
    let texts = [
        "Experts in a mixture each learn a part of the language.",
        "A router sends every token to the few experts it needs.",
        "A zebra crossed the road while the experts looked on in silence.",
    ];
    let mut samples = Vec::new();
    for line in texts {
        samples.push(
            node_ref
                .submit_sample(contributor, text(line))
                .await
                .unwrap(),
        );
    }
    check(&texts);
    // A sample sent as a whole block by its own contributor, as `blyan-miner dataset submit`
    // does.
    let miner = AuthorKey::generate();
    let payload = encode_record(&DataRecord::Sample(
        Sample::new(
            SampleContent::Text {
                text: "Each layer of the model keeps eight experts and picks two.".into(),
            },
            Licence::Cc0,
            "notes",
            "en",
            miner.address(),
        )
        .unwrap(),
    ));
    let store_ref = node_ref.chain().unwrap();
    let parent = store_ref.tip(ChainId::Dataset);
    let stamp = store_ref
        .header(&parent.hash)
        .unwrap()
        .unwrap()
        .timestamp_ms;
    let mut header = BlockHeader::new_child(
        &parent,
        BlockKind::DatasetEntry,
        &payload,
        blyan_pol::now_ms().max(stamp),
    );
    header.sign(&miner);
    node_ref
        .submit_block(encode_block(&header, &payload))
        .await
        .unwrap();
    check(&texts);

    // L1: the zebra is refused, so a copy of it counts as new again.
    let mut settled = Default::default();
    assert_eq!(dataset_tick(node_ref, &mut settled).await.unwrap(), 4);
    check(&texts);
    assert_eq!(state_of(node_ref, samples[2]).await, "l1_refused");

    // L2: one vote accepts sample 0, one refuses sample 1, one is never revealed.
    let mut commits = Vec::new();
    for (voter, sample, verdict) in [
        (&voters[0], samples[0], VoteVerdict::Accept),
        (&voters[1], samples[1], VoteVerdict::Refuse),
        (&voters[1], samples[0], VoteVerdict::Accept),
    ] {
        let salt = [7; 32];
        let commitment = vote_commitment(sample, verdict, &salt, voter.address());
        let commit = node_ref
            .commit_vote(voter.address(), sample, commitment, 10)
            .await
            .unwrap();
        commits.push((commit, voter.address(), verdict, salt));
    }
    check(&texts);
    tokio::time::sleep(Duration::from_millis(SHORT_MS + 50)).await;
    for (commit, voter, verdict, salt) in &commits[..2] {
        node_ref
            .reveal_vote(*voter, *commit, *verdict, hex::encode(salt))
            .await
            .unwrap();
    }
    check(&texts);
    tokio::time::sleep(Duration::from_millis(SHORT_MS + 50)).await;
    // Sample 1 was refused by its tally (time alone): a copy of it passes L0 again.
    assert_eq!(state_of(node_ref, samples[1]).await, "refused");
    check(&texts);
    dataset_tick(node_ref, &mut settled).await.unwrap();

    // L3: a validator's review.
    review(node_ref, &validators[0], vec![samples[0]]).await;
    assert_eq!(state_of(node_ref, samples[0]).await, "usable");
    check(&texts);
    assert_eq!(
        context.gate_replays(),
        1,
        "the state was read from genesis once, then advanced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_block_landing_beside_one_already_read_makes_the_kept_state_replay() {
    let node = pol_node(&[], |config| {
        config.chain.fork_rules.dataset = blyan_chain::ForkRule::AllowForks;
    })
    .await;
    let node_ref = &node.node;
    let context = Arc::clone(node_ref.dataset_context().unwrap());
    let store = Arc::clone(node_ref.chain().unwrap());
    let contributor = AuthorKey::generate().address();
    for line in [
        "Experts in a mixture each learn a part of the language.",
        "A router sends every token to the few experts it needs.",
    ] {
        node_ref
            .submit_sample(contributor, text(line))
            .await
            .unwrap();
    }
    assert_eq!(node_ref.gate_view().await.unwrap().samples().count(), 2);
    assert_eq!(context.gate_replays(), 1);
    // A sample forking chain D at height 1, below the height the state was read to.
    let genesis = blyan_chain::ChainTip {
        chain: ChainId::Dataset,
        height: 0,
        hash: store.block_hashes_at(ChainId::Dataset, 0).unwrap()[0],
    };
    let key = AuthorKey::generate();
    let payload = encode_record(&DataRecord::Sample(
        Sample::new(
            SampleContent::Text {
                text: "Each layer of the model keeps eight experts and picks two.".into(),
            },
            Licence::Cc0,
            "notes",
            "en",
            key.address(),
        )
        .unwrap(),
    ));
    let stamp = store.header(&genesis.hash).unwrap().unwrap().timestamp_ms + 1;
    let mut header = BlockHeader::new_child(&genesis, BlockKind::DatasetEntry, &payload, stamp);
    header.sign(&key);
    store.append(&header, &payload).unwrap();
    let kept = node_ref.gate_view().await.unwrap();
    assert_eq!(context.gate_replays(), 2, "the stale state was replayed");
    assert_eq!(kept.samples().count(), 3);
    assert_eq!(
        kept,
        gate_view(&store, context.params.clone(), &context.validators).unwrap()
    );
}
