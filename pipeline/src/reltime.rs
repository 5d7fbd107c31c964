//! The one grammar for times users write, in segment definitions (`"within": "-7d"`) and
//! in webhook recovery (`since=24h`): an RFC 3339 time, or a duration relative to now.
//!
//! A duration is humantime's (`90s`, `30m`, `12h`, `7d`, `2w`, `1h 30m`), optionally
//! signed: `-7d` and a bare `7d` are seven days ago, `+1d` a day ahead. At most 100 years.

use chrono::{DateTime, Utc};

/// 100 years, in microseconds: the largest relative time.
const MAX_RELATIVE_US: i64 = 36_525 * 86_400 * 1_000_000;

/// A point in time: relative to the evaluation time (`-7d` = 7 days before), or absolute.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Time {
    /// Microseconds added to "now" (negative: in the past).
    Relative(i64),
    /// Microseconds since the epoch.
    Absolute(i64),
}

impl Time {
    /// The time in microseconds since the epoch, with "now" at `now_us`.
    pub fn at(self, now_us: i64) -> i64 {
        match self {
            Time::Relative(d) => now_us.saturating_add(d),
            Time::Absolute(t) => t,
        }
    }

    /// The time, with "now" at `now`.
    pub fn at_time(self, now: DateTime<Utc>) -> DateTime<Utc> {
        DateTime::from_timestamp_micros(self.at(now.timestamp_micros())).unwrap_or(now)
    }
}

/// Parses a time; the error quotes the text and shows the forms it may take.
pub fn parse_time(text: &str) -> Result<Time, String> {
    let s = text.trim();
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(Time::Absolute(t.timestamp_micros()));
    }
    let (sign, rest) = match s.strip_prefix('+') {
        Some(rest) => (1, rest),
        None => (-1, s.strip_prefix('-').unwrap_or(s)),
    };
    let us = humantime::parse_duration(rest.trim())
        .ok()
        .and_then(|d| i64::try_from(d.as_micros()).ok())
        .filter(|us| *us <= MAX_RELATIVE_US);
    match us {
        Some(us) if !rest.is_empty() => Ok(Time::Relative(sign * us)),
        _ => Err(format!(
            "{text:?} is neither an RFC 3339 time nor a duration such as -7d, 24h or +1d"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: i64 = 3_600_000_000;

    #[test]
    fn the_forms_users_write() {
        let cases: &[(&str, Time)] = &[
            ("-7d", Time::Relative(-168 * H)),
            ("7d", Time::Relative(-168 * H)),
            ("24h", Time::Relative(-24 * H)),
            ("+1d", Time::Relative(24 * H)),
            ("-90s", Time::Relative(-90_000_000)),
            ("-30m", Time::Relative(-H / 2)),
            ("-2w", Time::Relative(-336 * H)),
            ("1h 30m", Time::Relative(-3 * H / 2)),
            (" -12h ", Time::Relative(-12 * H)),
            ("-0s", Time::Relative(0)),
            (
                "2026-11-29T10:00:00Z",
                Time::Absolute(1_795_946_400_000_000),
            ),
        ];
        for (text, want) in cases {
            assert_eq!(parse_time(text).as_ref(), Ok(want), "{text}");
        }
    }

    #[test]
    fn refusals_quote_the_text() {
        for text in ["", "-", "yesterday-ish", "-7", "7x", "-200000d", "+-1d"] {
            let e = parse_time(text).expect_err(text);
            assert_eq!(
                e,
                format!(
                    "{text:?} is neither an RFC 3339 time nor a duration such as -7d, 24h or +1d"
                )
            );
        }
    }

    #[test]
    fn relative_times_count_from_now() {
        let now = DateTime::from_timestamp(1_795_946_400, 0).expect("time");
        let t = parse_time("-1h").expect("time").at_time(now);
        assert_eq!(now - t, chrono::Duration::hours(1));
        assert_eq!(Time::Absolute(5).at(1_000), 5);
    }
}
