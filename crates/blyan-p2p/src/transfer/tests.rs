//! Scenario tests of payload transfer: hashes, verification, and fetching from memory holders
//! that are honest, corrupt, failing, hanging or refusing.

#![allow(
    clippy::single_range_in_vec_init,
    reason = "a list of one range is a request for one range"
)]

use std::collections::HashMap;
use std::ops::Range;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use blyan_chain::PayloadHash;
use proptest::prelude::*;

use super::*;

const G: u64 = GROUP_BYTES;

fn payload_bytes(size: usize, seed: u32) -> Vec<u8> {
    // xorshift: cheap, not compressible, different per seed.
    let mut state = seed.wrapping_mul(2_654_435_761).max(1);
    (0..size)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 17;
            state ^= state << 5;
            state as u8
        })
        .collect()
}

fn hash_of(data: &[u8]) -> PayloadHash {
    PayloadHash(*blake3::hash(data).as_bytes())
}

/// A sink over a buffer that checks every write against the true payload and the alignment
/// contract, and records where it wrote.
struct CheckingSink {
    truth: Arc<Vec<u8>>,
    buffer: Mutex<Vec<u8>>,
    writes: Mutex<Vec<Range<u64>>>,
}

impl CheckingSink {
    fn new(truth: Arc<Vec<u8>>) -> Self {
        let buffer = vec![0; truth.len()];
        Self {
            truth,
            buffer: Mutex::new(buffer),
            writes: Mutex::new(Vec::new()),
        }
    }

    fn prefilled_except(truth: Arc<Vec<u8>>, holes: &[Range<u64>]) -> Self {
        let sink = Self::new(Arc::clone(&truth));
        let mut buffer = truth.to_vec();
        for hole in holes {
            buffer[hole.start as usize..hole.end as usize].fill(0);
        }
        *sink.buffer.lock().expect("lock") = buffer;
        sink
    }

    fn writes(&self) -> Vec<Range<u64>> {
        self.writes.lock().expect("lock").clone()
    }

    fn buffer(&self) -> Vec<u8> {
        self.buffer.lock().expect("lock").clone()
    }
}

impl RangeSink for CheckingSink {
    fn write_at(&self, offset: u64, bytes: &[u8]) -> std::result::Result<(), SinkError> {
        let size = self.truth.len() as u64;
        let end = offset + bytes.len() as u64;
        assert_eq!(offset % G, 0, "writes start on a group");
        assert!(
            bytes.len() as u64 == G || end == size,
            "writes are whole groups or the last"
        );
        assert_eq!(
            bytes,
            &self.truth[offset as usize..end as usize],
            "only verified (true) bytes reach the sink"
        );
        self.buffer.lock().expect("lock")[offset as usize..end as usize].copy_from_slice(bytes);
        self.writes.lock().expect("lock").push(offset..end);
        Ok(())
    }
}

#[test]
fn tree_root_is_the_plain_blake3_hash() {
    let sizes = [
        0usize,
        1,
        1023,
        1024,
        1025,
        16 * 1024 - 1,
        16 * 1024,
        16 * 1024 + 1,
        5 * 1024 * 1024 + 7,
        (3 << 20) * 2,
    ];
    for (seed, size) in sizes.into_iter().enumerate() {
        let data = payload_bytes(size, seed as u32);
        let payload = hash_of(&data);
        // `compute` refuses a tree whose root is not `payload`, the plain blake3 hash.
        let outboard = Outboard::compute(payload, &data)
            .unwrap_or_else(|error| panic!("size {size}: {error}"));
        assert_eq!(outboard.size(), size as u64);
        assert_eq!(
            outboard.hash_bytes(),
            (size as u64).div_ceil(G).max(1) * 64 - 64
        );
    }
}

#[test]
fn outboard_refuses_data_that_is_not_the_payload() {
    let data = payload_bytes(40_000, 1);
    let wrong = PayloadHash([9; 32]);
    match Outboard::compute(wrong, &data) {
        Err(TransferError::NotThePayload {
            expected,
            got,
            size,
        }) => {
            assert_eq!((expected, got, size), (wrong, hash_of(&data), 40_000));
        }
        other => panic!("expected NotThePayload, got {other:?}"),
    }
}

#[test]
fn outboard_is_about_four_tenths_of_a_percent_of_the_payload() {
    let data = payload_bytes(8 << 20, 2);
    let outboard = Outboard::compute(hash_of(&data), &data).expect("outboard");
    let ratio = outboard.hash_bytes() as f64 / data.len() as f64;
    assert!((0.0038..0.0040).contains(&ratio), "ratio {ratio}");
}

fn round_trip(data: &[u8], ranges: &[Range<u64>]) -> (u64, Vec<Range<u64>>) {
    let truth = Arc::new(data.to_vec());
    let payload = hash_of(data);
    let outboard = Outboard::compute(payload, data).expect("outboard");
    let encoded = encode_ranges(data, &outboard, ranges).expect("encode");
    assert_eq!(encoded.len() as u64, encoded_len(data.len() as u64, ranges));
    let sink = CheckingSink::new(truth);
    let written =
        decode_ranges(payload, data.len() as u64, ranges, &encoded, &sink).expect("decode");
    (written, sink.writes())
}

fn groups_of(ranges: &[Range<u64>]) -> Vec<Range<u64>> {
    ranges
        .iter()
        .flat_map(|range| {
            (range.start..range.end)
                .step_by(G as usize)
                .map(move |start| start..(start + G).min(range.end))
        })
        .collect()
}

#[test]
fn ranges_decode_verify_and_write_exactly_their_groups() {
    let size = 20 * G + 777;
    let data = payload_bytes(size as usize, 3);
    for ranges in [
        vec![0..size],
        vec![0..G],
        vec![3 * G..5 * G, 7 * G..8 * G, 20 * G..size],
        vec![19 * G..size],
    ] {
        let (written, writes) = round_trip(&data, &ranges);
        assert_eq!(written, ranges.iter().map(|r| r.end - r.start).sum::<u64>());
        assert_eq!(writes, groups_of(&ranges), "ranges {ranges:?}");
    }
    // One short group is the whole payload.
    let small = payload_bytes(1000, 4);
    assert_eq!(round_trip(&small, &[0..1000]), (1000, vec![0..1000]));
    // Nothing asked, nothing sent.
    let empty: Vec<u8> = Vec::new();
    assert_eq!(round_trip(&empty, &[]), (0, vec![]));
    assert_eq!(round_trip(&data, &[]), (0, vec![]));
}

#[test]
fn a_flipped_byte_in_any_group_is_a_bad_range_at_that_group_and_nothing_after_it_is_written() {
    let size = 9 * G + 100;
    let data = payload_bytes(size as usize, 5);
    let payload = hash_of(&data);
    let outboard = Outboard::compute(payload, &data).expect("outboard");
    let ranges = vec![G..4 * G, 6 * G..size];
    for group in groups_of(&ranges) {
        for flip_at in [
            group.start,
            group.start + 4321 % (group.end - group.start),
            group.end - 1,
        ] {
            // A holder whose copy has one bad byte, served with the honest tree.
            let mut corrupt = data.clone();
            corrupt[flip_at as usize] ^= 0x20;
            let encoded = encode_ranges(&corrupt, &outboard, &ranges).expect("encode");
            let sink = CheckingSink::new(Arc::new(data.clone()));
            match decode_ranges(payload, size, &ranges, &encoded, &sink) {
                Err(TransferError::BadRange { offset, reason, .. }) => {
                    assert_eq!(offset, group.start, "flip at {flip_at}");
                    assert_eq!(reason, BadRangeReason::GroupHashMismatch);
                }
                other => panic!("flip at {flip_at}: expected BadRange, got {other:?}"),
            }
            let before: Vec<_> = groups_of(&ranges)
                .into_iter()
                .filter(|g| g.start < group.start)
                .collect();
            assert_eq!(
                sink.writes(),
                before,
                "only the verified groups before it are written"
            );
        }
    }
}

#[test]
fn any_corruption_of_the_encoding_is_caught_before_its_bytes_reach_the_sink() {
    let size = 6 * G + 5000;
    let data = payload_bytes(size as usize, 6);
    let payload = hash_of(&data);
    let outboard = Outboard::compute(payload, &data).expect("outboard");
    let ranges = vec![0..2 * G, 4 * G..size];
    let encoded = encode_ranges(&data, &outboard, &ranges).expect("encode");
    // Every hash pair byte and a sample of data bytes, proof and data alike.
    for position in (0..encoded.len()).step_by(97) {
        let mut bad = encoded.clone();
        bad[position] ^= 1;
        // CheckingSink panics on any byte that is not the payload's.
        let sink = CheckingSink::new(Arc::new(data.clone()));
        match decode_ranges(payload, size, &ranges, &bad, &sink) {
            Err(TransferError::BadRange { offset, .. }) => {
                assert!(sink.writes().iter().all(|w| w.end <= offset));
                assert_eq!(
                    sink.writes(),
                    groups_of(&ranges)
                        .into_iter()
                        .filter(|g| g.start < offset)
                        .collect::<Vec<_>>()
                );
            }
            other => panic!("flip at {position}: expected BadRange, got {other:?}"),
        }
    }
    // Cut short: truncated at the first missing group; too long: trailing bytes.
    let sink = CheckingSink::new(Arc::new(data.clone()));
    let short = &encoded[..encoded.len() - 1];
    assert!(matches!(
        decode_ranges(payload, size, &ranges, short, &sink),
        Err(TransferError::BadRange { offset, reason: BadRangeReason::Truncated, .. }) if offset == 6 * G
    ));
    let mut long = encoded.clone();
    long.extend_from_slice(&[0; 3]);
    assert!(matches!(
        decode_ranges(payload, size, &ranges, &long, &CheckingSink::new(Arc::new(data.clone()))),
        Err(TransferError::BadRange { offset, reason: BadRangeReason::TrailingBytes { extra: 3 }, .. }) if offset == size
    ));
    // Another payload's hash verifies nothing.
    let other = CheckingSink::new(Arc::new(data.clone()));
    assert!(matches!(
        decode_ranges(PayloadHash([1; 32]), size, &ranges, &encoded, &other),
        Err(TransferError::BadRange { offset: 0, .. })
    ));
    assert!(other.writes().is_empty());
}

#[test]
fn decode_refuses_ranges_that_break_the_rules() {
    let sink = CheckingSink::new(Arc::new(vec![0; 100]));
    assert!(matches!(
        decode_ranges(PayloadHash::ZERO, 100, &[0..101], &[], &sink),
        Err(TransferError::InvalidRanges {
            source: RangeError::OutOfBounds { end: 101, .. },
            ..
        })
    ));
}

#[test]
fn respond_refuses_with_a_typed_answer() {
    let data = payload_bytes(50_000, 7);
    let payload = hash_of(&data);
    let outboard = Outboard::compute(payload, &data).expect("outboard");
    let request = |payload, size, ranges| RangeRequest {
        payload,
        size,
        ranges,
    };
    assert_eq!(
        respond(
            &request(PayloadHash([2; 32]), 50_000, vec![0..G]),
            &data,
            &outboard
        )
        .expect("respond"),
        RangeResponse::not_held()
    );
    assert_eq!(
        respond(&request(payload, 50_001, vec![0..G]), &data, &outboard).expect("respond"),
        RangeResponse::Refused(Refusal::SizeMismatch { held: 50_000 })
    );
    assert_eq!(
        respond(&request(payload, 50_000, vec![0..50_001]), &data, &outboard).expect("respond"),
        RangeResponse::Refused(Refusal::InvalidRanges(RangeError::OutOfBounds {
            start: 0,
            end: 50_001,
            size: 50_000
        }))
    );
    let RangeResponse::Encoded(encoded) =
        respond(&request(payload, 50_000, vec![G..50_000]), &data, &outboard).expect("respond")
    else {
        panic!("expected an encoding");
    };
    assert_eq!(
        encoded,
        encode_ranges(&data, &outboard, &[G..50_000]).expect("encode")
    );
    assert!(matches!(
        encode_ranges(&data[..49_999], &outboard, &[0..G]),
        Err(TransferError::DataSizeMismatch {
            data_bytes: 49_999,
            size: 50_000,
            ..
        })
    ));
}

#[test]
fn the_largest_response_fits_its_limit() {
    // Widest proofs: the most ranges, far apart, in the largest tree, then the rest of the data.
    let size = 1u64 << 62;
    let count = RANGE_REQUEST_RANGES_MAX as u64;
    let stride = size / count;
    let mut ranges: Vec<Range<u64>> = (0..count - 1)
        .map(|i| i * stride + G..i * stride + 2 * G)
        .collect();
    let last = (count - 1) * stride + G;
    ranges.push(last..last + RANGE_REQUEST_DATA_BYTES_MAX - (count - 1) * G);
    let request = RangeRequest {
        payload: PayloadHash::ZERO,
        size,
        ranges,
    };
    assert_eq!(request.check(), Ok(RANGE_REQUEST_DATA_BYTES_MAX));
    let len = encoded_len(size, &request.ranges);
    assert!(
        len <= RANGE_RESPONSE_BYTES_MAX,
        "{len} > {RANGE_RESPONSE_BYTES_MAX}"
    );
    // The proof overhead the limit's doc promises: under 512 KiB.
    let proof = len - RANGE_REQUEST_DATA_BYTES_MAX;
    assert!(proof < 512 * 1024, "proof {proof} bytes");
}

#[test]
fn cache_computes_a_tree_once_and_evicts_the_least_recently_used_within_its_bound() {
    let payloads: Vec<Vec<u8>> = (0..3)
        .map(|seed| payload_bytes(64 * G as usize, seed))
        .collect();
    let hashes: Vec<PayloadHash> = payloads.iter().map(|data| hash_of(data)).collect();
    let one = Outboard::compute(hashes[0], &payloads[0]).expect("outboard");
    // Room for two trees of this size, not three.
    let cache = OutboardCache::new(2 * (one.hash_bytes() + 256) + 10);
    let first = cache
        .get_or_compute(hashes[0], &payloads[0])
        .expect("compute");
    let again = cache
        .get_or_compute(hashes[0], &payloads[0])
        .expect("cached");
    assert!(
        Arc::ptr_eq(&first, &again),
        "a cached tree is not computed again"
    );
    cache
        .get_or_compute(hashes[1], &payloads[1])
        .expect("compute");
    assert!(
        cache.get(&hashes[0]).is_some(),
        "touch 0: 1 is now the least recently used"
    );
    cache
        .get_or_compute(hashes[2], &payloads[2])
        .expect("compute");
    assert_eq!(cache.len(), 2);
    assert!(cache.get(&hashes[1]).is_none(), "1 was evicted");
    assert!(cache.get(&hashes[0]).is_some() && cache.get(&hashes[2]).is_some());
    assert!(cache.bytes() <= 2 * (one.hash_bytes() + 256) + 10);
    // A wrong hash is an error, and nothing is cached for it.
    assert!(
        cache
            .get_or_compute(PayloadHash([5; 32]), &payloads[0])
            .is_err()
    );
    assert!(cache.get(&PayloadHash([5; 32])).is_none());
    // A tree larger than the whole cache is returned, not kept.
    let tiny = OutboardCache::new(100);
    assert!(tiny.get_or_compute(hashes[0], &payloads[0]).is_ok());
    assert!(tiny.is_empty());
}

/// How a memory holder behaves.
#[derive(Debug, Clone)]
enum Behaviour {
    Honest,
    /// Serves a copy with one byte flipped at each of these offsets, with the honest tree.
    Corrupt(Vec<u64>),
    Fails,
    Hangs,
    Refuses,
}

/// A request as a holder saw it: who was asked for which ranges.
type Asked = (&'static str, Vec<Range<u64>>);

/// Holders in memory: each answers from the same payload as its behaviour says.
struct MemoryHolders {
    data: Arc<Vec<u8>>,
    outboard: Outboard,
    behaviours: HashMap<&'static str, Behaviour>,
    log: Mutex<Vec<Asked>>,
}

impl MemoryHolders {
    fn new(data: Arc<Vec<u8>>, behaviours: &[(&'static str, Behaviour)]) -> Self {
        let outboard = Outboard::compute(hash_of(&data), &data).expect("outboard");
        Self {
            data,
            outboard,
            behaviours: behaviours.iter().cloned().collect(),
            log: Mutex::new(Vec::new()),
        }
    }

    fn log(&self) -> Vec<Asked> {
        self.log.lock().expect("lock").clone()
    }
}

impl RangeSource<&'static str> for MemoryHolders {
    async fn request(
        &self,
        holder: &&'static str,
        request: RangeRequest,
    ) -> std::result::Result<RangeResponse, SourceError> {
        self.log
            .lock()
            .expect("lock")
            .push((holder, request.ranges.clone()));
        match &self.behaviours[holder] {
            Behaviour::Honest => {
                Ok(respond(&request, &self.data, &self.outboard).expect("respond"))
            }
            Behaviour::Corrupt(offsets) => {
                let mut copy = self.data.to_vec();
                for &offset in offsets {
                    copy[offset as usize] ^= 0xff;
                }
                Ok(respond(&request, &copy, &self.outboard).expect("respond"))
            }
            Behaviour::Fails => Err(SourceError::Failed {
                reason: "connection reset".into(),
            }),
            Behaviour::Hangs => std::future::pending().await,
            Behaviour::Refuses => Ok(RangeResponse::not_held()),
        }
    }
}

fn bytes_of(report: &FetchReport<&'static str>, holder: &str) -> u64 {
    report
        .bytes_by_holder
        .iter()
        .find(|(id, _)| *id == holder)
        .map(|(_, bytes)| *bytes)
        .expect("holder in report")
}

#[tokio::test]
async fn fetch_spreads_requests_over_every_holder() {
    let size = 3 * (1 << 20) + 999;
    let data = Arc::new(payload_bytes(size, 8));
    let holders = MemoryHolders::new(
        Arc::clone(&data),
        &[
            ("a", Behaviour::Honest),
            ("b", Behaviour::Honest),
            ("c", Behaviour::Honest),
        ],
    );
    let sink = CheckingSink::new(Arc::clone(&data));
    let options = FetchOptions {
        request_bytes: 256 * 1024,
        in_flight_per_holder: 2,
        ..FetchOptions::default()
    };
    let report = fetch(
        hash_of(&data),
        size as u64,
        vec![0..size as u64],
        vec!["a", "b", "c"],
        &holders,
        &sink,
        options,
    )
    .await
    .expect("fetch");
    assert_eq!(sink.buffer(), *data);
    assert_eq!(report.bytes_written, size as u64);
    assert_eq!(report.requests, 13);
    for holder in ["a", "b", "c"] {
        assert!(
            bytes_of(&report, holder) >= 1 << 20,
            "{holder} served its share: {report:?}"
        );
    }
    assert!(report.offenses.is_empty() && report.failures.is_empty() && report.dropped.is_empty());
}

#[tokio::test(start_paused = true)]
async fn a_holder_sending_a_corrupt_range_is_caught_at_it_penalized_and_the_payload_completes_from_the_others()
 {
    let size = 2 * (1 << 20) + 12_345;
    let data = Arc::new(payload_bytes(size, 9));
    // "bad" is asked first (first of the least busy) for 0..256 KiB; its third group is corrupt,
    // and so is a later one it is never asked for again.
    let holders = MemoryHolders::new(
        Arc::clone(&data),
        &[
            ("bad", Behaviour::Corrupt(vec![2 * G + 77, 100 * G])),
            ("a", Behaviour::Honest),
            ("b", Behaviour::Honest),
        ],
    );
    let sink = CheckingSink::new(Arc::clone(&data));
    let options = FetchOptions {
        request_bytes: 256 * 1024,
        in_flight_per_holder: 1,
        ..FetchOptions::default()
    };
    let report = fetch(
        hash_of(&data),
        size as u64,
        vec![0..size as u64],
        vec!["bad", "a", "b"],
        &holders,
        &sink,
        options,
    )
    .await
    .expect("fetch");
    assert_eq!(sink.buffer(), *data, "bit-identical");
    assert_eq!(
        report.offenses,
        vec![Offense {
            holder: "bad",
            offset: 2 * G,
            reason: BadRangeReason::GroupHashMismatch,
            banned_for: Duration::from_secs(15),
        }]
    );
    // Its two good groups before the bad one count; nothing after.
    assert_eq!(bytes_of(&report, "bad"), 2 * G);
    assert_eq!(
        bytes_of(&report, "a") + bytes_of(&report, "b"),
        size as u64 - 2 * G
    );
    // Banned for the rest of this (short) fetch: asked once only.
    assert_eq!(
        holders
            .log()
            .iter()
            .filter(|(holder, _)| *holder == "bad")
            .count(),
        1
    );
    // The rest of its request went to another holder, from the bad group on.
    assert!(
        holders
            .log()
            .iter()
            .any(|(holder, ranges)| *holder != "bad" && ranges == &vec![2 * G..256 * 1024])
    );
}

#[tokio::test(start_paused = true)]
async fn failing_and_hanging_holders_are_retried_elsewhere() {
    let size = 1 << 20;
    let data = Arc::new(payload_bytes(size, 10));
    let holders = MemoryHolders::new(
        Arc::clone(&data),
        &[
            ("fails", Behaviour::Fails),
            ("hangs", Behaviour::Hangs),
            ("ok", Behaviour::Honest),
        ],
    );
    let sink = CheckingSink::new(Arc::clone(&data));
    let options = FetchOptions {
        request_bytes: 128 * 1024,
        in_flight_per_holder: 1,
        request_deadline: Duration::from_secs(2),
        ..FetchOptions::default()
    };
    let report = fetch(
        hash_of(&data),
        size as u64,
        vec![0..size as u64],
        vec!["fails", "hangs", "ok"],
        &holders,
        &sink,
        options,
    )
    .await
    .expect("fetch");
    assert_eq!(sink.buffer(), *data);
    assert_eq!(bytes_of(&report, "ok"), size as u64);
    assert!(
        report
            .failures
            .iter()
            .any(|failure| failure.holder == "fails"
                && matches!(
                    failure.kind,
                    FailureKind::Source(SourceError::Failed { .. })
                ))
    );
    assert!(
        report
            .failures
            .iter()
            .any(|failure| failure.holder == "hangs"
                && failure.kind
                    == FailureKind::Source(SourceError::Timeout {
                        deadline: Duration::from_secs(2)
                    }))
    );
    assert_eq!(report.failure_count, report.failures.len() as u64);
    assert!(report.offenses.is_empty(), "failures are not offenses");
}

#[tokio::test]
async fn resume_fetches_only_the_missing_ranges() {
    let size = 40 * G + 3;
    let data = Arc::new(payload_bytes(size as usize, 11));
    // Holes as a restart left them: not group-aligned; fetched as whole groups around them.
    let missing = vec![5 * G + 10..7 * G - 1, 30 * G..30 * G + 1, 39 * G + 5..size];
    let fetched = vec![5 * G..7 * G, 30 * G..31 * G, 39 * G..size];
    let holders = MemoryHolders::new(
        Arc::clone(&data),
        &[("a", Behaviour::Honest), ("b", Behaviour::Honest)],
    );
    let sink = CheckingSink::prefilled_except(Arc::clone(&data), &missing);
    let report = fetch(
        hash_of(&data),
        size,
        missing,
        vec!["a", "b"],
        &holders,
        &sink,
        FetchOptions::default(),
    )
    .await
    .expect("fetch");
    assert_eq!(sink.buffer(), *data);
    assert_eq!(
        report.bytes_written,
        fetched.iter().map(|r| r.end - r.start).sum::<u64>()
    );
    let mut asked: Vec<Range<u64>> = holders
        .log()
        .into_iter()
        .flat_map(|(_, ranges)| ranges)
        .collect();
    asked.sort_by_key(|range| range.start);
    assert_eq!(asked, fetched);
    let mut written = sink.writes();
    written.sort_by_key(|range| range.start);
    assert_eq!(written, groups_of(&fetched));
    // Nothing missing: nothing asked.
    let report = fetch(
        hash_of(&data),
        size,
        vec![],
        vec!["a"],
        &holders,
        &sink,
        FetchOptions::default(),
    )
    .await
    .expect("fetch");
    assert_eq!((report.requests, report.bytes_written), (0, 0));
}

#[tokio::test(start_paused = true)]
async fn no_usable_holder_left_is_a_typed_error_with_the_report() {
    let size = 300 * 1024;
    let data = Arc::new(payload_bytes(size, 12));
    let payload = hash_of(&data);
    let holders = MemoryHolders::new(
        Arc::clone(&data),
        &[
            ("refuses", Behaviour::Refuses),
            ("fails", Behaviour::Fails),
            (
                "corrupt",
                Behaviour::Corrupt((0..size as u64).step_by(G as usize).collect()),
            ),
        ],
    );
    let sink = CheckingSink::new(Arc::clone(&data));
    // One request at a time per holder, so each offense is seen before the next request.
    let options = FetchOptions {
        request_bytes: 64 * 1024,
        in_flight_per_holder: 1,
        ..FetchOptions::default()
    };
    let error = fetch(
        payload,
        size as u64,
        vec![0..size as u64],
        vec!["refuses", "fails", "corrupt"],
        &holders,
        &sink,
        options.clone(),
    )
    .await
    .expect_err("no holder can serve it");
    assert!(matches!(
        error.error,
        TransferError::NoHoldersLeft { payload: p, missing_bytes, holders: 3 } if p == payload && missing_bytes == size as u64
    ));
    let mut dropped = error.report.dropped.clone();
    dropped.sort();
    assert_eq!(dropped, vec!["corrupt", "fails", "refuses"]);
    // The corrupt holder was banned 15 s, came back, offended again (ban doubled), then dropped.
    let bans: Vec<Duration> = error
        .report
        .offenses
        .iter()
        .map(|offense| offense.banned_for)
        .collect();
    assert_eq!(bans, vec![Duration::from_secs(15), Duration::from_secs(30)]);
    assert!(sink.writes().is_empty());

    let none = fetch(
        payload,
        size as u64,
        vec![0..G],
        Vec::<&'static str>::new(),
        &holders,
        &sink,
        options,
    )
    .await
    .expect_err("no holders at all");
    assert!(
        matches!(none.error, TransferError::NoHoldersLeft { missing_bytes, holders: 0, .. } if missing_bytes == G)
    );
}

#[tokio::test]
async fn fetch_refuses_bad_options_and_out_of_bounds_ranges() {
    let data = Arc::new(payload_bytes(1000, 13));
    let holders = MemoryHolders::new(Arc::clone(&data), &[("a", Behaviour::Honest)]);
    let sink = CheckingSink::new(Arc::clone(&data));
    let bad_options = FetchOptions {
        request_bytes: G + 1,
        ..FetchOptions::default()
    };
    let error = fetch(
        hash_of(&data),
        1000,
        vec![0..1000],
        vec!["a"],
        &holders,
        &sink,
        bad_options,
    )
    .await
    .expect_err("bad options");
    assert!(matches!(
        error.error,
        TransferError::InvalidOptions {
            field: "request_bytes",
            ..
        }
    ));
    let error = fetch(
        hash_of(&data),
        1000,
        vec![0..1001],
        vec!["a"],
        &holders,
        &sink,
        FetchOptions::default(),
    )
    .await
    .expect_err("out of bounds");
    assert!(matches!(
        error.error,
        TransferError::InvalidRanges {
            source: RangeError::OutOfBounds {
                end: 1001,
                size: 1000,
                ..
            },
            ..
        }
    ));
    assert!(holders.log().is_empty());
}

#[test]
fn holder_score_ban_doubles_and_ends() {
    let now = tokio::time::Instant::now();
    let mut score = HolderScore::default();
    assert!(!score.is_banned(now));
    assert_eq!(
        score.penalize(now, Duration::from_secs(15)),
        Duration::from_secs(15)
    );
    assert!(score.is_banned(now + Duration::from_secs(14)));
    assert!(!score.is_banned(now + Duration::from_secs(15)));
    assert_eq!(
        score.penalize(now, Duration::from_secs(15)),
        Duration::from_secs(30)
    );
    assert_eq!(score.offenses(), 2);
}

fn group_aligned_ranges(size: u64) -> impl Strategy<Value = Vec<Range<u64>>> {
    let groups = size.div_ceil(G).max(1);
    proptest::collection::vec((0..groups, 1..4u64), 0..6).prop_map(move |picks| {
        let mut starts: Vec<(u64, u64)> = picks;
        starts.sort();
        let mut ranges: Vec<Range<u64>> = Vec::new();
        for (group, length) in starts {
            let start = group * G;
            let end = ((group + length) * G).min(size);
            if start >= end || ranges.last().is_some_and(|last| start < last.end) {
                continue;
            }
            ranges.push(start..end);
        }
        ranges
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn any_ranges_of_any_size_round_trip(
        (size, ranges) in (0u64..200_000).prop_flat_map(|size| (Just(size), group_aligned_ranges(size)))
    ) {
        let data = payload_bytes(size as usize, size as u32);
        let (written, writes) = round_trip(&data, &ranges);
        prop_assert_eq!(written, ranges.iter().map(|r| r.end - r.start).sum::<u64>());
        prop_assert_eq!(writes, groups_of(&ranges));
    }
}

#[test]
fn a_fetch_can_run_on_its_own_tokio_task() {
    // The node spawns each fetch: its future must be Send (and so must verify nothing across
    // an await that is not).
    fn assert_send<T: Send>(_: &T) {}
    let data = Arc::new(payload_bytes(10, 14));
    let holders = MemoryHolders::new(Arc::clone(&data), &[("a", Behaviour::Honest)]);
    let sink = CheckingSink::new(Arc::clone(&data));
    let future = fetch(
        hash_of(&data),
        10,
        vec![0..10],
        vec!["a"],
        &holders,
        &sink,
        FetchOptions::default(),
    );
    assert_send(&future);
}
