//! Batched decoding of concurrent requests, by combining: a stream that wants its next token
//! leaves its step (token, KV cache, expert counts) in a queue and waits for the model; whoever
//! holds the model next runs the waiting steps as one batch ([`Model::forward_batch`]) and
//! hands each its logits. No scheduler thread: the streams' own threads take turns running
//! the batch, and a lone stream runs exactly the unbatched forward pass.
//!
//! Streams answered by one batch come back for their next step a few microseconds apart (each
//! samples its token first), so the holder of the model waits for every decoding stream's step
//! before it runs a batch, but never longer than half the last forward pass took: a stream
//! whose reader stalls slows the others by at most that. Prefill (a whole prompt) is not
//! batched; steps that queue up while one runs are batched together after it.
//!
//! Turns on the model have a [`Priority`]: a prefill asking at [`Priority::High`] (the node
//! gives it to paid chats) takes the model as soon as the forward pass in flight ends, before
//! any work waiting at [`Priority::Normal`] (other prefills, the next decoding batch, which
//! stops gathering and yields). High prefills wait for each other, in no set order; normal
//! work waits while any high prefill does.
//!
//! Decoding steps have the priority of their stream too: when high steps are queued, the next
//! batch runs them alone (a smaller batch, so a shorter pass) without waiting for normal
//! streams' steps, but never more than [`HIGH_BATCHES_IN_A_ROW_MAX`] times in a row while
//! normal steps wait: those then run, with the high steps queued, in the next batch. So normal
//! streams are slowed by high ones, never stopped.

use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use tch::Device;

use crate::error::{MoeError, Result};
use crate::model::{DecodeStep, ExpertUsage, KvCache, Logits, Model};

/// Whose turn on the model comes first: see the [module](self) and
/// [`crate::TokenStream::with_priority`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
#[non_exhaustive]
pub enum Priority {
    /// In turn with other normal work (decoding batches, other prefills).
    #[default]
    Normal,
    /// A prefill that goes before every turn waiting at [`Priority::Normal`].
    High,
}

/// Batches of only [`Priority::High`] steps run in a row while normal steps wait, at most; the
/// next batch takes every queued step in order.
pub const HIGH_BATCHES_IN_A_ROW_MAX: u32 = 2;

/// Most decoding steps run in one batch by default.
pub const DECODE_BATCH_MAX: usize = 16;
/// Longest the holder of the model waits for other streams' steps before running a batch.
const GATHER_WAIT_MAX: Duration = Duration::from_millis(20);

/// Decoding-step counters of a [`crate::Generator`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DecodeStats {
    /// Decoding steps run (one token of one request each; prefills not counted).
    pub steps: u64,
    /// Forward passes those steps took: `steps / batches` is the mean batch size.
    pub batches: u64,
    /// Batches that failed and were re-run request by request to find whose step failed.
    pub batches_split: u64,
}

/// One request's decoding step, from queued to answered.
#[derive(Debug, Default)]
enum Slot {
    /// Waiting for a forward pass.
    Waiting {
        token: u32,
        cache: KvCache,
        usage: ExpertUsage,
    },
    /// Answered: the request's logits (or its error), and its state back.
    Done {
        logits: Result<Vec<f32>>,
        cache: KvCache,
        usage: ExpertUsage,
    },
    /// Between the two, while a batch runs.
    #[default]
    Running,
}

/// A step's slot, and the signal its owner waits on: answered, or the model is free.
#[derive(Debug)]
struct SlotCell {
    /// The priority of the step's stream.
    priority: Priority,
    state: Mutex<Slot>,
    changed: Condvar,
}

type SlotRef = Arc<SlotCell>;

/// How long a waiting step sleeps before it checks again whether the model is free (a missed
/// hand-over costs at most this).
const MODEL_POLL: Duration = Duration::from_millis(2);

/// Who holds a [`Turns`] and who waits for it.
#[derive(Debug, Default)]
struct TurnState {
    held: bool,
    /// Threads waiting in [`Turns::take`], by priority (`[normal, high]`).
    waiting: [usize; 2],
    /// Priorities of the turns granted, in order (what the tests assert).
    #[cfg(test)]
    granted: Vec<Priority>,
}

impl TurnState {
    /// Whether a thread asking at `priority` may take the turn now.
    fn free_for(&self, priority: Priority) -> bool {
        !self.held && (priority == Priority::High || self.waiting[1] == 0)
    }

    fn grant(&mut self, _priority: Priority) {
        self.held = true;
        #[cfg(test)]
        self.granted.push(_priority);
    }
}

/// A mutex whose turns go by [`Priority`]: a waiting [`Priority::High`] thread takes it before
/// any [`Priority::Normal`] one, and [`Turns::try_take`] at normal priority is refused while a
/// high one waits.
#[derive(Debug)]
struct Turns<T> {
    /// Locked only by the holder of the turn, so never contended for long.
    value: Mutex<T>,
    state: Mutex<TurnState>,
    /// Signalled when the turn is given back.
    freed: Condvar,
}

/// A turn on a [`Turns`]: the value, until dropped.
pub(crate) struct Turn<'a, T> {
    value: MutexGuard<'a, T>,
    state: &'a Mutex<TurnState>,
    freed: &'a Condvar,
}

impl<T> std::ops::Deref for Turn<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.value
    }
}

impl<T> std::ops::DerefMut for Turn<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.value
    }
}

impl<T> Drop for Turn<'_, T> {
    fn drop(&mut self) {
        // The next holder locks `value` after this guard's fields drop, a moment later. A
        // poisoned state (a panic between two lines of `Turns`) cannot be: it holds no user
        // code, so its data is taken as it is.
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        state.held = false;
        drop(state);
        self.freed.notify_all();
    }
}

impl<T> Turns<T> {
    fn new(value: T) -> Self {
        Self {
            value: Mutex::new(value),
            state: Mutex::new(TurnState::default()),
            freed: Condvar::new(),
        }
    }

    /// Waits for the turn at `priority`.
    fn take(&self, priority: Priority) -> Result<Turn<'_, T>> {
        let index = usize::from(priority == Priority::High);
        let mut state = lock(&self.state)?;
        state.waiting[index] += 1;
        while !state.free_for(priority) {
            state = match self.freed.wait(state) {
                Ok(state) => state,
                Err(_) => return Err(MoeError::ModelPoisoned),
            };
        }
        state.waiting[index] -= 1;
        state.grant(priority);
        drop(state);
        self.turn()
    }

    /// The turn at `priority` if it is free now (at normal priority: and no high one waits).
    fn try_take(&self, priority: Priority) -> Result<Option<Turn<'_, T>>> {
        let mut state = lock(&self.state)?;
        if !state.free_for(priority) {
            return Ok(None);
        }
        state.grant(priority);
        drop(state);
        self.turn().map(Some)
    }

    /// After the state says the turn is this thread's: the value.
    fn turn(&self) -> Result<Turn<'_, T>> {
        let turn = Turn {
            value: match self.value.lock() {
                Ok(value) => value,
                Err(_) => {
                    // Give the turn back: the next thread finds the value poisoned too.
                    let _ = lock(&self.state).map(|mut state| state.held = false);
                    self.freed.notify_all();
                    return Err(MoeError::ModelPoisoned);
                }
            },
            state: &self.state,
            freed: &self.freed,
        };
        Ok(turn)
    }

    /// Whether a thread waits for the turn at [`Priority::High`].
    fn high_waiting(&self) -> Result<bool> {
        Ok(lock(&self.state)?.waiting[1] > 0)
    }

    #[cfg(test)]
    fn waiting(&self, priority: Priority) -> usize {
        let index = usize::from(priority == Priority::High);
        lock(&self.state).expect("not poisoned").waiting[index]
    }

    #[cfg(test)]
    fn granted(&self) -> Vec<Priority> {
        lock(&self.state).expect("not poisoned").granted.clone()
    }
}

/// The model, shared by every stream of a generator, and the steps waiting for it.
#[derive(Debug)]
pub(crate) struct Engine {
    model: Turns<Model>,
    waiting: Mutex<Vec<SlotRef>>,
    /// Signalled when a step joins `waiting`.
    arrived: Condvar,
    /// Streams past their prefill and not finished: the steps a batch may wait for (`[all,
    /// high]`).
    decoding: [AtomicUsize; 2],
    /// High-only batches run in a row while normal steps waited.
    high_batches_in_a_row: AtomicU32,
    /// Nanoseconds the last batch's forward pass took.
    last_batch_nanos: AtomicU64,
    batch_max: AtomicUsize,
    steps: AtomicU64,
    batches: AtomicU64,
    batches_split: AtomicU64,
}

fn lock<T>(mutex: &Mutex<T>) -> Result<MutexGuard<'_, T>> {
    mutex.lock().map_err(|_| MoeError::ModelPoisoned)
}

/// The logits of one row, on the CPU, for sampling.
fn row_to_vec(logits: &tch::Tensor, row: i64) -> Result<Vec<f32>> {
    Ok(Vec::<f32>::try_from(
        logits
            .f_narrow(0, row, 1)?
            .f_to_device(Device::Cpu)?
            .f_flatten(0, -1)?,
    )?)
}

impl Engine {
    pub(crate) fn new(model: Model) -> Self {
        Self {
            model: Turns::new(model),
            waiting: Mutex::new(Vec::new()),
            arrived: Condvar::new(),
            decoding: [AtomicUsize::new(0), AtomicUsize::new(0)],
            high_batches_in_a_row: AtomicU32::new(0),
            last_batch_nanos: AtomicU64::new(0),
            batch_max: AtomicUsize::new(DECODE_BATCH_MAX),
            steps: AtomicU64::new(0),
            batches: AtomicU64::new(0),
            batches_split: AtomicU64::new(0),
        }
    }

    /// The model, locked (between two forward passes), at normal priority.
    pub(crate) fn model(&self) -> Result<Turn<'_, Model>> {
        self.model.take(Priority::Normal)
    }

    /// A stream of `priority` starts decoding: batches wait for its steps until
    /// [`Engine::stop_decoding`].
    pub(crate) fn start_decoding(&self, priority: Priority) {
        self.decoding[0].fetch_add(1, Ordering::AcqRel);
        if priority == Priority::High {
            self.decoding[1].fetch_add(1, Ordering::AcqRel);
        }
    }

    /// A stream that called [`Engine::start_decoding`] with `priority` ends.
    pub(crate) fn stop_decoding(&self, priority: Priority) {
        self.decoding[0].fetch_sub(1, Ordering::AcqRel);
        if priority == Priority::High {
            self.decoding[1].fetch_sub(1, Ordering::AcqRel);
        }
        // A holder of the model may be waiting for this stream's step.
        self.arrived.notify_all();
    }

    pub(crate) fn set_batch_max(&self, batch_max: usize) {
        self.batch_max.store(batch_max.max(1), Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> DecodeStats {
        DecodeStats {
            steps: self.steps.load(Ordering::Relaxed),
            batches: self.batches.load(Ordering::Relaxed),
            batches_split: self.batches_split.load(Ordering::Relaxed),
        }
    }

    /// Runs a whole prompt (not batched) into a new KV cache, on a turn at `priority`: the
    /// float32 logits of its last position, and the cache.
    pub(crate) fn prefill(
        &self,
        prompt: &[u32],
        usage: &mut ExpertUsage,
        priority: Priority,
    ) -> Result<(Vec<f32>, KvCache)> {
        if priority == Priority::High {
            // A holder gathering a batch stops waiting for it (it checks at least every
            // `MODEL_POLL` in any case).
            self.arrived.notify_all();
        }
        let mut model = self.model.take(priority)?;
        let mut cache = model.new_kv_cache();
        let logits = model.forward(prompt, &mut cache, usage, Logits::Last);
        drop(model);
        self.hand_over();
        Ok((row_to_vec(&logits?, 0)?, cache))
    }

    /// Feeds `token` after the positions in `cache`, batched with whatever other streams are
    /// waiting (first among the high steps, at [`Priority::High`]): the float32 logits of the
    /// next position. `cache` and `usage` come back extended (unchanged on an error).
    pub(crate) fn decode(
        &self,
        token: u32,
        cache: KvCache,
        usage: ExpertUsage,
        priority: Priority,
    ) -> (Result<Vec<f32>>, KvCache, ExpertUsage) {
        let slot: SlotRef = Arc::new(SlotCell {
            priority,
            state: Mutex::new(Slot::Waiting {
                token,
                cache,
                usage,
            }),
            changed: Condvar::new(),
        });
        let outcome = self.answer(&slot);
        let taken = lock(&slot.state).map(|mut state| std::mem::take(&mut *state));
        match (outcome, taken) {
            (
                Ok(()),
                Ok(Slot::Done {
                    logits,
                    cache,
                    usage,
                }),
            ) => (logits, cache, usage),
            (outcome, _) => {
                // Only a panic inside another thread's batch gets here; the step's state is
                // lost with the model's.
                let error = outcome.err().unwrap_or(MoeError::ModelPoisoned);
                (Err(error), KvCache::empty(), ExpertUsage::default())
            }
        }
    }

    /// Queues `slot` and returns once it is answered: by the holder of the model, or here,
    /// when this thread gets the model first and runs the batches itself.
    fn answer(&self, slot: &SlotRef) -> Result<()> {
        lock(&self.waiting)?.push(Arc::clone(slot));
        self.arrived.notify_all();
        loop {
            if matches!(*lock(&slot.state)?, Slot::Done { .. }) {
                return Ok(());
            }
            match self.model.try_take(Priority::Normal)? {
                Some(mut model) => {
                    let combined = self.combine(&mut model, slot);
                    drop(model);
                    self.hand_over();
                    // Answered, failed, or the model was yielded to a high-priority prefill.
                    combined?;
                }
                None => {
                    let state = lock(&slot.state)?;
                    if !matches!(*state, Slot::Done { .. }) {
                        let _ = slot
                            .changed
                            .wait_timeout(state, MODEL_POLL)
                            .map_err(|_| MoeError::ModelPoisoned)?;
                    }
                }
            }
        }
    }

    /// With the model held: runs batches until `slot` is answered, or until a prefill waits
    /// at [`Priority::High`] (then `slot` may still wait: the caller waits for the model again).
    fn combine(&self, model: &mut Model, slot: &SlotRef) -> Result<()> {
        while !matches!(*lock(&slot.state)?, Slot::Done { .. }) {
            if self.model.high_waiting()? {
                return Ok(());
            }
            let batch = self.gather()?;
            if batch.is_empty() {
                if self.model.high_waiting()? {
                    return Ok(());
                }
                // Invariant: `slot` is queued until a batch answers it.
                return Err(MoeError::ModelPoisoned);
            }
            let started = Instant::now();
            self.run(model, &batch)?;
            let nanos = u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX);
            self.last_batch_nanos.store(nanos, Ordering::Relaxed);
        }
        Ok(())
    }

    /// After releasing the model: wakes the oldest waiting step's thread to take it.
    fn hand_over(&self) {
        if let Ok(waiting) = self.waiting.lock()
            && let Some(next) = waiting.first()
        {
            next.changed.notify_all();
        }
    }

    /// Takes the next batch off the queue: once every decoding stream's step is there (or the
    /// batch is full), or every high stream's step, or after half the last batch's time,
    /// whichever comes first; nothing when a prefill comes to wait at [`Priority::High`]
    /// meanwhile. High steps go alone when they can ([`take_batch`]).
    fn gather(&self) -> Result<Vec<SlotRef>> {
        let batch_max = self.batch_max.load(Ordering::Relaxed);
        let wait = Duration::from_nanos(self.last_batch_nanos.load(Ordering::Relaxed) / 2)
            .min(GATHER_WAIT_MAX);
        let deadline = Instant::now() + wait;
        let mut waiting = lock(&self.waiting)?;
        loop {
            let expected = self.decoding[0].load(Ordering::Acquire).min(batch_max);
            let high_expected = self.decoding[1].load(Ordering::Acquire).min(batch_max);
            let high_queued = waiting
                .iter()
                .filter(|slot| slot.priority == Priority::High)
                .count();
            let now = Instant::now();
            if waiting.len() >= expected
                || (high_queued > 0 && high_queued >= high_expected)
                || now >= deadline
            {
                break;
            }
            if self.model.high_waiting()? {
                return Ok(Vec::new());
            }
            waiting = self
                .arrived
                .wait_timeout(waiting, (deadline - now).min(MODEL_POLL))
                .map_err(|_| MoeError::ModelPoisoned)?
                .0;
        }
        Ok(take_batch(
            &mut waiting,
            batch_max,
            &self.high_batches_in_a_row,
        ))
    }

    /// Runs the waiting steps of `batch` and answers each.
    fn run(&self, model: &mut Model, batch: &[SlotRef]) -> Result<()> {
        let mut entries = Vec::with_capacity(batch.len());
        for slot in batch {
            if let Slot::Waiting {
                token,
                cache,
                usage,
            } = std::mem::take(&mut *lock(&slot.state)?)
            {
                entries.push((slot, token, cache, usage));
            }
        }
        self.steps
            .fetch_add(entries.len() as u64, Ordering::Relaxed);
        self.batches.fetch_add(1, Ordering::Relaxed);
        let alone =
            |model: &mut Model, token: u32, cache: &mut KvCache, usage: &mut ExpertUsage| {
                model
                    .forward(&[token], cache, usage, Logits::Last)
                    .and_then(|logits| row_to_vec(&logits, 0))
            };
        let answers: Vec<Result<Vec<f32>>> = if entries.len() == 1 {
            // Alone: exactly the unbatched pass.
            let (_, token, cache, usage) = &mut entries[0];
            vec![alone(model, *token, cache, usage)]
        } else {
            let batched = {
                let mut steps: Vec<DecodeStep<'_>> = entries
                    .iter_mut()
                    .map(|(_, token, cache, usage)| DecodeStep {
                        token: *token,
                        cache,
                        usage,
                    })
                    .collect();
                model.forward_batch(&mut steps)
            };
            match batched {
                Ok(logits) => (0..entries.len() as i64)
                    .map(|row| row_to_vec(&logits, row))
                    .collect(),
                Err(error) => {
                    // The batch changed no cache: run each step alone, so only the request the
                    // error belongs to gets it.
                    tracing::debug!(%error, steps = entries.len(), "batch failed: running its steps one by one");
                    self.batches_split.fetch_add(1, Ordering::Relaxed);
                    entries
                        .iter_mut()
                        .map(|(_, token, cache, usage)| alone(model, *token, cache, usage))
                        .collect()
                }
            }
        };
        for ((slot, _, cache, usage), logits) in entries.into_iter().zip(answers) {
            *lock(&slot.state)? = Slot::Done {
                logits,
                cache,
                usage,
            };
            slot.changed.notify_all();
        }
        Ok(())
    }
}

/// Takes the next batch off `waiting`, at most `batch_max` steps: only the high steps, in
/// order, when some wait beside normal ones and fewer than [`HIGH_BATCHES_IN_A_ROW_MAX`]
/// such batches ran in a row (counted in `in_a_row`); else the oldest steps, whatever their
/// priority.
fn take_batch(waiting: &mut Vec<SlotRef>, batch_max: usize, in_a_row: &AtomicU32) -> Vec<SlotRef> {
    let high = waiting
        .iter()
        .filter(|slot| slot.priority == Priority::High)
        .count();
    let high_alone = high > 0
        && high < waiting.len()
        && in_a_row.load(Ordering::Relaxed) < HIGH_BATCHES_IN_A_ROW_MAX;
    if !high_alone {
        in_a_row.store(0, Ordering::Relaxed);
        let take = waiting.len().min(batch_max);
        return waiting.drain(..take).collect();
    }
    in_a_row.fetch_add(1, Ordering::Relaxed);
    let mut batch = Vec::with_capacity(high.min(batch_max));
    waiting.retain(|slot| {
        if slot.priority == Priority::High && batch.len() < batch_max {
            batch.push(Arc::clone(slot));
            false
        } else {
            true
        }
    });
    batch
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::model::ModelOptions;
    use crate::weights::RandomInit;

    fn waiting(token: u32, cache: KvCache, usage: ExpertUsage) -> SlotRef {
        Arc::new(SlotCell {
            priority: Priority::Normal,
            state: Mutex::new(Slot::Waiting {
                token,
                cache,
                usage,
            }),
            changed: Condvar::new(),
        })
    }

    fn answer(slot: &SlotRef) -> Slot {
        std::mem::take(&mut *slot.state.lock().expect("not poisoned"))
    }

    /// Two steps in one batch, one of them out of the vocabulary: the batch fails, is counted
    /// as split, and its steps run alone, so the good one gets exactly the unbatched logits and
    /// the bad one its own error, each with its cache back.
    #[test]
    fn a_failed_batch_is_split_and_only_the_failing_step_gets_the_error() {
        let config = Config::seed();
        let source = Arc::new(RandomInit::new(&config, 4).expect("valid config"));
        let model = Model::load(&config, source, ModelOptions::default()).expect("loads");
        let engine = Engine::new(model);
        let prefilled = |prompt: &[u32]| {
            let mut usage = ExpertUsage::new(&config);
            let (_, cache) = engine
                .prefill(prompt, &mut usage, Priority::Normal)
                .expect("prefill");
            (cache, usage)
        };
        let expected = {
            let (mut cache, mut usage) = prefilled(&[1, 2, 3]);
            let mut model = engine.model().expect("not poisoned");
            let logits = model
                .forward(&[7], &mut cache, &mut usage, Logits::Last)
                .expect("a valid step");
            row_to_vec(&logits, 0).expect("logits")
        };
        let (good_cache, good_usage) = prefilled(&[1, 2, 3]);
        let (bad_cache, bad_usage) = prefilled(&[4]);
        let good = waiting(7, good_cache, good_usage);
        let bad = waiting(config.vocab_size, bad_cache, bad_usage);

        let before = engine.stats();
        {
            let mut model = engine.model().expect("not poisoned");
            engine
                .run(&mut model, &[Arc::clone(&good), Arc::clone(&bad)])
                .expect("both steps answered");
        }
        let after = engine.stats();
        assert_eq!(
            (
                after.steps - before.steps,
                after.batches - before.batches,
                after.batches_split - before.batches_split
            ),
            (2, 1, 1)
        );
        match answer(&good) {
            Slot::Done {
                logits: Ok(logits),
                cache,
                ..
            } => {
                assert_eq!(logits, expected);
                assert_eq!(cache.positions(), 4);
            }
            other => panic!("the good step should have its logits, got {other:?}"),
        }
        match answer(&bad) {
            Slot::Done {
                logits: Err(MoeError::TokenOutOfRange { id, .. }),
                cache,
                ..
            } => {
                assert_eq!(id, config.vocab_size);
                assert_eq!(cache.positions(), 1, "the failed step changed no cache");
            }
            other => panic!("the bad step should have its own error, got {other:?}"),
        }
    }

    /// Waits (polling, no timing asserted) until `ready` holds.
    fn until(ready: impl Fn() -> bool) {
        while !ready() {
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// Three normal turns wait for a held value, then a high one comes: the high one is served
    /// first, then the normal ones.
    #[test]
    fn a_high_turn_goes_before_normal_turns_already_waiting() {
        let turns = Arc::new(Turns::new(Vec::<&'static str>::new()));
        let held = turns.take(Priority::Normal).expect("free");
        let spawn = |name: &'static str, priority: Priority| {
            let turns = Arc::clone(&turns);
            std::thread::spawn(move || turns.take(priority).expect("not poisoned").push(name))
        };
        let normal: Vec<_> = ["free 1", "free 2", "free 3"]
            .into_iter()
            .map(|name| spawn(name, Priority::Normal))
            .collect();
        until(|| turns.waiting(Priority::Normal) == 3);
        let high = spawn("paid", Priority::High);
        until(|| turns.waiting(Priority::High) == 1);
        assert!(
            turns
                .try_take(Priority::Normal)
                .expect("not poisoned")
                .is_none(),
            "a normal turn is refused while a high one waits"
        );
        drop(held);
        for thread in normal.into_iter().chain([high]) {
            thread.join().expect("the thread ran");
        }
        let served = turns.take(Priority::Normal).expect("free").clone();
        assert_eq!(served.len(), 4);
        assert_eq!(served[0], "paid", "served in order {served:?}");
        assert_eq!(
            turns.granted()[1..5],
            [
                Priority::High,
                Priority::Normal,
                Priority::Normal,
                Priority::Normal
            ]
        );
    }

    /// With the model busy, a decoding step and a normal prefill wait for it; a high-priority
    /// prefill that comes after them takes the model first, and every request still gets its
    /// answer.
    #[test]
    fn a_high_priority_prefill_goes_before_a_waiting_batch_and_prefill() {
        let config = Config::seed();
        let source = Arc::new(RandomInit::new(&config, 4).expect("valid config"));
        let model = Model::load(&config, source, ModelOptions::default()).expect("loads");
        let engine = Arc::new(Engine::new(model));
        let mut usage = ExpertUsage::new(&config);
        let (_, cache) = engine
            .prefill(&[1, 2, 3], &mut usage, Priority::Normal)
            .expect("prefill");

        let held = engine.model().expect("not poisoned");
        let granted_before = engine.model.granted().len();
        let decoder = {
            let engine = Arc::clone(&engine);
            std::thread::spawn(move || {
                engine.start_decoding(Priority::Normal);
                let (logits, cache, _) = engine.decode(7, cache, usage, Priority::Normal);
                engine.stop_decoding(Priority::Normal);
                (logits.map(|logits| logits.len()), cache.positions())
            })
        };
        until(|| engine.waiting.lock().expect("not poisoned").len() == 1);
        let prefill = |priority: Priority| {
            let engine = Arc::clone(&engine);
            let config = config.clone();
            std::thread::spawn(move || {
                let mut usage = ExpertUsage::new(&config);
                engine
                    .prefill(&[4, 5], &mut usage, priority)
                    .map(|(logits, cache)| (logits.len(), cache.positions()))
            })
        };
        let free = prefill(Priority::Normal);
        until(|| engine.model.waiting(Priority::Normal) == 1);
        let paid = prefill(Priority::High);
        until(|| engine.model.waiting(Priority::High) == 1);
        drop(held);

        let vocab = config.vocab_size as usize;
        assert_eq!(paid.join().expect("ran").expect("paid prefill"), (vocab, 2));
        assert_eq!(free.join().expect("ran").expect("free prefill"), (vocab, 2));
        let (logits, positions) = decoder.join().expect("ran");
        assert_eq!((logits.expect("decoding step"), positions), (vocab, 4));
        let granted = engine.model.granted();
        assert_eq!(
            granted[granted_before],
            Priority::High,
            "the first turn after the busy one: {granted:?}"
        );
        assert!(
            granted[granted_before + 1..]
                .iter()
                .all(|priority| *priority == Priority::Normal),
            "{granted:?}"
        );
    }

    /// Steps queued as `priorities` (in order), named by their index.
    fn queue(priorities: &[Priority]) -> Vec<SlotRef> {
        priorities
            .iter()
            .enumerate()
            .map(|(index, priority)| {
                Arc::new(SlotCell {
                    priority: *priority,
                    state: Mutex::new(Slot::Waiting {
                        token: u32::try_from(index).expect("a few"),
                        cache: KvCache::empty(),
                        usage: ExpertUsage::default(),
                    }),
                    changed: Condvar::new(),
                })
            })
            .collect()
    }

    fn tokens(batch: &[SlotRef]) -> Vec<u32> {
        batch
            .iter()
            .map(|slot| match *slot.state.lock().expect("not poisoned") {
                Slot::Waiting { token, .. } => token,
                _ => panic!("a queued step"),
            })
            .collect()
    }

    /// High steps queued behind normal ones run first, alone, [`HIGH_BATCHES_IN_A_ROW_MAX`]
    /// times in a row at most: then the normal steps run, with the high ones queued then.
    #[test]
    fn high_steps_go_alone_first_but_never_stop_normal_ones() {
        use Priority::{High, Normal};
        let in_a_row = AtomicU32::new(0);
        let mut waiting = queue(&[Normal, High, Normal, High]);
        assert_eq!(tokens(&take_batch(&mut waiting, 16, &in_a_row)), [1, 3]);
        assert_eq!(tokens(&waiting), [0, 2]);
        // The high streams come back twice more: the second time, the normal steps go too.
        let mut again = queue(&[High, High, High, High, High, High]);
        waiting.extend(again.drain(4..5));
        assert_eq!(tokens(&take_batch(&mut waiting, 16, &in_a_row)), [4]);
        waiting.extend(again.drain(..1));
        assert_eq!(
            tokens(&take_batch(&mut waiting, 16, &in_a_row)),
            [0, 2, 0],
            "the oldest steps, whatever their priority"
        );
        assert!(waiting.is_empty());
        // Only high, or only normal, steps: the oldest, up to the batch's bound.
        let mut waiting = queue(&[High, High, High]);
        assert_eq!(tokens(&take_batch(&mut waiting, 2, &in_a_row)), [0, 1]);
        let mut waiting = queue(&[Normal, Normal, High, High, High]);
        assert_eq!(tokens(&take_batch(&mut waiting, 2, &in_a_row)), [2, 3]);
        assert_eq!(tokens(&waiting), [0, 1, 4]);
    }
}
