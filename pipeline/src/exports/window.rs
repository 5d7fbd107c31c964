//! Export intervals and windows: `[start, end)` aligned to the interval in UTC, named
//! `YYYYMMDDTHHMMSSZ-YYYYMMDDTHHMMSSZ`.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};

/// How often an export runs, and the width of its windows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Interval {
    #[serde(rename = "1m")]
    Minute,
    #[serde(rename = "5m")]
    FiveMinutes,
    #[serde(rename = "15m")]
    FifteenMinutes,
    #[serde(rename = "1h")]
    Hour,
    #[serde(rename = "1d")]
    Day,
}

impl Interval {
    pub const NAMES: &'static str = "1m, 5m, 15m, 1h, 1d";

    pub fn parse(text: &str) -> Option<Interval> {
        match text.trim() {
            "1m" => Some(Interval::Minute),
            "5m" => Some(Interval::FiveMinutes),
            "15m" => Some(Interval::FifteenMinutes),
            "1h" => Some(Interval::Hour),
            "1d" => Some(Interval::Day),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Interval::Minute => "1m",
            Interval::FiveMinutes => "5m",
            Interval::FifteenMinutes => "15m",
            Interval::Hour => "1h",
            Interval::Day => "1d",
        }
    }

    pub fn seconds(self) -> i64 {
        match self {
            Interval::Minute => 60,
            Interval::FiveMinutes => 300,
            Interval::FifteenMinutes => 900,
            Interval::Hour => 3600,
            Interval::Day => 86_400,
        }
    }

    pub fn duration(self) -> Duration {
        Duration::seconds(self.seconds())
    }

    /// The start of the window holding `t`.
    pub fn floor(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let s = self.seconds();
        let secs = t.timestamp().div_euclid(s) * s;
        DateTime::from_timestamp(secs, 0).unwrap_or(t)
    }

    /// `t` if it is a window start, else the next window start.
    pub fn ceil(self, t: DateTime<Utc>) -> DateTime<Utc> {
        let f = self.floor(t);
        if f == t { f } else { f + self.duration() }
    }

    pub fn window(self, start: DateTime<Utc>) -> Window {
        Window {
            start,
            end: start + self.duration(),
        }
    }

    /// The windows from `from` (a window start) up to `to` (exclusive of windows ending
    /// after it), at most `limit`.
    pub fn windows(self, from: DateTime<Utc>, to: DateTime<Utc>, limit: usize) -> Vec<Window> {
        let mut out = Vec::new();
        let mut start = self.floor(from);
        while out.len() < limit && start + self.duration() <= to {
            out.push(self.window(start));
            start += self.duration();
        }
        out
    }
}

/// `[start, end)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Window {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

/// `20261129T100000Z`: sortable, and without the `-` that separates start from end.
pub fn compact(t: DateTime<Utc>) -> String {
    t.format("%Y%m%dT%H%M%SZ").to_string()
}

impl Window {
    /// `{start}-{end}`, the stem of every object of the window.
    pub fn name(&self) -> String {
        format!("{}-{}", compact(self.start), compact(self.end))
    }
}

/// RFC 3339 with microseconds, as SQL timestamp literals and JSON show times.
pub fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

/// A SQL timestamp literal.
pub fn sql_timestamp(t: DateTime<Utc>) -> String {
    format!("TIMESTAMP '{}'", rfc3339(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).expect("time").to_utc()
    }

    #[test]
    fn windows_align_to_utc_and_are_named_by_start_and_end() {
        let i = Interval::FifteenMinutes;
        assert_eq!(
            i.floor(t("2026-11-29T10:14:59.999Z")),
            t("2026-11-29T10:00:00Z")
        );
        assert_eq!(i.ceil(t("2026-11-29T10:00:00Z")), t("2026-11-29T10:00:00Z"));
        assert_eq!(i.ceil(t("2026-11-29T10:00:01Z")), t("2026-11-29T10:15:00Z"));
        let w = i.windows(t("2026-11-29T10:00:00Z"), t("2026-11-29T10:40:00Z"), 10);
        assert_eq!(w.len(), 2);
        assert_eq!(w[1].name(), "20261129T101500Z-20261129T103000Z");
        assert_eq!(
            Interval::Day.window(t("2026-11-29T00:00:00Z")).name(),
            "20261129T000000Z-20261130T000000Z"
        );
        assert_eq!(Interval::Hour.windows(w[0].start, w[1].end, 1).len(), 0);
        assert_eq!(Interval::parse("1h"), Some(Interval::Hour));
        assert_eq!(Interval::parse("2h"), None);
        assert_eq!(
            serde_json::to_string(&Interval::FiveMinutes).expect("json"),
            "\"5m\""
        );
    }
}
