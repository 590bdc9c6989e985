//! Validated appends.
//!
//! One append is: stateless checks and payload hashing (no lock, so appenders overlap), then
//! under the append lock: the checks against stored state (`Validator::check_links`), the
//! payload write (+ fsync), and one RocksDB write batch holding the header, payload record,
//! every index entry, the chain's new tip and counters, the next sequence number and the
//! segment's new committed end. Every check is a point lookup or a seek, so an append costs the
//! same at height 10 as at height 10⁹.

use std::io::Read;
use std::sync::atomic::Ordering;
use std::sync::{MutexGuard, PoisonError};

use blyan_primitives::BlockHash;
use rocksdb::WriteBatch;
use tracing::field::Empty;

use super::{ChainStore, ExpertVersion, Writer};
use crate::chain::BlockKind;
use crate::error::{Error, Result, db_error};
use crate::header::{BlockHeader, decode_block};
use crate::pol::{Admission, OfferedBlock};
use crate::schema::{ActiveSegment, MetaKey, encode_record};
use crate::segment::{Placement, StreamError};
use crate::validate::now_ms;

/// The span every append runs in: the block's hash (recorded once the header is hashed), chain
/// and kind, so every event of one append, down to a failed fsync, names its block.
fn append_span(header: &BlockHeader, streamed: bool) -> tracing::Span {
    tracing::info_span!(
        "append",
        block = Empty,
        chain = %header.chain,
        kind = %header.kind,
        height = header.height,
        streamed,
    )
}

impl ChainStore {
    /// Validates and appends a block whose payload is in memory (or mapped from a file).
    ///
    /// Checks, each failure its own [`Error`] variant: header version, size, kind on chain,
    /// genesis placement, dependency count and duplicates, metadata, payload limit, proof of
    /// work, signature and signer, not stamped too far ahead of the clock
    /// ([`Error::TimestampInFuture`]), payload length and hash; then against the store: already
    /// stored, parent known and on this chain, height, timestamp, fork rule, dependencies known
    /// and not later, expert version; then, when on, the Proof-of-Learning hook's
    /// [`Admission`] (run under the append lock).
    /// Returns the block hash once the block is durable per the config's durability. A store
    /// opened read-only refuses with [`Error::ReadOnly`] before checking anything.
    ///
    /// A payload that would leave less free disk than [`crate::StoreConfig::free_bytes_min`]
    /// is refused with [`Error::DiskFull`] before anything is written. A payload write that
    /// fails anyway (`ENOSPC`, a file size limit, an I/O error) is cut off again and refused
    /// with [`Error::PayloadWrite`]: the store stays writable and the append may be retried.
    /// Only a failed index batch poisons the store ([`Error::Poisoned`] until reopened).
    pub fn append(&self, header: &BlockHeader, payload: &[u8]) -> Result<BlockHash> {
        let span = append_span(header, false);
        let _entered = span.enter();
        self.ensure_writable("append")?;
        let block = self.validator.check_header(header)?;
        span.record("block", tracing::field::display(block));
        self.validator.check_clock(block, header, now_ms())?;
        self.validator.check_payload(block, header, payload)?;
        self.floor.check(payload.len() as u64)?;
        let durability = self.durability();
        let mut writer = self.lock_writer("append")?;
        let chains = writer.chains;
        let base = self.validator.check_links(self, &chains, header, block)?;
        let admission = self.admit(header, block, base, payload)?;
        let written = writer
            .segment
            .place(payload.len() as u64, self.segment_target(), durability)
            .and_then(|placement| {
                self.maps.set_active(writer.segment.active());
                writer.segment.write(placement, payload, durability)?;
                Ok(placement)
            });
        let placement = match written {
            Ok(placement) => placement,
            Err(error) => return Err(self.roll_back(&mut writer, block, error)),
        };
        self.commit(&mut writer, header, block, placement, &admission)
    }

    /// Validates and appends a block whose payload arrives from `payload`, a reader giving at
    /// least `header.payload_bytes` bytes (exactly that many are read). The bytes go straight
    /// into the segment, hashed on the way, in bounded memory; if they do not match the header
    /// they are cut off again ([`Error::PayloadLengthMismatch`], [`Error::PayloadHashMismatch`])
    /// and the segment is as before. Holds the append lock while reading, so give it a fast
    /// reader (a file, a local buffer); the Proof-of-Learning hook, if on, runs under the lock
    /// too, once the payload is in. The free-disk floor and a failed write are handled as in
    /// [`ChainStore::append`].
    pub fn append_reader(&self, header: &BlockHeader, mut payload: impl Read) -> Result<BlockHash> {
        let span = append_span(header, true);
        let _entered = span.enter();
        self.ensure_writable("append")?;
        let block = self.validator.check_header(header)?;
        span.record("block", tracing::field::display(block));
        self.validator.check_clock(block, header, now_ms())?;
        self.floor.check(header.payload_bytes)?;
        let durability = self.durability();
        let mut writer = self.lock_writer("append")?;
        let chains = writer.chains;
        let base = self.validator.check_links(self, &chains, header, block)?;
        let placement =
            match writer
                .segment
                .place(header.payload_bytes, self.segment_target(), durability)
            {
                Ok(placement) => placement,
                Err(error) => return Err(self.roll_back(&mut writer, block, error)),
            };
        self.maps.set_active(writer.segment.active());
        let streamed = writer.segment.write_stream(placement, &mut payload);
        let (got_bytes, got_hash) = match streamed {
            Ok(result) => result,
            Err(StreamError::Reader(source)) => {
                let error = Error::PayloadRead { block, source };
                return Err(self.roll_back(&mut writer, block, error));
            }
            Err(StreamError::Segment(error)) => {
                return Err(self.roll_back(&mut writer, block, error));
            }
        };
        let mismatch = if got_bytes != header.payload_bytes {
            Some(Error::PayloadLengthMismatch {
                block,
                got: got_bytes,
                expected: header.payload_bytes,
            })
        } else if got_hash != header.payload_hash {
            Some(Error::PayloadHashMismatch {
                block,
                got: got_hash,
                expected: header.payload_hash,
            })
        } else {
            None
        };
        if let Some(error) = mismatch {
            return Err(self.roll_back(&mut writer, block, error));
        }
        let admission = if self.pol.is_some() && header.prev_hash.is_some() {
            let verdict = {
                // The guard borrows the segment writer: `roll_back` below cannot run while the
                // hook still sees the mapped bytes.
                match writer.segment.map_uncommitted(placement) {
                    Ok(uncommitted) => self.admit(header, block, base, &uncommitted),
                    Err(error) => Err(error),
                }
            };
            match verdict {
                Ok(admission) => admission,
                Err(error) => return Err(self.roll_back(&mut writer, block, error)),
            }
        } else {
            Admission::Serve
        };
        if let Err(error) = writer.segment.sync(durability) {
            return Err(self.roll_back(&mut writer, block, error));
        }
        self.commit(&mut writer, header, block, placement, &admission)
    }

    /// Undoes the payload write of an append refused or failed before its index batch: cuts
    /// the active segment back to its committed end. Nothing was committed (the batch is the
    /// commit point), so the store is then exactly as before the append and stays writable: a
    /// full disk or a file size limit refuses this append ([`Error::PayloadWrite`]), and the
    /// next one is tried afresh once space returns, without a restart.
    ///
    /// A failed fsync is rolled back the same way, and that is sound here: every committed byte
    /// was made durable (synced durability) before its batch, so the only dirty pages a failed
    /// fsync can lose are this append's, which the truncation drops anyway. Only if the
    /// truncation itself fails is the store poisoned ([`Error::Poisoned`] until reopened,
    /// when recovery removes the bytes).
    ///
    /// Returns the error to give the caller: an I/O failure of the segment becomes
    /// [`Error::PayloadWrite`] naming `block`; a refusal (a mismatching payload, the
    /// Proof-of-Learning hook) is returned as it is.
    fn roll_back(&self, writer: &mut Writer, block: BlockHash, error: Error) -> Error {
        if let Err(discard_error) = writer.segment.discard() {
            tracing::error!(
                %error,
                %discard_error,
                "a failed payload write could not be rolled back; the store refuses writes until reopened"
            );
            self.poisoned.store(true, Ordering::Release);
            return error;
        }
        self.maps.set_active(writer.segment.active());
        match error {
            Error::Io { path, source } => {
                tracing::warn!(
                    path = %path.display(),
                    error = %source,
                    "payload write failed and was rolled back; the store stays writable"
                );
                Error::PayloadWrite {
                    block,
                    path,
                    source,
                }
            }
            refusal => refusal,
        }
    }

    /// Decodes a block in [`crate::encode_block`]'s form and appends it: what `POST /blocks`
    /// does with a request body.
    pub fn submit(&self, encoded: &[u8]) -> Result<BlockHash> {
        self.ensure_writable("submit")?;
        let decoded = decode_block(encoded)?;
        self.append(&decoded.header, decoded.payload)
    }

    /// The Proof-of-Learning hook's admission of a block ([`Admission::Serve`] without a hook).
    /// Runs under the append lock, after the link checks.
    pub(super) fn admit(
        &self,
        header: &BlockHeader,
        block: BlockHash,
        base: Option<ExpertVersion>,
        payload: &[u8],
    ) -> Result<Admission> {
        let Some(hook) = self.pol.as_ref() else {
            return Ok(Admission::Serve);
        };
        let offered = OfferedBlock {
            hash: block,
            header,
            base,
            payload,
        };
        let admission = hook
            .admit(self, &offered)
            .map_err(|rejection| Error::PolRejected {
                block,
                code: rejection.code,
                reason: rejection.reason,
            })?;
        if let Admission::Promote(candidates) = &admission {
            for candidate in candidates {
                self.check_promotion(block, *candidate)?;
            }
        }
        Ok(admission)
    }

    /// Refuses a promotion of `candidate` by `block` unless `candidate` is a stored candidate
    /// and, for an expert block, its version is its expert's current + 1.
    fn check_promotion(&self, block: BlockHash, candidate: BlockHash) -> Result<()> {
        let invalid = |reason: String| Error::PromotionInvalid {
            block,
            candidate,
            reason,
        };
        if !self.is_candidate(&candidate)? {
            return Err(invalid("not a stored candidate".into()));
        }
        let header = self
            .header(&candidate)?
            .ok_or_else(|| invalid("not stored".into()))?;
        if header.kind == BlockKind::Expert
            && let Some(expert) = header.meta.expert
        {
            let current = self.expert_current(expert)?;
            let expected = current.map_or(1, |current| current.version.saturating_add(1));
            if header.meta.version != expected {
                return Err(invalid(format!(
                    "version {} of {expert}, but the next version is {expected}",
                    header.meta.version
                )));
            }
        }
        Ok(())
    }

    /// Commits one block's batch, then advances the in-memory state to match.
    pub(super) fn commit(
        &self,
        writer: &mut MutexGuard<'_, Writer>,
        header: &BlockHeader,
        block: BlockHash,
        placement: Placement,
        admission: &Admission,
    ) -> Result<BlockHash> {
        let chain = header.chain.index();
        let seq = writer.next_seq;
        let mut batch = WriteBatch::default();
        let record = self.put_block(
            &mut batch,
            header,
            block,
            placement,
            seq,
            Some(writer.chains[chain]),
            admission == &Admission::Candidate,
        );
        if let Admission::Promote(candidates) = admission {
            for candidate in candidates {
                self.put_promotion(&mut batch, *candidate)?;
            }
            batch.put(MetaKey::promoted(&block), encode_record(candidates));
        }
        let mut active = writer.segment.active();
        if placement.len > 0 {
            active = ActiveSegment {
                id: placement.segment,
                end: placement.offset + placement.len,
            };
        }
        batch.put(MetaKey::NEXT_SEQ, encode_record(&(seq + 1)));
        batch.put(MetaKey::ACTIVE_SEGMENT, encode_record(&active));
        self.poison_on_err(
            self.db
                .write_opt(batch, &self.write_options())
                .map_err(db_error("append batch")),
        )?;
        writer.segment.commit(placement);
        debug_assert_eq!(writer.segment.active(), active);
        writer.next_seq = seq + 1;
        writer.chains[chain] = record;
        self.maps.set_active(active);
        self.chains.write().unwrap_or_else(PoisonError::into_inner)[chain] = record;
        tracing::debug!(
            seq,
            payload_bytes = placement.len,
            ?admission,
            "block appended"
        );
        Ok(block)
    }
}
