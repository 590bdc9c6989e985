//! Helpers shared by the scenarios: a counting allocator, child processes, sample blocks.

use std::alloc::{GlobalAlloc, Layout, System};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU64, Ordering};

use blyan_tensorblock::{
    AssumeImmutable, Dtype, RawTensor, encode_raw_to_vec, quantize_int8_per_channel,
};

/// Counts every Rust heap allocation of this test binary (count, bytes, largest single one).
pub(crate) struct CountingAllocator;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static ALLOCATED_BYTES: AtomicU64 = AtomicU64::new(0);
static LARGEST_ALLOCATION_BYTES: AtomicU64 = AtomicU64::new(0);

#[global_allocator]
static COUNTING: CountingAllocator = CountingAllocator;

fn record(bytes: usize) {
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    ALLOCATED_BYTES.fetch_add(bytes as u64, Ordering::Relaxed);
    LARGEST_ALLOCATION_BYTES.fetch_max(bytes as u64, Ordering::Relaxed);
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so the
// allocator upholds exactly `System`'s guarantees; the counters are plain atomics that never
// allocate.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: forwarded unchanged; the caller upholds `GlobalAlloc::alloc`'s contract.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record(layout.size());
        // SAFETY: forwarded unchanged.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        record(new_size);
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded unchanged.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Rust allocations since the last `reset_allocation_counters`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct AllocationCounters {
    pub allocations: u64,
    pub bytes: u64,
    pub largest_bytes: u64,
}

pub(crate) fn reset_allocation_counters() {
    ALLOCATIONS.store(0, Ordering::SeqCst);
    ALLOCATED_BYTES.store(0, Ordering::SeqCst);
    LARGEST_ALLOCATION_BYTES.store(0, Ordering::SeqCst);
}

pub(crate) fn allocation_counters() -> AllocationCounters {
    AllocationCounters {
        allocations: ALLOCATIONS.load(Ordering::SeqCst),
        bytes: ALLOCATED_BYTES.load(Ordering::SeqCst),
        largest_bytes: LARGEST_ALLOCATION_BYTES.load(Ordering::SeqCst),
    }
}

/// Environment variable naming the test a child process of this binary must run.
const CHILD_TEST_ENV: &str = "BLYAN_TENSORBLOCK_CHILD_TEST";

/// True inside the child process started for `test` by [`run_as_child`].
pub(crate) fn is_child(test: &str) -> bool {
    std::env::var(CHILD_TEST_ENV).is_ok_and(|name| name == test)
}

/// Runs the test `test` (its full path, e.g. `zero_copy::no_payload_sized_allocation`) alone in
/// a fresh process of this test binary, and returns how that process ended.
pub(crate) fn run_as_child(test: &str, env: &[(&str, &std::ffi::OsStr)]) -> Output {
    let exe = std::env::current_exe().expect("path of the test binary");
    Command::new(exe)
        .args([test, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_TEST_ENV, test)
        .envs(env.iter().copied())
        .output()
        .expect("start a child process of the test binary")
}

/// A small expert: `w1` f32 [3, 5], `w2` INT8 [4, 3] with scales, `w3` bf16 [5].
pub(crate) fn expert_block() -> Vec<u8> {
    let w1: Vec<u8> = (0..15)
        .flat_map(|i| (i as f32 * 0.25 - 1.0).to_le_bytes())
        .collect();
    let weights: Vec<f32> = (0..12).map(|i| (i as f32 - 6.0) / 3.0).collect();
    let w2 = quantize_int8_per_channel(&weights, 3).unwrap();
    let w3: Vec<u8> = (0..5u16).flat_map(|i| (0x3f80 + i).to_le_bytes()).collect();
    encode_raw_to_vec(&[
        RawTensor {
            name: "w1",
            dtype: Dtype::F32,
            shape: &[3, 5],
            data: &w1,
            scales: None,
        },
        RawTensor {
            name: "w2",
            dtype: Dtype::I8,
            shape: &[4, 3],
            data: &w2.data,
            scales: Some(&w2.scales),
        },
        RawTensor {
            name: "w3",
            dtype: Dtype::BF16,
            shape: &[5],
            data: &w3,
            scales: None,
        },
    ])
    .unwrap()
}

/// Resident memory of this process from `/proc/self/status`, in bytes: (anonymous, file-backed,
/// the latter including shared libraries' code).
pub(crate) fn resident_bytes() -> (u64, u64) {
    let status = std::fs::read_to_string("/proc/self/status").expect("read /proc/self/status");
    let field = |name: &str| -> u64 {
        let line = status
            .lines()
            .find(|line| line.starts_with(name))
            .unwrap_or_else(|| panic!("{name} missing from /proc/self/status"));
        let kib: u64 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
        kib * 1024
    };
    (field("RssAnon:"), field("RssFile:"))
}

/// Resident bytes of the one mapping that holds `address`, from `/proc/self/smaps`.
pub(crate) fn mapping_resident_bytes(address: usize) -> u64 {
    let smaps = std::fs::read_to_string("/proc/self/smaps").expect("read /proc/self/smaps");
    let mut inside = false;
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if let Some((start, end)) = first.split_once('-')
            && let (Ok(start), Ok(end)) = (
                usize::from_str_radix(start, 16),
                usize::from_str_radix(end, 16),
            )
        {
            inside = (start..end).contains(&address);
            continue;
        }
        if inside && let Some(rest) = line.strip_prefix("Rss:") {
            let kib: u64 = rest.split_whitespace().next().unwrap().parse().unwrap();
            return kib * 1024;
        }
    }
    panic!("address {address:#x} is in no mapping of /proc/self/smaps");
}

/// Protection string (`r--p`, `rw-p`, …) of the mapping that holds `address`.
pub(crate) fn mapping_permissions(address: usize) -> String {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("read /proc/self/maps");
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let range = fields.next().unwrap();
        let permissions = fields.next().unwrap();
        let (start, end) = range.split_once('-').unwrap();
        let start = usize::from_str_radix(start, 16).unwrap();
        let end = usize::from_str_radix(end, 16).unwrap();
        if (start..end).contains(&address) {
            return permissions.to_owned();
        }
    }
    panic!("address {address:#x} is in no mapping of /proc/self/maps");
}

/// Heap bytes as an owner a `TensorBlock` accepts, for the tests that view blocks they built in
/// memory.
pub(crate) fn immutable<T: AsRef<[u8]> + Send + Sync + 'static>(owner: T) -> AssumeImmutable<T> {
    // SAFETY: `owner`'s bytes are never written after this, and no test that calls this applies
    // an in-place operation to a tensor of the block (writable tensors come from `load_f32`).
    // The tests of the read-only contract use file mappings, never this.
    unsafe { AssumeImmutable::new(owner) }
}
