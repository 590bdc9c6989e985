//! TLS to PostgreSQL: a server started with `ssl=on` and a certificate generated here is
//! reached encrypted when the URL says `sslmode=require` (or `verify-full` against that
//! certificate); a server without TLS is refused under `sslmode=require`, never used in
//! plaintext.

use blyan_ledger::{LedgerError, PgLedger};

use crate::pg;
use crate::support::tokenomics;

/// Whether the pool's connection is encrypted, as the server sees it.
async fn encrypted(ledger: &PgLedger) -> bool {
    let client = ledger.pool().get().await.unwrap();
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .await
        .unwrap()
        .get(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_connects_encrypted() {
    let server = pg::tls_server();
    let url = format!("{} sslmode=require", server.fresh_database().await);
    let ledger = PgLedger::connect(&url, tokenomics()).await.unwrap();
    assert!(
        encrypted(&ledger).await,
        "sslmode=require gave a plaintext session"
    );
    ledger_works(&ledger).await;

    // Without sslmode the same server is reached in plaintext (TLS only when asked for).
    let plain = server.fresh_database().await;
    let ledger = PgLedger::connect(&plain, tokenomics()).await.unwrap();
    assert!(!encrypted(&ledger).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_verify_full_checks_the_certificate() {
    let server = pg::tls_server();
    let certificate = server.certificate.as_ref().unwrap().display().to_string();
    let database = server.fresh_database().await;
    // The certificate names 127.0.0.1: verified against it as the root, the session is
    // encrypted.
    let url = format!("{database} sslmode=verify-full sslrootcert={certificate}");
    let ledger = PgLedger::connect(&url, tokenomics()).await.unwrap();
    assert!(encrypted(&ledger).await);
    // A self-signed certificate does not chain to the public roots: refused.
    let url = format!("{database} sslmode=verify-full");
    match PgLedger::connect(&url, tokenomics()).await {
        Err(error) => assert!(error.to_string().contains("TLS handshake"), "{error}"),
        Ok(_) => panic!("an unverifiable certificate was accepted"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sslmode_require_refuses_a_server_without_tls() {
    let server = pg::plain_tcp_server();
    let database = server.fresh_database().await;
    let url = format!("{database} sslmode=require");
    match PgLedger::connect(&url, tokenomics()).await {
        Err(error @ (LedgerError::Pool(_) | LedgerError::Postgres(_))) => {
            let text = error.to_string();
            assert!(text.contains("TLS"), "{text}");
        }
        Err(other) => panic!("unexpected error {other:?}"),
        Ok(_) => panic!("sslmode=require connected to a server without TLS"),
    }
    // The same server is fine in plaintext when TLS is not required.
    PgLedger::connect(&database, tokenomics()).await.unwrap();
}

async fn ledger_works(ledger: &PgLedger) {
    use blyan_ledger::Ledger as _;
    ledger.verify_integrity().await.unwrap();
}
