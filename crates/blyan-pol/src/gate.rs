//! [`PolGate`]: the chain's [`PolAcceptance`] hook. It decides from the stored chain only, under
//! the store's append lock, so every node holding the same chain decides the same.
//!
//! - Expert and meta blocks are stored as candidates, not served: unless pinned in the library
//!   (the shipped model), or the chain serves no model yet (the first model of a chain is its
//!   genesis model: there is nothing to compare it with), or the block is an expert's first
//!   version (it replaces nothing; publishing writes a model's experts after its meta block). Shared-weight and router blocks are
//!   served as they land: nothing uses them until a served meta block names them, and a meta
//!   block is a candidate like an expert.
//! - `PolProof` blocks carry the records of `record.rs`, each checked here: a claim by the
//!   candidates' author on the model served now; a beacon by a validator after the claims it
//!   seeds; a vote by a validator on a seeded claim with the network's evaluation; a certificate
//!   whose votes reach the quorum (it promotes the candidate) or the refusal quorum, or an
//!   expiry; slashing evidence of two conflicting votes; a new validator set approved by
//!   validators holding more than 2/3 of the current set's stake; a validator's hidden-QA
//!   commit for the epoch now or the next, one per epoch, and its reveal once the epoch closed
//!   (admitted even when it does not match: it is the evidence that voids the epoch's votes).
//!   A vote measured on a hidden set names its author's own commit, not yet revealed.

use std::collections::BTreeSet;
use std::sync::{Mutex, PoisonError};

use blyan_chain::{
    Admission, BlockHash, BlockHeader, BlockKind, ChainId, ChainStore, OfferedBlock, PolAcceptance,
    PolRejection, Signature,
};
use blyan_primitives::Address;

use crate::error::{PolError, Result};
use crate::params::PolParams;
use crate::qa::{QA_SET_DOCUMENTS_MAX, QaBook, qa_epoch, reveal_opens};
use crate::record::{
    BEACON_CLAIMS_MAX, Beacon, CERTIFICATE_VOTES_MAX, CLAIM_CANDIDATES_MAX, CLAIM_DATA_BLOCKS_MAX,
    Certificate, Claim, Outcome, PolRecord, QaCommit, QaReveal, RecordBlock, Slash, ValidatorSet,
    Vote, data_blocks_commitment, validator_set_message,
};
use crate::view::{ClaimState, Tally, same_vote, scan_records};

/// What the gate remembers of chain D between appends, advanced to the tip on each decision.
#[derive(Debug)]
struct Scanned {
    /// The next chain D height to read.
    next_height: u64,
    /// Validators named by slashing evidence.
    slashed: BTreeSet<Address>,
    /// Claims without a certificate.
    open: BTreeSet<BlockHash>,
    /// The validator set in force, and the block of the record that set it (zero: the
    /// configured set).
    set: Vec<crate::params::ValidatorStake>,
    set_id: BlockHash,
    /// Hidden-QA commits and reveals.
    qa: QaBook,
}

/// The Proof-of-Learning rules as the chain's admission hook.
#[derive(Debug)]
pub struct PolGate {
    params: PolParams,
    scanned: Mutex<Scanned>,
}

impl PolGate {
    /// A gate applying `params`.
    pub fn new(params: PolParams) -> Self {
        let set = params.validators.clone();
        Self {
            params,
            scanned: Mutex::new(Scanned {
                next_height: 1,
                slashed: BTreeSet::new(),
                open: BTreeSet::new(),
                set,
                set_id: BlockHash::ZERO,
                qa: QaBook::default(),
            }),
        }
    }

    /// The rules with the validator set in force.
    fn params_now(&self, scanned: &Scanned) -> PolParams {
        PolParams {
            validators: scanned.set.clone(),
            ..self.params.clone()
        }
    }

    /// The rules applied.
    pub fn params(&self) -> &PolParams {
        &self.params
    }

    /// How `block` is admitted, or the typed refusal ([`PolError::Refused`],
    /// [`PolError::Malformed`]).
    pub fn decide(&self, store: &ChainStore, block: &OfferedBlock<'_>) -> Result<Admission> {
        let header = block.header;
        match header.kind {
            // An expert's first version replaces nothing: it is served (a model names its
            // experts only by name, so it is used once a served model has that expert).
            BlockKind::Expert if block.base.is_none() => Ok(Admission::Serve),
            BlockKind::Expert | BlockKind::Meta => {
                if store.validator().is_pinned(&block.hash) || !serves_a_model(store)? {
                    Ok(Admission::Serve)
                } else {
                    Ok(Admission::Candidate)
                }
            }
            BlockKind::PolProof => {
                let record = PolRecord::from_payload(block.hash, block.payload)?;
                self.check_dependencies(header, &record)?;
                let mut scanned = self.scanned.lock().unwrap_or_else(PoisonError::into_inner);
                self.advance(store, &mut scanned)?;
                match &record {
                    PolRecord::Claim(claim) => self.check_claim(store, header, claim),
                    PolRecord::Beacon(beacon) => self.check_beacon(store, header, beacon, &scanned),
                    PolRecord::Vote(vote) => self.check_vote(store, header, vote, &scanned),
                    PolRecord::Certificate(certificate) => {
                        self.check_certificate(store, header, certificate, &scanned)
                    }
                    PolRecord::Slash(slash) => self.check_slash(store, slash, &scanned),
                    PolRecord::Validators(set) => self.check_validator_set(set, &scanned),
                    PolRecord::QaCommit(commit) => self.check_qa_commit(header, commit, &scanned),
                    PolRecord::QaReveal(reveal) => self.check_qa_reveal(header, reveal, &scanned),
                }
            }
            _ => Ok(Admission::Serve),
        }
    }

    /// Reads chain D from where the last decision stopped to its tip.
    fn advance(&self, store: &ChainStore, scanned: &mut Scanned) -> Result<()> {
        let tip = store.tip(ChainId::Dataset).height;
        if scanned.next_height > tip {
            return Ok(());
        }
        for record in scan_records(store, scanned.next_height)? {
            scanned.qa.apply(&record);
            match &record.record {
                PolRecord::Claim(_) => {
                    scanned.open.insert(record.hash);
                }
                PolRecord::Certificate(certificate) => {
                    scanned.open.remove(&certificate.claim);
                }
                PolRecord::Slash(slash) => {
                    scanned.slashed.insert(slash.validator);
                }
                PolRecord::Validators(set) => {
                    scanned.set = set.validators.clone();
                    scanned.set_id = record.hash;
                }
                _ => {}
            }
        }
        scanned.next_height = tip + 1;
        Ok(())
    }

    fn check_dependencies(&self, header: &BlockHeader, record: &PolRecord) -> Result<()> {
        if header.chain != ChainId::Dataset {
            return Err(PolError::refused(
                "wrong_chain",
                "Proof-of-Learning records live on chain D",
            ));
        }
        for required in record.required_dependencies() {
            if !header.depends_on.contains(&required) {
                return Err(PolError::refused(
                    "missing_dependency",
                    format!("a {} must depend on block {required}", record.type_name()),
                ));
            }
        }
        Ok(())
    }

    /// The stake a validator votes with now: its configured stake, or nothing once slashed.
    fn live_stake(&self, validator: Address, scanned: &Scanned) -> u64 {
        if scanned.slashed.contains(&validator) {
            0
        } else {
            self.params_now(scanned).stake_of(validator)
        }
    }

    fn require_validator(&self, header: &BlockHeader, scanned: &Scanned, what: &str) -> Result<()> {
        if self.params_now(scanned).stake_of(header.author) == 0 {
            return Err(PolError::refused(
                "not_a_validator",
                format!(
                    "{} is not in the validator set: it cannot write a {what}",
                    header.author
                ),
            ));
        }
        if self.live_stake(header.author, scanned) == 0 {
            return Err(PolError::refused(
                "validator_slashed",
                format!("{} was slashed: it cannot write a {what}", header.author),
            ));
        }
        Ok(())
    }

    fn check_claim(
        &self,
        store: &ChainStore,
        header: &BlockHeader,
        claim: &Claim,
    ) -> Result<Admission> {
        let refused = |code, reason: String| Err(PolError::refused(code, reason));
        if claim.candidates.is_empty() || claim.candidates.len() > CLAIM_CANDIDATES_MAX {
            return refused(
                "bad_claim",
                format!(
                    "{} candidate blocks, not 1..={CLAIM_CANDIDATES_MAX}",
                    claim.candidates.len()
                ),
            );
        }
        if claim.data_blocks.len() > CLAIM_DATA_BLOCKS_MAX {
            return refused(
                "bad_claim",
                format!(
                    "{} data blocks, above {CLAIM_DATA_BLOCKS_MAX}",
                    claim.data_blocks.len()
                ),
            );
        }
        if !is_hex32(&claim.data_commitment) {
            return refused(
                "bad_claim",
                "the data commitment is not 32 bytes of hex".into(),
            );
        }
        let mut experts = BTreeSet::new();
        let mut metas = 0;
        let mut seen = BTreeSet::new();
        for candidate in &claim.candidates {
            if !seen.insert(*candidate) {
                return refused("bad_claim", format!("candidate {candidate} is named twice"));
            }
            let Some(candidate_header) = store.header(candidate)? else {
                return refused(
                    "unknown_candidate",
                    format!("candidate {candidate} is not stored"),
                );
            };
            if !store.is_candidate(candidate)? {
                return refused(
                    "not_a_candidate",
                    format!("block {candidate} is not a stored candidate (already served?)"),
                );
            }
            if candidate_header.author != header.author {
                return refused(
                    "not_the_author",
                    format!(
                        "candidate {candidate} is by {}, the claim by {}",
                        candidate_header.author, header.author
                    ),
                );
            }
            match candidate_header.kind {
                BlockKind::Meta => metas += 1,
                BlockKind::Expert => {
                    let Some(expert) = candidate_header.meta.expert else {
                        return refused(
                            "bad_claim",
                            format!("expert block {candidate} names no expert"),
                        );
                    };
                    if !experts.insert(expert) {
                        return refused("bad_claim", format!("two candidates for {expert}"));
                    }
                    let current = store.expert_current(expert)?;
                    let next = current.map_or(1, |current| current.version.saturating_add(1));
                    if candidate_header.meta.version != next {
                        return refused(
                            "stale_base",
                            format!(
                                "candidate {candidate} is version {} of {expert}; the next version is {next}",
                                candidate_header.meta.version
                            ),
                        );
                    }
                }
                other => {
                    return refused(
                        "bad_claim",
                        format!("candidate {candidate} is a {other} block"),
                    );
                }
            }
            for dependent in store.dependents(candidate)? {
                if let Some(existing) = RecordBlock::read(store, dependent.block).ok().flatten()
                    && matches!(existing.record, PolRecord::Claim(_))
                {
                    return refused(
                        "already_claimed",
                        format!("candidate {candidate} is claimed by {}", existing.hash),
                    );
                }
            }
        }
        if metas > 1 {
            return refused("bad_claim", "more than one meta block".into());
        }
        let served = blyan_moe::current_model(store)
            .map(|(meta, _)| meta)
            .map_err(|_| PolError::refused("no_model", "the chain serves no model to improve"))?;
        if claim.base_model != served {
            return refused(
                "stale_base",
                format!(
                    "the claim's base model is {}, the served one {served}",
                    claim.base_model
                ),
            );
        }
        if !claim.data_blocks.is_empty() {
            for data in &claim.data_blocks {
                let kind = store.header(data)?.map(|header| header.kind);
                if kind != Some(BlockKind::DatasetEntry) {
                    return refused(
                        "bad_claim",
                        format!("data block {data} is not a dataset entry"),
                    );
                }
            }
            if data_blocks_commitment(&claim.data_blocks) != claim.data_commitment {
                return refused(
                    "bad_claim",
                    "the data commitment is not the blake3 of the data blocks".into(),
                );
            }
        }
        Ok(Admission::Serve)
    }

    fn check_beacon(
        &self,
        store: &ChainStore,
        header: &BlockHeader,
        beacon: &Beacon,
        scanned: &Scanned,
    ) -> Result<Admission> {
        self.require_validator(header, scanned, "beacon")?;
        if beacon.claims.is_empty() || beacon.claims.len() > BEACON_CLAIMS_MAX {
            return Err(PolError::refused(
                "bad_beacon",
                format!(
                    "{} claims, not 1..={BEACON_CLAIMS_MAX}",
                    beacon.claims.len()
                ),
            ));
        }
        if !is_hex32(&beacon.randomness) {
            return Err(PolError::refused(
                "bad_beacon",
                "randomness is not 32 bytes of hex",
            ));
        }
        for claim in &beacon.claims {
            let state = open_claim(store, *claim)?;
            if let Some(seeded) = &state.beacon {
                return Err(PolError::refused(
                    "already_seeded",
                    format!("claim {claim} was seeded by beacon {}", seeded.hash),
                ));
            }
        }
        Ok(Admission::Serve)
    }

    fn check_vote(
        &self,
        store: &ChainStore,
        header: &BlockHeader,
        vote: &Vote,
        scanned: &Scanned,
    ) -> Result<Admission> {
        self.require_validator(header, scanned, "vote")?;
        let state = open_claim(store, vote.claim)?;
        match &state.beacon {
            Some(beacon) if beacon.hash == vote.beacon => {}
            Some(beacon) => {
                return Err(PolError::refused(
                    "wrong_beacon",
                    format!(
                        "claim {} was seeded by beacon {}, not {}",
                        vote.claim, beacon.hash, vote.beacon
                    ),
                ));
            }
            None => {
                return Err(PolError::refused(
                    "not_seeded",
                    format!("claim {} has no beacon yet", vote.claim),
                ));
            }
        }
        if vote.eval != self.params.eval {
            return Err(PolError::refused(
                "wrong_evaluation",
                format!(
                    "the vote ran {:?}; this network evaluates {:?}",
                    vote.eval, self.params.eval
                ),
            ));
        }
        if let Some(hidden) = &vote.hidden {
            self.check_hidden_commit(header, hidden.commit, scanned)?;
        }
        if let Some((earlier, _)) = state
            .votes
            .iter()
            .find(|(block, earlier)| block.author == header.author && same_vote(earlier, vote))
        {
            return Err(PolError::refused(
                "duplicate_vote",
                format!(
                    "{} already voted the same in block {}",
                    header.author, earlier.hash
                ),
            ));
        }
        // A second, different vote is admitted: it is the evidence a `Slash` record cites, and
        // no vote of a validator that voted twice counts.
        Ok(Admission::Serve)
    }

    fn check_certificate(
        &self,
        store: &ChainStore,
        header: &BlockHeader,
        certificate: &Certificate,
        scanned: &Scanned,
    ) -> Result<Admission> {
        let refused = |code, reason: String| Err(PolError::refused(code, reason));
        let state = open_claim(store, certificate.claim)?;
        if certificate.votes.len() > CERTIFICATE_VOTES_MAX {
            return refused(
                "bad_certificate",
                format!(
                    "{} votes, above {CERTIFICATE_VOTES_MAX}",
                    certificate.votes.len()
                ),
            );
        }
        let params = self.params_now(scanned);
        let invalid = scanned
            .qa
            .invalid_commits(header.timestamp_ms, self.params.qa_epoch_ms);
        let all = Tally::count(&params, &state.votes, &scanned.slashed, &invalid);
        if certificate.outcome == Outcome::Expired {
            if !certificate.votes.is_empty() {
                return refused("bad_certificate", "an expiry carries no votes".into());
            }
            let age = header.height.saturating_sub(state.block.height);
            if age < params.expiry_blocks {
                return refused(
                    "not_expired",
                    format!(
                        "the claim is {age} chain-D blocks old; it expires after {}",
                        params.expiry_blocks
                    ),
                );
            }
            if let Some(outcome) = all.outcome(&params) {
                return refused(
                    "decided",
                    format!("the votes on chain already reach `{}`", outcome.name()),
                );
            }
            return Ok(Admission::Serve);
        }
        // The listed votes alone must reach the outcome.
        let listed: BTreeSet<BlockHash> = certificate.votes.iter().copied().collect();
        if listed.len() != certificate.votes.len() {
            return refused("bad_certificate", "a vote is listed twice".into());
        }
        let votes: Vec<_> = state
            .votes
            .iter()
            .filter(|(block, _)| listed.contains(&block.hash))
            .cloned()
            .collect();
        if votes.len() != listed.len() {
            let foreign = listed
                .iter()
                .find(|hash| !votes.iter().any(|(block, _)| block.hash == **hash))
                .copied()
                .unwrap_or(BlockHash::ZERO);
            return refused(
                "foreign_vote",
                format!(
                    "block {foreign} is not a vote on claim {}",
                    certificate.claim
                ),
            );
        }
        // A validator that voted twice on this claim (anywhere on chain) counts for nothing.
        if let Some((block, _)) = votes
            .iter()
            .find(|(block, _)| all.equivocators.contains(&block.author))
        {
            return refused(
                "equivocation",
                format!("{} voted twice on this claim", block.author),
            );
        }
        if let Some((block, _)) = votes.iter().find(|(_, vote)| {
            vote.hidden
                .is_some_and(|hidden| invalid.contains(&hidden.commit))
        }) {
            return refused(
                "qa_invalid",
                format!(
                    "vote {} was measured on a hidden QA set whose reveal does not hold",
                    block.hash
                ),
            );
        }
        let tally = Tally::count(&params, &votes, &scanned.slashed, &invalid);
        match (certificate.outcome, tally.outcome(&params)) {
            (Outcome::Accepted, Some(Outcome::Accepted)) => {
                if tally.accepts.len() != votes.len() {
                    return refused(
                        "votes_disagree",
                        "a listed vote refuses or disagrees with the others beyond the tolerance"
                            .into(),
                    );
                }
                self.check_best_candidate(store, &state, &tally, scanned, &invalid)?;
                Ok(Admission::Promote(state.claim.candidates.clone()))
            }
            (Outcome::Rejected, Some(Outcome::Rejected)) => Ok(Admission::Serve),
            (claimed, reached) => refused(
                "no_quorum",
                format!(
                    "the listed votes ({} accepting with stake {}, {} refusing with stake {}, of {}) do not make `{}` (they make {})",
                    tally.accepts.len(),
                    tally.accept_stake,
                    tally.refusals.len(),
                    tally.refusal_stake,
                    params.total_stake(),
                    claimed.name(),
                    reached.map_or("no outcome", Outcome::name)
                ),
            ),
        }
    }

    /// Two certified candidates on one base: lowest loss, then lowest hash. Refuses to accept
    /// `state` while another open claim replacing one of the same experts (or another model)
    /// already has an accepting quorum with a lower candidate loss, or the same and a lower hash.
    fn check_best_candidate(
        &self,
        store: &ChainStore,
        state: &ClaimState,
        tally: &Tally,
        scanned: &Scanned,
        invalid: &BTreeSet<BlockHash>,
    ) -> Result<()> {
        let experts = state.experts(store)?;
        let model = state.has_model(store)?;
        let mine = (tally.candidate_loss().unwrap_or(u64::MAX), state.hash());
        for other in &scanned.open {
            if *other == state.hash() {
                continue;
            }
            let Some(rival) = ClaimState::read(store, *other)? else {
                continue;
            };
            if rival.claim.base_model != state.claim.base_model {
                continue;
            }
            let overlaps =
                (model && rival.has_model(store)?) || !rival.experts(store)?.is_disjoint(&experts);
            if !overlaps {
                continue;
            }
            let params = self.params_now(scanned);
            let rival_tally = Tally::count(&params, &rival.votes, &scanned.slashed, invalid);
            if rival_tally.outcome(&params) != Some(Outcome::Accepted) {
                continue;
            }
            let theirs = (
                rival_tally.candidate_loss().unwrap_or(u64::MAX),
                rival.hash(),
            );
            if theirs < mine {
                return Err(PolError::refused(
                    "better_candidate",
                    format!(
                        "claim {} on the same base is certified with loss {} (this one {})",
                        rival.hash(),
                        theirs.0,
                        mine.0
                    ),
                ));
            }
        }
        Ok(())
    }

    fn check_slash(
        &self,
        store: &ChainStore,
        slash: &Slash,
        scanned: &Scanned,
    ) -> Result<Admission> {
        if scanned.slashed.contains(&slash.validator) {
            return Err(PolError::refused(
                "already_slashed",
                format!("{} is already slashed", slash.validator),
            ));
        }
        let mut votes = Vec::new();
        for hash in slash.votes {
            match RecordBlock::read(store, hash)? {
                Some(RecordBlock {
                    author,
                    record: PolRecord::Vote(vote),
                    ..
                }) if author == slash.validator && vote.claim == slash.claim => votes.push(vote),
                _ => {
                    return Err(PolError::refused(
                        "bad_evidence",
                        format!(
                            "block {hash} is not a vote of {} on claim {}",
                            slash.validator, slash.claim
                        ),
                    ));
                }
            }
        }
        if slash.votes[0] == slash.votes[1] || same_vote(&votes[0], &votes[1]) {
            return Err(PolError::refused(
                "bad_evidence",
                "the two votes do not conflict",
            ));
        }
        Ok(Admission::Serve)
    }
}

impl PolGate {
    /// A vote's hidden QA set: its author's own commit, for the vote's epoch or one next to it,
    /// not revealed yet.
    fn check_hidden_commit(
        &self,
        header: &BlockHeader,
        commit: BlockHash,
        scanned: &Scanned,
    ) -> Result<()> {
        let refused = |code, reason: String| Err(PolError::refused(code, reason));
        let Some(state) = scanned.qa.commit(&commit) else {
            return refused(
                "qa_unknown_commit",
                format!("block {commit} is not a hidden-QA commit"),
            );
        };
        if state.author != header.author {
            return refused(
                "qa_not_the_author",
                format!(
                    "commit {commit} is {}'s, the vote {}'s",
                    state.author, header.author
                ),
            );
        }
        if let Some(reveal) = &state.reveal {
            return refused(
                "qa_revealed",
                format!(
                    "the set of commit {commit} is public since block {}: it cannot be evaluated on",
                    reveal.block
                ),
            );
        }
        // A commit may be written one epoch ahead, and stays usable until its reveal.
        let epoch = qa_epoch(header.timestamp_ms, self.params.qa_epoch_ms);
        if epoch.saturating_add(1) < state.commit.epoch
            || epoch > state.commit.epoch.saturating_add(1)
        {
            return refused(
                "qa_wrong_epoch",
                format!(
                    "the vote is in epoch {epoch}; commit {commit} is for epoch {}",
                    state.commit.epoch
                ),
            );
        }
        Ok(())
    }

    fn check_qa_commit(
        &self,
        header: &BlockHeader,
        commit: &QaCommit,
        scanned: &Scanned,
    ) -> Result<Admission> {
        self.require_validator(header, scanned, "hidden-QA commit")?;
        if !is_hex32(&commit.commitment) {
            return Err(PolError::refused(
                "bad_qa",
                "the commitment is not 32 bytes of hex",
            ));
        }
        let now = qa_epoch(header.timestamp_ms, self.params.qa_epoch_ms);
        if commit.epoch != now && commit.epoch != now.saturating_add(1) {
            return Err(PolError::refused(
                "qa_wrong_epoch",
                format!(
                    "a commit for epoch {} written in epoch {now}: only this epoch or the next",
                    commit.epoch
                ),
            ));
        }
        if let Some(earlier) = scanned.qa.commit_of(header.author, commit.epoch) {
            return Err(PolError::refused(
                "qa_already_committed",
                format!(
                    "{} committed epoch {} in block {}",
                    header.author, commit.epoch, earlier.block
                ),
            ));
        }
        Ok(Admission::Serve)
    }

    fn check_qa_reveal(
        &self,
        header: &BlockHeader,
        reveal: &QaReveal,
        scanned: &Scanned,
    ) -> Result<Admission> {
        let refused = |code, reason: String| Err(PolError::refused(code, reason));
        let Some(state) = scanned.qa.commit(&reveal.commit) else {
            return refused(
                "qa_unknown_commit",
                format!("block {} is not a hidden-QA commit", reveal.commit),
            );
        };
        if state.author != header.author {
            return refused(
                "qa_not_the_author",
                format!(
                    "commit {} is {}'s; only its author reveals it",
                    reveal.commit, state.author
                ),
            );
        }
        if let Some(earlier) = &state.reveal {
            return refused(
                "qa_already_revealed",
                format!(
                    "commit {} was revealed in block {}",
                    reveal.commit, earlier.block
                ),
            );
        }
        let opens = reveal_opens(state.commit.epoch, self.params.qa_epoch_ms);
        if header.timestamp_ms < opens {
            return refused(
                "qa_epoch_open",
                format!(
                    "epoch {} closes at {opens} ms; the reveal is stamped {}",
                    state.commit.epoch, header.timestamp_ms
                ),
            );
        }
        if reveal.documents.is_empty() || reveal.documents.len() > QA_SET_DOCUMENTS_MAX {
            return refused(
                "bad_qa",
                format!(
                    "{} documents, not 1..={QA_SET_DOCUMENTS_MAX}",
                    reveal.documents.len()
                ),
            );
        }
        // A reveal that does not match its commitment is admitted: it is the evidence that
        // voids its author's votes of the epoch (`QaBook`).
        Ok(Admission::Serve)
    }

    fn check_validator_set(&self, set: &ValidatorSet, scanned: &Scanned) -> Result<Admission> {
        let refused = |code, reason: String| Err(PolError::refused(code, reason));
        if set.previous != scanned.set_id {
            return refused(
                "stale_set",
                format!(
                    "the change replaces the set of {}, the set in force is {}'s",
                    set.previous, scanned.set_id
                ),
            );
        }
        let mut members = BTreeSet::new();
        if set.validators.is_empty() {
            return refused("bad_set", "a validator set cannot be empty".into());
        }
        for validator in &set.validators {
            if validator.stake == 0 || !members.insert(validator.address) {
                return refused(
                    "bad_set",
                    format!("{} is listed twice or with stake 0", validator.address),
                );
            }
        }
        let message = validator_set_message(set.previous, &set.validators);
        let mut approvers = BTreeSet::new();
        for approval in &set.approvals {
            let signer = Signature::parse(approval)
                .map_err(|error| PolError::refused("bad_set", format!("approval: {error}")))?
                .recover_eip191(&message)
                .map_err(|fault| PolError::refused("bad_set", format!("approval: {fault:?}")))?;
            approvers.insert(signer);
        }
        let current = self.params_now(scanned);
        let approving: u64 = approvers
            .iter()
            .map(|approver| self.live_stake(*approver, scanned))
            .sum();
        if !PolParams::is_supermajority(approving, current.total_stake()) {
            return refused(
                "no_quorum",
                format!(
                    "approvals of stake {approving} of {}: more than 2/3 must approve a new set",
                    current.total_stake()
                ),
            );
        }
        Ok(Admission::Serve)
    }
}

impl PolAcceptance for PolGate {
    fn admit(
        &self,
        store: &ChainStore,
        block: &OfferedBlock<'_>,
    ) -> std::result::Result<Admission, PolRejection> {
        self.decide(store, block).map_err(|error| PolRejection {
            code: error.code().unwrap_or("internal"),
            reason: error.to_string(),
        })
    }
}

/// A stored claim without a certificate.
fn open_claim(store: &ChainStore, claim: BlockHash) -> Result<ClaimState> {
    let state = ClaimState::read(store, claim)?.ok_or_else(|| {
        PolError::refused("unknown_claim", format!("block {claim} is not a claim"))
    })?;
    if let Some((certificate, decided)) = &state.certificate {
        return Err(PolError::refused(
            "decided",
            format!(
                "claim {claim} was decided ({}) by certificate {}",
                decided.outcome.name(),
                certificate.hash
            ),
        ));
    }
    Ok(state)
}

/// Whether the chain serves a model (a served meta block whose document parses).
fn serves_a_model(store: &ChainStore) -> Result<bool> {
    match blyan_moe::current_model(store) {
        Ok(_) => Ok(true),
        Err(blyan_moe::MoeError::NoModelOnChain) => Ok(false),
        Err(blyan_moe::MoeError::Chain(error)) => Err(error.into()),
        Err(error) => Err(error.into()),
    }
}

/// Whether `text` is 32 bytes of lower- or upper-case hex.
pub(crate) fn is_hex32(text: &str) -> bool {
    text.len() == 64 && text.bytes().all(|byte| byte.is_ascii_hexdigit())
}
