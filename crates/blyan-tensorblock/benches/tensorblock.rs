//! Loading a 64 MiB f32 expert stored in the chain, against the floors measured in the same run.
//!
//! Groups:
//! - `view_create`: `TensorBlock::new(payload handle)` + `tensor("w")` for 1, 8 and 64 MiB
//!   payloads (no data page is touched, so the time must not grow with the size), and the same
//!   with the chain lookup (`ChainStore::payload`) included;
//! - `full_pass_warm` / `full_pass_cold`: one pass over the 64 MiB expert, every iteration over a
//!   fresh mapping (the store is reopened, untimed, before each iteration), with the file's pages
//!   in the page cache (warm) or evicted with `posix_fadvise(DONTNEED)` (cold):
//!   - `floor_mmap_touch_pages`: mmap the same bytes and read one byte per page (the physical
//!     floor of making every page resident);
//!   - `floor_mmap_read_all`: mmap and read every byte (the floor of a full pass over the data);
//!   - `chain_view_sum`: `chain.payload(hash)` → `TensorBlock` → `tensor("w").sum()`;
//!   - `chain_view_sum_resident` (warm only): the same over a mapping whose pages are already
//!     mapped in (no reopen), i.e. the pass alone; `chain_view_sum` minus it is what loading
//!     costs, to set against the page-touching floor;
//!   - `naive_read_vec_from_slice`: read the payload into a `Vec`, decode the f32s into a
//!     `Vec<f32>`, `Tensor::from_slice`, sum: what a copying loader does;
//! - `int8`: the 64 MiB f32 weight `[4096, 4096]` and its INT8 block: dequantize-on-load against
//!   an f32 load (copy), and `x @ Wᵀ` on the INT8 codes against f32 for batches 1 and 16.
//!
//! libtorch runs with one intra-op thread, like the floors. At the end a summary prints the
//! ratios the targets are stated in (medians of the per-sample means each routine recorded).
//! Run: `cargo bench -p blyan-tensorblock --bench tensorblock -- --warm-up-time 1
//! --measurement-time 3`.
// criterion_group! generates a public function no doc comment can reach.
#![allow(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::any::Any;
use std::collections::BTreeMap;
use std::fs::File;
use std::hint::black_box;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use blyan_chain::{
    AuthorKey, BlockHash, BlockHeader, BlockKind, ChainId, ChainStore, ExpertName,
    GENESIS_TIMESTAMP_MS, StoreConfig,
};
use blyan_tensorblock::{
    BlockRef, BlockWriter, Dtype, EncodeTensor, TensorBlock, TensorSpec, encode_tensors_to_vec,
};
use criterion::{Criterion, criterion_group, criterion_main};
use memmap2::Mmap;
use tch::{Device, Kind, Tensor};

/// Columns of every f32 test weight; the row count sets the payload size.
const COLS: u64 = 4096;
/// Rows of the 64 MiB expert weight.
const EXPERT_ROWS: u64 = 4096;
/// Payload sizes of the view-creation group, in MiB.
const VIEW_SIZES_MIB: [u64; 3] = [1, 8, 64];
// The last view size is the expert the full-pass and INT8 groups measure.
const _: () = assert!(VIEW_SIZES_MIB[2] * 1024 * 1024 == EXPERT_ROWS * COLS * 4);
/// Granularity of the page-touching floor.
const PAGE_BYTES: usize = 4096;

/// Per-sample mean seconds per iteration of each routine, for the summary.
static RECORDS: Mutex<BTreeMap<String, Vec<f64>>> = Mutex::new(BTreeMap::new());

fn record(name: &str, total: Duration, iters: u64) {
    if iters == 0 {
        return;
    }
    RECORDS
        .lock()
        .unwrap()
        .entry(name.to_owned())
        .or_default()
        .push(total.as_secs_f64() / iters as f64);
}

fn median(name: &str) -> Option<f64> {
    let records = RECORDS.lock().unwrap();
    let mut values = records.get(name)?.clone();
    values.sort_by(f64::total_cmp);
    Some(values[values.len() / 2])
}

/// The chain store holding the test experts, reopened on demand, and a plain file with the same
/// bytes as the 64 MiB expert's payload (the floors map it).
struct Fixture {
    _dir: tempfile::TempDir,
    chain_path: PathBuf,
    store: Mutex<Option<ChainStore>>,
    /// Hashes of the f32 blocks of `VIEW_SIZES_MIB`, in that order.
    f32_blocks: Vec<BlockHash>,
    /// The INT8 block of the 64 MiB expert's weight.
    int8_block: BlockHash,
    file_path: PathBuf,
}

impl Fixture {
    fn expert_block(&self) -> BlockHash {
        *self.f32_blocks.last().expect("the 64 MiB block is last")
    }

    /// Runs `f` with the open store.
    fn with_store<T>(&self, f: impl FnOnce(&ChainStore) -> T) -> T {
        let mut guard = self.store.lock().unwrap();
        let store = guard.get_or_insert_with(|| open_store(&self.chain_path));
        f(store)
    }

    /// Closes the store (every mapping of its segments goes with it) and opens it again.
    fn reopen(&self) {
        let mut guard = self.store.lock().unwrap();
        *guard = None;
        *guard = Some(open_store(&self.chain_path));
    }

    /// Closes the store and evicts its segment files and the plain file from the page cache.
    fn evict(&self) {
        let mut guard = self.store.lock().unwrap();
        *guard = None;
        for entry in std::fs::read_dir(self.chain_path.join("segments")).unwrap() {
            evict_file(&entry.unwrap().path());
        }
        evict_file(&self.file_path);
        *guard = Some(open_store(&self.chain_path));
    }
}

fn open_store(path: &Path) -> ChainStore {
    ChainStore::open(path, StoreConfig::default()).expect("open the bench's chain store")
}

fn evict_file(path: &Path) {
    let file = File::open(path).unwrap();
    // SAFETY: `posix_fadvise` only reads its integer arguments; the descriptor is open.
    let code = unsafe { libc::posix_fadvise(file.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
    assert_eq!(code, 0, "posix_fadvise({}) failed", path.display());
}

/// Fraction of `path`'s pages in the page cache.
fn resident_fraction(path: &Path) -> f64 {
    let file = File::open(path).unwrap();
    // SAFETY: the file is private to this bench and not modified while mapped.
    let map = unsafe { Mmap::map(&file) }.unwrap();
    let pages = map.len().div_ceil(PAGE_BYTES);
    let mut flags = vec![0u8; pages];
    // SAFETY: `map` is a live mapping of `map.len()` bytes at a page-aligned address, and
    // `flags` holds one byte per page of it, as `mincore` requires.
    let code = unsafe {
        libc::mincore(
            map.as_ptr().cast_mut().cast(),
            map.len(),
            flags.as_mut_ptr(),
        )
    };
    assert_eq!(code, 0, "mincore failed");
    flags.iter().filter(|flag| **flag & 1 == 1).count() as f64 / pages as f64
}

/// An f32 `[rows, COLS]` block with one tensor `w`, streamed into a `Vec`.
fn f32_payload(rows: u64) -> Vec<u8> {
    let spec = TensorSpec::new("w", Dtype::F32, &[rows, COLS]);
    let mut writer = BlockWriter::new(Vec::new(), &[spec]).unwrap();
    let mut row = Vec::with_capacity(COLS as usize * 4);
    for r in 0..rows {
        row.clear();
        // Values in [-1, 1): varied enough that nothing compresses or short-circuits.
        row.extend((0..COLS).flat_map(|c| {
            let value = ((r * 31 + c * 17) % 2048) as f32 / 1024.0 - 1.0;
            value.to_le_bytes()
        }));
        writer.write_data(&row).unwrap();
    }
    writer.finish().unwrap()
}

fn append_expert(store: &ChainStore, key: &AuthorKey, expert: u32, payload: &[u8]) -> BlockHash {
    let tip = store.tip(ChainId::Parameters);
    let mut header =
        BlockHeader::new_child(&tip, BlockKind::Expert, payload, GENESIS_TIMESTAMP_MS + 1);
    header.meta.expert = Some(ExpertName::new(0, expert).unwrap());
    header.meta.version = 1;
    header.sign(key);
    store.append(&header, payload).unwrap()
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        // One intra-op thread: the floors are single-threaded loops, and on a shared machine a
        // second libtorch thread mostly measures the neighbours.
        tch::set_num_threads(1);
        let dir = tempfile::tempdir().unwrap();
        let chain_path = dir.path().join("chain");
        let store = open_store(&chain_path);
        let key = AuthorKey::generate();
        let mut f32_blocks = Vec::new();
        let mut expert_payload = Vec::new();
        for (expert, mib) in (0u32..).zip(VIEW_SIZES_MIB) {
            let payload = f32_payload(mib * 1024 * 1024 / (COLS * 4));
            f32_blocks.push(append_expert(&store, &key, expert, &payload));
            expert_payload = payload;
        }
        let file_path = dir.path().join("expert.tb");
        // Written back at once: `posix_fadvise(DONTNEED)` cannot evict dirty pages.
        let mut file = File::create(&file_path).unwrap();
        file.write_all(&expert_payload).unwrap();
        file.sync_all().unwrap();
        drop(file);
        drop(expert_payload);
        let int8_payload = {
            let handle = store.payload(f32_blocks.last().unwrap()).unwrap().unwrap();
            let block = TensorBlock::new(handle).unwrap();
            let weight = block.tensor("w").unwrap();
            encode_tensors_to_vec(&[EncodeTensor::int8("w", &weight)]).unwrap()
        };
        let int8_block = append_expert(&store, &key, VIEW_SIZES_MIB.len() as u32, &int8_payload);
        Fixture {
            _dir: dir,
            chain_path,
            store: Mutex::new(Some(store)),
            f32_blocks,
            int8_block,
            file_path,
        }
    })
}

fn view_create(c: &mut Criterion) {
    let fixture = fixture();
    let mut group = c.benchmark_group("view_create");
    for (mib, hash) in VIEW_SIZES_MIB.into_iter().zip(&fixture.f32_blocks) {
        let handle = fixture.with_store(|store| store.payload(hash).unwrap().unwrap());
        let name = format!("view_create/{mib}MiB");
        group.bench_function(format!("{mib}MiB"), |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                for _ in 0..iters {
                    let block = TensorBlock::new(handle.clone()).unwrap();
                    drop(black_box(block.tensor("w").unwrap()));
                }
                let elapsed = start.elapsed();
                record(&name, elapsed, iters);
                elapsed
            });
        });
        let name = format!("view_create/chain_lookup_{mib}MiB");
        group.bench_function(format!("chain_lookup_{mib}MiB"), |b| {
            fixture.with_store(|store| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        let handle = store.payload(hash).unwrap().unwrap();
                        let block = TensorBlock::new(handle).unwrap();
                        drop(black_box(block.tensor("w").unwrap()));
                    }
                    let elapsed = start.elapsed();
                    record(&name, elapsed, iters);
                    elapsed
                });
            });
        });
    }
    group.finish();
}

fn touch_pages(bytes: &[u8]) -> u64 {
    bytes
        .iter()
        .step_by(PAGE_BYTES)
        .fold(0u64, |acc, byte| acc.wrapping_add(u64::from(*byte)))
}

fn read_all(bytes: &[u8]) -> u64 {
    let (words, tail) = bytes.as_chunks::<8>();
    let sum = words.iter().fold(0u64, |acc, word| {
        acc.wrapping_add(u64::from_le_bytes(*word))
    });
    tail.iter()
        .fold(sum, |acc, byte| acc.wrapping_add(u64::from(*byte)))
}

/// Runs `iters` timed passes, each after an untimed `prepare`; returns the timed total. What a
/// pass returns (its mapping, buffers, tensors) is dropped after the clock stops, so no routine
/// is charged for unmapping or freeing.
fn run_passes(
    iters: u64,
    name: &str,
    fixture: &Fixture,
    prepare: fn(&Fixture),
    pass: &dyn Fn() -> Box<dyn Any>,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        prepare(fixture);
        let start = Instant::now();
        let kept = black_box(pass());
        total += start.elapsed();
        drop(kept);
    }
    record(name, total, iters);
    total
}

/// One timed pass per iteration, each after an untimed `prepare` (reopen or evict).
fn full_pass(c: &mut Criterion, group_name: &str, prepare: fn(&Fixture), resident_baseline: bool) {
    let fixture = fixture();
    let hash = fixture.expert_block();
    let mut group = c.benchmark_group(group_name);
    group.sample_size(10);
    let map_file = || {
        // SAFETY: the file is private to this bench and never modified after it was written.
        unsafe { Mmap::map(&File::open(&fixture.file_path).unwrap()) }.unwrap()
    };
    group.bench_function("floor_mmap_touch_pages", |b| {
        let name = format!("{group_name}/floor_mmap_touch_pages");
        b.iter_custom(|iters| {
            run_passes(iters, &name, fixture, prepare, &|| {
                let map = map_file();
                let sum = touch_pages(&map);
                Box::new((map, sum))
            })
        });
    });
    group.bench_function("floor_mmap_read_all", |b| {
        let name = format!("{group_name}/floor_mmap_read_all");
        b.iter_custom(|iters| {
            run_passes(iters, &name, fixture, prepare, &|| {
                let map = map_file();
                let sum = read_all(&map);
                Box::new((map, sum))
            })
        });
    });
    group.bench_function("chain_view_sum", |b| {
        let name = format!("{group_name}/chain_view_sum");
        b.iter_custom(|iters| {
            run_passes(iters, &name, fixture, prepare, &|| {
                fixture.with_store(|store| {
                    let handle = store.payload(&hash).unwrap().unwrap();
                    let block = TensorBlock::new(handle).unwrap();
                    let weight = block.tensor("w").unwrap();
                    let sum = weight.sum(Kind::Float).double_value(&[]);
                    Box::new((block, weight, sum)) as Box<dyn Any>
                })
            })
        });
    });
    if resident_baseline {
        // The same pass over a mapping whose pages are already mapped in: the pass's own cost,
        // to subtract from `chain_view_sum` and leave what loading costs.
        group.bench_function("chain_view_sum_resident", |b| {
            let name = format!("{group_name}/chain_view_sum_resident");
            b.iter_custom(|iters| {
                run_passes(iters, &name, fixture, |_| {}, &|| {
                    fixture.with_store(|store| {
                        let handle = store.payload(&hash).unwrap().unwrap();
                        let block = TensorBlock::new(handle).unwrap();
                        let weight = block.tensor("w").unwrap();
                        let sum = weight.sum(Kind::Float).double_value(&[]);
                        Box::new((block, weight, sum)) as Box<dyn Any>
                    })
                })
            });
        });
    }
    group.bench_function("naive_read_vec_from_slice", |b| {
        let name = format!("{group_name}/naive_read_vec_from_slice");
        b.iter_custom(|iters| {
            run_passes(iters, &name, fixture, prepare, &|| {
                let bytes = std::fs::read(&fixture.file_path).unwrap();
                let block = BlockRef::parse(&bytes).unwrap();
                let info = block.layout().require("w").unwrap();
                let shape: Vec<i64> = info.shape().iter().map(|dim| *dim as i64).collect();
                let values: Vec<f32> = block
                    .data("w")
                    .unwrap()
                    .chunks_exact(4)
                    .map(|chunk| f32::from_le_bytes(chunk.try_into().unwrap()))
                    .collect();
                let weight = Tensor::from_slice(&values).reshape(shape.as_slice());
                let sum = weight.sum(Kind::Float).double_value(&[]);
                Box::new((bytes, values, weight, sum))
            })
        });
    });
    group.finish();
}

fn full_pass_warm(c: &mut Criterion) {
    full_pass(c, "full_pass_warm", Fixture::reopen, true);
}

fn full_pass_cold(c: &mut Criterion) {
    let fixture = fixture();
    fixture.evict();
    let resident = resident_fraction(&fixture.file_path);
    println!(
        "cold regime: {:.1}% of the expert file resident after eviction",
        100.0 * resident
    );
    assert!(
        resident < 0.05,
        "eviction failed: the cold regime would measure a warm one"
    );
    full_pass(c, "full_pass_cold", Fixture::evict, false);
    fixture.reopen();
}

fn int8(c: &mut Criterion) {
    let fixture = fixture();
    let f32_hash = fixture.expert_block();
    fixture.with_store(|store| {
        let f32_block = TensorBlock::new(store.payload(&f32_hash).unwrap().unwrap()).unwrap();
        let int8_block =
            TensorBlock::new(store.payload(&fixture.int8_block).unwrap().unwrap()).unwrap();
        let weight = f32_block.tensor("w").unwrap();
        // Make both blocks resident: this group measures compute, not page faults.
        black_box(weight.sum(Kind::Float).double_value(&[]));
        drop(black_box(int8_block.load_f32("w").unwrap()));
        let quantized = int8_block.int8("w").unwrap();

        let mut group = c.benchmark_group("int8");
        group.sample_size(10);
        let mut bench = |name: &str, routine: &dyn Fn() -> Tensor| {
            let full = format!("int8/{name}");
            group.bench_function(name, |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    for _ in 0..iters {
                        drop(black_box(routine()));
                    }
                    let elapsed = start.elapsed();
                    record(&full, elapsed, iters);
                    elapsed
                });
            });
        };
        bench("load_f32_copy", &|| f32_block.load_f32("w").unwrap());
        bench("dequantize_on_load", &|| int8_block.load_f32("w").unwrap());
        for batch in [1i64, 16] {
            tch::manual_seed(7);
            let x = Tensor::randn([batch, COLS as i64], (Kind::Float, Device::Cpu));
            bench(&format!("f32_matmul/batch{batch}"), &|| {
                x.matmul(&weight.tr())
            });
            bench(&format!("int8_linear/batch{batch}"), &|| {
                quantized.linear(&x).unwrap()
            });
            bench(&format!("int8_linear_dequantized/batch{batch}"), &|| {
                quantized.linear_dequantized(&x).unwrap()
            });
        }
        group.finish();
    });
}

fn ratio(label: &str, numerator: &str, denominator: &str) {
    match (median(numerator), median(denominator)) {
        (Some(n), Some(d)) => println!(
            "{label:<58} {:>10.3} ms / {:>10.3} ms = {:.3}",
            n * 1e3,
            d * 1e3,
            n / d
        ),
        _ => println!("{label:<58} (not measured in this run)"),
    }
}

fn summary(_c: &mut Criterion) {
    println!("\nsummary (median of per-sample means):");
    ratio(
        "view 64 MiB / view 1 MiB (target: ~1, flat)",
        "view_create/64MiB",
        "view_create/1MiB",
    );
    ratio(
        "chain lookup + view 64 MiB / 1 MiB",
        "view_create/chain_lookup_64MiB",
        "view_create/chain_lookup_1MiB",
    );
    for regime in ["full_pass_warm", "full_pass_cold"] {
        ratio(
            &format!("{regime}: view+sum / mmap touch pages (target <= 1.2)"),
            &format!("{regime}/chain_view_sum"),
            &format!("{regime}/floor_mmap_touch_pages"),
        );
        ratio(
            &format!("{regime}: view+sum / mmap read every byte"),
            &format!("{regime}/chain_view_sum"),
            &format!("{regime}/floor_mmap_read_all"),
        );
        ratio(
            &format!("{regime}: naive Vec+from_slice / view+sum (target >= 3)"),
            &format!("{regime}/naive_read_vec_from_slice"),
            &format!("{regime}/chain_view_sum"),
        );
    }
    match (
        median("full_pass_warm/chain_view_sum"),
        median("full_pass_warm/chain_view_sum_resident"),
        median("full_pass_warm/floor_mmap_touch_pages"),
    ) {
        (Some(fresh), Some(resident), Some(touch)) => println!(
            "{:<58} {:>10.3} ms / {:>10.3} ms = {:.3}",
            "full_pass_warm: (view+sum - same over resident) / touch",
            (fresh - resident) * 1e3,
            touch * 1e3,
            (fresh - resident) / touch
        ),
        _ => println!("full_pass_warm: loading cost (not measured in this run)"),
    }
    ratio(
        "int8: dequantize on load / f32 load (copy)",
        "int8/dequantize_on_load",
        "int8/load_f32_copy",
    );
    for batch in [1, 16] {
        ratio(
            &format!("int8: f32 matmul / int8 linear, batch {batch} (speed-up)"),
            &format!("int8/f32_matmul/batch{batch}"),
            &format!("int8/int8_linear/batch{batch}"),
        );
        ratio(
            &format!("int8: f32 matmul / int8 dequantized linear, batch {batch}"),
            &format!("int8/f32_matmul/batch{batch}"),
            &format!("int8/int8_linear_dequantized/batch{batch}"),
        );
    }
}

criterion_group!(
    benches,
    view_create,
    full_pass_warm,
    full_pass_cold,
    int8,
    summary
);
criterion_main!(benches);
