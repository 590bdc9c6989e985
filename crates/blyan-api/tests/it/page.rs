//! The web page in headless Chromium, driven through chromedriver: load, a streamed free-tier
//! chat, the stop button, sign-in through an injected EIP-1193 provider whose `personal_sign`
//! the test answers with a secp256k1 key, the balance, a paid chat, the explorer and the expert
//! dashboard. A screenshot is saved under the target directory. A second session draws the
//! learning curve of a node whose learner ran, and checks it against `GET /learning`. A third
//! shows Proof-of-Learning: the rules and validator, then a claim the node (its only validator)
//! seeded, voted on and rejected, and the author's locked bond in the wallet history. A fourth
//! shows the network view of a node joined to a peer. A fifth commits an L2 vote on a dataset
//! sample from the Data tab (the page's blake3 checked against the Rust crate first), keeps the
//! salt in localStorage and reveals the vote in the reveal window.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

use blyan_chain::AuthorKey;
use blyan_node_core::{Learner, PolContext, Services, pol_tick};

use crate::support::{Node, TestWallet};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";

/// Bound on each wait for the page to reach a state (not a timing assertion: a slow machine
/// only waits longer).
const PAGE_WAIT: Duration = Duration::from_secs(120);

/// Where the screenshot goes.
fn screenshot_path() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("blyan-api-page.png")
}

/// A chromedriver process, killed when dropped.
struct Driver {
    child: Child,
    port: u16,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_driver() -> Driver {
    for binary in [CHROMEDRIVER, CHROMIUM] {
        assert!(
            std::path::Path::new(binary).exists(),
            "{binary} is missing: install Debian's chromium and chromium-driver (scripts/setup.sh does)"
        );
    }
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let child = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("chromedriver starts");
    let driver = Driver { child, port };
    let deadline = Instant::now() + PAGE_WAIT;
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "chromedriver never opened its port"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    driver
}

async fn browser(driver: &Driver) -> Client {
    let mut capabilities = serde_json::Map::new();
    capabilities.insert(
        "goog:chromeOptions".to_owned(),
        json!({
            "binary": CHROMIUM,
            "args": [
                "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--window-size=1280,1000", "--no-first-run", "--disable-extensions",
            ],
        }),
    );
    ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{}", driver.port))
        .await
        .expect("a Chromium session")
}

/// Runs `script` (a function body returning a value) until it returns something truthy.
/// Loads the node's page in `client` and waits until its script marked it ready.
async fn open_page(node: &Node, client: &Client) -> Result<(), String> {
    client
        .goto(&node.url("/"))
        .await
        .map_err(|e| e.to_string())?;
    wait_js(
        client,
        "page ready",
        "return document.body.dataset.ready === 'true';",
    )
    .await;
    Ok(())
}

async fn wait_js(client: &Client, what: &str, script: &str) -> Value {
    let deadline = Instant::now() + PAGE_WAIT;
    loop {
        let value = client
            .execute(script, Vec::new())
            .await
            .expect("script runs");
        let truthy = match &value {
            Value::Null | Value::Bool(false) => false,
            Value::String(text) => !text.is_empty(),
            _ => true,
        };
        if truthy {
            return value;
        }
        assert!(Instant::now() < deadline, "the page never reached: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn text_of(client: &Client, id: &str) -> String {
    client
        .find(Locator::Id(id))
        .await
        .expect("element exists")
        .text()
        .await
        .expect("element text")
}

async fn chat(client: &Client, text: &str, max_tokens: u32) {
    let input = client.find(Locator::Id("chat-max-tokens")).await.unwrap();
    input.clear().await.unwrap();
    input.send_keys(&max_tokens.to_string()).await.unwrap();
    client
        .find(Locator::Id("chat-input"))
        .await
        .unwrap()
        .send_keys(text)
        .await
        .unwrap();
    click(client, Locator::Id("chat-send")).await.unwrap();
}

/// An EIP-1193 provider with one account; `personal_sign` requests wait in
/// `window.__blyanSignRequests` until the test answers them.
const PROVIDER: &str = r#"
const account = arguments[0];
window.__blyanSignRequests = [];
window.ethereum = {
  isMetaMask: false,
  request: async ({ method, params }) => {
    if (method === "eth_requestAccounts" || method === "eth_accounts") return [account.toLowerCase()];
    if (method === "eth_chainId") return "0x1";
    if (method === "personal_sign") {
      return new Promise((resolve, reject) => {
        window.__blyanSignRequests.push({ message: params[0], address: params[1], resolve, reject });
      });
    }
    throw Object.assign(new Error(`unsupported method ${method}`), { code: 4200 });
  },
};
return true;
"#;

fn hex_to_bytes(hex: &str) -> Vec<u8> {
    hex::decode(hex.trim_start_matches("0x")).expect("hex message")
}

/// Signs `wallet` in through an injected EIP-1193 provider, answering its `personal_sign`.
async fn sign_in(node: &Node, client: &Client, wallet: &TestWallet) -> Result<(), String> {
    client
        .execute(PROVIDER, vec![json!(wallet.address)])
        .await
        .map_err(|e| e.to_string())?;
    click(client, Locator::Id("sign-in")).await?;
    let request = wait_js(
        client,
        "personal_sign requested",
        "const r = window.__blyanSignRequests[0]; return r ? { message: r.message, address: r.address } : null;",
    )
    .await;
    let message = hex_to_bytes(request["message"].as_str().unwrap_or_default());
    let text = String::from_utf8(message.clone()).map_err(|e| e.to_string())?;
    if !text.contains(&wallet.address)
        || !text.contains(&format!("{} wants you to sign in", node.addr))
    {
        return Err(format!("sign-in message {text:?}"));
    }
    let signature = wallet.personal_sign(&message);
    client
        .execute(
            "window.__blyanSignRequests.shift().resolve(arguments[0]); return true;",
            vec![json!(signature)],
        )
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// Clicks the element `locator` finds.
async fn click(client: &Client, locator: Locator<'_>) -> Result<(), String> {
    client
        .find(locator)
        .await
        .map_err(|e| e.to_string())?
        .click()
        .await
        .map_err(|e| e.to_string())
}

/// Clicks the navigation button of tab `name`.
async fn open_tab(client: &Client, name: &str) -> Result<(), String> {
    click(
        client,
        Locator::Css(&format!("nav button[data-tab={name}]")),
    )
    .await
}

#[tokio::test]
async fn the_page_chats_streams_signs_in_and_explores_in_chromium() {
    let node = Node::serving().await;
    let driver = start_driver();
    let client = browser(&driver).await;
    let outcome = drive_page(&node, &client).await;
    let screenshot = client.screenshot().await;
    client.close().await.expect("session closes");
    outcome.expect("page flow");
    let png = screenshot.expect("screenshot");
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    std::fs::write(screenshot_path(), &png).expect("screenshot saved");
    eprintln!("screenshot: {}", screenshot_path().display());
}

async fn drive_page(node: &Node, client: &Client) -> Result<(), String> {
    open_page(node, client).await?;
    let status = text_of(client, "node-status").await;
    if !status.contains("untrained seed") {
        return Err(format!("node status shows {status:?}"));
    }

    // The context limit from `GET /model`, shown beside the max tokens field and bounding it.
    let (_, model) = node.get("/model", None).await;
    let context = model["limits"]["context_tokens_max"]
        .as_u64()
        .ok_or_else(|| format!("GET /model has no limits: {model}"))?;
    let limits = text_of(client, "chat-limits").await;
    if !limits.contains(&format!("context {context} tokens")) {
        return Err(format!("limits line {limits:?}, context {context}"));
    }
    let max_attribute = client
        .execute(
            "return document.getElementById('chat-max-tokens').max;",
            Vec::new(),
        )
        .await
        .map_err(|e| e.to_string())?;
    if max_attribute != json!((context - 1).to_string()) {
        return Err(format!(
            "max tokens field max {max_attribute}, context {context}"
        ));
    }

    // Free tier, streamed to the end.
    chat(client, "Hello experts", 24).await;
    let usage = wait_js(
        client,
        "free chat finished",
        "return document.getElementById('chat-usage').textContent;",
    )
    .await;
    let usage = usage.as_str().unwrap_or_default().to_owned();
    if !usage.contains("free tier") || !usage.contains("completion tokens") {
        return Err(format!("usage line {usage:?}"));
    }
    let answered = wait_js(
        client,
        "streamed answer shown",
        "const m = document.querySelectorAll('.message.assistant'); return m.length ? m[m.length-1].textContent.length : 0;",
    )
    .await;
    if answered.as_u64().unwrap_or(0) == 0 {
        return Err("no streamed text".to_owned());
    }
    let layers = client
        .execute(
            "return document.querySelectorAll('#experts-used tbody tr').length;",
            Vec::new(),
        )
        .await
        .map_err(|e| e.to_string())?;
    if layers != json!(4) {
        return Err(format!("experts-used rows: {layers}"));
    }

    // A long answer stopped mid-stream. The page sends no seed, so an answer may end on its
    // own (an end-of-sequence token) before the click: then ask again.
    let mut stopped = false;
    for _ in 0..4 {
        chat(client, "Keep going", 1024).await;
        wait_js(
            client,
            "long answer streaming",
            "const m = document.querySelectorAll('.message.assistant'); return m[m.length-1].textContent.length > 0;",
        )
        .await;
        click(client, Locator::Id("chat-stop")).await.unwrap();
        let ended = wait_js(
            client,
            "long answer ended",
            "const m = document.querySelectorAll('.message.assistant'); const t = m[m.length-1].textContent; \
             if (t.endsWith('[stopped]')) return 'stopped'; \
             return document.getElementById('chat-send').disabled ? '' : 'finished';",
        )
        .await;
        if ended == json!("stopped") {
            stopped = true;
            break;
        }
    }
    if !stopped {
        return Err("the stop button never stopped a stream".to_owned());
    }

    // Sign in through the injected EIP-1193 provider.
    let wallet = TestWallet::new(0x41);
    node.fund(&wallet.address, "7").await;
    sign_in(node, client, &wallet).await?;
    let balance = wait_js(
        client,
        "balance shown",
        "return document.getElementById('wallet-balance').textContent;",
    )
    .await;
    let (available, _) = node.balance(&wallet.address).await;
    if balance != json!(format!("{available} BLY")) {
        return Err(format!("balance shows {balance}, ledger has {available}"));
    }
    if text_of(client, "wallet-address").await != wallet.address {
        return Err("wallet address not shown".to_owned());
    }

    // A paid chat; the balance follows the charge.
    chat(client, "Paid question", 8).await;
    wait_js(
        client,
        "paid chat finished",
        "return document.getElementById('chat-usage').textContent.includes('charged');",
    )
    .await;
    let (after, held) = node.balance(&wallet.address).await;
    if held.units() != 0 || after.units() >= available.units() {
        return Err(format!(
            "ledger after paid chat: {after} available, {held} held"
        ));
    }
    wait_js(
        client,
        "balance updated",
        &format!("return document.getElementById('wallet-balance').textContent === '{after} BLY';"),
    )
    .await;

    // The explorer lists chain A's genesis; the dashboard lists the experts.
    open_tab(client, "explorer").await.unwrap();
    wait_js(
        client,
        "explorer rows",
        "const r = document.querySelector('#explorer-blocks tbody tr'); return r && r.cells[2].textContent === 'genesis';",
    )
    .await;
    open_tab(client, "experts").await.unwrap();
    wait_js(
        client,
        "expert rows",
        "return document.querySelectorAll('#experts-table tbody tr').length === 32;",
    )
    .await;
    // The data view: a signed-in wallet submits a sample, listed as submitted, its history
    // one line; a sample under the minimum is refused with its code.
    open_tab(client, "data").await?;
    wait_js(
        client,
        "data view loaded",
        "return document.body.dataset.dataLoaded && !document.getElementById('data-submit').disabled;",
    )
    .await;
    let input = client.find(Locator::Id("data-text")).await.unwrap();
    input.send_keys("short").await.unwrap();
    click(client, Locator::Id("data-submit")).await.unwrap();
    wait_js(
        client,
        "short sample refused",
        "return document.getElementById('data-result').textContent.includes('text_too_short');",
    )
    .await;
    input.clear().await.unwrap();
    input
        .send_keys("A sample written on the page, long enough to count.")
        .await
        .unwrap();
    click(client, Locator::Id("data-submit")).await.unwrap();
    wait_js(
        client,
        "sample listed",
        "const r = document.querySelector('#data-samples tbody tr'); \
         return r && r.cells[1].textContent === 'submitted' && r.cells[4].textContent.startsWith('A sample written');",
    )
    .await;
    click(client, Locator::Css("#data-samples tbody tr a"))
        .await
        .unwrap();
    wait_js(
        client,
        "sample history",
        "return document.getElementById('data-history').textContent.includes(': submitted');",
    )
    .await;
    open_tab(client, "chat").await.unwrap();
    Ok(())
}

/// The repository's docs/ cut into one file per paragraph (many pieces for the held-out split).
fn docs_corpus(dir: &std::path::Path) -> PathBuf {
    let docs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs");
    let corpus = dir.join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    let mut count = 0;
    for entry in std::fs::read_dir(&docs).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|ext| ext != "md") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        for paragraph in text.split("\n\n").filter(|p| !p.trim().is_empty()) {
            std::fs::write(
                corpus.join(format!("{count:05}.txt")),
                format!("{paragraph}\n\n"),
            )
            .unwrap();
            count += 1;
        }
    }
    corpus
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_draws_the_learning_curve_of_a_learner_that_ran() {
    let corpus_dir = tempfile::tempdir().unwrap();
    let corpus = docs_corpus(corpus_dir.path());
    let node = Node::serving_with(|config| {
        let learning = &mut config.learning;
        learning.enabled = true;
        learning.corpus = vec![corpus.clone()];
        learning.experts = vec!["layer1.expert2".parse().unwrap()];
        // The router trains too, so every batch has a gradient even when the seed model's
        // router sends none of it to this expert.
        learning.router = true;
        learning.eval_every = 3;
        learning.eval_tokens = 256;
        learning.held_out_per_mille = 100;
        learning.slice_ms = 200;
    })
    .await;
    // The learner runs until the curve has a few points, then stops: the page draws a curve
    // that no longer moves.
    let mut services = Services::new(std::sync::Arc::clone(&node.state));
    services.spawn(Learner::new());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(services.run_until(async move {
        let _ = stopped.await;
    }));
    let deadline = Instant::now() + PAGE_WAIT * 5;
    loop {
        let status = node.state.learning_status();
        assert_ne!(status.state, "failed", "{:?}", status.error);
        if status.history.len() >= 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the learner never made 4 points: {status:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    let (status, learning) = node.get("/learning", None).await;
    assert_eq!(status, 200, "{learning}");
    assert_eq!(learning["state"], "stopped");
    let points = learning["history"].as_array().unwrap().clone();
    assert!(points.len() >= 4);
    let metrics = node.metrics().await;
    for family in [
        format!("blyan_learning_steps {}", learning["steps"]),
        format!("blyan_learning_tokens {}", learning["tokens"]),
        format!("blyan_learning_candidates {}", learning["candidates_made"]),
    ] {
        assert!(metrics.contains(&family), "missing {family} in\n{metrics}");
    }

    let driver = start_driver();
    let client = browser(&driver).await;
    let outcome = draw_learning(&node, &client, &points).await;
    client.close().await.expect("session closes");
    outcome.expect("learning view");
}

async fn draw_learning(node: &Node, client: &Client, points: &[Value]) -> Result<(), String> {
    open_page(node, client).await?;
    open_tab(client, "learning").await?;
    let drawn = wait_js(
        client,
        "learning curve drawn",
        "const svg = document.getElementById('learning-curve'); \
         const line = document.getElementById('learning-eval-line'); \
         if (!line || !svg.dataset.steps) return null; \
         return { steps: svg.dataset.steps, losses: svg.dataset.evalLosses, \
                  vertices: line.getAttribute('points').trim().split(/\\s+/).length, \
                  dots: svg.querySelectorAll('circle.point').length, \
                  train: !!document.getElementById('learning-train-line'), \
                  summary: document.getElementById('learning-summary').textContent };",
    )
    .await;
    let steps: Vec<u64> = points.iter().map(|p| p["step"].as_u64().unwrap()).collect();
    let losses: Vec<f64> = points
        .iter()
        .map(|p| p["eval_loss"].as_f64().unwrap())
        .collect();
    let drawn_steps: Vec<u64> = drawn["steps"]
        .as_str()
        .unwrap_or_default()
        .split(',')
        .map(|s| s.parse().unwrap())
        .collect();
    let drawn_losses: Vec<f64> = drawn["losses"]
        .as_str()
        .unwrap_or_default()
        .split(',')
        .map(|s| s.parse().unwrap())
        .collect();
    if drawn_steps != steps || drawn_losses != losses {
        return Err(format!(
            "the page drew steps {drawn_steps:?} losses {drawn_losses:?}, /learning has {steps:?} {losses:?}"
        ));
    }
    if drawn["vertices"] != json!(points.len()) || drawn["dots"] != json!(points.len()) {
        return Err(format!("{} points but the curve is {drawn}", points.len()));
    }
    if drawn["train"] != json!(true) {
        return Err("no training-loss line".to_owned());
    }
    let summary = drawn["summary"].as_str().unwrap_or_default();
    if !summary.contains("stopped") || !summary.contains("layer1.expert2") {
        return Err(format!("summary {summary:?}"));
    }
    Ok(())
}

/// An address as the page shortens it.
fn short(text: &str) -> String {
    format!("{}…{}", &text[..8], &text[text.len() - 4..])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_shows_a_proof_of_learning_claim_its_votes_and_the_authors_bond() {
    let node = Node::serving_with(|config| {
        // A short evaluation: this test checks what the page shows of a vote.
        config.pol.eval.windows = 8;
        config.pol.eval.positions = 64;
        config.pol.eval.threads = 1;
    })
    .await;
    let context = Arc::clone(
        node.state
            .pol()
            .expect("Proof-of-Learning is on by default"),
    );
    assert!(
        context.is_validator(),
        "the node's own key is the only validator"
    );
    let driver = start_driver();
    let client = browser(&driver).await;
    let outcome = drive_pol(&node, &client, &context).await;
    if outcome.is_ok() {
        open_tab(&client, "pol").await.expect("back to the claims");
        let png = client.screenshot().await.expect("screenshot");
        let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("blyan-api-page-pol.png");
        std::fs::write(&path, &png).expect("screenshot saved");
        eprintln!("screenshot: {}", path.display());
    }
    client.close().await.expect("session closes");
    outcome.expect("Proof-of-Learning view");
}

async fn drive_pol(node: &Node, client: &Client, context: &Arc<PolContext>) -> Result<(), String> {
    let validator = context.key.address().to_string();
    open_page(node, client).await?;

    // No claims yet: the rules, the one validator and the empty state.
    open_tab(client, "pol").await?;
    let empty = wait_js(
        client,
        "Proof-of-Learning rules shown",
        "if (!document.body.dataset.polLoaded) return null; \
         const rows = document.querySelectorAll('#pol-validators tbody tr'); \
         return { rules: document.getElementById('pol-rules').textContent, \
                  validators: Array.from(rows, (r) => Array.from(r.cells, (c) => c.textContent)), \
                  empty: !document.getElementById('pol-empty').hidden, \
                  claims: document.querySelectorAll('#pol-claims .claim').length };",
    )
    .await;
    let rules = empty["rules"].as_str().unwrap_or_default();
    if !rules.starts_with("mode pol")
        || !rules.contains("at least 1.00 %")
        || !rules.contains("100 BLY")
    {
        return Err(format!("rules {rules:?}"));
    }
    if empty["validators"] != json!([[validator, "1", "active"]]) {
        return Err(format!("validators {}", empty["validators"]));
    }
    if empty["empty"] != json!(true) || empty["claims"] != json!(0) {
        return Err(format!("no claims yet, but the page shows {empty}"));
    }

    // An author claims a byte-for-byte copy of a served expert improves the model by 20 %.
    let author = TestWallet::new(0x52);
    let key = AuthorKey::from_bytes(&[0x52; 32]).map_err(|e| e.to_string())?;
    assert_eq!(
        key.address().to_string(),
        author.address,
        "one key, two signers"
    );
    node.fund(&author.address, "1000").await;
    let candidate = node.copy_of_served(&key, "layer1.expert2");
    let claim = node
        .claim(
            &key,
            vec![candidate],
            blyan_pol::Losses {
                base: 5_000_000,
                candidate: 4_000_000,
            },
        )
        .await;
    // The node, the only validator, seeds the evaluation, votes and certifies the outcome.
    let mut decided = Value::Null;
    for _ in 0..3 {
        pol_tick(&node.state, context, &mut Default::default())
            .await
            .map_err(|e| e.to_string())?;
        let (status, body) = node.get("/pol/status", None).await;
        assert_eq!(status, 200, "{body}");
        if !body["claims"][0]["certificate"].is_null() {
            decided = body["claims"][0].clone();
            break;
        }
    }
    assert_eq!(decided["claim"], json!(claim.to_string()), "{decided}");
    assert_eq!(decided["status"], "rejected", "{decided}");
    assert_eq!(
        decided["votes"][0]["verdict"], "not_reproduced",
        "{decided}"
    );
    assert_eq!(decided["votes"][0]["validator"], json!(validator));
    assert_eq!(decided["certificate"]["bond"], "burn", "{decided}");
    let version = decided["candidates"][0]["version"].as_u64().unwrap();

    // The page shows the claim with its badge, candidate, vote and outcome.
    click(client, Locator::Id("pol-load")).await?;
    let shown = wait_js(
        client,
        "the claim shown",
        &format!(
            "const claim = document.querySelector('#pol-claims .claim[data-claim=\"{claim}\"]'); \
             if (!claim) return null; \
             const vote = claim.querySelector('table.votes tbody tr'); \
             return {{ status: claim.dataset.status, \
                      badge: claim.querySelector('.badge').textContent, \
                      candidates: claim.querySelector('.candidates').textContent, \
                      claimed: claim.querySelector('.claimed').textContent, \
                      vote: vote ? Array.from(vote.cells, (c) => c.textContent) : null, \
                      outcome: claim.querySelector('.outcome').textContent, \
                      payments: Array.from(claim.querySelectorAll('table.payments tbody tr'), \
                                           (r) => Array.from(r.cells, (c) => c.textContent)), \
                      empty: !document.getElementById('pol-empty').hidden }};"
        ),
    )
    .await;
    let vote = &decided["votes"][0]["losses"];
    // Even a rejected claim pays its validators for the evaluation.
    let payments: Vec<Value> = decided["certificate"]["payments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|payment| {
            json!([
                match payment["kind"].as_str().unwrap() {
                    "learning" => "learning reward",
                    "validation" => "validation reward",
                    "data" => "data reward",
                    other => panic!("unknown payment kind {other}"),
                },
                short(payment["to"].as_str().unwrap()),
                format!("{} BLY", payment["amount"].as_str().unwrap()),
            ])
        })
        .collect();
    let paid = &decided["certificate"]["payments"];
    assert_eq!(payments.len(), 1, "one validation reward: {paid}");
    assert_eq!(
        (&paid[0]["kind"], &paid[0]["to"]),
        (&json!("validation"), &json!(validator)),
        "{paid}"
    );
    let nats = |micros: &Value| format!("{:.4}", micros.as_f64().unwrap() / 1e6);
    let expected = json!({
        "status": "rejected",
        "badge": "rejected",
        "candidates": format!("candidates: layer1.expert2 v{version}"),
        "claimed": "claimed by the author: loss 5.0000 → 4.0000 (Δ +20.00 %); 0 dataset entries credited",
        "vote": [
            short(&validator), "not reproduced", nats(&vote["base"]), nats(&vote["candidate"]),
            "0.00 %", "—", decided["votes"][0]["detail"],
        ],
        "outcome": "rejected by certificate ".to_owned()
            + &short(decided["certificate"]["block"].as_str().unwrap())
            + " (1 vote); bond of 100 BLY burned",
        "payments": payments,
        "empty": false,
    });
    if shown != expected {
        return Err(format!("the page shows {shown:#}, expected {expected:#}"));
    }

    // The author signs in: the wallet history names the locked bond.
    sign_in(node, client, &author).await?;
    wait_js(
        client,
        "signed in",
        "return document.getElementById('wallet-balance').textContent;",
    )
    .await;
    open_tab(client, "wallet").await?;
    let rows = wait_js(
        client,
        "wallet history shown",
        "const rows = document.querySelectorAll('#wallet-history tbody tr'); \
         if (rows.length < 2) return null; \
         return Array.from(rows, (r) => [r.dataset.kind, r.cells[1].textContent, r.cells[2].textContent]);",
    )
    .await;
    let expected = json!([
        ["bond_lock", "bond locked", "−100 BLY"],
        ["transfer", "transfer", "+1000 BLY"],
    ]);
    if rows != expected {
        return Err(format!("wallet history {rows}, expected {expected}"));
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_page_shows_the_network_and_its_peers() {
    let (a, b, _networks) = crate::p2p::two_nodes().await;
    let a_peer = a.state.network().unwrap().local_peer().to_string();
    let driver = start_driver();
    let client = browser(&driver).await;
    let outcome = drive_network(&b, &client, &a_peer).await;
    client.close().await.expect("session closes");
    outcome.expect("network view");
}

async fn drive_network(node: &Node, client: &Client, peer: &str) -> Result<(), String> {
    open_page(node, client).await?;
    open_tab(client, "network").await?;
    let row = wait_js(
        client,
        "the peer's row",
        &format!(
            "if (!document.body.dataset.networkLoaded) return null; \
             const row = document.querySelector('#network-peers tr[data-peer=\"{peer}\"]'); \
             return row ? Array.from(row.cells, cell => cell.textContent) : null;"
        ),
    )
    .await;
    let cells: Vec<String> = serde_json::from_value(row).map_err(|e| e.to_string())?;
    if cells[2] != "connected" {
        return Err(format!("the peer's state reads {cells:?}"));
    }
    let experts = text_of(client, "network-experts").await;
    if !experts.starts_with("serving ") || !experts.contains("0 failovers") {
        return Err(format!("the remote experts line reads {experts:?}"));
    }
    let own = text_of(client, "network-self").await;
    let id = node.state.network().unwrap().local_peer().to_string();
    if !own.contains(&id) {
        return Err(format!("the page's own line reads {own:?}, without {id}"));
    }
    Ok(())
}

/// A teacher that finds every text inside the L1 band: the page test needs samples to vote on,
/// not the model's judgement of them (the dataset end-to-end test scores with the served model).
struct InBand;

impl blyan_node_core::Teacher for InBand {
    fn bits_per_byte(&self, texts: &[String]) -> Result<Vec<f64>, blyan_node_core::BoxError> {
        Ok(vec![2.0; texts.len()])
    }
}

/// The commit window of the voting test: long enough to commit from the page, short enough to
/// wait out.
const PAGE_COMMIT_WINDOW_MS: u64 = 4_000;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_commits_a_vote_keeps_its_salt_and_reveals_it_in_chromium() {
    let node = Node::start_with(|config| {
        config.datasets.commit_window_ms = PAGE_COMMIT_WINDOW_MS;
        config.datasets.reveal_window_ms = 600_000;
    })
    .await;
    let driver = start_driver();
    let client = browser(&driver).await;
    let outcome = drive_vote(&node, &client).await;
    client.close().await.expect("session closes");
    outcome.expect("voting from the page");
}

/// Inputs of the BLAKE3 test vectors: bytes `i % 251`, at chunk and block edges.
const BLAKE3_LENGTHS: [usize; 12] = [0, 1, 63, 64, 65, 1023, 1024, 1025, 2049, 3073, 4097, 8193];

async fn drive_vote(node: &Node, client: &Client) -> Result<(), String> {
    use blyan_quality::VoteVerdict;

    open_page(node, client).await?;

    // The page's blake3 agrees with the Rust crate: plain hashes across chunk and tree edges,
    // derive_key, and a vote commitment.
    let hashes = client
        .execute(
            "return arguments[0].map((n) => blake3.hash(Uint8Array.from({ length: n }, (_, i) => i % 251)));",
            vec![json!(BLAKE3_LENGTHS)],
        )
        .await
        .map_err(|e| e.to_string())?;
    let expected: Vec<String> = BLAKE3_LENGTHS
        .iter()
        .map(|n| {
            let input: Vec<u8> = (0..*n).map(|i| (i % 251) as u8).collect();
            blake3::hash(&input).to_hex().to_string()
        })
        .collect();
    if hashes != json!(expected) {
        return Err(format!("blake3.js hashes {hashes}, the crate {expected:?}"));
    }
    let material: Vec<u8> = (0..2049).map(|i| (i % 251) as u8).collect();
    let derived = client
        .execute(
            "return blake3.deriveKey('blyan test context', Uint8Array.from(arguments[0]));",
            vec![json!(material)],
        )
        .await
        .map_err(|e| e.to_string())?;
    let derived_rust = hex::encode(blake3::derive_key("blyan test context", &material));
    if derived != json!(derived_rust) {
        return Err(format!(
            "blake3.js derive_key {derived}, the crate {derived_rust}"
        ));
    }
    let wallet = TestWallet::new(0x61);
    let probe: blyan_chain::BlockHash = blyan_chain::BlockHash([7; 32]);
    let commitment = client
        .execute(
            "return voteCommitment(arguments[0], 'refuse', new Uint8Array(32).fill(9), arguments[1]);",
            vec![json!(probe.to_string()), json!(wallet.address)],
        )
        .await
        .map_err(|e| e.to_string())?;
    let commitment_rust = blyan_quality::vote_commitment(
        probe,
        VoteVerdict::Refuse,
        &[9; 32],
        wallet.address.parse().map_err(|_| "wallet address")?,
    );
    if commitment != json!(commitment_rust) {
        return Err(format!(
            "page commitment {commitment}, Rust {commitment_rust}"
        ));
    }

    // A sample from another contributor, past L1, open for votes.
    assert!(node.state.set_teacher(Arc::new(InBand)));
    let sample = node
        .state
        .submit_sample(
            AuthorKey::generate().address(),
            blyan_node_core::SampleInput {
                content: blyan_quality::SampleContent::Text {
                    text: "Experts in a mixture each learn a part of the language.".into(),
                },
                licence: "CC0-1.0".into(),
                source: "own writing".into(),
                language: "en".into(),
            },
        )
        .await
        .map_err(|e| e.to_string())?;
    blyan_node_core::dataset_tick(&node.state, &mut Default::default())
        .await
        .map_err(|e| e.to_string())?;
    node.fund(&wallet.address, "100").await;
    sign_in(node, client, &wallet).await?;
    wait_js(
        client,
        "signed in",
        "return document.getElementById('wallet-balance').textContent;",
    )
    .await;

    // Commit from the Data tab: only the commitment leaves the browser; the salt stays.
    open_tab(client, "data").await?;
    let row = format!("#data-samples tr[data-sample=\"{sample}\"]");
    wait_js(
        client,
        "the vote buttons",
        &format!("return document.querySelector('{row} button.vote-accept') !== null;"),
    )
    .await;
    click(client, Locator::Css(&format!("{row} button.vote-accept"))).await?;
    let committed = wait_js(
        client,
        "the commit written",
        "const text = document.getElementById('data-vote-result').textContent; \
         return text.startsWith('vote') ? text : null;",
    )
    .await;
    if !committed
        .as_str()
        .unwrap_or_default()
        .starts_with("vote committed as ")
    {
        return Err(format!("the commit reads {committed}"));
    }
    let kept = client
        .execute(
            "return JSON.parse(localStorage.getItem(`blyan.vote.${arguments[0]}.${arguments[1].toLowerCase()}`));",
            vec![json!(sample.to_string()), json!(wallet.address)],
        )
        .await
        .map_err(|e| e.to_string())?;
    let salt = kept["salt"].as_str().unwrap_or_default().to_owned();
    let (_, shown) = node.get(&format!("/datasets/{sample}"), None).await;
    let vote = &shown["votes"][0];
    if vote["voter"] != json!(wallet.address) || vote["stake"] != 10 || !vote["verdict"].is_null() {
        return Err(format!("the vote on chain reads {vote}"));
    }
    let mut salt_bytes = [0u8; 32];
    hex::decode_to_slice(&salt, &mut salt_bytes).map_err(|_| format!("salt {kept}"))?;
    let on_chain = blyan_quality::vote_commitment(
        sample,
        VoteVerdict::Accept,
        &salt_bytes,
        wallet.address.parse().map_err(|_| "wallet address")?,
    );
    if kept["commit"] != vote["commit"] || kept["commitment"] != json!(on_chain) {
        return Err(format!(
            "kept {kept}, on chain {vote}, expected commitment {on_chain}"
        ));
    }
    if node.balance(&wallet.address).await.1 != "10".parse().unwrap() {
        return Err("the stake is not held".to_owned());
    }

    // In the reveal window the page offers the reveal, sends verdict and salt, forgets the salt.
    tokio::time::sleep(Duration::from_millis(PAGE_COMMIT_WINDOW_MS)).await;
    click(client, Locator::Id("data-load")).await?;
    wait_js(
        client,
        "the reveal button",
        &format!("return document.querySelector('{row} button.vote-reveal') !== null;"),
    )
    .await;
    click(client, Locator::Css(&format!("{row} button.vote-reveal"))).await?;
    let revealed = wait_js(
        client,
        "the reveal written",
        "const text = document.getElementById('data-vote-result').textContent; \
         return text.startsWith('vote revealed') || text.startsWith('reveal refused') ? text : null;",
    )
    .await;
    if !revealed
        .as_str()
        .unwrap_or_default()
        .starts_with("vote revealed as ")
    {
        return Err(format!("the reveal reads {revealed}"));
    }
    let (_, shown) = node.get(&format!("/datasets/{sample}"), None).await;
    if shown["votes"][0]["verdict"] != "accept" {
        return Err(format!("the revealed vote reads {}", shown["votes"][0]));
    }
    let forgotten = client
        .execute(
            "return localStorage.getItem(`blyan.vote.${arguments[0]}.${arguments[1].toLowerCase()}`);",
            vec![json!(sample.to_string()), json!(wallet.address)],
        )
        .await
        .map_err(|e| e.to_string())?;
    if !forgotten.is_null() {
        return Err(format!("the salt is still kept: {forgotten}"));
    }
    wait_js(
        client,
        "the row shows the revealed vote",
        &format!(
            "const row = document.querySelector('{row}'); \
             return row && row.cells[5].textContent === 'revealed: accept';"
        ),
    )
    .await;
    Ok(())
}
