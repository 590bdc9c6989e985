//! `blyan-miner dataset submit FILE...`: turns files into dataset samples and appends each as a
//! `DatasetEntry` block signed by the miner's key (its address is every sample's contributor,
//! the wallet paid when a certified candidate uses the sample) to a running node's chain D.
//!
//! A `.jsonl` file holds one sample per line: `{"text": …}` or `{"prompt": …, "response": …}`,
//! optionally with `licence`, `source` and `language` overriding the command's defaults. Any
//! other file is plain UTF-8 text, one sample per paragraph (blocks of text between blank
//! lines), so a long document becomes samples a vote can judge one at a time. Every sample is
//! checked against the schema before anything is sent; the node runs the L0 screen on each
//! block as `POST /datasets` does, and a refused sample is reported with its code while the
//! others are still sent.

use std::path::PathBuf;

use anyhow::Context as _;
use blyan_chain::{AuthorKey, BlockHeader, BlockKind, ChainId, ChainTip};
use blyan_client::{ClientError, NodeClient};
use blyan_quality::{DataRecord, Licence, Sample, SampleContent, encode_record};
use serde::Deserialize;

/// Arguments of `dataset submit`.
#[derive(Debug, clap::Args)]
pub(crate) struct SubmitArgs {
    /// JSONL files (`.jsonl`) or plain text files (one sample per paragraph).
    #[arg(required = true, value_name = "FILE")]
    files: Vec<PathBuf>,
    /// The key file that signs the blocks (its address is the contributor): a plain hex key
    /// or an Ethereum JSON keystore.
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    #[command(flatten)]
    password: crate::keys::PasswordArgs,
    /// The node to send to (`http://host:port`).
    #[arg(long, value_name = "URL")]
    node: String,
    /// Licence of samples that name none: CC0-1.0, CC-BY-4.0, CC-BY-SA-4.0, MIT, Apache-2.0 or
    /// public-domain.
    #[arg(long, default_value = "CC-BY-4.0")]
    licence: String,
    /// Source of samples that name none (default: the file's name).
    #[arg(long)]
    source: Option<String>,
    /// Language (ISO 639-1) of samples that name none.
    #[arg(long, default_value = "en")]
    language: String,
}

/// One line of a JSONL file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    text: Option<String>,
    prompt: Option<String>,
    response: Option<String>,
    licence: Option<String>,
    source: Option<String>,
    language: Option<String>,
}

/// The samples of `files`, every one validated, with the file and line it came from.
pub(crate) fn read_samples(
    args: &SubmitArgs,
    contributor: blyan_chain::Address,
) -> anyhow::Result<Vec<(String, Sample)>> {
    let mut samples = Vec::new();
    for path in &args.files {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading {} (UTF-8 text)", path.display()))?;
        let default_source = args.source.clone().unwrap_or_else(|| {
            path.file_name().map_or_else(
                || path.display().to_string(),
                |name| name.to_string_lossy().into_owned(),
            )
        });
        let build = |content, licence: &str, source: String, language: String, at: String| {
            let licence: Licence = licence.parse().with_context(|| at.clone())?;
            Sample::new(content, licence, source, language, contributor)
                .with_context(|| at.clone())
                .map(|sample| (at, sample))
        };
        if path
            .extension()
            .is_some_and(|extension| extension == "jsonl")
        {
            for (index, line) in text.lines().enumerate() {
                if line.trim().is_empty() {
                    continue;
                }
                let at = format!("{}:{}", path.display(), index + 1);
                let line: Line = serde_json::from_str(line).with_context(|| at.clone())?;
                let content = match (line.text, line.prompt, line.response) {
                    (Some(text), None, None) => SampleContent::Text { text },
                    (None, Some(prompt), Some(response)) => {
                        SampleContent::Pair { prompt, response }
                    }
                    _ => {
                        anyhow::bail!("{at}: give either \"text\", or \"prompt\" and \"response\"")
                    }
                };
                samples.push(build(
                    content,
                    line.licence.as_deref().unwrap_or(&args.licence),
                    line.source.unwrap_or_else(|| default_source.clone()),
                    line.language.unwrap_or_else(|| args.language.clone()),
                    at,
                )?);
            }
        } else {
            for (index, paragraph) in paragraphs(&text).into_iter().enumerate() {
                let at = format!("{} paragraph {}", path.display(), index + 1);
                samples.push(build(
                    SampleContent::Text { text: paragraph },
                    &args.licence,
                    default_source.clone(),
                    args.language.clone(),
                    at,
                )?);
            }
        }
    }
    Ok(samples)
}

/// The paragraphs of `text`: runs of non-blank lines, trimmed.
fn paragraphs(text: &str) -> Vec<String> {
    let mut paragraphs = Vec::new();
    let mut current: Vec<&str> = Vec::new();
    for line in text.lines().chain(std::iter::once("")) {
        if line.trim().is_empty() {
            if !current.is_empty() {
                paragraphs.push(current.join("\n"));
                current.clear();
            }
        } else {
            current.push(line.trim_end());
        }
    }
    paragraphs
}

/// Reads every sample, then sends each in its own block; prints each block's hash. A sample
/// the node's L0 screen refuses (a duplicate, a secret, …: 422 with the refusal's code) is
/// reported on stderr as `refused CODE FILE:LINE: message` and the others are still sent; the
/// command fails at the end when any was refused.
pub(crate) fn submit(args: &SubmitArgs) -> anyhow::Result<()> {
    let key = crate::keys::read_key(&args.key, &args.password)?;
    // Everything is checked before anything is sent.
    let samples = read_samples(args, key.address())?;
    let total = samples.len();
    let client = NodeClient::connect(&args.node)
        .with_context(|| format!("connecting to the node at {}", args.node))?;
    let mut refused = 0usize;
    for (at, sample) in samples {
        let payload = encode_record(&DataRecord::Sample(sample));
        match post(&client, &key, &payload) {
            Ok(hash) => println!("{hash} {at}"),
            Err(PostError::Client(ClientError::Refused {
                status: 422,
                code,
                message,
                ..
            })) => {
                eprintln!("refused {code} {at}: {message}");
                refused += 1;
            }
            Err(error) => return Err(anyhow::Error::new(error).context(format!("sending {at}"))),
        }
    }
    if refused > 0 {
        anyhow::bail!("the node refused {refused} of {total} samples");
    }
    Ok(())
}

/// Why a block was not appended.
#[derive(Debug, thiserror::Error)]
enum PostError {
    /// The node's answer.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// Chain D's tip moved under every try.
    #[error("chain D's tip kept moving")]
    TipMoving,
}

/// Sends `payload` in a `DatasetEntry` block on chain D's tip, again on a new tip when it moved.
fn post(
    client: &NodeClient,
    key: &AuthorKey,
    payload: &[u8],
) -> Result<blyan_chain::BlockHash, PostError> {
    for _ in 0..8 {
        let summary = client.chain(ChainId::Dataset)?;
        let parent = ChainTip {
            chain: ChainId::Dataset,
            height: summary.tip_height,
            hash: summary.tip_hash,
        };
        let not_before = client
            .fetch_header(&summary.tip_hash)?
            .map_or(0, |header| header.timestamp_ms);
        let mut header = BlockHeader::new_child(
            &parent,
            BlockKind::DatasetEntry,
            payload,
            blyan_pol::now_ms().max(not_before),
        );
        header.author = key.address();
        if summary.pow_difficulty_bits > 0 {
            header.mine(summary.pow_difficulty_bits);
        }
        header.sign(key);
        match client.post_block(&header, payload) {
            Err(ClientError::Refused { code, .. }) if code == "block_fork" => continue,
            other => return Ok(other?),
        }
    }
    Err(PostError::TipMoving)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_text_is_one_sample_per_paragraph_and_jsonl_one_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let plain = dir.path().join("notes.txt");
        std::fs::write(
            &plain,
            "First paragraph, long enough to be a sample.\nIts second line.\n\n\n\
             Second paragraph, also long enough to count.\n",
        )
        .unwrap();
        let lines = dir.path().join("pairs.jsonl");
        std::fs::write(
            &lines,
            "{\"prompt\": \"What is an expert?\", \"response\": \"A feed-forward block the router picks.\"}\n\
             \n{\"text\": \"Plain text on one line, in German.\", \"language\": \"de\", \"licence\": \"MIT\"}\n",
        )
        .unwrap();
        let args = SubmitArgs {
            files: vec![plain, lines.clone()],
            key: PathBuf::new(),
            password: crate::keys::PasswordArgs::default(),
            node: String::new(),
            licence: "CC0-1.0".into(),
            source: None,
            language: "en".into(),
        };
        let contributor = AuthorKey::generate().address();
        let samples = read_samples(&args, contributor).unwrap();
        assert_eq!(samples.len(), 4);
        assert_eq!(
            samples[0].1.training_text(),
            "First paragraph, long enough to be a sample.\nIts second line."
        );
        assert_eq!(samples[0].1.source, "notes.txt");
        assert_eq!(samples[0].1.licence, Licence::Cc0);
        assert!(matches!(samples[2].1.content, SampleContent::Pair { .. }));
        assert_eq!(samples[3].1.language, "de");
        assert_eq!(samples[3].1.licence, Licence::Mit);
        assert!(
            samples
                .iter()
                .all(|(_, sample)| sample.contributor == contributor)
        );
        assert!(samples[3].0.ends_with("pairs.jsonl:3"), "{}", samples[3].0);

        // One bad line refuses the whole run before anything is sent, naming the line.
        std::fs::write(&lines, "{\"text\": \"short\"}\n").unwrap();
        let error = read_samples(&args, contributor).unwrap_err();
        assert!(format!("{error:#}").contains("pairs.jsonl:1"), "{error:#}");
    }
}
