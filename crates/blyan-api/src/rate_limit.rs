//! Keyed token buckets with a bounded number of keys.
//!
//! A bucket holds up to `capacity` tokens and regains `capacity` per `period`; each request
//! takes one. A refused request learns how long until a token is back (`Retry-After`). A bucket
//! that has refilled completely is the same as no bucket, so those are dropped when the map
//! reaches its bound; if every key is still busy, new keys are refused rather than letting
//! memory grow.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most keys (IP addresses, wallets) one limiter tracks at once.
pub const RATE_LIMIT_KEYS_MAX: usize = 65_536;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// A token-bucket limiter per key.
#[derive(Debug)]
pub(crate) struct RateLimiter<K> {
    capacity: f64,
    refill_per_second: f64,
    keys_max: usize,
    buckets: Mutex<HashMap<K, Bucket>>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `capacity` requests per `period`, bursts of up to `capacity`.
    pub(crate) fn new(capacity: u32, period: Duration) -> Self {
        Self::with_keys_max(capacity, period, RATE_LIMIT_KEYS_MAX)
    }

    fn with_keys_max(capacity: u32, period: Duration, keys_max: usize) -> Self {
        let capacity = f64::from(capacity.max(1));
        Self {
            capacity,
            refill_per_second: capacity / period.as_secs_f64().max(f64::MIN_POSITIVE),
            keys_max,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        (bucket.tokens + elapsed * self.refill_per_second).min(self.capacity)
    }

    /// Takes one token for `key` at `now`, or says in how many whole seconds one will be back.
    pub(crate) fn check(&self, key: &K, now: Instant) -> Result<(), u64> {
        // Buckets are plain numbers updated in one statement: a poisoned map is consistent.
        let mut buckets = self
            .buckets
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !buckets.contains_key(key) && buckets.len() >= self.keys_max {
            buckets.retain(|_, bucket| self.refilled(*bucket, now) < self.capacity);
            if buckets.len() >= self.keys_max {
                return Err(1);
            }
        }
        let bucket = buckets.entry(key.clone()).or_insert(Bucket {
            tokens: self.capacity,
            updated: now,
        });
        let tokens = self.refilled(*bucket, now);
        if tokens >= 1.0 {
            *bucket = Bucket {
                tokens: tokens - 1.0,
                updated: now,
            };
            Ok(())
        } else {
            *bucket = Bucket {
                tokens,
                updated: now,
            };
            let wait_seconds = (1.0 - tokens) / self.refill_per_second;
            // `as` saturates; the wait is finite because refill_per_second > 0.
            Err((wait_seconds.ceil() as u64).max(1))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_up_to_capacity_passes_then_waits() {
        let limiter = RateLimiter::new(3, Duration::from_secs(60));
        let now = Instant::now();
        for _ in 0..3 {
            limiter.check(&"ip", now).unwrap();
        }
        // One token comes back every 20 s.
        assert_eq!(limiter.check(&"ip", now), Err(20));
        assert_eq!(limiter.check(&"ip", now + Duration::from_secs(10)), Err(10));
        limiter.check(&"ip", now + Duration::from_secs(20)).unwrap();
        // Another key has its own bucket.
        limiter.check(&"other", now).unwrap();
    }

    #[test]
    fn keys_are_bounded_and_idle_ones_reclaimed() {
        let limiter = RateLimiter::with_keys_max(1, Duration::from_secs(10), 2);
        let now = Instant::now();
        limiter.check(&1, now).unwrap();
        limiter.check(&2, now).unwrap();
        assert_eq!(limiter.check(&3, now), Err(1), "full of busy keys");
        // Once the first buckets have refilled they no longer take room.
        limiter.check(&3, now + Duration::from_secs(10)).unwrap();
    }
}
