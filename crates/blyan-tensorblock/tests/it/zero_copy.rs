//! The view copies nothing and no tensor outlives its bytes.

use std::fs::File;
use std::io::{BufWriter, Write};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use blyan_tensorblock::{
    AssumeImmutable, BlockWriter, Dtype, Error, ImmutableBytes, TensorBlock, TensorSpec,
    encode_raw_to_vec,
};
use memmap2::Mmap;
use tch::Kind;

use crate::support;

/// An owner that records when it is dropped.
struct Tracked {
    bytes: Vec<u8>,
    dropped: Arc<AtomicBool>,
}

impl AsRef<[u8]> for Tracked {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.dropped.store(true, Ordering::SeqCst);
    }
}

fn tracked_block() -> (TensorBlock<AssumeImmutable<Tracked>>, Arc<AtomicBool>) {
    let dropped = Arc::new(AtomicBool::new(false));
    let owner = Tracked {
        bytes: support::expert_block(),
        dropped: Arc::clone(&dropped),
    };
    (
        TensorBlock::new(support::immutable(owner)).unwrap(),
        dropped,
    )
}

fn assert_inside_owner<B: ImmutableBytes>(block: &TensorBlock<B>) {
    let base = block.bytes().as_ptr() as usize;
    for info in block.layout().tensors() {
        let tensor = block.tensor(info.name()).unwrap();
        let address = tensor.data_ptr() as usize;
        assert_eq!(
            address,
            base + info.data().offset as usize,
            "{}",
            info.name()
        );
        assert!(address + info.data().bytes as usize <= base + block.bytes().len());
        if let Some(scales) = info.scales() {
            let address = block.scales(info.name()).unwrap().data_ptr() as usize;
            assert_eq!(address, base + scales.offset as usize);
        }
    }
}

#[test]
fn data_pointers_lie_inside_a_heap_owner() {
    let block = TensorBlock::new(support::immutable(support::expert_block())).unwrap();
    assert_inside_owner(&block);
}

#[test]
fn data_pointers_lie_inside_a_file_mapping() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("expert.tb");
    std::fs::write(&path, support::expert_block()).unwrap();
    // SAFETY: the file is private to this test and not modified while mapped.
    let map = unsafe { Mmap::map(&File::open(&path).unwrap()) }.unwrap();
    let block = TensorBlock::new(map).unwrap();
    assert_inside_owner(&block);
    let w1 = block.tensor("w1").unwrap();
    assert_eq!(w1.double_value(&[2, 4]), 14.0 * 0.25 - 1.0);
}

#[test]
fn views_and_shallow_clones_keep_the_owner_alive() {
    let (block, dropped) = tracked_block();
    let tensor = block.tensor("w1").unwrap();
    let transposed = tensor.tr();
    let clone = tensor.shallow_clone();
    let row = tensor.narrow(0, 1, 1).reshape([5]);
    drop(block);
    drop(tensor);
    assert!(!dropped.load(Ordering::SeqCst));
    assert_eq!(transposed.double_value(&[4, 2]), 14.0 * 0.25 - 1.0);
    drop(transposed);
    drop(clone);
    assert!(!dropped.load(Ordering::SeqCst), "a view is still alive");
    assert_eq!(row.double_value(&[0]), 5.0 * 0.25 - 1.0);
    drop(row);
    assert!(
        dropped.load(Ordering::SeqCst),
        "the last view released the owner"
    );
}

#[test]
fn the_owner_is_released_when_the_last_tensor_dies_on_another_thread() {
    let (block, dropped) = tracked_block();
    let tensor = block.tensor("w3").unwrap();
    drop(block);
    std::thread::spawn(move || {
        assert_eq!(tensor.kind(), Kind::BFloat16);
        drop(tensor);
    })
    .join()
    .unwrap();
    assert!(dropped.load(Ordering::SeqCst));
}

#[test]
fn a_block_without_tensors_releases_its_owner_at_once() {
    let (block, dropped) = tracked_block();
    drop(block);
    assert!(dropped.load(Ordering::SeqCst));
}

/// An owner whose bytes start one byte past an allocation, so nothing wider than a byte is
/// aligned.
struct Shifted(Vec<u8>);

impl AsRef<[u8]> for Shifted {
    fn as_ref(&self) -> &[u8] {
        &self.0[1..]
    }
}

#[test]
fn an_owner_misaligned_in_memory_is_refused_for_wide_dtypes() {
    let bytes = support::expert_block();
    let mut shifted = vec![0u8; bytes.len() + 1];
    shifted[1..].copy_from_slice(&bytes);
    let owner = Shifted(shifted);
    let odd = owner.as_ref().as_ptr() as usize % 2 == 1;
    let block = TensorBlock::new(support::immutable(owner)).unwrap();
    if odd {
        assert!(matches!(
            block.tensor("w1"),
            Err(Error::UnalignedOwner { required: 4, .. })
        ));
        assert!(matches!(
            block.tensor("w3"),
            Err(Error::UnalignedOwner { required: 2, .. })
        ));
    }
    // i8 codes need no alignment.
    assert_eq!(block.tensor("w2").unwrap().kind(), Kind::Int8);
    assert!(
        odd,
        "the heap gave an even address one byte past an allocation"
    );
}

/// Size of the payload in the allocation test: an f32 [4096, 4096] expert weight.
const LARGE_PAYLOAD_ROWS: u64 = 4096;
const LARGE_PAYLOAD_COLS: u64 = 4096;
const LARGE_PAYLOAD_BYTES: u64 = LARGE_PAYLOAD_ROWS * LARGE_PAYLOAD_COLS * 4;
/// What "no payload-sized allocation" means here: under 1/64 of the payload.
const ALLOCATION_BYTES_MAX: u64 = LARGE_PAYLOAD_BYTES / 64;

/// Streams a 64 MiB f32 block into a file without holding it in memory.
fn write_large_block(path: &std::path::Path) {
    let spec = TensorSpec::new("w", Dtype::F32, &[LARGE_PAYLOAD_ROWS, LARGE_PAYLOAD_COLS]);
    let file = BufWriter::new(File::create(path).unwrap());
    let mut writer = BlockWriter::new(file, &[spec]).unwrap();
    let row: Vec<u8> = (0..LARGE_PAYLOAD_COLS)
        .flat_map(|col| (col as f32 / 1024.0).to_le_bytes())
        .collect();
    for _ in 0..LARGE_PAYLOAD_ROWS {
        writer.write_data(&row).unwrap();
    }
    writer.finish().unwrap().flush().unwrap();
}

fn heap_in_use_bytes() -> u64 {
    // SAFETY: `mallinfo2` only reads glibc's allocator statistics.
    let info = unsafe { libc::mallinfo2() };
    // Bytes in use in the heap arenas plus bytes in chunks glibc served with mmap (every
    // allocation above the mmap threshold, i.e. any payload-sized one).
    (info.uordblks + info.hblkhd) as u64
}

/// Viewing a 64 MiB file-mapped block as tensors allocates no payload-sized buffer.
///
/// Runs in a child process of the test binary, where no other test allocates. Between the
/// moment just before `TensorBlock::new` and the moment the tensors exist, it checks:
/// - Rust heap (the binary's counting global allocator): total bytes allocated, and the largest
///   single allocation, under 1/64 of the payload;
/// - C and C++ heap (glibc `mallinfo2`: arena bytes in use + mmap-served chunks, which covers
///   libtorch's `new`/`malloc`/`posix_memalign`): grew by under 1/64 of the payload;
/// - resident memory: the payload mapping's own resident set (`/proc/self/smaps` `Rss`) and the
///   process's anonymous memory (`RssAnon`) grew by under 1/64 of the payload, i.e. no page of
///   the tensor data was read, and nothing was copied into fresh memory;
/// - the tensor's data pointer lies inside the mapping.
///
/// Then, to show the instruments see a read or a copy when there is one, it sums the tensor
/// (the mapping's resident set grows to about the payload) and makes an owned f32 copy (the C++
/// heap grows by about the payload).
#[test]
fn no_payload_sized_allocation() {
    const TEST: &str = "zero_copy::no_payload_sized_allocation";
    if !support::is_child(TEST) {
        let output = support::run_as_child(TEST, &[]);
        let log = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success() && log.contains("1 passed"),
            "child process failed ({}):\n{log}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr),
        );
        // The child's measurements, for `--nocapture` runs.
        for line in log.lines().filter(|line| line.starts_with("payload ")) {
            println!("{line}");
        }
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("large.tb");
    write_large_block(&path);
    let file = File::open(&path).unwrap();
    // Initialise libtorch before measuring (its first call allocates its own tables).
    drop(tch::Tensor::zeros([1], (Kind::Float, tch::Device::Cpu)).sum(Kind::Float));

    // SAFETY: the file is private to this test and not modified while mapped.
    let map = unsafe { Mmap::map(&file) }.unwrap();
    let map_address = map.as_ptr() as usize;
    let (anon_before, _) = support::resident_bytes();
    let mapped_before = support::mapping_resident_bytes(map_address);
    let heap_before = heap_in_use_bytes();
    support::reset_allocation_counters();

    let block = TensorBlock::new(map).unwrap();
    let tensor = block.tensor("w").unwrap();
    let view = tensor.tr();

    let rust = support::allocation_counters();
    let heap_after = heap_in_use_bytes();
    let (anon_after, _) = support::resident_bytes();
    let mapped_after = support::mapping_resident_bytes(map_address);
    let base = block.bytes().as_ptr() as usize;
    let address = tensor.data_ptr() as usize;
    println!(
        "payload {LARGE_PAYLOAD_BYTES} B; rust: {} allocations, {} B, largest {} B; \
         C/C++ heap +{} B; RssAnon +{} B; payload mapping resident {} B -> {} B",
        rust.allocations,
        rust.bytes,
        rust.largest_bytes,
        heap_after.saturating_sub(heap_before),
        anon_after.saturating_sub(anon_before),
        mapped_before,
        mapped_after,
    );
    assert!((base..base + block.bytes().len()).contains(&address));
    assert_eq!(
        address,
        base + block.layout().tensors()[0].data().offset as usize
    );
    assert!(rust.bytes < ALLOCATION_BYTES_MAX, "{rust:?}");
    assert!(rust.largest_bytes < ALLOCATION_BYTES_MAX, "{rust:?}");
    assert!(heap_after.saturating_sub(heap_before) < ALLOCATION_BYTES_MAX);
    assert!(anon_after.saturating_sub(anon_before) < ALLOCATION_BYTES_MAX);
    assert!(mapped_after < ALLOCATION_BYTES_MAX);

    // The instruments are live: reading every page makes the mapping resident ...
    let sum = view.sum(Kind::Double).double_value(&[]);
    let expected: f64 = (0..LARGE_PAYLOAD_COLS)
        .map(|col| col as f64 / 1024.0)
        .sum::<f64>()
        * LARGE_PAYLOAD_ROWS as f64;
    assert!(
        (sum - expected).abs() < expected * 1e-9,
        "{sum} vs {expected}"
    );
    let mapped_touched = support::mapping_resident_bytes(map_address);
    assert!(
        mapped_touched > LARGE_PAYLOAD_BYTES * 9 / 10,
        "mapping resident {mapped_touched} B"
    );
    // ... and a copy shows on the C++ heap.
    let heap_before_copy = heap_in_use_bytes();
    let copy = block.load_f32("w").unwrap();
    assert!(heap_in_use_bytes() - heap_before_copy >= LARGE_PAYLOAD_BYTES);
    assert_ne!(copy.data_ptr() as usize, address);
}

#[test]
fn an_owned_copy_is_independent_of_the_block() {
    let bytes = encode_raw_to_vec(&[blyan_tensorblock::RawTensor {
        name: "w",
        dtype: Dtype::F32,
        shape: &[2],
        data: &[0, 0, 128, 63, 0, 0, 0, 64],
        scales: None,
    }])
    .unwrap();
    let block = TensorBlock::new(support::immutable(bytes)).unwrap();
    let mut copy = block.load_f32("w").unwrap();
    let _ = copy.fill_(7.0);
    assert_eq!(block.tensor("w").unwrap().double_value(&[0]), 1.0);
}
