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

use crate::cidr::IpCidr;
use crate::{Error, Result};

/// The shipped defaults: the crate's `config/node.yaml`, the file the repository's
/// `config/node.yaml` links to.
pub const NODE_CONFIG_DEFAULT_YAML: &str = include_str!("../config/node.yaml");

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
    /// A test network's faucet: `POST /faucet` funds a signed-in wallet from the treasury.
    pub faucet: FaucetConfig,
    /// The expert cache.
    pub cache: CacheConfig,
    /// The model a chain without one starts with.
    pub model: ModelConfig,
    /// The chain store.
    pub chain: ChainConfig,
    /// Proof-of-Learning.
    pub pol: PolConfig,
    /// The dataset gates (`docs/datasets.md`).
    pub datasets: DatasetsConfig,
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
    /// Whether the dataset chain's (D) usable samples (through every gate) are learned from too.
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
    /// The account paid the serving share of each fee this node captures; `None`: the node
    /// key's address (`blyan-node` sets it at start).
    pub server_account: Option<blyan_primitives::Address>,
    /// The tokenomics file (fees, payment timings; the format of `config/tokenomics.yaml`);
    /// `None`: the shipped one, compiled in.
    pub tokenomics: Option<PathBuf>,
    /// How long before a paid chat's hold expires its generation stops (finish reason
    /// `time_limit`), in milliseconds: time left to deliver the last deltas and capture. Between
    /// [`SETTLE_MARGIN_MS_MIN`] and [`SETTLE_MARGIN_MS_MAX`], and below the hold's lifetime
    /// (`payments.hold_ttl_seconds`; checked when the ledger opens).
    pub settle_margin_ms: u64,
    /// How long an idempotency key is kept, in hours: a request replayed within it returns its
    /// first outcome (money moves once); replayed later, it is a new request. The hourly prune
    /// (`blyan_ledger::Ledger::prune`) deletes older keys, and the quotes that expired that
    /// long ago unauthorized. Between [`IDEMPOTENCY_RETENTION_HOURS_MIN`] and
    /// [`IDEMPOTENCY_RETENTION_HOURS_MAX`].
    pub idempotency_retention_hours: u64,
}

impl LedgerConfig {
    /// [`LedgerConfig::idempotency_retention_hours`] as a duration.
    pub fn idempotency_retention(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.idempotency_retention_hours.saturating_mul(3600))
    }
}

/// A test network's faucet (off by default): each claim grants `amount_per_claim` from the
/// treasury to the signed-in wallet through the ledger's grant path, at most
/// `claims_per_wallet_per_day` claims per wallet and `daily_total_max` BLY in all per UTC day,
/// both counted in the ledger (`blyan_ledger::Ledger::claim_faucet`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaucetConfig {
    /// Whether `POST /faucet` grants anything (refused with 403 `faucet_disabled` when off).
    pub enabled: bool,
    /// BLY per claim (a decimal string, e.g. `"10"`).
    #[serde(
        deserialize_with = "blyan_ledger::deserialize_bly",
        serialize_with = "blyan_ledger::serialize_bly"
    )]
    pub amount_per_claim: blyan_ledger::Amount,
    /// Most claims one wallet may make per UTC day (at least 1).
    pub claims_per_wallet_per_day: u32,
    /// Most BLY the faucet hands out per UTC day, all wallets together (at least one claim).
    #[serde(
        deserialize_with = "blyan_ledger::deserialize_bly",
        serialize_with = "blyan_ledger::serialize_bly"
    )]
    pub daily_total_max: blyan_ledger::Amount,
}

impl FaucetConfig {
    /// Bounds, as `(field, reason)`: checked whether or not the faucet is on, so turning it on
    /// never reveals a bad value.
    fn validate(&self) -> std::result::Result<(), (&'static str, String)> {
        if self.amount_per_claim == blyan_ledger::Amount::ZERO {
            return Err((
                "faucet.amount_per_claim",
                "must be greater than zero".into(),
            ));
        }
        if self.claims_per_wallet_per_day == 0 {
            return Err((
                "faucet.claims_per_wallet_per_day",
                "must be at least 1".into(),
            ));
        }
        if self.daily_total_max < self.amount_per_claim {
            return Err((
                "faucet.daily_total_max",
                format!(
                    "{} BLY is below faucet.amount_per_claim {} BLY: no claim could pass",
                    self.daily_total_max, self.amount_per_claim
                ),
            ));
        }
        Ok(())
    }
}

/// Smallest accepted `ledger.settle_margin_ms`.
pub const SETTLE_MARGIN_MS_MIN: u64 = 10;

/// Largest accepted `ledger.settle_margin_ms` (one hour).
pub const SETTLE_MARGIN_MS_MAX: u64 = 3_600_000;

/// Smallest accepted `ledger.idempotency_retention_hours` (the ledger's own minimum,
/// `blyan_ledger::IDEMPOTENCY_RETENTION_MIN`).
pub const IDEMPOTENCY_RETENTION_HOURS_MIN: u64 = 1;

/// Largest accepted `ledger.idempotency_retention_hours` (ten years).
pub const IDEMPOTENCY_RETENTION_HOURS_MAX: u64 = 87_600;

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
    /// Where the served model computes: `cpu` or `cuda:N` (refused when the model loads if the
    /// machine has no such CUDA device).
    pub device: blyan_moe::ComputeDevice,
    /// The dtype the served model holds its weights in and computes in: `f32`, `bf16` or `f16`.
    /// On the CPU, weights stored in it on the chain are used in place, without a copy.
    pub dtype: blyan_moe::ComputeDtype,
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
    /// How the served model is loaded: `device`, `dtype`, and the expert cache budget
    /// (`cache.expert_bytes_max`).
    pub fn options(&self, expert_bytes_max: u64) -> blyan_moe::ModelOptions {
        blyan_moe::ModelOptions {
            device: self.device,
            dtype: self.dtype,
            expert_bytes_max,
        }
    }

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
    /// Bytes that must stay free on the chain's disk: below them appends and payload downloads
    /// are refused (`blyan_chain::Error::DiskFull`, HTTP 507) and reads go on. 0 turns the check
    /// off; at most [`blyan_chain::FREE_BYTES_MIN_MAX`].
    pub free_bytes_min: u64,
    /// How many seconds ahead of this node's clock a block may be stamped; a block stamped later
    /// is refused (`blyan_chain::Error::TimestampInFuture`, HTTP 422). At most
    /// [`blyan_chain::TIMESTAMP_SKEW_SECONDS_MAX`].
    pub timestamp_skew_seconds_max: u64,
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
    /// The validator's hidden QA sets.
    pub qa: PolQaConfig,
}

/// Least and most bytes of text one hidden-QA set holds.
pub const QA_SET_BYTES_RANGE: std::ops::RangeInclusive<u64> = 4096..=(256 << 10);

/// A validator's hidden QA sets (`docs/pol.md`): text kept off chain, a set per epoch committed
/// on chain D, evaluated with beside the public pool, and revealed once the epoch closed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolQaConfig {
    /// The validator's hidden documents (text files or directories); empty: no hidden set.
    pub documents: Vec<PathBuf>,
    /// Length of an epoch, milliseconds of block time (the same on every node of a network).
    pub epoch_ms: u64,
    /// Bytes of text per epoch's set.
    pub set_bytes: u64,
}

/// Most milliseconds a vote's commit or reveal window lasts (30 days).
pub const DATASET_WINDOW_MS_MAX: u64 = 30 * 24 * 3600 * 1000;

/// Most samples the L1 worker scores in one batch.
pub const DATASET_L1_BATCH_MAX: u32 = 256;

/// The dataset gates after L0 (`docs/datasets.md`): the L1 teacher band, L2 commit-reveal votes
/// weighted by locked stake, L3 validator reviews. Every node of a network must use the same
/// values, since each derives every sample's state from chain D with them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasetsConfig {
    /// Whether the node scores samples (L1) and settles vote stakes in the background.
    pub worker: bool,
    /// How often the worker looks at chain D, in milliseconds.
    pub interval_ms: u64,
    /// Samples scored per batch.
    pub l1_batch: u32,
    /// The L1 band's lower edge, bits per byte (below: likely memorized or generated).
    pub l1_min_bits_per_byte: f64,
    /// The L1 band's upper edge, bits per byte (above: gibberish).
    pub l1_max_bits_per_byte: f64,
    /// Languages (ISO 639-1) the band judges: the ones the served model was trained on.
    /// Samples in other languages pass L1 with their score recorded.
    pub l1_languages: Vec<String>,
    /// How long votes are committed after a sample passed L1, in milliseconds.
    pub commit_window_ms: u64,
    /// How long votes are revealed after the commit window, in milliseconds.
    pub reveal_window_ms: u64,
    /// Share of the revealed stake that must accept (0.6667: two thirds).
    pub accept_share: f64,
    /// Least revealed stake, whole BLY, for a tally to accept.
    pub quorum_stake: u64,
    /// Least stake, whole BLY, one vote locks.
    pub vote_stake_min: u64,
    /// Validator approvals that make an accepted sample usable (0: accepted is usable at once).
    pub reviews_required: u32,
}

/// The evaluation every validator of a network runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolEvalConfig {
    /// The public evaluation pool; empty: the shipped model's pool.
    pub corpus: Vec<PathBuf>,
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
    /// Reverse proxies (CIDR networks) whose forwarding header names the client. A request
    /// from any other peer is the peer's own, and its forwarding headers are ignored (anyone
    /// can write them).
    pub trusted_proxies: Vec<IpCidr>,
    /// Which header the trusted proxies append the client to.
    pub forwarded_header: ForwardedHeader,
    /// Most chats generating at once (each holds a blocking thread); beyond it a chat is
    /// answered 503 with `Retry-After`.
    pub generations_concurrent_max: u32,
    /// Most tokens of one chat, prompt plus completion (vLLM's `--max-model-len`, llama.cpp's
    /// `--ctx-size`); the served model's `max_position_embeddings` lowers it. A longer prompt,
    /// or a paid `max_tokens` past what is left of it, is refused with 400; `GET /model` says it.
    pub context_tokens_max: u32,
    /// Block uploads (`POST /blocks`): per-author quota, concurrency, body idle timeout.
    pub uploads: UploadsConfig,
    /// The HTTP server's connection limits.
    pub server: HttpServerConfig,
}

/// The forwarding header a reverse proxy appends its peer to. Only one is believed: a proxy
/// passes the other through from the client untouched, forgeable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum ForwardedHeader {
    /// `X-Forwarded-For: client, proxy1, proxy2` (nginx, HAProxy, most load balancers).
    #[default]
    XForwardedFor,
    /// `Forwarded: for=client, for=proxy1` (RFC 7239).
    Forwarded,
}

/// Limits on block uploads (`POST /blocks`), which stream payloads of up to the chain's
/// `payload_bytes_max` into the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadsConfig {
    /// Payload bytes one author (a block's verified signer) may upload per hour. A block larger
    /// than this passes when the author uploaded nothing for an hour, and counts against the
    /// hours after it.
    pub bytes_per_hour_per_author: u64,
    /// Uploads streamed at once; more are refused with 503 and `Retry-After`.
    pub concurrent_max: u32,
}

/// Connection limits of the HTTP server.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpServerConfig {
    /// Seconds a connection has to send a request's headers (also the keep-alive idle time
    /// before the next request's headers).
    pub header_read_timeout_seconds: u64,
    /// Seconds a request body may send nothing before the request is cut (a slow-loris upload).
    pub body_idle_timeout_seconds: u64,
    /// Connections served at once; more wait in the listen backlog until one closes.
    pub connections_max: u32,
}

/// Most uploads `api.uploads.concurrent_max` may allow at once.
pub const UPLOADS_CONCURRENT_MAX: u32 = 1024;

/// Longest accepted `api.server.header_read_timeout_seconds` and
/// `api.server.body_idle_timeout_seconds`, in seconds.
pub const HTTP_TIMEOUT_SECONDS_MAX: u64 = 3600;

/// Most connections `api.server.connections_max` may allow at once.
pub const HTTP_CONNECTIONS_MAX: u32 = 1 << 20;

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
    /// Requests per minute from one client (an IPv4 address or an IPv6 /64) (also the burst size).
    pub per_ip_per_minute: u32,
    /// Requests per minute from one signed-in wallet (also the burst size).
    pub per_wallet_per_minute: u32,
}

/// The free tier: chat for callers that are not signed in, limited per client (an IPv4
/// address or an IPv6 /64) and by a node-wide hourly token budget.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FreeTierConfig {
    /// Whether anonymous callers may chat at all.
    pub enabled: bool,
    /// Chat requests per hour from one client (an IPv4 address or an IPv6 /64).
    pub requests_per_hour_per_ip: u32,
    /// Most completion tokens one free request may generate.
    pub completion_tokens_max: u32,
    /// Tokens (prompt and completion budget) the free tier may spend per hour across all
    /// callers, so that many addresses together cannot take the whole node.
    pub tokens_per_hour: u64,
    /// Seconds one free generation may run, from its start until its last delta is handed on
    /// (finish reason `time_limit`): a client that reads its stream slowly cannot hold a
    /// generation thread and a place in the pool for longer. (A paid generation stops before
    /// its payment hold expires instead, `ledger.settle_margin_ms`.)
    pub generation_seconds_max: u64,
    /// Most free chats generating at once, of `api.generations_concurrent_max`: the places
    /// above it are kept for paid chats, so anonymous floods never turn paying users away.
    pub generations_concurrent_max: u32,
}

/// Smallest accepted `api.body_bytes_max`: a sign-in message with its signature must fit.
pub const API_BODY_BYTES_MIN: u64 = 4096;

/// Largest accepted `api.body_bytes_max`: bodies are buffered in memory.
pub const API_BODY_BYTES_MAX: u64 = 16 << 20;

/// Longest accepted token or nonce lifetime, in seconds (30 days).
pub const AUTH_TTL_SECONDS_MAX: u64 = 30 * 24 * 3600;

/// Largest accepted `api.generations_concurrent_max`: each generation holds one of tokio's
/// blocking threads, of which there are 512 by default, shared with file and database work.
pub const API_GENERATIONS_CONCURRENT_MAX: u32 = 256;

/// Largest accepted `api.context_tokens_max` (128 Ki tokens): the key/value cache of a chat
/// grows with it.
pub const API_CONTEXT_TOKENS_MAX: u32 = 128 * 1024;

/// Most entries accepted in `api.trusted_proxies`.
pub const API_TRUSTED_PROXIES_COUNT_MAX: usize = 64;

/// Longest accepted `api.free_tier.generation_seconds_max`, in seconds: a free generation is
/// bounded well below an hour.
pub const FREE_TIER_GENERATION_SECONDS_MAX: u64 = 3600;

const _: () = assert!(
    API_GENERATIONS_CONCURRENT_MAX <= 512 / 2,
    "generations leave at least half of tokio's default blocking threads to other work"
);

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

    /// Reads `path` over the shipped defaults. A missing file is [`Error::ConfigRead`] (a path
    /// named on purpose must exist); a file that is malformed or invalid is an error naming the
    /// field.
    pub fn load(path: &Path) -> Result<Self> {
        Self::load_with_env(Some(path), std::iter::empty())
    }

    /// The node's configuration in layers: the shipped defaults, then the file at `path` (none:
    /// the defaults alone), then the `BLYAN_*` overrides among `env` (see
    /// [`ENV_OVERRIDE_PREFIX`]; pass `std::env::vars()`), validated once at the end. A missing
    /// file is [`Error::ConfigRead`]; an override naming no setting, or a value of the wrong
    /// type, is [`Error::ConfigInvalid`] naming the variable or the field.
    pub fn load_with_env(
        path: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Self> {
        let mut merged = defaults_value();
        let mut origin = PathBuf::from(DEFAULTS_ORIGIN);
        if let Some(path) = path {
            let text = std::fs::read_to_string(path).map_err(|source| Error::ConfigRead {
                path: path.to_owned(),
                source,
            })?;
            merge(&mut merged, document(&text, path)?);
            origin = path.to_owned();
        }
        let mut overridden = Vec::new();
        for (name, value) in env {
            if let Some(field) = env_override(&merged, &name, &value)? {
                overridden.push(name);
                merge(&mut merged, field);
            }
        }
        if !overridden.is_empty() {
            overridden.sort();
            origin = PathBuf::from(format!(
                "{} with {}",
                origin.display(),
                overridden.join(", ")
            ));
        }
        let config = Self::from_value(merged, &origin)?;
        config.validate(&origin)?;
        Ok(config)
    }

    /// Parses YAML text over the shipped defaults; `origin` names the text in errors.
    pub fn from_yaml_str(text: &str, origin: &Path) -> Result<Self> {
        let mut merged = defaults_value();
        merge(&mut merged, document(text, origin)?);
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
        self.faucet
            .validate()
            .map_err(|(field, reason)| invalid(field, reason))?;
        within(
            &invalid,
            "ledger.settle_margin_ms",
            self.ledger.settle_margin_ms,
            SETTLE_MARGIN_MS_MIN..=SETTLE_MARGIN_MS_MAX,
            " ms",
        )?;
        within(
            &invalid,
            "ledger.idempotency_retention_hours",
            self.ledger.idempotency_retention_hours,
            IDEMPOTENCY_RETENTION_HOURS_MIN..=IDEMPOTENCY_RETENTION_HOURS_MAX,
            " hours",
        )?;
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
        if self.chain.free_bytes_min > blyan_chain::FREE_BYTES_MIN_MAX {
            return Err(invalid(
                "chain.free_bytes_min",
                format!(
                    "{} is above the maximum of {} (1 PiB)",
                    self.chain.free_bytes_min,
                    blyan_chain::FREE_BYTES_MIN_MAX
                ),
            ));
        }
        if self.chain.timestamp_skew_seconds_max > blyan_chain::TIMESTAMP_SKEW_SECONDS_MAX {
            return Err(invalid(
                "chain.timestamp_skew_seconds_max",
                format!(
                    "{} is above the maximum of {} (one day)",
                    self.chain.timestamp_skew_seconds_max,
                    blyan_chain::TIMESTAMP_SKEW_SECONDS_MAX
                ),
            ));
        }
        self.validate_pol(&invalid)?;
        self.validate_datasets(&invalid)?;
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
        within(
            invalid,
            "p2p.sync_interval_ms",
            p2p.sync_interval_ms,
            100..=3_600_000,
            " ms",
        )?;
        within(
            invalid,
            "p2p.stage_idle_hours",
            p2p.stage_idle_hours,
            1..=24 * 365,
            " hours",
        )
    }

    fn validate_datasets(&self, invalid: &dyn Fn(&str, String) -> Error) -> Result<()> {
        let datasets = &self.datasets;
        within(
            invalid,
            "datasets.interval_ms",
            datasets.interval_ms,
            10..=3_600_000,
            " ms",
        )?;
        within(
            invalid,
            "datasets.l1_batch",
            u64::from(datasets.l1_batch),
            1..=u64::from(DATASET_L1_BATCH_MAX),
            "",
        )?;
        for (field, value) in [
            ("datasets.commit_window_ms", datasets.commit_window_ms),
            ("datasets.reveal_window_ms", datasets.reveal_window_ms),
        ] {
            within(invalid, field, value, 1..=DATASET_WINDOW_MS_MAX, " ms")?;
        }
        if !(datasets.l1_min_bits_per_byte >= 0.0
            && datasets.l1_min_bits_per_byte < datasets.l1_max_bits_per_byte
            && datasets.l1_max_bits_per_byte.is_finite())
        {
            return Err(invalid(
                "datasets.l1_max_bits_per_byte",
                format!(
                    "the band [{}, {}] bits/byte is empty or not finite",
                    datasets.l1_min_bits_per_byte, datasets.l1_max_bits_per_byte
                ),
            ));
        }
        if let Some(bad) = datasets
            .l1_languages
            .iter()
            .find(|code| code.len() != 2 || !code.bytes().all(|byte| byte.is_ascii_lowercase()))
        {
            return Err(invalid(
                "datasets.l1_languages",
                format!("{bad:?} is not a lower-case ISO 639-1 code such as \"en\""),
            ));
        }
        if !(datasets.accept_share > 0.0 && datasets.accept_share <= 1.0) {
            return Err(invalid(
                "datasets.accept_share",
                format!("{} is outside (0, 1]", datasets.accept_share),
            ));
        }
        within(
            invalid,
            "datasets.vote_stake_min",
            datasets.vote_stake_min,
            1..=u64::from(u32::MAX),
            " BLY",
        )?;
        within(
            invalid,
            "datasets.reviews_required",
            u64::from(datasets.reviews_required),
            0..=64,
            "",
        )?;
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
        let qa = &pol.qa;
        if !(1_000..=DATASET_WINDOW_MS_MAX).contains(&qa.epoch_ms) {
            return Err(invalid(
                "pol.qa.epoch_ms",
                format!("{} is outside 1000..={DATASET_WINDOW_MS_MAX}", qa.epoch_ms),
            ));
        }
        if !QA_SET_BYTES_RANGE.contains(&qa.set_bytes) {
            return Err(invalid(
                "pol.qa.set_bytes",
                format!(
                    "{} is outside {}..={}",
                    qa.set_bytes,
                    QA_SET_BYTES_RANGE.start(),
                    QA_SET_BYTES_RANGE.end()
                ),
            ));
        }
        Ok(())
    }

    fn validate_learning(&self, invalid: &dyn Fn(&str, String) -> Error) -> Result<()> {
        let learning = &self.learning;
        let within = |field: &str, value: u64, min: u64, max: u64| {
            within(invalid, &format!("learning.{field}"), value, min..=max, "")
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
        within(
            invalid,
            "api.generations_concurrent_max",
            u64::from(api.generations_concurrent_max),
            1..=u64::from(API_GENERATIONS_CONCURRENT_MAX),
            "",
        )?;
        // A prompt of at least one token and a completion of at least one.
        within(
            invalid,
            "api.context_tokens_max",
            u64::from(api.context_tokens_max),
            2..=u64::from(API_CONTEXT_TOKENS_MAX),
            "",
        )?;
        if api.trusted_proxies.len() > API_TRUSTED_PROXIES_COUNT_MAX {
            return Err(invalid(
                "api.trusted_proxies",
                format!("at most {API_TRUSTED_PROXIES_COUNT_MAX} networks"),
            ));
        }
        if api.uploads.bytes_per_hour_per_author == 0 {
            return Err(invalid(
                "api.uploads.bytes_per_hour_per_author",
                "must be at least 1".into(),
            ));
        }
        let counts = [
            (
                "api.uploads.concurrent_max",
                api.uploads.concurrent_max,
                UPLOADS_CONCURRENT_MAX,
            ),
            (
                "api.server.connections_max",
                api.server.connections_max,
                HTTP_CONNECTIONS_MAX,
            ),
        ];
        for (field, count, max) in counts {
            within(invalid, field, u64::from(count), 1..=u64::from(max), "")?;
        }
        for (field, seconds) in [
            (
                "api.server.body_idle_timeout_seconds",
                api.server.body_idle_timeout_seconds,
            ),
            (
                "api.server.header_read_timeout_seconds",
                api.server.header_read_timeout_seconds,
            ),
        ] {
            within(
                invalid,
                field,
                seconds,
                1..=HTTP_TIMEOUT_SECONDS_MAX,
                " seconds",
            )?;
        }
        within(
            invalid,
            "api.free_tier.generations_concurrent_max",
            u64::from(api.free_tier.generations_concurrent_max),
            1..=u64::from(api.generations_concurrent_max),
            " (api.generations_concurrent_max)",
        )?;
        within(
            invalid,
            "api.free_tier.generation_seconds_max",
            api.free_tier.generation_seconds_max,
            1..=FREE_TIER_GENERATION_SECONDS_MAX,
            " seconds",
        )?;
        if api.free_tier.enabled
            && (api.free_tier.requests_per_hour_per_ip == 0
                || api.free_tier.completion_tokens_max == 0
                || api.free_tier.tokens_per_hour == 0)
        {
            let field = if api.free_tier.requests_per_hour_per_ip == 0 {
                "api.free_tier.requests_per_hour_per_ip"
            } else if api.free_tier.completion_tokens_max == 0 {
                "api.free_tier.completion_tokens_max"
            } else {
                "api.free_tier.tokens_per_hour"
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

/// `value` inside `range`, or the refusal naming `field` (`unit` follows the bounds: ` ms`).
fn within(
    invalid: &dyn Fn(&str, String) -> Error,
    field: &str,
    value: u64,
    range: std::ops::RangeInclusive<u64>,
    unit: &str,
) -> Result<()> {
    if range.contains(&value) {
        return Ok(());
    }
    Err(invalid(
        field,
        format!(
            "{value} is outside {}..={}{unit}",
            range.start(),
            range.end()
        ),
    ))
}

/// A config document: a mapping of settings (or nothing).
fn document(text: &str, origin: &Path) -> Result<Value> {
    let overlay = parse_yaml(text, origin)?;
    if !matches!(overlay, Value::Null | Value::Mapping(_)) {
        return Err(Error::ConfigInvalid {
            path: origin.to_owned(),
            field: ".".to_owned(),
            reason: "the document must be a mapping of settings".to_owned(),
        });
    }
    Ok(overlay)
}

/// Environment variables that set one config field: `BLYAN_` then the field's dotted path in
/// upper case with `__` between levels, e.g. `BLYAN_LEDGER__POSTGRES_URL` for
/// `ledger.postgres_url` or `BLYAN_DATA_DIR` for `data_dir` (so secrets need not live in the
/// YAML file). A value is taken verbatim for a text setting and read as YAML otherwise
/// (`true`, `8080`, `[a, b]`). Variables whose first level is no setting and that have no `__`
/// (`BLYAN_VENV`) belong to other tools and are ignored; one with `__` must name a setting.
pub const ENV_OVERRIDE_PREFIX: &str = "BLYAN_";

/// The overlay `name=value` makes, if `name` is a config override.
fn env_override(defaults: &Value, name: &str, value: &str) -> Result<Option<Value>> {
    let Some(key) = name.strip_prefix(ENV_OVERRIDE_PREFIX) else {
        return Ok(None);
    };
    let path: Vec<String> = key.split("__").map(str::to_ascii_lowercase).collect();
    let origin = || PathBuf::from(format!("environment variable {name}"));
    let mut slot = Some(defaults);
    for segment in &path {
        slot = slot.and_then(|value| value.get(segment.as_str()));
    }
    let Some(slot) = slot else {
        if path.len() == 1 && defaults.get(path[0].as_str()).is_none() {
            return Ok(None);
        }
        return Err(Error::ConfigInvalid {
            path: origin(),
            field: path.join("."),
            reason: "no such setting".to_owned(),
        });
    };
    let parsed = match slot {
        Value::String(_) | Value::Null => Value::String(value.to_owned()),
        _ => serde_yaml::from_str(value).map_err(|error| Error::ConfigInvalid {
            path: origin(),
            field: path.join("."),
            reason: error.to_string(),
        })?,
    };
    let overlay = path.iter().rev().fold(parsed, |inner, segment| {
        let mut mapping = serde_yaml::Mapping::new();
        mapping.insert(Value::String(segment.clone()), inner);
        Value::Mapping(mapping)
    });
    Ok(Some(overlay))
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

    /// `docs/config.md`, rendered from the shipped `config/node.yaml`: each setting's dotted
    /// path, environment variable, default and the comment above it.
    fn config_reference() -> String {
        let mut out = String::from(
            "# Node configuration reference\n\n\
             Generated from `config/node.yaml`, the shipped defaults, by\n\
             `cargo test -p blyan-node-core --lib config_reference` (run it with\n\
             `BLYAN_UPDATE_DOCS=1` to rewrite this file); edit the YAML file's comments, not this file.\n\n\
             A node's settings come in layers, each overriding the one before: the shipped defaults;\n\
             the file named by `--config` (it must exist), else `config/node.yaml` in the working\n\
             directory when present; `BLYAN_*` environment variables (`BLYAN_` and the setting's\n\
             path in upper case with `__` between levels, so secrets such as a PostgreSQL password\n\
             need not live in a file; a text setting takes the value verbatim, others read it as\n\
             YAML); then the command-line flags (`--data-dir`, `--listen`, `--seed-model`,\n\
             `--p2p-listen`, `--peer`). Everything is validated together; an unknown or malformed\n\
             setting stops the node naming it (and the variable, for an override).\n",
        );
        let mut comments: Vec<String> = Vec::new();
        let mut stack: Vec<(usize, String)> = Vec::new();
        let mut pending: Option<(String, Vec<String>, String)> = None;
        let mut list: Vec<String> = Vec::new();
        let flush = |out: &mut String,
                     pending: &mut Option<(String, Vec<String>, String)>,
                     list: &mut Vec<String>| {
            if let Some((path, comments, value)) = pending.take() {
                let value = if list.is_empty() {
                    value
                } else {
                    format!("[{}]", list.join(", "))
                };
                list.clear();
                let env = format!("BLYAN_{}", path.replace('.', "__").to_ascii_uppercase());
                out.push_str(&format!(
                    "| `{path}` | `{env}` | `{value}` | {} |\n",
                    comments.join(" ").replace('|', "\\|")
                ));
            }
        };
        for line in NODE_CONFIG_DEFAULT_YAML
            .lines()
            .skip_while(|line| line.starts_with('#'))
        {
            let trimmed = line.trim_start();
            let indent = line.len() - trimmed.len();
            if trimmed.is_empty() {
                comments.clear();
                continue;
            }
            if let Some(comment) = trimmed.strip_prefix('#') {
                comments.push(comment.trim().to_owned());
                continue;
            }
            if let Some(item) = trimmed.strip_prefix("- ") {
                list.push(item.trim().to_owned());
                continue;
            }
            flush(&mut out, &mut pending, &mut list);
            let (key, value) = trimmed.split_once(':').expect("a YAML key");
            while stack.last().is_some_and(|(level, _)| *level >= indent) {
                stack.pop();
            }
            let path: Vec<&str> = stack
                .iter()
                .map(|(_, key)| key.as_str())
                .chain([key])
                .collect();
            let path = path.join(".");
            let value = value.trim();
            if value.is_empty() {
                // A section (or a list on the lines that follow).
                let next_is_list = NODE_CONFIG_DEFAULT_YAML
                    .lines()
                    .skip_while(|other| *other != line)
                    .nth(1)
                    .is_some_and(|next| next.trim_start().starts_with("- "));
                if next_is_list {
                    pending = Some((path, std::mem::take(&mut comments), String::new()));
                    continue;
                }
                if indent == 0 {
                    out.push_str(&format!("\n## `{key}`\n\n"));
                    if !comments.is_empty() {
                        out.push_str(&comments.join(" "));
                        out.push_str("\n\n");
                    }
                    out.push_str("| Setting | Environment variable | Default | Meaning |\n");
                    out.push_str("|---|---|---|---|\n");
                } else if !comments.is_empty() {
                    out.push_str(&format!("| `{path}` | | | {} |\n", comments.join(" ")));
                }
                comments.clear();
                stack.push((indent, key.to_owned()));
                continue;
            }
            if indent == 0 {
                out.push_str(&format!("\n## `{key}`\n\n"));
                out.push_str("| Setting | Environment variable | Default | Meaning |\n");
                out.push_str("|---|---|---|---|\n");
            }
            pending = Some((path, std::mem::take(&mut comments), value.to_owned()));
        }
        flush(&mut out, &mut pending, &mut list);
        out
    }

    #[test]
    fn config_reference_is_current() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/config.md");
        let rendered = config_reference();
        if std::env::var_os("BLYAN_UPDATE_DOCS").is_some() {
            std::fs::write(&path, &rendered).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == rendered,
            "docs/config.md is stale: run `BLYAN_UPDATE_DOCS=1 cargo test -p blyan-node-core --lib config_reference`"
        );
    }

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
            .collect()
    }

    #[test]
    fn environment_overrides_beat_the_file_and_name_their_variable() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("node.yaml");
        std::fs::write(
            &file,
            "ledger:\n  backend: embedded\ncache:\n  expert_bytes_max: 2147483648\n",
        )
        .unwrap();
        let url = "postgres://blyan:p#ss: word@db.example:5432/blyan?sslmode=require";
        let config = NodeConfig::load_with_env(
            Some(&file),
            vars(&[
                ("BLYAN_LEDGER__POSTGRES_URL", url),
                ("BLYAN_LEDGER__BACKEND", "postgres"),
                ("BLYAN_DATA_DIR", "/srv/blyan"),
                ("BLYAN_P2P__ENABLED", "true"),
                ("BLYAN_P2P__BOOTSTRAP", "[/ip4/192.0.2.7/tcp/4801]"),
                ("BLYAN_VENV", "/opt/venv"),
                ("PATH", "/usr/bin"),
            ]),
        )
        .unwrap();
        assert_eq!(config.ledger.postgres_url.as_deref(), Some(url));
        assert_eq!(config.data_dir, PathBuf::from("/srv/blyan"));
        assert!(config.p2p.enabled);
        assert_eq!(
            config.p2p.bootstrap,
            vec!["/ip4/192.0.2.7/tcp/4801".to_owned()]
        );
        assert_eq!(
            config.cache.expert_bytes_max, 2_147_483_648,
            "the file still applies"
        );

        let refused = |pairs: &[(&str, &str)]| match NodeConfig::load_with_env(None, vars(pairs))
            .unwrap_err()
        {
            Error::ConfigInvalid { path, field, .. } => (path, field),
            other => panic!("expected ConfigInvalid, got {other:?}"),
        };
        let (path, field) = refused(&[("BLYAN_LEDGER__POSTGRES_ULR", "x")]);
        assert_eq!(
            path,
            PathBuf::from("environment variable BLYAN_LEDGER__POSTGRES_ULR")
        );
        assert_eq!(field, "ledger.postgres_ulr");
        let (path, field) = refused(&[("BLYAN_P2P__SYNC_INTERVAL_MS", "soon")]);
        assert!(
            path.display()
                .to_string()
                .contains("BLYAN_P2P__SYNC_INTERVAL_MS"),
            "{path:?}"
        );
        assert_eq!(field, "p2p.sync_interval_ms");
        let (path, field) = refused(&[("BLYAN_P2P__SYNC_INTERVAL_MS", "5")]);
        assert!(
            path.display()
                .to_string()
                .contains("BLYAN_P2P__SYNC_INTERVAL_MS"),
            "{path:?}"
        );
        assert_eq!(field, "p2p.sync_interval_ms");
    }

    #[test]
    fn a_named_config_file_that_does_not_exist_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.yaml");
        match NodeConfig::load(&missing).unwrap_err() {
            Error::ConfigRead { path, source } => {
                assert_eq!(path, missing);
                assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
            }
            other => panic!("expected ConfigRead, got {other:?}"),
        }
        assert_eq!(
            NodeConfig::load_with_env(None, Vec::new()).unwrap(),
            NodeConfig::defaults()
        );
    }

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
        assert_eq!(config.ledger.idempotency_retention_hours, 720);
        assert_eq!(
            config.ledger.idempotency_retention(),
            std::time::Duration::from_secs(720 * 3600)
        );
        assert_eq!(config.pol.mode, PolMode::Pol);
        assert_eq!(config.pol.threshold_bps(), 100);
    }

    #[test]
    fn model_device_and_dtype_default_to_f32_on_the_cpu_and_bad_values_name_the_field() {
        use blyan_moe::{ComputeDevice, ComputeDtype};
        let defaults = NodeConfig::defaults();
        assert_eq!(defaults.model.device, ComputeDevice::Cpu);
        assert_eq!(defaults.model.dtype, ComputeDtype::F32);
        let options = defaults.model.options(defaults.cache.expert_bytes_max);
        assert_eq!(
            (options.device, options.dtype, options.expert_bytes_max),
            (ComputeDevice::Cpu, ComputeDtype::F32, 1 << 30)
        );
        for (device, dtype, expected) in [
            (
                "cuda:1",
                "bf16",
                (ComputeDevice::Cuda(1), ComputeDtype::BF16),
            ),
            ("cpu", "f16", (ComputeDevice::Cpu, ComputeDtype::F16)),
        ] {
            let config = NodeConfig::from_yaml_str(
                &format!("model:\n  device: \"{device}\"\n  dtype: {dtype}\n"),
                Path::new("test.yaml"),
            )
            .unwrap();
            assert_eq!((config.model.device, config.model.dtype), expected);
        }
        // From the environment too (a secret-free setting, but one an image sets per machine).
        let config = NodeConfig::load_with_env(
            None,
            [
                ("BLYAN_MODEL__DTYPE".to_owned(), "bf16".to_owned()),
                ("BLYAN_MODEL__DEVICE".to_owned(), "cuda:0".to_owned()),
            ],
        )
        .unwrap();
        assert_eq!(
            (config.model.device, config.model.dtype),
            (ComputeDevice::Cuda(0), ComputeDtype::BF16)
        );
        check_rejected("model:\n  device: gpu\n", "model.device");
        check_rejected("model:\n  device: \"cuda:256\"\n", "model.device");
        check_rejected("model:\n  dtype: int8\n", "model.dtype");
        check_rejected("model:\n  dtype: float32\n", "model.dtype");
    }

    #[test]
    fn faucet_is_off_by_default_and_its_bounds_are_checked() {
        let defaults = NodeConfig::defaults();
        assert!(!defaults.faucet.enabled);
        assert_eq!(defaults.faucet.amount_per_claim, "10".parse().unwrap());
        let on = NodeConfig::from_yaml_str(
            "faucet:\n  enabled: true\n  amount_per_claim: \"0.5\"\n  daily_total_max: \"0.5\"\n",
            Path::new("test.yaml"),
        )
        .unwrap();
        assert!(on.faucet.enabled);
        assert_eq!(on.faucet.amount_per_claim, "0.5".parse().unwrap());
        check_rejected(
            "faucet:\n  amount_per_claim: \"0\"\n",
            "faucet.amount_per_claim",
        );
        check_rejected(
            "faucet:\n  claims_per_wallet_per_day: 0\n",
            "faucet.claims_per_wallet_per_day",
        );
        check_rejected(
            "faucet:\n  amount_per_claim: \"10\"\n  daily_total_max: \"9.999999\"\n",
            "faucet.daily_total_max",
        );
    }

    #[test]
    fn dataset_gate_settings_are_bounded() {
        let defaults = NodeConfig::defaults();
        assert_eq!(defaults.datasets.reviews_required, 1);
        assert_eq!(defaults.datasets.vote_stake_min, 10);
        check_rejected(
            "datasets:\n  commit_window_ms: 0\n",
            "datasets.commit_window_ms",
        );
        check_rejected(
            &format!(
                "datasets:\n  reveal_window_ms: {}\n",
                DATASET_WINDOW_MS_MAX + 1
            ),
            "datasets.reveal_window_ms",
        );
        check_rejected("datasets:\n  l1_batch: 0\n", "datasets.l1_batch");
        check_rejected(
            "datasets:\n  l1_min_bits_per_byte: 9.0\n",
            "datasets.l1_max_bits_per_byte",
        );
        check_rejected(
            "datasets:\n  l1_languages: [en, English]\n",
            "datasets.l1_languages",
        );
        check_rejected("datasets:\n  accept_share: 0\n", "datasets.accept_share");
        check_rejected(
            "datasets:\n  vote_stake_min: 0\n",
            "datasets.vote_stake_min",
        );
        check_rejected(
            "datasets:\n  reviews_required: 65\n",
            "datasets.reviews_required",
        );
        let ok = NodeConfig::from_yaml_str(
            "datasets:\n  accept_share: 1.0\n  reviews_required: 0\n",
            Path::new("test.yaml"),
        )
        .unwrap();
        assert_eq!(
            crate::datasets::gate_params(&ok.datasets).accept_bps,
            10_000
        );
    }

    #[test]
    fn the_file_in_config_is_the_compiled_default() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/node.yaml");
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
    fn upload_and_server_limits_are_checked_at_their_bounds() {
        let accepted = |text: &str| NodeConfig::from_yaml_str(text, Path::new("t")).unwrap();
        let config = accepted(&format!(
            "api:\n  uploads:\n    concurrent_max: {UPLOADS_CONCURRENT_MAX}\n  server:\n    \
             body_idle_timeout_seconds: {HTTP_TIMEOUT_SECONDS_MAX}\n    \
             connections_max: 1\n    header_read_timeout_seconds: 1\n"
        ));
        assert_eq!(config.api.uploads.concurrent_max, UPLOADS_CONCURRENT_MAX);
        assert_eq!(config.api.server.connections_max, 1);
        check_rejected(
            "api:\n  uploads:\n    bytes_per_hour_per_author: 0\n",
            "api.uploads.bytes_per_hour_per_author",
        );
        check_rejected(
            "api:\n  uploads:\n    concurrent_max: 0\n",
            "api.uploads.concurrent_max",
        );
        check_rejected(
            &format!(
                "api:\n  uploads:\n    concurrent_max: {}\n",
                UPLOADS_CONCURRENT_MAX + 1
            ),
            "api.uploads.concurrent_max",
        );
        check_rejected(
            &format!(
                "api:\n  server:\n    body_idle_timeout_seconds: {}\n",
                HTTP_TIMEOUT_SECONDS_MAX + 1
            ),
            "api.server.body_idle_timeout_seconds",
        );
        check_rejected(
            "api:\n  server:\n    header_read_timeout_seconds: 0\n",
            "api.server.header_read_timeout_seconds",
        );
        check_rejected(
            &format!(
                "api:\n  server:\n    connections_max: {}\n",
                HTTP_CONNECTIONS_MAX + 1
            ),
            "api.server.connections_max",
        );
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
            "ledger:\n  idempotency_retention_hours: 0\n",
            "ledger.idempotency_retention_hours",
        );
        check_rejected(
            "ledger:\n  idempotency_retention_hours: 87601\n",
            "ledger.idempotency_retention_hours",
        );
        for hours in [
            IDEMPOTENCY_RETENTION_HOURS_MIN,
            IDEMPOTENCY_RETENTION_HOURS_MAX,
        ] {
            let config = NodeConfig::from_yaml_str(
                &format!("ledger:\n  idempotency_retention_hours: {hours}\n"),
                Path::new("t"),
            )
            .unwrap();
            assert_eq!(config.ledger.idempotency_retention_hours, hours);
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
        check_rejected(
            "api:\n  free_tier:\n    tokens_per_hour: 0\n",
            "api.free_tier.tokens_per_hour",
        );
        check_rejected(
            "api:\n  generations_concurrent_max: 0\n",
            "api.generations_concurrent_max",
        );
        check_rejected(
            "api:\n  free_tier:\n    generation_seconds_max: 0\n",
            "api.free_tier.generation_seconds_max",
        );
        check_rejected(
            &format!(
                "api:\n  free_tier:\n    generation_seconds_max: {}\n",
                FREE_TIER_GENERATION_SECONDS_MAX + 1
            ),
            "api.free_tier.generation_seconds_max",
        );
        let at_bound = NodeConfig::from_yaml_str(
            &format!(
                "api:\n  free_tier:\n    generation_seconds_max: {FREE_TIER_GENERATION_SECONDS_MAX}\n"
            ),
            Path::new("t"),
        )
        .unwrap();
        assert_eq!(
            at_bound.api.free_tier.generation_seconds_max,
            FREE_TIER_GENERATION_SECONDS_MAX
        );
        check_rejected(
            "api:\n  free_tier:\n    generations_concurrent_max: 0\n",
            "api.free_tier.generations_concurrent_max",
        );
        check_rejected(
            "api:\n  generations_concurrent_max: 3\n  free_tier:\n    generations_concurrent_max: 4\n",
            "api.free_tier.generations_concurrent_max",
        );
        let whole_pool = NodeConfig::from_yaml_str(
            "api:\n  generations_concurrent_max: 4\n  free_tier:\n    generations_concurrent_max: 4\n",
            Path::new("t"),
        )
        .unwrap();
        assert_eq!(whole_pool.api.free_tier.generations_concurrent_max, 4);
        check_rejected(
            "api:\n  generations_concurrent_max: 257\n",
            "api.generations_concurrent_max",
        );
        check_rejected("api:\n  context_tokens_max: 1\n", "api.context_tokens_max");
        check_rejected(
            "api:\n  context_tokens_max: 131073\n",
            "api.context_tokens_max",
        );
        check_rejected(
            "api:\n  trusted_proxies: ['10.0.0.0/33']\n",
            "api.trusted_proxies[0]",
        );
        check_rejected(
            "api:\n  trusted_proxies: ['10.0.0.1/8']\n",
            "api.trusted_proxies[0]",
        );
        check_rejected(
            "api:\n  forwarded_header: x-real-ip\n",
            "api.forwarded_header",
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
        for bytes in [0, blyan_chain::FREE_BYTES_MIN_MAX] {
            let config = NodeConfig::from_yaml_str(
                &format!("chain:\n  free_bytes_min: {bytes}\n"),
                Path::new("t"),
            )
            .unwrap();
            assert_eq!(config.chain.free_bytes_min, bytes);
            assert_eq!(crate::store_config(&config).free_bytes_min, bytes);
        }
        check_rejected(
            &format!(
                "chain:\n  free_bytes_min: {}\n",
                blyan_chain::FREE_BYTES_MIN_MAX + 1
            ),
            "chain.free_bytes_min",
        );
        for seconds in [0, blyan_chain::TIMESTAMP_SKEW_SECONDS_MAX] {
            let config = NodeConfig::from_yaml_str(
                &format!("chain:\n  timestamp_skew_seconds_max: {seconds}\n"),
                Path::new("t"),
            )
            .unwrap();
            assert_eq!(
                crate::store_config(&config).timestamp_skew_seconds_max,
                seconds
            );
        }
        check_rejected(
            &format!(
                "chain:\n  timestamp_skew_seconds_max: {}\n",
                blyan_chain::TIMESTAMP_SKEW_SECONDS_MAX + 1
            ),
            "chain.timestamp_skew_seconds_max",
        );
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
    fn trusted_proxies_parse_as_networks() {
        let defaults = NodeConfig::defaults();
        assert!(
            defaults.api.trusted_proxies.is_empty(),
            "no proxy is trusted by default"
        );
        assert_eq!(
            defaults.api.forwarded_header,
            ForwardedHeader::XForwardedFor
        );
        let config = NodeConfig::from_yaml_str(
            "api:\n  trusted_proxies: ['127.0.0.1', '10.0.0.0/8', 'fd00::/8']\n  forwarded_header: forwarded\n  generations_concurrent_max: 256\n",
            Path::new("t"),
        )
        .unwrap();
        let shown: Vec<String> = config
            .api
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(shown, ["127.0.0.1/32", "10.0.0.0/8", "fd00::/8"]);
        assert_eq!(config.api.forwarded_header, ForwardedHeader::Forwarded);
        assert!(config.api.trusted_proxies[1].contains("10.9.8.7".parse().unwrap()));
        let too_many = format!(
            "api:\n  trusted_proxies: [{}]\n",
            vec!["'10.0.0.0/8'"; API_TRUSTED_PROXIES_COUNT_MAX + 1].join(", ")
        );
        check_rejected(&too_many, "api.trusted_proxies");
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
        check_rejected("pol:\n  qa:\n    epoch_ms: 10\n", "pol.qa.epoch_ms");
        check_rejected("pol:\n  qa:\n    set_bytes: 1000000\n", "pol.qa.set_bytes");
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
