//! Bad input answers JSON errors with stable codes.

use crate::support::{Node, check_refused, into_json};

#[tokio::test]
async fn malformed_and_oversized_bodies_and_unknown_routes() {
    let node =
        Node::start_with(|config| config.api.body_bytes_max = blyan_node_core::API_BODY_BYTES_MIN)
            .await;
    let malformed = node
        .http
        .post(node.url("/auth/verify"))
        .header("content-type", "application/json")
        .body("{\"message\": ")
        .send()
        .await
        .unwrap();
    check_refused(&into_json(malformed).await, 400, "malformed_json");

    let missing_field = node
        .http
        .post(node.url("/auth/verify"))
        .json(&serde_json::json!({ "message": "m" }))
        .send()
        .await
        .unwrap();
    check_refused(&into_json(missing_field).await, 400, "malformed_json");

    let limit = usize::try_from(blyan_node_core::API_BODY_BYTES_MIN).unwrap();
    let oversized = serde_json::json!({ "message": "x".repeat(limit), "signature": "0x" });
    let response = node
        .http
        .post(node.url("/auth/verify"))
        .json(&oversized)
        .send()
        .await
        .unwrap();
    check_refused(&into_json(response).await, 413, "body_too_large");

    check_refused(&node.get("/no/such/route", None).await, 404, "not_found");
    let wrong_method = node.http.delete(node.url("/health")).send().await.unwrap();
    check_refused(&into_json(wrong_method).await, 405, "method_not_allowed");
}
