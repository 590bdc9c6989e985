//! Sign-In with Ethereum over real HTTP: the happy path, every refusal with its code, tokens,
//! refresh, sign-out, API keys and rate limits.

use std::time::{Duration, SystemTime};

use serde_json::json;

use crate::support::{Node, TestWallet, check_refused, into_json};

#[tokio::test]
async fn sign_in_issues_tokens_and_a_replay_is_refused() {
    let node = Node::start().await;
    let wallet = TestWallet::new(0x11);
    let message = wallet.message(&wallet.fields(&node).await);
    let signature = wallet.personal_sign(message.as_bytes());
    let (status, tokens) = wallet.verify(&node, &message, &signature).await;
    assert_eq!(status, 200, "{tokens}");
    assert_eq!(tokens["wallet"], wallet.address.as_str());
    assert_eq!(tokens["token_type"], "Bearer");
    let access = tokens["access_token"].as_str().unwrap();
    let (status, session) = node.get("/auth/session", Some(access)).await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(session["wallet"], wallet.address.as_str());
    assert_eq!(session["credential"], "access_token");

    // The same message and signature again: the nonce is spent.
    check_refused(
        &wallet.verify(&node, &message, &signature).await,
        401,
        "nonce_replayed",
    );
    // The old signature on a new message (new nonce) does not match it.
    let fresh = wallet.message(&wallet.fields(&node).await);
    check_refused(
        &wallet.verify(&node, &fresh, &signature).await,
        401,
        "bad_signature",
    );
}

#[tokio::test]
async fn each_bad_message_is_refused_with_its_code() {
    let node = Node::start().await;
    let wallet = TestWallet::new(0x12);
    let now = SystemTime::now();

    let mut fields = wallet.fields(&node).await;
    fields.domain = "evil.example".to_owned();
    fields.uri = "https://evil.example/".to_owned();
    let message = wallet.message(&fields);
    check_refused(
        &wallet
            .verify(&node, &message, &wallet.personal_sign(message.as_bytes()))
            .await,
        401,
        "siwe_domain_mismatch",
    );

    let mut fields = wallet.fields(&node).await;
    fields.expiration = Some(now - Duration::from_secs(5));
    let message = wallet.message(&fields);
    check_refused(
        &wallet
            .verify(&node, &message, &wallet.personal_sign(message.as_bytes()))
            .await,
        401,
        "siwe_expired",
    );

    let mut fields = wallet.fields(&node).await;
    fields.chain_id += 1;
    let message = wallet.message(&fields);
    check_refused(
        &wallet
            .verify(&node, &message, &wallet.personal_sign(message.as_bytes()))
            .await,
        401,
        "siwe_chain_id_mismatch",
    );

    let mut fields = wallet.fields(&node).await;
    fields.nonce = "0123456789abcdef0123456789abcdef".to_owned();
    let message = wallet.message(&fields);
    check_refused(
        &wallet
            .verify(&node, &message, &wallet.personal_sign(message.as_bytes()))
            .await,
        401,
        "nonce_unknown",
    );

    // Signed by another key than the message's address.
    let message = wallet.message(&wallet.fields(&node).await);
    let impostor = TestWallet::new(0x13);
    check_refused(
        &wallet
            .verify(&node, &message, &impostor.personal_sign(message.as_bytes()))
            .await,
        401,
        "bad_signature",
    );
    // A contract wallet's (EIP-1271) signature is longer than 65 bytes.
    let long_signature = format!("0x{}", "ab".repeat(130));
    check_refused(
        &wallet.verify(&node, &message, &long_signature).await,
        401,
        "contract_wallet_unsupported",
    );
    check_refused(
        &wallet.verify(&node, "not a siwe message", "0x00").await,
        400,
        "siwe_malformed",
    );
}

#[tokio::test]
async fn an_expired_nonce_is_refused() {
    let node = Node::start_with(|config| config.api.auth.nonce_ttl_seconds = 1).await;
    let wallet = TestWallet::new(0x14);
    let fields = wallet.fields(&node).await;
    // Wait out the nonce's one-second lifetime (a state change, not a timing assertion).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let message = wallet.message(&fields);
    check_refused(
        &wallet
            .verify(&node, &message, &wallet.personal_sign(message.as_bytes()))
            .await,
        401,
        "nonce_expired",
    );
}

#[tokio::test]
async fn refresh_rotates_and_logout_revokes() {
    let node = Node::start().await;
    let wallet = TestWallet::new(0x15);
    let tokens = wallet.sign_in(&node).await;
    let (status, refreshed) = node
        .post(
            "/auth/refresh",
            &json!({ "refresh_token": tokens.refresh_token }),
            None,
        )
        .await;
    assert_eq!(status, 200, "{refreshed}");
    assert_ne!(refreshed["refresh_token"], tokens.refresh_token.as_str());
    // The spent refresh token is refused (and signs the session out).
    check_refused(
        &node
            .post(
                "/auth/refresh",
                &json!({ "refresh_token": tokens.refresh_token }),
                None,
            )
            .await,
        401,
        "refresh_invalid",
    );
    check_refused(
        &node.get("/auth/session", Some(&tokens.access_token)).await,
        401,
        "token_revoked",
    );

    let tokens = wallet.sign_in(&node).await;
    let (status, _) = node
        .post("/auth/logout", &json!({}), Some(&tokens.access_token))
        .await;
    assert_eq!(status, 204);
    check_refused(
        &node.get("/auth/session", Some(&tokens.access_token)).await,
        401,
        "token_revoked",
    );
    check_refused(
        &node
            .post(
                "/auth/refresh",
                &json!({ "refresh_token": tokens.refresh_token }),
                None,
            )
            .await,
        401,
        "refresh_invalid",
    );
}

#[tokio::test]
async fn forged_or_missing_tokens_are_refused() {
    let node = Node::start().await;
    check_refused(&node.get("/auth/session", None).await, 401, "token_missing");
    check_refused(
        &node.get("/auth/session", Some("a.b.c")).await,
        401,
        "token_invalid",
    );
    let wallet = TestWallet::new(0x16);
    let tokens = wallet.sign_in(&node).await;
    // Flip one character of the signature.
    let mut forged = tokens.access_token.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    check_refused(
        &node.get("/auth/session", Some(&forged)).await,
        401,
        "token_invalid",
    );
    // A token from another node (another secret) is refused.
    let other = Node::start().await;
    let foreign = wallet.sign_in(&other).await;
    check_refused(
        &node.get("/auth/session", Some(&foreign.access_token)).await,
        401,
        "token_invalid",
    );
}

#[tokio::test]
async fn api_keys_are_created_shown_once_used_and_revoked() {
    let node = Node::start().await;
    let wallet = TestWallet::new(0x17);
    let tokens = wallet.sign_in(&node).await;
    let (status, created) = node
        .post(
            "/auth/api-keys",
            &json!({ "name": "batch job" }),
            Some(&tokens.access_token),
        )
        .await;
    assert_eq!(status, 201, "{created}");
    let key = created["key"].as_str().unwrap().to_owned();
    assert!(key.starts_with(blyan_api::API_KEY_PREFIX));
    let (status, session) = node.get("/auth/session", Some(&key)).await;
    assert_eq!(status, 200, "{session}");
    assert_eq!(
        (session["wallet"].as_str(), session["credential"].as_str()),
        (Some(wallet.address.as_str()), Some("api_key"))
    );
    let (status, listed) = node.get("/auth/api-keys", Some(&tokens.access_token)).await;
    assert_eq!(status, 200);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1);
    assert!(
        !listed[0].to_string().contains(&key[8..]),
        "the key is never shown again"
    );
    let id = created["id"].as_str().unwrap();
    let response = node
        .http
        .delete(node.url(&format!("/auth/api-keys/{id}")))
        .bearer_auth(&tokens.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    check_refused(
        &node.get("/auth/session", Some(&key)).await,
        401,
        "api_key_invalid",
    );
    // Anonymous callers cannot make keys.
    check_refused(
        &node
            .post("/auth/api-keys", &json!({ "name": "x" }), None)
            .await,
        401,
        "token_missing",
    );
}

#[tokio::test]
async fn sign_in_is_rate_limited_per_ip_with_retry_after() {
    let node = Node::start_with(|config| config.api.rate_limit.per_ip_per_minute = 3).await;
    for _ in 0..3 {
        assert_eq!(node.get("/auth/nonce", None).await.0, 200);
    }
    let response = node.http.get(node.url("/auth/nonce")).send().await.unwrap();
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=20).contains(&retry_after), "{retry_after}");
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
}

#[tokio::test]
async fn the_nonce_answers_a_checksummed_address() {
    let node = Node::start().await;
    let wallet = TestWallet::new(0x18);
    let (status, nonce) = node
        .get(
            &format!("/auth/nonce?address={}", wallet.address.to_lowercase()),
            None,
        )
        .await;
    assert_eq!(status, 200, "{nonce}");
    assert_eq!(nonce["address"], wallet.address.as_str());
    assert_eq!(nonce["domain"], node.domain().as_str());
    assert_eq!(nonce["nonce"].as_str().unwrap().len(), 32);
    check_refused(
        &node.get("/auth/nonce?address=0x12", None).await,
        400,
        "invalid_request",
    );
}

#[tokio::test]
async fn a_leaked_api_key_cannot_mint_or_revoke_keys() {
    let node = Node::start().await;
    let wallet = TestWallet::new(0x19);
    let tokens = wallet.sign_in(&node).await;
    let session = Some(tokens.access_token.as_str());
    let (status, created) = node
        .post("/auth/api-keys", &json!({ "name": "bot" }), session)
        .await;
    assert_eq!(status, 201, "{created}");
    let leaked = created["key"].as_str().unwrap().to_owned();
    let (_, other) = node
        .post("/auth/api-keys", &json!({ "name": "other" }), session)
        .await;
    // The key works for what keys are for, but cannot make a successor for itself...
    assert_eq!(node.get("/auth/session", Some(&leaked)).await.0, 200);
    check_refused(
        &node
            .post(
                "/auth/api-keys",
                &json!({ "name": "backdoor" }),
                Some(&leaked),
            )
            .await,
        403,
        "session_required",
    );
    // ...nor revoke the owner's other keys (or itself).
    for id in [
        other["id"].as_str().unwrap(),
        created["id"].as_str().unwrap(),
    ] {
        let response = node
            .http
            .delete(node.url(&format!("/auth/api-keys/{id}")))
            .bearer_auth(&leaked)
            .send()
            .await
            .unwrap();
        check_refused(&into_json(response).await, 403, "session_required");
    }
    let (_, listed) = node.get("/auth/api-keys", session).await;
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    // Revoked through the session, the key is refused from its next use: nothing outlives it.
    let response = node
        .http
        .delete(node.url(&format!(
            "/auth/api-keys/{}",
            created["id"].as_str().unwrap()
        )))
        .bearer_auth(&tokens.access_token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    check_refused(
        &node.get("/auth/session", Some(&leaked)).await,
        401,
        "api_key_invalid",
    );
    // Logout ends the session and leaves the remaining key working (documented choice).
    let other_key = other["key"].as_str().unwrap();
    let (status, _) = node.post("/auth/logout", &json!({}), session).await;
    assert_eq!(status, 204);
    check_refused(
        &node.get("/auth/session", session).await,
        401,
        "token_revoked",
    );
    assert_eq!(node.get("/auth/session", Some(other_key)).await.0, 200);
}

#[tokio::test]
async fn a_token_naming_another_wallets_session_is_refused() {
    let node = Node::start().await;
    let victim = TestWallet::new(0x1a);
    let attacker = TestWallet::new(0x1b);
    let victim_tokens = victim.sign_in(&node).await;
    let attacker_tokens = attacker.sign_in(&node).await;
    // A token signed with the node's own secret (as a leaked secret would allow) for the
    // attacker's wallet but the victim's session.
    let secret = std::fs::read(node.state.config().data_dir.join("api-jwt-secret")).unwrap();
    let decode = |token: &str| -> blyan_api::AccessClaims {
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_audience(&[blyan_api::JWT_AUDIENCE]);
        jsonwebtoken::decode(
            token,
            &jsonwebtoken::DecodingKey::from_secret(&secret),
            &validation,
        )
        .unwrap()
        .claims
    };
    let mut claims = decode(&attacker_tokens.access_token);
    claims.sid = decode(&victim_tokens.access_token).sid;
    let forged = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(&secret),
    )
    .unwrap();
    check_refused(
        &node.get("/auth/session", Some(&forged)).await,
        401,
        "token_invalid",
    );
    // The genuine tokens of both still work.
    assert_eq!(
        node.get("/auth/session", Some(&victim_tokens.access_token))
            .await
            .0,
        200
    );
    assert_eq!(
        node.get("/auth/session", Some(&attacker_tokens.access_token))
            .await
            .0,
        200
    );
}

#[cfg(unix)]
#[tokio::test]
async fn the_nodes_secret_files_and_databases_are_owner_only() {
    use std::os::unix::fs::PermissionsExt as _;
    let node = Node::start().await;
    let wallet = TestWallet::new(0x1c);
    wallet.sign_in(&node).await;
    let data_dir = node.state.config().data_dir.clone();
    for name in ["api-jwt-secret", "api-auth.sqlite", "ledger.sqlite"] {
        let mode = std::fs::metadata(data_dir.join(name))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{name}: {mode:o}");
    }
}
