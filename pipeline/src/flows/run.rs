//! A run: one user going through one version of a flow. Its state is a document in the
//! store ([`super::store`]), written by the flow worker only; nothing of it is written to
//! the profile.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use sha2::Digest;

/// Log entries kept per run (the oldest go first).
pub const MAX_LOG: usize = 200;
/// Bytes of a webhook answer kept as context for later steps.
pub const MAX_RESPONSE_BYTES: usize = 16 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// A step is due (now or at `due_at`).
    Running,
    /// Waiting for an event (or its timeout at `due_at`).
    Waiting,
    /// The last step finished.
    Completed,
    /// An `exit` step, or the start's problem (a required variable the event lacked).
    Exited,
    /// A step failed with no error branch; `retry` starts it again.
    Failed,
    Cancelled,
    /// The entry rule refused the start.
    Capped,
}

impl Status {
    pub fn is_active(self) -> bool {
        matches!(self, Status::Running | Status::Waiting)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Running => "running",
            Status::Waiting => "waiting",
            Status::Completed => "completed",
            Status::Exited => "exited",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::Capped => "capped",
        }
    }
}

/// What a `wait_for_event` step waits for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Wait {
    pub event: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filter: Option<String>,
}

/// One line of a run's log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogEntry {
    pub at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    pub what: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Run {
    pub id: String,
    pub environment: String,
    pub flow_id: String,
    pub version: u32,
    pub user_id: String,
    pub started_at: DateTime<Utc>,
    /// `{"type": "api"|"event"|"console", ...}`: the event (name, properties, ...) or the
    /// API call's `trigger` object.
    pub trigger: Value,
    /// The variables, resolved once at start.
    pub variables: Map<String, Value>,
    pub status: Status,
    /// The step to run next (or being waited on).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub step: Option<String>,
    /// Attempts made at `step` so far.
    #[serde(default)]
    pub attempt: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<Wait>,
    /// What finished steps produced (`steps.<id>` in templates).
    #[serde(default)]
    pub outputs: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ended_at: Option<DateTime<Utc>>,
    #[serde(default)]
    pub log: Vec<LogEntry>,
}

impl Run {
    pub fn log(
        &mut self,
        at: DateTime<Utc>,
        step: Option<&str>,
        what: &str,
        detail: Option<Value>,
    ) {
        if self.log.len() >= MAX_LOG {
            self.log.remove(0);
        }
        self.log.push(LogEntry {
            at,
            step: step.map(str::to_string),
            what: what.to_string(),
            detail,
        });
    }

    /// Ends the run with `status`.
    pub fn end(&mut self, status: Status, at: DateTime<Utc>, error: Option<String>) {
        self.status = status;
        self.ended_at = Some(at);
        self.due_at = None;
        self.wait = None;
        self.error = error;
    }

    /// The context templates read, without the profile (read live per step).
    pub fn context(&self, profile: Value) -> Value {
        json!({
            "profile": profile,
            "trigger": self.trigger,
            "variables": self.variables,
            "steps": self.outputs,
            "run": {"id": self.id, "flow_id": self.flow_id, "started_at": self.started_at,
                    "version": self.version},
        })
    }

    /// The stable `webhook-id` of `step`'s request: one per (run, step), so a receiver
    /// recognises a retry or a redelivery after a crash.
    pub fn message_id(&self, step: &str) -> String {
        format!("msg_{}_{step}", self.id.trim_start_matches("run_"))
    }
}

/// A run id: time-ordered by `at_ms`, the rest fixed by `key` (an event id or an
/// idempotency key with the user), so the same start always names the same run.
pub fn run_id(at_ms: i64, flow: &str, key: &str) -> String {
    let mut h = sha2::Sha256::new();
    h.update(flow.as_bytes());
    h.update([0]);
    h.update(key.as_bytes());
    let digest = hex::encode(&h.finalize()[..10]);
    format!("run_{:012x}{digest}", at_ms.max(0))
}

/// Whether `id` has the shape of a run id (`run_` and 32 hex digits).
pub fn valid_run_id(id: &str) -> bool {
    id.strip_prefix("run_")
        .is_some_and(|h| h.len() == 32 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The time a run id was made at (ms), for listing and retention.
pub fn run_time(id: &str) -> Option<i64> {
    i64::from_str_radix(id.strip_prefix("run_")?.get(..12)?, 16).ok()
}

/// Masks the values of `keys` in a JSON object tree (a variable or property marked
/// `redact`), to a bounded depth.
pub fn redacted(v: &Value, redacts: &dyn Fn(&str) -> bool, depth: usize) -> Value {
    match v {
        Value::Object(o) if depth < 16 => Value::Object(
            o.iter()
                .map(|(k, x)| {
                    let val = if redacts(k) {
                        Value::String("[redacted]".into())
                    } else {
                        redacted(x, redacts, depth + 1)
                    };
                    (k.clone(), val)
                })
                .collect(),
        ),
        Value::Array(a) if depth < 16 => {
            Value::Array(a.iter().map(|x| redacted(x, redacts, depth + 1)).collect())
        }
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_ids_are_stable_and_time_ordered() {
        let a = run_id(1_765_000_000_000, "f", "evt_1");
        assert_eq!(a, run_id(1_765_000_000_000, "f", "evt_1"));
        assert_ne!(a, run_id(1_765_000_000_000, "g", "evt_1"));
        assert!(a < run_id(1_765_000_000_001, "f", "evt_0"));
        assert_eq!(run_time(&a), Some(1_765_000_000_000));
        assert_eq!(a.len(), 4 + 12 + 20);
        assert!(valid_run_id(&a));
        assert!(!valid_run_id("run_../../etc"));
        assert!(!valid_run_id(&"i".repeat(300)));
    }

    #[test]
    fn redaction_masks_named_keys_at_any_depth() {
        let v =
            json!({"email": "a@b", "order": {"email": "c@d", "sku": 1}, "list": [{"email": 1}]});
        let out = redacted(&v, &|k| k == "email", 0);
        assert_eq!(
            out,
            json!({"email": "[redacted]", "order": {"email": "[redacted]", "sku": 1},
                   "list": [{"email": "[redacted]"}]})
        );
    }
}
