//! Validated appends.
//!
//! One append is: stateless checks and payload hashing (no lock, so appenders overlap), then
//! under the append lock: the checks against stored state (`Validator::check_links`), the
//! payload write (+ fsync), and one RocksDB write batch holding the header, payload record,
//! every index entry, the chain's new tip and counters, the next sequence number and the
//! segment's new committed end. Every check is a point lookup or a seek, so an append costs the
//! same at height 10 as at height 10⁹.

use std::io::Read;
use std::sync::{Arc, MutexGuard, PoisonError};

use blyan_primitives::BlockHash;
use rocksdb::WriteBatch;
use tracing::field::Empty;

use super::{ChainStore, ExpertVersion, Writer};
use crate::chain::BlockKind;
use crate::error::{Error, Result, db_error};
use crate::header::{BlockHeader, decode_block};
use crate::pol::{ExpertCandidate, PolAcceptance};
use crate::schema::{ActiveSegment, MetaKey, encode_record};
use crate::segment::{Placement, StreamError};

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
    /// work, signature and signer, payload length and hash; then against the store: already
    /// stored, parent known and on this chain, height, timestamp, fork rule, dependencies known
    /// and not later, expert version; then Proof-of-Learning for expert blocks when on.
    /// Returns the block hash once the block is durable per the config's durability. A store
    /// opened read-only refuses with [`Error::ReadOnly`] before checking anything.
    pub fn append(&self, header: &BlockHeader, payload: &[u8]) -> Result<BlockHash> {
        let span = append_span(header, false);
        let _entered = span.enter();
        self.ensure_writable("append")?;
        let block = self.validator.check_header(header)?;
        span.record("block", tracing::field::display(block));
        self.validator.check_payload(block, header, payload)?;
        if let Some(hook) = self.pol_hook_for(header) {
            // Check links first so the hook only evaluates blocks that could be appended.
            let chains = *self.chains.read().unwrap_or_else(PoisonError::into_inner);
            let base = self.validator.check_links(self, &chains, header, block)?;
            self.run_pol(hook.as_ref(), header, block, base, payload)?;
        }
        let durability = self.durability();
        let mut writer = self.lock_writer("append")?;
        let chains = writer.chains;
        self.validator.check_links(self, &chains, header, block)?;
        let placement = self.poison_on_err(writer.segment.place(
            payload.len() as u64,
            self.segment_target(),
            durability,
        ))?;
        self.maps.set_active(writer.segment.active());
        self.poison_on_err(writer.segment.write(placement, payload, durability))?;
        self.commit(&mut writer, header, block, placement)
    }

    /// Validates and appends a block whose payload arrives from `payload`, a reader giving at
    /// least `header.payload_bytes` bytes (exactly that many are read). The bytes go straight
    /// into the segment, hashed on the way, in bounded memory; if they do not match the header
    /// they are cut off again ([`Error::PayloadLengthMismatch`], [`Error::PayloadHashMismatch`])
    /// and the segment is as before. Holds the append lock while reading, so give it a fast
    /// reader (a file, a local buffer); the Proof-of-Learning hook, if on, also runs under the
    /// lock here.
    pub fn append_reader(&self, header: &BlockHeader, mut payload: impl Read) -> Result<BlockHash> {
        let span = append_span(header, true);
        let _entered = span.enter();
        self.ensure_writable("append")?;
        let block = self.validator.check_header(header)?;
        span.record("block", tracing::field::display(block));
        let durability = self.durability();
        let mut writer = self.lock_writer("append")?;
        let chains = writer.chains;
        let base = self.validator.check_links(self, &chains, header, block)?;
        let placement = self.poison_on_err(writer.segment.place(
            header.payload_bytes,
            self.segment_target(),
            durability,
        ))?;
        self.maps.set_active(writer.segment.active());
        let streamed = writer.segment.write_stream(placement, &mut payload);
        let (got_bytes, got_hash) = match streamed {
            Ok(result) => result,
            Err(StreamError::Reader(source)) => {
                self.poison_on_err(writer.segment.discard())?;
                return Err(Error::PayloadRead { block, source });
            }
            Err(StreamError::Segment(error)) => return self.poison_on_err(Err(error)),
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
            self.poison_on_err(writer.segment.discard())?;
            return Err(error);
        }
        if let Some(hook) = self.pol_hook_for(header) {
            let verdict = {
                // The guard borrows the segment writer: `discard` below cannot run while the
                // hook still sees the mapped bytes.
                let uncommitted = self.poison_on_err(writer.segment.map_uncommitted(placement))?;
                self.run_pol(hook.as_ref(), header, block, base, &uncommitted)
            };
            if let Err(error) = verdict {
                self.poison_on_err(writer.segment.discard())?;
                return Err(error);
            }
        }
        self.poison_on_err(writer.segment.sync(durability))?;
        self.commit(&mut writer, header, block, placement)
    }

    /// Decodes a block in [`crate::encode_block`]'s form and appends it: what `POST /blocks`
    /// does with a request body.
    pub fn submit(&self, encoded: &[u8]) -> Result<BlockHash> {
        self.ensure_writable("submit")?;
        let decoded = decode_block(encoded)?;
        self.append(&decoded.header, decoded.payload)
    }

    fn pol_hook_for(&self, header: &BlockHeader) -> Option<&Arc<dyn PolAcceptance>> {
        if header.kind == BlockKind::Expert {
            self.pol.as_ref()
        } else {
            None
        }
    }

    fn run_pol(
        &self,
        hook: &dyn PolAcceptance,
        header: &BlockHeader,
        block: BlockHash,
        base: Option<ExpertVersion>,
        payload: &[u8],
    ) -> Result<()> {
        let expert = header.meta.expert.ok_or(Error::MetaInvalid {
            block,
            kind: header.kind,
            reason: "an expert block must name its expert",
        })?;
        let candidate = ExpertCandidate {
            hash: block,
            header,
            expert,
            base,
            payload,
        };
        hook.accept_expert(self, &candidate)
            .map_err(|rejection| Error::PolRejected {
                block,
                reason: rejection.reason,
            })
    }

    /// Commits one block's batch, then advances the in-memory state to match.
    fn commit(
        &self,
        writer: &mut MutexGuard<'_, Writer>,
        header: &BlockHeader,
        block: BlockHash,
        placement: Placement,
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
        );
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
        tracing::debug!(seq, payload_bytes = placement.len, "block appended");
        Ok(block)
    }
}
