//! `[query]`: the bounds every data-team query runs under, whichever door it came
//! through, and the errors a query can end with.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use datafusion::error::DataFusionError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::policy::Refused;
use crate::config::QueryConfig;
use crate::{Error, Result};

/// How a query failed, for each door to map to its protocol (an HTTP status, a
/// Postgres SQLSTATE, a gRPC code).
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    /// A statement class queries may not run.
    #[error("{0}")]
    Refused(Refused),
    /// The SQL does not parse or plan (unknown table or column, type error, …).
    #[error("{0}")]
    Invalid(String),
    #[error("query cancelled after {0:?} (query.timeout)")]
    Timeout(Duration),
    #[error("query exceeded its memory limit of {limit} bytes (query.max_memory_bytes): {detail}")]
    Memory { limit: usize, detail: String },
    #[error(
        "environment '{environment}' already runs {limit} queries (query.max_concurrent); retry when one has finished"
    )]
    TooMany { environment: String, limit: usize },
    /// The answer is larger than the format allows (JSON caps).
    #[error("{0}")]
    TooLarge(String),
    /// Storage or a bug: not the query's fault.
    #[error("{0}")]
    Internal(Error),
}

impl QueryError {
    /// Classifies a DataFusion error raised while planning or running a query.
    pub fn from_datafusion(e: DataFusionError, config: &QueryConfig) -> QueryError {
        match e.find_root() {
            DataFusionError::ResourcesExhausted(detail) => QueryError::Memory {
                limit: config.max_memory_bytes,
                detail: detail.clone(),
            },
            DataFusionError::ObjectStore(_) | DataFusionError::IoError(_) => {
                QueryError::Internal(Error::DataFusion(e))
            }
            DataFusionError::Internal(_) => QueryError::Internal(Error::DataFusion(e)),
            _ => QueryError::Invalid(strip_prefixes(&e.to_string())),
        }
    }

    /// Short stable code for bodies and logs.
    pub fn code(&self) -> &'static str {
        match self {
            QueryError::Refused(_) => "refused",
            QueryError::Invalid(_) => "invalid_query",
            QueryError::Timeout(_) => "timeout",
            QueryError::Memory { .. } => "memory_limit",
            QueryError::TooMany { .. } => "too_many_queries",
            QueryError::TooLarge(_) => "too_large",
            QueryError::Internal(_) => "internal",
        }
    }
}

impl From<Error> for QueryError {
    fn from(e: Error) -> Self {
        match e {
            Error::Invalid(m) | Error::NotFound(m) => QueryError::Invalid(m),
            e => QueryError::Internal(e),
        }
    }
}

/// DataFusion wraps messages in `Error during planning: …`, `SQL error: …`; the root
/// message is what a user acts on, so keep one prefix at most.
fn strip_prefixes(message: &str) -> String {
    message
        .trim_start_matches("External error: ")
        .trim_start_matches("Arrow error: ")
        .to_string()
}

/// Running queries per environment.
#[derive(Debug, Default)]
pub struct Gate {
    limit: usize,
    running: Mutex<HashMap<String, Arc<Semaphore>>>,
}

impl Gate {
    pub fn new(limit: usize) -> Gate {
        Gate {
            limit,
            running: Mutex::new(HashMap::new()),
        }
    }

    /// A slot for one query of `environment`, or [`QueryError::TooMany`].
    pub fn enter(&self, environment: &str) -> Result<OwnedSemaphorePermit, QueryError> {
        let semaphore = {
            let mut running = self.running.lock().expect("gate lock");
            running
                .entry(environment.to_string())
                .or_insert_with(|| Arc::new(Semaphore::new(self.limit)))
                .clone()
        };
        semaphore
            .try_acquire_owned()
            .map_err(|_| QueryError::TooMany {
                environment: environment.to_string(),
                limit: self.limit,
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_gate_counts_per_environment() {
        let gate = Gate::new(2);
        let a1 = gate.enter("a").unwrap();
        let _a2 = gate.enter("a").unwrap();
        let err = gate.enter("a").unwrap_err();
        assert!(
            err.to_string()
                .contains("environment 'a' already runs 2 queries"),
            "{err}"
        );
        // Another environment has its own slots.
        let _b = gate.enter("b").unwrap();
        drop(a1);
        assert!(gate.enter("a").is_ok());
    }

    #[test]
    fn datafusion_errors_are_classified() {
        let config = QueryConfig::default();
        let memory = DataFusionError::ResourcesExhausted("Failed to allocate".into());
        assert_eq!(
            QueryError::from_datafusion(memory.context("sort"), &config).code(),
            "memory_limit"
        );
        let plan = DataFusionError::Plan("table 'x' not found".into());
        let e = QueryError::from_datafusion(plan, &config);
        assert_eq!(e.code(), "invalid_query");
        assert!(e.to_string().contains("table 'x' not found"), "{e}");
    }

    #[test]
    fn bad_settings_are_named() {
        let mut c = QueryConfig {
            max_concurrent: 0,
            ..QueryConfig::default()
        };
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("query.max_concurrent"), "{err}");
        c.max_concurrent = 1;
        c.tls_cert = Some("cert.pem".into());
        let err = c.validate().unwrap_err().to_string();
        assert!(err.contains("query.tls_cert"), "{err}");
    }
}
