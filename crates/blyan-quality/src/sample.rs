//! What a dataset entry holds: one [`Sample`] per `DatasetEntry` block on chain D, written as one
//! JSON document `{"format":"blyan-data/1","record":{"type":"sample",…}}` ([`DataRecord`]).
//!
//! A sample is either plain text or a prompt/response pair, with its licence (one of a fixed
//! list), where it came from, its language, the wallet that contributed it (the one paid when a
//! certified Proof-of-Learning candidate used it) and the blake3 of its normalized text, so exact
//! duplicates are found by hash and a reader can check the hash it was given.
//!
//! Every limit is checked by [`Sample::validate`]; decoding ([`decode_record`]) validates, so a
//! [`Sample`] read from a block is always well formed.

use blyan_primitives::Address;
use serde::{Deserialize, Serialize};
use unicode_normalization::UnicodeNormalization;

use crate::gate_record::{
    GateError, Review, TeacherResult, VoteCommit, VoteReveal, validate_gate_record,
};

/// The `format` of every dataset document.
pub const DATA_RECORD_FORMAT: &str = "blyan-data/1";

/// Largest dataset document read, in bytes (a sample at its limits, escaped, fits).
pub const DATA_RECORD_BYTES_MAX: usize = 512 * 1024;

/// Most bytes of UTF-8 text in one sample (text, or prompt and response together).
pub const SAMPLE_TEXT_BYTES_MAX: usize = 64 * 1024;

/// Fewest characters of text in one sample, after normalization.
pub const SAMPLE_TEXT_CHARS_MIN: usize = 16;

/// Most bytes in a sample's `source`.
pub const SAMPLE_SOURCE_BYTES_MAX: usize = 512;

/// The licences a sample may carry: each lets the network train on the text and publish it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Licence {
    /// Creative Commons Zero 1.0 (public-domain dedication).
    #[serde(rename = "CC0-1.0")]
    Cc0,
    /// Creative Commons Attribution 4.0.
    #[serde(rename = "CC-BY-4.0")]
    CcBy4,
    /// Creative Commons Attribution-ShareAlike 4.0.
    #[serde(rename = "CC-BY-SA-4.0")]
    CcBySa4,
    /// The MIT licence.
    #[serde(rename = "MIT")]
    Mit,
    /// The Apache licence 2.0.
    #[serde(rename = "Apache-2.0")]
    Apache2,
    /// A work in the public domain (no licence needed).
    #[serde(rename = "public-domain")]
    PublicDomain,
}

impl Licence {
    /// Every accepted licence, in the order documents list them.
    pub const ALL: [Licence; 6] = [
        Licence::Cc0,
        Licence::CcBy4,
        Licence::CcBySa4,
        Licence::Mit,
        Licence::Apache2,
        Licence::PublicDomain,
    ];

    /// The SPDX identifier (or `public-domain`), as written in documents.
    pub fn as_str(self) -> &'static str {
        match self {
            Licence::Cc0 => "CC0-1.0",
            Licence::CcBy4 => "CC-BY-4.0",
            Licence::CcBySa4 => "CC-BY-SA-4.0",
            Licence::Mit => "MIT",
            Licence::Apache2 => "Apache-2.0",
            Licence::PublicDomain => "public-domain",
        }
    }
}

impl std::fmt::Display for Licence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Licence {
    type Err = SchemaError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Licence::ALL
            .into_iter()
            .find(|licence| licence.as_str() == text)
            .ok_or_else(|| SchemaError::Licence {
                given: text.chars().take(64).collect(),
            })
    }
}

/// The text of a sample: in a document, either a `text` field or `prompt` and `response`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SampleContent {
    /// A prompt and the response a model should learn to give.
    Pair {
        /// What is asked.
        prompt: String,
        /// What should be answered.
        response: String,
    },
    /// Plain text to learn from.
    Text {
        /// The text.
        text: String,
    },
}

impl SampleContent {
    /// The text a model trains on: the text itself, or prompt and response on separate lines.
    pub fn training_text(&self) -> String {
        match self {
            SampleContent::Text { text } => text.clone(),
            SampleContent::Pair { prompt, response } => format!("{prompt}\n{response}"),
        }
    }

    /// Bytes of text the sample holds.
    pub fn text_bytes(&self) -> usize {
        match self {
            SampleContent::Text { text } => text.len(),
            SampleContent::Pair { prompt, response } => prompt.len() + response.len(),
        }
    }
}

/// One sample of training data, as it stands on chain D.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "SampleFields", into = "SampleFields")]
pub struct Sample {
    /// The text.
    pub content: SampleContent,
    /// Under which licence the contributor offers it.
    pub licence: Licence,
    /// Where it came from (a URL, a book, "own writing"); free text, at most
    /// [`SAMPLE_SOURCE_BYTES_MAX`] bytes.
    pub source: String,
    /// Its language: a lower-case ISO 639-1 code (`en`, `de`, …).
    pub language: String,
    /// The wallet that contributed it: paid when a certified candidate used it.
    pub contributor: Address,
    /// blake3 (lower-case hex, 64 digits) of [`normalize`]d training text.
    pub content_hash: String,
}

impl Sample {
    /// A sample with its content hash computed, validated.
    pub fn new(
        content: SampleContent,
        licence: Licence,
        source: impl Into<String>,
        language: impl Into<String>,
        contributor: Address,
    ) -> Result<Self, SchemaError> {
        let content_hash = content_hash(&content.training_text());
        let sample = Sample {
            content,
            licence,
            source: source.into(),
            language: language.into(),
            contributor,
            content_hash,
        };
        sample.validate()?;
        Ok(sample)
    }

    /// The text a model trains on.
    pub fn training_text(&self) -> String {
        self.content.training_text()
    }

    /// The normalized training text: what exact and near duplicates are judged on.
    pub fn normalized_text(&self) -> String {
        normalize(&self.training_text())
    }

    /// Checks every limit and that `content_hash` is the hash of the normalized text.
    pub fn validate(&self) -> Result<(), SchemaError> {
        let bytes = self.content.text_bytes();
        if bytes > SAMPLE_TEXT_BYTES_MAX {
            return Err(SchemaError::TextTooLarge {
                bytes,
                max: SAMPLE_TEXT_BYTES_MAX,
            });
        }
        if let SampleContent::Pair { prompt, response } = &self.content
            && (prompt.trim().is_empty() || response.trim().is_empty())
        {
            return Err(SchemaError::EmptyPairPart);
        }
        let normalized = self.normalized_text();
        let chars = normalized.chars().count();
        if chars < SAMPLE_TEXT_CHARS_MIN {
            return Err(SchemaError::TextTooShort {
                chars,
                min: SAMPLE_TEXT_CHARS_MIN,
            });
        }
        if self.source.len() > SAMPLE_SOURCE_BYTES_MAX {
            return Err(SchemaError::SourceTooLarge {
                bytes: self.source.len(),
                max: SAMPLE_SOURCE_BYTES_MAX,
            });
        }
        if self.source.trim().is_empty() || self.source.chars().any(char::is_control) {
            return Err(SchemaError::Source);
        }
        if !is_language_code(&self.language) {
            return Err(SchemaError::Language {
                given: self.language.chars().take(16).collect(),
            });
        }
        let expected = blake3::hash(normalized.as_bytes()).to_hex().to_string();
        if self.content_hash != expected {
            return Err(SchemaError::ContentHash {
                given: self.content_hash.chars().take(80).collect(),
                expected,
            });
        }
        Ok(())
    }
}

/// A sample as its document spells it: `text`, or `prompt` and `response`.
#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SampleFields {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    prompt: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    response: Option<String>,
    licence: Licence,
    source: String,
    language: String,
    contributor: Address,
    content_hash: String,
}

impl TryFrom<SampleFields> for Sample {
    type Error = SchemaError;

    fn try_from(fields: SampleFields) -> Result<Self, SchemaError> {
        let content = match (fields.text, fields.prompt, fields.response) {
            (Some(text), None, None) => SampleContent::Text { text },
            (None, Some(prompt), Some(response)) => SampleContent::Pair { prompt, response },
            _ => return Err(SchemaError::Content),
        };
        Ok(Sample {
            content,
            licence: fields.licence,
            source: fields.source,
            language: fields.language,
            contributor: fields.contributor,
            content_hash: fields.content_hash,
        })
    }
}

impl From<Sample> for SampleFields {
    fn from(sample: Sample) -> Self {
        let (text, prompt, response) = match sample.content {
            SampleContent::Text { text } => (Some(text), None, None),
            SampleContent::Pair { prompt, response } => (None, Some(prompt), Some(response)),
        };
        SampleFields {
            text,
            prompt,
            response,
            licence: sample.licence,
            source: sample.source,
            language: sample.language,
            contributor: sample.contributor,
            content_hash: sample.content_hash,
        }
    }
}

/// Lower-case ISO 639-1: two ASCII lower-case letters.
fn is_language_code(code: &str) -> bool {
    code.len() == 2 && code.bytes().all(|byte| byte.is_ascii_lowercase())
}

/// The form duplicates are judged on: Unicode NFKC, lower case, every run of white space one
/// space, no leading or trailing space.
pub fn normalize(text: &str) -> String {
    let folded: String = text.nfkc().flat_map(char::to_lowercase).collect();
    folded.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// blake3 (lower-case hex) of the [`normalize`]d `text`: a sample's `content_hash`.
pub fn content_hash(text: &str) -> String {
    blake3::hash(normalize(text).as_bytes())
        .to_hex()
        .to_string()
}

/// One dataset document on chain D.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
#[non_exhaustive]
pub enum DataRecord {
    /// A sample of training data (a `DatasetEntry` block, signed by the contributor or by the
    /// node that accepted it from a signed-in wallet).
    Sample(Sample),
    /// An L1 teacher result (see [`TeacherResult`]).
    TeacherResult(TeacherResult),
    /// A hidden L2 vote (see [`VoteCommit`]).
    VoteCommit(VoteCommit),
    /// The opening of an L2 vote (see [`VoteReveal`]).
    VoteReveal(VoteReveal),
    /// An L3 validator review (see [`Review`]).
    Review(Review),
}

impl DataRecord {
    /// The record's type name (`sample`, `vote_commit`, …).
    pub fn type_name(&self) -> &'static str {
        match self {
            DataRecord::Sample(_) => "sample",
            DataRecord::TeacherResult(_) => "teacher_result",
            DataRecord::VoteCommit(_) => "vote_commit",
            DataRecord::VoteReveal(_) => "vote_reveal",
            DataRecord::Review(_) => "review",
        }
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Document {
    format: String,
    record: DataRecord,
}

#[derive(Serialize)]
struct DocumentRef<'a> {
    format: &'a str,
    record: &'a DataRecord,
}

/// The bytes of `record` as a block payload.
pub fn encode_record(record: &DataRecord) -> Vec<u8> {
    serde_json::to_vec(&DocumentRef {
        format: DATA_RECORD_FORMAT,
        record,
    })
    .expect("a data record always serializes")
}

/// Reads a block payload as a dataset document, validating what it holds.
pub fn decode_record(payload: &[u8]) -> Result<DataRecord, SchemaError> {
    if payload.len() > DATA_RECORD_BYTES_MAX {
        return Err(SchemaError::DocumentTooLarge {
            bytes: payload.len(),
            max: DATA_RECORD_BYTES_MAX,
        });
    }
    let text = std::str::from_utf8(payload).map_err(|error| SchemaError::NotUtf8 {
        valid_up_to: error.valid_up_to(),
    })?;
    let document: Document =
        serde_json::from_str(text).map_err(|error| SchemaError::Json(error.to_string()))?;
    if document.format != DATA_RECORD_FORMAT {
        return Err(SchemaError::Format {
            given: document.format.chars().take(64).collect(),
        });
    }
    match &document.record {
        DataRecord::Sample(sample) => sample.validate()?,
        other => validate_gate_record(other).map_err(SchemaError::Gate)?,
    }
    Ok(document.record)
}

/// Why a dataset document or sample is not well formed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum SchemaError {
    /// The bytes are not UTF-8.
    #[error("not UTF-8: invalid byte after {valid_up_to} valid bytes")]
    NotUtf8 {
        /// Bytes before the first invalid one.
        valid_up_to: usize,
    },
    /// The document is larger than [`DATA_RECORD_BYTES_MAX`].
    #[error("document of {bytes} bytes is over the {max}-byte limit")]
    DocumentTooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The document is not valid JSON of the dataset schema.
    #[error("not a dataset document: {0}")]
    Json(String),
    /// The document's `format` is not [`DATA_RECORD_FORMAT`].
    #[error("unknown dataset format {given:?} (expected {DATA_RECORD_FORMAT:?})")]
    Format {
        /// The format given.
        given: String,
    },
    /// The sample's text is larger than [`SAMPLE_TEXT_BYTES_MAX`].
    #[error("sample text of {bytes} bytes is over the {max}-byte limit")]
    TextTooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// The sample's normalized text is shorter than [`SAMPLE_TEXT_CHARS_MIN`].
    #[error("sample text of {chars} characters is under the {min}-character minimum")]
    TextTooShort {
        /// Its length after normalization.
        chars: usize,
        /// The minimum.
        min: usize,
    },
    /// The document gives neither `text` alone nor `prompt` with `response`.
    #[error("a sample holds either \"text\" or both \"prompt\" and \"response\"")]
    Content,
    /// A prompt/response pair with an empty prompt or response.
    #[error("a prompt/response sample needs both a prompt and a response")]
    EmptyPairPart,
    /// The licence is not one of [`Licence::ALL`].
    #[error(
        "licence {given:?} is not accepted (accepted: CC0-1.0, CC-BY-4.0, CC-BY-SA-4.0, MIT, Apache-2.0, public-domain)"
    )]
    Licence {
        /// The licence given.
        given: String,
    },
    /// `source` is over [`SAMPLE_SOURCE_BYTES_MAX`] bytes.
    #[error("source of {bytes} bytes is over the {max}-byte limit")]
    SourceTooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// `source` is empty or holds control characters.
    #[error("source must be non-empty text without control characters")]
    Source,
    /// `language` is not a lower-case ISO 639-1 code.
    #[error("language {given:?} is not a lower-case ISO 639-1 code such as \"en\"")]
    Language {
        /// The language given.
        given: String,
    },
    /// `content_hash` is not the blake3 of the normalized text.
    #[error("content_hash {given} does not match the text (expected {expected})")]
    ContentHash {
        /// The hash given.
        given: String,
        /// The hash of the text.
        expected: String,
    },
    /// A gate record (teacher result, vote, review) breaks its own limits.
    #[error(transparent)]
    Gate(#[from] GateError),
}

impl SchemaError {
    /// A stable snake_case code for the error (what the API answers with).
    pub fn code(&self) -> &'static str {
        match self {
            SchemaError::NotUtf8 { .. } => "not_utf8",
            SchemaError::DocumentTooLarge { .. } => "document_too_large",
            SchemaError::Json(_) => "malformed_document",
            SchemaError::Format { .. } => "unknown_format",
            SchemaError::TextTooLarge { .. } => "text_too_large",
            SchemaError::TextTooShort { .. } => "text_too_short",
            SchemaError::Content => "malformed_content",
            SchemaError::EmptyPairPart => "empty_pair_part",
            SchemaError::Licence { .. } => "licence",
            SchemaError::SourceTooLarge { .. } => "source_too_large",
            SchemaError::Source => "malformed_source",
            SchemaError::Language { .. } => "language_code",
            SchemaError::ContentHash { .. } => "content_hash",
            SchemaError::Gate(error) => error.code(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn contributor() -> Address {
        "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"
            .parse()
            .unwrap()
    }

    fn text(text: &str) -> SampleContent {
        SampleContent::Text { text: text.into() }
    }

    #[test]
    fn a_sample_round_trips_through_its_document() {
        let sample = Sample::new(
            SampleContent::Pair {
                prompt: "What is a mixture of experts?".into(),
                response: "A model whose layers route each token to a few experts.".into(),
            },
            Licence::CcBy4,
            "own writing",
            "en",
            contributor(),
        )
        .unwrap();
        let bytes = encode_record(&DataRecord::Sample(sample.clone()));
        let text = std::str::from_utf8(&bytes).unwrap();
        assert!(
            text.starts_with(r#"{"format":"blyan-data/1","record":{"type":"sample","prompt":"#)
        );
        assert_eq!(decode_record(&bytes).unwrap(), DataRecord::Sample(sample));
    }

    #[test]
    fn normalization_folds_case_width_and_white_space() {
        assert_eq!(normalize("  Ｈello\t\nWORLD  "), "hello world");
        assert_eq!(content_hash("Hello   world"), content_hash("hello world\n"));
    }

    #[test]
    fn each_schema_refusal_is_its_own_variant() {
        let good = Sample::new(
            text("A sentence long enough to be a sample."),
            Licence::Mit,
            "own writing",
            "en",
            contributor(),
        )
        .unwrap();
        let with = |change: &dyn Fn(&mut Sample)| {
            let mut sample = good.clone();
            change(&mut sample);
            sample.validate().unwrap_err()
        };
        assert!(matches!(
            with(&|s| s.content = text(&"x".repeat(SAMPLE_TEXT_BYTES_MAX + 1))),
            SchemaError::TextTooLarge { .. }
        ));
        assert!(matches!(
            with(&|s| s.content = text("too short")),
            SchemaError::TextTooShort { chars: 9, .. }
        ));
        assert!(matches!(
            with(&|s| s.source = "a".repeat(SAMPLE_SOURCE_BYTES_MAX + 1)),
            SchemaError::SourceTooLarge { .. }
        ));
        assert_eq!(with(&|s| s.source = " ".into()), SchemaError::Source);
        assert!(matches!(
            with(&|s| s.language = "EN".into()),
            SchemaError::Language { .. }
        ));
        assert!(matches!(
            with(&|s| s.content_hash = "00".repeat(32)),
            SchemaError::ContentHash { .. }
        ));
        assert_eq!(
            with(&|s| {
                s.content = SampleContent::Pair {
                    prompt: " ".into(),
                    response: "an answer that is long enough".into(),
                }
            }),
            SchemaError::EmptyPairPart
        );
    }

    #[test]
    fn documents_that_are_not_samples_are_refused_by_kind() {
        assert!(matches!(
            decode_record(&[0xff, 0xfe]),
            Err(SchemaError::NotUtf8 { valid_up_to: 0 })
        ));
        assert!(matches!(
            decode_record(b"{\"format\":\"blyan-data/9\",\"record\":{\"type\":\"sample\"}}"),
            Err(SchemaError::Json(_))
        ));
        let sample = Sample::new(
            text("A sentence long enough to be a sample."),
            Licence::Mit,
            "own writing",
            "en",
            contributor(),
        )
        .unwrap();
        let bytes = encode_record(&DataRecord::Sample(sample));
        let other = String::from_utf8(bytes)
            .unwrap()
            .replace("blyan-data/1", "blyan-data/2");
        assert!(matches!(
            decode_record(other.as_bytes()),
            Err(SchemaError::Format { .. })
        ));
        let wrong_licence = String::from_utf8(encode_record(&DataRecord::Sample(
            Sample::new(
                text("A sentence long enough to be a sample."),
                Licence::Mit,
                "own writing",
                "en",
                contributor(),
            )
            .unwrap(),
        )))
        .unwrap()
        .replace("\"MIT\"", "\"GPL-3.0\"");
        assert!(matches!(
            decode_record(wrong_licence.as_bytes()),
            Err(SchemaError::Json(_))
        ));
        assert!(matches!(
            decode_record(&vec![b' '; DATA_RECORD_BYTES_MAX + 1]),
            Err(SchemaError::DocumentTooLarge { .. })
        ));
        assert!(matches!(
            "GPL-3.0".parse::<Licence>(),
            Err(SchemaError::Licence { .. })
        ));
        assert_eq!("CC0-1.0".parse::<Licence>().unwrap(), Licence::Cc0);
    }
}
