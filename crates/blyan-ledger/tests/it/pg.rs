//! A PostgreSQL for the tests (and the benches, which include this file).
//!
//! `BLYAN_TEST_DATABASE_URL` set: that server is used (the tests create their own databases
//! on it). Otherwise a throwaway server is started once per test binary: `initdb` + `pg_ctl`
//! from Debian's `/usr/lib/postgresql/*/bin`, data and unix socket in a temp dir (no TCP
//! listener, so no port can clash), fsync off. As root, the commands run as the `postgres`
//! user (initdb refuses root). A watcher process stops the server and removes the dir when the
//! test binary exits, however it exits. Nothing is skipped: when no server can be had, the
//! test that asked for one panics and says why.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// Where the tests' databases live.
pub(crate) struct PgServer {
    /// A `key=value` connection string without `dbname`, or a URL whose database is replaced.
    base: String,
    /// The server's bin dir, when this harness started it (pgbench lives there).
    pub bin: Option<PathBuf>,
    /// The socket dir, when this harness started it.
    pub socket_dir: Option<PathBuf>,
    /// The self-signed certificate (PEM) a TLS server presents, for `sslrootcert`.
    pub certificate: Option<PathBuf>,
}

/// A server listening on loopback TCP (TLS needs TCP: PostgreSQL never encrypts a Unix socket).
#[derive(Clone, Copy)]
struct Tcp {
    /// `ssl=on` with a certificate for `localhost` and `127.0.0.1` generated here.
    ssl: bool,
}

static SERVER: OnceLock<Result<PgServer, String>> = OnceLock::new();
static DURABLE_SERVER: OnceLock<Result<PgServer, String>> = OnceLock::new();
static TLS_SERVER: OnceLock<Result<PgServer, String>> = OnceLock::new();
static PLAIN_TCP_SERVER: OnceLock<Result<PgServer, String>> = OnceLock::new();
static DATABASES: AtomicU32 = AtomicU32::new(0);

/// The shared server, started on first use.
pub(crate) fn server() -> &'static PgServer {
    match SERVER.get_or_init(|| start(false, None)) {
        Ok(server) => server,
        Err(why) => panic!("no PostgreSQL for the ledger tests: {why}"),
    }
}

/// A server with PostgreSQL's default durability (fsync and synchronous commit on), for the
/// benches: figures then mean what they would in production.
pub(crate) fn durable_server() -> &'static PgServer {
    match DURABLE_SERVER.get_or_init(|| start(true, None)) {
        Ok(server) => server,
        Err(why) => panic!("no PostgreSQL for the ledger benches: {why}"),
    }
}

/// A server on loopback TCP with `ssl=on` and a self-signed certificate
/// ([`PgServer::certificate`]). Always started here (never `BLYAN_TEST_DATABASE_URL`).
pub(crate) fn tls_server() -> &'static PgServer {
    match TLS_SERVER.get_or_init(|| start(false, Some(Tcp { ssl: true }))) {
        Ok(server) => server,
        Err(why) => panic!("no PostgreSQL with TLS for the ledger tests: {why}"),
    }
}

/// A server on loopback TCP with `ssl=off`.
pub(crate) fn plain_tcp_server() -> &'static PgServer {
    match PLAIN_TCP_SERVER.get_or_init(|| start(false, Some(Tcp { ssl: false }))) {
        Ok(server) => server,
        Err(why) => panic!("no PostgreSQL on TCP for the ledger tests: {why}"),
    }
}

/// A loopback port free now.
fn free_port() -> Result<u16, String> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| format!("bind: {e}"))?;
    listener
        .local_addr()
        .map(|a| a.port())
        .map_err(|e| format!("local_addr: {e}"))
}

impl PgServer {
    /// The connection string for database `name`.
    pub(crate) fn url(&self, name: &str) -> String {
        if self.base.starts_with("postgres://") || self.base.starts_with("postgresql://") {
            let (head, query) = match self.base.split_once('?') {
                Some((h, q)) => (h, format!("?{q}")),
                None => (self.base.as_str(), String::new()),
            };
            let scheme_end = head.find("://").map_or(0, |i| i + 3);
            let host_end = head[scheme_end..]
                .find('/')
                .map_or(head.len(), |i| scheme_end + i);
            format!("{}/{name}{query}", &head[..host_end])
        } else {
            format!("{} dbname={name}", self.base)
        }
    }

    /// A new, empty database; returns its connection string.
    pub(crate) async fn fresh_database(&self) -> String {
        let name = format!(
            "ledger_{}_{}",
            std::process::id(),
            DATABASES.fetch_add(1, Ordering::SeqCst)
        );
        let admin = connect(&self.url("postgres")).await;
        admin
            .batch_execute(&format!("CREATE DATABASE {name} TEMPLATE template0"))
            .await
            .unwrap_or_else(|e| panic!("CREATE DATABASE {name}: {e}"));
        self.url(&name)
    }
}

/// A plain client on `url`, its connection driven on the current runtime.
pub(crate) async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {url}: {e}"));
    tokio::spawn(async move {
        let _ = connection.await;
    });
    client
}

fn start(durable: bool, tcp: Option<Tcp>) -> Result<PgServer, String> {
    if let (Ok(url), None) = (std::env::var("BLYAN_TEST_DATABASE_URL"), tcp) {
        return Ok(PgServer {
            base: url,
            bin: find_bin_dir().ok(),
            socket_dir: None,
            certificate: None,
        });
    }
    let bin = find_bin_dir()?;
    let dir = tempfile::Builder::new()
        .prefix("blyan-ledger-pg-")
        .tempdir()
        .map_err(|e| format!("temp dir: {e}"))?
        .keep();
    let as_postgres = is_root()?;
    if as_postgres {
        let ids =
            |flag: &str| -> Result<u32, String> {
                let out = Command::new("id")
                    .args([flag, "postgres"])
                    .output()
                    .map_err(|e| format!("id {flag} postgres: {e}"))?;
                String::from_utf8_lossy(&out.stdout).trim().parse().map_err(|_| {
                "running as root and there is no `postgres` user for initdb (install Debian's \
                 postgresql package)"
                    .to_owned()
            })
            };
        let (uid, gid) = (ids("-u")?, ids("-g")?);
        std::os::unix::fs::chown(&dir, Some(uid), Some(gid))
            .map_err(|e| format!("chown {}: {e}", dir.display()))?;
    }
    let data = dir.join("data");
    let run = |program: &Path, args: &[&str]| -> Result<(), String> {
        let mut command = if as_postgres {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(program);
            c
        } else {
            Command::new(program)
        };
        let out = command
            .args(args)
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("{}: {e}", program.display()))?;
        if !out.status.success() {
            return Err(format!(
                "{} {args:?} failed: {}{}",
                program.display(),
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(())
    };
    let data_text = data.to_string_lossy().into_owned();
    let dir_text = dir.to_string_lossy().into_owned();
    run(
        &bin.join("initdb"),
        &[
            "-D",
            &data_text,
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
            "--locale=C",
        ],
    )?;
    let speed = if durable {
        ""
    } else {
        "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
    };
    let (port, listen) = match tcp {
        Some(_) => (free_port()?, "127.0.0.1"),
        None => (5432, ""),
    };
    let mut certificate = None;
    let mut ssl = String::new();
    if let Some(Tcp { ssl: true }) = tcp {
        let generated = rcgen::generate_simple_self_signed(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
        ])
        .map_err(|e| format!("self-signed certificate: {e}"))?;
        let cert_path = data.join("server.crt");
        let key_path = data.join("server.key");
        std::fs::write(&cert_path, generated.cert.pem()).map_err(|e| format!("write cert: {e}"))?;
        std::fs::write(&key_path, generated.key_pair.serialize_pem())
            .map_err(|e| format!("write key: {e}"))?;
        // PostgreSQL refuses a key others can read; as root the files go to the server's user.
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(&key_path, std::fs::Permissions::from_mode(0o600))
            .map_err(|e| format!("chmod key: {e}"))?;
        if as_postgres {
            let owner = std::fs::metadata(&data).map_err(|e| format!("stat data: {e}"))?;
            use std::os::unix::fs::MetadataExt as _;
            for path in [&cert_path, &key_path] {
                std::os::unix::fs::chown(path, Some(owner.uid()), Some(owner.gid()))
                    .map_err(|e| format!("chown {}: {e}", path.display()))?;
            }
        }
        // A copy outside the data dir for clients' `sslrootcert` (the data dir is 0700).
        let public =
            std::env::temp_dir().join(format!("blyan-ledger-pg-{}-{port}.crt", std::process::id()));
        std::fs::write(&public, generated.cert.pem()).map_err(|e| format!("write cert: {e}"))?;
        certificate = Some(public);
        ssl = format!(
            "-c ssl=on -c ssl_cert_file={} -c ssl_key_file={}",
            cert_path.display(),
            key_path.display()
        );
    }
    let options = format!(
        "-k {dir_text} -c listen_addresses={listen} {speed} {ssl} -c max_connections=300 \
         -c shared_buffers=128MB -p {port}"
    );
    let log = dir.join("server.log").to_string_lossy().into_owned();
    run(
        &bin.join("pg_ctl"),
        &["-D", &data_text, "-l", &log, "-o", &options, "-w", "start"],
    )?;
    spawn_stopper(&bin, &data_text, &dir_text, as_postgres)?;
    let host = if tcp.is_some() {
        "127.0.0.1"
    } else {
        &dir_text
    };
    Ok(PgServer {
        base: format!("host={host} port={port} user=postgres"),
        bin: Some(bin),
        socket_dir: Some(dir),
        certificate,
    })
}

/// A detached shell that waits for this process to exit, then stops the server and removes
/// its directory.
fn spawn_stopper(bin: &Path, data: &str, dir: &str, as_postgres: bool) -> Result<(), String> {
    let pg_ctl = bin.join("pg_ctl").to_string_lossy().into_owned();
    let stop = if as_postgres {
        format!("runuser -u postgres -- {pg_ctl} -D {data} -m immediate stop")
    } else {
        format!("{pg_ctl} -D {data} -m immediate stop")
    };
    let script = format!(
        "while kill -0 {pid} 2>/dev/null; do sleep 0.5; done; {stop}; rm -rf {dir}",
        pid = std::process::id()
    );
    Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawn the server's stopper: {e}"))?;
    Ok(())
}

fn is_root() -> Result<bool, String> {
    let out = Command::new("id")
        .arg("-u")
        .output()
        .map_err(|e| format!("id -u: {e}"))?;
    Ok(String::from_utf8_lossy(&out.stdout).trim() == "0")
}

/// The newest `/usr/lib/postgresql/<version>/bin` that has `initdb`.
fn find_bin_dir() -> Result<PathBuf, String> {
    let root = Path::new("/usr/lib/postgresql");
    let entries = std::fs::read_dir(root).map_err(|e| {
        format!(
            "{} unreadable ({e}): install Debian's postgresql package or set \
             BLYAN_TEST_DATABASE_URL",
            root.display()
        )
    })?;
    let mut versions: Vec<(u32, PathBuf)> = entries
        .filter_map(|e| e.ok())
        .filter_map(|e| {
            let version = e.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin).ok_or_else(|| {
        format!(
            "no initdb under {}/*/bin: install Debian's postgresql package or set \
             BLYAN_TEST_DATABASE_URL",
            root.display()
        )
    })
}
