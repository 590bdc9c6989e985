//! `/v1/chat/completions` as OpenAI clients use it: the wire format checked over HTTP, then the
//! official `openai` Python package (from the project's virtual environment) driving the node,
//! streaming and not, paying with an API key or on the free tier with a placeholder key.

use std::path::PathBuf;
use std::process::Command;

use blyan_ledger::Amount;
use serde_json::{Value, json};

use crate::support::{Node, TestWallet, check_refused, read_events, user_says};

#[tokio::test]
async fn completions_follow_the_openai_wire_format() {
    let node = Node::serving().await;
    let (status, models) = node.get("/v1/models", None).await;
    assert_eq!(status, 200);
    assert_eq!(models["data"][0]["id"], blyan_api_types::MODEL_ID);

    let body =
        json!({ "model": blyan_api_types::MODEL_ID, "messages": user_says("hi"), "max_tokens": 6 });
    let (status, completion) = node.post("/v1/chat/completions", &body, None).await;
    assert_eq!(status, 200, "{completion}");
    assert_eq!(completion["object"], "chat.completion");
    assert!(completion["id"].as_str().unwrap().starts_with("chatcmpl-"));
    let choice = &completion["choices"][0];
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(
        matches!(choice["finish_reason"].as_str(), Some("stop" | "length")),
        "{choice}"
    );
    let usage = &completion["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64(),
        Some(
            usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
        )
    );

    let mut streaming = body.clone();
    streaming["stream"] = json!(true);
    streaming["stream_options"] = json!({ "include_usage": true });
    let response = node
        .http
        .post(node.url("/v1/chat/completions"))
        .json(&streaming)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let events = read_events(response).await;
    let (last, chunks) = events.split_last().unwrap();
    assert_eq!(last.data, "[DONE]");
    let chunks: Vec<Value> = chunks
        .iter()
        .map(|e| serde_json::from_str(&e.data).unwrap())
        .collect();
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    let usage = chunks.last().unwrap();
    assert!(usage["choices"].as_array().unwrap().is_empty(), "{usage}");
    let finishing = &chunks[chunks.len() - 2];
    assert!(
        finishing["choices"][0]["finish_reason"].is_string(),
        "{finishing}"
    );
    let text: String = chunks
        .iter()
        .filter_map(|c| c["choices"][0]["delta"]["content"].as_str())
        .collect();
    let completion_tokens = usage["usage"]["completion_tokens"].as_u64().unwrap();
    assert!(
        completion_tokens >= 1 && (completion_tokens > 1 || text.len() <= 4),
        "{text:?}"
    );

    check_refused(
        &node
            .post(
                "/v1/chat/completions",
                &json!({ "model": "gpt-4o", "messages": user_says("hi") }),
                None,
            )
            .await,
        404,
        "unknown_model",
    );
    check_refused(
        &node
            .post(
                "/v1/chat/completions",
                &json!({ "model": blyan_api_types::MODEL_ID, "messages": user_says("hi"), "n": 2 }),
                None,
            )
            .await,
        400,
        "invalid_request",
    );
}

/// The project's Python: `$BLYAN_VENV/bin/python`, else the clone's `.venv`.
fn venv_python() -> PathBuf {
    let venv = std::env::var_os("BLYAN_VENV").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv"),
        PathBuf::from,
    );
    venv.join("bin/python")
}

const CLIENT_SCRIPT: &str = r#"
import json, sys
from openai import OpenAI

client = OpenAI(base_url=sys.argv[1], api_key=sys.argv[2], max_retries=0, timeout=120)
model = sys.argv[3]
messages = [{"role": "user", "content": "Say something about mixtures of experts."}]
plain = client.chat.completions.create(model=model, messages=messages, max_tokens=8, seed=3)
pieces = []
usage = None
for chunk in client.chat.completions.create(
    model=model, messages=messages, max_tokens=8, seed=3, stream=True,
    stream_options={"include_usage": True},
):
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
    if chunk.usage is not None:
        usage = chunk.usage
try:
    client.chat.completions.create(model="gpt-4o", messages=messages)
    refused = None
except Exception as error:
    refused = getattr(error, "status_code", None)
print(json.dumps({
    "plain_text": plain.choices[0].message.content,
    "plain_completion_tokens": plain.usage.completion_tokens,
    "plain_prompt_tokens": plain.usage.prompt_tokens,
    "finish_reason": plain.choices[0].finish_reason,
    "streamed_text": "".join(pieces),
    "streamed_completion_tokens": usage.completion_tokens if usage else None,
    "refused_status": refused,
}))
"#;

#[tokio::test]
async fn the_openai_python_client_streams_and_pays_with_an_api_key() {
    let python = venv_python();
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup.sh (it installs the openai package from scripts/requirements.txt)",
        python.display()
    );
    let node = Node::serving().await;
    let wallet = TestWallet::new(0x31);
    node.fund(&wallet.address, "2").await;
    let tokens = wallet.sign_in(&node).await;
    let (_, created) = node
        .post(
            "/auth/api-keys",
            &json!({ "name": "openai-sdk" }),
            Some(&tokens.access_token),
        )
        .await;
    let key = created["key"].as_str().unwrap().to_owned();
    let base_url = node.url("/v1");
    let output = run_python(
        python,
        CLIENT_SCRIPT.to_owned(),
        vec![base_url, key, blyan_api_types::MODEL_ID.to_owned()],
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the openai client failed (is `openai` installed in the venv? scripts/requirements.txt pins it):\n{stderr}"
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("the script's JSON report");
    // Same seed, same prompt: streaming and not give the same text.
    assert_eq!(report["plain_text"], report["streamed_text"], "{report}");
    assert_eq!(
        report["plain_completion_tokens"], report["streamed_completion_tokens"],
        "{report}"
    );
    assert!(
        matches!(report["finish_reason"].as_str(), Some("stop" | "length")),
        "{report}"
    );
    assert_eq!(report["refused_status"], 404, "{report}");

    // Both requests were paid from the wallet, exactly their prompt and completion tokens.
    let tokens_each = report["plain_completion_tokens"].as_u64().unwrap();
    let prompt_each = report["plain_prompt_tokens"].as_u64().unwrap();
    let ledger = node.state.ledger().unwrap();
    let fee = blyan_ledger::Ledger::tokenomics(ledger.as_ref())
        .chat_fee(prompt_each, tokens_each)
        .unwrap();
    let (available, held) = node.balance(&wallet.address).await;
    assert_eq!(held.units(), 0);
    let funded: Amount = "2".parse().unwrap();
    assert_eq!(available.units(), funded.units() - 2 * fee.units());
}

const PLACEHOLDER_SCRIPT: &str = r#"
import json, sys
from openai import OpenAI

base_url, model = sys.argv[1], sys.argv[2]
messages = [{"role": "user", "content": "Hello"}]
# What a new user types: any placeholder, as llama.cpp and vLLM accept.
client = OpenAI(base_url=base_url, api_key="none", max_retries=0, timeout=120)
plain = client.chat.completions.create(model=model, messages=messages, max_tokens=4, seed=1)
pieces = []
for chunk in client.chat.completions.create(
    model=model, messages=messages, max_tokens=4, seed=1, stream=True,
):
    if chunk.choices and chunk.choices[0].delta.content:
        pieces.append(chunk.choices[0].delta.content)
refused = {}
# Values shaped like this node's credentials are checked, and refused when they fail.
for name, key in [("api_key", "bly_" + "00" * 32), ("jwt", "eyJhbGciOiJIUzI1NiJ9.e30.c2ln")]:
    try:
        OpenAI(base_url=base_url, api_key=key, max_retries=0, timeout=120).chat.completions.create(
            model=model, messages=messages, max_tokens=4)
        refused[name] = None
    except Exception as error:
        refused[name] = [getattr(error, "status_code", None), error.body.get("code") if isinstance(getattr(error, "body", None), dict) else None]
print(json.dumps({
    "plain_text": plain.choices[0].message.content,
    "plain_completion_tokens": plain.usage.completion_tokens,
    "streamed_text": "".join(pieces),
    "refused": refused,
}))
"#;

#[tokio::test]
async fn the_openai_python_client_chats_on_the_free_tier_with_a_placeholder_key() {
    let python = venv_python();
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup.sh (it installs the openai package from scripts/requirements.txt)",
        python.display()
    );
    // A fresh node: nobody signed in, no wallet funded.
    let node = Node::serving().await;
    let base_url = node.url("/v1");
    let output = run_python(
        python,
        PLACEHOLDER_SCRIPT.to_owned(),
        vec![base_url, blyan_api_types::MODEL_ID.to_owned()],
    )
    .await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the openai client failed with a placeholder key:\n{stderr}"
    );
    let report: Value = serde_json::from_slice(&output.stdout).expect("the script's JSON report");
    assert!(
        (1..=4).contains(&report["plain_completion_tokens"].as_u64().unwrap()),
        "{report}"
    );
    assert_eq!(report["plain_text"], report["streamed_text"], "{report}");
    // A Blyan-shaped credential that fails is refused, never served as the free tier.
    assert_eq!(
        report["refused"]["api_key"],
        json!([401, "api_key_invalid"]),
        "{report}"
    );
    assert_eq!(
        report["refused"]["jwt"],
        json!([401, "token_invalid"]),
        "{report}"
    );
}

/// The first ```python block of `docs/guide.md`, the user's guide.
fn guide_example() -> String {
    let guide = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/guide.md"),
    )
    .expect("docs/guide.md");
    let start = guide
        .find("```python\n")
        .expect("a python example in the guide")
        + 10;
    let end = start + guide[start..].find("```").expect("the example's end");
    guide[start..end].to_owned()
}

#[tokio::test]
async fn the_guides_openai_example_runs_as_written_against_a_fresh_node() {
    let python = venv_python();
    assert!(
        python.exists(),
        "{} is missing: run scripts/setup.sh",
        python.display()
    );
    let example = guide_example();
    let guide_url = "http://127.0.0.1:8700/v1";
    assert!(example.contains(guide_url), "{example}");
    let node = Node::serving().await;
    // Only the address changes: the test node listens on a free port.
    let script = example.replace(guide_url, &node.url("/v1"));
    let output = run_python(python, script, vec![]).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "the guide's example failed:\n{stderr}"
    );
    // Two answers printed: the plain one and the streamed one.
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!stdout.trim().is_empty(), "the example printed nothing");
}

/// Runs `script` with `args` on `python`, off the async workers, without the caller's OpenAI
/// settings (the script names the node itself).
async fn run_python(python: PathBuf, script: String, args: Vec<String>) -> std::process::Output {
    tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg("-c")
            .arg(script)
            .args(args)
            .env_remove("OPENAI_API_KEY")
            .env_remove("OPENAI_BASE_URL")
            .output()
    })
    .await
    .unwrap()
    .expect("python runs")
}
