//! Request ids: every request runs in an `http_request` span carrying one, so the log lines of
//! one request (its chat, its block submission) can be found together, and the response echoes
//! it in `x-request-id` so a client can quote it.
//!
//! A client's own `x-request-id` is kept when it is a plausible id (1 to
//! [`REQUEST_ID_CHARS_MAX`] characters of `[A-Za-z0-9._:-]`), so ids can follow a request
//! through a proxy; anything else is replaced by a generated one. The id is only a label: the
//! ledger's idempotency keys use the chat's own random id, never this caller-chosen one.

use axum::extract::Request;
use axum::http::HeaderValue;
use axum::middleware::Next;
use axum::response::Response;
use rand::RngCore as _;
use tracing::Instrument as _;

/// The header a request id travels in, both ways.
pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Longest request id taken from a client.
pub const REQUEST_ID_CHARS_MAX: usize = 128;

/// Random bytes of a generated request id (hex in the header).
const REQUEST_ID_RANDOM_BYTES: usize = 16;

/// A request's id, in the request's extensions for handlers that want it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RequestId(pub String);

fn acceptable(id: &str) -> bool {
    (1..=REQUEST_ID_CHARS_MAX).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b':' | b'-'))
}

fn generated() -> String {
    let mut bytes = [0_u8; REQUEST_ID_RANDOM_BYTES];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    hex::encode(bytes)
}

/// Middleware: the request's id (kept or generated), its span, and the id echoed back.
pub(crate) async fn request_span(mut request: Request, next: Next) -> Response {
    let id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .filter(|id| acceptable(id))
        .map_or_else(generated, str::to_owned);
    let span = tracing::info_span!(
        "http_request",
        request_id = %id,
        method = %request.method(),
        path = %request.uri().path(),
    );
    request.extensions_mut().insert(RequestId(id.clone()));
    let mut response = next.run(request).instrument(span).await;
    // Only `acceptable` or hex ids get here: both are valid header values.
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID_HEADER, value);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plausible_ids_are_kept_and_others_replaced() {
        assert!(acceptable("abc-123_x.y:z"));
        assert!(acceptable(&"a".repeat(REQUEST_ID_CHARS_MAX)));
        assert!(!acceptable(&"a".repeat(REQUEST_ID_CHARS_MAX + 1)));
        assert!(!acceptable(""));
        assert!(!acceptable("has space"));
        assert!(!acceptable("new\nline"));
        let id = generated();
        assert_eq!(id.len(), 2 * REQUEST_ID_RANDOM_BYTES);
        assert!(acceptable(&id));
        assert_ne!(id, generated());
    }
}
