//! The chat endpoints: `/chat` (JSON), `/chat/stream` (Server-Sent Events) and the
//! OpenAI-compatible `/v1/chat/completions` and `/v1/models`.
//!
//! Each is a thin wrapper over the node's chat session (`blyan_node_core::Node::plan_chat` →
//! `ChatPlan::start`): the caller's rate limits, a place in the bounded generation pool
//! (`api.generations_concurrent_max`, of which free chats take at most
//! `api.free_tier.generations_concurrent_max`, else 503 `generations_busy`) and, for anonymous callers,
//! the free tier's per-client quota and the node's hourly free-token budget are checked here,
//! between planning (nothing held yet) and starting (the payment hold). The chat runs in a `chat` span under the request's `http_request` span, so its log
//! lines carry both the request id and the chat id.
//!
//! The streaming routes pull each event from the run ([`ChatRun::next_event`]) only when the
//! connection asks for the next one, so the deltas a disconnected client is charged for are the
//! ones handed to its connection.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Instant;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use blyan_api_types::{ChatDone, ChatRequest, CompletionRequest, MODEL_ID};
use blyan_node_core::{ChatEvent, ChatRun, Payer};
use futures::Stream;
use serde::Serialize;
use serde_json::json;

use crate::auth::now_unix_seconds;
use crate::extract::{ApiJson, Caller, rate_limit};
use crate::server::AppState;
use crate::{Error, Result};

/// Seconds a chat refused for a full generation pool is told to wait: about one short answer.
const GENERATIONS_BUSY_RETRY_SECONDS: u64 = 2;

/// Checks the caller's limits, plans the chat, takes a place in the generation pool, the
/// free-tier quota or the payment hold, and starts it.
async fn start_chat(
    state: &Arc<AppState>,
    caller: &Caller,
    request: &ChatRequest,
) -> Result<ChatRun> {
    rate_limit(state, caller)?;
    let payer = match caller.wallet() {
        Some(wallet) => Payer::Wallet(*wallet),
        None => Payer::Free,
    };
    let mut plan = state.node().plan_chat(payer, request)?;
    // The place first: it costs nothing to give back, while quota taken stays taken. Free
    // chats take at most their share of the pool; the rest is kept for paid ones.
    let api = &state.config().api;
    let gate = state.node().inference_gate();
    let (place, tier, generations) = match payer {
        Payer::Free => {
            let free = api.free_tier.generations_concurrent_max;
            let place =
                gate.try_enter_free(u64::from(api.generations_concurrent_max), u64::from(free));
            // Refused while the whole pool is full: it is the whole pool that is busy.
            match place {
                None if gate.in_flight() < u64::from(api.generations_concurrent_max) => {
                    (None, "free", free)
                }
                place => (place, "paid and free", api.generations_concurrent_max),
            }
        }
        _ => {
            let all = api.generations_concurrent_max;
            (gate.try_enter(u64::from(all)), "paid and free", all)
        }
    };
    let place = place.ok_or(Error::GenerationsBusy {
        tier,
        generations,
        retry_after_seconds: GENERATIONS_BUSY_RETRY_SECONDS,
    })?;
    plan.admit(place);
    if payer == Payer::Free {
        let now = Instant::now();
        state
            .limits
            .free_tier
            .check(&caller.bucket(), now)
            .map_err(|retry_after_seconds| Error::FreeTierExhausted {
                scope: "client",
                retry_after_seconds,
            })?;
        // After the client's own quota, so that a client past it cannot spend the node's.
        let tokens = u64::try_from(plan.prompt_tokens())
            .unwrap_or(u64::MAX)
            .saturating_add(u64::from(plan.max_tokens()));
        state
            .limits
            .free_tier_tokens
            .take(&(), tokens, now)
            .map_err(|retry_after_seconds| Error::FreeTierExhausted {
                scope: "node",
                retry_after_seconds,
            })?;
    }
    Ok(plan
        .start(Arc::clone(state.node()), state.chat_observer())
        .await?)
}

/// The error event body of a chat that failed after it started.
fn failure_body(error: blyan_node_core::ChatError) -> blyan_api_types::ErrorBody {
    Error::from(error).body()
}

/// One chat answered at once (no streaming).
#[utoipa::path(post, path = "/chat", tag = "chat", request_body = ChatRequest,
    security((), ("bearer" = [])),
    responses((status = 200, body = ChatDone),
        (status = 400, description = "invalid_request, prompt_too_long, malformed_json"),
        (status = 402, description = "insufficient_balance, payment_refused"),
        (status = 429, description = "rate_limited, free_tier_exhausted"),
        (status = 503, description = "model_unavailable, ledger_unavailable, generations_busy")))]
pub(crate) async fn chat(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(request): ApiJson<ChatRequest>,
) -> Result<axum::Json<ChatDone>> {
    let run = start_chat(&state, &caller, &request).await?;
    Ok(axum::Json(run.finish().await?))
}

/// An unnamed event whose data is `value` as JSON.
fn json_event_data(value: &impl Serialize) -> Event {
    Event::default()
        .json_data(value)
        .unwrap_or_else(|_| Event::default().data("{}"))
}

fn json_event(name: &str, value: &impl Serialize) -> Event {
    Event::default()
        .event(name)
        .json_data(value)
        .unwrap_or_else(|_| Event::default().event(name).data("{}"))
}

fn chat_events(run: ChatRun) -> impl Stream<Item = std::result::Result<Event, Infallible>> {
    futures::stream::unfold(Some(run), |run| async move {
        let mut run = run?;
        let event = run.next_event().await?;
        let (event, more) = match event {
            ChatEvent::Delta { text, .. } => (json_event("delta", &json!({ "text": text })), true),
            ChatEvent::Done(done) => (json_event("done", &*done), false),
            ChatEvent::Failed(error) => (json_event("error", &failure_body(error)), false),
            // `ChatEvent` is non-exhaustive; an event this route does not know ends nothing.
            _ => (Event::default().comment("unknown event"), true),
        };
        Some((Ok(event), more.then_some(run)))
    })
}

/// One chat streamed as Server-Sent Events: `delta` events (`{"text"}`), then one `done` event
/// (a [`ChatDone`]: usage, experts used per layer, cost; `finish_reason` is `stop`, `length` or
/// `time_limit`) or one `error` event. Closing the connection stops the generation; a paid
/// chat is then charged its prompt and the tokens already sent, and the rest of the hold is
/// released.
#[utoipa::path(post, path = "/chat/stream", tag = "chat", request_body = ChatRequest,
    security((), ("bearer" = [])),
    responses((status = 200, description = "text/event-stream of delta, done, error events", content_type = "text/event-stream"),
        (status = 400, description = "invalid_request, prompt_too_long, malformed_json"),
        (status = 402, description = "insufficient_balance, payment_refused"),
        (status = 429, description = "rate_limited, free_tier_exhausted"),
        (status = 503, description = "model_unavailable, ledger_unavailable, generations_busy")))]
pub(crate) async fn chat_stream(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(request): ApiJson<ChatRequest>,
) -> Result<Response> {
    let run = start_chat(&state, &caller, &request).await?;
    Ok(Sse::new(chat_events(run))
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn openai_finish_reason(reason: &str) -> &'static str {
    // OpenAI has no `cancelled`; a cancelled request never reaches a final chunk anyway. An
    // answer cut by the time limit is truncated, as by the token budget.
    match reason {
        "length" | "time_limit" => "length",
        _ => "stop",
    }
}

fn completion_id(id: &str) -> String {
    format!("chatcmpl-{id}")
}

fn completion_body(done: &ChatDone, created: u64) -> serde_json::Value {
    json!({
        "id": completion_id(&done.id),
        "object": "chat.completion",
        "created": created,
        "model": MODEL_ID,
        "choices": [{
            "index": 0,
            "message": { "role": "assistant", "content": done.text },
            "finish_reason": openai_finish_reason(&done.finish_reason),
            "logprobs": null,
        }],
        "usage": done.usage,
        "blyan": { "experts": done.experts, "cost": done.cost },
    })
}

fn chunk(id: &str, created: u64, delta: serde_json::Value, finish: Option<&str>) -> Event {
    let body = json!({
        "id": id,
        "object": "chat.completion.chunk",
        "created": created,
        "model": MODEL_ID,
        "choices": [{ "index": 0, "delta": delta, "finish_reason": finish, "logprobs": null }],
    });
    Event::default().data(body.to_string())
}

fn completion_chunks(
    run: ChatRun,
    stream_id: String,
    include_usage: bool,
    created: u64,
) -> impl Stream<Item = std::result::Result<Event, Infallible>> {
    let first = chunk(
        &stream_id,
        created,
        json!({ "role": "assistant", "content": "" }),
        None,
    );
    let head = futures::stream::iter([Ok(first)]);
    let body = futures::stream::unfold(Some(run), move |run| {
        let stream_id = stream_id.clone();
        async move {
            let mut run = run?;
            let event = run.next_event().await?;
            let (events, more) = match event {
                ChatEvent::Delta { text, .. } => (
                    vec![chunk(&stream_id, created, json!({ "content": text }), None)],
                    true,
                ),
                ChatEvent::Done(done) => {
                    let finish = openai_finish_reason(&done.finish_reason);
                    let mut events = vec![chunk(&stream_id, created, json!({}), Some(finish))];
                    if include_usage {
                        let usage = json!({
                            "id": stream_id,
                            "object": "chat.completion.chunk",
                            "created": created,
                            "model": MODEL_ID,
                            "choices": [],
                            "usage": done.usage,
                        });
                        events.push(Event::default().data(usage.to_string()));
                    }
                    events.push(Event::default().data("[DONE]"));
                    (events, false)
                }
                ChatEvent::Failed(error) => (
                    vec![
                        json_event_data(&failure_body(error)),
                        Event::default().data("[DONE]"),
                    ],
                    false,
                ),
                // `ChatEvent` is non-exhaustive; an event this route does not know ends nothing.
                _ => (Vec::new(), true),
            };
            Some((
                futures::stream::iter(events.into_iter().map(Ok)),
                more.then_some(run),
            ))
        }
    });
    futures::StreamExt::chain(head, futures::StreamExt::flatten(body))
}

/// OpenAI-compatible chat completions, streaming (`"stream": true`, SSE chunks ending with
/// `data: [DONE]`) or not. Authenticate with an API key as the OpenAI key, or send none (or a
/// placeholder such as `none`: anything not shaped like a Blyan credential) for the free tier.
#[utoipa::path(post, path = "/v1/chat/completions", tag = "openai", request_body = CompletionRequest,
    security((), ("bearer" = [])),
    responses((status = 200, description = "A chat.completion object, or a text/event-stream of chat.completion.chunk objects"),
        (status = 400, description = "invalid_request, prompt_too_long, malformed_json"),
        (status = 402, description = "insufficient_balance, payment_refused"),
        (status = 404, description = "unknown_model"),
        (status = 429, description = "rate_limited, free_tier_exhausted"),
        (status = 503, description = "model_unavailable, ledger_unavailable, generations_busy")))]
pub(crate) async fn completions(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    ApiJson(request): ApiJson<CompletionRequest>,
) -> Result<Response> {
    if request.n.is_some_and(|n| n != 1) {
        return Err(Error::InvalidRequest {
            field: "n".to_owned(),
            reason: "only one choice is supported".to_owned(),
        });
    }
    let include_usage = request
        .stream_options
        .as_ref()
        .is_some_and(|options| options.include_usage);
    let run = start_chat(&state, &caller, &request.to_chat_request()).await?;
    let stream_id = completion_id(run.id());
    let created = now_unix_seconds();
    if request.stream {
        Ok(
            Sse::new(completion_chunks(run, stream_id, include_usage, created))
                .keep_alive(KeepAlive::default())
                .into_response(),
        )
    } else {
        let done = run.finish().await?;
        Ok(axum::Json(completion_body(&done, created)).into_response())
    }
}

/// The models this node serves, OpenAI style.
#[utoipa::path(get, path = "/v1/models", tag = "openai",
    responses((status = 200, description = "A list object with one model")))]
pub(crate) async fn models(State(state): State<Arc<AppState>>) -> axum::Json<serde_json::Value> {
    let data: Vec<serde_json::Value> = state
        .node()
        .generator()
        .iter()
        .map(|_| json!({ "id": MODEL_ID, "object": "model", "created": 0, "owned_by": "blyan" }))
        .collect();
    axum::Json(json!({ "object": "list", "data": data }))
}
