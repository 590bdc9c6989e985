//! The one error type of this crate: a value that does not parse.

/// A text that is not a valid address, hash or expert name. `input` is cut to 80 characters so
/// a hostile value cannot flood a log line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// Not `0x` + 40 hex digits, or mixed case whose EIP-55 checksum is wrong.
    #[error("invalid address {input:?}: {reason}")]
    InvalidAddress {
        /// The text, cut to 80 characters.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Not 64 hex digits (with or without `0x`).
    #[error("invalid hash {input:?}: {reason}")]
    InvalidHash {
        /// The text, cut to 80 characters.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Not `layer{L}.expert{E}` with both indices within their limits.
    #[error("invalid expert name {input:?}: {reason}")]
    InvalidExpertName {
        /// The text, cut to 80 characters.
        input: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// Not one of the dtype names (`f32`, `f16`, `bf16`, `i8`).
    #[error("unknown dtype {input:?} (expected f32, f16, bf16 or i8)")]
    UnknownDtype {
        /// The text, cut to 80 characters.
        input: String,
    },
}

/// This crate's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The first 80 characters of `input`, for error messages.
pub(crate) fn clip(input: &str) -> String {
    input.chars().take(80).collect()
}
