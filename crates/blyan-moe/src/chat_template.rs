//! The chat template: how a conversation becomes the text the model reads. It sits beside the
//! tokenizer because both define the model's input; a node, a trainer and an evaluator that
//! format a conversation differently would score and answer a different model.
//!
//! The format is one `<|role|>` line per message followed by its text, then the assistant's
//! turn opened for the model to continue:
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
}
