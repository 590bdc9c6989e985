//! The web page: plain HTML, CSS and JavaScript compiled into the binary (no build step, no
//! files to deploy beside the node).

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::Error;

/// The page's files: name, content type, bytes.
const ASSETS: [(&str, &str, &str); 3] = [
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/app.js"),
    ),
    (
        "blake3.js",
        "text/javascript; charset=utf-8",
        include_str!("../static/blake3.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../static/style.css"),
    ),
];

const INDEX_HTML: &str = include_str!("../static/index.html");

fn with_headers(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The page talks only to the node that served it.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// The web page.
#[utoipa::path(get, path = "/", tag = "page",
    responses((status = 200, description = "The web page", content_type = "text/html")))]
pub(crate) async fn index() -> Response {
    with_headers(INDEX_HTML, "text/html; charset=utf-8")
}

/// A file of the web page (`app.js`, `blake3.js`, `style.css`).
#[utoipa::path(get, path = "/assets/{file}", tag = "page",
    params(("file" = String, Path, description = "File name")),
    responses((status = 200, description = "The file"), (status = 404, description = "not_found")))]
pub(crate) async fn asset(Path(file): Path<String>) -> Result<Response, Error> {
    ASSETS
        .iter()
        .find(|(name, _, _)| *name == file)
        .map(|(_, content_type, body)| with_headers(body, content_type))
        .ok_or(Error::NotFound {
            path: format!("/assets/{file}"),
        })
}
