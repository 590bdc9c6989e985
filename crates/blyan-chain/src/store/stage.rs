//! Staged appends: a payload downloaded into a staging file ([`PayloadStage`]) becomes a block's
//! payload by adopting the file as a segment, so its bytes are never copied.
//!
//! [`ChainStore::append_staged`] is an append in phases: the checks (stateless header checks,
//! the stage complete, its length, the blake3 of its mapped bytes; then under the append lock
//! the link checks and the Proof-of-Learning hook over the mapped bytes), every one of which
//! leaves the stage on disk as it was; then adoption (the active segment sealed, the staging
//! file given the next segment id and renamed into `segments/`, becoming the active segment);
//! then the RocksDB batch. A crash between the rename and the batch leaves a segment newer than
//! the committed active one, which the next read-write open removes like any unacknowledged
//! segment: the download is lost, the store consistent.

use std::sync::MutexGuard;

use blyan_primitives::{BlockHash, PayloadHash};
use tracing::field::Empty;

use super::{ChainStore, Writer};
use crate::error::{Error, Result, io_error};
use crate::hash::hash_payload;
use crate::header::BlockHeader;
use crate::pol::Admission;
use crate::segment::Placement;
use crate::stage::{PayloadStage, STAGING_DIR_NAME, StagePaths};
use crate::validate::now_ms;

impl ChainStore {
    /// Opens, or resumes after a restart, the staging file for `header`'s payload
    /// (`<store>/staging/<payload hash hex>.part` and its sidecar recording which blocks are
    /// written). `header` is checked statelessly first ([`crate::Validator::check_header`]), and a
    /// block already stored is refused with [`Error::AlreadyExists`]. Refused on a read-only
    /// store ([`Error::ReadOnly`]) and while another stage of the same payload is open
    /// ([`Error::StageBusy`]).
    ///
    /// A resumed stage counts as written only the blocks its last [`PayloadStage::flush`]
    /// persisted; a missing or unreadable sidecar means nothing is.
    ///
    /// Refused with [`Error::DiskFull`] (the stage closed again, its files kept) when the bytes
    /// still missing would leave less free disk than
    /// [`crate::StoreConfig::free_bytes_min`]; every [`PayloadStage::write_at`] checks the
    /// floor again.
    pub fn stage_payload(&self, header: &BlockHeader) -> Result<PayloadStage> {
        self.ensure_writable("stage payload")?;
        let block = self.validator.check_header(header)?;
        // Before any byte is downloaded: a block stamped days ahead is refused on append anyway.
        self.validator.check_clock(block, header, now_ms())?;
        if self.contains(&block)? {
            return Err(Error::AlreadyExists { block });
        }
        let stage = PayloadStage::open(
            &self.root.join(STAGING_DIR_NAME),
            header.payload_hash,
            header.payload_bytes,
            &self.stages,
            self.floor.clone(),
        )?;
        self.floor.check(stage.missing_bytes())?;
        Ok(stage)
    }

    /// Validates and appends `header`, whose payload was fully written into `stage`, by
    /// adopting the staging file as a new payload segment: the payload is never copied.
    ///
    /// Runs every check [`ChainStore::append`] runs, with the staged bytes mapped for the
    /// payload's length and blake3 ([`Error::PayloadLengthMismatch`],
    /// [`Error::PayloadHashMismatch`]) and for the Proof-of-Learning hook; a stage with bytes
    /// missing is [`Error::StageIncomplete`]. On any refusal the staging file stays on disk
    /// untouched and the stage's progress is flushed (best effort): reopen it with
    /// [`ChainStore::stage_payload`] to go on writing, or remove it with
    /// [`ChainStore::discard_stage`].
    ///
    /// Once accepted, the staging file becomes the next segment and the active one (later
    /// appends go after it, or roll over to a new segment as usual), fsynced with its directory
    /// under [`blyan_primitives::Durability::Synced`] before the batch commits; its sidecar is
    /// removed. An I/O failure from there on poisons the store as any failed append write does;
    /// if it came after the rename, the download is lost when the store is reopened.
    pub fn append_staged(
        &self,
        header: &BlockHeader,
        mut stage: PayloadStage,
    ) -> Result<BlockHash> {
        let span = tracing::info_span!(
            "append",
            block = Empty,
            chain = %header.chain,
            kind = %header.kind,
            height = header.height,
            staged = true,
        );
        let _entered = span.enter();
        let (block, mut writer, admission) = match self.check_staged(header, &mut stage) {
            Ok(checked) => checked,
            Err(error) => {
                if let Err(flush_error) = stage.flush() {
                    tracing::warn!(%flush_error, "persisting the refused stage's progress failed");
                }
                return Err(error);
            }
        };
        span.record("block", tracing::field::display(block));
        // From here on nothing is refused: only I/O can fail, and that poisons the store.
        let placement = self.poison_on_err(self.adopt(&mut writer, &stage))?;
        let appended = self.commit(&mut writer, header, block, placement, &admission)?;
        drop(writer);
        release(&stage);
        Ok(appended)
    }

    /// Removes the staging file and sidecar of `payload` (bad data, an abandoned download).
    /// Nothing to remove is fine. Refused while a stage of it is open ([`Error::StageBusy`]:
    /// drop the stage first) and on a read-only store.
    pub fn discard_stage(&self, payload: &PayloadHash) -> Result<()> {
        self.ensure_writable("discard stage")?;
        // Held while removing, so no stage of this payload opens meanwhile.
        let open = self.stages.lock();
        if open.contains(payload) {
            return Err(Error::StageBusy { payload: *payload });
        }
        StagePaths::new(&self.root.join(STAGING_DIR_NAME), payload).remove_all()?;
        tracing::debug!(%payload, "payload stage discarded");
        Ok(())
    }

    /// The payloads with a staging file on disk (open or not), ascending: downloads a restart
    /// interrupted, to resume ([`ChainStore::stage_payload`] with their header, learned again
    /// from peers: a staged header is not stored) or to [`ChainStore::discard_stage`]. Reads
    /// only; works on a read-only store too.
    pub fn staged_payloads(&self) -> Result<Vec<PayloadHash>> {
        let dir = self.root.join(STAGING_DIR_NAME);
        let entries = match std::fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(Error::Io { path: dir, source }),
        };
        let mut payloads = Vec::new();
        for entry in entries {
            let entry = entry.map_err(io_error(&dir))?;
            if let Some(payload) = StagePaths::payload_of(&entry.path()) {
                payloads.push(payload);
            }
        }
        payloads.sort_unstable();
        Ok(payloads)
    }

    /// Discards the stages nobody has open and nobody wrote to for `unused_for` (by the files'
    /// modification times): downloads abandoned for good, e.g. of a block that reached the
    /// store another way. Returns the payloads discarded, ascending. A stage that is open, or
    /// younger, is kept for its download to resume.
    pub fn prune_stages(&self, unused_for: std::time::Duration) -> Result<Vec<PayloadHash>> {
        self.ensure_writable("prune stages")?;
        let dir = self.root.join(STAGING_DIR_NAME);
        let now = std::time::SystemTime::now();
        let mut pruned = Vec::new();
        for payload in self.staged_payloads()? {
            // Held while deciding and removing, so no stage of this payload opens meanwhile.
            let open = self.stages.lock();
            if open.contains(&payload) {
                continue;
            }
            let paths = StagePaths::new(&dir, &payload);
            let mut newest = None;
            for path in [&paths.data, &paths.sidecar] {
                match std::fs::metadata(path).and_then(|meta| meta.modified()) {
                    Ok(modified) => newest = newest.max(Some(modified)),
                    Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
                    Err(source) => {
                        return Err(Error::Io {
                            path: path.clone(),
                            source,
                        });
                    }
                }
            }
            let idle = newest.map_or(std::time::Duration::MAX, |modified| {
                now.duration_since(modified).unwrap_or_default()
            });
            if idle >= unused_for {
                paths.remove_all()?;
                tracing::info!(%payload, idle_seconds = idle.as_secs(), "abandoned payload stage pruned");
                pruned.push(payload);
            }
        }
        Ok(pruned)
    }

    /// The checks of a staged append; returns the block hash, and the append lock held after
    /// the link checks and the Proof-of-Learning hook passed.
    fn check_staged(
        &self,
        header: &BlockHeader,
        stage: &mut PayloadStage,
    ) -> Result<(BlockHash, MutexGuard<'_, Writer>, Admission)> {
        self.ensure_writable("append")?;
        if !stage.belongs_to(&self.stages) {
            return Err(Error::StageOfAnotherStore {
                payload: stage.payload_hash(),
            });
        }
        let block = self.validator.check_header(header)?;
        self.validator.check_clock(block, header, now_ms())?;
        // The payload is on disk already; its index records still need room.
        self.floor.check(0)?;
        let missing_bytes = stage.missing_bytes();
        if missing_bytes > 0 {
            return Err(Error::StageIncomplete {
                block,
                missing_bytes,
            });
        }
        if stage.len() != header.payload_bytes {
            return Err(Error::PayloadLengthMismatch {
                block,
                got: stage.len(),
                expected: header.payload_bytes,
            });
        }
        // The guard borrows the stage mutably: nothing writes the file while it is mapped.
        let staged = stage.map()?;
        // Hashed before taking the lock, as `append` does, so appenders overlap.
        let got = hash_payload(&staged);
        if got != header.payload_hash {
            return Err(Error::PayloadHashMismatch {
                block,
                got,
                expected: header.payload_hash,
            });
        }
        let writer = self.lock_writer("append")?;
        let chains = writer.chains;
        let base = self.validator.check_links(self, &chains, header, block)?;
        let admission = self.admit(header, block, base, &staged)?;
        Ok((block, writer, admission))
    }

    /// Makes the staged payload the writer's: a new active segment, or for an empty payload
    /// nothing (an empty payload has no bytes to place).
    fn adopt(
        &self,
        writer: &mut MutexGuard<'_, Writer>,
        stage: &PayloadStage,
    ) -> Result<Placement> {
        let durability = self.durability();
        if stage.is_empty() {
            return writer.segment.place(0, self.segment_target(), durability);
        }
        let file = stage.adoption_file()?;
        let placement = writer
            .segment
            .adopt(file, &stage.paths().data, stage.len(), durability)?;
        self.maps.set_active(writer.segment.active());
        Ok(placement)
    }
}

/// Removes what is left of an adopted stage: its sidecar (and, for an empty payload, its
/// staging file, which was not adopted). Best effort: the block is appended already, and a
/// leftover sidecar describes no staging file any more.
fn release(stage: &PayloadStage) {
    let paths = stage.paths();
    let mut leftovers = vec![&paths.sidecar];
    if stage.is_empty() {
        leftovers.push(&paths.data);
    }
    for path in leftovers {
        if let Err(error) = std::fs::remove_file(path)
            && error.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(path = %path.display(), %error, "removing a used stage file failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use blyan_primitives::Durability;

    use super::*;
    use crate::chain::{BlockKind, ChainId};
    use crate::config::StoreConfig;
    use crate::genesis::GENESIS_TIMESTAMP_MS;
    use crate::key::AuthorKey;

    /// The real adoption phase runs, then the process "dies" before the batch: the reopened
    /// store removes the adopted segment, lacks the block, verifies clean and appends again.
    #[test]
    fn a_crash_after_adoption_before_the_commit_leaves_a_consistent_store() {
        let dir = tempfile::tempdir().unwrap();
        let config = StoreConfig {
            durability: Durability::Synced,
            ..StoreConfig::default()
        };
        let payload: Vec<u8> = (0..40_000u32).map(|i| (i % 251) as u8).collect();
        let key = AuthorKey::generate();
        let adopted_segment = {
            let store = ChainStore::open(dir.path(), config.clone()).unwrap();
            let mut header = BlockHeader::new_child(
                &store.tip(ChainId::Dataset),
                BlockKind::DatasetEntry,
                &payload,
                GENESIS_TIMESTAMP_MS + 1,
            );
            header.sign(&key);
            let mut stage = store.stage_payload(&header).unwrap();
            stage.write_at(0, &payload).unwrap();
            let (_, mut writer, _) = store.check_staged(&header, &mut stage).unwrap();
            let placement = store.adopt(&mut writer, &stage).unwrap();
            assert!(!stage.paths().data.exists(), "the staging file was renamed");
            crate::segment::segment_path(store.maps.dir(), placement.segment)
        };
        assert!(adopted_segment.exists());

        let store = ChainStore::open(dir.path(), config).unwrap();
        assert!(
            !adopted_segment.exists(),
            "recovery removes the unacknowledged segment"
        );
        assert_eq!(store.chain_info(ChainId::Dataset).blocks, 1);
        let report = store.verify(|_| {}).unwrap();
        assert!(report.is_ok(), "{:?}", report.first_bad);
        let mut header = BlockHeader::new_child(
            &store.tip(ChainId::Dataset),
            BlockKind::DatasetEntry,
            &payload,
            GENESIS_TIMESTAMP_MS + 1,
        );
        header.sign(&key);
        let hash = store.append(&header, &payload).unwrap();
        assert_eq!(
            &*store.payload_verified(&hash).unwrap().unwrap(),
            &payload[..]
        );
    }
}
