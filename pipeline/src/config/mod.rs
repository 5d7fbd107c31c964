//! Configuration: serde structs with explicit defaults, loaded in layers
//! (built-in defaults -> `tidemark.toml` -> `TIDEMARK_*` environment variables -> CLI flags)
//! and checked by [`Config::validate`] before any component is built.
//!
//! The ground floor: every section of `tidemark.toml` is defined here, one file a section,
//! and this module uses nothing else of the crate but its error type.
//! - [`ingest`]: acknowledgement and the size limits of every request (`[limits]`).
//! - [`jobs`]: the `[jobs]` and `[segments]` sections.
//! - [`sinks`]: the `[webhooks]`, `[exports]` and `[flows]` sections.
//! - [`storage`]: the `[storage]` (with `[storage.faults]`) and `[retention]` sections.
//! - [`query`]: the `[query]` section.

pub mod ingest;
pub mod jobs;
pub mod query;
pub mod sinks;
pub mod storage;

pub use ingest::{AckMode, Limits};
pub use jobs::{JobsConfig, SegmentsConfig};
pub use query::QueryConfig;
pub use sinks::{ExportsConfig, FlowsConfig, WebhooksConfig};
pub use storage::{FaultConfig, RetentionConfig, StorageConfig};

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The whole configuration of a tidemark node.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Storage root: a local directory or an object-store URL (`s3://bucket/prefix`, `memory://`).
    pub data: String,
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Directory of the write-ahead log. Default: `<data>/_tidemark/wal` when `data` is a
    /// local directory, otherwise `./tidemark-wal`.
    pub wal_dir: Option<PathBuf>,
    /// When ingest acknowledges a batch.
    pub ack: AckMode,
    /// How often the flusher commits the WAL to the `events` table.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
    /// Commit early once this many events are waiting.
    pub flush_rows: usize,
    /// Ingest answers 503 while more than this many bytes wait to be committed.
    pub max_pending_bytes: u64,
    /// A batch retried with the same `event_id`s within this window stores nothing new.
    #[serde(with = "humantime_serde")]
    pub dedup_window: Duration,
    /// Upper bound on remembered event ids (oldest are forgotten first beyond it).
    pub dedup_max_entries: usize,
    /// How often small files of recent partitions of `events`, and of the `deliveries` log,
    /// are compacted (0s = never).
    #[serde(with = "humantime_serde")]
    pub optimize_interval: Duration,
    /// Target file size of compaction, in bytes.
    pub optimize_target_size: u64,
    /// With `ack = "commit"`, how long a request waits for its commit before a 503.
    #[serde(with = "humantime_serde")]
    pub commit_timeout: Duration,
    /// Several processes on one store: the webhook and export workers run on the one that
    /// holds their lease, and segment runs take turns. A holder renews every third of this;
    /// when it dies, another process takes over within this time.
    #[serde(with = "humantime_serde")]
    pub lease_ttl: Duration,
    /// Extra object-store options (e.g. `aws_endpoint`, `aws_region`); `AWS_*` variables
    /// of the environment are read as well. `[storage.faults]` injects faults (off).
    pub storage: StorageConfig,
    pub limits: Limits,
    pub jobs: JobsConfig,
    pub retention: RetentionConfig,
    pub segments: SegmentsConfig,
    pub webhooks: WebhooksConfig,
    pub exports: ExportsConfig,
    pub flows: FlowsConfig,
    pub query: QueryConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data: "./tidemark-data".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8420)),
            wal_dir: None,
            ack: AckMode::Wal,
            flush_interval: Duration::from_secs(1),
            flush_rows: 500_000,
            max_pending_bytes: 1 << 30,
            dedup_window: Duration::from_secs(3600),
            dedup_max_entries: 20_000_000,
            optimize_interval: Duration::from_secs(15 * 60),
            optimize_target_size: 128 * 1024 * 1024,
            commit_timeout: Duration::from_secs(30),
            lease_ttl: Duration::from_secs(15),
            storage: StorageConfig::default(),
            limits: Limits::default(),
            jobs: JobsConfig::default(),
            retention: RetentionConfig::default(),
            segments: SegmentsConfig::default(),
            webhooks: WebhooksConfig::default(),
            exports: ExportsConfig::default(),
            flows: FlowsConfig::default(),
            query: QueryConfig::default(),
        }
    }
}

/// `TIDEMARK_*` variables that are not settings of this file.
const NON_CONFIG_ENV: &[&str] = &["CONFIG", "ENV", "LOG", "MASTER_KEY", "CRASH_AFTER"];

/// Values given on the command line; `None` means "not given".
#[derive(Debug, Default, Clone, Serialize)]
pub struct Overrides {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub listen: Option<SocketAddr>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub wal_dir: Option<PathBuf>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ack: Option<AckMode>,
}

impl Config {
    /// Loads the layers. `file` is the config file to read; when it is `None`,
    /// `./tidemark.toml` is read if it exists.
    pub fn load(file: Option<&Path>, overrides: &Overrides) -> Result<Config> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        match file {
            Some(path) => {
                if !path.exists() {
                    return Err(Error::Config(format!(
                        "config file {} does not exist",
                        path.display()
                    )));
                }
                fig = fig.merge(Toml::file_exact(path));
            }
            None => {
                if Path::new("tidemark.toml").exists() {
                    fig = fig.merge(Toml::file_exact("tidemark.toml"));
                }
            }
        }
        let env = Env::prefixed("TIDEMARK_")
            .filter(|key| {
                !NON_CONFIG_ENV
                    .iter()
                    .any(|k| key.as_str().eq_ignore_ascii_case(k))
            })
            .split("__");
        let config: Config = fig
            .merge(env)
            .merge(Serialized::defaults(overrides))
            .extract()
            .map_err(|e| Error::Config(flatten_figment_error(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Parses a TOML document on its own (no other layers), then validates it.
    pub fn from_toml(text: &str) -> Result<Config> {
        let config: Config = Figment::from(Serialized::defaults(Config::default()))
            .merge(Toml::string(text))
            .extract()
            .map_err(|e| Error::Config(flatten_figment_error(e)))?;
        config.validate()?;
        Ok(config)
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<()> {
        let fail = |field: &str, msg: &str| Err(Error::Config(format!("{field}: {msg}")));
        if self.data.trim().is_empty() {
            return fail("data", "must not be empty");
        }
        if self.flush_interval.is_zero() {
            return fail("flush_interval", "must be greater than 0");
        }
        if self.flush_rows == 0 {
            return fail("flush_rows", "must be greater than 0");
        }
        if self.commit_timeout.is_zero() {
            return fail("commit_timeout", "must be greater than 0");
        }
        if self.jobs.poll_interval.is_zero() {
            return fail("jobs.poll_interval", "must be greater than 0");
        }
        if self.jobs.publish_interval.is_zero() {
            return fail("jobs.publish_interval", "must be greater than 0");
        }
        if self.retention.events_days == 0 {
            return fail("retention.events_days", "must be at least 1");
        }
        if let Some((env, _)) = self.retention.environments.iter().find(|(_, d)| **d == 0) {
            return fail(
                &format!("retention.environments.{env}"),
                "must be at least 1 day",
            );
        }
        sinks::validate(&self.webhooks, &self.exports)?;
        self.query.validate()?;
        self.limits.validate()
    }

    /// An example configuration file with every setting and its default.
    pub fn example() -> String {
        EXAMPLE.to_string()
    }
}

fn flatten_figment_error(e: figment::Error) -> String {
    e.into_iter()
        .map(|e| {
            let path = e.path.join(".");
            let origin = e
                .metadata
                .as_ref()
                .map(|m| format!(" (from {})", m.name))
                .unwrap_or_default();
            if path.is_empty() {
                format!("{}{origin}", e.kind)
            } else {
                format!("{path}: {}{origin}", e.kind)
            }
        })
        .collect::<Vec<_>>()
        .join("; ")
}

const EXAMPLE: &str = include_str!("example.toml");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_parses_to_the_defaults() {
        let c = Config::from_toml(&Config::example()).expect("example parses");
        let d = Config::default();
        assert_eq!(c.data, d.data);
        assert_eq!(c.listen, d.listen);
        assert_eq!(c.flush_interval, Duration::from_secs(1));
        assert_eq!(c.dedup_window, Duration::from_secs(3600));
        assert_eq!(c.limits.max_body_bytes, d.limits.max_body_bytes);
        assert_eq!(c.ack, AckMode::Wal);
        assert_eq!(c.jobs.clock_skew_tolerance, d.jobs.clock_skew_tolerance);
        assert_eq!(c.jobs.debounce, Duration::from_millis(500));
    }

    #[test]
    fn unknown_keys_are_rejected_with_their_name() {
        let err = Config::from_toml("flush_intervall = \"2s\"").unwrap_err();
        assert!(err.to_string().contains("flush_intervall"), "{err}");
        let err = Config::from_toml("[limits]\nmax_bodybytes = 3").unwrap_err();
        assert!(err.to_string().contains("max_bodybytes"), "{err}");
    }

    #[test]
    fn bad_values_name_the_field() {
        let err = Config::from_toml("flush_interval = \"soon\"").unwrap_err();
        assert!(err.to_string().contains("flush_interval"), "{err}");
        let err = Config::from_toml("flush_rows = 0").unwrap_err();
        assert_eq!(
            err.to_string(),
            "config: flush_rows: must be greater than 0"
        );
        let err = Config::from_toml("ack = \"maybe\"").unwrap_err();
        assert!(err.to_string().contains("ack"), "{err}");
    }
}
