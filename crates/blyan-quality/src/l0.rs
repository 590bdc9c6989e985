//! L0, the screen every submission meets: deterministic, cheap, and run before anything is
//! stored.
//!
//! In order: the schema and its limits ([`Sample::validate`]); an exact duplicate of an accepted
//! sample (same normalized-text hash); characters (control and replacement characters, too few
//! letters); the declared language's script and, on long enough text, the language itself;
//! secrets; personal data; a near duplicate of an accepted sample (MinHash/LSH, see
//! [`AcceptedIndex`]). The first failing check is the [`Refusal`], whose [`Refusal::code`] is a
//! stable name for the API. The same sample, index and config give the same answer on every
//! node.

use serde::{Deserialize, Serialize};

use blyan_chain::BlockHash;

use crate::charset::{self, Profile, Script};
use crate::minhash::{AcceptedIndex, Signature};
use crate::patterns::{self, Finding, PersonalDataKind, SecretKind};
use crate::sample::{DataRecord, Licence, Sample, SchemaError, decode_record};

/// L0's thresholds. Every field has a default; a node's config may override them.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct L0Config {
    /// Estimated Jaccard similarity of word shingles at or above which a sample is a near
    /// duplicate of an accepted one. 0.7 refuses a copy with a few words changed in every
    /// sentence and keeps two texts on one topic apart (they share well under a third of their
    /// three-word runs).
    pub near_duplicate_jaccard: f64,
    /// Fewest letters, as a share of the characters that are not white space: below it the text
    /// is mostly digits, symbols or markup. Code and tables pass at 0.4.
    pub letter_share_min: f64,
    /// Fewest of the letters that must be in the declared language's scripts.
    pub script_share_min: f64,
    /// Fewest characters before the language is identified: shorter text is judged by script only
    /// (trigram identification of a sentence is a guess).
    pub language_detect_chars_min: usize,
    /// Least `whatlang` confidence at which a different language than the declared one refuses
    /// the sample.
    pub language_confidence_min: f64,
    /// Most U+FFFD replacement characters allowed (each marks bytes some decoder could not read).
    pub replacement_characters_max: usize,
}

impl Default for L0Config {
    fn default() -> Self {
        Self {
            near_duplicate_jaccard: 0.7,
            letter_share_min: 0.4,
            script_share_min: 0.7,
            language_detect_chars_min: 200,
            language_confidence_min: 0.9,
            replacement_characters_max: 0,
        }
    }
}

impl L0Config {
    /// Refuses thresholds outside their ranges, naming the field.
    pub fn validate(&self) -> Result<(), L0ConfigError> {
        for (field, value) in [
            ("near_duplicate_jaccard", self.near_duplicate_jaccard),
            ("letter_share_min", self.letter_share_min),
            ("script_share_min", self.script_share_min),
            ("language_confidence_min", self.language_confidence_min),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(L0ConfigError { field, value });
            }
        }
        // A threshold of 0 would make every accepted sample a near duplicate of every new one.
        if self.near_duplicate_jaccard == 0.0 {
            return Err(L0ConfigError {
                field: "near_duplicate_jaccard",
                value: 0.0,
            });
        }
        Ok(())
    }
}

/// An [`L0Config`] threshold outside its range.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("L0 setting {field} = {value} is outside its range (0, 1]")]
pub struct L0ConfigError {
    /// The field.
    pub field: &'static str,
    /// Its value.
    pub value: f64,
}

/// What is wrong with a sample's characters.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum CharsetProblem {
    /// A control character other than tab, line feed or carriage return.
    ControlCharacter {
        /// Its code point.
        code_point: u32,
        /// Byte offset into the training text.
        at: usize,
    },
    /// U+FFFD replacement characters: the text was decoded from bytes that were not what the
    /// decoder expected.
    ReplacementCharacters {
        /// How many.
        count: usize,
        /// The most allowed.
        max: usize,
    },
    /// Too few letters among the visible characters.
    FewLetters {
        /// Letters / visible characters.
        share: f64,
        /// The least allowed.
        min: f64,
    },
}

/// Why L0 refused a sample.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Refusal {
    /// The document or sample is not well formed (see [`SchemaError`]).
    #[error(transparent)]
    Schema(#[from] SchemaError),
    /// The document is a dataset record, but not a sample.
    #[error("the document is a dataset record but not a sample")]
    NotASample,
    /// An accepted sample has the same normalized text.
    #[error("exact duplicate of the accepted sample in block {of}")]
    ExactDuplicate {
        /// The accepted sample's block.
        of: BlockHash,
    },
    /// An accepted sample is nearly the same text.
    #[error("near duplicate ({similarity:.2} similar) of the accepted sample in block {of}")]
    NearDuplicate {
        /// The accepted sample's block.
        of: BlockHash,
        /// Estimated Jaccard similarity of their word shingles.
        similarity: f64,
    },
    /// The text's characters are not readable text.
    #[error("unreadable characters: {problem:?}")]
    Charset {
        /// What is wrong.
        problem: CharsetProblem,
    },
    /// Too few letters are in the declared language's scripts.
    #[error(
        "declared language {language:?} is written in {expected:?}, but only {share:.2} of the letters are (at least {min} needed)"
    )]
    Script {
        /// The declared language.
        language: String,
        /// Its scripts.
        expected: Vec<Script>,
        /// Share of letters in them.
        share: f64,
        /// The least allowed.
        min: f64,
    },
    /// The text is reliably identified as another language than the declared one.
    #[error("declared language {declared:?}, but the text reads as {detected:?} ({confidence:.2})")]
    Language {
        /// The declared language.
        declared: String,
        /// The identified language (ISO 639-1 where listed, else ISO 639-3).
        detected: String,
        /// The identifier's confidence.
        confidence: f64,
    },
    /// The text holds a secret (a key or token); never echoed.
    #[error("the text holds a secret ({}) at byte {at}", kind.as_str())]
    Secret {
        /// What kind.
        kind: SecretKind,
        /// Byte offset into the training text.
        at: usize,
    },
    /// The text holds personal data.
    #[error("the text holds personal data ({}) at byte {at}", kind.as_str())]
    PersonalData {
        /// What kind.
        kind: PersonalDataKind,
        /// Byte offset into the training text.
        at: usize,
    },
}

impl Refusal {
    /// A stable snake_case name for the API: one per reason, finer for schema errors and
    /// character problems so a submitter knows what to fix.
    pub fn code(&self) -> &'static str {
        match self {
            Refusal::Schema(error) => error.code(),
            Refusal::NotASample => "not_a_sample",
            Refusal::ExactDuplicate { .. } => "exact_duplicate",
            Refusal::NearDuplicate { .. } => "near_duplicate",
            Refusal::Charset { problem } => match problem {
                CharsetProblem::ControlCharacter { .. } => "control_character",
                CharsetProblem::ReplacementCharacters { .. } => "replacement_characters",
                CharsetProblem::FewLetters { .. } => "few_letters",
            },
            Refusal::Script { .. } => "wrong_script",
            Refusal::Language { .. } => "wrong_language",
            Refusal::Secret { .. } => "secret",
            Refusal::PersonalData { .. } => "personal_data",
        }
    }
}

/// Screens a sample against everything accepted. `Ok` means it may be stored and go on to L1.
pub fn screen_l0(sample: &Sample, index: &AcceptedIndex, config: &L0Config) -> Result<(), Refusal> {
    screen_signed(sample, index, config).map(|_| ())
}

/// [`screen_l0`], returning the sample's MinHash signature so that the caller can add the
/// sample to the index once it is stored ([`AcceptedIndex::insert_signed`]) without computing it
/// again.
pub fn screen_signed(
    sample: &Sample,
    index: &AcceptedIndex,
    config: &L0Config,
) -> Result<Signature, Refusal> {
    screen_signed_where(sample, index, config, &|_| true)
}

/// [`screen_signed`] against the samples of `index` for which `counts` is true: an index that
/// holds every sample ever seen ([`AcceptedIndex::insert_every`]) judged against those that
/// still count (not refused since, not later in chain order than the sample screened).
pub fn screen_signed_where(
    sample: &Sample,
    index: &AcceptedIndex,
    config: &L0Config,
    counts: &dyn Fn(BlockHash) -> bool,
) -> Result<Signature, Refusal> {
    sample.validate()?;
    if let Some(of) = index.exact_where(sample, counts) {
        return Err(Refusal::ExactDuplicate { of });
    }
    let text = sample.training_text();
    screen_characters(&text, config)?;
    screen_language(&text, &sample.language, config)?;
    match patterns::find(&text) {
        Some(Finding::Secret { kind, at }) => return Err(Refusal::Secret { kind, at }),
        Some(Finding::PersonalData { kind, at }) => {
            return Err(Refusal::PersonalData { kind, at });
        }
        None => {}
    }
    let signature = Signature::of(&sample.normalized_text());
    if let Some(near) = index.nearest_where(&signature, config.near_duplicate_jaccard, counts) {
        return Err(Refusal::NearDuplicate {
            of: near.of,
            similarity: near.similarity,
        });
    }
    Ok(signature)
}

/// Decodes a submitted `DatasetEntry` payload: its record, or the schema refusal a submitter can
/// act on (a licence outside the list is [`SchemaError::Licence`], not a JSON error). `None`
/// when the payload does not claim to be a dataset document at all (not a JSON object naming
/// [`DATA_RECORD_FORMAT`](crate::DATA_RECORD_FORMAT)): chain D keeps such blocks under the
/// chain's own rules, and they never count as samples.
pub fn decode_submitted(payload: &[u8]) -> Result<Option<DataRecord>, Refusal> {
    match decode_record(payload) {
        Ok(record) => Ok(Some(record)),
        Err(error) if claims_data_format(payload) => {
            Err(Refusal::Schema(refine_schema_error(payload, error)))
        }
        Err(_) => Ok(None),
    }
}

/// Whether `payload` is a JSON object whose `format` names a dataset document.
fn claims_data_format(payload: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|document| {
            document
                .get("format")
                .and_then(serde_json::Value::as_str)
                .map(|format| format == crate::sample::DATA_RECORD_FORMAT)
        })
        .unwrap_or(false)
}

/// Decodes a submitted document and screens the sample it holds.
pub fn screen_document(
    payload: &[u8],
    index: &AcceptedIndex,
    config: &L0Config,
) -> Result<Sample, Refusal> {
    let record = decode_record(payload).map_err(|error| refine_schema_error(payload, error))?;
    #[allow(
        unreachable_patterns,
        reason = "gate records join DataRecord beside samples; only samples are submitted"
    )]
    let sample = match record {
        DataRecord::Sample(sample) => sample,
        _ => return Err(Refusal::NotASample),
    };
    screen_l0(&sample, index, config)?;
    Ok(sample)
}

/// A document the JSON schema refused for its licence says so ([`SchemaError::Licence`]),
/// rather than as a generic JSON error: the submitter's fix is to pick an accepted licence.
fn refine_schema_error(payload: &[u8], error: SchemaError) -> SchemaError {
    if !matches!(error, SchemaError::Json(_)) {
        return error;
    }
    let licence = serde_json::from_slice::<serde_json::Value>(payload)
        .ok()
        .and_then(|document| {
            document
                .pointer("/record/licence")
                .map(|licence| match licence.as_str() {
                    Some(text) => text.to_owned(),
                    None => licence.to_string(),
                })
        });
    match licence {
        Some(given) => match given.parse::<Licence>() {
            Err(licence_error) => licence_error,
            Ok(_) => error,
        },
        None => error,
    }
}

fn screen_characters(text: &str, config: &L0Config) -> Result<(), Refusal> {
    let profile = Profile::of(text);
    if let Some((at, ch)) = profile.first_control {
        return Err(Refusal::Charset {
            problem: CharsetProblem::ControlCharacter {
                code_point: u32::from(ch),
                at,
            },
        });
    }
    if profile.replacements > config.replacement_characters_max {
        return Err(Refusal::Charset {
            problem: CharsetProblem::ReplacementCharacters {
                count: profile.replacements,
                max: config.replacement_characters_max,
            },
        });
    }
    let share = if profile.visible == 0 {
        0.0
    } else {
        profile.letters as f64 / profile.visible as f64
    };
    if share < config.letter_share_min {
        return Err(Refusal::Charset {
            problem: CharsetProblem::FewLetters {
                share,
                min: config.letter_share_min,
            },
        });
    }
    Ok(())
}

fn screen_language(text: &str, declared: &str, config: &L0Config) -> Result<(), Refusal> {
    let Some((lang, scripts)) = charset::language(declared) else {
        return Ok(());
    };
    let share = charset::script_share(text, scripts);
    if share < config.script_share_min {
        return Err(Refusal::Script {
            language: declared.to_owned(),
            expected: scripts.to_vec(),
            share,
            min: config.script_share_min,
        });
    }
    if text.chars().count() < config.language_detect_chars_min {
        return Ok(());
    }
    if let Some(info) = whatlang::detect(text)
        && info.is_reliable()
        && info.confidence() >= config.language_confidence_min
        && info.lang() != lang
    {
        return Err(Refusal::Language {
            declared: declared.to_owned(),
            detected: charset::code_of(info.lang()).to_owned(),
            confidence: info.confidence(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use blyan_primitives::Address;

    use super::*;
    use crate::sample::{SampleContent, encode_record};

    const PROSE: &str = "Call me Ishmael. Some years ago, never mind how long precisely, having \
        little or no money in my purse, and nothing particular to interest me on shore, I thought \
        I would sail about a little and see the watery part of the world.";

    fn sample(text: &str, language: &str) -> Sample {
        Sample::new(
            SampleContent::Text { text: text.into() },
            Licence::PublicDomain,
            "Moby-Dick, Herman Melville, 1851",
            language,
            Address::ZERO,
        )
        .unwrap()
    }

    fn code(text: &str, language: &str, index: &AcceptedIndex) -> Option<&'static str> {
        screen_l0(&sample(text, language), index, &L0Config::default())
            .err()
            .map(|refusal| refusal.code())
    }

    fn block(byte: u8) -> BlockHash {
        BlockHash([byte; 32])
    }

    #[test]
    fn clean_prose_passes_and_its_copies_are_refused_as_duplicates() {
        let mut index = AcceptedIndex::new();
        assert_eq!(code(PROSE, "en", &index), None);
        assert!(index.insert(&sample(PROSE, "en"), block(1)));
        assert!(!index.insert(&sample(PROSE, "en"), block(2)), "held once");
        assert_eq!(index.len(), 1);

        let shouted = PROSE.to_uppercase().replace(' ', "  ");
        assert_eq!(
            screen_l0(&sample(&shouted, "en"), &index, &L0Config::default()),
            Err(Refusal::ExactDuplicate { of: block(1) })
        );
        let edited = PROSE.replace("watery", "wet");
        match screen_l0(&sample(&edited, "en"), &index, &L0Config::default()) {
            Err(Refusal::NearDuplicate { of, similarity }) => {
                assert_eq!(of, block(1));
                assert!((0.7..1.0).contains(&similarity), "{similarity}");
            }
            other => panic!("not a near duplicate: {other:?}"),
        }
    }

    #[test]
    fn an_index_of_every_sample_judges_against_those_that_still_count() {
        let mut index = AcceptedIndex::new();
        let first = sample(PROSE, "en");
        let signature = Signature::of(&first.normalized_text());
        assert!(index.insert_every(&first, &signature, block(1)));
        assert!(
            index.insert_every(&first, &signature, block(2)),
            "kept twice"
        );
        assert_eq!(index.len(), 2);
        let config = L0Config::default();
        let screen = |counts: &dyn Fn(BlockHash) -> bool| {
            screen_signed_where(&first, &index, &config, counts).map(|_| ())
        };
        assert_eq!(
            screen(&|_| true),
            Err(Refusal::ExactDuplicate { of: block(1) })
        );
        // The oldest copy refused since: the next one counts.
        assert_eq!(
            screen(&|id| id != block(1)),
            Err(Refusal::ExactDuplicate { of: block(2) })
        );
        assert_eq!(screen(&|_| false), Ok(()));
        // A near copy is judged by the same predicate.
        let near = sample(&PROSE.replace("watery", "salty"), "en");
        let near_screen = |counts: &dyn Fn(BlockHash) -> bool| {
            screen_signed_where(&near, &index, &config, counts)
                .err()
                .map(|refusal| refusal.code())
        };
        assert_eq!(near_screen(&|_| true), Some("near_duplicate"));
        assert_eq!(near_screen(&|_| false), None);
    }

    #[test]
    fn a_submitted_dataset_document_is_decoded_or_refused_for_its_schema() {
        let document = String::from_utf8(encode_record(&DataRecord::Sample(sample(PROSE, "en"))))
            .unwrap()
            .replace("public-domain", "GPL-3.0");
        let refusal = decode_submitted(document.as_bytes()).unwrap_err();
        assert_eq!(refusal.code(), "licence");
        let broken = String::from_utf8(encode_record(&DataRecord::Sample(sample(PROSE, "en"))))
            .unwrap()
            .replace("\"text\"", "\"txet\"");
        assert_eq!(
            decode_submitted(broken.as_bytes()).unwrap_err().code(),
            "malformed_document"
        );
        // Bytes that do not claim to be a dataset document are no sample to screen.
        assert_eq!(decode_submitted(b"\xff"), Ok(None));
        assert_eq!(decode_submitted(br#"{"format":"other/1"}"#), Ok(None));
        assert!(matches!(
            decode_submitted(&encode_record(&DataRecord::Sample(sample(PROSE, "en")))),
            Ok(Some(DataRecord::Sample(_)))
        ));
    }

    #[test]
    fn unreadable_characters_are_refused_by_problem() {
        let index = AcceptedIndex::new();
        assert_eq!(
            code("A bell rings \u{0007} in the text here", "en", &index),
            Some("control_character")
        );
        assert_eq!(
            code("Caf\u{fffd} au lait with a croissant", "en", &index),
            Some("replacement_characters")
        );
        assert_eq!(
            code("1234 5678 90 !! ## $$ %% ^^ && ** ()", "en", &index),
            Some("few_letters")
        );
    }

    #[test]
    fn the_declared_language_must_match_script_and_reliable_identification() {
        let index = AcceptedIndex::new();
        assert_eq!(
            code("Это просто текст на русском языке.", "en", &index),
            Some("wrong_script")
        );
        assert_eq!(
            code("Это просто текст на русском языке.", "ru", &index),
            None
        );
        let german = "Es war einmal ein kleines Mädchen, das hatte jedermann lieb, der sie nur \
            ansah, am allerliebsten aber ihre Großmutter, die wusste gar nicht, was sie alles \
            dem Kinde geben sollte. Einmal schenkte sie ihm ein Käppchen von rotem Samt.";
        match screen_l0(&sample(german, "en"), &index, &L0Config::default()) {
            Err(Refusal::Language {
                declared, detected, ..
            }) => assert_eq!((declared.as_str(), detected.as_str()), ("en", "de")),
            other => panic!("not a language refusal: {other:?}"),
        }
        assert_eq!(code(german, "de", &index), None);
        // An unlisted language is judged on its characters only.
        assert_eq!(code(german, "gd", &index), None);
    }

    #[test]
    fn secrets_and_personal_data_are_refused_by_kind_without_echo() {
        let index = AcceptedIndex::new();
        let key = format!("The wallet key is 0x{} so keep it", "7f".repeat(32));
        let refusal = screen_l0(&sample(&key, "en"), &index, &L0Config::default()).unwrap_err();
        assert_eq!(
            refusal,
            Refusal::Secret {
                kind: SecretKind::HexPrivateKey,
                at: 18
            }
        );
        assert!(!refusal.to_string().contains("7f7f"), "{refusal}");
        assert_eq!(
            code(
                "Write to someone.real@mailbox.org for details",
                "en",
                &index
            ),
            Some("personal_data")
        );
    }

    #[test]
    fn a_document_with_an_unlisted_licence_is_refused_for_its_licence() {
        let index = AcceptedIndex::new();
        let document = String::from_utf8(encode_record(&DataRecord::Sample(sample(PROSE, "en"))))
            .unwrap()
            .replace("\"public-domain\"", "\"GPL-3.0\"");
        let refusal = screen_document(document.as_bytes(), &index, &L0Config::default());
        assert_eq!(
            refusal,
            Err(Refusal::Schema(SchemaError::Licence {
                given: "GPL-3.0".into()
            }))
        );
        assert_eq!(refusal.unwrap_err().code(), "licence");
        assert_eq!(
            screen_document(&[0xc3, 0x28], &index, &L0Config::default())
                .unwrap_err()
                .code(),
            "not_utf8"
        );
        let good = encode_record(&DataRecord::Sample(sample(PROSE, "en")));
        assert_eq!(
            screen_document(&good, &index, &L0Config::default()),
            Ok(sample(PROSE, "en"))
        );
    }

    #[test]
    fn thresholds_outside_their_range_name_the_field() {
        assert_eq!(L0Config::default().validate(), Ok(()));
        let config = L0Config {
            script_share_min: 1.5,
            ..L0Config::default()
        };
        assert_eq!(config.validate().unwrap_err().field, "script_share_min");
        let config = L0Config {
            near_duplicate_jaccard: 0.0,
            ..L0Config::default()
        };
        assert_eq!(
            config.validate().unwrap_err().field,
            "near_duplicate_jaccard"
        );
    }
}
