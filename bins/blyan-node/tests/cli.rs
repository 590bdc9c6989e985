//! The node binary as a user runs it: a new process with no environment.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const NODE: &str = env!("CARGO_BIN_EXE_blyan-node");

/// Kills the node when the test ends, passing or not.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

#[test]
fn help_runs_with_an_empty_environment() {
    let output = Command::new(NODE)
        .env_clear()
        .arg("--help")
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    for flag in ["--config", "--data-dir", "--listen"] {
        assert!(text.contains(flag), "--help lacks {flag}:\n{text}");
    }
}

#[test]
fn a_malformed_config_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("node.yaml");
    std::fs::write(&config, "cache:\n  expert_bytes_max: lots\n").unwrap();
    let output = Command::new(NODE)
        .env_clear()
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cache.expert_bytes_max"), "{stderr}");
}

#[test]
fn a_malformed_tokenomics_file_stops_the_node_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let shipped = include_str!("../../../crates/blyan-ledger/config/tokenomics.yaml");
    let malformed = shipped.replace("fee_per_1000_tokens: \"1\"", "fee_per_1000_tokens: 0.001");
    assert_ne!(
        malformed, shipped,
        "the shipped file names the fee this test breaks"
    );
    let tokenomics = dir.path().join("tokenomics.yaml");
    std::fs::write(&tokenomics, malformed).unwrap();
    let config = dir.path().join("node.yaml");
    std::fs::write(
        &config,
        format!("ledger:\n  tokenomics: {}\n", tokenomics.display()),
    )
    .unwrap();
    let port = free_port();
    let output = Command::new(NODE)
        .env_clear()
        .arg("--config")
        .arg(&config)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("tokenomics field `inference.fee_per_1000_tokens`"),
        "{stderr}"
    );
}

#[test]
fn a_named_config_file_that_does_not_exist_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("nodee.yaml");
    let output = Command::new(NODE)
        .env_clear()
        .arg("--config")
        .arg(&missing)
        .arg("--data-dir")
        .arg(dir.path())
        .arg("chain")
        .arg("info")
        .output()
        .unwrap();
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(&*missing.to_string_lossy()), "{stderr}");
    assert!(!dir.path().join("chain").exists(), "nothing was created");
}

#[test]
fn serving_flags_on_other_commands_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    for flag in [
        ["--listen", "127.0.0.1:9"],
        ["--peer", "/ip4/127.0.0.1/tcp/9"],
    ] {
        let output = Command::new(NODE)
            .env_clear()
            .current_dir(dir.path())
            .args(flag)
            .arg("chain")
            .arg("info")
            .output()
            .unwrap();
        assert!(!output.status.success(), "{output:?}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains("apply to `serve` only"), "{stderr}");
    }
}

#[test]
fn environment_overrides_set_the_address_and_sigterm_drains_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = dir.path().join("node.log");
    let mut node = Running(
        Command::new(NODE)
            .env_clear()
            .env("BLYAN_LISTEN", format!("127.0.0.1:{port}"))
            .env("BLYAN_DATA_DIR", dir.path().join("data"))
            .env("BLYAN_LOG__FILTER", "info")
            .env("BLYAN_LOG__FORMAT", "json")
            .current_dir(dir.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    eventually("the node answers /health on BLYAN_LISTEN", || {
        http_get(port, "/health").is_ok_and(|response| response.starts_with("HTTP/1.1 200"))
    });
    assert!(dir.path().join("data").is_dir(), "BLYAN_DATA_DIR was used");
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(node.0.id().to_string())
        .status()
        .unwrap();
    assert!(status.success());
    let exit = node.0.wait().unwrap();
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(exit.success(), "{exit:?}\n{log}");
    assert!(log.contains("SIGTERM: shutting down"), "{log}");
    assert!(log.contains("service stopped"), "{log}");
    // Without `ledger.server_account`, the serving share goes to the node key's address.
    let field = |message: &str, name: &str| {
        log.lines()
            .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
            .find(|line| line["fields"]["message"] == message)
            .map(|line| line["fields"][name].clone())
            .unwrap_or_else(|| panic!("no {message:?} in {log}"))
    };
    let key = field("created the node's key", "address");
    assert!(
        key.as_str()
            .is_some_and(|address| address.starts_with("0x")),
        "{key}"
    );
    assert_eq!(
        field(
            "the serving share of fees is paid to this account",
            "server_account"
        ),
        key
    );
}

#[test]
fn serves_health_on_the_configured_address() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let child = Command::new(NODE)
        .env_clear()
        .current_dir(dir.path())
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let _node = Running(child);
    // Bounded wait for the node to open its port; not a timing assertion.
    let deadline = Instant::now() + Duration::from_secs(120);
    let response = loop {
        match http_get(port, "/health") {
            Ok(response) => break response,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(error) => panic!("the node never answered /health: {error}"),
        }
    };
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    assert!(response.contains("\"status\":\"ok\""), "{response}");
    // A fresh data dir gets the shipped trained default model, and /health names it.
    assert!(response.contains("\"model\":\"trained\""), "{response}");
    assert!(response.contains("Blyan default model"), "{response}");
    assert!(
        dir.path().join("data").is_dir(),
        "the data dir was not created"
    );
}

fn node_in(dir: &std::path::Path) -> Command {
    node_with_data_dir(dir, &dir.join("data"))
}

fn node_with_data_dir(dir: &std::path::Path, data_dir: &std::path::Path) -> Command {
    let mut command = Command::new(NODE);
    command
        .env_clear()
        .env("RUST_LOG", "warn")
        .current_dir(dir)
        .arg("--data-dir")
        .arg(data_dir);
    command
}

fn json_stdout(output: &std::process::Output) -> serde_json::Value {
    assert!(
        output.status.success(),
        "status {:?}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

/// Creates the chain store of the node whose working dir is `dir` (in `dir/data/chain`), as a
/// first start would, and closes it.
fn create_chain(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("data/chain");
    drop(blyan_chain::ChainStore::open(&path, blyan_chain::StoreConfig::default()).unwrap());
    path
}

/// Every file under `dir` (relative path → bytes): what a read-only command must leave as is.
fn snapshot(dir: &std::path::Path) -> std::collections::BTreeMap<std::path::PathBuf, Vec<u8>> {
    fn walk(
        root: &std::path::Path,
        dir: &std::path::Path,
        files: &mut std::collections::BTreeMap<std::path::PathBuf, Vec<u8>>,
    ) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, files);
            } else {
                let relative = path.strip_prefix(root).unwrap().to_path_buf();
                files.insert(relative, std::fs::read(&path).unwrap());
            }
        }
    }
    let mut files = std::collections::BTreeMap::new();
    walk(dir, dir, &mut files);
    files
}

#[test]
fn chain_info_verify_export_import_round_trip() {
    use blyan_chain::{AuthorKey, BlockHeader, BlockKind, ChainId, ChainStore, StoreConfig};

    let source = tempfile::tempdir().unwrap();
    // A fresh data dir has no store, and the read-only `chain info` creates none.
    let missing = node_in(source.path())
        .args(["chain", "info"])
        .output()
        .unwrap();
    assert!(!missing.status.success(), "{missing:?}");
    let stderr = String::from_utf8_lossy(&missing.stderr);
    assert!(stderr.contains("holds no chain store"), "{stderr}");
    assert!(!source.path().join("data/chain").exists());

    let chain_dir = create_chain(source.path());
    let info = json_stdout(
        &node_in(source.path())
            .args(["chain", "info"])
            .output()
            .unwrap(),
    );
    let chains = info["chains"].as_array().unwrap();
    assert_eq!(chains.len(), 3);
    assert!(chains.iter().all(|chain| chain["blocks"] == 1), "{info}");

    // Append dataset blocks with the library, as another program would.
    {
        let store = ChainStore::open(&chain_dir, StoreConfig::default()).unwrap();
        let key = AuthorKey::generate();
        for index in 0..5u64 {
            let payload = format!("entry {index}").into_bytes();
            let tip = store.tip(ChainId::Dataset);
            let mut header = BlockHeader::new_child(
                &tip,
                BlockKind::DatasetEntry,
                &payload,
                1_770_000_000_000 + index,
            );
            header.sign(&key);
            store.append(&header, &payload).unwrap();
        }
    }

    let verify = node_in(source.path())
        .args(["chain", "verify"])
        .output()
        .unwrap();
    assert!(verify.status.success(), "{verify:?}");
    assert!(
        String::from_utf8_lossy(&verify.stdout).starts_with("ok: 8 blocks"),
        "{verify:?}"
    );

    let file = source.path().join("dataset.blocks");
    let export = json_stdout(
        &node_in(source.path())
            .args(["chain", "export", "--chain", "D", "--from", "1", "--out"])
            .arg(&file)
            .output()
            .unwrap(),
    );
    assert_eq!(export["blocks"], 5, "{export}");

    // A second node imports the segment (its store created on the way) and holds the same tip.
    let target = tempfile::tempdir().unwrap();
    let import = json_stdout(
        &node_in(target.path())
            .args(["chain", "import"])
            .arg(&file)
            .output()
            .unwrap(),
    );
    assert_eq!(import["imported"], 5, "{import}");
    let source_info = json_stdout(
        &node_in(source.path())
            .args(["chain", "info"])
            .output()
            .unwrap(),
    );
    let target_info = json_stdout(
        &node_in(target.path())
            .args(["chain", "info"])
            .output()
            .unwrap(),
    );
    assert_eq!(
        source_info["chains"][2]["tip"],
        target_info["chains"][2]["tip"]
    );

    // A truncated file is refused and the target store is unchanged: import checks the file's
    // framing before appending any block.
    let bytes = std::fs::read(&file).unwrap();
    let truncated = source.path().join("truncated.blocks");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    let third = tempfile::tempdir().unwrap();
    create_chain(third.path());
    let info_before = json_stdout(
        &node_in(third.path())
            .args(["chain", "info"])
            .output()
            .unwrap(),
    );
    let refused = node_in(third.path())
        .args(["chain", "import"])
        .arg(&truncated)
        .output()
        .unwrap();
    assert!(!refused.status.success(), "{refused:?}");
    // Refused for its framing, before any block was appended.
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(stderr.contains("export file, at byte"), "{stderr}");
    let info_after = json_stdout(
        &node_in(third.path())
            .args(["chain", "info"])
            .output()
            .unwrap(),
    );
    assert_eq!(info_before, info_after);
    let verify = node_in(third.path())
        .args(["chain", "verify"])
        .output()
        .unwrap();
    assert!(verify.status.success(), "{verify:?} {info_after}");
}

#[test]
fn chain_commands_take_the_chain_dir_and_verify_changes_no_byte() {
    let dir = tempfile::tempdir().unwrap();
    let chain_dir = create_chain(dir.path());
    // An unacknowledged tail, as a crash mid-append leaves it.
    let segment = chain_dir.join("segments/0000000001.seg");
    let mut bytes = std::fs::read(&segment).unwrap();
    bytes.extend_from_slice(&[0xee; 3000]);
    std::fs::write(&segment, bytes).unwrap();
    let before = snapshot(&chain_dir);

    let by_data_dir = json_stdout(
        &node_in(dir.path())
            .args(["chain", "info"])
            .output()
            .unwrap(),
    );
    let by_chain_dir = json_stdout(
        &node_with_data_dir(dir.path(), &chain_dir)
            .args(["chain", "info"])
            .output()
            .unwrap(),
    );
    assert_eq!(by_data_dir, by_chain_dir);

    let verify = node_with_data_dir(dir.path(), &chain_dir)
        .args(["chain", "verify"])
        .output()
        .unwrap();
    assert!(verify.status.success(), "{verify:?}");
    let text = String::from_utf8_lossy(&verify.stdout);
    assert!(text.starts_with("ok: 3 blocks"), "{text}");
    assert!(
        text.contains("unacknowledged tail: 3000 bytes past the committed end"),
        "{text}"
    );
    let after = snapshot(&chain_dir);
    assert_eq!(
        before.keys().collect::<Vec<_>>(),
        after.keys().collect::<Vec<_>>()
    );
    for (path, bytes) in &before {
        assert!(
            after[path] == *bytes,
            "chain verify changed {}",
            path.display()
        );
    }
}

#[test]
fn generate_streams_reproducible_text_from_the_seed_model() {
    let dir = tempfile::tempdir().unwrap();
    let run = |seed: &str| {
        node_in(dir.path())
            .args(["--seed-model", "random"])
            .args(["generate", "--prompt", "The chain", "--max-tokens", "12"])
            .args(["--temperature", "0.9", "--top-p", "0.95", "--seed", seed])
            .output()
            .unwrap()
    };
    let first = run("7");
    assert!(first.status.success(), "{first:?}");
    let stderr = String::from_utf8_lossy(&first.stderr);
    // The first run wrote the untrained seed model, and says so.
    assert!(stderr.contains("UNTRAINED"), "{stderr}");
    assert!(!first.stdout.is_empty());
    // Same seed, same text; the second run found the model already on the chain.
    let again = run("7");
    assert!(again.status.success(), "{again:?}");
    assert_eq!(first.stdout, again.stdout);
    assert!(!String::from_utf8_lossy(&again.stderr).contains("wrote the UNTRAINED"));
}

#[test]
fn a_fresh_data_dir_generates_english_from_the_shipped_model() {
    let dir = tempfile::tempdir().unwrap();
    let output = node_in(dir.path())
        .env("RUST_LOG", "info")
        .args(["generate", "--prompt", "The database", "--max-tokens", "40"])
        .args(["--temperature", "0"])
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("imported the shipped model"), "{stderr}");
    assert!(!stderr.contains("UNTRAINED"), "{stderr}");
    let text = String::from_utf8(output.stdout).unwrap();
    // Greedy text of a trained byte-level model: mostly lower-case letters and spaces, and
    // words of ordinary length; the untrained model's bytes are noise.
    let letters = text
        .chars()
        .filter(|c| c.is_ascii_alphabetic() || *c == ' ')
        .count();
    assert!(
        letters * 10 >= text.chars().count() * 8,
        "not English-looking: {text:?}"
    );
    let words: Vec<&str> = text.split_whitespace().collect();
    assert!(words.len() >= 4, "{text:?}");
    assert!(words.iter().all(|word| word.len() <= 20), "{text:?}");
}

/// Starts `blyan-node` serving from `data` on HTTP `port` with the network on a free loopback
/// TCP port, joined through `peer` when given.
fn networked_node(dir: &std::path::Path, data: &str, port: u16, peer: Option<&str>) -> Running {
    networked_node_with(dir, data, port, peer, "")
}

/// [`networked_node`] with `config` (YAML merged over the shipped defaults).
fn networked_node_with(
    dir: &std::path::Path,
    data: &str,
    port: u16,
    peer: Option<&str>,
    config: &str,
) -> Running {
    let config_path = dir.join(format!("{data}.yaml"));
    std::fs::write(&config_path, config).unwrap();
    let mut command = Command::new(NODE);
    command
        .env_clear()
        .current_dir(dir)
        .arg("--config")
        .arg(&config_path)
        .arg("--data-dir")
        .arg(dir.join(data))
        .arg("--listen")
        .arg(format!("127.0.0.1:{port}"))
        .arg("--p2p-listen")
        .arg("/ip4/127.0.0.1/tcp/0")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join(format!("{data}.log"))).unwrap());
    if let Some(peer) = peer {
        command.arg("--peer").arg(peer);
    }
    Running(command.spawn().unwrap())
}

/// Polls `condition` (a bounded wait for processes to start and meet; not a timing assertion).
fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(180);
    while !condition() {
        assert!(Instant::now() < deadline, "{what}: not within 180 s");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn peers(port: u16) -> Option<serde_json::Value> {
    let response = http_get(port, "/p2p/peers").ok()?;
    let body = response.split("\r\n\r\n").nth(1)?;
    serde_json::from_str(body).ok()
}

#[test]
fn two_node_processes_join_through_the_peer_flag() {
    let dir = tempfile::tempdir().unwrap();
    let (port_a, port_b) = (free_port(), free_port());
    let _a = networked_node(dir.path(), "a", port_a, None);
    let addresses = dir.path().join("a/p2p-addresses.txt");
    eventually("A writes its network addresses", || {
        std::fs::read_to_string(&addresses).is_ok_and(|text| !text.is_empty())
    });
    let a_address = std::fs::read_to_string(&addresses).unwrap();
    let a_address = a_address.lines().next().unwrap().to_owned();
    let a_peer = a_address.rsplit("/p2p/").next().unwrap().to_owned();
    let _b = networked_node(dir.path(), "b", port_b, Some(&a_address));
    eventually("B lists A as connected", || {
        peers(port_b).is_some_and(|status| {
            status["peers"].as_array().is_some_and(|peers| {
                peers
                    .iter()
                    .any(|peer| peer["peer_id"] == a_peer.as_str() && peer["connected"] == true)
            })
        })
    });
    let at_a = peers(port_a).unwrap();
    assert_eq!(at_a["peer_id"], a_peer.as_str());
    assert_eq!(at_a["peers"].as_array().unwrap().len(), 1, "{at_a}");
    // Both started from the shipped model: their chains already agree.
    let tip = |port: u16| http_get(port, "/chain/A").unwrap();
    let body = |response: String| response.split("\r\n\r\n").nth(1).unwrap().to_owned();
    let (chain_a, chain_b): (serde_json::Value, serde_json::Value) = (
        serde_json::from_str(&body(tip(port_a))).unwrap(),
        serde_json::from_str(&body(tip(port_b))).unwrap(),
    );
    assert_eq!(chain_a["tip_hash"], chain_b["tip_hash"]);
}

#[test]
fn a_malformed_peer_address_is_refused_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(NODE)
        .env_clear()
        .arg("--data-dir")
        .arg(dir.path())
        .arg("--peer")
        .arg("127.0.0.1:4801")
        .output()
        .unwrap();
    assert!(!output.status.success(), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("p2p.bootstrap"), "{stderr}");
}

/// The first address in `data`'s `p2p-addresses.txt`, once the node wrote it.
fn network_address(dir: &std::path::Path, data: &str) -> String {
    let path = dir.join(data).join("p2p-addresses.txt");
    eventually(&format!("{data} writes its network addresses"), || {
        std::fs::read_to_string(&path).is_ok_and(|text| !text.is_empty())
    });
    let text = std::fs::read_to_string(&path).unwrap();
    text.lines().next().unwrap().to_owned()
}

fn peer_id_of(address: &str) -> String {
    address.rsplit("/p2p/").next().unwrap().to_owned()
}

fn json_body(response: &str) -> serde_json::Value {
    let body = response.split("\r\n\r\n").nth(1).unwrap_or_default();
    serde_json::from_str(body).unwrap_or(serde_json::Value::Null)
}

fn http_post(port: u16, path: &str, body: &str) -> std::io::Result<TcpStream> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(120)))?;
    write!(
        stream,
        "POST {path} HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )?;
    Ok(stream)
}

const FAILOVER_TOKENS: u32 = 192;

fn greedy_chat() -> String {
    serde_json::json!({
        "messages": [{"role": "user", "content": "Tell me about the history of the river."}],
        "max_tokens": FAILOVER_TOKENS,
        "temperature": 0.0,
    })
    .to_string()
}

#[test]
fn a_generation_survives_its_expert_holder_killed_mid_stream() {
    // B computes layers 0-1, C and D both layers 2-3, A none: every expert A uses is remote.
    let dir = tempfile::tempdir().unwrap();
    let free_tier = format!(
        "api:\n  free_tier:\n    completion_tokens_max: {FAILOVER_TOKENS}\n    requests_per_hour_per_ip: 100\n"
    );
    let serving = |patterns: &str, remote: bool| {
        format!("p2p:\n  serve_experts: {patterns}\n  remote_experts: {remote}\n{free_tier}")
    };
    let ports: Vec<u16> = (0..4).map(|_| free_port()).collect();
    let (port_a, port_b) = (ports[0], ports[1]);
    let b = networked_node_with(
        dir.path(),
        "b",
        port_b,
        None,
        &serving("['layer0-1.*']", false),
    );
    let b_address = network_address(dir.path(), "b");
    let mut holders = Vec::new();
    for (name, port) in [("c", ports[2]), ("d", ports[3])] {
        let node = networked_node_with(
            dir.path(),
            name,
            port,
            Some(&b_address),
            &serving("['layer2-3.*']", false),
        );
        holders.push((peer_id_of(&network_address(dir.path(), name)), node));
    }
    let _a = networked_node_with(
        dir.path(),
        "a",
        port_a,
        Some(&b_address),
        &serving("[]", true),
    );
    eventually("A is connected to B, C and D", || {
        peers(port_a).is_some_and(|status| {
            status["peers"].as_array().is_some_and(|peers| {
                peers
                    .iter()
                    .filter(|peer| peer["connected"] == true)
                    .count()
                    == 3
            })
        })
    });
    // The single-node run: B holds every payload and computes every expert itself.
    let reference = {
        let mut stream = http_post(port_b, "/chat", &greedy_chat()).unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        json_body(&response)
    };
    assert_eq!(
        reference["usage"]["completion_tokens"], FAILOVER_TOKENS,
        "{reference}"
    );

    let mut stream = http_post(port_a, "/chat/stream", &greedy_chat()).unwrap();
    let mut received = Vec::new();
    let mut buffer = [0_u8; 4096];
    let deltas = |received: &[u8]| {
        String::from_utf8_lossy(received)
            .matches("event: delta")
            .count()
    };
    while deltas(&received) < 4 {
        let read = stream.read(&mut buffer).unwrap();
        assert!(read > 0, "{}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&buffer[..read]);
    }
    // Kill the holder of layers 2-3 that A has called most, with SIGKILL, mid-generation.
    let experts = json_body(&http_get(port_a, "/p2p/experts").unwrap());
    let calls_to = |peer: &str| {
        experts["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|view| view["peer"] == peer)
            .map_or(0, |view| view["calls"].as_u64().unwrap())
    };
    let victim = usize::from(calls_to(&holders[1].0) > calls_to(&holders[0].0));
    let (victim_peer, mut victim_node) = holders.swap_remove(victim);
    assert!(calls_to(&victim_peer) > 0, "{experts}");
    victim_node.0.kill().unwrap();
    victim_node.0.wait().unwrap();
    stream.read_to_end(&mut received).unwrap();
    let received = String::from_utf8_lossy(&received);
    assert!(!received.contains("event: error"), "{received}");
    let done = received
        .split("event: done")
        .nth(1)
        .and_then(|rest| rest.lines().find_map(|line| line.strip_prefix("data:")))
        .unwrap_or_else(|| panic!("no done event: {received}"));
    let done: serde_json::Value = serde_json::from_str(done.trim()).unwrap();
    assert_eq!(
        done["text"], reference["text"],
        "the same tokens as one node"
    );
    assert_eq!(done["usage"], reference["usage"]);
    // A was still calling the victim when it died; the survivor answered from then on.
    let after = json_body(&http_get(port_a, "/p2p/experts").unwrap());
    let view_of = |peer: &str| {
        after["peers"]
            .as_array()
            .unwrap()
            .iter()
            .find(|view| view["peer"] == peer)
            .cloned()
            .unwrap_or_else(|| panic!("no calls to {peer}: {after}"))
    };
    assert!(
        view_of(&victim_peer)["failures"].as_u64().unwrap() >= 1,
        "{after}"
    );
    assert!(
        view_of(&holders[0].0)["calls"].as_u64().unwrap() > 0,
        "{after}"
    );
    drop(b);
}

/// The wallet the grant tests fund (any address works).
const GRANTEE: &str = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed";

fn grant(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    node_in(dir)
        .args(["ledger", "grant", GRANTEE])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn ledger_grant_funds_a_wallet_from_the_treasury_once_per_key() {
    use blyan_ledger::{AccountId, EmbeddedLedger, HistoryQuery, Ledger, Tokenomics, TxKind};

    let dir = tempfile::tempdir().unwrap();
    let first = json_stdout(&grant(
        dir.path(),
        &[
            "250.5",
            "--memo",
            "welcome grant",
            "--idempotency-key",
            "welcome-1",
        ],
    ));
    assert_eq!(first["source"], "operator", "{first}");
    assert_eq!(first["transaction"]["kind"], "grant", "{first}");
    assert_eq!(first["transaction"]["memo"], "welcome grant", "{first}");
    // The treasury's genesis allocation is 30,000,000 BLY (config/tokenomics.yaml).
    assert_eq!(first["allocation_left"], 29_999_749_500_000_u64, "{first}");

    // The same key again grants nothing more and prints the first grant.
    let again = json_stdout(&grant(
        dir.path(),
        &[
            "250.5",
            "--memo",
            "welcome grant",
            "--idempotency-key",
            "welcome-1",
        ],
    ));
    assert_eq!(again, first);

    // Past what the allocation has left: refused, naming the amounts, nothing moved.
    let over = grant(dir.path(), &["29999750"]);
    assert!(!over.status.success(), "{over:?}");
    let stderr = String::from_utf8_lossy(&over.stderr);
    assert!(
        stderr.contains("exceeds what the treasury allocation has left: 29999749.5 of 30000000"),
        "{stderr}"
    );
    // A malformed address is refused before the ledger opens.
    let bad = node_in(dir.path())
        .args(["ledger", "grant", "0x1234", "1"])
        .output()
        .unwrap();
    assert!(!bad.status.success(), "{bad:?}");

    // The wallet's history (what `GET /wallet/history` serves) shows one grant with its memo.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let ledger = EmbeddedLedger::open(
            dir.path().join("data/ledger.sqlite"),
            Tokenomics::shipped().unwrap(),
        )
        .await
        .unwrap();
        let wallet = AccountId::User(GRANTEE.parse().unwrap());
        let page = ledger
            .history(
                wallet,
                HistoryQuery {
                    before: None,
                    limit: 10,
                },
            )
            .await
            .unwrap();
        assert_eq!(page.items.len(), 1, "{page:?}");
        assert_eq!(page.items[0].kind, TxKind::Grant);
        assert_eq!(page.items[0].memo, "welcome grant");
        assert_eq!(
            ledger.balance(wallet).await.unwrap().available,
            "250.5".parse().unwrap()
        );
    });
}
