//! The crate's one error type.

use blyan_chain::BlockHash;

/// Result with [`PolError`].
pub type Result<T, E = PolError> = std::result::Result<T, E>;

/// Why a Proof-of-Learning record, evaluation or payment plan failed. Variant fields are the
/// data the message shows.
#[derive(Debug, thiserror::Error)]
#[allow(missing_docs)]
#[non_exhaustive]
pub enum PolError {
    /// A `PolProof` block's payload is not a Proof-of-Learning document.
    #[error("block {block} is not a Proof-of-Learning document: {reason}")]
    Malformed { block: BlockHash, reason: String },
    /// The gate refused a block; `code` is stable, `reason` says why.
    #[error("{code}: {reason}")]
    Refused { code: &'static str, reason: String },
    /// The evaluation pool is unusable (empty, too small for a window).
    #[error("evaluation pool: {reason}")]
    Pool { reason: String },
    /// A model (base or candidate) could not be read or run (boxed: the model's error is
    /// large).
    #[error(transparent)]
    Model(Box<blyan_moe::MoeError>),
    /// The chain store failed.
    #[error(transparent)]
    Chain(#[from] blyan_chain::Error),
    /// A block a claim names could not be fetched.
    #[error("block {block} could not be fetched: {reason}")]
    Fetch { block: BlockHash, reason: String },
}

impl From<blyan_moe::MoeError> for PolError {
    fn from(error: blyan_moe::MoeError) -> Self {
        PolError::Model(Box::new(error))
    }
}

impl PolError {
    /// A refusal with its stable code.
    pub(crate) fn refused(code: &'static str, reason: impl Into<String>) -> Self {
        PolError::Refused {
            code,
            reason: reason.into(),
        }
    }

    /// The stable code of a refusal, `malformed` for a malformed document, `None` otherwise.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            PolError::Refused { code, .. } => Some(code),
            PolError::Malformed { .. } => Some("malformed"),
            _ => None,
        }
    }
}
