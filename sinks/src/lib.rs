//! Delivery of tidemark's data to other systems, independent of how tidemark stores it
//! (this crate never depends on `tidemark` itself):
//!
//! - [`sign`]: Standard Webhooks v1 secrets and signatures;
//! - [`crypto`]: encryption of secrets at rest under a master key;
//! - [`address`]: the connect-time address guard (refused ranges, `allow_networks`);
//! - [`client`]: the HTTP client that refuses private destinations at connect time;
//! - [`retry`]: the retry schedule and how a response is judged;
//! - [`delivery`]: the decision after an attempt (delivered, retry at, failed, gone,
//!   pause), pure;
//! - [`filter`]: event-name globs;
//! - [`clock`]: wall time, injectable so tests can drive a paused clock;
//! - [`export`]: bulk-export file writers (Parquet zstd, NDJSON gzip, CSV) and
//!   destinations (object-store prefixes, signed HTTPS POSTs);
//! - [`webhook`]: the webhook sink: one subscription's delivery task (concurrency, rate
//!   limit, retries, auto-pause).
//!
//! Every sink follows one shape: its configuration with validation, request building,
//! the driving loop, and the shared compliance test (`tests/it/compliance.rs`): acked
//! only after delivery, retried exactly as [`retry`] judges the answer and [`delivery`]
//! decides, signatures that verify with an independent library.

pub mod address;
pub mod client;
pub mod clock;
pub mod crypto;
pub mod delivery;
pub mod export;
pub mod filter;
pub mod retry;
pub mod sign;
pub mod webhook;

/// Errors of this crate, each naming what was wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A value given by the user (secret, URL, header, key) is not acceptable.
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
    /// A destination resolves to an address that is not allowed.
    #[error("destination refused: {0}")]
    Blocked(String),
    /// Decrypting a stored secret failed (wrong master key or damaged data).
    #[error("cannot decrypt: {0}")]
    Crypto(String),
    /// Encoding or writing an export file failed.
    #[error("export: {0}")]
    Export(String),
}

impl Error {
    pub fn invalid(field: impl Into<String>, message: impl Into<String>) -> Error {
        Error::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
