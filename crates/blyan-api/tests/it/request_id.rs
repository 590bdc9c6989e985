//! Request ids: every answer carries `x-request-id`, the client's own when it sent a plausible
//! one, else a fresh one per request.

use crate::support::Node;

async fn request_id_of(node: &Node, sent: Option<&str>) -> String {
    let mut request = node.http.get(node.url("/health"));
    if let Some(id) = sent {
        request = request.header("x-request-id", id);
    }
    let response = request.send().await.unwrap();
    assert_eq!(response.status(), 200);
    response.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_client_request_id_is_echoed_and_a_missing_one_generated() {
    let node = Node::start().await;
    assert_eq!(
        request_id_of(&node, Some("trace-42.a:b_c")).await,
        "trace-42.a:b_c"
    );
    let first = request_id_of(&node, None).await;
    let second = request_id_of(&node, None).await;
    assert!(!first.is_empty() && first.len() <= blyan_api::REQUEST_ID_CHARS_MAX);
    assert_ne!(first, second, "each request gets its own id");
    // An implausible id (too long, or with characters a log line should not carry) is
    // replaced rather than echoed.
    let too_long = "a".repeat(blyan_api::REQUEST_ID_CHARS_MAX + 1);
    let replaced = request_id_of(&node, Some(&too_long)).await;
    assert_ne!(replaced, too_long);
    assert_ne!(request_id_of(&node, Some("two words")).await, "two words");
    // Refusals and unknown routes carry one too.
    let response = node
        .http
        .get(node.url("/no-such-route"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 404);
    assert!(response.headers().contains_key("x-request-id"));
}
