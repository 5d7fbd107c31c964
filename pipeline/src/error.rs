//! The crate's error type. Errors are classified where they are caught: user errors carry
//! a message that names the field; storage errors are retryable; the rest are bugs.

use std::path::PathBuf;

/// Everything that can go wrong inside the tidemark library.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Invalid configuration: names the setting and the problem.
    #[error("config: {0}")]
    Config(String),

    /// A request or command argument a user can fix.
    #[error("{0}")]
    Invalid(String),

    /// Something named does not exist.
    #[error("{0}")]
    NotFound(String),

    /// Something named already exists.
    #[error("{0}")]
    Conflict(String),

    /// The WAL is corrupt beyond its torn tail, or cannot be written.
    #[error("wal {path}: {message}")]
    Wal { path: PathBuf, message: String },

    #[error("io: {0}")]
    Io(#[from] std::io::Error),

    #[error("object store: {0}")]
    ObjectStore(#[from] object_store::Error),

    #[error("delta: {0}")]
    Delta(#[from] deltalake::DeltaTableError),

    #[error("sql: {0}")]
    DataFusion(#[from] datafusion::error::DataFusionError),

    #[error("arrow: {0}")]
    Arrow(#[from] arrow::error::ArrowError),

    #[error("json: {0}")]
    Json(#[from] serde_json::Error),

    /// The service is shutting down or a background task is gone.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl Error {
    /// Whether retrying the same operation later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Io(_) | Error::ObjectStore(_) | Error::Delta(_) | Error::Unavailable(_)
        )
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
