//! Webhook batching, decided without I/O: which new events join a subscription's open
//! batch, when the batch is cut into stored messages, where the cursor moves, and when
//! the cursor is written. Times come from the worker's injected clock.
//!
//! Cases:
//! - an event joins the open batch if its version is past what the subscription has read,
//!   it is of the subscription's environment and it passes the filter;
//! - the batch is cut when it holds `max_events` or its oldest event has waited
//!   `max_wait`; a cut makes messages of at most `max_events` events each and moves the
//!   cursor to what was read;
//! - with nothing open, the cursor follows what was read (those versions matched nothing);
//! - the cursor is written at once when the recovery sequence or the failing state
//!   changed, and for a version alone at most every `idle_every`.

use std::time::Duration;

use chrono::{DateTime, Utc};

/// A subscription's batching settings.
#[derive(Debug, Clone, Copy)]
pub struct Batching {
    /// Events a message holds at most (and the size that cuts a batch at once).
    pub max_events: usize,
    /// How long the oldest open event may wait for others.
    pub max_wait: Duration,
}

/// What to do with the open batch now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cut {
    /// Keep waiting.
    Hold,
    /// Store the open events as messages of these index ranges; the cursor moves to
    /// `cursor` once the chunk is stored.
    Chunk {
        messages: Vec<std::ops::Range<usize>>,
        cursor: i64,
    },
    /// Nothing is open: the cursor moves to what was read.
    Advance { cursor: i64 },
}

impl Batching {
    pub fn new(max_events: u32, max_wait_ms: u64) -> Batching {
        Batching {
            max_events: max_events.max(1) as usize,
            max_wait: Duration::from_millis(max_wait_ms),
        }
    }

    /// Decides about `open` events (the oldest joined at `open_since`) at `now`, with
    /// everything up to version `read_to` read and the cursor at `cursor`.
    pub fn decide(
        &self,
        open: usize,
        open_since: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        read_to: i64,
        cursor: i64,
    ) -> Cut {
        if open == 0 {
            return if read_to > cursor {
                Cut::Advance { cursor: read_to }
            } else {
                Cut::Hold
            };
        }
        let waited =
            open_since.is_some_and(|t| (now - t).to_std().unwrap_or_default() >= self.max_wait);
        if open < self.max_events && !waited {
            return Cut::Hold;
        }
        let messages = (0..open)
            .step_by(self.max_events)
            .map(|start| start..(start + self.max_events).min(open))
            .collect();
        Cut::Chunk {
            messages,
            cursor: read_to,
        }
    }
}

/// Whether an event of `version` in `environment` joins a batch of a subscription of
/// `sub_environment` that has read up to `read_to`; `matches` is its filter's answer.
pub fn joins(
    version: i64,
    environment: &str,
    sub_environment: &str,
    read_to: i64,
    matches: bool,
) -> bool {
    version > read_to && environment == sub_environment && matches
}

/// Whether the cursor document is written now.
pub fn write_cursor(
    force: bool,
    changed: bool,
    moved: bool,
    written_at: DateTime<Utc>,
    now: DateTime<Utc>,
    idle_every: Duration,
) -> bool {
    let idle = (now - written_at).to_std().unwrap_or_default() >= idle_every;
    force || changed || (moved && idle)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(ms: i64) -> DateTime<Utc> {
        DateTime::from_timestamp_millis(1_764_000_000_000 + ms).expect("time")
    }

    #[test]
    #[allow(clippy::single_range_in_vec_init)] // one message of events 0..n
    fn batches_are_cut_by_size_or_by_time() {
        let b = Batching::new(3, 1000);
        let cases = [
            ("empty and nothing new", 0, None, 0, 5, 5, Cut::Hold),
            (
                "empty, new versions matched nothing",
                0,
                None,
                0,
                9,
                5,
                Cut::Advance { cursor: 9 },
            ),
            ("not full, not waited", 2, Some(0), 999, 9, 5, Cut::Hold),
            (
                "waited max_wait",
                2,
                Some(0),
                1000,
                9,
                5,
                Cut::Chunk {
                    messages: vec![0..2],
                    cursor: 9,
                },
            ),
            (
                "full",
                3,
                Some(0),
                1,
                9,
                5,
                Cut::Chunk {
                    messages: vec![0..3],
                    cursor: 9,
                },
            ),
            (
                "a backlog makes messages of max_events",
                7,
                Some(0),
                1,
                12,
                5,
                Cut::Chunk {
                    messages: vec![0..3, 3..6, 6..7],
                    cursor: 12,
                },
            ),
        ];
        for (name, open, since, now, read_to, cursor, want) in cases {
            assert_eq!(
                b.decide(open, since.map(t), t(now), read_to, cursor),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn one_event_a_message_cuts_at_once() {
        let b = Batching::new(1, 1000);
        assert_eq!(
            b.decide(2, Some(t(0)), t(0), 4, 3),
            Cut::Chunk {
                messages: vec![0..1, 1..2],
                cursor: 4
            }
        );
        // max_events 0 counts as 1.
        assert_eq!(Batching::new(0, 0).max_events, 1);
    }

    #[test]
    fn events_join_by_version_environment_and_filter() {
        assert!(joins(5, "prod", "prod", 4, true));
        assert!(!joins(4, "prod", "prod", 4, true), "already read");
        assert!(!joins(5, "staging", "prod", 4, true), "another environment");
        assert!(!joins(5, "prod", "prod", 4, false), "filtered out");
    }

    #[test]
    fn the_cursor_is_written_on_change_or_when_idle_long_enough() {
        let every = Duration::from_secs(10);
        assert!(write_cursor(true, false, false, t(0), t(1), every));
        assert!(write_cursor(false, true, false, t(0), t(1), every));
        assert!(!write_cursor(false, false, true, t(0), t(9_999), every));
        assert!(write_cursor(false, false, true, t(0), t(10_000), every));
        assert!(!write_cursor(false, false, false, t(0), t(60_000), every));
    }
}
