//! What bounds `POST /blocks`: a global number of uploads streamed at once and a byte quota
//! per author (the server cuts a body that idles: `api.server.body_idle_timeout_seconds`).
//!
//! An upload's permit is taken after its header was read (at most
//! `BLOCK_PREFIX_BYTES + BLOCK_HEADER_BYTES_MAX` bytes, under the server's header and body
//! timeouts) and before the store stages anything; the quota is charged once the signature
//! proved who the author is, before any payload byte is taken. So memory is bounded by
//! `concurrent_max` uploads of two `UPLOAD_CHUNK_BYTES` chunks each, whatever the payloads'
//! sizes, and disk by the quotas of the authors a node accepts.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use blyan_node_core::UploadsConfig;
use blyan_primitives::Address;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{Error, Result};

/// Most authors the upload quota tracks at once. A bucket that refilled completely is the same
/// as none, so those are dropped first when the table is full; then the fullest ones.
pub const UPLOAD_AUTHORS_TRACKED_MAX: usize = 4096;

/// `Retry-After` seconds of an upload refused because every permit is taken.
pub const UPLOADS_BUSY_RETRY_SECONDS: u64 = 5;

const HOUR: Duration = Duration::from_secs(3600);

#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Bytes the author may still upload; negative after a block larger than the quota.
    bytes: f64,
    updated: Instant,
}

/// Payload bytes per hour per author: a token bucket of `capacity` bytes refilled over an hour.
#[derive(Debug)]
struct Quota {
    capacity: f64,
    refill_per_second: f64,
    buckets: Mutex<HashMap<Address, Bucket>>,
}

impl Quota {
    fn new(bytes_per_hour: u64) -> Self {
        let capacity = bytes_per_hour.max(1) as f64;
        Self {
            capacity,
            refill_per_second: capacity / HOUR.as_secs_f64(),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        (bucket.bytes + elapsed * self.refill_per_second).min(self.capacity)
    }

    /// Charges `bytes` to `author` at `now`, or says in how many whole seconds they fit. A
    /// charge larger than the whole quota passes on a full bucket (leaving it in debt), so no
    /// block the chain accepts is unpublishable.
    fn charge(&self, author: Address, bytes: u64, now: Instant) -> std::result::Result<(), u64> {
        // Buckets are plain numbers updated in one statement: a poisoned map is consistent.
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if !buckets.contains_key(&author) && buckets.len() >= UPLOAD_AUTHORS_TRACKED_MAX {
            buckets.retain(|_, bucket| self.refilled(*bucket, now) < self.capacity);
            if buckets.len() >= UPLOAD_AUTHORS_TRACKED_MAX {
                // Forget the author closest to a full bucket: the least favour to anyone.
                let fullest = buckets
                    .iter()
                    .max_by(|a, b| {
                        self.refilled(*a.1, now)
                            .total_cmp(&self.refilled(*b.1, now))
                    })
                    .map(|(address, _)| *address);
                if let Some(fullest) = fullest {
                    buckets.remove(&fullest);
                }
            }
        }
        debug_assert!(buckets.len() <= UPLOAD_AUTHORS_TRACKED_MAX);
        let bucket = buckets.entry(author).or_insert(Bucket {
            bytes: self.capacity,
            updated: now,
        });
        let available = self.refilled(*bucket, now);
        let wanted = bytes as f64;
        if available >= wanted || available >= self.capacity {
            *bucket = Bucket {
                bytes: available - wanted,
                updated: now,
            };
            return Ok(());
        }
        *bucket = Bucket {
            bytes: available,
            updated: now,
        };
        // Until the bucket holds `wanted`, or is full for a block larger than the quota.
        let missing = wanted.min(self.capacity) - available;
        Err((missing / self.refill_per_second).ceil().max(1.0) as u64)
    }
}

/// The upload bounds of one server.
#[derive(Debug)]
pub(crate) struct UploadLimits {
    quota: Quota,
    bytes_per_hour: u64,
    permits: Arc<Semaphore>,
    concurrent_max: u32,
}

impl UploadLimits {
    pub(crate) fn new(config: &UploadsConfig) -> Self {
        Self {
            quota: Quota::new(config.bytes_per_hour_per_author),
            bytes_per_hour: config.bytes_per_hour_per_author,
            permits: Arc::new(Semaphore::new(config.concurrent_max as usize)),
            concurrent_max: config.concurrent_max,
        }
    }

    /// A permit to stream one upload, held until it ends; [`Error::UploadsBusy`] when all
    /// `concurrent_max` are taken.
    pub(crate) fn permit(&self) -> Result<OwnedSemaphorePermit> {
        Arc::clone(&self.permits)
            .try_acquire_owned()
            .map_err(|_| Error::UploadsBusy {
                concurrent_max: self.concurrent_max,
            })
    }

    /// Charges `bytes` to `author`'s hourly quota; [`Error::UploadQuotaExceeded`] when they do
    /// not fit now.
    pub(crate) fn charge(&self, author: Address, bytes: u64) -> Result<()> {
        self.quota
            .charge(author, bytes, Instant::now())
            .map_err(|retry_after_seconds| Error::UploadQuotaExceeded {
                author: author.to_string(),
                bytes,
                bytes_per_hour: self.bytes_per_hour,
                retry_after_seconds,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn author(byte: u8) -> Address {
        Address::from([byte; 20])
    }

    #[test]
    fn an_author_gets_the_hourly_bytes_then_waits_for_them() {
        let quota = Quota::new(3600);
        let start = Instant::now();
        quota.charge(author(1), 3000, start).unwrap();
        quota.charge(author(1), 600, start).unwrap();
        // Empty: 100 bytes are back after 100 s at one byte per second.
        assert_eq!(quota.charge(author(1), 100, start), Err(100));
        quota
            .charge(author(1), 100, start + Duration::from_secs(100))
            .unwrap();
        // Another author has a quota of its own.
        quota.charge(author(2), 3600, start).unwrap();
    }

    #[test]
    fn a_block_larger_than_the_quota_passes_on_a_full_bucket_only() {
        let quota = Quota::new(1000);
        let start = Instant::now();
        quota.charge(author(1), 5000, start).unwrap();
        // In debt for 4000 bytes: the next hour's bytes pay it back first.
        let hour = Duration::from_secs(3600);
        assert!(quota.charge(author(1), 10, start + hour).is_err());
        quota.charge(author(1), 10, start + 5 * hour).unwrap();
        // Refused while not full; the wait is until the bucket is full.
        let quota = Quota::new(3600);
        quota.charge(author(3), 1, start).unwrap();
        assert_eq!(quota.charge(author(3), 10_000, start), Err(1));
    }

    #[test]
    fn the_author_table_stays_bounded() {
        let quota = Quota::new(3600);
        let start = Instant::now();
        for index in 0..=UPLOAD_AUTHORS_TRACKED_MAX as u32 {
            let mut bytes = [0u8; 20];
            bytes[..4].copy_from_slice(&index.to_le_bytes());
            quota.charge(Address::from(bytes), 1, start).unwrap();
        }
        assert_eq!(
            quota.buckets.lock().unwrap().len(),
            UPLOAD_AUTHORS_TRACKED_MAX
        );
    }
}
