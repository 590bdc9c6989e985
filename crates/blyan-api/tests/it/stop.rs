//! Stop sequences (`stop`) over real HTTP, on the native `/chat` routes and the OpenAI one,
//! streamed and not: the answer ends before the first occurrence, `finish_reason` is `stop`,
//! a stop sequence spanning two tokens is never streamed in part, and a paid chat is charged
//! the tokens generated up to the stop sequence.

use blyan_ledger::{Amount, Ledger as _};
use serde_json::{Value, json};

use crate::support::{Node, SseEvent, TestWallet, read_events, user_says};

const PROMPT: &str = "Tell me about the experts.";
const MAX_TOKENS: u32 = 48;

/// The fee the ledger charges for `prompt` and `completion` tokens.
fn fee(node: &Node, prompt: u64, completion: u64) -> Amount {
    node.state
        .ledger()
        .unwrap()
        .tokenomics()
        .chat_fee(prompt, completion)
        .unwrap()
}

fn body(stop: Option<Value>) -> Value {
    let mut body = json!({
        "model": blyan_api_types::MODEL_ID,
        "messages": user_says(PROMPT),
        "max_tokens": MAX_TOKENS,
        "temperature": 0.0,
    });
    if let Some(stop) = stop {
        body["stop"] = stop;
    }
    body
}

/// A stop sequence of two ASCII characters (two tokens of the byte-level vocabulary) that
/// `text` holds after its first character, and the answer it must leave: `text` before its
/// first occurrence.
fn two_token_stop(text: &str) -> (String, String) {
    let chars: Vec<char> = text.chars().collect();
    let at = (1..chars.len().saturating_sub(1))
        .find(|&at| chars[at].is_ascii() && chars[at + 1].is_ascii())
        .unwrap_or_else(|| panic!("no two ASCII characters in a row to stop at: {text:?}"));
    let stop: String = chars[at..at + 2].iter().collect();
    let before = &text[..text.find(&stop).expect("taken from the text")];
    (stop, before.to_owned())
}

/// Tokens the greedy answer takes to contain `stop`: the least `max_tokens` whose answer
/// holds it (holding it is monotone in the budget), found by bisection.
async fn tokens_to_stop(node: &Node, token: Option<&str>, stop: &str) -> u64 {
    let (mut low, mut high) = (1, MAX_TOKENS);
    while low < high {
        let middle = u32::midpoint(low, high);
        let mut request = body(None);
        request["max_tokens"] = json!(middle);
        let (status, done) = node.post("/chat", &request, token).await;
        assert_eq!(status, 200, "{done}");
        if done["text"].as_str().unwrap().contains(stop) {
            high = middle;
        } else {
            low = middle + 1;
        }
    }
    u64::from(low)
}

/// The streamed `delta` texts of a native stream, and its `done` event.
fn deltas_and_done(events: &[SseEvent]) -> (Vec<String>, Value) {
    let (last, deltas) = events.split_last().expect("a final event");
    assert_eq!(last.name, "done", "{events:?}");
    let texts = deltas
        .iter()
        .map(|event| {
            assert_eq!(event.name, "delta", "{events:?}");
            let delta: Value = serde_json::from_str(&event.data).unwrap();
            delta["text"].as_str().unwrap().to_owned()
        })
        .collect();
    (texts, serde_json::from_str(&last.data).unwrap())
}

#[tokio::test]
async fn a_stop_sequence_ends_paid_answers_streamed_or_not_and_bills_the_tokens_generated() {
    let node = Node::serving().await;
    let wallet = TestWallet::new(0x41);
    node.fund(&wallet.address, "10").await;
    let access = wallet.sign_in(&node).await.access_token;
    let token = Some(access.as_str());

    let (status, full) = node.post("/chat", &body(None), token).await;
    assert_eq!(status, 200, "{full}");
    assert_eq!(
        full["finish_reason"], "length",
        "the noise model never ends early"
    );
    let text = full["text"].as_str().unwrap();
    let (stop, before) = two_token_stop(text);
    // Generated up to and including the stop sequence's second token.
    let expected_tokens = tokens_to_stop(&node, token, &stop).await;
    assert!(expected_tokens >= 2, "{expected_tokens}");

    let check = |done: &Value, what: &str| {
        assert_eq!(done["finish_reason"], "stop", "{what}: {done}");
        let usage = &done["usage"];
        let prompt = usage["prompt_tokens"].as_u64().unwrap();
        assert_eq!(
            usage["completion_tokens"], expected_tokens,
            "{what}: {done}"
        );
        assert_eq!(
            done["cost"]["tokens_charged"], expected_tokens,
            "{what}: {done}"
        );
        let charged: Amount = done["cost"]["charged"].as_str().unwrap().parse().unwrap();
        assert_eq!(
            charged,
            fee(&node, prompt, expected_tokens),
            "{what}: {done}"
        );
    };

    // Native, whole; one string or a list with a stop that never occurs.
    let (status, done) = node
        .post("/chat", &body(Some(json!(stop.clone()))), token)
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["text"], before, "{done}");
    check(&done, "/chat");
    let (status, done) = node
        .post(
            "/chat",
            &body(Some(json!(["\u{1}never\u{2}", stop.clone()]))),
            token,
        )
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["text"], before, "{done}");

    // Native, streamed: no delta carries any part of the stop sequence.
    let response = node
        .http
        .post(node.url("/chat/stream"))
        .bearer_auth(&access)
        .json(&body(Some(json!([stop.clone()]))))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (deltas, done) = deltas_and_done(&read_events(response).await);
    assert_eq!(deltas.concat(), before, "{deltas:?}");
    assert_eq!(done["text"], before, "{done}");
    check(&done, "/chat/stream");

    // The wallet holds nothing back after the four chats.
    let (_, held) = node.balance(&wallet.address).await;
    assert_eq!(held.units(), 0);
}

#[tokio::test]
async fn a_stop_sequence_ends_openai_completions_streamed_or_not() {
    let node = Node::serving().await;
    let (status, full) = node.post("/v1/chat/completions", &body(None), None).await;
    assert_eq!(status, 200, "{full}");
    let text = full["choices"][0]["message"]["content"].as_str().unwrap();
    let (stop, before) = two_token_stop(text);

    let (status, done) = node
        .post(
            "/v1/chat/completions",
            &body(Some(json!(stop.clone()))),
            None,
        )
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["choices"][0]["message"]["content"], before, "{done}");
    assert_eq!(done["choices"][0]["finish_reason"], "stop", "{done}");

    let mut streaming = body(Some(json!([stop.clone()])));
    streaming["stream"] = json!(true);
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
        .map(|event| serde_json::from_str(&event.data).unwrap())
        .collect();
    let streamed: String = chunks
        .iter()
        .filter_map(|chunk| chunk["choices"][0]["delta"]["content"].as_str())
        .collect();
    assert_eq!(streamed, before, "{chunks:?}");
    let finish = chunks.last().unwrap()["choices"][0]["finish_reason"].clone();
    assert_eq!(finish, "stop", "{chunks:?}");

    // OpenAI's bound: more than four stop sequences are refused naming the field.
    let (status, refused) = node
        .post(
            "/v1/chat/completions",
            &body(Some(json!(["a", "b", "c", "d", "e"]))),
            None,
        )
        .await;
    assert_eq!(status, 400, "{refused}");
    assert_eq!(refused["error"]["code"], "invalid_request", "{refused}");
    assert!(
        refused["error"]["message"]
            .as_str()
            .unwrap()
            .contains("stop"),
        "{refused}"
    );
}
