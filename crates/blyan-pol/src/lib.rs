//! Proof-of-Learning: how a new expert version or model becomes what the network serves.
//!
//! An author stores its new blocks on the chain, where the chain's admission hook
//! ([`PolGate`]) keeps them as *candidates* that are not served, then appends a [`Claim`]
//! naming them, its base model, its own losses and a commitment to its training data (the node
//! that takes the claim locks the author's bond). A validator appends a [`Beacon`] of fresh
//! randomness after the claim; each claim's evaluation batch is drawn from the shared
//! evaluation pool by `blake3(claim ‖ beacon)`, so it was unknown when the claim was committed
//! ([`draw`]). Validators re-run the base and the candidate on that batch
//! ([`evaluate_claim`]: CPU, f32, a fixed thread count) and append signed [`Vote`]s. Once
//! validators holding more than 2/3 of the stake accept with agreeing losses and an improvement
//! of at least the threshold, anyone appends a [`Certificate`]; the gate checks it and the chain
//! promotes the candidate in the same write batch, so it is served from then on. More than 1/3
//! refusing rejects the claim; no quorum within the expiry expires it. [`settlement`] derives
//! from a certificate what the ledger pays (bond refund or burn, learning, validation and data
//! rewards), keyed by the certificate's hash. Two conflicting votes of one validator are
//! evidence ([`Slash`]) that takes its stake. Each validator also measures every claim on a
//! hidden QA set it committed to for the epoch and reveals once the epoch closed ([`QaCommit`],
//! [`QaReveal`], [`QaBook`]): a candidate that improves the public pool but not the hidden set
//! is `overfit`, and a reveal that does not match its commitment voids that epoch's votes. The
//! protocol, its tolerances and what differs across machines: `docs/pol.md`.
//!
//! Must not depend on: HTTP, the ledger (the node pays what [`settlement`] says).
#![cfg_attr(not(test), warn(unused_crate_dependencies))]
#![forbid(unsafe_code)]

// A dependency only so its build script's `DEP_TCH_LIBTORCH_LIB` reaches ours, which embeds
// libtorch's directory as an rpath (build.rs).
use torch_sys as _;

mod error;
mod eval;
mod gate;
mod params;
mod qa;
mod record;
mod rewards;
mod validator;
mod view;

pub use error::{PolError, Result};
pub use eval::{
    BlockSource, EvalPool, ModelBlocks, StoreBlocks, draw, evaluate_pair, evaluate_pair_on,
    load_model, verified_raw, verified_tensors,
};
pub use gate::PolGate;
pub use params::{PolMode, PolParams, ValidatorStake};
pub use qa::{
    QA_PIECE_BYTES_MAX, QA_SET_BYTES_MAX, QA_SET_DOCUMENTS_MAX, QaBook, QaCommitState, QaKeeper,
    QaRevealState, QaStatus, StoredQaSet, qa_commitment, qa_document_hash, qa_epoch, qa_pool,
    reveal_deadline, reveal_opens,
};
pub use record::{
    BEACON_CLAIMS_MAX, Beacon, CERTIFICATE_VOTES_MAX, CLAIM_CANDIDATES_MAX, CLAIM_DATA_BLOCKS_MAX,
    Certificate, Claim, EvalSpec, HiddenEval, LossMicros, Losses, Outcome, POL_RECORD_BYTES_MAX,
    POL_RECORD_FORMAT, PolRecord, QaCommit, QaReveal, RecordBlock, Slash, ValidatorSet, Verdict,
    Vote, data_blocks_commitment, delta_bps, eval_seed, loss_micros, validator_set_message,
};
pub use rewards::{
    BondAction, DataContributors, Payment, Settlement, bond_key, data_payment_key, settlement,
};
pub use validator::{
    HiddenSet, build_claim, candidate_headers, claimed_seed, evaluate_claim, evaluate_for_claim,
    fresh_randomness, hidden_verdict, now_ms, publish_over_served, record_block, verdict,
};
pub use view::{
    ClaimState, ClaimStatus, Tally, agree, all_claims, current_validators, params_after, same_vote,
    scan_records, slashed_validators,
};
