//! Sign-in nonces: random, single-use, expiring, kept in the node's memory.
//!
//! Invariant: a nonce moves `pending → used` exactly once, under one lock, so two concurrent
//! sign-ins with the same message can never both succeed. Used nonces are remembered until they
//! would have expired, so a replay is answered `nonce_replayed` rather than `nonce_unknown`.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use rand::RngCore as _;

use crate::{Error, Result};

/// Random bytes in a nonce: 128 bits, above the 96 bits EIP-4361 sign-in needs against guessing.
pub const NONCE_RANDOM_BYTES: usize = 16;

/// Most nonces (pending and recently used) held at once; beyond it new sign-ins wait.
pub const NONCE_HELD_COUNT_MAX: usize = 65_536;

const _: () = assert!(
    NONCE_RANDOM_BYTES * 8 >= 96,
    "a nonce must carry at least 96 random bits"
);

#[derive(Debug, Clone, Copy)]
struct NonceRecord {
    issued_at: SystemTime,
    expires_at: SystemTime,
    used: bool,
}

/// The node's outstanding sign-in nonces.
#[derive(Debug)]
pub(crate) struct NonceStore {
    ttl: Duration,
    held_max: usize,
    records: Mutex<HashMap<String, NonceRecord>>,
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
        Self::with_capacity(ttl, NONCE_HELD_COUNT_MAX)
    }

    fn with_capacity(ttl: Duration, held_max: usize) -> Self {
        Self {
            ttl,
            held_max,
            records: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, NonceRecord>> {
        // A panic while holding the lock cannot leave a record half-written (inserts and updates
        // are single statements), so a poisoned map is still consistent.
        self.records
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Issues a new nonce valid for the store's lifetime from `now`.
    pub(crate) fn issue(&self, now: SystemTime) -> Result<IssuedNonce> {
        let mut bytes = [0_u8; NONCE_RANDOM_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        let nonce = hex::encode(bytes);
        let record = NonceRecord {
            issued_at: now,
            expires_at: now + self.ttl,
            used: false,
        };
        let mut records = self.lock();
        if records.len() >= self.held_max {
            records.retain(|_, record| record.expires_at > now);
        }
        if records.len() >= self.held_max {
            return Err(Error::NonceStoreFull);
        }
        records.insert(nonce.clone(), record);
        Ok(IssuedNonce {
            nonce,
            issued_at: record.issued_at,
            expires_at: record.expires_at,
        })
    }

    /// When `nonce` was issued, if it may still be used at `now`; consumes nothing.
    pub(crate) fn check(&self, nonce: &str, now: SystemTime) -> Result<SystemTime> {
        let records = self.lock();
        Self::usable(records.get(nonce), now).map(|record| record.issued_at)
    }

    /// Marks `nonce` used; fails if it is unknown, expired, or was used already (by a concurrent
    /// sign-in too: the check and the mark happen under one lock).
    pub(crate) fn consume(&self, nonce: &str, now: SystemTime) -> Result<()> {
        let mut records = self.lock();
        let record = records.get_mut(nonce);
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
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_refused(result: Result<impl std::fmt::Debug>, code: &str) {
        let error = result.expect_err("must be refused");
        assert_eq!(error.code(), code, "{error}");
    }

    #[test]
    fn a_nonce_is_long_random_and_single_use() {
        let store = NonceStore::new(Duration::from_secs(60));
        let now = SystemTime::now();
        let first = store.issue(now).unwrap();
        let second = store.issue(now).unwrap();
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
        let issued = store.issue(now).unwrap();
        let just_before = now + Duration::from_secs(59);
        store.check(&issued.nonce, just_before).unwrap();
        check_refused(
            store.consume(&issued.nonce, now + Duration::from_secs(60)),
            "nonce_expired",
        );
    }

    #[test]
    fn the_store_is_bounded_and_reclaims_expired_nonces() {
        let store = NonceStore::with_capacity(Duration::from_secs(10), 3);
        let now = SystemTime::now();
        for _ in 0..3 {
            store.issue(now).unwrap();
        }
        check_refused(store.issue(now), "nonce_store_full");
        // Once the held nonces expire, their room is reused.
        store.issue(now + Duration::from_secs(10)).unwrap();
    }

    #[test]
    fn concurrent_consumers_get_one_success() {
        let store = std::sync::Arc::new(NonceStore::new(Duration::from_secs(60)));
        let now = SystemTime::now();
        let nonce = store.issue(now).unwrap().nonce;
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
