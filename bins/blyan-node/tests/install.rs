//! `scripts/install.sh`: the installed node runs without the clone, after the install is moved.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
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

fn health(port: u16) -> std::io::Result<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(
        stream,
        "GET /health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    Ok(response)
}

fn runpath(binary: &Path) -> String {
    let output = Command::new("patchelf")
        .arg("--print-rpath")
        .arg(binary)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

#[test]
fn the_installed_node_runs_from_anywhere_without_the_clone() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let built = Path::new(NODE).parent().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let prefix = dir.path().join("prefix");
    let output = Command::new(repo.join("scripts/install.sh"))
        .arg(&prefix)
        .arg("--from")
        .arg(built)
        .output()
        .unwrap();
    assert!(output.status.success(), "{output:?}");

    // Moved after installing: nothing may point into the old prefix or the clone.
    let moved = dir.path().join("elsewhere");
    std::fs::rename(&prefix, &moved).unwrap();
    let node = moved.join("bin/blyan-node");
    assert_eq!(runpath(&node), "$ORIGIN/../lib");
    assert!(moved.join("lib/libtorch_cpu.so").is_file());
    let ldd = Command::new("ldd").arg(&node).output().unwrap();
    let libraries = String::from_utf8(ldd.stdout).unwrap();
    let clone = std::fs::canonicalize(&repo).unwrap();
    assert!(
        !libraries.contains(&*clone.to_string_lossy()) && !libraries.contains("not found"),
        "{libraries}"
    );
    assert!(libraries.contains(&*moved.to_string_lossy()), "{libraries}");

    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let data = dir.path().join("data");
    let _running = Running(
        Command::new(&node)
            .env_clear()
            .current_dir(dir.path())
            .arg("--data-dir")
            .arg(&data)
            .arg("--listen")
            .arg(format!("127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("node.log")).unwrap())
            .spawn()
            .unwrap(),
    );
    // Bounded wait for the node to start; not a timing assertion.
    let deadline = Instant::now() + Duration::from_secs(120);
    let response = loop {
        match health(port) {
            Ok(response) => break response,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            Err(error) => panic!("the installed node never answered /health: {error}"),
        }
    };
    assert!(response.starts_with("HTTP/1.1 200"), "{response}");
    // The shipped model came from the install, not the clone.
    assert!(response.contains("\"model\":\"trained\""), "{response}");
    let log = std::fs::read_to_string(dir.path().join("node.log")).unwrap();
    let installed_model = moved.join("bin").join(blyan_moe_installed_dir());
    assert!(
        log.contains(&*installed_model.to_string_lossy()),
        "{installed_model:?} not in {log}"
    );
}

/// `blyan_moe::INSTALLED_MODEL_DIR`, spelled here so this test does not link libtorch.
fn blyan_moe_installed_dir() -> &'static str {
    "../share/blyan/models/default"
}

#[test]
fn the_deployment_files_check_against_an_install() {
    // The systemd unit passes `systemd-analyze verify` against a real install; the container
    // image builds where a container builder runs (the script says when it skips that).
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let built = Path::new(NODE).parent().unwrap();
    let output = Command::new(repo.join("deploy/check.sh"))
        .arg(built)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{output:?}");
    assert!(stderr.contains("the systemd unit verifies"), "{stderr}");
}
