//! What `GET /pol/status` and `GET /pol/claims/{hash}` show: the rules, the validators, and each
//! claim with its candidates, votes, certificate and payments, read from the chain.

use std::collections::BTreeMap;
use std::sync::Arc;

use blyan_api_types::{
    PolCandidate, PolCertificateInfo, PolClaimDetail, PolClaimInfo, PolEvalInfo, PolHiddenInfo,
    PolLosses, PolModelBlocks, PolPaymentInfo, PolQaInfo, PolStatus, PolValidatorInfo, PolVoteInfo,
};
use blyan_chain::{BlockHash, BlockKind, ChainStore};
use blyan_ledger::Tokenomics;
use blyan_pol::{
    BondAction, ClaimState, Losses, ModelBlocks, Payment, PolParams, QaBook, QaStatus, Settlement,
    all_claims, eval_seed, now_ms, params_after, scan_records, settlement, slashed_validators,
};

use crate::datasets::{node_gate_view, with_credit};
use crate::node::{Node, blocking};
use crate::{Error, Result};

fn losses(losses: &Losses) -> PolLosses {
    PolLosses {
        base: losses.base,
        candidate: losses.candidate,
        delta_bps: losses.delta_bps(),
    }
}

fn payment(tokenomics: &Tokenomics, payment: &Payment) -> PolPaymentInfo {
    let (kind, key, to, amount) = match payment {
        Payment::Learning {
            key,
            to,
            improvement_bps,
        } => (
            "learning",
            key,
            to,
            tokenomics.learning_reward(*improvement_bps),
        ),
        Payment::Validation { key, to, samples } => (
            "validation",
            key,
            to,
            tokenomics.validation_reward(*samples),
        ),
        Payment::Data { key, to, samples } => ("data", key, to, tokenomics.data_reward(*samples)),
    };
    PolPaymentInfo {
        kind: kind.to_owned(),
        to: to.to_string(),
        amount: amount.map_or_else(
            |error| format!("unpayable: {error}"),
            |amount| amount.to_string(),
        ),
        key: key.clone(),
    }
}

/// How hidden-QA commits stand now: the book and the epoch length.
struct QaNow<'a> {
    book: &'a QaBook,
    epoch_ms: u64,
    now_ms: u64,
}

impl QaNow<'_> {
    fn status(&self, commit: &BlockHash) -> QaStatus {
        self.book.commit(commit).map_or(QaStatus::Open, |state| {
            state.status(self.now_ms, self.epoch_ms)
        })
    }

    fn infos(&self) -> Vec<PolQaInfo> {
        let mut infos: Vec<PolQaInfo> = self
            .book
            .commits()
            .map(|state| PolQaInfo {
                commit: state.block,
                validator: state.author.to_string(),
                epoch: state.commit.epoch,
                commitment: state.commit.commitment.clone(),
                status: state.status(self.now_ms, self.epoch_ms).name().to_owned(),
                reveal: state.reveal.as_ref().map(|reveal| reveal.block),
                documents: state.reveal.as_ref().map_or(0, |reveal| reveal.documents),
                bytes: state.reveal.as_ref().map_or(0, |reveal| reveal.bytes),
            })
            .collect();
        infos.sort_by(|a, b| b.epoch.cmp(&a.epoch).then(a.validator.cmp(&b.validator)));
        infos
    }
}

fn claim_info(
    chain: &ChainStore,
    tokenomics: &Tokenomics,
    state: &ClaimState,
    settled: Option<&Settlement>,
    qa: &QaNow<'_>,
) -> Result<PolClaimInfo> {
    let mut candidates = Vec::new();
    for block in &state.claim.candidates {
        let header = chain.header(block).map_err(Error::ChainFailed)?;
        let candidate = chain.is_candidate(block).map_err(Error::ChainFailed)?;
        candidates.push(PolCandidate {
            block: *block,
            kind: header
                .as_ref()
                .map_or("missing".to_owned(), |header| header.kind.to_string()),
            expert: header
                .as_ref()
                .filter(|header| header.kind == BlockKind::Expert)
                .and_then(|header| header.meta.expert)
                .map(|expert| expert.to_string()),
            version: header.as_ref().map_or(0, |header| header.meta.version),
            candidate,
        });
    }
    let certificate = state
        .certificate
        .as_ref()
        .map(|(block, certificate)| PolCertificateInfo {
            block: block.hash,
            outcome: certificate.outcome.name().to_owned(),
            votes: certificate.votes.clone(),
            improvement_bps: settled.and_then(|plan| plan.improvement_bps),
            bond: match settled.map(|plan| plan.bond) {
                Some(BondAction::Refund) => "refund",
                _ => "burn",
            }
            .to_owned(),
            payments: settled
                .map(|plan| {
                    plan.payments
                        .iter()
                        .map(|paid| payment(tokenomics, paid))
                        .collect()
                })
                .unwrap_or_default(),
        });
    Ok(PolClaimInfo {
        claim: state.hash(),
        author: state.block.author.to_string(),
        height: state.block.height,
        status: state.status().name().to_owned(),
        candidates,
        base_model: state.claim.base_model,
        claimed: losses(&state.claim.claimed),
        data_commitment: state.claim.data_commitment.clone(),
        data_blocks: state.claim.data_blocks.len(),
        beacon: state.beacon.as_ref().map(|beacon| beacon.hash),
        seed: state
            .beacon
            .as_ref()
            .map(|beacon| hex::encode(eval_seed(state.hash(), beacon.hash))),
        votes: state
            .votes
            .iter()
            .map(|(block, vote)| PolVoteInfo {
                block: block.hash,
                validator: block.author.to_string(),
                verdict: vote.verdict.name().to_owned(),
                losses: losses(&vote.losses),
                detail: vote.detail.clone(),
                hidden: vote.hidden.map(|hidden| PolHiddenInfo {
                    commit: hidden.commit,
                    losses: losses(&hidden.losses),
                    status: qa.status(&hidden.commit).name().to_owned(),
                }),
            })
            .collect(),
        certificate,
    })
}

fn model_blocks(served: &ModelBlocks) -> PolModelBlocks {
    PolModelBlocks {
        meta: served.meta,
        experts: served
            .experts
            .iter()
            .map(|(expert, block)| (expert.to_string(), *block))
            .collect(),
    }
}

fn eval_info(params: Option<&PolParams>) -> Option<PolEvalInfo> {
    params.map(|params| PolEvalInfo {
        pool: params.eval.pool.clone(),
        windows: params.eval.windows,
        positions: params.eval.positions,
    })
}

fn pol_error(what: &'static str) -> impl Fn(blyan_pol::PolError) -> Error {
    move |source| Error::Pol {
        what,
        source: Box::new(source),
    }
}

fn settlements(
    node: &Node,
    chain: &ChainStore,
    params: &PolParams,
    records: &[blyan_pol::RecordBlock],
) -> Result<BTreeMap<BlockHash, Settlement>> {
    let view = node_gate_view(node, chain)?;
    let mut plans = BTreeMap::new();
    for record in records {
        if matches!(record.record, blyan_pol::PolRecord::Certificate(_)) {
            let plan = with_credit(view.as_ref(), |credit| {
                settlement(chain, params, record, records, credit)
            })
            .map_err(pol_error("settling"))?;
            plans.insert(plan.claim, plan);
        }
    }
    Ok(plans)
}

impl Node {
    /// `GET /pol/status`: the rules, the validators and every claim, newest first.
    pub async fn pol_status(self: &Arc<Self>) -> Result<PolStatus> {
        let chain = self.chain().cloned().ok_or(Error::ChainUnavailable)?;
        let node = Arc::clone(self);
        blocking("reading proof of learning", move || {
            let context = node.pol();
            let records = if context.is_some() {
                scan_records(&chain, 1).map_err(pol_error("reading records"))?
            } else {
                Vec::new()
            };
            // The set in force: the configured one, or the last approved on the chain.
            let current = context.map(|context| params_after(&context.params, &records));
            let params = current.as_ref();
            let tokenomics = match node.ledger() {
                Some(ledger) => blyan_ledger::Ledger::tokenomics(ledger.as_ref()).clone(),
                None => Tokenomics::shipped().map_err(Error::LedgerOpen)?,
            };
            let mut claims = Vec::new();
            let mut slashed = Default::default();
            let book = QaBook::from_records(&records);
            let qa = QaNow {
                book: &book,
                epoch_ms: params.map_or(0, |params| params.qa_epoch_ms),
                now_ms: now_ms(),
            };
            if params.is_some() {
                slashed = slashed_validators(&records);
                let plans = settlements(
                    &node,
                    &chain,
                    &node.pol().expect("checked").params,
                    &records,
                )?;
                for state in all_claims(&chain)
                    .map_err(pol_error("reading claims"))?
                    .iter()
                    .rev()
                {
                    claims.push(claim_info(
                        &chain,
                        &tokenomics,
                        state,
                        plans.get(&state.hash()),
                        &qa,
                    )?);
                }
            }
            let config = &node.config().pol;
            let served = ModelBlocks::served(&chain)
                .ok()
                .map(|served| model_blocks(&served));
            Ok(PolStatus {
                mode: serde_json::to_value(config.mode)
                    .ok()
                    .and_then(|value| value.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                threshold_bps: config.threshold_bps(),
                loss_tolerance_micros: config.tolerance_micros(),
                expiry_blocks: config.expiry_blocks,
                eval: eval_info(params),
                node_address: context.map(|context| context.key.address().to_string()),
                node_validates: context.is_some_and(|context| {
                    params.is_some_and(|params| params.stake_of(context.key.address()) > 0)
                }) && config.validator,
                candidate_bond: tokenomics.pol.candidate_bond.to_string(),
                validators: params
                    .map(|params| {
                        params
                            .validators
                            .iter()
                            .map(|validator| PolValidatorInfo {
                                address: validator.address.to_string(),
                                stake: validator.stake,
                                slashed: slashed.contains(&validator.address),
                            })
                            .collect()
                    })
                    .unwrap_or_default(),
                served,
                claims,
                qa_epoch_ms: qa.epoch_ms,
                qa: qa.infos(),
            })
        })
        .await?
    }

    /// `GET /pol/claims/{hash}`: one claim and the served model a vote evaluates against;
    /// `None` when `claim` is not a claim.
    pub async fn pol_claim(self: &Arc<Self>, claim: BlockHash) -> Result<Option<PolClaimDetail>> {
        let chain = self.chain().cloned().ok_or(Error::ChainUnavailable)?;
        let node = Arc::clone(self);
        blocking("reading a claim", move || {
            let Some(state) =
                ClaimState::read(&chain, claim).map_err(pol_error("reading a claim"))?
            else {
                return Ok(None);
            };
            let params = node.pol().map(|context| &context.params);
            let tokenomics = match node.ledger() {
                Some(ledger) => blyan_ledger::Ledger::tokenomics(ledger.as_ref()).clone(),
                None => Tokenomics::shipped().map_err(Error::LedgerOpen)?,
            };
            // Chain D's records are read only when a settlement or a hidden set needs them.
            let needs_records = state.certificate.is_some()
                || state.votes.iter().any(|(_, vote)| vote.hidden.is_some());
            let records = if needs_records {
                scan_records(&chain, 1).map_err(pol_error("reading records"))?
            } else {
                Vec::new()
            };
            let book = QaBook::from_records(&records);
            let qa = QaNow {
                book: &book,
                epoch_ms: params.map_or(0, |params| params.qa_epoch_ms),
                now_ms: now_ms(),
            };
            let plan = match (&state.certificate, params) {
                (Some((block, _)), Some(params)) => {
                    let view = node_gate_view(&node, &chain)?;
                    Some(
                        with_credit(view.as_ref(), |credit| {
                            settlement(&chain, params, block, &records, credit)
                        })
                        .map_err(pol_error("settling"))?,
                    )
                }
                _ => None,
            };
            let served =
                ModelBlocks::served(&chain).map_err(pol_error("reading the served model"))?;
            Ok(Some(PolClaimDetail {
                claim: claim_info(&chain, &tokenomics, &state, plan.as_ref(), &qa)?,
                served: model_blocks(&served),
                eval: eval_info(params),
            }))
        })
        .await?
    }
}
