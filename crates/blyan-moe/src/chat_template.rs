//! The chat template: how a conversation becomes the text the model reads. It sits beside the
//! tokenizer because both define the model's input; a node, a trainer and an evaluator that
//! format a conversation differently would score and answer a different model.
//!
//! A model that publishes `tokenizer_config.json` with a `chat_template` (Jinja) is prompted
//! the way Hugging Face's `apply_chat_template` prompts it: [`ChatTemplate`] renders it with
//! `minijinja` (trimmed blocks, Python string methods, `raise_exception`) over `messages`,
//! `add_generation_prompt`, `bos_token` and `eos_token`. A broken template is refused when the
//! model is loaded or published ([`MoeError::ChatTemplate`]), not at the first chat. A model
//! without one ([`ChatFormat::Builtin`]) gets one `<|role|>` line per message followed by its
//! text, then the assistant's turn opened for the model to continue:
//!
//! ```
//! use blyan_moe::{ChatRole, ChatTurn, format_chat_prompt};
//!
//! let prompt = format_chat_prompt(&[
//!     ChatTurn { role: ChatRole::System, text: "be brief" },
//!     ChatTurn { role: ChatRole::User, text: "hi" },
//! ]);
//! assert_eq!(prompt, "<|system|>\nbe brief\n<|user|>\nhi\n<|assistant|>\n");
//! ```

use std::fmt;
use std::sync::Arc;

use serde::Serialize;

use crate::error::{MoeError, Result};

/// Who said a message of a conversation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChatRole {
    /// Instructions for the assistant.
    System,
    /// The person chatting.
    User,
    /// The model's earlier answers.
    Assistant,
}

impl ChatRole {
    /// The role named `name` (`system`, `user` or `assistant`), if any.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "system" => Some(Self::System),
            "user" => Some(Self::User),
            "assistant" => Some(Self::Assistant),
            _ => None,
        }
    }

    /// The role's name as the template writes it.
    pub fn name(self) -> &'static str {
        match self {
            Self::System => "system",
            Self::User => "user",
            Self::Assistant => "assistant",
        }
    }
}

impl fmt::Display for ChatRole {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One message of a conversation, as the template reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChatTurn<'a> {
    /// Who said it.
    pub role: ChatRole,
    /// What was said.
    pub text: &'a str,
}

/// The prompt for `turns` (oldest first): each turn as `<|role|>\ntext\n`, then
/// `<|assistant|>\n`. Bounds on the number and size of turns are the caller's (the node's chat
/// session enforces them and the tokenizer bounds the prompt).
pub fn format_chat_prompt(turns: &[ChatTurn<'_>]) -> String {
    let mut prompt = String::new();
    for turn in turns {
        prompt.push_str("<|");
        prompt.push_str(turn.role.name());
        prompt.push_str("|>\n");
        prompt.push_str(turn.text);
        prompt.push('\n');
    }
    prompt.push_str("<|assistant|>\n");
    prompt
}

/// `tokenizer_config.json`: the tokenizer's settings beside `tokenizer.json`, where Hugging
/// Face models keep their chat template.
pub const TOKENIZER_CONFIG_FILE_NAME: &str = "tokenizer_config.json";

/// Largest `tokenizer_config.json` accepted, in bytes (some list every added token).
pub const TOKENIZER_CONFIG_JSON_BYTES_MAX: u64 = 16 << 20;

/// Longest chat template accepted, in bytes.
pub const CHAT_TEMPLATE_BYTES_MAX: usize = 256 << 10;

/// The name the template is compiled under.
const TEMPLATE_NAME: &str = "chat_template";

/// A model's own chat template (`chat_template` of its `tokenizer_config.json`), compiled.
pub struct ChatTemplate {
    environment: minijinja::Environment<'static>,
    bos_token: String,
    eos_token: String,
}

impl fmt::Debug for ChatTemplate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ChatTemplate")
            .field("bos_token", &self.bos_token)
            .field("eos_token", &self.eos_token)
            .finish_non_exhaustive()
    }
}

/// A special token in `tokenizer_config.json`: a string, or an object with its `content`.
fn special_token(config: &serde_json::Value, name: &str) -> String {
    match &config[name] {
        serde_json::Value::String(token) => token.clone(),
        serde_json::Value::Object(token) => token
            .get("content")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned(),
        _ => String::new(),
    }
}

fn template_error(reason: impl fmt::Display) -> MoeError {
    MoeError::ChatTemplate {
        reason: reason.to_string(),
    }
}

/// One message as templates read it (`message['role']`, `message['content']`).
#[derive(Serialize)]
struct TemplateMessage<'a> {
    role: &'static str,
    content: &'a str,
}

impl ChatTemplate {
    /// The template of a `tokenizer_config.json` document: `Ok(None)` when it has no
    /// `chat_template`; [`MoeError::ChatTemplate`] when the document is not JSON, the template
    /// is not a string (or a list of named templates with a `default`), is too long, or does
    /// not compile.
    pub fn from_tokenizer_config(json: &[u8]) -> Result<Option<Self>> {
        let config: serde_json::Value = serde_json::from_slice(json)
            .map_err(|error| template_error(format!("{TOKENIZER_CONFIG_FILE_NAME}: {error}")))?;
        let source = match &config["chat_template"] {
            serde_json::Value::Null => return Ok(None),
            serde_json::Value::String(source) => source.clone(),
            // Several named templates (`default`, `tool_use`, …): chat uses `default`.
            serde_json::Value::Array(named) => named
                .iter()
                .find(|entry| entry["name"] == "default")
                .and_then(|entry| entry["template"].as_str())
                .ok_or_else(|| template_error("chat_template lists no `default` template"))?
                .to_owned(),
            other => {
                return Err(template_error(format!(
                    "chat_template must be a string, not {other}"
                )));
            }
        };
        let bos_token = special_token(&config, "bos_token");
        let eos_token = special_token(&config, "eos_token");
        Self::new(source, bos_token, eos_token).map(Some)
    }

    /// Compiles `source` with the special tokens the template may name.
    pub fn new(source: String, bos_token: String, eos_token: String) -> Result<Self> {
        if source.len() > CHAT_TEMPLATE_BYTES_MAX {
            return Err(template_error(format!(
                "{} bytes, longer than {CHAT_TEMPLATE_BYTES_MAX}",
                source.len()
            )));
        }
        let mut environment = minijinja::Environment::new();
        // As transformers compiles chat templates (`ImmutableSandboxedEnvironment(trim_blocks=True,
        // lstrip_blocks=True)` with `raise_exception`).
        environment.set_trim_blocks(true);
        environment.set_lstrip_blocks(true);
        environment
            .set_unknown_method_callback(minijinja_contrib::pycompat::unknown_method_callback);
        environment.add_function(
            "raise_exception",
            |message: String| -> std::result::Result<String, minijinja::Error> {
                Err(minijinja::Error::new(
                    minijinja::ErrorKind::InvalidOperation,
                    message,
                ))
            },
        );
        environment
            .add_template_owned(TEMPLATE_NAME, source)
            .map_err(template_error)?;
        Ok(Self {
            environment,
            bos_token,
            eos_token,
        })
    }

    /// The prompt for `turns` (oldest first), the assistant's turn opened
    /// (`add_generation_prompt`). A template that refuses the conversation (its
    /// `raise_exception`, e.g. roles that do not alternate) is [`MoeError::ChatTemplateRefused`].
    pub fn render(&self, turns: &[ChatTurn<'_>]) -> Result<String> {
        let messages: Vec<TemplateMessage<'_>> = turns
            .iter()
            .map(|turn| TemplateMessage {
                role: turn.role.name(),
                content: turn.text,
            })
            .collect();
        let refused = |error: minijinja::Error| MoeError::ChatTemplateRefused {
            reason: error
                .detail()
                .map_or_else(|| error.to_string(), str::to_owned),
        };
        self.environment
            .get_template(TEMPLATE_NAME)
            .map_err(refused)?
            .render(minijinja::context! {
                messages => messages,
                add_generation_prompt => true,
                bos_token => self.bos_token.as_str(),
                eos_token => self.eos_token.as_str(),
            })
            .map_err(refused)
    }
}

/// How a model's conversations become prompts: its own template, else the built-in format
/// ([`format_chat_prompt`]).
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub enum ChatFormat {
    /// The model's `chat_template`.
    Template(Arc<ChatTemplate>),
    /// The model has none: [`format_chat_prompt`].
    #[default]
    Builtin,
}

impl ChatFormat {
    /// The format of a model whose `tokenizer_config.json` is `json` (none: the built-in one).
    pub fn from_tokenizer_config(json: Option<&[u8]>) -> Result<Self> {
        match json
            .map(ChatTemplate::from_tokenizer_config)
            .transpose()?
            .flatten()
        {
            Some(template) => Ok(Self::Template(Arc::new(template))),
            None => Ok(Self::Builtin),
        }
    }

    /// The prompt for `turns`, the assistant's turn opened.
    pub fn prompt(&self, turns: &[ChatTurn<'_>]) -> Result<String> {
        match self {
            Self::Template(template) => template.render(turns),
            Self::Builtin => Ok(format_chat_prompt(turns)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_round_trip_through_their_names() {
        for role in [ChatRole::System, ChatRole::User, ChatRole::Assistant] {
            assert_eq!(ChatRole::from_name(role.name()), Some(role));
            assert_eq!(role.to_string(), role.name());
        }
        assert_eq!(ChatRole::from_name("tool"), None);
        assert_eq!(ChatRole::from_name("User"), None);
    }

    #[test]
    fn an_empty_conversation_opens_the_assistant_turn() {
        assert_eq!(format_chat_prompt(&[]), "<|assistant|>\n");
    }

    /// Mixtral-8x7B-Instruct-v0.1's `chat_template` and special tokens, as published.
    const MIXTRAL_CONFIG: &str = r#"{
        "bos_token": "<s>",
        "eos_token": {"content": "</s>", "lstrip": false, "normalized": false, "rstrip": false, "single_word": false},
        "chat_template": "{{ bos_token }}{% for message in messages %}{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}{% endif %}{% endfor %}"
    }"#;

    fn turns<'a>(pairs: &[(ChatRole, &'a str)]) -> Vec<ChatTurn<'a>> {
        pairs
            .iter()
            .map(|&(role, text)| ChatTurn { role, text })
            .collect()
    }

    #[test]
    fn a_mixtral_template_renders_what_hugging_face_renders() {
        let format = ChatFormat::from_tokenizer_config(Some(MIXTRAL_CONFIG.as_bytes())).unwrap();
        assert!(matches!(format, ChatFormat::Template(_)));
        let prompt = format
            .prompt(&turns(&[
                (ChatRole::User, "Hello, how are you?"),
                (
                    ChatRole::Assistant,
                    "I'm doing great. How can I help you today?",
                ),
                (
                    ChatRole::User,
                    "I'd like to show off how chat templating works!",
                ),
            ]))
            .unwrap();
        // transformers 5.23 `render_jinja_template(..., add_generation_prompt=True,
        // bos_token="<s>", eos_token="</s>")` on this template and conversation.
        assert_eq!(
            prompt,
            "<s>[INST] Hello, how are you? [/INST]I'm doing great. How can I help you today?</s>[INST] I'd like to show off how chat templating works! [/INST]"
        );
    }

    #[test]
    fn trimmed_blocks_python_methods_and_the_generation_prompt_render_as_in_transformers() {
        // The newlines after block tags are trimmed (`trim_blocks`); the expected text is
        // transformers 5.23's `render_jinja_template` of the same template and conversation.
        let config = serde_json::json!({
            "chat_template": "{% for message in messages %}\n{{'<|im_start|>' + message['role'] + '\n' + message['content'].strip() + '<|im_end|>' + '\n'}}{% endfor %}\n{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
        });
        let format =
            ChatFormat::from_tokenizer_config(Some(config.to_string().as_bytes())).unwrap();
        let prompt = format
            .prompt(&turns(&[
                (ChatRole::System, "  be brief "),
                (ChatRole::User, "hi"),
            ]))
            .unwrap();
        assert_eq!(
            prompt,
            "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
        );
    }

    #[test]
    fn a_template_refusing_the_conversation_says_why() {
        let format = ChatFormat::from_tokenizer_config(Some(MIXTRAL_CONFIG.as_bytes())).unwrap();
        match format.prompt(&turns(&[
            (ChatRole::System, "be brief"),
            (ChatRole::User, "hi"),
        ])) {
            Err(MoeError::ChatTemplateRefused { reason }) => {
                assert!(reason.contains("roles must alternate"), "{reason}");
            }
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn without_a_template_the_builtin_format_is_used() {
        let conversation = turns(&[(ChatRole::User, "hi")]);
        for config in [None, Some(br#"{"bos_token": "<s>"}"#.as_slice())] {
            let format = ChatFormat::from_tokenizer_config(config).unwrap();
            assert!(matches!(format, ChatFormat::Builtin));
            assert_eq!(
                format.prompt(&conversation).unwrap(),
                format_chat_prompt(&conversation)
            );
        }
    }

    #[test]
    fn a_broken_template_is_refused_when_loaded() {
        let check =
            |json: &str, expected: &str| match ChatTemplate::from_tokenizer_config(json.as_bytes())
            {
                Err(MoeError::ChatTemplate { reason }) => {
                    assert!(reason.contains(expected), "{reason}")
                }
                other => panic!("expected a template error with {expected:?}, got {other:?}"),
            };
        check(
            r#"{"chat_template": "{% for message in messages %}{{ message"}"#,
            "syntax",
        );
        check(r#"{"chat_template": 7}"#, "must be a string");
        check(
            r#"{"chat_template": [{"name": "tool_use", "template": ""}]}"#,
            "default",
        );
        check("not json", TOKENIZER_CONFIG_FILE_NAME);
        let long = serde_json::json!({ "chat_template": "x".repeat(CHAT_TEMPLATE_BYTES_MAX + 1) });
        check(&long.to_string(), "longer than");
    }
}
