//! `node.yaml`: the node's typed, validated configuration.
//!
//! Loading is one merge and one typed pass: the shipped defaults (`config/node.yaml`, compiled
//! in) and the operator's file are parsed as YAML values, the file's mappings are merged into
//! the defaults' key by key (a scalar or list replaces, a `null` leaves the default), and the
//! result is deserialized once into [`NodeConfig`] with `deny_unknown_fields`, through
//! `serde_path_to_error` so a refusal names the dotted path of the field. [`NodeConfig::validate`]
//! then checks what serde cannot: bounds and relations between fields.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use blyan_pol::{PolMode, ValidatorStake};
use blyan_primitives::{Durability, ExpertName, POW_DIFFICULTY_BITS_MAX};
use serde::{Deserialize, Serialize};
use serde_yaml::Value;

use crate::{Error, Result};

/// The shipped defaults, the same text as `config/node.yaml`.
pub const NODE_CONFIG_DEFAULT_YAML: &str = include_str!("../../../config/node.yaml");

/// How the compiled-in defaults are named in errors.
const DEFAULTS_ORIGIN: &str = "<built-in node.yaml>";

/// Smallest expert cache the node accepts: one tiny expert must fit.
pub const CACHE_EXPERT_BYTES_MIN: u64 = 1 << 20;

/// Everything a node reads from `node.yaml`. Field names are the YAML keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeConfig {
    /// Directory of the chain store, the embedded ledger and keys.
    pub data_dir: PathBuf,
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Which ledger backend holds balances.
    pub ledger: LedgerConfig,
    /// The expert cache.
    pub cache: CacheConfig,
    /// The model a chain without one starts with.
    pub model: ModelConfig,
    /// The chain store.
    pub chain: ChainConfig,
    /// Proof-of-Learning.
    pub pol: PolConfig,
    /// The network.
    pub p2p: P2pConfig,
    /// Logging.
    pub log: LogConfig,
    /// The HTTP API: sign-in, limits, free tier.
    pub api: ApiConfig,
    /// Micro-step learning between inference requests.
    pub learning: LearningConfig,
}

/// Micro-step learning: a background learner fine-tunes named experts in short slices that
/// yield to inference (`learner.rs`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LearningConfig {
    /// Whether the node learns at all.
    pub enabled: bool,
    /// Text files or directories to learn from.
    pub corpus: Vec<PathBuf>,
    /// Whether the dataset chain's (D) entries that are UTF-8 text are learned from too.
    pub dataset: bool,
    /// The experts to fine-tune (`layer0.expert1`); required when enabled.
    pub experts: Vec<ExpertName>,
    /// Whether the routers of the experts' layers train too.
    pub router: bool,
    /// Target length of one training slice, in milliseconds (at most [`LEARNING_SLICE_MS_MAX`]).
    pub slice_ms: u32,
    /// Sequences per step (halved at start until a step fits `slice_ms`).
    pub batch_size: u32,
    /// Tokens per sequence.
    pub positions: u32,
    /// Steps between two held-out evaluations (and state saves).
    pub eval_every: u64,
    /// Most held-out tokens one evaluation scores.
    pub eval_tokens: u32,
    /// Held-out share of the text, in thousandths.
    pub held_out_per_mille: u32,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Relative held-out loss improvement (0.01: 1%) over the served weights, or over the last
    /// candidate, before a new candidate is made.
    pub min_improvement: f64,
    /// Whether a candidate is published to the node's chain (and served) at once.
    pub publish: bool,
    /// Fixes the batches drawn.
    pub seed: u64,
}

/// Longest accepted `learning.slice_ms`: inference never waits behind more than one slice.
pub const LEARNING_SLICE_MS_MAX: u32 = 200;

/// Largest accepted `learning.batch_size`.
pub const LEARNING_BATCH_SIZE_MAX: u32 = 256;

/// Largest accepted `learning.positions` (the model's context may lower it further).
pub const LEARNING_POSITIONS_MAX: u32 = 4096;

/// Largest accepted `learning.eval_tokens`.
pub const LEARNING_EVAL_TOKENS_MAX: u32 = 1 << 20;

/// Most experts one node fine-tunes at once.
pub const LEARNING_EXPERTS_MAX: usize = 64;

/// Where the ledger lives.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerConfig {
    /// The backend.
    pub backend: LedgerBackend,
    /// Connection string, required when `backend` is `postgres`.
    pub postgres_url: Option<String>,
    /// The tokenomics file (fees, payment timings; the format of `config/tokenomics.yaml`);
    /// `None`: the shipped one, compiled in.
    pub tokenomics: Option<PathBuf>,
    /// How long before a paid chat's hold expires its generation stops (finish reason
    /// `time_limit`), in milliseconds: time left to deliver the last deltas and capture. Between
    /// [`SETTLE_MARGIN_MS_MIN`] and [`SETTLE_MARGIN_MS_MAX`], and below the hold's lifetime
    /// (`payments.hold_ttl_seconds`; checked when the ledger opens).
    pub settle_margin_ms: u64,
}

/// Smallest accepted `ledger.settle_margin_ms`.
pub const SETTLE_MARGIN_MS_MIN: u64 = 10;

/// Largest accepted `ledger.settle_margin_ms` (one hour).
pub const SETTLE_MARGIN_MS_MAX: u64 = 3_600_000;

/// The ledger backends a node can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum LedgerBackend {
    /// A file under the data directory; needs no server.
    Embedded,
    /// A PostgreSQL server.
    Postgres,
}

/// The expert cache.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CacheConfig {
    /// Upper bound on expert weight bytes held at once.
    pub expert_bytes_max: u64,
}

/// The model a chain that holds none starts with (the node's first start).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// `shipped`: the trained default model shipped with the node; `random`: an untrained
    /// random initialisation (its chat is noise).
    pub seed: SeedChoice,
    /// Where the shipped model's files are; `null`: the copy in the repository the node was
    /// built from (`models/default`).
    pub shipped_dir: Option<PathBuf>,
}

/// The model choices of [`ModelConfig::seed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SeedChoice {
    /// The shipped trained model.
    Shipped,
    /// The untrained random initialisation.
    Random,
}

impl ModelConfig {
    /// What `blyan_moe::ensure_model` writes on a chain without a model.
    pub fn seed_model(&self) -> blyan_moe::SeedModel {
        match self.seed {
            SeedChoice::Shipped => match &self.shipped_dir {
                Some(dir) => blyan_moe::SeedModel::Shipped(dir.clone()),
                None => blyan_moe::SeedModel::default(),
            },
            SeedChoice::Random => blyan_moe::SeedModel::Random(blyan_moe::DEFAULT_SEED),
        }
    }
}

/// The chain store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainConfig {
    /// Whether an acknowledged block must survive power loss.
    pub durability: Durability,
    /// Leading zero bits a block hash needs; 0 turns proof of work off.
    pub pow_difficulty_bits: u32,
    /// Whether each chain keeps two children of one parent (blocks appended apart on two
    /// nodes).
    pub fork_rules: blyan_chain::ForkRules,
}

/// The network (`blyan-p2p`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct P2pConfig {
    /// Whether the node joins a network at all.
    pub enabled: bool,
    /// Multiaddrs to listen on.
    pub listen: Vec<String>,
    /// Multiaddrs of peers to join through.
    pub bootstrap: Vec<String>,
    /// How often, in milliseconds, tips are compared with every peer.
    pub sync_interval_ms: u64,
    /// Patterns of the experts this node computes and serves to its peers.
    pub serve_experts: Vec<String>,
    /// Whether experts outside `serve_experts` are computed by peers.
    pub remote_experts: bool,
    /// Remote calls per minute of one expert past which it is replicated here (0: never).
    pub replicate_calls_per_minute: u32,
    /// Hours an unfinished, untouched payload download is kept for resuming before it is
    /// discarded.
    pub stage_idle_hours: u64,
}

impl P2pConfig {
    /// The network's settings (an invalid address or pattern is
    /// [`Error::ConfigInvalid`] naming its field; [`NodeConfig::validate`] has refused it already
    /// for a loaded config).
    pub fn network_config(&self) -> Result<blyan_p2p::NetworkConfig> {
        self.parse()
            .map_err(|(field, reason)| Error::ConfigInvalid {
                path: PathBuf::from(DEFAULTS_ORIGIN),
                field: field.to_owned(),
                reason,
            })
    }

    /// The one parse of the addresses and patterns: what validation checks and the network
    /// starts with. An error is the field and the reason.
    fn parse(&self) -> std::result::Result<blyan_p2p::NetworkConfig, (&'static str, String)> {
        let parse = |field: &'static str, addresses: &[String]| {
            addresses
                .iter()
                .map(|address| {
                    address.parse().map_err(|error| {
                        (field, format!("{address:?} is not a multiaddr: {error}"))
                    })
                })
                .collect::<std::result::Result<Vec<_>, _>>()
        };
        let serve_experts = blyan_p2p::ExpertSelection::parse(&self.serve_experts)
            .map_err(|error| ("p2p.serve_experts", error.to_string()))?;
        Ok(blyan_p2p::NetworkConfig {
            listen: parse("p2p.listen", &self.listen)?,
            bootstrap: parse("p2p.bootstrap", &self.bootstrap)?,
            sync_interval: std::time::Duration::from_millis(self.sync_interval_ms),
            serve_experts,
            experts: blyan_p2p::ExpertOptions {
                replicate_calls_per_minute: self.replicate_calls_per_minute,
                ..blyan_p2p::ExpertOptions::default()
            },
            stage_idle_max: std::time::Duration::from_secs(
                self.stage_idle_hours.saturating_mul(3600),
            ),
            ..blyan_p2p::NetworkConfig::default()
        })
    }
}

/// Proof-of-Learning (`docs/pol.md`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolConfig {
    /// How new versions become served: certificates (`pol`), certificates and proof of work
    /// (`hybrid`), or proof of work only (`pow`).
    pub mode: PolMode,
    /// Least relative improvement a certificate accepts (0.01 = 1 %).
    pub threshold: f64,
    /// Largest difference, in nats, between accepting validators' losses counted together.
    pub loss_tolerance: f64,
    /// Chain-D blocks after which an undecided claim may be expired.
    pub expiry_blocks: u64,
    /// The validator set; empty: the node's own key with stake 1.
    pub validators: Vec<ValidatorStake>,
    /// Whether the node runs the validator when its key is in the set.
    pub validator: bool,
    /// How often the node's Proof-of-Learning service looks at the chain, in milliseconds.
    pub interval_ms: u64,
    /// The evaluation validators run.
    pub eval: PolEvalConfig,
}

/// The evaluation every validator of a network runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolEvalConfig {
    /// The public evaluation pool; empty: the shipped model's pool.
    pub corpus: Vec<PathBuf>,
    /// The validators' hidden evaluation set, added to the pool.
    pub hidden: Vec<PathBuf>,
    /// Windows drawn per evaluation.
    pub windows: u32,
    /// Tokens per window.
    pub positions: u32,
    /// Torch threads evaluations run with.
    pub threads: u32,
}

impl PolConfig {
    /// The threshold in basis points of the base loss.
    pub fn threshold_bps(&self) -> i64 {
        (self.threshold * 10_000.0).round() as i64
    }

    /// The loss tolerance in micro-nats.
    pub fn tolerance_micros(&self) -> u64 {
        (self.loss_tolerance * 1e6).round() as u64
    }
}

/// Logging.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// Output format.
    pub format: LogFormat,
    /// A `tracing` env-filter directive; `RUST_LOG` overrides it.
    pub filter: String,
}

/// Log output formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per event.
    Json,
}

/// The HTTP API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Largest request body accepted, in bytes.
    pub body_bytes_max: u64,
    /// Sign-In with Ethereum and tokens.
    pub auth: AuthConfig,
    /// Request rates on the expensive endpoints (chat, sign-in).
    pub rate_limit: RateLimitConfig,
    /// What anonymous callers may use without paying.
    pub free_tier: FreeTierConfig,
}

/// Sign-In with Ethereum (EIP-4361) and the tokens issued after it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthConfig {
    /// `host[:port]` values a sign-in message may name as its domain. Empty: the address the
    /// node is bound to (and `localhost:PORT` when that is a loopback address).
    pub domains: Vec<String>,
    /// The EIP-155 chain id a sign-in message must name.
    pub chain_id: u64,
    /// Seconds a sign-in nonce stays usable.
    pub nonce_ttl_seconds: u64,
    /// Seconds an access token (JWT) stays valid.
    pub access_token_ttl_seconds: u64,
    /// Seconds a refresh token stays valid.
    pub refresh_token_ttl_seconds: u64,
}

/// Token-bucket limits on the expensive endpoints; a refused request gets 429 and `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Requests per minute from one IP address (also the burst size).
    pub per_ip_per_minute: u32,
    /// Requests per minute from one signed-in wallet (also the burst size).
    pub per_wallet_per_minute: u32,
}

/// The free tier: chat for callers that are not signed in, limited per IP address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreeTierConfig {
    /// Whether anonymous callers may chat at all.
    pub enabled: bool,
    /// Chat requests per hour from one IP address.
    pub requests_per_hour_per_ip: u32,
    /// Most completion tokens one free request may generate.
    pub completion_tokens_max: u32,
}

/// Smallest accepted `api.body_bytes_max`: a sign-in message with its signature must fit.
pub const API_BODY_BYTES_MIN: u64 = 4096;

/// Largest accepted `api.body_bytes_max`: bodies are buffered in memory.
pub const API_BODY_BYTES_MAX: u64 = 16 << 20;

/// Longest accepted token or nonce lifetime, in seconds (30 days).
pub const AUTH_TTL_SECONDS_MAX: u64 = 30 * 24 * 3600;

impl NodeConfig {
    /// The shipped defaults (`config/node.yaml` as compiled in).
    pub fn defaults() -> Self {
        let origin = Path::new(DEFAULTS_ORIGIN);
        let config = Self::from_value(defaults_value(), origin)
            .expect("the shipped node.yaml sets every field: a unit test checks it");
        config
            .validate(origin)
            .expect("the shipped node.yaml is valid: a unit test checks it");
        config
    }

    /// Reads `path` over the shipped defaults. A missing file yields the defaults; a file that
    /// exists but is malformed or invalid is an error naming the field.
    pub fn load(path: &Path) -> Result<Self> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::from_yaml_str(&text, path),
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                tracing::info!(path = %path.display(), "no node config file, using the shipped defaults");
                Ok(Self::defaults())
            }
            Err(source) => Err(Error::ConfigRead {
                path: path.to_owned(),
                source,
            }),
        }
    }

    /// Parses YAML text over the shipped defaults; `origin` names the text in errors.
    pub fn from_yaml_str(text: &str, origin: &Path) -> Result<Self> {
        let overlay = parse_yaml(text, origin)?;
        if !matches!(overlay, Value::Null | Value::Mapping(_)) {
            return Err(Error::ConfigInvalid {
                path: origin.to_owned(),
                field: ".".to_owned(),
                reason: "the document must be a mapping of settings".to_owned(),
            });
        }
        let mut merged = defaults_value();
        merge(&mut merged, overlay);
        let config = Self::from_value(merged, origin)?;
        config.validate(origin)?;
        Ok(config)
    }

    /// The one typed pass: every field must be present (the defaults supply them) and known.
    fn from_value(value: Value, origin: &Path) -> Result<Self> {
        serde_path_to_error::deserialize(value).map_err(|error| Error::ConfigInvalid {
            path: origin.to_owned(),
            field: error.path().to_string(),
            reason: error.into_inner().to_string(),
        })
    }

    /// Checks relations serde cannot: bounds and fields required by other fields.
    pub fn validate(&self, origin: &Path) -> Result<()> {
        let invalid = |field: &str, reason: String| Error::ConfigInvalid {
            path: origin.to_owned(),
            field: field.to_owned(),
            reason,
        };
        if self.data_dir.as_os_str().is_empty() {
            return Err(invalid("data_dir", "must not be empty".into()));
        }
        if self.ledger.backend == LedgerBackend::Postgres && self.ledger.postgres_url.is_none() {
            return Err(invalid(
                "ledger.postgres_url",
                "is required when ledger.backend is postgres".into(),
            ));
        }
        if !(SETTLE_MARGIN_MS_MIN..=SETTLE_MARGIN_MS_MAX).contains(&self.ledger.settle_margin_ms) {
            return Err(invalid(
                "ledger.settle_margin_ms",
                format!(
                    "{} is outside {SETTLE_MARGIN_MS_MIN}..={SETTLE_MARGIN_MS_MAX} ms",
                    self.ledger.settle_margin_ms
                ),
            ));
        }
        if self.cache.expert_bytes_max < CACHE_EXPERT_BYTES_MIN {
            return Err(invalid(
                "cache.expert_bytes_max",
                format!(
                    "{} is below the minimum of {CACHE_EXPERT_BYTES_MIN} bytes",
                    self.cache.expert_bytes_max
                ),
            ));
        }
        if self.chain.pow_difficulty_bits > POW_DIFFICULTY_BITS_MAX {
            return Err(invalid(
                "chain.pow_difficulty_bits",
                format!(
                    "{} is above the maximum of {POW_DIFFICULTY_BITS_MAX}",
                    self.chain.pow_difficulty_bits
                ),
            ));
        }
        self.validate_pol(&invalid)?;
        self.validate_p2p(&invalid)?;
        if let Err(error) = tracing_subscriber::EnvFilter::try_new(&self.log.filter) {
            return Err(invalid("log.filter", error.to_string()));
        }
        self.validate_api(&invalid)?;
        self.validate_learning(&invalid)
    }

    fn validate_p2p(&self, invalid: &dyn Fn(&str, String) -> Error) -> Result<()> {
        let p2p = &self.p2p;
        if let Err((field, reason)) = p2p.parse() {
            return Err(invalid(field, reason));
        }
        if p2p.enabled && p2p.listen.is_empty() {
            return Err(invalid(
                "p2p.listen",
                "the network needs an address to listen on".into(),
            ));
        }
        if !(100..=3_600_000).contains(&p2p.sync_interval_ms) {
            return Err(invalid(
                "p2p.sync_interval_ms",
                format!("{} is outside 100..=3600000", p2p.sync_interval_ms),
            ));
        }
        if !(1..=24 * 365).contains(&p2p.stage_idle_hours) {
            return Err(invalid(
                "p2p.stage_idle_hours",
                format!("{} is outside 1..=8760", p2p.stage_idle_hours),
            ));
        }
        Ok(())
    }

    fn validate_pol(&self, invalid: &dyn Fn(&str, String) -> Error) -> Result<()> {
        let pol = &self.pol;
        if !(pol.threshold > 0.0 && pol.threshold < 1.0) {
            return Err(invalid(
                "pol.threshold",
                format!("{} is outside (0, 1)", pol.threshold),
            ));
        }
        if !(0.0..=1.0).contains(&pol.loss_tolerance) {
            return Err(invalid(
                "pol.loss_tolerance",
                format!("{} is outside 0..=1 nats", pol.loss_tolerance),
            ));
        }
        if pol.expiry_blocks == 0 {
            return Err(invalid("pol.expiry_blocks", "must be at least 1".into()));
        }
        if pol.mode == PolMode::Hybrid && self.chain.pow_difficulty_bits == 0 {
            return Err(invalid(
                "pol.mode",
                "hybrid needs proof of work: set chain.pow_difficulty_bits to 1 or more".into(),
            ));
        }
        let mut seen = std::collections::BTreeSet::new();
        for validator in &pol.validators {
            if validator.stake == 0 {
                return Err(invalid(
                    "pol.validators",
                    format!("{} has stake 0", validator.address),
                ));
            }
            if !seen.insert(validator.address) {
                return Err(invalid(
                    "pol.validators",
                    format!("{} is listed twice", validator.address),
                ));
            }
        }
        if !(10..=60_000).contains(&pol.interval_ms) {
            return Err(invalid(
                "pol.interval_ms",
                format!("{} is outside 10..=60000", pol.interval_ms),
            ));
        }
        let eval = &pol.eval;
        if !(1..=1024).contains(&eval.windows) {
            return Err(invalid(
                "pol.eval.windows",
                format!("{} is outside 1..=1024", eval.windows),
            ));
        }
        if !(8..=4096).contains(&eval.positions) {
            return Err(invalid(
                "pol.eval.positions",
                format!("{} is outside 8..=4096", eval.positions),
            ));
        }
        if !(1..=256).contains(&eval.threads) {
            return Err(invalid(
                "pol.eval.threads",
                format!("{} is outside 1..=256", eval.threads),
            ));
        }
        Ok(())
    }

    fn validate_learning(&self, invalid: &dyn Fn(&str, String) -> Error) -> Result<()> {
        let learning = &self.learning;
        let within = |field: &str, value: u64, min: u64, max: u64| {
            if (min..=max).contains(&value) {
                Ok(())
            } else {
                Err(invalid(
                    &format!("learning.{field}"),
                    format!("{value} is outside {min}..={max}"),
                ))
            }
        };
        within(
            "slice_ms",
            u64::from(learning.slice_ms),
            1,
            u64::from(LEARNING_SLICE_MS_MAX),
        )?;
        within(
            "batch_size",
            u64::from(learning.batch_size),
            1,
            u64::from(LEARNING_BATCH_SIZE_MAX),
        )?;
        within(
            "positions",
            u64::from(learning.positions),
            2,
            u64::from(LEARNING_POSITIONS_MAX),
        )?;
        within("eval_every", learning.eval_every, 1, u64::from(u32::MAX))?;
        within(
            "eval_tokens",
            u64::from(learning.eval_tokens),
            1,
            u64::from(LEARNING_EVAL_TOKENS_MAX),
        )?;
        within(
            "held_out_per_mille",
            u64::from(learning.held_out_per_mille),
            1,
            999,
        )?;
        if !(learning.learning_rate.is_finite()
            && learning.learning_rate > 0.0
            && learning.learning_rate <= 1.0)
        {
            return Err(invalid(
                "learning.learning_rate",
                format!("{} is outside (0, 1]", learning.learning_rate),
            ));
        }
        if !(learning.min_improvement.is_finite() && (0.0..1.0).contains(&learning.min_improvement))
        {
            return Err(invalid(
                "learning.min_improvement",
                format!(
                    "{} is outside [0, 1): it is a relative improvement of the held-out loss",
                    learning.min_improvement
                ),
            ));
        }
        if learning.experts.len() > LEARNING_EXPERTS_MAX {
            return Err(invalid(
                "learning.experts",
                format!("at most {LEARNING_EXPERTS_MAX} experts"),
            ));
        }
        for (index, expert) in learning.experts.iter().enumerate() {
            if learning.experts[..index].contains(expert) {
                return Err(invalid(
                    &format!("learning.experts[{index}]"),
                    format!("{expert} is listed twice"),
                ));
            }
        }
        for (index, path) in learning.corpus.iter().enumerate() {
            if path.as_os_str().is_empty() {
                return Err(invalid(
                    &format!("learning.corpus[{index}]"),
                    "must not be empty".into(),
                ));
            }
        }
        if learning.enabled {
            if learning.experts.is_empty() {
                return Err(invalid(
                    "learning.experts",
                    "is required when learning.enabled is true: name the experts to fine-tune"
                        .into(),
                ));
            }
            if learning.corpus.is_empty() && !learning.dataset {
                return Err(invalid(
                    "learning.corpus",
                    "is required when learning.enabled is true and learning.dataset is false"
                        .into(),
                ));
            }
        }
        Ok(())
    }

    fn validate_api(&self, invalid: &dyn Fn(&str, String) -> Error) -> Result<()> {
        let api = &self.api;
        if !(API_BODY_BYTES_MIN..=API_BODY_BYTES_MAX).contains(&api.body_bytes_max) {
            return Err(invalid(
                "api.body_bytes_max",
                format!(
                    "{} is outside {API_BODY_BYTES_MIN}..={API_BODY_BYTES_MAX} bytes",
                    api.body_bytes_max
                ),
            ));
        }
        for (index, domain) in api.auth.domains.iter().enumerate() {
            let well_formed = !domain.is_empty()
                && domain
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':' | '[' | ']'));
            if !well_formed {
                return Err(invalid(
                    &format!("api.auth.domains[{index}]"),
                    format!("`{domain}` is not a host[:port]"),
                ));
            }
        }
        let ttls = [
            ("api.auth.nonce_ttl_seconds", api.auth.nonce_ttl_seconds),
            (
                "api.auth.access_token_ttl_seconds",
                api.auth.access_token_ttl_seconds,
            ),
            (
                "api.auth.refresh_token_ttl_seconds",
                api.auth.refresh_token_ttl_seconds,
            ),
        ];
        for (field, seconds) in ttls {
            if !(1..=AUTH_TTL_SECONDS_MAX).contains(&seconds) {
                return Err(invalid(
                    field,
                    format!("{seconds} is outside 1..={AUTH_TTL_SECONDS_MAX} seconds"),
                ));
            }
        }
        let rates = [
            (
                "api.rate_limit.per_ip_per_minute",
                api.rate_limit.per_ip_per_minute,
            ),
            (
                "api.rate_limit.per_wallet_per_minute",
                api.rate_limit.per_wallet_per_minute,
            ),
        ];
        for (field, rate) in rates {
            if rate == 0 {
                return Err(invalid(field, "must be at least 1".into()));
            }
        }
        if api.free_tier.enabled
            && (api.free_tier.requests_per_hour_per_ip == 0
                || api.free_tier.completion_tokens_max == 0)
        {
            let field = if api.free_tier.requests_per_hour_per_ip == 0 {
                "api.free_tier.requests_per_hour_per_ip"
            } else {
                "api.free_tier.completion_tokens_max"
            };
            return Err(invalid(
                field,
                "must be at least 1 while the free tier is enabled".into(),
            ));
        }
        Ok(())
    }
}

/// The compiled-in defaults as a YAML value.
fn defaults_value() -> Value {
    parse_yaml(NODE_CONFIG_DEFAULT_YAML, Path::new(DEFAULTS_ORIGIN))
        .expect("the shipped node.yaml parses: a unit test checks it")
}

fn parse_yaml(text: &str, origin: &Path) -> Result<Value> {
    // An empty file is a file that changes nothing.
    if text.trim().is_empty() {
        return Ok(Value::Null);
    }
    serde_yaml::from_str(text).map_err(|error| Error::ConfigInvalid {
        path: origin.to_owned(),
        field: ".".to_owned(),
        reason: error.to_string(),
    })
}

/// Merges `overlay` into `base`: mappings key by key, recursively; any other value replaces;
/// a `null` changes nothing (a section whose lines are all commented out, as in the shipped
/// file's style).
fn merge(base: &mut Value, overlay: Value) {
    match (base, overlay) {
        (_, Value::Null) => {}
        (Value::Mapping(base), Value::Mapping(overlay)) => {
            for (key, value) in overlay {
                match base.get_mut(&key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        // Unknown keys go through, for the typed pass to refuse by name.
                        base.insert(key, value);
                    }
                }
            }
        }
        (slot, overlay) => *slot = overlay,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check_rejected(yaml: &str, field: &str) {
        let error = NodeConfig::from_yaml_str(yaml, Path::new("test.yaml"))
            .expect_err("the config must be refused");
        match &error {
            Error::ConfigInvalid { field: got, .. } => assert_eq!(got, field, "{error}"),
            other => panic!("unexpected error {other:?}"),
        }
        assert!(error.to_string().contains(field), "{error}");
    }

    #[test]
    fn shipped_defaults_parse_and_are_complete() {
        let value = parse_yaml(NODE_CONFIG_DEFAULT_YAML, Path::new("node.yaml")).unwrap();
        let config =
            NodeConfig::from_value(value, Path::new("node.yaml")).expect("every field set");
        assert_eq!(config, NodeConfig::defaults());
        assert_eq!(config.listen.port(), 8700);
        assert_eq!(config.ledger.backend, LedgerBackend::Embedded);
        assert_eq!(config.ledger.tokenomics, None);
        assert_eq!(config.ledger.settle_margin_ms, 30_000);
        assert_eq!(config.pol.mode, PolMode::Pol);
        assert_eq!(config.pol.threshold_bps(), 100);
    }

    #[test]
    fn the_file_in_config_is_the_compiled_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/node.yaml");
        assert_eq!(NodeConfig::load(&path).unwrap(), NodeConfig::defaults());
    }

    #[test]
    fn a_partial_file_overrides_only_what_it_names() {
        let config = NodeConfig::from_yaml_str(
            "listen: 0.0.0.0:9000\ncache:\n  expert_bytes_max: 2097152\n",
            Path::new("t"),
        )
        .unwrap();
        assert_eq!(config.listen.port(), 9000);
        assert_eq!(config.cache.expert_bytes_max, 2 << 20);
        assert_eq!(config.data_dir, NodeConfig::defaults().data_dir);
    }

    #[test]
    fn a_missing_file_falls_back_to_defaults() {
        let dir = tempfile::tempdir().unwrap();
        let config = NodeConfig::load(&dir.path().join("absent.yaml")).unwrap();
        assert_eq!(config, NodeConfig::defaults());
    }

    #[test]
    fn malformed_fields_are_named() {
        check_rejected("listen: not-an-address\n", "listen");
        check_rejected("ledger:\n  backend: oracle\n", "ledger.backend");
        check_rejected("cache:\n  expert_bytes_max: -1\n", "cache.expert_bytes_max");
        check_rejected("chain:\n  durability: sometimes\n", "chain.durability");
        check_rejected("pol:\n  mode: maybe\n", "pol.mode");
        check_rejected("cache:\n  expert_byte_max: 5\n", "cache.expert_byte_max");
        check_rejected("colour: blue\n", "colour");
    }

    #[test]
    fn invalid_values_are_named() {
        check_rejected("ledger:\n  backend: postgres\n", "ledger.postgres_url");
        check_rejected(
            "cache:\n  expert_bytes_max: 1048575\n",
            "cache.expert_bytes_max",
        );
        check_rejected(
            "ledger:\n  settle_margin_ms: 9\n",
            "ledger.settle_margin_ms",
        );
        check_rejected(
            "ledger:\n  settle_margin_ms: 3600001\n",
            "ledger.settle_margin_ms",
        );
        for margin in [SETTLE_MARGIN_MS_MIN, SETTLE_MARGIN_MS_MAX] {
            let config = NodeConfig::from_yaml_str(
                &format!("ledger:\n  settle_margin_ms: {margin}\n"),
                Path::new("t"),
            )
            .unwrap();
            assert_eq!(config.ledger.settle_margin_ms, margin);
        }
        check_rejected(
            "chain:\n  pow_difficulty_bits: 65\n",
            "chain.pow_difficulty_bits",
        );
        check_rejected("log:\n  filter: 'info,=='\n", "log.filter");
        check_rejected("data_dir: ''\n", "data_dir");
        check_rejected("p2p:\n  listen: ['not an address']\n", "p2p.listen");
        check_rejected(
            "p2p:\n  bootstrap: ['/ip4/1.2.3.4/tcp/x']\n",
            "p2p.bootstrap",
        );
        check_rejected("p2p:\n  enabled: true\n  listen: []\n", "p2p.listen");
        check_rejected("p2p:\n  sync_interval_ms: 99\n", "p2p.sync_interval_ms");
        check_rejected("p2p:\n  stage_idle_hours: 0\n", "p2p.stage_idle_hours");
        check_rejected(
            "p2p:\n  serve_experts: ['layer9-2.*']\n",
            "p2p.serve_experts",
        );
        check_rejected(
            "chain:\n  fork_rules:\n    meta: sideways\n",
            "chain.fork_rules.meta",
        );
        check_rejected("api:\n  body_bytes_max: 4095\n", "api.body_bytes_max");
        check_rejected(
            "api:\n  auth:\n    domains: ['a b']\n",
            "api.auth.domains[0]",
        );
        check_rejected(
            "api:\n  auth:\n    nonce_ttl_seconds: 0\n",
            "api.auth.nonce_ttl_seconds",
        );
        check_rejected(
            "api:\n  auth:\n    access_token_ttl_seconds: 2592001\n",
            "api.auth.access_token_ttl_seconds",
        );
        check_rejected(
            "api:\n  rate_limit:\n    per_ip_per_minute: 0\n",
            "api.rate_limit.per_ip_per_minute",
        );
        check_rejected(
            "api:\n  free_tier:\n    requests_per_hour_per_ip: 0\n",
            "api.free_tier.requests_per_hour_per_ip",
        );
        NodeConfig::from_yaml_str(
            "api:\n  free_tier:\n    enabled: false\n    requests_per_hour_per_ip: 0\n",
            Path::new("t"),
        )
        .expect("a disabled free tier may have zero quota");
    }

    #[test]
    fn bounds_are_inclusive() {
        let at_min = format!("cache:\n  expert_bytes_max: {CACHE_EXPERT_BYTES_MIN}\n");
        NodeConfig::from_yaml_str(&at_min, Path::new("t")).unwrap();
        let at_max = format!("chain:\n  pow_difficulty_bits: {POW_DIFFICULTY_BITS_MAX}\n");
        NodeConfig::from_yaml_str(&at_max, Path::new("t")).unwrap();
        for bytes in [API_BODY_BYTES_MIN, API_BODY_BYTES_MAX] {
            NodeConfig::from_yaml_str(
                &format!("api:\n  body_bytes_max: {bytes}\n"),
                Path::new("t"),
            )
            .unwrap();
        }
        check_rejected(
            &format!("api:\n  body_bytes_max: {}\n", API_BODY_BYTES_MAX + 1),
            "api.body_bytes_max",
        );
        let ttl = format!("api:\n  auth:\n    refresh_token_ttl_seconds: {AUTH_TTL_SECONDS_MAX}\n");
        NodeConfig::from_yaml_str(&ttl, Path::new("t")).unwrap();
    }

    #[test]
    fn learning_is_off_by_default() {
        let learning = NodeConfig::defaults().learning;
        assert!(!learning.enabled);
        assert!(!learning.publish);
        assert!(learning.slice_ms <= LEARNING_SLICE_MS_MAX);
    }

    #[test]
    fn learning_values_are_checked_with_their_field() {
        let on = "learning:\n  enabled: true\n  corpus: [docs]\n  experts: [layer0.expert1]\n";
        let config = NodeConfig::from_yaml_str(on, Path::new("t")).unwrap();
        assert!(config.learning.enabled);
        assert_eq!(config.learning.experts[0].to_string(), "layer0.expert1");
        let with = |line: &str| format!("{on}  {line}\n");
        check_rejected(&with("slice_ms: 201"), "learning.slice_ms");
        check_rejected(&with("slice_ms: 0"), "learning.slice_ms");
        NodeConfig::from_yaml_str(
            &with(&format!("slice_ms: {LEARNING_SLICE_MS_MAX}")),
            Path::new("t"),
        )
        .unwrap();
        check_rejected(&with("batch_size: 0"), "learning.batch_size");
        check_rejected(
            &with(&format!("batch_size: {}", LEARNING_BATCH_SIZE_MAX + 1)),
            "learning.batch_size",
        );
        check_rejected(&with("positions: 1"), "learning.positions");
        check_rejected(&with("eval_every: 0"), "learning.eval_every");
        check_rejected(&with("eval_tokens: 0"), "learning.eval_tokens");
        check_rejected(
            &with("held_out_per_mille: 1000"),
            "learning.held_out_per_mille",
        );
        check_rejected(&with("learning_rate: 0"), "learning.learning_rate");
        check_rejected(&with("min_improvement: 1.5"), "learning.min_improvement");
        check_rejected(&with("min_improvement: -0.1"), "learning.min_improvement");
        check_rejected(&with("slice_ms: fast"), "learning.slice_ms");
        check_rejected(&with("publsh: true"), "learning.publsh");
        check_rejected(
            "learning:\n  experts: [layer0.expert1, layer0.expert1]\n",
            "learning.experts[1]",
        );
        check_rejected("learning:\n  experts: [expert7]\n", "learning.experts[0]");
        check_rejected(
            "learning:\n  enabled: true\n  corpus: [docs]\n",
            "learning.experts",
        );
        check_rejected(
            "learning:\n  enabled: true\n  experts: [layer0.expert1]\n",
            "learning.corpus",
        );
        NodeConfig::from_yaml_str(
            "learning:\n  enabled: true\n  dataset: true\n  experts: [layer0.expert1]\n",
            Path::new("t"),
        )
        .expect("the dataset chain alone is a source");
    }

    #[test]
    fn proof_of_learning_settings_are_checked() {
        check_rejected("pol:\n  enabled: true\n", "pol.enabled");
        check_rejected("pol:\n  mode: maybe\n", "pol.mode");
        check_rejected("pol:\n  threshold: 0\n", "pol.threshold");
        check_rejected("pol:\n  mode: hybrid\n", "pol.mode");
        check_rejected("pol:\n  eval:\n    windows: 0\n", "pol.eval.windows");
        check_rejected(
            "pol:\n  validators:\n  - {address: \"0x0000000000000000000000000000000000000001\", stake: 0}\n",
            "pol.validators",
        );
        let config = NodeConfig::from_yaml_str(
            "chain:\n  pow_difficulty_bits: 4\npol:\n  mode: hybrid\n  threshold: 0.02\n",
            Path::new("t"),
        )
        .unwrap();
        assert_eq!(config.pol.mode, PolMode::Hybrid);
        assert_eq!(config.pol.threshold_bps(), 200);
        NodeConfig::from_yaml_str("pol:\n  mode: pow\n", Path::new("t")).unwrap();
    }

    #[test]
    fn nulls_and_empty_sections_leave_the_defaults() {
        let config = NodeConfig::from_yaml_str(
            "cache:\nlisten: ~\nledger:\n  postgres_url: null\n",
            Path::new("t"),
        )
        .unwrap();
        assert_eq!(config, NodeConfig::defaults());
        assert_eq!(
            NodeConfig::from_yaml_str("", Path::new("t")).unwrap(),
            NodeConfig::defaults()
        );
    }

    #[test]
    fn nested_overrides_keep_their_siblings() {
        let config = NodeConfig::from_yaml_str(
            "api:\n  auth:\n    chain_id: 5\n  free_tier:\n    enabled: false\n",
            Path::new("t"),
        )
        .unwrap();
        let defaults = NodeConfig::defaults();
        assert_eq!(config.api.auth.chain_id, 5);
        assert!(!config.api.free_tier.enabled);
        assert_eq!(
            config.api.auth.nonce_ttl_seconds,
            defaults.api.auth.nonce_ttl_seconds
        );
        assert_eq!(config.api.rate_limit, defaults.api.rate_limit);
        assert_eq!(
            config.api.free_tier.completion_tokens_max,
            defaults.api.free_tier.completion_tokens_max
        );
    }

    #[test]
    fn a_document_that_is_not_a_mapping_is_refused() {
        check_rejected("- listen\n", ".");
        check_rejected("listen: [\n", ".");
        check_rejected("api: 5\n", "api");
    }
}
