//! The client side: fetch a payload's missing ranges from several holders at once, verifying
//! every response, avoiding holders that send bad bytes and retrying around those that fail.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::ops::Range;
use std::time::Duration;

use blyan_chain::PayloadHash;
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::time::Instant;

use super::decode::{BadRangeReason, RangeSink, decode_ranges};
use super::error::{Result, TransferError};
use super::wire::{
    GROUP_BYTES, RANGE_REQUEST_DATA_BYTES_MAX, RANGE_REQUEST_RANGES_MAX, RangeError, RangeRequest,
    RangeResponse, Refusal,
};

/// Most requests one holder may have in flight during a fetch (bounds the responses, up to
/// [`RANGE_RESPONSE_BYTES_MAX`](super::RANGE_RESPONSE_BYTES_MAX) each, held in memory).
pub const IN_FLIGHT_PER_HOLDER_MAX: usize = 64;

/// Most failures a [`FetchReport`] lists one by one ([`FetchReport::failure_count`] counts all).
pub const FAILURES_REPORTED_MAX: usize = 256;

/// Sends one [`RangeRequest`] to one holder and returns its answer: the transport (libp2p
/// request-response in the node, memory in tests). It need not verify anything nor apply a
/// deadline: [`fetch`] does both.
pub trait RangeSource<H>: Sync {
    /// Asks `holder`; a transport failure is a [`SourceError`], a holder's refusal is an
    /// `Ok(RangeResponse::Refused(..))`.
    fn request(
        &self,
        holder: &H,
        request: RangeRequest,
    ) -> impl Future<Output = Result<RangeResponse, SourceError>> + Send;
}

/// A request that got no answer from a holder.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SourceError {
    /// The transport failed (dial failure, stream reset, codec error).
    #[error("request failed: {reason}")]
    Failed {
        /// The transport's description.
        reason: String,
    },
    /// No answer within the deadline.
    #[error("no answer within {deadline:?}")]
    Timeout {
        /// The deadline that passed.
        deadline: Duration,
    },
}

/// How a [`fetch`] splits, spreads and retries its requests. [`Default`] suits payloads of
/// 10–350 MB on a LAN or the internet.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchOptions {
    /// Payload bytes per request: a positive multiple of [`GROUP_BYTES`], at most
    /// [`RANGE_REQUEST_DATA_BYTES_MAX`].
    pub request_bytes: u64,
    /// Requests kept in flight per holder, 1 to [`IN_FLIGHT_PER_HOLDER_MAX`].
    pub in_flight_per_holder: usize,
    /// A request unanswered this long counts as a failure of its holder and is reissued.
    pub request_deadline: Duration,
    /// Wait before asking a holder again after its first failure in a row; doubles with each
    /// further failure in a row, up to `retry_backoff_max`.
    pub retry_backoff: Duration,
    /// Longest wait between tries of a failing holder.
    pub retry_backoff_max: Duration,
    /// Failures in a row after which a holder is dropped from this fetch.
    pub failures_in_a_row_max: u32,
    /// Ban of a holder after its first bad range; doubles with each further one (Petals bans a
    /// failing server 15 s, doubling).
    pub ban: Duration,
    /// Bad ranges after which a holder is dropped from this fetch.
    pub offenses_max: u32,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            request_bytes: RANGE_REQUEST_DATA_BYTES_MAX,
            in_flight_per_holder: 4,
            request_deadline: Duration::from_secs(10),
            retry_backoff: Duration::from_millis(250),
            retry_backoff_max: Duration::from_secs(8),
            failures_in_a_row_max: 3,
            ban: Duration::from_secs(15),
            offenses_max: 2,
        }
    }
}

impl FetchOptions {
    fn check(&self) -> Result<()> {
        let invalid = |field, reason| Err(TransferError::InvalidOptions { field, reason });
        if self.request_bytes == 0
            || !self.request_bytes.is_multiple_of(GROUP_BYTES)
            || self.request_bytes > RANGE_REQUEST_DATA_BYTES_MAX
        {
            return invalid(
                "request_bytes",
                "a positive multiple of GROUP_BYTES, at most RANGE_REQUEST_DATA_BYTES_MAX",
            );
        }
        if self.in_flight_per_holder == 0 || self.in_flight_per_holder > IN_FLIGHT_PER_HOLDER_MAX {
            return invalid("in_flight_per_holder", "1 to IN_FLIGHT_PER_HOLDER_MAX");
        }
        if self.request_deadline.is_zero() {
            return invalid("request_deadline", "positive");
        }
        if self.failures_in_a_row_max == 0 {
            return invalid("failures_in_a_row_max", "at least 1");
        }
        if self.offenses_max == 0 {
            return invalid("offenses_max", "at least 1");
        }
        Ok(())
    }
}

/// A holder's standing for bad bytes: its offenses and the ban they earned, doubling with each
/// offense. [`fetch`] keeps one per holder for its own run; a node keeps one per peer across
/// fetches by feeding it [`FetchReport::offenses`] and leaving banned peers out of `holders`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HolderScore {
    offenses: u32,
    banned_until: Option<Instant>,
}

impl HolderScore {
    /// Records an offense at `now`: banned for `ban` × 2^(earlier offenses) (capped at 2^16 ×).
    /// Returns the length of the ban.
    pub fn penalize(&mut self, now: Instant, ban: Duration) -> Duration {
        let length = ban.saturating_mul(1u32 << self.offenses.min(16));
        self.offenses = self.offenses.saturating_add(1);
        self.banned_until = Some(now + length);
        length
    }

    /// Whether the holder is banned at `now`.
    pub fn is_banned(&self, now: Instant) -> bool {
        self.banned_until.is_some_and(|until| now < until)
    }

    /// When the latest ban ends.
    pub fn banned_until(&self) -> Option<Instant> {
        self.banned_until
    }

    /// Offenses recorded.
    pub fn offenses(&self) -> u32 {
        self.offenses
    }
}

/// A holder caught sending bytes that fail verification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offense<H> {
    /// Who sent them.
    pub holder: H,
    /// Start of the first group that failed.
    pub offset: u64,
    /// How it failed.
    pub reason: BadRangeReason,
    /// The ban this earned within the fetch.
    pub banned_for: Duration,
}

/// A request that did not bring bytes (besides bad bytes, which are [`Offense`]s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure<H> {
    /// Whom it was sent to.
    pub holder: H,
    /// What happened.
    pub kind: FailureKind,
}

/// What happened to a failed request.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum FailureKind {
    /// No answer (transport error or deadline).
    Source(SourceError),
    /// The holder refused (it is dropped from the fetch: it will not serve this payload).
    Refused(Refusal),
}

/// What a [`fetch`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchReport<H> {
    /// The payload.
    pub payload: PayloadHash,
    /// Verified bytes written to the sink (whole groups covering the missing ranges).
    pub bytes_written: u64,
    /// Verified bytes written per holder, every holder in the order given.
    pub bytes_by_holder: Vec<(H, u64)>,
    /// Requests sent.
    pub requests: u64,
    /// Failures, the first [`FAILURES_REPORTED_MAX`].
    pub failures: Vec<Failure<H>>,
    /// All failures.
    pub failure_count: u64,
    /// Every bad range caught, in order.
    pub offenses: Vec<Offense<H>>,
    /// Holders dropped from the fetch (refused, failed or offended too often), in order.
    pub dropped: Vec<H>,
    /// Wall time of the fetch.
    pub elapsed: Duration,
}

/// A fetch that stopped before every missing range was written, with what it did until then
/// (so its offenders can still be banned and its progress kept).
#[derive(Debug)]
pub struct FetchError<H> {
    /// Why it stopped.
    pub error: TransferError,
    /// What it did.
    pub report: FetchReport<H>,
}

impl<H> fmt::Display for FetchError<H> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.error.fmt(f)
    }
}

impl<H: fmt::Debug> std::error::Error for FetchError<H> {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// One request's worth of ranges and the holders that already failed it.
#[derive(Debug)]
struct Piece {
    ranges: Vec<Range<u64>>,
    failed_on: Vec<usize>,
}

impl Piece {
    fn bytes(&self) -> u64 {
        self.ranges
            .iter()
            .map(|range| range.end - range.start)
            .sum()
    }

    /// The part from `offset` on (after groups before it verified).
    fn rest_from(mut self, offset: u64) -> Self {
        self.ranges.retain_mut(|range| {
            range.start = range.start.max(offset);
            range.start < range.end
        });
        self
    }
}

struct HolderState<H> {
    id: H,
    in_flight: usize,
    requests: u64,
    bytes: u64,
    score: HolderScore,
    failures_in_a_row: u32,
    retry_at: Option<Instant>,
    dropped: bool,
}

impl<H> HolderState<H> {
    fn ready(&self, now: Instant, options: &FetchOptions) -> bool {
        !self.dropped
            && !self.score.is_banned(now)
            && self.retry_at.is_none_or(|at| at <= now)
            && self.in_flight < options.in_flight_per_holder
    }

    /// When a holder not dropped becomes usable again, if it waits on a ban or a backoff.
    fn usable_at(&self) -> Option<Instant> {
        if self.dropped {
            return None;
        }
        let ban = self.score.banned_until();
        match (ban, self.retry_at) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        }
    }
}

struct Completion {
    holder: usize,
    piece: Piece,
    outcome: Result<RangeResponse, SourceError>,
}

/// Rounds `missing` out to whole groups, merges it, and cuts it into requests of at most
/// `request_bytes` and [`RANGE_REQUEST_RANGES_MAX`] ranges.
fn plan(
    size: u64,
    mut missing: Vec<Range<u64>>,
    request_bytes: u64,
) -> Result<VecDeque<Piece>, RangeError> {
    for range in &missing {
        if range.start >= range.end {
            return Err(RangeError::Empty {
                start: range.start,
                end: range.end,
            });
        }
        if range.end > size {
            return Err(RangeError::OutOfBounds {
                start: range.start,
                end: range.end,
                size,
            });
        }
    }
    missing.sort_by_key(|range| range.start);
    let mut merged: Vec<Range<u64>> = Vec::with_capacity(missing.len());
    for range in missing {
        let start = range.start - range.start % GROUP_BYTES;
        let end = range
            .end
            .checked_next_multiple_of(GROUP_BYTES)
            .map_or(size, |end| end.min(size));
        match merged.last_mut() {
            Some(last) if start <= last.end => last.end = last.end.max(end),
            _ => merged.push(start..end),
        }
    }
    let mut pieces = VecDeque::new();
    let mut ranges: Vec<Range<u64>> = Vec::new();
    let mut bytes = 0u64;
    for range in merged {
        let mut start = range.start;
        while start < range.end {
            let end = range.end.min(start + (request_bytes - bytes));
            ranges.push(start..end);
            bytes += end - start;
            start = end;
            if bytes == request_bytes || ranges.len() == RANGE_REQUEST_RANGES_MAX {
                pieces.push_back(Piece {
                    ranges: std::mem::take(&mut ranges),
                    failed_on: Vec::new(),
                });
                bytes = 0;
            }
        }
    }
    if !ranges.is_empty() {
        pieces.push_back(Piece {
            ranges,
            failed_on: Vec::new(),
        });
    }
    Ok(pieces)
}

/// Fetches the `missing` byte ranges of the `size`-byte payload `payload` from `holders`
/// through `source`, verifying every response against the payload hash and writing only
/// verified groups to `sink`.
///
/// Missing ranges are rounded out to whole 16 KiB groups and cut into requests of
/// `options.request_bytes`; up to `options.in_flight_per_holder` requests go to each holder at
/// once, each to the least busy ready holder that has not failed it. A holder whose bytes fail
/// verification is banned (doubling) and recorded as an [`Offense`]; the rest of its request
/// goes to another holder. A holder that errs or misses the deadline waits out a doubling
/// backoff, and its request goes elsewhere. Refusing holders, and those past
/// `failures_in_a_row_max` or `offenses_max`, are dropped. The fetch fails with
/// [`TransferError::NoHoldersLeft`] only when ranges remain and every holder is dropped.
///
/// Resumable: pass only the ranges still missing (after a restart, those the staging file
/// lacks); nothing else is requested. Verification runs on the task polling the fetch
/// (≈ 1 ms per 4 MiB), so spawn it on its own task.
#[tracing::instrument(name = "payload_fetch", skip_all, fields(%payload, size, holders = holders.len()))]
pub async fn fetch<H, S, K>(
    payload: PayloadHash,
    size: u64,
    missing: Vec<Range<u64>>,
    holders: Vec<H>,
    source: &S,
    sink: &K,
    options: FetchOptions,
) -> Result<FetchReport<H>, FetchError<H>>
where
    H: Clone + fmt::Debug + Send + Sync,
    S: RangeSource<H>,
    K: RangeSink + ?Sized,
{
    let started = Instant::now();
    let mut run = Run {
        payload,
        size,
        options,
        holders: holders
            .into_iter()
            .map(|id| HolderState {
                id,
                in_flight: 0,
                requests: 0,
                bytes: 0,
                score: HolderScore::default(),
                failures_in_a_row: 0,
                retry_at: None,
                dropped: false,
            })
            .collect(),
        bytes_written: 0,
        failures: Vec::new(),
        failure_count: 0,
        offenses: Vec::new(),
        dropped: Vec::new(),
    };
    let outcome = run.drive(missing, source, sink).await;
    let report = run.report(started.elapsed());
    tracing::debug!(
        bytes = report.bytes_written,
        requests = report.requests,
        failures = report.failure_count,
        offenses = report.offenses.len(),
        elapsed = ?report.elapsed,
        ok = outcome.is_ok(),
        "payload fetch ended"
    );
    match outcome {
        Ok(()) => Ok(report),
        Err(error) => Err(FetchError { error, report }),
    }
}

struct Run<H> {
    payload: PayloadHash,
    size: u64,
    options: FetchOptions,
    holders: Vec<HolderState<H>>,
    bytes_written: u64,
    failures: Vec<Failure<H>>,
    failure_count: u64,
    offenses: Vec<Offense<H>>,
    dropped: Vec<usize>,
}

impl<H: Clone + fmt::Debug + Send + Sync> Run<H> {
    async fn drive<S, K>(&mut self, missing: Vec<Range<u64>>, source: &S, sink: &K) -> Result<()>
    where
        S: RangeSource<H>,
        K: RangeSink + ?Sized,
    {
        let payload = self.payload;
        self.options.check()?;
        let mut pending = plan(self.size, missing, self.options.request_bytes)
            .map_err(|source| TransferError::InvalidRanges { payload, source })?;
        let mut in_flight = FuturesUnordered::new();
        loop {
            let now = Instant::now();
            while let Some(piece) = pending.pop_front() {
                let Some(holder) = self.pick(&piece, now) else {
                    pending.push_front(piece);
                    break;
                };
                let request = RangeRequest {
                    payload,
                    size: self.size,
                    ranges: piece.ranges.clone(),
                };
                let state = &mut self.holders[holder];
                state.in_flight += 1;
                state.requests += 1;
                in_flight.push(issue(
                    source,
                    state.id.clone(),
                    holder,
                    piece,
                    request,
                    self.options.request_deadline,
                ));
            }
            if in_flight.is_empty() {
                if pending.is_empty() {
                    return Ok(());
                }
                // Nothing running and nobody ready: wait for the first ban or backoff to end.
                match self.holders.iter().filter_map(HolderState::usable_at).min() {
                    Some(at) => {
                        tokio::time::sleep_until(at).await;
                        continue;
                    }
                    None => {
                        return Err(TransferError::NoHoldersLeft {
                            payload,
                            missing_bytes: pending.iter().map(Piece::bytes).sum(),
                            holders: self.holders.len(),
                        });
                    }
                }
            }
            let Some(completion) = in_flight.next().await else {
                continue;
            };
            if let Some(retry) = self.complete(completion, sink)? {
                pending.push_front(retry);
            }
        }
    }

    /// The ready holder to send `piece` to: one that has not failed it if any, then the least
    /// busy, then the one asked least so far (spreads a fetch over every holder).
    fn pick(&self, piece: &Piece, now: Instant) -> Option<usize> {
        self.holders
            .iter()
            .enumerate()
            .filter(|(_, state)| state.ready(now, &self.options))
            .min_by_key(|(index, state)| {
                (
                    piece.failed_on.contains(index),
                    state.in_flight,
                    state.requests,
                )
            })
            .map(|(index, _)| index)
    }

    /// Handles one answer; returns what is left of its piece to send again.
    fn complete<K: RangeSink + ?Sized>(
        &mut self,
        completion: Completion,
        sink: &K,
    ) -> Result<Option<Piece>> {
        let Completion {
            holder,
            mut piece,
            outcome,
        } = completion;
        let now = Instant::now();
        self.holders[holder].in_flight -= 1;
        match outcome {
            Ok(RangeResponse::Encoded(encoded)) => {
                match decode_ranges(self.payload, self.size, &piece.ranges, &encoded, sink) {
                    Ok(written) => {
                        let state = &mut self.holders[holder];
                        state.bytes += written;
                        state.failures_in_a_row = 0;
                        state.retry_at = None;
                        self.bytes_written += written;
                        Ok(None)
                    }
                    Err(TransferError::BadRange { offset, reason, .. }) => {
                        let verified: u64 = piece
                            .ranges
                            .iter()
                            .map(|range| range.end.min(offset).saturating_sub(range.start))
                            .sum();
                        self.holders[holder].bytes += verified;
                        self.bytes_written += verified;
                        self.offend(holder, offset, reason, now);
                        piece.failed_on.push(holder);
                        Ok(Some(piece.rest_from(offset)).filter(|piece| !piece.ranges.is_empty()))
                    }
                    Err(other) => Err(other),
                }
            }
            Ok(RangeResponse::Refused(refusal)) => {
                tracing::debug!(payload = %self.payload, holder = ?self.holders[holder].id, %refusal, "holder refused a range request");
                self.fail(holder, FailureKind::Refused(refusal));
                self.drop_holder(holder);
                piece.failed_on.push(holder);
                Ok(Some(piece))
            }
            Err(error) => {
                tracing::debug!(payload = %self.payload, holder = ?self.holders[holder].id, %error, "range request failed");
                self.fail(holder, FailureKind::Source(error));
                let state = &mut self.holders[holder];
                state.failures_in_a_row += 1;
                let doublings = (state.failures_in_a_row - 1).min(16);
                let backoff = self
                    .options
                    .retry_backoff
                    .saturating_mul(1 << doublings)
                    .min(self.options.retry_backoff_max);
                state.retry_at = Some(now + backoff);
                if state.failures_in_a_row >= self.options.failures_in_a_row_max {
                    self.drop_holder(holder);
                }
                piece.failed_on.push(holder);
                Ok(Some(piece))
            }
        }
    }

    fn offend(&mut self, holder: usize, offset: u64, reason: BadRangeReason, now: Instant) {
        let state = &mut self.holders[holder];
        let banned_for = state.score.penalize(now, self.options.ban);
        tracing::warn!(payload = %self.payload, holder = ?state.id, offset, %reason, ?banned_for, "holder sent bytes that fail verification");
        self.offenses.push(Offense {
            holder: state.id.clone(),
            offset,
            reason,
            banned_for,
        });
        if state.score.offenses() >= self.options.offenses_max {
            self.drop_holder(holder);
        }
    }

    fn fail(&mut self, holder: usize, kind: FailureKind) {
        self.failure_count += 1;
        if self.failures.len() < FAILURES_REPORTED_MAX {
            self.failures.push(Failure {
                holder: self.holders[holder].id.clone(),
                kind,
            });
        }
    }

    fn drop_holder(&mut self, holder: usize) {
        if !self.holders[holder].dropped {
            self.holders[holder].dropped = true;
            self.dropped.push(holder);
        }
    }

    fn report(self, elapsed: Duration) -> FetchReport<H> {
        let dropped = self
            .dropped
            .iter()
            .map(|&index| self.holders[index].id.clone())
            .collect();
        let requests = self.holders.iter().map(|state| state.requests).sum();
        FetchReport {
            payload: self.payload,
            bytes_written: self.bytes_written,
            bytes_by_holder: self
                .holders
                .into_iter()
                .map(|state| (state.id, state.bytes))
                .collect(),
            requests,
            failures: self.failures,
            failure_count: self.failure_count,
            offenses: self.offenses,
            dropped,
            elapsed,
        }
    }
}

/// One request under its deadline, as a future that says which holder and piece it was.
async fn issue<H, S>(
    source: &S,
    id: H,
    holder: usize,
    piece: Piece,
    request: RangeRequest,
    deadline: Duration,
) -> Completion
where
    S: RangeSource<H>,
{
    let outcome = match tokio::time::timeout(deadline, source.request(&id, request)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(SourceError::Timeout { deadline }),
    };
    Completion {
        holder,
        piece,
        outcome,
    }
}

#[cfg(test)]
#[allow(
    clippy::single_range_in_vec_init,
    reason = "a list of one range is a request for one range"
)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Byte-by-group coverage of `ranges`: the set of group starts they touch.
    fn groups_touched(ranges: &[Range<u64>]) -> Vec<u64> {
        let mut groups: Vec<u64> = ranges
            .iter()
            .flat_map(|range| {
                (range.start / GROUP_BYTES..range.end.div_ceil(GROUP_BYTES))
                    .map(|group| group * GROUP_BYTES)
            })
            .collect();
        groups.sort_unstable();
        groups.dedup();
        groups
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        #[test]
        fn plan_covers_exactly_the_missing_groups_in_valid_requests(
            size in 1u64..(3 << 20),
            cuts in proptest::collection::vec((0.0f64..1.0, 0.0f64..0.1), 0..80),
            request_groups in 1u64..40,
        ) {
            let missing: Vec<Range<u64>> = cuts
                .iter()
                .map(|&(at, length)| {
                    let start = (at * size as f64) as u64 % size;
                    let end = (start + 1 + (length * size as f64) as u64).min(size);
                    start..end
                })
                .collect();
            let request_bytes = request_groups * GROUP_BYTES;
            let pieces = plan(size, missing.clone(), request_bytes).expect("plan");
            let mut planned: Vec<Range<u64>> = Vec::new();
            for piece in &pieces {
                let request = RangeRequest {
                    payload: PayloadHash::ZERO,
                    size,
                    ranges: piece.ranges.clone(),
                };
                let bytes = request.check().expect("every piece is a valid request");
                prop_assert!(bytes > 0 && bytes <= request_bytes);
                planned.extend(piece.ranges.iter().cloned());
            }
            planned.sort_by_key(|range| range.start);
            prop_assert!(planned.windows(2).all(|pair| pair[0].end <= pair[1].start), "no group twice");
            prop_assert_eq!(groups_touched(&planned), groups_touched(&missing));
        }
    }

    #[test]
    fn plan_refuses_empty_and_out_of_bounds_ranges() {
        assert_eq!(
            plan(100, vec![5..5], GROUP_BYTES).err(),
            Some(RangeError::Empty { start: 5, end: 5 })
        );
        assert_eq!(
            plan(100, vec![0..101], GROUP_BYTES).err(),
            Some(RangeError::OutOfBounds {
                start: 0,
                end: 101,
                size: 100
            })
        );
    }
}
