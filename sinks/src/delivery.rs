//! The delivery decision after one attempt, without I/O: delivered, retry at a time,
//! failed for good, or gone (410) — and whether the endpoint pauses itself.
//!
//! Cases:
//! - 2xx: delivered; the endpoint's run of failures ends;
//! - 410 Gone: the message waits for a resume and the endpoint pauses;
//! - a 4xx the receiver means for good (not 408, 409, 425, 429; see
//!   [`crate::retry::RETRYABLE_4XX`]): failed at once, no further attempt; it still counts
//!   as a failure of the endpoint (a receiver that refuses everything gets paused);
//! - any other failure: retried after the policy's delay before the next attempt, or the
//!   receiver's `Retry-After` (429 and 503, see [`crate::retry::judge`]) when it gave one;
//!   failed once the schedule has no attempt left;
//! - failing continuously for `pause_after` (counted from the first failure of the run,
//!   which survives restarts) pauses the endpoint, unless it is paused already.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::retry::{RetryPolicy, Verdict};

/// What became of a message after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// 2xx: done.
    Delivered,
    /// Failed; another attempt is scheduled at `next_attempt_at`.
    Retrying,
    /// Failed on the last attempt of the schedule: done, kept for recovery.
    Failed,
    /// 410 Gone: the endpoint is paused; the message waits for a resume.
    Gone,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Delivered => "delivered",
            Status::Retrying => "retrying",
            Status::Failed => "failed",
            Status::Gone => "gone",
        }
    }
}

/// The inputs of a decision besides the verdict.
#[derive(Debug, Clone, Copy)]
pub struct Attempted {
    /// When the attempt was made.
    pub at: DateTime<Utc>,
    /// Attempts made so far, this one included (1 after the first).
    pub attempts: u32,
    /// When the endpoint's current run of failures began, if it is failing.
    pub failing_since: Option<DateTime<Utc>>,
    /// The endpoint is paused already (by its target or by itself).
    pub paused: bool,
    /// The jitter's random draw in `[0, 1)` ([`RetryPolicy::delay_before_with`]).
    pub jitter: f64,
}

/// The decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub status: Status,
    /// For [`Status::Retrying`]: when the next attempt is due.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub error: Option<String>,
    /// The endpoint's run of failures after this attempt (`None` after a delivery).
    pub failing_since: Option<DateTime<Utc>>,
    /// Pause the endpoint, for this reason.
    pub pause: Option<String>,
}

/// Decides what follows an attempt judged `verdict`.
pub fn decide(
    verdict: Verdict,
    a: Attempted,
    policy: &RetryPolicy,
    pause_after: Duration,
) -> Decision {
    let at = a.at;
    match verdict {
        Verdict::Delivered => Decision {
            status: Status::Delivered,
            next_attempt_at: None,
            error: None,
            failing_since: None,
            pause: None,
        },
        Verdict::Gone => Decision {
            status: Status::Gone,
            next_attempt_at: None,
            error: Some("HTTP 410 Gone: the endpoint asked to stop".into()),
            failing_since: Some(a.failing_since.unwrap_or(at)),
            pause: (!a.paused)
                .then(|| format!("the endpoint answered 410 Gone at {}", at.to_rfc3339())),
        },
        Verdict::Rejected { error } => {
            let since = a.failing_since.unwrap_or(at);
            Decision {
                status: Status::Failed,
                next_attempt_at: None,
                error: Some(error),
                failing_since: Some(since),
                pause: pause_for(a.paused, at, since, pause_after),
            }
        }
        Verdict::Retry { error, after } => {
            let since = a.failing_since.unwrap_or(at);
            let next_attempt_at = policy
                .delay_before_with(a.attempts + 1, a.jitter)
                .map(|delay| {
                    let delay = after.unwrap_or(delay);
                    at + chrono::Duration::from_std(delay).unwrap_or(chrono::Duration::MAX)
                });
            let pause = pause_for(a.paused, at, since, pause_after);
            Decision {
                status: if next_attempt_at.is_some() {
                    Status::Retrying
                } else {
                    Status::Failed
                },
                next_attempt_at,
                error: Some(error),
                failing_since: Some(since),
                pause,
            }
        }
    }
}

/// The reason to pause an endpoint failing since `since` at `at`, once that lasted
/// `pause_after` (and it is not paused already).
fn pause_for(
    paused: bool,
    at: DateTime<Utc>,
    since: DateTime<Utc>,
    pause_after: Duration,
) -> Option<String> {
    let failing_for = (at - since).to_std().unwrap_or_default();
    (!paused && failing_for >= pause_after).then(|| {
        format!(
            "failing continuously since {} (for {})",
            since.to_rfc3339(),
            humanize(failing_for)
        )
    })
}

fn humanize(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{}s", s / 60, s % 60)
    } else {
        format!("{s}s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(&format!("2026-11-29T{s}Z"))
            .expect("time")
            .to_utc()
    }

    fn policy() -> RetryPolicy {
        RetryPolicy {
            schedule: vec![
                Duration::ZERO,
                Duration::from_secs(5),
                Duration::from_secs(300),
            ],
            jitter: 0.2,
        }
    }

    fn attempted(at: &str, attempts: u32, since: Option<&str>) -> Attempted {
        Attempted {
            at: t(at),
            attempts,
            failing_since: since.map(t),
            paused: false,
            jitter: 0.5,
        }
    }

    fn retry(after: Option<u64>) -> Verdict {
        Verdict::Retry {
            error: "HTTP 503".into(),
            after: after.map(Duration::from_secs),
        }
    }

    const HOUR: Duration = Duration::from_secs(3600);

    /// name, verdict, attempt, then the status, next attempt and failing-since expected.
    type Case = (
        &'static str,
        Verdict,
        Attempted,
        Status,
        Option<&'static str>,
        Option<&'static str>,
    );

    #[test]
    fn each_verdict_has_its_decision() {
        let p = policy();
        let cases: Vec<Case> = vec![
            // name, verdict, attempt, status, next attempt, failing since
            (
                "2xx",
                Verdict::Delivered,
                attempted("10:00:00", 1, Some("09:00:00")),
                Status::Delivered,
                None,
                None,
            ),
            (
                "5xx, first failure: the policy's delay",
                retry(None),
                attempted("10:00:00", 1, None),
                Status::Retrying,
                Some("10:00:05"),
                Some("10:00:00"),
            ),
            (
                "Retry-After wins over the policy",
                retry(Some(60)),
                attempted("10:00:00", 1, None),
                Status::Retrying,
                Some("10:01:00"),
                Some("10:00:00"),
            ),
            (
                "the run of failures keeps its start",
                retry(None),
                attempted("10:00:05", 2, Some("10:00:00")),
                Status::Retrying,
                Some("10:05:05"),
                Some("10:00:00"),
            ),
            (
                "no attempt left: failed",
                retry(Some(60)),
                attempted("10:05:05", 3, Some("10:00:00")),
                Status::Failed,
                None,
                Some("10:00:00"),
            ),
            (
                "410: gone, waits for a resume",
                Verdict::Gone,
                attempted("10:00:00", 1, None),
                Status::Gone,
                None,
                Some("10:00:00"),
            ),
            (
                "a final 4xx: failed at once",
                Verdict::Rejected {
                    error: "HTTP 400".into(),
                },
                attempted("10:00:00", 1, None),
                Status::Failed,
                None,
                Some("10:00:00"),
            ),
        ];
        for (name, verdict, a, status, next, since) in cases {
            let d = decide(verdict, a, &p, HOUR);
            assert_eq!(d.status, status, "{name}");
            assert_eq!(d.next_attempt_at, next.map(t), "{name}");
            assert_eq!(d.failing_since, since.map(t), "{name}");
            assert_eq!(d.error.is_some(), status != Status::Delivered, "{name}");
        }
    }

    #[test]
    fn jitter_spreads_the_policy_delay_but_not_retry_after() {
        let p = policy();
        let mut a = attempted("10:00:00", 2, None);
        a.jitter = 0.0;
        assert_eq!(
            decide(retry(None), a, &p, HOUR).next_attempt_at,
            Some(t("10:04:00"))
        );
        a.jitter = 0.999_999;
        let late = decide(retry(None), a, &p, HOUR)
            .next_attempt_at
            .expect("retry");
        assert!(late > t("10:05:59") && late <= t("10:06:00"), "{late}");
        assert_eq!(
            decide(retry(Some(7)), a, &p, HOUR).next_attempt_at,
            Some(t("10:00:07"))
        );
    }

    #[test]
    fn pauses_after_failing_for_pause_after_or_on_410() {
        let p = policy();
        let d = decide(
            retry(None),
            attempted("10:59:59", 2, Some("10:00:00")),
            &p,
            HOUR,
        );
        assert_eq!(d.pause, None);
        let d = decide(
            retry(None),
            attempted("11:00:00", 2, Some("10:00:00")),
            &p,
            HOUR,
        );
        assert_eq!(
            d.pause.as_deref(),
            Some("failing continuously since 2026-11-29T10:00:00+00:00 (for 1h0m)")
        );
        assert_eq!(d.status, Status::Retrying, "the message is still retried");
        let mut already = attempted("11:00:00", 2, Some("10:00:00"));
        already.paused = true;
        assert_eq!(decide(retry(None), already, &p, HOUR).pause, None);
        assert_eq!(decide(Verdict::Gone, already, &p, HOUR).pause, None);
        let d = decide(Verdict::Gone, attempted("10:00:00", 1, None), &p, HOUR);
        assert_eq!(
            d.pause.as_deref(),
            Some("the endpoint answered 410 Gone at 2026-11-29T10:00:00+00:00")
        );
        assert_eq!(humanize(Duration::from_secs(61)), "1m1s");
        assert_eq!(humanize(Duration::from_secs(7)), "7s");
    }
}
