//! Proof-of-Learning timings on one machine, in one run, on the default model's configuration
//! (4 layers × 8 experts, the untrained seed weights: the same sizes as the shipped model) with
//! the default evaluation (32 windows × 128 tokens, 2 torch threads):
//!
//! 1. a validator's re-evaluation of a claim (`blyan_pol::evaluate_claim`: candidate headers
//!    fetched and checked, base and candidate loaded from verified block payloads, the batch
//!    drawn from the beacon's seed, both losses, the verdict) against the author's own
//!    evaluation of the same batch (`blyan_pol::evaluate_pair` on the same models and seed):
//!    medians and their ratio (goal ≤ 1.1×);
//! 2. the time from a stored claim to its certificate with three local validators (each one
//!    pass of the node's Proof-of-Learning service with its own key, the first one seeding the
//!    claim; then the node's pass that certifies, promotes and settles), as seconds and as a
//!    multiple of one author evaluation.
//!
//! `source scripts/env.sh && nice -n 15 cargo bench -p blyan-node-core --bench pol --profile
//! test`. Rounds: `BLYAN_BENCH_ROUNDS` (default 5).
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/fixtures/fine_tune.rs"]
mod fine_tune;

use std::sync::Arc;
use std::time::{Duration, Instant};

use blyan_chain::{AuthorKey, ChainId, encode_block};
use blyan_ledger::{AccountId, IdempotencyKey, Ledger as _, SystemAccount, TransferRequest};
use blyan_moe::ExpertName;
use blyan_node_core::{Node, NodeConfig, PolContext, SeedChoice, pol_tick};
use blyan_pol::{
    ModelBlocks, PolRecord, StoreBlocks, ValidatorStake, build_claim, candidate_headers, eval_seed,
    evaluate_claim, evaluate_pair, record_block,
};
use blyan_primitives::Durability;
use fine_tune::{docs_paragraphs, fine_tune};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn main() {
    let rounds: usize = std::env::var("BLYAN_BENCH_ROUNDS")
        .ok()
        .and_then(|value| value.parse().ok())
        .unwrap_or(5);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let validators: Vec<AuthorKey> = (0..3).map(|_| AuthorKey::generate()).collect();
    let mut config = NodeConfig::defaults();
    config.data_dir = dir.path().to_owned();
    config.chain.durability = Durability::Unsynced;
    config.model.seed = SeedChoice::Random;
    config.pol.validators = validators
        .iter()
        .map(|key| ValidatorStake {
            address: key.address(),
            stake: 1,
        })
        .collect();
    let node = runtime.block_on(async {
        let node = Node::open(config).await.unwrap();
        node.ensure_seed_model(&AuthorKey::generate())
            .await
            .unwrap();
        Arc::new(node.load_model().await.unwrap())
    });
    let store = Arc::clone(node.chain().unwrap());
    let own = Arc::clone(node.pol().unwrap());
    tch::set_num_threads(i32::try_from(own.threads).unwrap());
    let author = AuthorKey::generate();
    runtime.block_on(async {
        node.ledger()
            .unwrap()
            .transfer(TransferRequest {
                key: IdempotencyKey::new("bench-author").unwrap(),
                from: SystemAccount::Treasury.into(),
                to: AccountId::User(blyan_ledger::Address::from_bytes(
                    *author.address().as_bytes(),
                )),
                amount: "100000".parse().unwrap(),
                memo: "bench".into(),
            })
            .await
            .unwrap();
    });
    let documents = docs_paragraphs();
    let contexts: Vec<Arc<PolContext>> = validators
        .iter()
        .map(|key| {
            Arc::new(PolContext {
                params: own.params.clone(),
                pool: own.pool.clone(),
                key: key.clone(),
                pow_bits: 0,
                threads: own.threads,
                qa: None,
            })
        })
        .collect();

    let mut author_times = Vec::new();
    let mut validator_times = Vec::new();
    let mut certificate_times = Vec::new();
    let mut accepted = 0;
    for round in 0..rounds {
        // One expert per layer, another index each round.
        let index = u32::try_from(round % 8).unwrap();
        let experts = (0..4)
            .map(|layer| ExpertName::new(layer, index).unwrap())
            .collect();
        let candidates = fine_tune(&store, &author, experts, &documents, 30, 1e-2);
        let blocks = StoreBlocks(&store);
        let base = ModelBlocks::served(&store).unwrap();
        let commitment = blake3::hash(b"docs").to_hex().to_string();
        let claim = build_claim(
            &blocks,
            &base,
            candidates,
            &own.pool,
            &own.params.eval,
            commitment,
        )
        .unwrap();
        let candidate_model = base.with_candidates(&candidate_headers(&blocks, &claim).unwrap());
        let parent = store.tip(ChainId::Dataset);
        let stamp = store.header(&parent.hash).unwrap().unwrap().timestamp_ms;
        let (header, payload) =
            record_block(&parent, stamp, &PolRecord::Claim(claim.clone()), &author, 0);
        let claim_hash = runtime
            .block_on(node.submit_block(encode_block(&header, &payload)))
            .unwrap()
            .0;

        // 1. Re-evaluation against the author's evaluation of the same batch, on a stand-in
        //    beacon (the seed is what matters, not who wrote it).
        let beacon = parent.hash;
        let seed = eval_seed(claim_hash, beacon);
        for _ in 0..2 {
            let started = Instant::now();
            let losses = evaluate_pair(
                &blocks,
                &base,
                &candidate_model,
                &own.pool,
                seed,
                &own.params.eval,
            )
            .unwrap();
            author_times.push(started.elapsed());
            let started = Instant::now();
            let vote = evaluate_claim(
                &blocks,
                &own.params,
                &own.pool,
                None,
                claim_hash,
                &claim,
                beacon,
                &base,
            )
            .unwrap();
            validator_times.push(started.elapsed());
            assert_eq!(vote.losses, losses, "the same batch gives the same bits");
        }

        // 2. Claim to certificate with three local validators.
        let started = Instant::now();
        runtime.block_on(async {
            for context in &contexts {
                pol_tick(&node, context, &mut Default::default())
                    .await
                    .unwrap();
            }
            pol_tick(&node, &own, &mut Default::default())
                .await
                .unwrap();
        });
        certificate_times.push(started.elapsed());
        let state = blyan_pol::ClaimState::read(&store, claim_hash)
            .unwrap()
            .unwrap();
        let (_, certificate) = state.certificate.expect("the claim is decided");
        if certificate.outcome == blyan_pol::Outcome::Accepted {
            accepted += 1;
        }
        eprintln!(
            "round {round}: claimed {} bps, {:?}",
            claim.claimed.delta_bps(),
            certificate.outcome
        );
    }
    let author = median(author_times);
    let validator = median(validator_times);
    let certificate = median(certificate_times);
    println!(
        "re-evaluation: author {:.1} ms, validator {:.1} ms, ratio {:.3} (goal <= 1.1)",
        author.as_secs_f64() * 1e3,
        validator.as_secs_f64() * 1e3,
        validator.as_secs_f64() / author.as_secs_f64()
    );
    println!(
        "claim to certificate with 3 local validators: median {:.2} s = {:.1} author evaluations ({accepted}/{rounds} accepted)",
        certificate.as_secs_f64(),
        certificate.as_secs_f64() / author.as_secs_f64()
    );
}
