//! Process-wide `tracing` set-up shared by the binaries.

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;
use crate::{Error, Result};

/// Installs the global subscriber: events go to stderr (stdout stays free for command output),
/// filtered by `RUST_LOG` when set, else by `filter`.
pub fn init_logging(format: LogFormat, filter: &str) -> Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.is_empty() => EnvFilter::try_new(&directives),
        _ => EnvFilter::try_new(filter),
    }
    .map_err(|error| Error::Logging(error.to_string()))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let installed = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
    installed.map_err(|error| Error::Logging(error.to_string()))
}
