//! Transfers per second on PostgreSQL (one transfer per transaction, and batches of
//! `BATCH_LEN`) against pgbench's built-in simple-update script on the same server in the same
//! run, and on the embedded store. Every figure uses `CLIENTS` concurrent clients, as pgbench
//! does (`-c 4 -j 2`). The server is started with PostgreSQL's default durability.
//!
//! `cargo bench -p blyan-ledger --bench ledger`
// criterion_group! generates a public function no doc comment can reach.
#![allow(missing_docs)]
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/it/pg.rs"]
mod pg;

use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use blyan_ledger::{
    AccountId, Address, Amount, AnyLedger, EmbeddedLedger, IdempotencyKey, Ledger, LedgerOptions,
    PgLedger, SystemAccount, Tokenomics, TransferRequest,
};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const CLIENTS: u64 = 4;
const ACCOUNTS: u32 = 400;
const BATCH_LEN: u64 = 100;
const PGBENCH_SECONDS: u32 = 10;

static KEYS: AtomicU64 = AtomicU64::new(0);

fn account(n: u32) -> AccountId {
    let mut bytes = [0u8; 20];
    bytes[..4].copy_from_slice(&n.to_be_bytes());
    bytes[19] = 0xbe;
    AccountId::User(Address::from_bytes(bytes))
}

fn transfer(client: u64, i: u64) -> TransferRequest {
    let n = KEYS.fetch_add(1, Ordering::Relaxed);
    // Each client pays from its own slice of accounts to a pseudo-random other one.
    let from = u32::try_from((client * 97 + i) % u64::from(ACCOUNTS)).unwrap();
    let to = (from + 1 + u32::try_from(n % u64::from(ACCOUNTS - 1)).unwrap()) % ACCOUNTS;
    TransferRequest {
        key: IdempotencyKey::new(format!("bench-{n}")).unwrap(),
        from: account(from),
        to: account(to),
        amount: Amount::from_units(1).unwrap(),
        memo: String::new(),
    }
}

async fn fund(ledger: &AnyLedger) {
    let treasury = AccountId::System(SystemAccount::Treasury);
    let requests: Vec<TransferRequest> = (0..ACCOUNTS)
        .map(|n| TransferRequest {
            key: IdempotencyKey::new(format!("fund-{n}")).unwrap(),
            from: treasury,
            to: account(n),
            amount: Amount::from_bly(1000).unwrap(),
            memo: String::new(),
        })
        .collect();
    ledger.transfer_batch(requests).await.unwrap();
}

/// Runs `count` transfers over `CLIENTS` concurrent clients, one per call or `batch` per call.
async fn run(ledger: &Arc<AnyLedger>, count: u64, batch: u64) -> Duration {
    let start = Instant::now();
    let per_client = count.div_ceil(CLIENTS);
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let ledger = Arc::clone(ledger);
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            while done < per_client {
                if batch == 1 {
                    ledger.transfer(transfer(client, done)).await.unwrap();
                    done += 1;
                } else {
                    let len = batch.min(per_client - done);
                    let requests = (0..len).map(|i| transfer(client, done + i)).collect();
                    ledger.transfer_batch(requests).await.unwrap();
                    done += len;
                }
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    start.elapsed()
}

/// Transfers and seconds measured, summed over criterion's samples.
#[derive(Default)]
struct Tally {
    transfers: u64,
    seconds: f64,
}

impl Tally {
    fn per_second(&self) -> f64 {
        self.transfers as f64 / self.seconds
    }
}

fn bench_ledger(c: &mut Criterion, name: &str, ledger: &Arc<AnyLedger>, batch: u64) -> f64 {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let tally = Arc::new(Mutex::new(Tally::default()));
    let mut group = c.benchmark_group("ledger");
    group.throughput(Throughput::Elements(1));
    group.bench_function(name, |b| {
        b.iter_custom(|iters| {
            let elapsed = runtime.block_on(run(ledger, iters, batch));
            let mut tally = tally.lock().unwrap();
            tally.transfers += iters.div_ceil(CLIENTS) * CLIENTS;
            tally.seconds += elapsed.as_secs_f64();
            // Criterion divides by `iters`; report the time the clients took per transfer.
            elapsed.mul_f64(iters as f64 / (iters.div_ceil(CLIENTS) * CLIENTS) as f64)
        });
    });
    group.finish();
    tally.lock().unwrap().per_second()
}

/// pgbench's simple-update on `url`'s database: initialises scale 1, runs 10 s, returns tps.
fn pgbench_tps(server: &pg::PgServer, url: &str) -> f64 {
    let bin = server
        .bin
        .clone()
        .expect("pgbench: no PostgreSQL bin dir found");
    let pgbench = bin.join("pgbench");
    let init = Command::new(&pgbench)
        .args(["-i", "-q", "-s", "1", url])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "pgbench -i: {}",
        String::from_utf8_lossy(&init.stderr)
    );
    let seconds = PGBENCH_SECONDS.to_string();
    let clients = CLIENTS.to_string();
    let out = Command::new(&pgbench)
        .args([
            "-b",
            "simple-update",
            "-T",
            &seconds,
            "-c",
            &clients,
            "-j",
            "2",
            url,
        ])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "pgbench: {text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.lines()
        .find_map(|line| line.strip_prefix("tps = "))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|tps| tps.parse().ok())
        .unwrap_or_else(|| panic!("no tps in pgbench's output: {text}"))
}

fn benches(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let tokenomics = Tokenomics::shipped().unwrap();
    let options = LedgerOptions {
        pg_pool_size: CLIENTS as usize,
        ..LedgerOptions::default()
    };

    let server = pg::durable_server();
    let pgbench_url = runtime.block_on(server.fresh_database());
    let pgbench = pgbench_tps(server, &pgbench_url);

    let pg_url = runtime.block_on(server.fresh_database());
    let pg = runtime.block_on(async {
        let ledger = PgLedger::connect_with(&pg_url, tokenomics.clone(), options.clone())
            .await
            .unwrap();
        let ledger = AnyLedger::Pg(ledger);
        fund(&ledger).await;
        Arc::new(ledger)
    });
    let pg_single = bench_ledger(c, "pg_transfer", &pg, 1);
    let pg_batched = bench_ledger(c, "pg_transfer_batch100", &pg, BATCH_LEN);
    runtime.block_on(pg.verify_integrity()).unwrap();

    let dir = tempfile::tempdir().unwrap();
    let embedded = runtime.block_on(async {
        let path = dir.path().join("ledger.sqlite");
        let ledger = EmbeddedLedger::open_with(&path, tokenomics.clone(), options.clone())
            .await
            .unwrap();
        let ledger = AnyLedger::Embedded(ledger);
        fund(&ledger).await;
        Arc::new(ledger)
    });
    let embedded_single = bench_ledger(c, "embedded_transfer", &embedded, 1);
    let embedded_batched = bench_ledger(c, "embedded_transfer_batch100", &embedded, BATCH_LEN);
    runtime.block_on(embedded.verify_integrity()).unwrap();

    println!();
    println!("pgbench simple-update (-c {CLIENTS} -j 2, {PGBENCH_SECONDS} s): {pgbench:.0} tps");
    for (name, per_second) in [
        ("PostgreSQL, one transfer per transaction", pg_single),
        ("PostgreSQL, 100 transfers per transaction", pg_batched),
        ("embedded, one transfer per transaction", embedded_single),
        ("embedded, 100 transfers per transaction", embedded_batched),
    ] {
        println!(
            "{name}: {per_second:.0} transfers/s = {:.2} x pgbench simple-update",
            per_second / pgbench
        );
    }
}

criterion_group! {
    name = ledger;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    targets = benches
}
criterion_main!(ledger);
