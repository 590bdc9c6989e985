//! Inference payments: quote, authorize (hold in escrow), then capture, release or expiry.

use super::idempotency::idempotent;
use super::posting::{lock_set, post, require_funds};
use super::{BURN, ESCROW, EXPIRY_BATCH_LEN, REWARD_POOL};
use crate::account::AccountId;
use crate::amount::Amount;
use crate::clock::UnixMillis;
use crate::error::{LedgerError, Result};
use crate::payment::{Capture, Hold, HoldId, HoldStatus, Quote};
use crate::request::{
    AuthorizeRequest, CaptureRequest, IdempotencyKey, QuoteRequest, ReleaseRequest,
};
use crate::store::{Command, Ctx, NewHold, NewQuote, StoreTx};
use crate::transaction::{Transaction, TxKind};

impl Command for QuoteRequest {
    type Output = Quote;

    fn span(&self) -> tracing::Span {
        tracing::info_span!(
            "ledger.quote",
            key = %self.key,
            payer = %self.payer,
            estimated_tokens = self.estimated_tokens,
            prompt_tokens = self.prompt_tokens,
        )
    }

    async fn apply<T: StoreTx>(self, tx: &mut T, ctx: &Ctx) -> Result<Quote> {
        if self.estimated_tokens == 0 {
            return Err(LedgerError::Zero {
                field: "estimated_tokens",
            });
        }
        let amount = ctx
            .tokenomics
            .chat_fee(self.prompt_tokens, self.estimated_tokens)?;
        let hold_amount = ctx.tokenomics.hold_amount(amount)?;
        idempotent!(tx, ctx, &self.key, "quote", &self, |now| {
            let new = NewQuote {
                payer: self.payer,
                estimated_tokens: self.estimated_tokens,
                amount,
                hold_amount,
                created_at_ms: now,
                expires_at_ms: now + ctx.tokenomics.quote_ttl_ms(),
            };
            let id = tx.insert_quote(&new).await?;
            Quote {
                id,
                payer: new.payer,
                estimated_tokens: new.estimated_tokens,
                amount,
                hold_amount,
                created_at_ms: new.created_at_ms,
                expires_at_ms: new.expires_at_ms,
            }
        })
    }
}

impl Command for AuthorizeRequest {
    type Output = Hold;

    fn span(&self) -> tracing::Span {
        tracing::info_span!("ledger.authorize", key = %self.key, quote = %self.quote)
    }

    async fn apply<T: StoreTx>(self, tx: &mut T, ctx: &Ctx) -> Result<Hold> {
        idempotent!(tx, ctx, &self.key, "authorize", &self, |now| {
            let Some((quote, hold)) = tx.quote(self.quote, true).await? else {
                return Err(LedgerError::UnknownQuote { quote: self.quote });
            };
            if let Some(hold) = hold {
                return Err(LedgerError::QuoteAlreadyAuthorized {
                    quote: quote.id,
                    hold,
                });
            }
            if now >= quote.expires_at_ms {
                return Err(LedgerError::QuoteExpired {
                    quote: quote.id,
                    expired_at_ms: quote.expires_at_ms,
                });
            }
            let payer = AccountId::User(quote.payer);
            let (lock, create) = lock_set(&[payer, ESCROW], &[]);
            let mut balances = tx.lock_accounts(&lock, &create, now).await?;
            require_funds(&balances, payer, quote.hold_amount)?;
            let amount = quote.hold_amount.as_i64();
            let memo = format!("hold for {}", quote.id);
            let deltas = [(payer, -amount), (ESCROW, amount)];
            let authorize_tx = post(
                tx,
                &mut balances,
                TxKind::Authorize,
                Some(&self.key),
                &memo,
                now,
                &deltas,
            )
            .await?
            .id;
            let new = NewHold {
                quote: quote.id,
                payer: quote.payer,
                quoted: quote.amount,
                amount: quote.hold_amount,
                created_at_ms: now,
                expires_at_ms: now + ctx.tokenomics.hold_ttl_ms(),
                authorize_tx,
            };
            let id = tx.insert_hold(&new).await?;
            Hold {
                id,
                quote: new.quote,
                payer: new.payer,
                quoted: new.quoted,
                amount: new.amount,
                status: HoldStatus::Authorized,
                created_at_ms: new.created_at_ms,
                expires_at_ms: new.expires_at_ms,
                authorize_tx,
                settle_tx: None,
            }
        })
    }
}

/// The authorized hold `id`, locked.
async fn authorized_hold<T: StoreTx>(tx: &mut T, id: HoldId) -> Result<Hold> {
    let hold = tx
        .hold(id, true)
        .await?
        .ok_or(LedgerError::UnknownHold { hold: id })?;
    if hold.status != HoldStatus::Authorized {
        return Err(LedgerError::HoldNotAuthorized {
            hold: id,
            status: hold.status,
        });
    }
    Ok(hold)
}

/// How a hold is settled: the transaction kind and hold status to record, and how much of it
/// is charged and to whom the charge (less the burn) is paid.
struct Settlement<'a> {
    kind: TxKind,
    status: HoldStatus,
    key: Option<&'a IdempotencyKey>,
    charge: Amount,
    paid_to: AccountId,
}

impl Settlement<'_> {
    /// Everything back to the payer.
    fn refund(kind: TxKind, status: HoldStatus, key: Option<&IdempotencyKey>) -> Settlement<'_> {
        Settlement {
            kind,
            status,
            key,
            charge: Amount::ZERO,
            paid_to: REWARD_POOL,
        }
    }
}

/// Moves `hold.amount` out of escrow: the charge split into burn and `paid_to`, the rest back
/// to the payer; marks the hold with the settlement's status. Returns the transaction and the
/// amount burned.
async fn settle<T: StoreTx>(
    tx: &mut T,
    ctx: &Ctx,
    hold: &mut Hold,
    settlement: Settlement<'_>,
    now: UnixMillis,
) -> Result<(Transaction, Amount)> {
    let Settlement {
        kind,
        status,
        key,
        charge,
        paid_to,
    } = settlement;
    let payer = AccountId::User(hold.payer);
    let burned = ctx.tokenomics.burn_share(charge);
    let served = charge.checked_sub(burned).expect("burn share <= charge");
    let released = hold
        .amount
        .checked_sub(charge)
        .expect("charge <= hold amount, checked");
    let (lock, create) = lock_set(&[payer, ESCROW, BURN, paid_to], &[paid_to]);
    let mut balances = tx.lock_accounts(&lock, &create, now).await?;
    if balances.get(&ESCROW).copied().unwrap_or(0) < hold.amount.as_i64() {
        return Err(LedgerError::Integrity {
            what: format!("escrow lacks {}", hold.id),
        });
    }
    let deltas = [
        (ESCROW, -hold.amount.as_i64()),
        (BURN, burned.as_i64()),
        (paid_to, served.as_i64()),
        (payer, released.as_i64()),
    ];
    let memo = format!("{} of {}", status.as_str(), hold.id);
    let transaction = post(tx, &mut balances, kind, key, &memo, now, &deltas).await?;
    tx.settle_hold(hold.id, status, transaction.id).await?;
    hold.status = status;
    hold.settle_tx = Some(transaction.id);
    Ok((transaction, burned))
}

impl Command for CaptureRequest {
    type Output = Capture;

    fn span(&self) -> tracing::Span {
        tracing::info_span!(
            "ledger.capture",
            key = %self.key,
            hold = %self.hold,
            actual_tokens = self.actual_tokens,
            prompt_tokens = self.prompt_tokens,
            server = self.server.map(tracing::field::display),
        )
    }

    async fn apply<T: StoreTx>(self, tx: &mut T, ctx: &Ctx) -> Result<Capture> {
        let charged = ctx
            .tokenomics
            .chat_fee(self.prompt_tokens, self.actual_tokens)?;
        idempotent!(tx, ctx, &self.key, "capture", &self, |now| {
            let mut hold = authorized_hold(tx, self.hold).await?;
            if now >= hold.expires_at_ms {
                return Err(LedgerError::HoldExpired {
                    hold: hold.id,
                    expired_at_ms: hold.expires_at_ms,
                });
            }
            if charged > hold.amount {
                return Err(LedgerError::CaptureAboveTolerance {
                    hold: hold.id,
                    charge: charged,
                    max: hold.amount,
                });
            }
            let paid_to = self.server.map_or(REWARD_POOL, AccountId::User);
            let settlement = Settlement {
                kind: TxKind::Capture,
                status: HoldStatus::Captured,
                key: Some(&self.key),
                charge: charged,
                paid_to,
            };
            let (transaction, burned) = settle(tx, ctx, &mut hold, settlement, now).await?;
            let released = hold.amount.checked_sub(charged).expect("checked above");
            Capture {
                served: charged.checked_sub(burned).expect("burn share <= charge"),
                hold,
                charged,
                burned,
                paid_to,
                released,
                transaction: transaction.id,
            }
        })
    }
}

impl Command for ReleaseRequest {
    type Output = Hold;

    fn span(&self) -> tracing::Span {
        tracing::info_span!("ledger.release", key = %self.key, hold = %self.hold)
    }

    async fn apply<T: StoreTx>(self, tx: &mut T, ctx: &Ctx) -> Result<Hold> {
        idempotent!(tx, ctx, &self.key, "release", &self, |now| {
            let mut hold = authorized_hold(tx, self.hold).await?;
            let settlement =
                Settlement::refund(TxKind::Release, HoldStatus::Released, Some(&self.key));
            settle(tx, ctx, &mut hold, settlement, now).await?;
            hold
        })
    }
}

/// Releases up to `EXPIRY_BATCH_LEN` expired holds back to their payers.
#[derive(Clone)]
pub(crate) struct ExpireHolds;

impl Command for ExpireHolds {
    type Output = Vec<HoldId>;

    fn span(&self) -> tracing::Span {
        tracing::info_span!("ledger.expire_holds")
    }

    async fn apply<T: StoreTx>(self, tx: &mut T, ctx: &Ctx) -> Result<Vec<HoldId>> {
        let now = ctx.clock.now_ms();
        let stale = tx.lock_stale_holds(now, EXPIRY_BATCH_LEN).await?;
        if stale.is_empty() {
            return Ok(Vec::new());
        }
        // Every account the batch touches, locked at once in ascending order: settling the
        // holds one by one would take payers' locks out of order and could deadlock with a
        // concurrent transfer.
        let accounts: Vec<AccountId> = stale
            .iter()
            .map(|hold| AccountId::User(hold.payer))
            .chain([ESCROW, BURN, REWARD_POOL])
            .collect();
        let (lock, create) = lock_set(&accounts, &[]);
        tx.lock_accounts(&lock, &create, now).await?;
        let mut expired = Vec::with_capacity(stale.len());
        for mut hold in stale {
            debug_assert!(hold.status == HoldStatus::Authorized && hold.expires_at_ms <= now);
            let settlement = Settlement::refund(TxKind::Expiry, HoldStatus::Expired, None);
            settle(tx, ctx, &mut hold, settlement, now).await?;
            expired.push(hold.id);
        }
        Ok(expired)
    }
}
