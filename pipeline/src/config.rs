//! Configuration: serde structs with explicit defaults, loaded in layers
//! (built-in defaults -> `tidemark.toml` -> `TIDEMARK_*` environment variables -> CLI flags)
//! and checked by [`Config::validate`] before any component is built.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// When an ingest request is acknowledged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AckMode {
    /// After the batch is fsynced to the local write-ahead log (group commit).
    Wal,
    /// After the batch is committed to the Delta table (no local disk needed).
    Commit,
}

/// Size limits applied to every ingest request.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Maximum request body size in bytes, both as sent and after gzip decoding.
    pub max_body_bytes: usize,
    /// Maximum number of events in one batch.
    pub max_events_per_batch: usize,
    /// Maximum size of one event's `properties` object, in bytes of JSON text.
    pub max_properties_bytes: usize,
    /// Maximum nesting depth of `properties` (the object itself is depth 1).
    pub max_properties_depth: usize,
    /// Maximum length in bytes of `event_id`, `event_name`, `user_id` and `platform`.
    pub max_string_len: usize,
    /// A request body (of any endpoint) that has not fully arrived this long after the
    /// headers is answered 408 and its connection closed.
    #[serde(with = "humantime_serde")]
    pub body_timeout: Duration,
    /// One message of the Segment / RudderStack / PostHog endpoints, in bytes of JSON
    /// (Segment documents 32 KB).
    pub max_sdk_message_bytes: usize,
    /// One request of those endpoints, after gzip decoding (Segment documents 500 KB).
    pub max_sdk_batch_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_body_bytes: 16 * 1024 * 1024,
            max_events_per_batch: 10_000,
            max_properties_bytes: 32 * 1024,
            max_properties_depth: 16,
            max_string_len: 512,
            body_timeout: Duration::from_secs(30),
            max_sdk_message_bytes: 32 * 1024,
            max_sdk_batch_bytes: 500 * 1024,
        }
    }
}

/// The SQL jobs that derive `profiles` and `event_stats`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// Run the jobs inside `tidemark serve`.
    pub enabled: bool,
    /// Wait this long after a commit before running, so a burst of commits is one run.
    #[serde(with = "humantime_serde")]
    pub debounce: Duration,
    /// Also run this often, for commits made by other nodes.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// An `occurred_at` later than `received_at` plus this is clamped to `received_at`.
    #[serde(with = "humantime_serde")]
    pub clock_skew_tolerance: Duration,
    /// Other Delta readers see the derived tables at most this much after tidemark does:
    /// how often the pending partial rows are folded into the published tables.
    #[serde(with = "humantime_serde")]
    pub publish_interval: Duration,
    /// On a cluster engine (`--engine ballista://`), one stage of a job that has not
    /// finished within this fails the run (nothing is committed): a cluster that lost its
    /// executors or stalls never hangs a job.
    #[serde(with = "humantime_serde")]
    pub engine_timeout: Duration,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            enabled: true,
            debounce: Duration::from_millis(500),
            poll_interval: Duration::from_secs(5),
            clock_skew_tolerance: Duration::from_secs(300),
            publish_interval: Duration::from_secs(30),
            engine_timeout: Duration::from_secs(3600),
        }
    }
}

/// The segment job.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SegmentsConfig {
    /// How often `serve` evaluates every segment (for relative time conditions, the passing
    /// of time); the job loop also evaluates them after each pass that changed profiles.
    /// 0s = never (neither).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
}

impl Default for SegmentsConfig {
    fn default() -> Self {
        SegmentsConfig {
            interval: Duration::from_secs(60),
        }
    }
}

/// Webhook delivery (`tidemark serve` and `tidemark sinks run`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    /// Whether `tidemark serve` runs the delivery worker (turn off when `tidemark sinks
    /// run` does it on another machine; of all processes on a store, the lease holder
    /// delivers).
    pub enabled: bool,
    /// Delays before each attempt: the first try, then the retries.
    #[serde(with = "durations")]
    pub retry_schedule: Vec<Duration>,
    /// Random spread of each retry delay (0.2 = ±20%).
    pub jitter: f64,
    /// A subscription failing continuously for this long is paused.
    #[serde(with = "humantime_serde")]
    pub pause_after: Duration,
    /// CIDR ranges that may be delivered to although they are private, loopback, etc.
    pub allow_networks: Vec<String>,
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// The whole request, response body included.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How much of a response body is read (the rest is dropped).
    pub max_response_bytes: usize,
    /// How often the worker looks for new `events` versions and subscription changes.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// How often the delivery log is committed to the `deliveries` table.
    #[serde(with = "humantime_serde")]
    pub log_interval: Duration,
    /// How long a rotated-out secret still signs.
    #[serde(with = "humantime_serde")]
    pub rotation_grace: Duration,
    /// Attempts in `deliveries` older than this are deleted with the other retention
    /// (`retention.interval`, `tidemark retention`); `0s` keeps them all.
    #[serde(with = "humantime_serde")]
    pub deliveries_retention: Duration,
    /// The generated master-key file, when `TIDEMARK_MASTER_KEY` is not set
    /// (default: `<data>/_tidemark/master.key` on a local data directory).
    pub master_key_file: Option<PathBuf>,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            enabled: true,
            retry_schedule: tidemark_sinks::retry::RetryPolicy::default().schedule,
            jitter: 0.2,
            pause_after: Duration::from_secs(24 * 3600),
            allow_networks: Vec::new(),
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(15),
            max_response_bytes: 64 * 1024,
            poll_interval: Duration::from_millis(200),
            log_interval: Duration::from_millis(500),
            rotation_grace: Duration::from_secs(24 * 3600),
            deliveries_retention: Duration::from_secs(30 * 86400),
            master_key_file: None,
        }
    }
}

/// Bulk export: scheduled push exports and the batched pull API.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExportsConfig {
    /// Whether `tidemark serve` runs the export worker (of all processes on a store, the
    /// lease holder exports).
    pub enabled: bool,
    /// How often the worker looks for closed windows.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// A window (and a pull-API hour) closes this long after its end plus `flush_interval`,
    /// so events acknowledged before the end are committed when it is read.
    #[serde(with = "humantime_serde")]
    pub grace: Duration,
    /// An export failing continuously for this long is paused.
    #[serde(with = "humantime_serde")]
    pub pause_after: Duration,
    /// The longest wait between retries of a failing export (backoff doubles up to it).
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
    /// Attempts of each HTTPS POST within one run (then the window is retried later).
    #[serde(with = "durations")]
    pub http_retry_schedule: Vec<Duration>,
    /// Rows per file; a bigger window is split into `-1`, `-2`, ... files.
    pub max_rows_per_file: u64,
    /// zstd level of Parquet files.
    pub zstd_level: i32,
    /// Windows one export runs per pass (catching up after a pause runs them in turns).
    pub max_windows_per_pass: usize,
    /// How long a pull-API download URL works.
    #[serde(with = "humantime_serde")]
    pub download_ttl: Duration,
    /// The base URL download links start with (default: the request's `Host`).
    pub public_url: Option<String>,
    /// Local directories `file://` destinations may write under (symlinks resolved).
    /// Empty (the default): `file://` destinations are refused, since an environment's
    /// admin is not the server's operator.
    pub file_roots: Vec<PathBuf>,
}

impl Default for ExportsConfig {
    fn default() -> Self {
        ExportsConfig {
            enabled: true,
            poll_interval: Duration::from_secs(5),
            grace: Duration::from_secs(30),
            pause_after: Duration::from_secs(24 * 3600),
            max_backoff: Duration::from_secs(3600),
            http_retry_schedule: vec![
                Duration::ZERO,
                Duration::from_secs(1),
                Duration::from_secs(5),
            ],
            max_rows_per_file: 1_000_000,
            zstd_level: 3,
            max_windows_per_pass: 24,
            download_ttl: Duration::from_secs(15 * 60),
            public_url: None,
            file_roots: Vec::new(),
        }
    }
}

/// Retention of events and physical deletion of removed files.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Events received more than this many days ago are deleted.
    pub events_days: u32,
    /// Per-environment overrides of `events_days`.
    pub environments: BTreeMap<String, u32>,
    /// How often `tidemark serve` applies retention and VACUUM (0s = never).
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// VACUUM deletes files that left a table (DELETE, compaction) longer ago than this;
    /// until then time travel can read them, and erased rows stay in them.
    #[serde(with = "humantime_serde")]
    pub vacuum_after: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            events_days: 365,
            environments: BTreeMap::new(),
            interval: Duration::from_secs(3600),
            vacuum_after: Duration::from_secs(7 * 86400),
        }
    }
}

impl RetentionConfig {
    /// The event retention of `environment`, in days.
    pub fn days(&self, environment: &str) -> u32 {
        self.environments
            .get(environment)
            .copied()
            .unwrap_or(self.events_days)
    }
}

pub use crate::query::QueryConfig;
pub use crate::storage::StorageConfig;

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
        self.validate_sinks()?;
        self.query.validate()?;
        self.limits.validate()
    }

    /// The `webhooks` and `exports` sections.
    fn validate_sinks(&self) -> Result<()> {
        let fail = |field: &str, msg: &str| Err(Error::Config(format!("{field}: {msg}")));
        let w = &self.webhooks;
        if w.retry_schedule.is_empty() || w.retry_schedule.len() > 20 {
            return fail("webhooks.retry_schedule", "must list 1 to 20 delays");
        }
        if !(0.0..=1.0).contains(&w.jitter) {
            return fail("webhooks.jitter", "must be between 0 and 1");
        }
        if let Err(e) = tidemark_sinks::address::AddressPolicy::parse_allow(
            &w.allow_networks,
            "webhooks.allow_networks",
        ) {
            return Err(Error::Config(e.to_string()));
        }
        for (name, d) in [
            ("webhooks.connect_timeout", w.connect_timeout),
            ("webhooks.timeout", w.timeout),
            ("webhooks.poll_interval", w.poll_interval),
            ("webhooks.log_interval", w.log_interval),
        ] {
            if d.is_zero() {
                return fail(name, "must be greater than 0");
            }
        }
        let x = &self.exports;
        for (name, d) in [
            ("exports.poll_interval", x.poll_interval),
            ("exports.pause_after", x.pause_after),
            ("exports.max_backoff", x.max_backoff),
            ("exports.download_ttl", x.download_ttl),
        ] {
            if d.is_zero() {
                return fail(name, "must be greater than 0");
            }
        }
        if x.http_retry_schedule.is_empty() || x.http_retry_schedule.len() > 10 {
            return fail("exports.http_retry_schedule", "must list 1 to 10 delays");
        }
        if x.max_rows_per_file == 0 {
            return fail("exports.max_rows_per_file", "must be greater than 0");
        }
        if !(1..=22).contains(&x.zstd_level) {
            return fail("exports.zstd_level", "must be from 1 to 22");
        }
        if x.max_windows_per_pass == 0 {
            return fail("exports.max_windows_per_pass", "must be greater than 0");
        }
        if let Some(u) = &x.public_url
            && !url::Url::parse(u).is_ok_and(|u| matches!(u.scheme(), "http" | "https"))
        {
            return fail("exports.public_url", "must be an http:// or https:// URL");
        }
        Ok(())
    }
}

impl Limits {
    fn validate(&self) -> Result<()> {
        let fail = |field: &str, msg: &str| Err(Error::Config(format!("{field}: {msg}")));
        let l = self;
        if l.body_timeout.is_zero() {
            return fail("limits.body_timeout", "must be more than 0s");
        }
        if l.max_body_bytes < 1024 {
            return fail("limits.max_body_bytes", "must be at least 1024");
        }
        if l.max_events_per_batch == 0 {
            return fail("limits.max_events_per_batch", "must be greater than 0");
        }
        if l.max_properties_depth == 0 {
            return fail("limits.max_properties_depth", "must be greater than 0");
        }
        if l.max_properties_depth > crate::ingest::json_check::MAX_WALK_DEPTH {
            return fail(
                "limits.max_properties_depth",
                "must be at most 128 (serde_json, and most readers of the stored JSON, stop there)",
            );
        }
        if l.max_string_len < 16 {
            return fail("limits.max_string_len", "must be at least 16");
        }
        if l.max_properties_bytes < 2 {
            return fail("limits.max_properties_bytes", "must be at least 2");
        }
        Ok(())
    }
}

impl Config {
    /// An example configuration file with every setting and its default.
    pub fn example() -> String {
        EXAMPLE.to_string()
    }
}

/// A list of humantime durations (`["0s", "5s", "5m"]`).
mod durations {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(v: &[Duration], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(v.iter().map(|d| humantime::format_duration(*d).to_string()))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
        Vec::<String>::deserialize(d)?
            .iter()
            .map(|t| {
                humantime::parse_duration(t)
                    .map_err(|e| D::Error::custom(format!("{t:?} is not a duration: {e}")))
            })
            .collect()
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

const EXAMPLE: &str = include_str!("config_example.toml");

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
