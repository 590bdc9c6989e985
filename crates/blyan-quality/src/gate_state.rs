//! Where each sample stands, derived by replaying chain D's dataset documents in chain order
//! (as `blyan-pol`'s view does for claims): every node that holds the same blocks derives the
//! same states, and a record that does not count says why in the sample's history.
//!
//! A sample moves through
//!
//! ```text
//! submitted ─L1─▶ l1_refused
//!     │
//!     └─L1 pass─▶ voting ─commit window closes─▶ revealing ─reveal window closes─▶ refused
//!                                                                 │
//!                                                                 └─▶ accepted ─L3─▶ usable
//!                                                                                  └─▶ review_refused
//! ```
//!
//! L1: the first teacher result for a sample counts; voting opens at its block's timestamp.
//! L2: commits count inside `[opens, opens + commit_window_ms)`, one per wallet, never the
//! contributor's, each with at least `vote_stake_min` BLY; reveals count inside the reveal
//! window that follows and only when they open their commitment ([`check_reveal`]). When the
//! reveal window has closed, the revealed stake decides: at least `quorum_stake` revealed and
//! `accept_bps` of it accepting accepts. L3: reviews by validators of the Proof-of-Learning set
//! in force at the review's height; `reviews_required` approvals make an accepted sample usable,
//! one refusal refuses it.
//!
//! Windows are measured in block timestamps (milliseconds), so a quiet chain's votes still close
//! on time; the chain refuses blocks stamped before their parent or too far in the future.

use std::collections::{BTreeMap, BTreeSet};

use blyan_chain::{BlockHash, BlockKind, ChainId, ChainStore};
use blyan_primitives::Address;
use serde::{Deserialize, Serialize};

use crate::gate_record::{
    GateError, Review, ReviewVerdict, TeacherResult, VoteCommit, VoteReveal, VoteVerdict,
    check_reveal,
};
use crate::sample::{DataRecord, Sample, decode_record};

/// The gates' settings: every node must use the same to derive the same states.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateParams {
    /// How long after the L1 pass commits are taken, in milliseconds.
    pub commit_window_ms: u64,
    /// How long after the commit window reveals are taken, in milliseconds.
    pub reveal_window_ms: u64,
    /// Share of the revealed stake that must accept, in basis points (6667: two thirds).
    pub accept_bps: u32,
    /// Least revealed stake (whole BLY) for a tally to accept.
    pub quorum_stake: u64,
    /// Least stake (whole BLY) one vote locks.
    pub vote_stake_min: u64,
    /// L3 approvals that make an accepted sample usable (0: accepted is usable at once).
    pub reviews_required: u32,
}

impl Default for GateParams {
    fn default() -> Self {
        GateParams {
            commit_window_ms: 24 * 3600 * 1000,
            reveal_window_ms: 24 * 3600 * 1000,
            accept_bps: 6667,
            quorum_stake: 100,
            vote_stake_min: 10,
            reviews_required: 1,
        }
    }
}

/// A sample's place in the gates.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SampleState {
    /// Passed L0, waiting for the L1 teacher.
    Submitted,
    /// The L1 band (or the L0 screen re-run by the scorer) refused it.
    L1Refused,
    /// Passed L1; the commit window is open.
    Voting,
    /// The reveal window is open.
    Revealing,
    /// The L2 tally refused it.
    Refused,
    /// The L2 tally accepted it; waiting for L3 reviews.
    Accepted,
    /// Reviewed and approved: learners may use it, and using it pays its contributor.
    Usable,
    /// A validator refused it at L3.
    ReviewRefused,
}

impl SampleState {
    /// Every state, in the order a sample meets them.
    pub const ALL: [SampleState; 8] = [
        SampleState::Submitted,
        SampleState::L1Refused,
        SampleState::Voting,
        SampleState::Revealing,
        SampleState::Refused,
        SampleState::Accepted,
        SampleState::Usable,
        SampleState::ReviewRefused,
    ];

    /// The snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            SampleState::Submitted => "submitted",
            SampleState::L1Refused => "l1_refused",
            SampleState::Voting => "voting",
            SampleState::Revealing => "revealing",
            SampleState::Refused => "refused",
            SampleState::Accepted => "accepted",
            SampleState::Usable => "usable",
            SampleState::ReviewRefused => "review_refused",
        }
    }
}

impl std::str::FromStr for SampleState {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        SampleState::ALL
            .into_iter()
            .find(|state| state.name() == text)
            .ok_or_else(|| format!("unknown sample state {text:?}"))
    }
}

/// A dataset document with its block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DataBlock {
    /// The block.
    pub hash: BlockHash,
    /// Its signer.
    pub author: Address,
    /// Its height on chain D.
    pub height: u64,
    /// Its timestamp.
    pub timestamp_ms: u64,
    /// The document.
    pub record: DataRecord,
}

impl DataBlock {
    /// Every dataset document on chain D, in chain order ((height, hash)); `DatasetEntry`
    /// blocks that are not well-formed documents are skipped (they never count).
    pub fn scan(store: &ChainStore) -> blyan_chain::Result<Vec<DataBlock>> {
        DataBlock::scan_heights(store, 1, u64::MAX).map(|(blocks, _)| blocks)
    }

    /// The dataset documents of chain D at heights `from_height..=to_height`, in chain order,
    /// and how many blocks of any kind those heights hold: what a view kept up to date reads
    /// when the chain grew.
    pub fn scan_heights(
        store: &ChainStore,
        from_height: u64,
        to_height: u64,
    ) -> blyan_chain::Result<(Vec<DataBlock>, u64)> {
        let mut blocks = Vec::new();
        let mut read = 0u64;
        for sealed in store.headers_from(ChainId::Dataset, from_height.max(1)) {
            let sealed = sealed?;
            if sealed.header.height > to_height {
                break;
            }
            read += 1;
            if sealed.header.kind != BlockKind::DatasetEntry {
                continue;
            }
            let Some(payload) = store.payload_verified(&sealed.hash)? else {
                continue;
            };
            if let Ok(record) = decode_record(&payload) {
                blocks.push(DataBlock {
                    hash: sealed.hash,
                    author: sealed.header.author,
                    height: sealed.header.height,
                    timestamp_ms: sealed.header.timestamp_ms,
                    record,
                });
            }
        }
        Ok((blocks, read))
    }
}

/// One thing that happened to a sample, for its history.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GateEvent {
    /// The block that did it (none for a window closing).
    pub block: Option<BlockHash>,
    /// When (the block's timestamp, or the window's end).
    pub timestamp_ms: u64,
    /// What: `submitted`, `teacher_result`, `vote_commit`, `vote_reveal`, `tally`, `review`.
    pub event: String,
    /// Whether it counted.
    pub counted: bool,
    /// Details in words (the verdict, or why it did not count).
    pub detail: String,
}

/// One L2 vote on a sample.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VoteView {
    /// The commit's block.
    pub commit: BlockHash,
    /// The voter.
    pub voter: Address,
    /// Its stake, whole BLY.
    pub stake: u64,
    /// The commitment.
    pub commitment: String,
    /// The counted reveal: its block and verdict.
    pub reveal: Option<(BlockHash, VoteVerdict)>,
}

/// The L2 outcome once the reveal window closed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TallyView {
    /// Revealed stake accepting.
    pub accept_stake: u64,
    /// Revealed stake refusing.
    pub refuse_stake: u64,
    /// Whether it accepted.
    pub accepted: bool,
}

/// Everything chain D says about one sample.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SampleView {
    /// The sample's block.
    pub hash: BlockHash,
    /// Its height on chain D.
    pub height: u64,
    /// Its timestamp.
    pub timestamp_ms: u64,
    /// Its signer (the contributor, or the node that took it from a signed-in wallet).
    pub author: Address,
    /// The sample.
    pub sample: Sample,
    /// The counted teacher result, with its block.
    pub teacher: Option<(BlockHash, TeacherResult)>,
    /// Counted vote commits, in chain order.
    pub votes: Vec<VoteView>,
    /// Counted reviews: block, validator, verdict.
    pub reviews: Vec<(BlockHash, Address, ReviewVerdict)>,
    /// Every record about the sample, counted or not, and the windows closing.
    pub history: Vec<GateEvent>,
    teacher_ms: Option<u64>,
    review_decided: Option<ReviewVerdict>,
}

impl SampleView {
    /// When voting opened (the counted teacher result passed).
    pub fn voting_opens_ms(&self) -> Option<u64> {
        match &self.teacher {
            Some((_, result)) if result.outcome.passes() => self.teacher_ms,
            _ => None,
        }
    }

    /// When the commit window closes and the reveal window closes.
    pub fn windows(&self, params: &GateParams) -> Option<(u64, u64)> {
        let opens = self.voting_opens_ms()?;
        let commit_closes = opens.saturating_add(params.commit_window_ms);
        Some((
            commit_closes,
            commit_closes.saturating_add(params.reveal_window_ms),
        ))
    }

    /// The tally at `now_ms`: `None` before the reveal window closed.
    pub fn tally(&self, params: &GateParams, now_ms: u64) -> Option<TallyView> {
        let (_, reveal_closes) = self.windows(params)?;
        if now_ms < reveal_closes {
            return None;
        }
        let (mut accept_stake, mut refuse_stake) = (0u64, 0u64);
        for vote in &self.votes {
            match vote.reveal {
                Some((_, VoteVerdict::Accept)) => {
                    accept_stake = accept_stake.saturating_add(vote.stake);
                }
                Some((_, VoteVerdict::Refuse)) => {
                    refuse_stake = refuse_stake.saturating_add(vote.stake);
                }
                None => {}
            }
        }
        let total = u128::from(accept_stake) + u128::from(refuse_stake);
        let accepted = total > 0
            && total >= u128::from(params.quorum_stake)
            && u128::from(accept_stake) * 10_000 >= u128::from(params.accept_bps) * total;
        Some(TallyView {
            accept_stake,
            refuse_stake,
            accepted,
        })
    }

    /// The sample's state at `now_ms`.
    pub fn state(&self, params: &GateParams, now_ms: u64) -> SampleState {
        let Some((_, result)) = &self.teacher else {
            return SampleState::Submitted;
        };
        if !result.outcome.passes() {
            return SampleState::L1Refused;
        }
        let Some((commit_closes, reveal_closes)) = self.windows(params) else {
            return SampleState::Submitted;
        };
        if now_ms < commit_closes {
            return SampleState::Voting;
        }
        if now_ms < reveal_closes {
            return SampleState::Revealing;
        }
        match self.tally(params, now_ms) {
            Some(tally) if tally.accepted => match self.review_decided {
                Some(ReviewVerdict::Approve) => SampleState::Usable,
                Some(ReviewVerdict::Refuse) => SampleState::ReviewRefused,
                None if params.reviews_required == 0 => SampleState::Usable,
                None => SampleState::Accepted,
            },
            _ => SampleState::Refused,
        }
    }

    /// The history at `now_ms`: the records, and the tally once the reveal window closed,
    /// in time order.
    pub fn history_at(&self, params: &GateParams, now_ms: u64) -> Vec<GateEvent> {
        let mut history = self.history.clone();
        if let (Some(tally), Some((_, closes))) = (self.tally(params, now_ms), self.windows(params))
        {
            history.push(GateEvent {
                block: None,
                timestamp_ms: closes,
                event: "tally".into(),
                counted: true,
                detail: format!(
                    "{}: {} BLY accepting, {} BLY refusing",
                    if tally.accepted {
                        "accepted"
                    } else {
                        "refused"
                    },
                    tally.accept_stake,
                    tally.refuse_stake
                ),
            });
        }
        history.sort_by_key(|event| event.timestamp_ms);
        history
    }
}

/// Every sample on chain D and its gate records, replayed. Two views are equal when they were
/// replayed under the same settings from the same records ([`GateView::apply`] one block at a
/// time gives the view [`GateView::replay`] gives).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GateView {
    params: GateParams,
    samples: BTreeMap<BlockHash, SampleView>,
    /// Samples in chain order.
    order: Vec<BlockHash>,
    /// Commit block → (sample, index in its votes).
    commits: BTreeMap<BlockHash, (BlockHash, usize)>,
    /// Content hashes of the samples seen.
    hashes: BTreeSet<String>,
}

/// What a record would do, judged against the view.
enum Effect {
    Sample,
    Teacher(BlockHash),
    Commit(BlockHash),
    Reveal(BlockHash, usize),
    Review(Vec<BlockHash>),
}

impl GateView {
    /// An empty view under `params`.
    pub fn new(params: GateParams) -> Self {
        GateView {
            params,
            ..GateView::default()
        }
    }

    /// Replays `blocks` (chain order). `is_validator(author, height)` says whether `author`
    /// was in the Proof-of-Learning validator set in force at chain D height `height`.
    pub fn replay(
        params: GateParams,
        blocks: &[DataBlock],
        is_validator: &dyn Fn(Address, u64) -> bool,
    ) -> Self {
        let mut view = GateView::new(params);
        for block in blocks {
            view.apply(block, is_validator);
        }
        view
    }

    /// The settings the view was replayed under.
    pub fn params(&self) -> &GateParams {
        &self.params
    }

    /// Sample `hash`, if chain D holds it.
    pub fn sample(&self, hash: &BlockHash) -> Option<&SampleView> {
        self.samples.get(hash)
    }

    /// Every sample in chain order.
    pub fn samples(&self) -> impl Iterator<Item = &SampleView> {
        self.order.iter().filter_map(|hash| self.samples.get(hash))
    }

    /// Samples in `state` at `now_ms`, in chain order.
    pub fn in_state(&self, state: SampleState, now_ms: u64) -> Vec<&SampleView> {
        self.samples()
            .filter(|sample| sample.state(&self.params, now_ms) == state)
            .collect()
    }

    /// Whether sample `hash` is usable at `now_ms`.
    pub fn is_usable(&self, hash: &BlockHash, now_ms: u64) -> bool {
        self.samples
            .get(hash)
            .is_some_and(|sample| sample.state(&self.params, now_ms) == SampleState::Usable)
    }

    /// The sample vote commit `commit` is about, and the vote.
    pub fn commit(&self, commit: &BlockHash) -> Option<(&SampleView, &VoteView)> {
        let (sample, index) = self.commits.get(commit)?;
        let view = self.samples.get(sample)?;
        Some((view, view.votes.get(*index)?))
    }

    /// Whether the record in `block` would count if appended as it is: the reason it would
    /// not, as a typed error. The node checks this before it writes a gate record.
    pub fn check(
        &self,
        block: &DataBlock,
        is_validator: &dyn Fn(Address, u64) -> bool,
    ) -> Result<(), GateError> {
        self.judge(block, is_validator).map(|_| ())
    }

    /// Applies one block: counted or, with the reason, written into the history of the
    /// samples it names.
    pub fn apply(&mut self, block: &DataBlock, is_validator: &dyn Fn(Address, u64) -> bool) {
        match self.judge(block, is_validator) {
            Ok(effect) => self.take(block, effect),
            Err(error) => self.note_ignored(block, &error),
        }
    }

    fn judge(
        &self,
        block: &DataBlock,
        is_validator: &dyn Fn(Address, u64) -> bool,
    ) -> Result<Effect, GateError> {
        let at = block.timestamp_ms;
        match &block.record {
            DataRecord::Sample(_) => Ok(Effect::Sample),
            DataRecord::TeacherResult(TeacherResult { sample, .. }) => {
                let view = self.known(sample)?;
                if view.teacher.is_some() {
                    return Err(self.wrong_state(view, at, "submitted"));
                }
                Ok(Effect::Teacher(*sample))
            }
            DataRecord::VoteCommit(VoteCommit {
                sample,
                voter,
                stake,
                ..
            }) => {
                let view = self.known(sample)?;
                if view.state(&self.params, at) != SampleState::Voting {
                    return Err(self.wrong_state(view, at, "voting"));
                }
                if *voter == view.sample.contributor {
                    return Err(GateError::OwnSample {
                        sample: *sample,
                        voter: *voter,
                    });
                }
                if *stake < self.params.vote_stake_min {
                    return Err(GateError::StakeTooLow {
                        stake: *stake,
                        min: self.params.vote_stake_min,
                    });
                }
                if view.votes.iter().any(|vote| vote.voter == *voter) {
                    return Err(GateError::AlreadyVoted {
                        sample: *sample,
                        voter: *voter,
                    });
                }
                Ok(Effect::Commit(*sample))
            }
            DataRecord::VoteReveal(reveal) => {
                let (sample, index) =
                    *self
                        .commits
                        .get(&reveal.commit)
                        .ok_or(GateError::UnknownCommit {
                            block: reveal.commit,
                        })?;
                let view = self.known(&sample)?;
                let vote = &view.votes[index];
                if vote.reveal.is_some() {
                    return Err(GateError::AlreadyRevealed {
                        commit: reveal.commit,
                    });
                }
                if view.state(&self.params, at) != SampleState::Revealing {
                    return Err(self.wrong_state(view, at, "revealing"));
                }
                check_reveal(
                    &VoteCommit {
                        sample,
                        voter: vote.voter,
                        commitment: vote.commitment.clone(),
                        stake: vote.stake,
                    },
                    reveal,
                )?;
                Ok(Effect::Reveal(sample, index))
            }
            DataRecord::Review(Review { samples, .. }) => {
                if !is_validator(block.author, block.height) {
                    return Err(GateError::NotAValidator {
                        author: block.author,
                    });
                }
                for sample in samples {
                    let view = self.known(sample)?;
                    if view.state(&self.params, at) != SampleState::Accepted {
                        return Err(self.wrong_state(view, at, "accepted"));
                    }
                    if view
                        .reviews
                        .iter()
                        .any(|(_, reviewer, _)| *reviewer == block.author)
                    {
                        return Err(self.wrong_state(view, at, "accepted"));
                    }
                }
                Ok(Effect::Review(samples.clone()))
            }
        }
    }

    fn known(&self, sample: &BlockHash) -> Result<&SampleView, GateError> {
        self.samples
            .get(sample)
            .ok_or(GateError::UnknownSample { block: *sample })
    }

    fn wrong_state(&self, view: &SampleView, at: u64, needed: &'static str) -> GateError {
        GateError::WrongState {
            sample: view.hash,
            state: view.state(&self.params, at).name(),
            needed,
        }
    }

    fn take(&mut self, block: &DataBlock, effect: Effect) {
        let event = |detail: String| GateEvent {
            block: Some(block.hash),
            timestamp_ms: block.timestamp_ms,
            event: block.record.type_name().to_owned(),
            counted: true,
            detail,
        };
        match (effect, &block.record) {
            (Effect::Sample, DataRecord::Sample(sample)) => {
                let mut history = vec![event(format!(
                    "{} bytes, {}, {}",
                    sample.content.text_bytes(),
                    sample.licence,
                    sample.language
                ))];
                if !self.hashes.insert(sample.content_hash.clone()) {
                    history[0]
                        .detail
                        .push_str(" (an exact duplicate of an earlier sample)");
                }
                self.order.push(block.hash);
                self.samples.insert(
                    block.hash,
                    SampleView {
                        hash: block.hash,
                        height: block.height,
                        timestamp_ms: block.timestamp_ms,
                        author: block.author,
                        sample: sample.clone(),
                        teacher: None,
                        teacher_ms: None,
                        votes: Vec::new(),
                        reviews: Vec::new(),
                        history,
                        review_decided: None,
                    },
                );
            }
            (Effect::Teacher(sample), DataRecord::TeacherResult(result)) => {
                if let Some(view) = self.samples.get_mut(&sample) {
                    view.history.push(event(format!(
                        "{}: {:.3} bits/byte (band {:.3}–{:.3})",
                        result.outcome.name(),
                        result.bits_per_byte_micros as f64 / 1e6,
                        result.band_min_micros as f64 / 1e6,
                        result.band_max_micros as f64 / 1e6
                    )));
                    view.teacher = Some((block.hash, result.clone()));
                    view.teacher_ms = Some(block.timestamp_ms);
                }
            }
            (Effect::Commit(sample), DataRecord::VoteCommit(commit)) => {
                if let Some(view) = self.samples.get_mut(&sample) {
                    view.history.push(event(format!(
                        "{} committed with {} BLY",
                        commit.voter, commit.stake
                    )));
                    self.commits.insert(block.hash, (sample, view.votes.len()));
                    view.votes.push(VoteView {
                        commit: block.hash,
                        voter: commit.voter,
                        stake: commit.stake,
                        commitment: commit.commitment.clone(),
                        reveal: None,
                    });
                }
            }
            (Effect::Reveal(sample, index), DataRecord::VoteReveal(VoteReveal { verdict, .. })) => {
                if let Some(view) = self.samples.get_mut(&sample) {
                    let vote = &mut view.votes[index];
                    vote.reveal = Some((block.hash, *verdict));
                    let detail = format!("{} revealed {}", vote.voter, verdict.name());
                    view.history.push(event(detail));
                }
            }
            (Effect::Review(samples), DataRecord::Review(review)) => {
                for sample in samples {
                    if let Some(view) = self.samples.get_mut(&sample) {
                        view.history.push(event(format!(
                            "{} {}{}",
                            block.author,
                            review.verdict.name(),
                            if review.note.is_empty() {
                                String::new()
                            } else {
                                format!(": {}", review.note)
                            }
                        )));
                        view.reviews
                            .push((block.hash, block.author, review.verdict));
                        let approvals = view
                            .reviews
                            .iter()
                            .filter(|(_, _, verdict)| *verdict == ReviewVerdict::Approve)
                            .count();
                        view.review_decided = match review.verdict {
                            ReviewVerdict::Refuse => Some(ReviewVerdict::Refuse),
                            ReviewVerdict::Approve
                                if approvals as u64 >= u64::from(self.params.reviews_required) =>
                            {
                                Some(ReviewVerdict::Approve)
                            }
                            ReviewVerdict::Approve => None,
                        };
                    }
                }
            }
            _ => debug_assert!(false, "an effect always matches its record"),
        }
    }

    fn note_ignored(&mut self, block: &DataBlock, error: &GateError) {
        let named: Vec<BlockHash> = match &block.record {
            DataRecord::TeacherResult(result) => vec![result.sample],
            DataRecord::VoteCommit(commit) => vec![commit.sample],
            DataRecord::VoteReveal(reveal) => self
                .commits
                .get(&reveal.commit)
                .map(|(sample, _)| vec![*sample])
                .unwrap_or_default(),
            DataRecord::Review(review) => review.samples.clone(),
            DataRecord::Sample(_) => Vec::new(),
        };
        for sample in named {
            if let Some(view) = self.samples.get_mut(&sample) {
                view.history.push(GateEvent {
                    block: Some(block.hash),
                    timestamp_ms: block.timestamp_ms,
                    event: block.record.type_name().to_owned(),
                    counted: false,
                    detail: error.to_string(),
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate_record::{L1Outcome, vote_commitment};
    use crate::sample::{Licence, SampleContent};

    const T0: u64 = 1_800_000_000_000;

    fn params() -> GateParams {
        GateParams {
            commit_window_ms: 1_000,
            reveal_window_ms: 1_000,
            accept_bps: 6667,
            quorum_stake: 20,
            vote_stake_min: 5,
            reviews_required: 1,
        }
    }

    fn wallet(byte: u8) -> Address {
        Address([byte; 20])
    }

    const VALIDATOR: u8 = 0xa0;

    fn is_validator(author: Address, _height: u64) -> bool {
        author == wallet(VALIDATOR)
    }

    /// Builds chain D's documents one block at a time, a millisecond clock per block.
    struct Chain {
        blocks: Vec<DataBlock>,
    }

    impl Chain {
        fn new() -> Self {
            Chain { blocks: Vec::new() }
        }

        fn push(&mut self, author: Address, at: u64, record: DataRecord) -> BlockHash {
            let height = self.blocks.len() as u64 + 1;
            let hash = BlockHash(*blake3::hash(&height.to_le_bytes()).as_bytes());
            self.blocks.push(DataBlock {
                hash,
                author,
                height,
                timestamp_ms: at,
                record,
            });
            hash
        }

        fn sample(&mut self, text: &str) -> BlockHash {
            let sample = Sample::new(
                SampleContent::Text { text: text.into() },
                Licence::Cc0,
                "own writing",
                "en",
                wallet(1),
            )
            .unwrap();
            self.push(wallet(1), T0, DataRecord::Sample(sample))
        }

        fn teacher(&mut self, sample: BlockHash, outcome: L1Outcome) -> BlockHash {
            self.push(
                wallet(0xee),
                T0 + 10,
                DataRecord::TeacherResult(TeacherResult {
                    sample,
                    bits_per_byte_micros: 2_000_000,
                    band_min_micros: 500_000,
                    band_max_micros: 6_000_000,
                    outcome,
                }),
            )
        }

        fn commit(
            &mut self,
            sample: BlockHash,
            voter: u8,
            verdict: VoteVerdict,
            stake: u64,
            at: u64,
        ) -> BlockHash {
            let salt = [voter; 32];
            self.push(
                wallet(voter),
                at,
                DataRecord::VoteCommit(VoteCommit {
                    sample,
                    voter: wallet(voter),
                    commitment: vote_commitment(sample, verdict, &salt, wallet(voter)),
                    stake,
                }),
            )
        }

        fn reveal(
            &mut self,
            commit: BlockHash,
            voter: u8,
            verdict: VoteVerdict,
            at: u64,
        ) -> BlockHash {
            self.push(
                wallet(voter),
                at,
                DataRecord::VoteReveal(VoteReveal {
                    commit,
                    verdict,
                    salt: hex::encode([voter; 32]),
                }),
            )
        }

        fn review(&mut self, author: u8, sample: BlockHash, verdict: ReviewVerdict, at: u64) {
            self.push(
                wallet(author),
                at,
                DataRecord::Review(Review {
                    samples: vec![sample],
                    verdict,
                    note: String::new(),
                }),
            );
        }

        fn view(&self) -> GateView {
            GateView::replay(params(), &self.blocks, &is_validator)
        }
    }

    // Voting opens at T0 + 10: commits until T0 + 1010, reveals until T0 + 2010.
    const COMMIT: u64 = T0 + 100;
    const REVEAL: u64 = T0 + 1_100;
    const CLOSED: u64 = T0 + 2_010;

    #[test]
    fn a_sample_walks_every_state_as_its_records_arrive() {
        let mut chain = Chain::new();
        let sample = chain.sample("A sentence long enough to be a sample.");
        let state =
            |chain: &Chain, now| chain.view().sample(&sample).unwrap().state(&params(), now);
        assert_eq!(state(&chain, T0), SampleState::Submitted);
        chain.teacher(sample, L1Outcome::Pass);
        assert_eq!(state(&chain, COMMIT), SampleState::Voting);
        let a = chain.commit(sample, 2, VoteVerdict::Accept, 15, COMMIT);
        let b = chain.commit(sample, 3, VoteVerdict::Accept, 10, COMMIT);
        assert_eq!(state(&chain, REVEAL), SampleState::Revealing);
        chain.reveal(a, 2, VoteVerdict::Accept, REVEAL);
        chain.reveal(b, 3, VoteVerdict::Accept, REVEAL);
        assert_eq!(state(&chain, CLOSED - 1), SampleState::Revealing);
        assert_eq!(state(&chain, CLOSED), SampleState::Accepted);
        chain.review(VALIDATOR, sample, ReviewVerdict::Approve, CLOSED + 5);
        let view = chain.view();
        assert_eq!(
            view.sample(&sample).unwrap().state(&params(), CLOSED + 5),
            SampleState::Usable
        );
        assert!(view.is_usable(&sample, CLOSED + 5));
        let events: Vec<_> = view
            .sample(&sample)
            .unwrap()
            .history_at(&params(), CLOSED + 5)
            .into_iter()
            .map(|event| (event.event, event.counted))
            .collect();
        let expected = [
            "sample",
            "teacher_result",
            "vote_commit",
            "vote_commit",
            "vote_reveal",
            "vote_reveal",
            "tally",
            "review",
        ];
        assert_eq!(
            events,
            expected.map(|name| (name.to_owned(), true)).to_vec()
        );
    }

    #[test]
    fn the_teacher_refusing_stops_the_sample_and_later_results_do_not_count() {
        let mut chain = Chain::new();
        let sample = chain.sample("zq xv jk wq pz qx zk vj qp xz kq.");
        chain.teacher(sample, L1Outcome::TooHigh);
        chain.teacher(sample, L1Outcome::Pass);
        let view = chain.view();
        let found = view.sample(&sample).unwrap();
        assert_eq!(found.state(&params(), CLOSED), SampleState::L1Refused);
        assert!(!found.history[2].counted);
        // A vote on a refused sample does not count either.
        assert!(matches!(
            view.check(
                &DataBlock {
                    hash: BlockHash([9; 32]),
                    author: wallet(2),
                    height: 9,
                    timestamp_ms: COMMIT,
                    record: DataRecord::VoteCommit(VoteCommit {
                        sample,
                        voter: wallet(2),
                        commitment: "0".repeat(64),
                        stake: 10,
                    }),
                },
                &is_validator
            ),
            Err(GateError::WrongState {
                state: "l1_refused",
                needed: "voting",
                ..
            })
        ));
    }

    #[test]
    fn a_late_reveal_does_not_count_and_an_early_one_neither() {
        let mut chain = Chain::new();
        let sample = chain.sample("A sentence long enough to be a sample.");
        chain.teacher(sample, L1Outcome::Pass);
        let early = chain.commit(sample, 2, VoteVerdict::Refuse, 50, COMMIT);
        let late = chain.commit(sample, 3, VoteVerdict::Refuse, 50, COMMIT);
        let accepting = chain.commit(sample, 4, VoteVerdict::Accept, 20, COMMIT);
        // Revealed in the commit window: too early, not counted (and copyable, hence refused).
        chain.reveal(early, 2, VoteVerdict::Refuse, COMMIT + 1);
        chain.reveal(accepting, 4, VoteVerdict::Accept, REVEAL);
        // Revealed after the window closed: not counted.
        chain.reveal(late, 3, VoteVerdict::Refuse, CLOSED);
        let view = chain.view();
        let found = view.sample(&sample).unwrap();
        let tally = found.tally(&params(), CLOSED).unwrap();
        assert_eq!((tally.accept_stake, tally.refuse_stake), (20, 0));
        assert!(tally.accepted);
        assert_eq!(found.state(&params(), CLOSED), SampleState::Accepted);
        let ignored: Vec<_> = found
            .history
            .iter()
            .filter(|event| !event.counted)
            .map(|event| event.detail.clone())
            .collect();
        assert_eq!(ignored.len(), 2, "{ignored:?}");
        assert!(
            ignored[0].contains("is voting, not revealing"),
            "{ignored:?}"
        );
        assert!(
            ignored[1].contains("is accepted, not revealing"),
            "{ignored:?}"
        );
    }

    #[test]
    fn a_mismatching_reveal_does_not_count() {
        let mut chain = Chain::new();
        let sample = chain.sample("A sentence long enough to be a sample.");
        chain.teacher(sample, L1Outcome::Pass);
        let commit = chain.commit(sample, 2, VoteVerdict::Refuse, 50, COMMIT);
        // Committed refuse, reveals accept: refused with the typed error, not counted.
        let reveal = DataBlock {
            hash: BlockHash([8; 32]),
            author: wallet(2),
            height: 9,
            timestamp_ms: REVEAL,
            record: DataRecord::VoteReveal(VoteReveal {
                commit,
                verdict: VoteVerdict::Accept,
                salt: hex::encode([2u8; 32]),
            }),
        };
        let view = chain.view();
        assert!(matches!(
            view.check(&reveal, &is_validator),
            Err(GateError::RevealMismatch { commit: named, .. }) if named == commit
        ));
        chain.reveal(commit, 2, VoteVerdict::Accept, REVEAL);
        let found = chain.view().sample(&sample).cloned().unwrap();
        assert_eq!(found.votes[0].reveal, None);
        // No vote counted: under the quorum, refused.
        assert_eq!(found.state(&params(), CLOSED), SampleState::Refused);
    }

    #[test]
    fn votes_weigh_by_stake_not_by_count() {
        let mut chain = Chain::new();
        let sample = chain.sample("A sentence long enough to be a sample.");
        chain.teacher(sample, L1Outcome::Pass);
        // Three small refusals against one large acceptance: 3 × 10 refusing, 70 accepting,
        // 70 % of 100 ≥ 66.67 %: accepted.
        let mut commits = Vec::new();
        for (voter, verdict, stake) in [
            (2, VoteVerdict::Refuse, 10),
            (3, VoteVerdict::Refuse, 10),
            (4, VoteVerdict::Refuse, 10),
            (5, VoteVerdict::Accept, 70),
        ] {
            commits.push((
                chain.commit(sample, voter, verdict, stake, COMMIT),
                voter,
                verdict,
            ));
        }
        for (commit, voter, verdict) in &commits {
            chain.reveal(*commit, *voter, *verdict, REVEAL);
        }
        let view = chain.view();
        let tally = view
            .sample(&sample)
            .unwrap()
            .tally(&params(), CLOSED)
            .unwrap();
        assert_eq!((tally.accept_stake, tally.refuse_stake), (70, 30));
        assert!(tally.accepted);

        // 60 accepting against 40 refusing is under two thirds: refused.
        let mut chain = Chain::new();
        let sample = chain.sample("Another sentence long enough to be a sample.");
        chain.teacher(sample, L1Outcome::Pass);
        let a = chain.commit(sample, 2, VoteVerdict::Accept, 60, COMMIT);
        let b = chain.commit(sample, 3, VoteVerdict::Refuse, 40, COMMIT);
        chain.reveal(a, 2, VoteVerdict::Accept, REVEAL);
        chain.reveal(b, 3, VoteVerdict::Refuse, REVEAL);
        let found = chain.view().sample(&sample).cloned().unwrap();
        assert_eq!(found.state(&params(), CLOSED), SampleState::Refused);
    }

    #[test]
    fn commits_outside_the_rules_do_not_count() {
        let mut chain = Chain::new();
        let sample = chain.sample("A sentence long enough to be a sample.");
        chain.teacher(sample, L1Outcome::Pass);
        let view = chain.view();
        let commit = |voter: u8, stake, at| DataBlock {
            hash: BlockHash([7; 32]),
            author: wallet(voter),
            height: 5,
            timestamp_ms: at,
            record: DataRecord::VoteCommit(VoteCommit {
                sample,
                voter: wallet(voter),
                commitment: "0".repeat(64),
                stake,
            }),
        };
        let code = |block| view.check(&block, &is_validator).unwrap_err().code();
        assert_eq!(code(commit(1, 10, COMMIT)), "own_sample");
        assert_eq!(code(commit(2, 4, COMMIT)), "stake_too_low");
        assert_eq!(code(commit(2, 10, REVEAL)), "wrong_state");
        view.check(&commit(2, 5, COMMIT), &is_validator).unwrap();
        chain.commit(sample, 2, VoteVerdict::Accept, 5, COMMIT);
        assert_eq!(
            chain
                .view()
                .check(&commit(2, 5, COMMIT), &is_validator)
                .unwrap_err()
                .code(),
            "already_voted"
        );
    }

    #[test]
    fn a_review_by_a_non_validator_is_refused_and_does_not_count() {
        let mut chain = Chain::new();
        let sample = chain.sample("A sentence long enough to be a sample.");
        chain.teacher(sample, L1Outcome::Pass);
        let a = chain.commit(sample, 2, VoteVerdict::Accept, 30, COMMIT);
        chain.reveal(a, 2, VoteVerdict::Accept, REVEAL);
        let review = |author: u8| DataBlock {
            hash: BlockHash([6; 32]),
            author: wallet(author),
            height: 9,
            timestamp_ms: CLOSED,
            record: DataRecord::Review(Review {
                samples: vec![sample],
                verdict: ReviewVerdict::Approve,
                note: String::new(),
            }),
        };
        let view = chain.view();
        assert_eq!(
            view.check(&review(0x33), &is_validator),
            Err(GateError::NotAValidator {
                author: wallet(0x33)
            })
        );
        view.check(&review(VALIDATOR), &is_validator).unwrap();
        chain.review(0x33, sample, ReviewVerdict::Approve, CLOSED);
        let found = chain.view().sample(&sample).cloned().unwrap();
        assert_eq!(found.state(&params(), CLOSED), SampleState::Accepted);
        assert!(found.reviews.is_empty());
        // A validator's refusal refuses it for good.
        chain.review(VALIDATOR, sample, ReviewVerdict::Refuse, CLOSED + 1);
        chain.review(VALIDATOR, sample, ReviewVerdict::Approve, CLOSED + 2);
        let found = chain.view().sample(&sample).cloned().unwrap();
        assert_eq!(
            found.state(&params(), CLOSED + 3),
            SampleState::ReviewRefused
        );
    }

    #[test]
    fn replaying_the_same_blocks_gives_the_same_states() {
        let mut chain = Chain::new();
        let samples: Vec<_> = (0..3)
            .map(|index| chain.sample(&format!("Sample number {index} of the replay test.")))
            .collect();
        chain.teacher(samples[0], L1Outcome::Pass);
        chain.teacher(samples[1], L1Outcome::TooLow);
        let states = |view: &GateView| -> Vec<_> {
            view.samples()
                .map(|sample| (sample.hash, sample.state(&params(), CLOSED)))
                .collect()
        };
        let first = chain.view();
        assert_eq!(states(&first), states(&chain.view()));
        assert_eq!(
            states(&first)
                .into_iter()
                .map(|(_, state)| state)
                .collect::<Vec<_>>(),
            [
                SampleState::Refused,
                SampleState::L1Refused,
                SampleState::Submitted
            ]
        );
        assert_eq!(first.in_state(SampleState::Submitted, CLOSED).len(), 1);
        assert_eq!("review_refused".parse(), Ok(SampleState::ReviewRefused));
    }
}
