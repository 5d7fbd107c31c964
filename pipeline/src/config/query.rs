//! `[query]`: the bounds every data-team query runs under, whichever door it came through.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// `[query]` in `tidemark.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QueryConfig {
    /// A query (planning, execution and sending its rows) that takes longer is cancelled.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Memory one query may hold (a DataFusion memory pool per query; sorts, joins and
    /// aggregations spill to disk before they fail).
    pub max_memory_bytes: usize,
    /// Queries of one environment running at once; one more is answered "too many".
    pub max_concurrent: usize,
    /// A JSON answer (rows and column types in one document) holds at most this many
    /// rows; CSV, NDJSON and Arrow answers stream without a cap.
    pub max_json_rows: usize,
    /// … and at most this many bytes.
    pub max_json_bytes: usize,
    /// Where `serve` accepts the Postgres wire protocol (off when unset).
    pub pg_listen: Option<SocketAddr>,
    /// Where `serve` accepts Arrow Flight SQL (off when unset).
    pub flight_listen: Option<SocketAddr>,
    /// PEM certificate chain and PKCS#8 key: the Postgres door then offers TLS.
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
}

impl Default for QueryConfig {
    fn default() -> Self {
        QueryConfig {
            timeout: Duration::from_secs(60),
            max_memory_bytes: 512 * 1024 * 1024,
            max_concurrent: 4,
            max_json_rows: 100_000,
            max_json_bytes: 64 * 1024 * 1024,
            pg_listen: None,
            flight_listen: None,
            tls_cert: None,
            tls_key: None,
        }
    }
}

impl QueryConfig {
    pub fn validate(&self) -> Result<()> {
        let fail = |field: &str, msg: &str| Err(Error::Config(format!("query.{field}: {msg}")));
        if self.timeout.is_zero() {
            return fail("timeout", "must be greater than 0");
        }
        if self.max_memory_bytes < 1024 * 1024 {
            return fail("max_memory_bytes", "must be at least 1048576 (1 MiB)");
        }
        if self.max_concurrent == 0 {
            return fail("max_concurrent", "must be at least 1");
        }
        if self.max_json_rows == 0 || self.max_json_bytes == 0 {
            return fail(
                "max_json_rows",
                "max_json_rows and max_json_bytes must be > 0",
            );
        }
        if self.tls_cert.is_some() != self.tls_key.is_some() {
            return fail("tls_cert", "tls_cert and tls_key are set together");
        }
        Ok(())
    }
}
