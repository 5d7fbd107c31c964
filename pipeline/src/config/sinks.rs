//! `[webhooks]` (delivery), `[exports]` (scheduled and batched exports) and `[flows]`
//! (the flow worker; its webhook steps use `[webhooks]`' client and retry schedule).

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

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

/// The flow worker (`tidemark serve` and `tidemark sinks run`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FlowsConfig {
    /// Whether this process runs the flow worker (of all processes on a store, the lease
    /// holder runs flows).
    pub enabled: bool,
    /// How often the worker looks for starts, due runs and new `events` versions.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// A flow whose runs failed this many times in a row (no run got past a webhook step
    /// in between) is paused, with the last error as its reason.
    pub pause_after_failures: u32,
    /// Runs advanced per pass at most (the rest wait for the next pass).
    pub max_runs_per_pass: usize,
    /// Webhook steps in flight at once.
    pub max_in_flight: usize,
}

impl Default for FlowsConfig {
    fn default() -> Self {
        FlowsConfig {
            enabled: true,
            poll_interval: Duration::from_millis(200),
            pause_after_failures: 20,
            max_runs_per_pass: 2000,
            max_in_flight: 64,
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

/// Checks the `webhooks` and `exports` sections.
pub(super) fn validate(w: &WebhooksConfig, x: &ExportsConfig) -> Result<()> {
    let fail = |field: &str, msg: &str| Err(Error::Config(format!("{field}: {msg}")));
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
