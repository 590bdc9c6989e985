//! The node library's errors: [`Error`] for starting the node and keeping its state, and
//! [`ChatError`] for what a chat session refuses or fails with.
//!
//! They are two types because their callers handle them apart: an [`Error`] at start ends the
//! process (the binary picks the exit code), a [`ChatError`] answers one request and the node
//! serves on. Neither knows HTTP: `blyan-api` maps both to status codes and stable error codes.

use std::path::PathBuf;

/// A boxed error of a service from another crate (the HTTP server's, for instance).
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why the node could not start, or its state could not be read or changed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The config file exists but could not be read.
    #[error("cannot read config file {path}: {source}")]
    ConfigRead {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A config field is malformed or out of bounds; `field` is its dotted path.
    #[error("invalid config {path}: field `{field}`: {reason}")]
    ConfigInvalid {
        /// The file.
        path: PathBuf,
        /// Dotted path of the field (`.` for the document itself).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The logging subscriber could not be installed.
    #[error("cannot set up logging: {0}")]
    Logging(String),
    /// A file or directory of the node's data directory could not be read or written.
    #[error("data file {path}: {source}")]
    DataFile {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The chain store could not be opened.
    #[error("cannot open the chain store: {0}")]
    ChainOpen(#[source] blyan_chain::Error),
    /// The ledger could not be opened or connected to.
    #[error("cannot open the ledger: {0}")]
    LedgerOpen(#[source] blyan_ledger::LedgerError),
    /// The model on the chain could not be published or loaded.
    #[error("cannot load the model from the chain: {0}")]
    ModelLoad(#[source] blyan_moe::MoeError),
    /// The node was built without a chain store.
    #[error("no chain store is open on this node")]
    ChainUnavailable,
    /// A dataset request (a sample, a vote, a review) is refused; nothing was appended.
    #[error("dataset request refused: {0}")]
    DatasetRefused(crate::datasets::Refusal),
    /// The chain store failed (an I/O or database error, not the caller's fault).
    #[error("the chain store failed: {0}")]
    ChainFailed(#[source] blyan_chain::Error),
    /// A submitted block breaks a validation rule or conflicts with a stored block; nothing was
    /// stored. The chain's error names the rule and the hashes involved.
    #[error("block refused: {0}")]
    BlockRefused(#[source] blyan_chain::Error),
    /// An upload's body ended before the payload its header announced; nothing was stored.
    #[error("upload of block {block} ended after {received} of {expected} payload bytes")]
    UploadTruncated {
        /// The block uploaded.
        block: blyan_chain::BlockHash,
        /// Payload bytes received.
        received: u64,
        /// Payload bytes the header announced.
        expected: u64,
    },
    /// An upload's body carried more than the payload its header announced; nothing was stored.
    #[error("upload of block {block} carries more than its {expected} payload bytes")]
    UploadOverrun {
        /// The block uploaded.
        block: blyan_chain::BlockHash,
        /// Payload bytes the header announced.
        expected: u64,
    },
    /// The block's payload is being staged already (the same block uploaded twice at once, or
    /// downloaded from a peer); try again once that finished.
    #[error("the payload of block {block} is being uploaded or downloaded already")]
    UploadInProgress {
        /// The block uploaded.
        block: blyan_chain::BlockHash,
    },
    /// The learner could not start or continue (`what` it was doing, and the model's error).
    #[error("learning: {what}: {source}")]
    Learning {
        /// What the learner was doing.
        what: &'static str,
        /// Why it failed.
        source: blyan_moe::MoeError,
    },
    /// A Proof-of-Learning claim whose author cannot lock the candidate bond; nothing was
    /// stored.
    #[error("claim {claim} refused: its author cannot lock the bond: {source}")]
    BondUnpaid {
        /// The claim's block.
        claim: blyan_chain::BlockHash,
        /// The ledger's refusal (insufficient funds, for instance; boxed: it is large).
        source: Box<blyan_ledger::LedgerError>,
    },
    /// A ledger operation failed (not a refusal: the store itself).
    #[error("ledger: {what}: {source}")]
    Ledger {
        /// What the node was doing.
        what: &'static str,
        /// The ledger's error (boxed: it is large).
        source: Box<blyan_ledger::LedgerError>,
    },
    /// Proof-of-Learning could not start or run (`what` it was doing, and why).
    #[error("proof of learning: {what}: {source}")]
    Pol {
        /// What it was doing.
        what: &'static str,
        /// Why it failed (boxed: it is large).
        source: Box<blyan_pol::PolError>,
    },
    /// The node's key file could not be read or written.
    #[error("node key {path}: {source}")]
    NodeKey {
        /// The key file.
        path: std::path::PathBuf,
        /// The chain crate's key error (boxed: it is large).
        source: Box<blyan_chain::Error>,
    },
    /// The network could not start (an address in use, a bad key).
    #[error("network: {0}")]
    Network(#[source] Box<blyan_p2p::NetworkError>),
    /// A blocking task (store access, model load) panicked or was cancelled.
    #[error("{what} failed: {reason}")]
    Task {
        /// What the task was doing.
        what: &'static str,
        /// The runtime's report.
        reason: String,
    },
    /// A service of the node stopped with an error (or panicked).
    #[error("service {service} failed: {source}")]
    Service {
        /// The service's name.
        service: &'static str,
        /// Its error.
        source: BoxError,
    },
}

/// Result of the node library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a chat was refused, or failed after it started. Nothing is charged for any of them: a
/// hold taken before the failure is released.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ChatError {
    /// A request that parses but asks for something impossible.
    #[error("invalid request: {field}: {reason}")]
    InvalidRequest {
        /// The offending field (`messages[2].content`, `max_tokens`, …).
        field: String,
        /// What is wrong.
        reason: String,
    },
    /// The prompt leaves no room for a completion in the context (`api.context_tokens_max`,
    /// or the model's context if smaller): at most `max` tokens, one less than the context.
    #[error(
        "prompt is {tokens} tokens, the most accepted is {max} (context_tokens_max {} minus one completion token)",
        max + 1
    )]
    PromptTooLong {
        /// Tokens in the prompt.
        tokens: u64,
        /// The limit.
        max: u64,
    },
    /// A paid request's prompt plus its `max_tokens` exceed the context
    /// (`api.context_tokens_max`, or the model's context if smaller).
    #[error(
        "prompt of {prompt_tokens} tokens plus max_tokens {completion_tokens} exceeds context_tokens_max {context_tokens_max}"
    )]
    ContextTooLong {
        /// Tokens in the prompt.
        prompt_tokens: u64,
        /// The completion tokens asked for.
        completion_tokens: u64,
        /// The limit on their sum.
        context_tokens_max: u64,
    },
    /// The request names a model this node does not serve.
    #[error("unknown model `{model}`; this node serves `{served}`")]
    UnknownModel {
        /// The name asked for.
        model: String,
        /// The name served.
        served: &'static str,
    },
    /// The node serves no model (its chain holds none, or it was started without one).
    #[error("no model is loaded on this node")]
    ModelUnavailable,
    /// The free tier is turned off on this node: sign in to chat.
    #[error("this node has no free tier; sign in with a wallet")]
    FreeTierDisabled,
    /// The wallet cannot pay for the request's quoted tokens; nothing was charged.
    #[error("insufficient balance: {available} BLY available, {required} BLY required")]
    InsufficientBalance {
        /// Spendable balance, BLY.
        available: String,
        /// What the request would hold, BLY.
        required: String,
    },
    /// The ledger refused the payment for another reason; nothing was charged.
    #[error("payment refused: {reason}")]
    PaymentRefused {
        /// The ledger's reason.
        reason: String,
    },
    /// The node runs without a ledger (only the free tier is served), or the ledger failed.
    #[error("ledger unavailable: {reason}")]
    LedgerUnavailable {
        /// Why.
        reason: String,
    },
    /// The model failed while generating.
    #[error("generation failed: {reason}")]
    Generation {
        /// The model's error.
        reason: String,
    },
}
