//! The free-disk floor: below [`crate::StoreConfig::free_bytes_min`] free bytes, the store
//! refuses new payload bytes ([`Error::DiskFull`]) and keeps serving reads.
//!
//! Checked with one `statvfs` per write (an append, a staged download opened, a staged range
//! written): about a microsecond, against the file system's live count, so the store refuses
//! the moment another process fills the disk and accepts again the moment space returns, with
//! no restart and no state to reset. The floor sits above zero so that the writes the store
//! cannot refuse (RocksDB's WAL, flushes and compactions) and the other stores on the disk
//! (ledger, sign-in) still find room once appends stop.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use crate::error::{Error, Result};

/// The floor of one store, shared with its open [`crate::PayloadStage`]s so a change
/// ([`crate::ChainStore::set_free_bytes_min`]) reaches them too.
#[derive(Clone, Debug)]
pub(crate) struct DiskFloor {
    /// A path on the store's file system (the store's directory).
    path: PathBuf,
    floor_bytes: Arc<AtomicU64>,
}

impl DiskFloor {
    pub(crate) fn new(path: PathBuf, floor_bytes: u64) -> Self {
        Self {
            path,
            floor_bytes: Arc::new(AtomicU64::new(floor_bytes)),
        }
    }

    pub(crate) fn floor_bytes(&self) -> u64 {
        self.floor_bytes.load(Ordering::Relaxed)
    }

    pub(crate) fn set_floor_bytes(&self, floor_bytes: u64) {
        self.floor_bytes.store(floor_bytes, Ordering::Relaxed);
    }

    /// Refuses with [`Error::DiskFull`] when writing `write_bytes` more would leave fewer than
    /// the floor's bytes free. A floor of 0 checks nothing (the file system's own `ENOSPC` is
    /// then the limit).
    pub(crate) fn check(&self, write_bytes: u64) -> Result<()> {
        let floor_bytes = self.floor_bytes();
        if floor_bytes == 0 {
            return Ok(());
        }
        let free_bytes = free_bytes(&self.path)?;
        if free_bytes.saturating_sub(write_bytes) < floor_bytes {
            tracing::warn!(
                path = %self.path.display(),
                free_bytes,
                write_bytes,
                floor_bytes,
                "write refused: the disk is at the store's free-space floor"
            );
            return Err(Error::DiskFull {
                path: self.path.clone(),
                free_bytes,
                write_bytes,
                floor_bytes,
            });
        }
        Ok(())
    }
}

/// Bytes an unprivileged process may still write on the file system holding `path`.
pub(crate) fn free_bytes(path: &Path) -> Result<u64> {
    let stat = rustix::fs::statvfs(path).map_err(|errno| Error::Io {
        path: path.to_path_buf(),
        source: errno.into(),
    })?;
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_floor_above_the_free_space_refuses_and_names_the_figures() {
        let dir = tempfile::tempdir().unwrap();
        let free = free_bytes(dir.path()).unwrap();
        assert!(free > 0, "the temp file system reports no free bytes");
        let floor = DiskFloor::new(dir.path().to_path_buf(), free.saturating_add(1 << 40));
        match floor.check(7) {
            Err(Error::DiskFull {
                path,
                free_bytes,
                write_bytes,
                floor_bytes,
            }) => {
                assert_eq!(path, dir.path());
                assert!(free_bytes < floor_bytes);
                assert_eq!(write_bytes, 7);
                assert_eq!(floor_bytes, free.saturating_add(1 << 40));
            }
            other => panic!("expected DiskFull, got {other:?}"),
        }
        floor.set_floor_bytes(0);
        floor.check(u64::MAX).unwrap();
        floor.set_floor_bytes(1);
        assert!(matches!(floor.check(u64::MAX), Err(Error::DiskFull { .. })));
    }
}
