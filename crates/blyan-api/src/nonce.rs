//! Sign-in nonces: random, single-use, expiring, kept in the node's memory.
//!
//! Invariant: a nonce moves `pending → used` exactly once, under one lock, so two concurrent
//! sign-ins with the same message can never both succeed. Used nonces are remembered until they
//! would have expired (or are evicted), so a replay is answered `nonce_replayed` rather than
//! `nonce_unknown`.
//!
//! The store cannot be exhausted by one source: each client bucket holds at most
//! [`NONCE_PER_SOURCE_MAX`] nonces, and asking for one more forgets that source's oldest; the
//! whole store holds at most [`NONCE_HELD_COUNT_MAX`], and when full forgets the oldest of all.
//! Issuing never fails, so a flood (from one source or many) costs the flooders their own
//! nonces first and never stops others from signing in; a forgotten nonce is refused as
//! `nonce_unknown`, like one never issued.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use rand::RngCore as _;

use crate::client_addr::ClientBucket;
use crate::{Error, Result};

/// Random bytes in a nonce: 128 bits, above the 96 bits EIP-4361 sign-in needs against guessing.
pub const NONCE_RANDOM_BYTES: usize = 16;

/// Most nonces (pending and recently used) held at once; beyond it the oldest is forgotten.
pub const NONCE_HELD_COUNT_MAX: usize = 65_536;

/// Most nonces one client bucket holds at once; beyond it its oldest is forgotten. A person
/// signs in with one; a household or office behind one address needs a few.
pub const NONCE_PER_SOURCE_MAX: usize = 32;

const _: () = assert!(
    NONCE_RANDOM_BYTES * 8 >= 96,
    "a nonce must carry at least 96 random bits"
);

const _: () = assert!(
    NONCE_PER_SOURCE_MAX * 1024 <= NONCE_HELD_COUNT_MAX,
    "one source holds a small share of the store: a thousand sources fit at their cap"
);

#[derive(Debug, Clone, Copy)]
struct NonceRecord {
    issued_at: SystemTime,
    expires_at: SystemTime,
    used: bool,
    source: ClientBucket,
}

/// The records and their two orders, all under one lock.
// Invariant: each record appears once in `by_age` (keyed by its serial) and once in its
// source's queue in `by_source`; no queue is empty; the queues are in serial order.
#[derive(Debug, Default)]
struct Records {
    nonces: HashMap<String, NonceRecord>,
    by_age: BTreeMap<u64, String>,
    by_source: HashMap<ClientBucket, VecDeque<u64>>,
    next_serial: u64,
}

impl Records {
    /// Forgets the record issued as `serial`, from all three maps.
    fn forget(&mut self, serial: u64) {
        let Some(nonce) = self.by_age.remove(&serial) else {
            return;
        };
        let Some(record) = self.nonces.remove(&nonce) else {
            return;
        };
        if let Some(queue) = self.by_source.get_mut(&record.source) {
            queue.retain(|held| *held != serial);
            if queue.is_empty() {
                self.by_source.remove(&record.source);
            }
        }
    }

    fn check_invariant(&self) {
        debug_assert_eq!(self.nonces.len(), self.by_age.len());
        debug_assert_eq!(
            self.by_source.values().map(VecDeque::len).sum::<usize>(),
            self.nonces.len()
        );
    }
}

/// The node's outstanding sign-in nonces.
#[derive(Debug)]
pub(crate) struct NonceStore {
    ttl: Duration,
    held_max: usize,
    per_source_max: usize,
    records: Mutex<Records>,
}

/// A freshly issued nonce.
#[derive(Debug, Clone)]
pub(crate) struct IssuedNonce {
    pub nonce: String,
    pub issued_at: SystemTime,
    pub expires_at: SystemTime,
}

impl NonceStore {
    pub(crate) fn new(ttl: Duration) -> Self {
        Self::with_capacity(ttl, NONCE_HELD_COUNT_MAX, NONCE_PER_SOURCE_MAX)
    }

    fn with_capacity(ttl: Duration, held_max: usize, per_source_max: usize) -> Self {
        Self {
            ttl,
            held_max: held_max.max(1),
            per_source_max: per_source_max.max(1),
            records: Mutex::new(Records::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Records> {
        // A panic while holding the lock can leave the orders out of step only between two
        // statements of `forget` or `issue`, each of which tolerates a missing entry, so a
        // poisoned store is still usable.
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Issues a new nonce for `source`, valid for the store's lifetime from `now`, making room
    /// by forgetting expired nonces, then the source's oldest, then the store's oldest.
    pub(crate) fn issue(&self, source: ClientBucket, now: SystemTime) -> IssuedNonce {
        let mut bytes = [0_u8; NONCE_RANDOM_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let nonce = hex::encode(bytes);
        let mut records = self.lock();
        // Expired records are the oldest ones (the lifetime is fixed).
        while let Some((&serial, oldest)) = records.by_age.first_key_value() {
            let expired = records
                .nonces
                .get(oldest)
                .is_none_or(|record| record.expires_at <= now);
            if !expired {
                break;
            }
            records.forget(serial);
        }
        let source_oldest = records
            .by_source
            .get(&source)
            .filter(|queue| queue.len() >= self.per_source_max)
            .and_then(|queue| queue.front().copied());
        if let Some(serial) = source_oldest {
            records.forget(serial);
        }
        if records.nonces.len() >= self.held_max
            && let Some((&serial, _)) = records.by_age.first_key_value()
        {
            records.forget(serial);
        }
        let serial = records.next_serial;
        records.next_serial += 1;
        let record = NonceRecord {
            issued_at: now,
            expires_at: now + self.ttl,
            used: false,
            source,
        };
        records.nonces.insert(nonce.clone(), record);
        records.by_age.insert(serial, nonce.clone());
        records
            .by_source
            .entry(source)
            .or_default()
            .push_back(serial);
        records.check_invariant();
        debug_assert!(records.nonces.len() <= self.held_max);
        IssuedNonce {
            nonce,
            issued_at: record.issued_at,
            expires_at: record.expires_at,
        }
    }

    /// When `nonce` was issued, if it may still be used at `now`; consumes nothing.
    pub(crate) fn check(&self, nonce: &str, now: SystemTime) -> Result<SystemTime> {
        let records = self.lock();
        Self::usable(records.nonces.get(nonce), now).map(|record| record.issued_at)
    }

    /// Marks `nonce` used; fails if it is unknown, expired, or was used already (by a concurrent
    /// sign-in too: the check and the mark happen under one lock).
    pub(crate) fn consume(&self, nonce: &str, now: SystemTime) -> Result<()> {
        let mut records = self.lock();
        let record = records.nonces.get_mut(nonce);
        Self::usable(record.as_deref(), now)?;
        let record = record.expect("usable() refused a missing record");
        record.used = true;
        Ok(())
    }

    fn usable(record: Option<&NonceRecord>, now: SystemTime) -> Result<&NonceRecord> {
        let record = record.ok_or(Error::NonceUnknown)?;
        if record.used {
            return Err(Error::NonceReplayed);
        }
        if record.expires_at <= now {
            return Err(Error::NonceExpired);
        }
        Ok(record)
    }

    /// Nonces held now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().nonces.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn source(last: u8) -> ClientBucket {
        ClientBucket::V4(std::net::Ipv4Addr::new(192, 0, 2, last))
    }

    fn check_refused(result: Result<impl std::fmt::Debug>, code: &str) {
        let error = result.expect_err("must be refused");
        assert_eq!(error.code(), code, "{error}");
    }

    #[test]
    fn a_nonce_is_long_random_and_single_use() {
        let store = NonceStore::new(Duration::from_secs(60));
        let now = SystemTime::now();
        let first = store.issue(source(1), now);
        let second = store.issue(source(1), now);
        assert_eq!(first.nonce.len(), NONCE_RANDOM_BYTES * 2);
        assert_ne!(first.nonce, second.nonce);
        assert!(first.nonce.chars().all(|c| c.is_ascii_alphanumeric()));
        store.check(&first.nonce, now).unwrap();
        store.consume(&first.nonce, now).unwrap();
        check_refused(store.consume(&first.nonce, now), "nonce_replayed");
        check_refused(store.check(&first.nonce, now), "nonce_replayed");
        check_refused(store.check("00ff", now), "nonce_unknown");
    }

    #[test]
    fn a_nonce_expires_at_its_lifetime() {
        let store = NonceStore::new(Duration::from_secs(60));
        let now = SystemTime::now();
        let issued = store.issue(source(1), now);
        let just_before = now + Duration::from_secs(59);
        store.check(&issued.nonce, just_before).unwrap();
        check_refused(
            store.consume(&issued.nonce, now + Duration::from_secs(60)),
            "nonce_expired",
        );
    }

    #[test]
    fn the_store_is_bounded_and_forgets_its_oldest() {
        let store = NonceStore::with_capacity(Duration::from_secs(10), 3, 3);
        let now = SystemTime::now();
        let first = store.issue(source(1), now);
        for last in 2..=3 {
            store.issue(source(last), now);
        }
        // Full: a new nonce is still issued, and the oldest is forgotten for it.
        let newest = store.issue(source(4), now);
        assert_eq!(store.len(), 3);
        check_refused(store.check(&first.nonce, now), "nonce_unknown");
        store.check(&newest.nonce, now).unwrap();
        // Expired nonces are reclaimed before anything live is forgotten.
        let later = now + Duration::from_secs(10);
        let fresh = store.issue(source(5), later);
        assert_eq!(store.len(), 1);
        store.check(&fresh.nonce, later).unwrap();
    }

    #[test]
    fn a_source_at_its_cap_forgets_its_own_oldest() {
        let store = NonceStore::with_capacity(Duration::from_secs(60), 100, 2);
        let now = SystemTime::now();
        let other = store.issue(source(9), now);
        let flood: Vec<IssuedNonce> = (0..50).map(|_| store.issue(source(1), now)).collect();
        assert_eq!(store.len(), 3, "one other nonce and the flood's last two");
        check_refused(store.check(&flood[0].nonce, now), "nonce_unknown");
        store.check(&flood[49].nonce, now).unwrap();
        store.check(&other.nonce, now).unwrap();
    }

    #[test]
    fn a_flood_from_one_source_leaves_others_able_to_sign_in() {
        let store = NonceStore::new(Duration::from_secs(300));
        let now = SystemTime::now();
        let mine = store.issue(source(2), now);
        for _ in 0..NONCE_HELD_COUNT_MAX * 2 {
            store.issue(source(1), now);
        }
        assert_eq!(store.len(), 1 + NONCE_PER_SOURCE_MAX);
        store.consume(&mine.nonce, now).unwrap();
        let later = store.issue(source(3), now);
        store.consume(&later.nonce, now).unwrap();
    }

    #[test]
    fn concurrent_consumers_get_one_success() {
        let store = std::sync::Arc::new(NonceStore::new(Duration::from_secs(60)));
        let now = SystemTime::now();
        let nonce = store.issue(source(1), now).nonce;
        let successes: usize = std::thread::scope(|scope| {
            let handles: Vec<_> = (0..8)
                .map(|_| scope.spawn(|| store.consume(&nonce, now).is_ok()))
                .collect();
            handles
                .into_iter()
                .map(|handle| usize::from(handle.join().unwrap()))
                .sum()
        });
        assert_eq!(successes, 1);
    }
}
