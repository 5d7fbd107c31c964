//! `[jobs]` (the SQL jobs) and `[segments]` (the segment job).

use std::time::Duration;

use serde::{Deserialize, Serialize};

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
