//! Chain D's gate state kept up to date: the node holds one [`GateState`] (every sample's gate
//! state, the validator sets in force by height, and the L0 index of every sample) and advances
//! it from the last height it read, instead of replaying chain D on every request, submission
//! and worker pass.
//!
//! Why advancing equals replaying: chain D is append-only and [`GateView::replay`] is
//! [`GateView::apply`] over the blocks in (height, hash) order. On a linear chain D every new
//! block lands above the height the state was read to, so applying the blocks above it, in
//! order, gives the view a replay from genesis gives. Where chain D keeps forks
//! (`chain.fork_rules.dataset: allow_forks`) a block can land beside one already read: the state
//! counts the blocks it read, and when chain D holds more blocks at the heights read than that
//! count, it is replayed afresh. Gate states that change with time alone (a reveal window
//! closing) are not stored: they are derived at the moment asked ([`SampleView::state`]).
//!
//! The L0 index holds every sample ever seen, in chain order
//! ([`blyan_quality::AcceptedIndex::insert_every`]); a screen judges against those that count at
//! that moment (not refused), which is what an index rebuilt from the samples that count would
//! hold.

use std::collections::{BTreeMap, BTreeSet};

use blyan_chain::{BlockHash, ChainId, ChainStore};
use blyan_primitives::Address;
use blyan_quality::{
    AcceptedIndex, DataBlock, DataRecord, GateParams, GateView, L0Config, Sample, SampleState,
    SampleView, Signature, screen_signed_where,
};

use crate::datasets::{Refusal, ValidatorHistory};
use crate::{Error, Result};

/// Chain D's gate state as of the height it was read to.
#[derive(Debug)]
pub struct GateState {
    view: GateView,
    validators: ValidatorHistory,
    index: AcceptedIndex,
    l0: L0Config,
    /// The greatest chain D height read.
    height: u64,
    /// Chain D blocks (of any kind, above genesis) read.
    read: u64,
}

impl GateState {
    /// Chain D replayed from genesis under `params`, with the validator sets of chain D over
    /// `configured`.
    pub fn replay(
        chain: &ChainStore,
        params: GateParams,
        configured: &[blyan_pol::ValidatorStake],
    ) -> Result<GateState> {
        let mut state = GateState {
            view: GateView::new(params),
            validators: ValidatorHistory::empty(configured),
            index: AcceptedIndex::new(),
            l0: L0Config::default(),
            height: 0,
            read: 0,
        };
        state.advance(chain)?;
        Ok(state)
    }

    /// Every sample's state, as a replay of chain D up to [`GateState::height`] gives it.
    pub fn view(&self) -> &GateView {
        &self.view
    }

    /// The greatest chain D height read.
    pub fn height(&self) -> u64 {
        self.height
    }

    /// Whether `address` held stake in the validator set in force at chain D height `height`.
    pub fn is_validator(&self, address: Address, height: u64) -> bool {
        self.validators.is_validator(address, height)
    }

    /// Reads what chain D gained above [`GateState::height`]. `false` when chain D holds blocks
    /// at heights already read that were not read (a fork beside them): the state is stale and
    /// must be replayed.
    pub fn advance(&mut self, chain: &ChainStore) -> Result<bool> {
        let info = chain.chain_info(ChainId::Dataset);
        let to = info.tip.height;
        if to > self.height {
            let from = self.height + 1;
            // Validator sets first: a review counts by the set in force below its height,
            // which the same range (or an earlier one) holds.
            self.validators.advance(chain, from, to)?;
            let (blocks, read) =
                DataBlock::scan_heights(chain, from, to).map_err(Error::ChainFailed)?;
            for block in &blocks {
                let validators = &self.validators;
                self.view.apply(block, &|address, height| {
                    validators.is_validator(address, height)
                });
                if let DataRecord::Sample(sample) = &block.record {
                    let signature = Signature::of(&sample.normalized_text());
                    self.index.insert_every(sample, &signature, block.hash);
                }
            }
            self.height = to;
            self.read += read;
        }
        // `info` counts the genesis block; every other block it counts lies at a height ≤ `to`.
        Ok(self.read >= info.blocks.saturating_sub(1))
    }

    /// The L0 screen of a new `sample` against every sample that counts at `now_ms` (not
    /// refused).
    pub fn screen_new(&self, sample: &Sample, now_ms: u64) -> std::result::Result<(), Refusal> {
        let params = self.view.params();
        let counts = |id: BlockHash| {
            self.view
                .sample(&id)
                .is_some_and(|other| !refused(other.state(params, now_ms)))
        };
        screen_signed_where(sample, &self.index, &self.l0, &counts)
            .map(|_| ())
            .map_err(Refusal::L0)
    }

    /// The L0 screen of samples already on chain D (appended without a node's submission),
    /// `waiting` in chain order: each against the samples before it that count at `now_ms`,
    /// less those this pass refused, so two copies of one text refuse the later copy only.
    pub fn screen_on_chain(
        &self,
        waiting: &[BlockHash],
        now_ms: u64,
    ) -> BTreeMap<BlockHash, std::result::Result<(), Refusal>> {
        let params = self.view.params();
        let mut refused_now = BTreeSet::new();
        let mut screened = BTreeMap::new();
        for hash in waiting {
            let Some(sample) = self.view.sample(hash) else {
                continue;
            };
            let position = (sample.height, sample.hash);
            let counts = |id: BlockHash| {
                self.view.sample(&id).is_some_and(|other| {
                    (other.height, other.hash) < position
                        && !refused_now.contains(&id)
                        && !refused(other.state(params, now_ms))
                })
            };
            let outcome = screen_signed_where(&sample.sample, &self.index, &self.l0, &counts)
                .map(|_| ())
                .map_err(Refusal::L0);
            if outcome.is_err() {
                refused_now.insert(*hash);
            }
            screened.insert(*hash, outcome);
        }
        screened
    }

    /// The samples in `state` at `now_ms`, in chain order.
    pub fn in_state(&self, state: SampleState, now_ms: u64) -> Vec<&SampleView> {
        self.view.in_state(state, now_ms)
    }
}

/// Whether a sample in `state` is out of the gates for good.
pub(crate) fn refused(state: SampleState) -> bool {
    matches!(
        state,
        SampleState::L1Refused | SampleState::Refused | SampleState::ReviewRefused
    )
}

/// The node's [`GateState`], advanced when read.
#[derive(Debug, Default)]
pub(crate) struct GateCache {
    state: std::sync::Mutex<Option<GateState>>,
    replays: std::sync::atomic::AtomicU64,
}

impl GateCache {
    /// Runs `read` on the state brought up to date with `chain` (blocking: call it off the
    /// async threads). The first call, and a call that finds the state stale, replays chain D.
    pub(crate) fn with<T>(
        &self,
        chain: &ChainStore,
        params: &GateParams,
        configured: &[blyan_pol::ValidatorStake],
        read: impl FnOnce(&GateState) -> T,
    ) -> Result<T> {
        let mut guard = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let current = match guard.as_mut() {
            Some(state) => state.advance(chain)?,
            None => false,
        };
        if !current {
            // A failed replay leaves nothing cached, so the next call tries again.
            *guard = None;
            self.replays
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            *guard = Some(GateState::replay(chain, params.clone(), configured)?);
        }
        let state = guard
            .as_ref()
            .expect("the state was advanced or replayed just above");
        Ok(read(state))
    }

    /// Replays of chain D from genesis since the node started (the first read, then only a
    /// stale state's).
    pub(crate) fn replays(&self) -> u64 {
        self.replays.load(std::sync::atomic::Ordering::Relaxed)
    }
}
