//! When ingest acknowledges a batch, and the limits of every request (`[limits]`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// The deepest `limits.max_properties_depth` may be: serde_json, and most readers of the
/// stored JSON, stop at 128 levels; the properties walk never recurses deeper.
pub const MAX_PROPERTIES_DEPTH: usize = 128;

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

impl Limits {
    pub(super) fn validate(&self) -> Result<()> {
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
        if l.max_properties_depth > MAX_PROPERTIES_DEPTH {
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
