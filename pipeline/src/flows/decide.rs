//! The pure decisions of a run: what a webhook step's answer does (go on, try again on
//! the retry schedule, or take the error branch), when a delay ends, and whether the
//! entry rule admits a start.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tidemark_sinks::client::{Failure, FailureKind, Response};
use tidemark_sinks::retry::{RetryPolicy, Verdict, judge, judge_failure};

use super::model::{Entry, MAX_WAIT, OnStatus};

/// What a webhook step's attempt leads to.
#[derive(Debug, Clone, PartialEq)]
pub enum After {
    /// Delivered (or a status the step accepts): the run goes on.
    Continue,
    /// Try again after this long (attempt `n + 1` of the schedule).
    Retry { after: Duration, error: String },
    /// The step failed: the error branch, or the run fails.
    Error(String),
}

/// The step's own rule for `status`: an exact code first, then its class (`4xx`).
fn rule(on_status: &BTreeMap<String, OnStatus>, status: u16) -> Option<OnStatus> {
    on_status
        .get(&status.to_string())
        .or_else(|| on_status.get(&format!("{}xx", status / 100)))
        .copied()
}

/// Decides after attempt `attempt` (1-based) got `result`.
pub fn after_webhook(
    on_status: &BTreeMap<String, OnStatus>,
    result: &Result<Response, Failure>,
    attempt: u32,
    policy: &RetryPolicy,
    now: DateTime<Utc>,
) -> After {
    let (verdict, status) = match result {
        Ok(r) => (judge(r, now), Some(r.status)),
        // the address guard's refusal will not change by trying again
        Err(f) if f.kind == FailureKind::Blocked => return After::Error(f.message.clone()),
        Err(f) => (judge_failure(f), None),
    };
    let error = match &verdict {
        Verdict::Delivered => String::new(),
        Verdict::Gone => format!("HTTP {}: gone", status.unwrap_or(410)),
        Verdict::Rejected { error } | Verdict::Retry { error, .. } => error.clone(),
    };
    let own = status.and_then(|s| rule(on_status, s));
    let what = match (own, &verdict) {
        (Some(o), _) => o,
        (None, Verdict::Delivered) => OnStatus::Continue,
        (None, Verdict::Retry { .. }) => OnStatus::Retry,
        (None, Verdict::Gone | Verdict::Rejected { .. }) => OnStatus::Error,
    };
    match what {
        OnStatus::Continue => After::Continue,
        OnStatus::Error => After::Error(error),
        OnStatus::Retry => {
            let hinted = match &verdict {
                Verdict::Retry { after, .. } => *after,
                _ => None,
            };
            match policy.delay_before(attempt + 1) {
                Some(d) => After::Retry {
                    after: hinted.map_or(d, |h| h.max(d)).min(MAX_WAIT),
                    error,
                },
                None => After::Error(format!("gave up after {attempt} attempts: {error}")),
            }
        }
    }
}

/// When a delay step ends: `duration` after `now`, or at `until` (a rendered time), never
/// more than `max` (or [`MAX_WAIT`]) ahead. A time in the past ends it at once.
pub fn delay_end(
    duration: Option<Duration>,
    until: Option<&str>,
    max: Option<Duration>,
    now: DateTime<Utc>,
) -> Result<DateTime<Utc>, String> {
    let cap =
        now + chrono::Duration::from_std(max.unwrap_or(MAX_WAIT).min(MAX_WAIT)).unwrap_or_default();
    let end = match (duration, until) {
        (Some(d), _) => now + chrono::Duration::from_std(d).unwrap_or_default(),
        (None, Some(text)) => DateTime::parse_from_rfc3339(text.trim())
            .map(|t| t.with_timezone(&Utc))
            .map_err(|_| format!("until rendered {text:?}, which is not an RFC 3339 time"))?,
        (None, None) => now,
    };
    Ok(end.clamp(now, cap))
}

/// Who is in a flow: the user's active run and the times of their recent starts.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct EntryState {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_run: Option<String>,
    /// Start times (ms) within the longest window, oldest first.
    #[serde(default)]
    pub starts: Vec<i64>,
}

/// Whether `rule` admits a start at `now_ms`; `Err` says why not.
pub fn admit(rule: &Entry, state: &EntryState, now_ms: i64) -> Result<(), String> {
    if rule.one_active_run
        && let Some(run) = &state.active_run
    {
        return Err(format!(
            "the user is in run {run} of this flow (one active run per user)"
        ));
    }
    if let (Some(max), Some(per)) = (rule.max_starts, rule.per) {
        let since = now_ms - per.as_millis() as i64;
        let recent = state.starts.iter().filter(|t| **t > since).count();
        if recent >= max as usize {
            return Err(format!(
                "the user started this flow {recent} times in the last {} (at most {max})",
                humantime::format_duration(per)
            ));
        }
    }
    Ok(())
}

/// Records an admitted start of run `run` at `now_ms` (older starts than the window drop).
pub fn admitted(rule: &Entry, state: &mut EntryState, run: &str, now_ms: i64) {
    if rule.one_active_run {
        state.active_run = Some(run.to_string());
    }
    if let Some(per) = rule.per {
        let since = now_ms - per.as_millis() as i64;
        state.starts.retain(|t| *t > since);
        state.starts.push(now_ms);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn resp(status: u16) -> Result<Response, Failure> {
        Ok(Response {
            status,
            retry_after: None,
            location: None,
            body: Bytes::from_static(b"nope"),
            latency: Duration::ZERO,
        })
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            schedule: vec![
                Duration::ZERO,
                Duration::from_secs(5),
                Duration::from_secs(60),
            ],
            jitter: 0.0,
        }
    }

    fn after(on: &[(&str, OnStatus)], r: Result<Response, Failure>, attempt: u32) -> After {
        let on = on.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        after_webhook(&on, &r, attempt, &policy(), Utc::now())
    }

    #[test]
    fn each_outcome_decides_the_run() {
        assert_eq!(after(&[], resp(200), 1), After::Continue);
        assert_eq!(
            after(&[], resp(503), 1),
            After::Retry {
                after: Duration::from_secs(5),
                error: "HTTP 503: nope".into()
            }
        );
        assert_eq!(
            after(&[], resp(400), 1),
            After::Error("HTTP 400: nope".into())
        );
        assert!(
            matches!(after(&[], resp(429), 2), After::Retry { after, .. } if after == Duration::from_secs(60))
        );
        assert_eq!(
            after(&[], resp(500), 3),
            After::Error("gave up after 3 attempts: HTTP 500: nope".into())
        );
        let timeout = Err(Failure {
            kind: FailureKind::Timeout,
            message: "timed out".into(),
            latency: Duration::ZERO,
        });
        assert!(matches!(after(&[], timeout, 1), After::Retry { .. }));
        let blocked = Err(Failure {
            kind: FailureKind::Blocked,
            message: "10.0.0.1 is a private address".into(),
            latency: Duration::ZERO,
        });
        assert_eq!(
            after(&[], blocked, 1),
            After::Error("10.0.0.1 is a private address".into())
        );
    }

    #[test]
    fn a_step_overrides_by_code_then_class() {
        let on = [
            ("404", OnStatus::Continue),
            ("4xx", OnStatus::Retry),
            ("2xx", OnStatus::Error),
        ];
        assert_eq!(after(&on, resp(404), 1), After::Continue);
        assert!(matches!(after(&on, resp(422), 1), After::Retry { .. }));
        assert_eq!(after(&on, resp(201), 1), After::Error(String::new()));
    }

    #[test]
    fn delays_end_within_their_bounds() {
        let now = DateTime::parse_from_rfc3339("2026-12-08T10:00:00Z")
            .unwrap()
            .to_utc();
        let h = Duration::from_secs(3600);
        assert_eq!(
            delay_end(Some(h), None, None, now).unwrap(),
            now + chrono::Duration::hours(1)
        );
        assert_eq!(
            delay_end(None, Some("2026-12-08T12:00:00Z"), Some(h), now).unwrap(),
            now + chrono::Duration::hours(1)
        );
        assert_eq!(
            delay_end(None, Some("2020-01-01T00:00:00Z"), None, now).unwrap(),
            now
        );
        let e = delay_end(None, Some("soon"), None, now).unwrap_err();
        assert_eq!(e, "until rendered \"soon\", which is not an RFC 3339 time");
    }

    #[test]
    fn entry_rules_cap_starts() {
        let rule = Entry {
            one_active_run: true,
            max_starts: Some(2),
            per: Some(Duration::from_secs(60)),
        };
        let mut st = EntryState::default();
        assert_eq!(admit(&rule, &st, 1_000), Ok(()));
        admitted(&rule, &mut st, "run_a", 1_000);
        let e = admit(&rule, &st, 2_000).unwrap_err();
        assert!(e.contains("run run_a"), "{e}");
        st.active_run = None;
        admitted(&rule, &mut st, "run_b", 2_000);
        st.active_run = None;
        let e = admit(&rule, &st, 3_000).unwrap_err();
        assert_eq!(
            e,
            "the user started this flow 2 times in the last 1m (at most 2)"
        );
        // the window slides
        assert_eq!(admit(&rule, &st, 61_500), Ok(()));
        let only_active = Entry {
            one_active_run: true,
            ..Entry::default()
        };
        assert_eq!(admit(&only_active, &EntryState::default(), 0), Ok(()));
    }
}
