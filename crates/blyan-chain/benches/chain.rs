//! blyan-chain benches, each against a baseline measured in the same run:
//! - append: small blocks per second and MB/s for 16 MiB payloads, synced and unsynced
//!   (baseline: writing the same bytes to a plain file, with and without fsync);
//! - full verification MB/s against raw blake3 (`update_rayon`) over the same payload bytes,
//!   with the ratio printed (target ≥ 0.8);
//! - lookups: header by hash and an expert's current version, against a raw RocksDB point read
//!   of a value of the same size;
//! - payload reads: a 16 MiB payload's handle from its mapped segment against a RocksDB point
//!   read (`get_pinned`, plain SST and BlobDB) of the same bytes, each then hashed once, which is
//!   the measurement behind keeping payloads out of RocksDB (docs/chain-storage.md).
//!
//! `cargo bench -p blyan-chain`; kept short (small samples) so the whole run stays in minutes.
// criterion_group! generates a public function no doc comment can reach.
#![allow(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::io::Write as _;
use std::time::{Duration, Instant};

use blyan_chain::{
    AuthorKey, BlockHash, BlockHeader, BlockKind, ChainId, ChainStore, ChainTip, Durability,
    ExpertName, GENESIS_TIMESTAMP_MS, PayloadHash, StoreConfig, hash_payload,
};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

const T0: u64 = GENESIS_TIMESTAMP_MS + 1;
const SMALL_PAYLOAD_BYTES: usize = 256;
const LARGE_PAYLOAD_BYTES: usize = 16 << 20;
const VERIFY_BLOCKS: usize = 24;
const LOOKUP_BLOCKS: usize = 10_000;
const EXPERTS: u32 = 32;
const EXPERT_VERSIONS: u32 = 4;

fn payload(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

fn config(durability: Durability) -> StoreConfig {
    StoreConfig {
        durability,
        ..StoreConfig::default()
    }
}

/// `count` signed dataset blocks chained from `tip`, all committing to `bytes`.
fn chained_headers(tip: ChainTip, count: u64, bytes: &[u8], key: &AuthorKey) -> Vec<BlockHeader> {
    let mut parent = tip;
    (0..count)
        .map(|_| {
            let mut header = BlockHeader::new_child(&parent, BlockKind::DatasetEntry, bytes, T0);
            header.sign(key);
            parent = ChainTip {
                chain: parent.chain,
                height: header.height,
                hash: header.hash(),
            };
            header
        })
        .collect()
}

fn bench_append(c: &mut Criterion) {
    let key = AuthorKey::generate();
    let mut group = c.benchmark_group("append");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    for (size_name, bytes) in [
        ("small_256B", payload(1, SMALL_PAYLOAD_BYTES)),
        ("16MiB", payload(2, LARGE_PAYLOAD_BYTES)),
    ] {
        group.throughput(if bytes.len() == SMALL_PAYLOAD_BYTES {
            Throughput::Elements(1)
        } else {
            Throughput::Bytes(bytes.len() as u64)
        });
        for durability in [Durability::Synced, Durability::Unsynced] {
            let label = format!("{size_name}/{durability:?}").to_lowercase();
            let dir = tempfile::tempdir().unwrap();
            let store = ChainStore::open(dir.path(), config(durability)).unwrap();
            group.bench_function(BenchmarkId::new("store", &label), |b| {
                b.iter_custom(|iters| {
                    let headers = chained_headers(store.tip(ChainId::Dataset), iters, &bytes, &key);
                    let start = Instant::now();
                    for header in &headers {
                        black_box(store.append(header, &bytes).unwrap());
                    }
                    start.elapsed()
                })
            });
            // Baseline: the same bytes appended to a plain file (fsynced when synced).
            let file_path = dir.path().join("baseline.bin");
            let mut file = std::fs::File::create(&file_path).unwrap();
            let mut plain_write = || {
                file.write_all(&bytes).unwrap();
                if durability == Durability::Synced {
                    file.sync_data().unwrap();
                }
            };
            group.bench_function(BenchmarkId::new("plain_file", &label), |b| {
                b.iter(&mut plain_write)
            });

            // Printed figures and ratio over a fixed count.
            let count: u64 = match (bytes.len() == SMALL_PAYLOAD_BYTES, durability) {
                (true, Durability::Unsynced) => 2000,
                (true, _) => 300,
                (false, _) => 8,
            };
            let headers = chained_headers(store.tip(ChainId::Dataset), count, &bytes, &key);
            let start = Instant::now();
            for header in &headers {
                store.append(header, &bytes).unwrap();
            }
            let store_seconds = start.elapsed().as_secs_f64();
            let start = Instant::now();
            for _ in 0..count {
                plain_write();
            }
            let plain_seconds = start.elapsed().as_secs_f64();
            let count = count as f64;
            println!(
                "append {label}: {:.0} blocks/s, {:.1} MB/s; plain file {:.0} writes/s, {:.1} MB/s; \
                 store/plain throughput ratio {:.2}",
                count / store_seconds,
                count * bytes.len() as f64 / store_seconds / 1e6,
                count / plain_seconds,
                count * bytes.len() as f64 / plain_seconds / 1e6,
                plain_seconds / store_seconds
            );
        }
    }
    group.finish();
}

/// Median seconds of `runs` runs of `work`.
fn median_seconds(runs: usize, mut work: impl FnMut()) -> f64 {
    let mut times: Vec<f64> = (0..runs)
        .map(|_| {
            let start = Instant::now();
            work();
            start.elapsed().as_secs_f64()
        })
        .collect();
    times.sort_by(f64::total_cmp);
    times[runs / 2]
}

fn bench_verify(c: &mut Criterion) {
    let key = AuthorKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let store = ChainStore::open(dir.path(), config(Durability::Unsynced)).unwrap();
    let mut hashes: Vec<BlockHash> = Vec::new();
    for seed in 0..VERIFY_BLOCKS {
        let bytes = payload(seed as u64, LARGE_PAYLOAD_BYTES);
        let header = chained_headers(store.tip(ChainId::Dataset), 1, &bytes, &key).remove(0);
        hashes.push(store.append(&header, &bytes).unwrap());
    }
    let handles: Vec<_> = hashes
        .iter()
        .map(|hash| store.payload(hash).unwrap().unwrap())
        .collect();
    let total_bytes = store
        .info()
        .chains
        .iter()
        .map(|chain| chain.payload_bytes)
        .sum::<u64>();
    let raw_blake3 = || {
        for handle in &handles {
            black_box(hash_payload(handle));
        }
    };
    let verify = || {
        let report = store.verify(|_| {}).unwrap();
        assert!(report.is_ok());
    };

    // The ratio, measured here so it can be printed (criterion keeps its numbers to itself).
    // Runs alternate between the two so that load from elsewhere on the machine hits both alike;
    // the ratio is the median of the per-pair ratios.
    raw_blake3();
    verify();
    let pairs = 9;
    let mut raw_times = Vec::with_capacity(pairs);
    let mut verify_times = Vec::with_capacity(pairs);
    let mut ratios = Vec::with_capacity(pairs);
    for _ in 0..pairs {
        let raw = median_seconds(1, raw_blake3);
        let full = median_seconds(1, verify);
        raw_times.push(raw);
        verify_times.push(full);
        ratios.push(raw / full);
    }
    let median = |values: &mut Vec<f64>| {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let megabytes = total_bytes as f64 / 1e6;
    println!(
        "verify: {:.0} MB/s, raw blake3 over the same bytes: {:.0} MB/s, ratio {:.2} \
         (median of {pairs} alternating pairs; target >= 0.80)",
        megabytes / median(&mut verify_times),
        megabytes / median(&mut raw_times),
        median(&mut ratios)
    );

    let mut group = c.benchmark_group("verify");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5));
    group.throughput(Throughput::Bytes(total_bytes));
    group.bench_function("full_store", |b| b.iter(verify));
    group.bench_function("raw_blake3_baseline", |b| b.iter(raw_blake3));
    group.finish();
}

fn bench_lookup(c: &mut Criterion) {
    let key = AuthorKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let store = ChainStore::open(dir.path(), config(Durability::Unsynced)).unwrap();
    let headers = chained_headers(
        store.tip(ChainId::Dataset),
        LOOKUP_BLOCKS as u64,
        b"entry",
        &key,
    );
    for header in &headers {
        store.append(header, b"entry").unwrap();
    }
    let mut experts = Vec::new();
    for version in 1..=EXPERT_VERSIONS {
        for index in 0..EXPERTS {
            let expert = ExpertName::new(index / 8, index % 8).unwrap();
            let bytes = payload(u64::from(index), 64);
            let mut header = BlockHeader::new_child(
                &store.tip(ChainId::Parameters),
                BlockKind::Expert,
                &bytes,
                T0,
            );
            header.meta.expert = Some(expert);
            header.meta.version = version;
            header.sign(&key);
            store.append(&header, &bytes).unwrap();
            if version == 1 {
                experts.push(expert);
            }
        }
    }
    let hashes: Vec<BlockHash> = headers.iter().map(BlockHeader::hash).collect();

    // Baseline: a raw RocksDB holding the same header bytes under the same keys.
    let raw_dir = tempfile::tempdir().unwrap();
    let raw = rocksdb::DB::open_default(raw_dir.path()).unwrap();
    for header in &headers {
        raw.put(header.hash().as_bytes(), header.encode()).unwrap();
    }

    let mut group = c.benchmark_group("lookup");
    group
        .sample_size(20)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(2));
    let mut next = 0usize;
    group.bench_function("header_by_hash", |b| {
        b.iter(|| {
            next = (next + 7919) % hashes.len();
            black_box(store.header(&hashes[next]).unwrap().unwrap())
        })
    });
    group.bench_function("raw_rocksdb_get_baseline", |b| {
        b.iter(|| {
            next = (next + 7919) % hashes.len();
            black_box(
                raw.get_pinned(hashes[next].as_bytes())
                    .unwrap()
                    .unwrap()
                    .len(),
            )
        })
    });
    group.bench_function("expert_current", |b| {
        b.iter(|| {
            next = (next + 13) % experts.len();
            black_box(store.expert_current(experts[next]).unwrap().unwrap())
        })
    });
    group.finish();

    // Printed ratios against the raw read.
    let lookups = 20_000;
    let mut index = 0usize;
    let header_seconds = median_seconds(5, || {
        for _ in 0..lookups {
            index = (index + 7919) % hashes.len();
            black_box(store.header(&hashes[index]).unwrap());
        }
    });
    let raw_seconds = median_seconds(5, || {
        for _ in 0..lookups {
            index = (index + 7919) % hashes.len();
            black_box(raw.get_pinned(hashes[index].as_bytes()).unwrap());
        }
    });
    let expert_seconds = median_seconds(5, || {
        for _ in 0..lookups {
            index = (index + 13) % experts.len();
            black_box(store.expert_current(experts[index]).unwrap());
        }
    });
    let micros = |seconds: f64| seconds * 1e6 / f64::from(lookups);
    println!(
        "lookup: header by hash {:.2} µs, expert current {:.2} µs, raw RocksDB get {:.2} µs; \
         header/raw {:.2}x, expert/raw {:.2}x",
        micros(header_seconds),
        micros(expert_seconds),
        micros(raw_seconds),
        header_seconds / raw_seconds,
        expert_seconds / raw_seconds
    );
}

fn bench_payload_read(c: &mut Criterion) {
    const READ_BLOCKS: usize = 8;
    let key = AuthorKey::generate();
    let dir = tempfile::tempdir().unwrap();
    let store = ChainStore::open(dir.path(), config(Durability::Unsynced)).unwrap();
    let payloads: Vec<Vec<u8>> = (0..READ_BLOCKS)
        .map(|seed| payload(100 + seed as u64, LARGE_PAYLOAD_BYTES))
        .collect();
    let mut hashes = Vec::new();
    for bytes in &payloads {
        let header = chained_headers(store.tip(ChainId::Dataset), 1, bytes, &key).remove(0);
        hashes.push(store.append(&header, bytes).unwrap());
    }
    // The same bytes as RocksDB values: in SST files, and in BlobDB blob files.
    let sst_dir = tempfile::tempdir().unwrap();
    let sst = rocksdb::DB::open_default(sst_dir.path()).unwrap();
    let blob_dir = tempfile::tempdir().unwrap();
    let mut blob_options = rocksdb::Options::default();
    blob_options.create_if_missing(true);
    blob_options.set_enable_blob_files(true);
    blob_options.set_min_blob_size(4096);
    let blob = rocksdb::DB::open(&blob_options, blob_dir.path()).unwrap();
    for (hash, bytes) in hashes.iter().zip(&payloads) {
        sst.put(hash.as_bytes(), bytes).unwrap();
        blob.put(hash.as_bytes(), bytes).unwrap();
    }
    sst.flush().unwrap();
    blob.flush().unwrap();
    drop(payloads);

    let mut group = c.benchmark_group("payload_read_16MiB");
    group
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3));
    group.throughput(Throughput::Bytes(LARGE_PAYLOAD_BYTES as u64));
    let mut next = 0usize;
    let mut pick = || {
        next = (next + 1) % hashes.len();
        hashes[next]
    };
    group.bench_function("segment_handle", |b| {
        b.iter(|| black_box(store.payload(&pick()).unwrap().unwrap().len()))
    });
    group.bench_function("segment_handle_hashed", |b| {
        b.iter(|| black_box(hash_payload(&store.payload(&pick()).unwrap().unwrap())))
    });
    group.bench_function("rocksdb_sst_get_pinned_hashed", |b| {
        b.iter(|| {
            black_box(hash_payload(
                &sst.get_pinned(pick().as_bytes()).unwrap().unwrap(),
            ))
        })
    });
    group.bench_function("rocksdb_blob_get_pinned_hashed", |b| {
        b.iter(|| {
            black_box(hash_payload(
                &blob.get_pinned(pick().as_bytes()).unwrap().unwrap(),
            ))
        })
    });
    group.finish();

    let runs = 5;
    let read_all = |read: &dyn Fn(&BlockHash) -> PayloadHash| {
        median_seconds(runs, || {
            for hash in &hashes {
                black_box(read(hash));
            }
        })
    };
    let segment = read_all(&|hash| hash_payload(&store.payload(hash).unwrap().unwrap()));
    let in_sst = read_all(&|hash| hash_payload(&sst.get_pinned(hash.as_bytes()).unwrap().unwrap()));
    let in_blob =
        read_all(&|hash| hash_payload(&blob.get_pinned(hash.as_bytes()).unwrap().unwrap()));
    let megabytes = (READ_BLOCKS * LARGE_PAYLOAD_BYTES) as f64 / 1e6;
    println!(
        "payload read + blake3, 16 MiB: mapped segment {:.0} MB/s, RocksDB SST {:.0} MB/s, \
         RocksDB BlobDB {:.0} MB/s; segment/SST {:.2}x, segment/BlobDB {:.2}x",
        megabytes / segment,
        megabytes / in_sst,
        megabytes / in_blob,
        in_sst / segment,
        in_blob / segment
    );
}

criterion_group!(
    benches,
    bench_append,
    bench_verify,
    bench_lookup,
    bench_payload_read
);
criterion_main!(benches);
