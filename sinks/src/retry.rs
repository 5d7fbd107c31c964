//! When to try again, and how a response is judged.

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::client::{Failure, Response};

/// The delays before each attempt (the first is usually 0: immediately) and the jitter
/// applied to each non-zero delay (0.2 = ±20%).
#[derive(Debug, Clone, PartialEq)]
pub struct RetryPolicy {
    pub schedule: Vec<Duration>,
    pub jitter: f64,
}

impl Default for RetryPolicy {
    /// Svix's schedule: immediately, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h, 10 h.
    fn default() -> Self {
        let s = Duration::from_secs;
        RetryPolicy {
            schedule: vec![
                s(0),
                s(5),
                s(5 * 60),
                s(30 * 60),
                s(2 * 3600),
                s(5 * 3600),
                s(10 * 3600),
                s(10 * 3600),
            ],
            jitter: 0.2,
        }
    }
}

impl RetryPolicy {
    /// Attempts in all.
    pub fn attempts(&self) -> u32 {
        self.schedule.len() as u32
    }

    /// The (jittered) delay before attempt `n` (1-based), or `None` past the last.
    pub fn delay_before(&self, n: u32) -> Option<Duration> {
        self.delay_before_with(n, rand::random::<f64>())
    }

    /// [`RetryPolicy::delay_before`] with the jitter's random draw `r` in `[0, 1)` given:
    /// 0 is the shortest delay, 0.5 the schedule's, towards 1 the longest.
    pub fn delay_before_with(&self, n: u32, r: f64) -> Option<Duration> {
        let base = *self.schedule.get(n.checked_sub(1)? as usize)?;
        if base.is_zero() || self.jitter <= 0.0 {
            return Some(base);
        }
        let factor = 1.0 + self.jitter * (2.0 * r - 1.0);
        Some(base.mul_f64(factor.max(0.0)))
    }
}

/// What to do after an attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 2xx.
    Delivered,
    /// 410 Gone: the receiver asks us to stop; the subscription is paused.
    Gone,
    /// A 4xx other than [`RETRYABLE_4XX`]: the receiver refuses this message, and sending
    /// it again will not change that. It fails at once; the endpoint stays on.
    Rejected { error: String },
    /// Any other failure. `after` is the receiver's `Retry-After` (429 and 503 only).
    Retry {
        error: String,
        after: Option<Duration>,
    },
}

/// The 4xx answers that may succeed later (timeout, conflict, too early, rate limit);
/// every other 4xx is final.
pub const RETRYABLE_4XX: [u16; 4] = [408, 409, 425, 429];

/// Judges a response: 2xx delivered, 410 gone, other 4xx rejected except
/// [`RETRYABLE_4XX`], redirects and everything else retried.
pub fn judge(response: &Response, now: DateTime<Utc>) -> Verdict {
    let status = response.status;
    match status {
        200..=299 => Verdict::Delivered,
        410 => Verdict::Gone,
        400..=499 if !RETRYABLE_4XX.contains(&status) => Verdict::Rejected {
            error: described(status, &response.body),
        },
        300..=399 => Verdict::Retry {
            error: format!(
                "HTTP {status}: redirect to {} not followed",
                response.location.as_deref().unwrap_or("(no location)")
            ),
            after: None,
        },
        _ => {
            let after = match status {
                429 | 503 => response
                    .retry_after
                    .as_deref()
                    .and_then(|v| parse_retry_after(v, now)),
                _ => None,
            };
            Verdict::Retry {
                error: described(status, &response.body),
                after,
            }
        }
    }
}

/// `HTTP 503: <the first 200 characters of the body>`.
fn described(status: u16, body: &[u8]) -> String {
    let snippet: String = String::from_utf8_lossy(body).chars().take(200).collect();
    if snippet.is_empty() {
        format!("HTTP {status}")
    } else {
        format!("HTTP {status}: {snippet}")
    }
}

/// Judges a request that got no response.
pub fn judge_failure(failure: &Failure) -> Verdict {
    Verdict::Retry {
        error: failure.message.clone(),
        after: None,
    }
}

/// `Retry-After` as delta-seconds or an HTTP date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let value = value.trim();
    if let Ok(secs) = value.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at: DateTime<Utc> = httpdate::parse_http_date(value).ok()?.into();
    Some((at - now).to_std().unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn response(status: u16, retry_after: Option<&str>) -> Response {
        Response {
            status,
            retry_after: retry_after.map(str::to_string),
            location: Some("https://elsewhere.example/".into()),
            body: Bytes::from_static(b"busy"),
            latency: Duration::ZERO,
        }
    }

    #[test]
    fn schedule_and_jitter_bounds() {
        let p = RetryPolicy::default();
        assert_eq!(p.attempts(), 8);
        assert_eq!(p.delay_before(1), Some(Duration::ZERO));
        for _ in 0..200 {
            let d = p.delay_before(3).unwrap().as_secs_f64();
            assert!((240.0..=360.0).contains(&d), "{d}");
        }
        assert_eq!(p.delay_before(9), None);
        assert_eq!(p.delay_before(0), None);
        let exact = RetryPolicy { jitter: 0.0, ..p };
        assert_eq!(exact.delay_before(8), Some(Duration::from_secs(36000)));
    }

    #[test]
    fn responses_are_judged() {
        let now = DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .to_utc();
        assert_eq!(judge(&response(204, None), now), Verdict::Delivered);
        assert_eq!(judge(&response(410, None), now), Verdict::Gone);
        let Verdict::Retry { error, after } = judge(&response(302, None), now) else {
            panic!()
        };
        assert_eq!(
            error,
            "HTTP 302: redirect to https://elsewhere.example/ not followed"
        );
        assert_eq!(after, None);
        let v = judge(&response(429, Some("7")), now);
        assert_eq!(
            v,
            Verdict::Retry {
                error: "HTTP 429: busy".into(),
                after: Some(Duration::from_secs(7))
            }
        );
        let v = judge(&response(503, Some("Thu, 01 Jan 2026 00:01:00 GMT")), now);
        assert!(matches!(v, Verdict::Retry { after: Some(d), .. } if d == Duration::from_secs(60)));
        // Retry-After only counts on 429 and 503.
        let v = judge(&response(500, Some("7")), now);
        assert!(matches!(v, Verdict::Retry { after: None, .. }));
        // A 4xx is final unless it may pass later.
        for status in [400, 401, 403, 404, 413, 422] {
            let v = judge(&response(status, None), now);
            let want = Verdict::Rejected {
                error: format!("HTTP {status}: busy"),
            };
            assert_eq!(v, want, "{status}");
        }
        for status in RETRYABLE_4XX {
            let v = judge(&response(status, None), now);
            assert!(matches!(v, Verdict::Retry { .. }), "{status}: {v:?}");
        }
        assert_eq!(parse_retry_after("soon", now), None);
    }
}
