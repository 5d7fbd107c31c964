//! `[storage]` (object-store options, `[storage.faults]`) and `[retention]`.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[storage]`: object-store options by name, and fault injection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StorageConfig {
    /// Fault injection for tests and drills (`rate`, `delay_rate`, `max_delay`; off).
    #[serde(default, skip_serializing_if = "is_off")]
    pub faults: FaultConfig,
    /// Options by `object_store` name (`aws_endpoint`, `aws_region`, …).
    #[serde(flatten, deserialize_with = "scalars_as_strings")]
    pub options: BTreeMap<String, String>,
}

fn is_off(f: &FaultConfig) -> bool {
    !f.is_on()
}

/// Option values as strings, whatever TOML or an environment variable made of them
/// (`aws_allow_http = true`, `TIDEMARK_STORAGE__AWS_ALLOW_HTTP=true`).
fn scalars_as_strings<'de, D>(d: D) -> std::result::Result<BTreeMap<String, String>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Scalar {
        S(String),
        B(bool),
        I(i64),
        F(f64),
    }
    let raw = BTreeMap::<String, Scalar>::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| {
            let v = match v {
                Scalar::S(s) => s,
                Scalar::B(b) => b.to_string(),
                Scalar::I(i) => i.to_string(),
                Scalar::F(f) => f.to_string(),
            };
            (k, v)
        })
        .collect())
}

/// `[storage.faults]`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct FaultConfig {
    /// Share of operations that fail (0 = off, 0.1 = one in ten).
    pub rate: f64,
    /// Share of operations delayed (by up to `max_delay`).
    pub delay_rate: f64,
    #[serde(with = "humantime_serde")]
    pub max_delay: Duration,
    /// For crash tests: the process aborts at its first write into this table's Delta log
    /// (`event_stats`, `_tidemark/pending/profiles`): its data files are written, its commit
    /// is not. Empty = off.
    pub crash_on_commit_to: String,
}

impl FaultConfig {
    pub fn is_on(&self) -> bool {
        self.rate > 0.0
            || (self.delay_rate > 0.0 && !self.max_delay.is_zero())
            || !self.crash_on_commit_to.is_empty()
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
