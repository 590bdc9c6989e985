//! Crash safety: a child process (this test binary, re-run on `crash_child`) appends in a loop,
//! printing each hash `append` (or `append_reader`, or a staged download's `append_staged`)
//! acknowledged; the parent SIGKILLs it at random moments, many times. After each kill the store
//! must reopen, verify, and hold every acknowledged block.
//!
//! 40 kills by default; `BLYAN_CRASH_ROUNDS=n` or `BLYAN_STRESS=1` (400) for longer runs.
//!
//! SIGKILL leaves the page cache intact, so this proves the write order and the reclaiming of
//! unacknowledged bytes, not fsync itself (power loss cannot be simulated here).

use std::io::{BufRead as _, BufReader, Write as _};
use std::os::unix::process::ExitStatusExt as _;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use blyan_chain::{
    AuthorKey, BlockHash, BlockHeader, BlockKind, ChainId, ChainStore, Durability, ExpertName,
    PayloadStage, StoreConfig,
};
use rand::{Rng as _, SeedableRng as _};

use crate::common::{T0, bytes, stress};

const CHILD_DIR_ENV: &str = "BLYAN_CRASH_CHILD_DIR";
const ROUNDS_ENV: &str = "BLYAN_CRASH_ROUNDS";
const ROUNDS_DEFAULT: usize = 40;
const ROUNDS_STRESS: usize = 400;

fn config() -> StoreConfig {
    // Synced, as in production; small segments so kills also land around segment sealing.
    StoreConfig {
        durability: Durability::Synced,
        segment_bytes_target: 512 * 1024,
        ..StoreConfig::default()
    }
}

#[test]
#[ignore = "the child process of appends_survive_sigkill; runs only when that test starts it"]
fn crash_child() {
    let dir =
        std::env::var_os(CHILD_DIR_ENV).expect("BLYAN_CRASH_CHILD_DIR names the store directory");
    child_loop(Path::new(&dir));
}

fn child_loop(dir: &Path) {
    let store = ChainStore::open(dir, config()).expect("the store reopens after every kill");
    let key = AuthorKey::generate();
    let mut rng = rand::rngs::StdRng::from_entropy();
    let mut out = std::io::stdout().lock();
    // The test harness has already printed "test crash::crash_child ... " without a newline.
    writeln!(out, "\nREADY").expect("stdout");
    out.flush().expect("stdout");
    for round in 0u64.. {
        let hash = match round % 4 {
            0 | 1 => {
                let payload = bytes(rng.r#gen(), rng.gen_range(0..64 * 1024));
                let mut header = BlockHeader::new_child(
                    &store.tip(ChainId::Dataset),
                    BlockKind::DatasetEntry,
                    &payload,
                    T0,
                );
                header.sign(&key);
                if round % 8 < 4 {
                    store.append(&header, &payload)
                } else {
                    store.append_reader(&header, &payload[..])
                }
            }
            2 => {
                let expert = ExpertName::new(0, (round / 4 % 4) as u32).expect("valid expert");
                let version = store
                    .expert_current(expert)
                    .expect("expert index")
                    .map_or(1, |v| v.version + 1);
                let payload = bytes(rng.r#gen(), rng.gen_range(100_000..400_000));
                let mut header = BlockHeader::new_child(
                    &store.tip(ChainId::Parameters),
                    BlockKind::Expert,
                    &payload,
                    T0,
                );
                header.meta.expert = Some(expert);
                header.meta.version = version;
                header.sign(&key);
                if round % 8 == 2 {
                    append_staged(&store, &header, &payload)
                } else {
                    store.append(&header, &payload)
                }
            }
            _ => {
                let payload = bytes(rng.r#gen(), 300);
                let mut header = BlockHeader::new_child(
                    &store.tip(ChainId::Meta),
                    BlockKind::Meta,
                    &payload,
                    T0,
                );
                header.depends_on.push(store.tip(ChainId::Dataset).hash);
                header.sign(&key);
                store.append(&header, &payload)
            }
        };
        let hash = hash.expect("a valid block is appended");
        writeln!(out, "ACK {hash}").expect("stdout");
        out.flush().expect("stdout");
    }
}

/// Downloads `payload` into a stage in reverse block order, flushing halfway, and appends it
/// by adoption: kills land in stage writes, flushes and adoption too.
fn append_staged(
    store: &ChainStore,
    header: &BlockHeader,
    payload: &[u8],
) -> blyan_chain::Result<BlockHash> {
    let stage = store.stage_payload(header)?;
    let block = PayloadStage::BLOCK_BYTES as usize;
    let starts: Vec<usize> = (0..payload.len()).step_by(block).rev().collect();
    for (index, start) in starts.iter().enumerate() {
        let end = (start + block).min(payload.len());
        stage.write_at(*start as u64, &payload[*start..end])?;
        if index == starts.len() / 2 {
            stage.flush()?;
        }
    }
    store.append_staged(header, stage)
}

#[test]
fn appends_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let rounds = std::env::var(ROUNDS_ENV)
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(if stress() {
            ROUNDS_STRESS
        } else {
            ROUNDS_DEFAULT
        });
    let seed: u64 = rand::random();
    println!("crash test seed {seed}");
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let exe = std::env::current_exe().unwrap();
    let mut acknowledged: Vec<BlockHash> = Vec::new();
    let mut killed_while_appending = 0;

    for round in 0..rounds {
        let mut child = Command::new(&exe)
            .args([
                "crash::crash_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env(CHILD_DIR_ENV, dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (ready_tx, ready_rx) = mpsc::sync_channel::<()>(1);
        let reader = std::thread::spawn(move || {
            let mut acks = Vec::new();
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if line == "READY" {
                    let _ = ready_tx.try_send(());
                } else if let Some(hash) = line.strip_prefix("ACK ") {
                    acks.push(BlockHash::parse(hash).unwrap());
                }
            }
            acks
        });
        if round % 4 == 3 {
            // Sometimes kill early: during open and recovery.
            std::thread::sleep(Duration::from_millis(rng.gen_range(0..60)));
        } else {
            ready_rx
                .recv_timeout(Duration::from_secs(60))
                .expect("the child opened the store");
            std::thread::sleep(Duration::from_millis(rng.gen_range(5..200)));
            killed_while_appending += 1;
        }
        child.kill().unwrap();
        let status = child.wait().unwrap();
        assert_eq!(
            status.signal(),
            Some(9),
            "the child died on its own ({status}), round {round}"
        );
        let acks = reader.join().unwrap();
        acknowledged.extend(acks);

        let store = ChainStore::open(dir.path(), config()).unwrap();
        let report = store.verify(|_| {}).unwrap();
        assert!(
            report.is_ok(),
            "round {round}, seed {seed}: {:?}",
            report.first_bad
        );
        for hash in &acknowledged {
            assert!(
                store.contains(hash).unwrap(),
                "round {round}, seed {seed}: acknowledged {hash} lost"
            );
            store.payload_verified(hash).unwrap().unwrap();
        }
    }
    println!(
        "{} acknowledged blocks over {rounds} kills",
        acknowledged.len()
    );
    assert!(killed_while_appending > 0);
    assert!(
        acknowledged.len() >= rounds,
        "the child acknowledged only {} blocks: the test did not exercise appends",
        acknowledged.len()
    );
}
