//! Text ↔ token ids through the `tokenizers` crate, and incremental decoding for streaming.

use std::path::Path;

use crate::error::{MoeError, Result};
use crate::weights::read_bounded;

/// Largest `tokenizer.json` accepted, in bytes.
pub const TOKENIZER_JSON_BYTES_MAX: u64 = 64 << 20;
/// Longest prompt accepted before tokenization, in bytes.
pub const PROMPT_BYTES_MAX: usize = 1 << 20;

/// Vocabulary of [`Tokenizer::byte_level`]: three special tokens, then the 256 bytes.
pub const BYTE_LEVEL_VOCAB_SIZE: u32 = 259;
/// `<s>` in [`Tokenizer::byte_level`].
pub const BYTE_LEVEL_BOS_ID: u32 = 1;
/// `</s>` in [`Tokenizer::byte_level`].
pub const BYTE_LEVEL_EOS_ID: u32 = 2;
const BYTE_LEVEL_SPECIALS: [&str; 3] = ["<unk>", "<s>", "</s>"];

/// A Hugging Face tokenizer (`tokenizer.json`).
#[derive(Debug, Clone)]
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
}

fn tokenizer_error(error: impl std::fmt::Display) -> MoeError {
    MoeError::Tokenizer(error.to_string())
}

/// GPT-2's reversible map from bytes to printable characters, which byte-level BPE vocabularies
/// are written in.
fn byte_to_char() -> [char; 256] {
    let mut table = ['\0'; 256];
    let mut next_free = 256u32;
    for byte in 0u32..256 {
        let printable = (u32::from(b'!')..=u32::from(b'~')).contains(&byte)
            || (0xA1..=0xAC).contains(&byte)
            || (0xAE..=0xFF).contains(&byte);
        let code = if printable {
            byte
        } else {
            let code = next_free;
            next_free += 1;
            code
        };
        table[byte as usize] = char::from_u32(code).expect("codes below 0x200 are characters");
    }
    table
}

impl Tokenizer {
    /// Parses a `tokenizer.json` document.
    pub fn from_json(bytes: &[u8]) -> Result<Self> {
        let inner = tokenizers::Tokenizer::from_bytes(bytes).map_err(tokenizer_error)?;
        Ok(Self { inner })
    }

    /// Reads `tokenizer.json` from a file.
    pub fn from_file(path: &Path) -> Result<Self> {
        Self::from_json(&read_bounded(path, TOKENIZER_JSON_BYTES_MAX)?)
    }

    /// The byte-level tokenizer of the seed model: `<unk>`, `<s>`, `</s>`, then one token per
    /// byte and no merges, so any text round-trips.
    pub fn byte_level() -> Self {
        Self::from_json(&Self::byte_level_json())
            .expect("the byte-level tokenizer document is well formed")
    }

    /// The `tokenizer.json` document of [`Tokenizer::byte_level`].
    pub fn byte_level_json() -> Vec<u8> {
        let mut vocab = serde_json::Map::new();
        for (id, special) in BYTE_LEVEL_SPECIALS.iter().enumerate() {
            vocab.insert((*special).to_owned(), serde_json::json!(id));
        }
        for (byte, character) in byte_to_char().iter().enumerate() {
            vocab.insert(
                character.to_string(),
                serde_json::json!(byte + BYTE_LEVEL_SPECIALS.len()),
            );
        }
        let added_tokens: Vec<serde_json::Value> = BYTE_LEVEL_SPECIALS
            .iter()
            .enumerate()
            .map(|(id, content)| {
                serde_json::json!({
                    "id": id, "content": content, "single_word": false, "lstrip": false,
                    "rstrip": false, "normalized": false, "special": true
                })
            })
            .collect();
        let document = serde_json::json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added_tokens,
            "normalizer": null,
            "pre_tokenizer": {
                "type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true,
                "use_regex": true
            },
            "post_processor": null,
            "decoder": {
                "type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true,
                "use_regex": true
            },
            "model": {
                "type": "BPE", "dropout": null, "unk_token": null,
                "continuing_subword_prefix": null, "end_of_word_suffix": null,
                "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                "vocab": vocab, "merges": []
            }
        });
        serde_json::to_vec_pretty(&document).expect("a JSON value serializes")
    }

    /// Token ids of `text`, with the special tokens the tokenizer's post-processor adds (as
    /// transformers' `tokenizer(text)` does).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        if text.len() > PROMPT_BYTES_MAX {
            return Err(MoeError::Tokenizer(format!(
                "text of {} bytes exceeds PROMPT_BYTES_MAX ({PROMPT_BYTES_MAX})",
                text.len()
            )));
        }
        let encoding = self.inner.encode(text, true).map_err(tokenizer_error)?;
        Ok(encoding.get_ids().to_vec())
    }

    /// Token ids of `text` alone, no special token added and no length limit: how training
    /// text is tokenized.
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        let encoding = self.inner.encode(text, false).map_err(tokenizer_error)?;
        Ok(encoding.get_ids().to_vec())
    }

    /// The text of `ids`, special tokens left out.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, true).map_err(tokenizer_error)
    }

    /// The id of a token, e.g. `</s>`.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }

    /// Tokens in the vocabulary, added tokens included.
    pub fn vocab_size(&self) -> u32 {
        u32::try_from(self.inner.get_vocab_size(true)).unwrap_or(u32::MAX)
    }

    /// A fresh incremental decoder for one generation.
    pub(crate) fn incremental(&self) -> IncrementalDecoder {
        IncrementalDecoder::default()
    }

    /// Text newly completed by appending `id`, given the decoder's state; `None` while the
    /// bytes so far end inside a character.
    pub(crate) fn step(&self, state: &mut IncrementalDecoder, id: u32) -> Result<Option<String>> {
        tokenizers::tokenizer::step_decode_stream(
            &self.inner,
            vec![id],
            true,
            &mut state.ids,
            &mut state.prefix,
            &mut state.prefix_index,
        )
        .map_err(tokenizer_error)
    }
}

/// The state of decoding one token at a time into text deltas.
#[derive(Debug, Default)]
pub(crate) struct IncrementalDecoder {
    ids: Vec<u32>,
    prefix: String,
    prefix_index: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_level_round_trips_any_text() {
        let tokenizer = Tokenizer::byte_level();
        assert_eq!(tokenizer.vocab_size(), BYTE_LEVEL_VOCAB_SIZE);
        assert_eq!(tokenizer.token_to_id("</s>"), Some(BYTE_LEVEL_EOS_ID));
        let text = "héllo, wörld! 🦊\n\ttabs";
        let ids = tokenizer.encode(text).expect("encodes");
        assert_eq!(ids.len(), text.len(), "one token per byte");
        assert_eq!(tokenizer.decode(&ids).expect("decodes"), text);
    }

    #[test]
    fn incremental_decoding_holds_back_partial_characters() {
        let tokenizer = Tokenizer::byte_level();
        let text = "a🦊b";
        let ids = tokenizer.encode(text).expect("encodes");
        let mut state = tokenizer.incremental();
        let mut deltas = Vec::new();
        for id in ids {
            deltas.push(tokenizer.step(&mut state, id).expect("steps"));
        }
        let emitted: Vec<&str> = deltas.iter().flatten().map(String::as_str).collect();
        assert_eq!(emitted, vec!["a", "🦊", "b"]);
        assert_eq!(deltas.iter().filter(|delta| delta.is_none()).count(), 3);
    }

    #[test]
    fn prompt_length_is_bounded() {
        let tokenizer = Tokenizer::byte_level();
        assert!(tokenizer.encode(&"a".repeat(PROMPT_BYTES_MAX)).is_ok());
        assert!(matches!(
            tokenizer.encode(&"a".repeat(PROMPT_BYTES_MAX + 1)),
            Err(MoeError::Tokenizer(_))
        ));
    }
}
