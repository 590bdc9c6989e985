//! The OpenAPI document and the router agree, both ways, and every documented route answers.

use std::collections::BTreeSet;

use crate::support::Node;

fn documented(document: &serde_json::Value) -> BTreeSet<(String, String)> {
    let mut operations = BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths object") {
        for method in ["get", "post", "put", "delete", "patch"] {
            if item.get(method).is_some() {
                operations.insert((method.to_owned(), path.clone()));
            }
        }
    }
    operations
}

/// A concrete URL for a route template.
fn sample(path: &str) -> String {
    path.replace("{file}", "app.js")
        .replace("{id}", "0000000000000000")
        .replace("{chain}", "A")
        .replace("{hash}", &"0".repeat(64))
}

#[tokio::test]
async fn every_route_is_documented_and_every_documented_route_is_served() {
    let node = Node::start().await;
    let (status, document) = node.get("/openapi.json", None).await;
    assert_eq!(status, 200);
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    let documented = documented(&document);
    let served: BTreeSet<(String, String)> = blyan_api::api_routes()
        .table()
        .iter()
        .map(|route| (route.method.to_owned(), route.path.to_owned()))
        .collect();
    let undocumented: Vec<_> = served.difference(&documented).collect();
    let unserved: Vec<_> = documented.difference(&served).collect();
    assert!(
        undocumented.is_empty(),
        "served but not documented: {undocumented:?}"
    );
    assert!(
        unserved.is_empty(),
        "documented but not served: {unserved:?}"
    );

    // The table is the real router: each route answers with something other than the
    // router's own "no route" or "method not allowed".
    for (method, path) in &served {
        let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
        let response = node
            .http
            .request(method.clone(), node.url(&sample(path)))
            .header("content-type", "application/json")
            .body("{}")
            .send()
            .await
            .unwrap();
        let status = response.status().as_u16();
        let body = response.text().await.unwrap();
        assert_ne!(status, 405, "{method} {path}: {body}");
        assert!(
            !body.contains("no route"),
            "{method} {path}: {status} {body}"
        );
    }
}
