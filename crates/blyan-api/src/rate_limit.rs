//! Keyed token buckets with a bounded number of keys.
//!
//! A bucket holds up to `capacity` tokens and regains `capacity` per `period`; each request
//! takes one (or a given cost). A refused request learns how long until enough tokens are back
//! (`Retry-After`).
//!
//! The keys are spread over [`RATE_LIMIT_SHARDS`] shards, each with its own lock and its own
//! share of [`RATE_LIMIT_KEYS_MAX`]. A shard at its bound forgets its least recently seen key
//! to make room: a new client is always served, never refused because the table is full of
//! others. What the forgotten key loses is its history; it is the one that waited longest, so
//! its bucket had refilled the most. (An attacker cycling more distinct keys than the table
//! holds gets fresh buckets; with IPv6 counted per /64 that takes as many networks.)

use std::collections::hash_map::RandomState;
use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher as _, Hash};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most keys (client buckets, wallets) one limiter tracks at once.
pub const RATE_LIMIT_KEYS_MAX: usize = 65_536;

/// Independent shards of a limiter's key table: concurrent requests rarely share a lock.
pub const RATE_LIMIT_SHARDS: usize = 16;

const _: () = assert!(
    RATE_LIMIT_KEYS_MAX.is_multiple_of(RATE_LIMIT_SHARDS),
    "each shard holds an equal share of the keys"
);

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
    /// Position in the shard's use order: larger is more recent.
    used: u64,
}

#[derive(Debug)]
struct Shard<K> {
    buckets: HashMap<K, Bucket>,
    /// Every key by its bucket's `used`; the first is the least recently seen.
    // Invariant: `order` and `buckets` hold the same keys, `order[b.used] == k` for each (k, b).
    order: BTreeMap<u64, K>,
    next_use: u64,
}

/// A token-bucket limiter per key.
#[derive(Debug)]
pub(crate) struct RateLimiter<K> {
    capacity: f64,
    refill_per_second: f64,
    keys_per_shard_max: usize,
    hasher: RandomState,
    shards: Vec<Mutex<Shard<K>>>,
}

impl<K: Hash + Eq + Clone> RateLimiter<K> {
    /// `capacity` requests per `period`, bursts of up to `capacity`.
    pub(crate) fn new(capacity: u64, period: Duration) -> Self {
        Self::with_keys_max(capacity, period, RATE_LIMIT_KEYS_MAX)
    }

    fn with_keys_max(capacity: u64, period: Duration, keys_max: usize) -> Self {
        // `as` is exact up to 2^53 tokens, far beyond any configured rate.
        let capacity = capacity.max(1) as f64;
        Self {
            capacity,
            refill_per_second: capacity / period.as_secs_f64().max(f64::MIN_POSITIVE),
            keys_per_shard_max: keys_max.div_ceil(RATE_LIMIT_SHARDS).max(1),
            hasher: RandomState::new(),
            shards: (0..RATE_LIMIT_SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        buckets: HashMap::new(),
                        order: BTreeMap::new(),
                        next_use: 0,
                    })
                })
                .collect(),
        }
    }

    fn refilled(&self, bucket: Bucket, now: Instant) -> f64 {
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        (bucket.tokens + elapsed * self.refill_per_second).min(self.capacity)
    }

    /// Takes one token for `key` at `now`, or says in how many whole seconds one will be back.
    pub(crate) fn check(&self, key: &K, now: Instant) -> Result<(), u64> {
        self.take(key, 1, now)
    }

    /// Takes `cost` tokens for `key` at `now` (a cost above the capacity takes a full bucket),
    /// or says in how many whole seconds that many will be back.
    pub(crate) fn take(&self, key: &K, cost: u64, now: Instant) -> Result<(), u64> {
        let cost = (cost as f64).min(self.capacity);
        let shard_index = usize::try_from(self.hasher.hash_one(key) % RATE_LIMIT_SHARDS as u64)
            .expect("a shard index is below RATE_LIMIT_SHARDS");
        // Buckets are plain numbers updated in single statements: a poisoned shard is consistent.
        let mut shard = self.shards[shard_index]
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let shard = &mut *shard;
        let used = shard.next_use;
        shard.next_use += 1;
        let previous = match shard.buckets.get(key) {
            Some(bucket) => {
                shard.order.remove(&bucket.used);
                *bucket
            }
            None => {
                if shard.buckets.len() >= self.keys_per_shard_max
                    && let Some((_, oldest)) = shard.order.pop_first()
                {
                    shard.buckets.remove(&oldest);
                }
                Bucket {
                    tokens: self.capacity,
                    updated: now,
                    used,
                }
            }
        };
        let tokens = self.refilled(previous, now);
        let (tokens, outcome) = if tokens >= cost {
            (tokens - cost, Ok(()))
        } else {
            let wait_seconds = (cost - tokens) / self.refill_per_second;
            // `as` saturates; the wait is finite because refill_per_second > 0.
            (tokens, Err((wait_seconds.ceil() as u64).max(1)))
        };
        shard.buckets.insert(
            key.clone(),
            Bucket {
                tokens,
                updated: now,
                used,
            },
        );
        shard.order.insert(used, key.clone());
        debug_assert_eq!(shard.order.len(), shard.buckets.len());
        debug_assert!(shard.buckets.len() <= self.keys_per_shard_max);
        outcome
    }

    /// Keys tracked now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.shards
            .iter()
            .map(|shard| shard.lock().map_or(0, |shard| shard.buckets.len()))
            .sum()
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
    fn a_cost_takes_that_many_tokens() {
        let limiter = RateLimiter::new(3600, Duration::from_secs(3600));
        let now = Instant::now();
        limiter.take(&(), 3000, now).unwrap();
        // 600 left, 1000 asked: 400 more come back in 400 s.
        assert_eq!(limiter.take(&(), 1000, now), Err(400));
        limiter.take(&(), 600, now).unwrap();
        // A cost above the capacity waits for a full bucket rather than forever.
        assert_eq!(limiter.take(&(), 1_000_000, now), Err(3600));
    }

    #[test]
    fn a_table_full_of_busy_keys_still_serves_a_new_client() {
        let keys_max = RATE_LIMIT_SHARDS * 4;
        let limiter = RateLimiter::with_keys_max(1, Duration::from_secs(3600), keys_max);
        let now = Instant::now();
        // Far more busy keys than the table holds, each with its one token spent.
        for key in 0..keys_max * 10 {
            limiter.check(&key, now).unwrap();
            assert_eq!(limiter.check(&key, now), Err(3600), "key {key} is busy");
        }
        assert!(limiter.len() <= keys_max, "{} keys held", limiter.len());
        // A new client is served, and then limited like any other.
        limiter.check(&usize::MAX, now).unwrap();
        assert_eq!(limiter.check(&usize::MAX, now), Err(3600));
        assert!(limiter.len() <= keys_max);
    }

    #[test]
    fn the_least_recently_seen_key_is_forgotten_first() {
        // One shard's worth of room per shard: 2 keys each.
        let limiter =
            RateLimiter::with_keys_max(1, Duration::from_secs(3600), RATE_LIMIT_SHARDS * 2);
        let now = Instant::now();
        let active = 0_usize;
        limiter.check(&active, now).unwrap();
        // Keep `active` recent while a flood of new keys passes through every shard.
        for key in 1..1000 {
            limiter.check(&key, now).unwrap();
            assert_eq!(limiter.check(&active, now), Err(3600), "after key {key}");
        }
    }
}
