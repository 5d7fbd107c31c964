//! Export scheduling, decided without I/O: which windows are due, when a window closes,
//! which exported windows late rows send back, and how the state moves after a window, a
//! good pass and a failed one. The clock is an argument; [`super::worker`] reads the
//! inputs (state, the `events` head, late rows' times), calls these and writes the result.
//!
//! Cases:
//! - a window `[s, e)` closes at `e + close_delay` (`flush_interval + grace`);
//! - fresh windows run in order from `next_start` (the export's `start` at first), at most
//!   `limit` a pass; snapshot sources run only the newest closed one and skip past the rest;
//! - rows committed after the exported windows were read, received before `next_start`,
//!   re-export their windows first (`redo_from`), before fresh ones;
//! - a backfill moves `next_start` only across windows the schedule had reached;
//! - a failed pass backs off 30 s, doubling to `max_backoff`, and pauses the export once it
//!   has failed for `pause_after`; a good pass or a resume clears the backoff.

use chrono::{DateTime, Duration, Utc};

use super::state::{Done, ExportState};
use super::window::{Interval, Window};

/// Most windows one backfill may ask for.
pub const MAX_BACKFILL_WINDOWS: usize = 10_000;
/// The first backoff after a failure; it doubles with each consecutive one.
const FIRST_BACKOFF: Duration = Duration::seconds(30);

/// The settings a schedule decision depends on.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    pub interval: Interval,
    /// The first window's start.
    pub start: DateTime<Utc>,
    /// A snapshot source (profiles, stats, members): one window stands for all missed ones.
    pub snapshot: bool,
    /// How long after its end a window is closed.
    pub close_delay: Duration,
    /// Most windows a pass runs.
    pub limit: usize,
}

/// What a failed pass leads to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AfterFailure {
    /// Try again at this time.
    RetryAt(DateTime<Utc>),
    /// Failing for `pause_after`: pause the export with this reason (and retry at the
    /// time if it is resumed without a fix).
    Pause {
        reason: String,
        retry_at: DateTime<Utc>,
    },
}

impl Schedule {
    /// The end of the newest closed window at `now`.
    pub fn closed_until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now - self.close_delay
    }

    /// When window `w` closes.
    pub fn closes_at(&self, w: Window) -> DateTime<Utc> {
        w.end + self.close_delay
    }

    fn next_start(&self, state: &ExportState) -> DateTime<Utc> {
        state.next_start.unwrap_or(self.start)
    }

    /// Whether a pass is due at `now` (`force`: a manual run ignores pause and backoff).
    pub fn should_run(
        &self,
        state: &ExportState,
        paused: bool,
        now: DateTime<Utc>,
        force: bool,
    ) -> bool {
        force || (!paused && state.next_attempt_at.is_none_or(|t| t <= now))
    }

    /// The `events` version after which commits must be checked for late rows, if any:
    /// the one the exported windows have seen, when the table has moved past it.
    pub fn late_rows_after(&self, state: &ExportState, head: i64) -> Option<i64> {
        state.events_version.filter(|seen| head > *seen)
    }

    /// Accounts for every `events` commit up to `head`: rows received before `next_start`
    /// (`earliest` is the smallest `received_at` committed since
    /// [`Schedule::late_rows_after`]) send their windows back through `redo_from`; the
    /// rest are exported when their windows close.
    pub fn note_commits(
        &self,
        state: &mut ExportState,
        head: i64,
        earliest: Option<DateTime<Utc>>,
    ) {
        let next = self.next_start(state);
        if self.late_rows_after(state, head).is_some()
            && let Some(min) = earliest
            && min < next
        {
            let from = self.interval.floor(min.max(self.start));
            state.redo_from = Some(state.redo_from.map_or(from, |r| r.min(from)));
        }
        state.events_version = Some(head);
    }

    /// The windows due at `now`: re-runs from `redo_from` first, then closed windows from
    /// `next_start` on (for snapshots, only the newest closed one).
    pub fn due(&self, state: &ExportState, now: DateTime<Utc>) -> Vec<Window> {
        let next = self.next_start(state);
        let closed = self.closed_until(now);
        let mut windows = match state.redo_from {
            Some(from) => self.interval.windows(from, next, self.limit),
            None => Vec::new(),
        };
        if self.snapshot {
            let last = self
                .interval
                .windows(next, closed, usize::MAX)
                .last()
                .copied();
            windows.extend(last);
        } else {
            let room = self.limit - windows.len();
            windows.extend(self.interval.windows(next, closed, room));
        }
        windows
    }

    /// The state after window `w` was written (`rows` in `files` files, at `at`).
    /// `next_start` moves past a window that starts at or before it (a backfill of later
    /// windows leaves the earlier ones to the schedule); `skip_to` (snapshot passes) moves
    /// it regardless. `redo_from` moves past `w` when `w` held it.
    pub fn after_window(
        &self,
        state: &mut ExportState,
        w: Window,
        rows: u64,
        files: usize,
        at: DateTime<Utc>,
        skip_to: bool,
    ) {
        state.rows_exported += rows;
        state.windows_done += 1;
        state.last_good = Some(Done {
            window: w,
            rows,
            files,
            finished_at: at,
        });
        let next = self.next_start(state);
        if w.end > next && (skip_to || w.start <= next) {
            state.next_start = Some(w.end);
        }
        if let Some(r) = state.redo_from
            && w.start <= r
            && r < w.end
        {
            state.redo_from = Some(w.end).filter(|e| state.next_start.is_some_and(|n| *e < n));
        }
    }

    /// Backoff after a failed pass at `now`, and a pause once failing for `pause_after`
    /// (unless already `paused`).
    pub fn after_failure(
        &self,
        state: &mut ExportState,
        now: DateTime<Utc>,
        message: &str,
        max_backoff: Duration,
        pause_after: Duration,
        paused: bool,
    ) -> AfterFailure {
        state.failures += 1;
        let since = *state.failing_since.get_or_insert(now);
        state.last_error = Some(message.to_string());
        state.last_error_at = Some(now);
        let doublings = state.failures.min(16).saturating_sub(1);
        let backoff = (FIRST_BACKOFF * (1i32 << doublings)).min(max_backoff);
        let retry_at = now + backoff;
        state.next_attempt_at = Some(retry_at);
        if now - since >= pause_after && !paused {
            AfterFailure::Pause {
                reason: format!("failing since {since}: {message}"),
                retry_at,
            }
        } else {
            AfterFailure::RetryAt(retry_at)
        }
    }

    /// How many seconds the export is behind the newest closed window at `now`.
    pub fn lag_seconds(&self, state: &ExportState, now: DateTime<Utc>) -> i64 {
        (self.closed_until(now) - self.next_start(state))
            .num_seconds()
            .max(0)
    }

    /// The window the schedule runs next.
    pub fn next_window(&self, state: &ExportState) -> Window {
        self.interval.window(self.next_start(state))
    }
}

/// A good pass ends a run of failures.
pub fn after_success(state: &mut ExportState) {
    state.failures = 0;
    state.failing_since = None;
    state.next_attempt_at = None;
}

/// A resumed export runs at once instead of waiting out its backoff.
pub fn resumed(state: &mut ExportState) {
    state.next_attempt_at = None;
}

/// The windows of `from..to` (aligned outward), at most [`MAX_BACKFILL_WINDOWS`]; the
/// error names the field at fault.
pub fn backfill_windows(
    interval: Interval,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Window>, String> {
    if to <= from {
        return Err("to: must be after from".into());
    }
    let i = interval;
    let windows = i.windows(i.floor(from), i.ceil(to), MAX_BACKFILL_WINDOWS + 1);
    if windows.len() > MAX_BACKFILL_WINDOWS {
        return Err(format!(
            "to: at most {MAX_BACKFILL_WINDOWS} windows of {} per backfill",
            i.name()
        ));
    }
    Ok(windows)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(&format!("2026-11-29T{s}Z"))
            .expect("time")
            .to_utc()
    }

    fn w(start: &str, end: &str) -> Window {
        Window {
            start: t(start),
            end: t(end),
        }
    }

    /// 15-minute windows from 10:00, closing 2 s after their end, 4 a pass.
    fn events() -> Schedule {
        Schedule {
            interval: Interval::FifteenMinutes,
            start: t("10:00:00"),
            snapshot: false,
            close_delay: Duration::seconds(2),
            limit: 4,
        }
    }

    fn at(next: &str) -> ExportState {
        ExportState {
            next_start: Some(t(next)),
            ..Default::default()
        }
    }

    #[test]
    fn fresh_windows_are_due_once_closed_in_order_and_limited() {
        let s = events();
        let cases: &[(&str, ExportState, &str, Vec<Window>)] = &[
            (
                "nothing closed yet",
                ExportState::default(),
                "10:15:01",
                vec![],
            ),
            (
                "the first closes at end + delay",
                ExportState::default(),
                "10:15:02",
                vec![w("10:00:00", "10:15:00")],
            ),
            (
                "from next_start on",
                at("10:15:00"),
                "10:45:02",
                vec![w("10:15:00", "10:30:00"), w("10:30:00", "10:45:00")],
            ),
            (
                "at most limit a pass",
                ExportState::default(),
                "13:00:00",
                vec![
                    w("10:00:00", "10:15:00"),
                    w("10:15:00", "10:30:00"),
                    w("10:30:00", "10:45:00"),
                    w("10:45:00", "11:00:00"),
                ],
            ),
        ];
        for (name, state, now, want) in cases {
            assert_eq!(&s.due(state, t(now)), want, "{name}");
        }
        assert_eq!(s.closes_at(w("10:00:00", "10:15:00")), t("10:15:02"));
    }

    #[test]
    fn late_rows_send_exported_windows_back_first() {
        let s = events();
        let mut st = at("11:00:00");
        st.events_version = Some(7);
        // No new commit: nothing to check.
        assert_eq!(s.late_rows_after(&st, 7), None);
        assert_eq!(s.late_rows_after(&st, 9), Some(7));
        // Rows received at 10:20 were committed after the windows were read.
        s.note_commits(&mut st, 9, Some(t("10:20:00")));
        assert_eq!(st.redo_from, Some(t("10:15:00")));
        assert_eq!(st.events_version, Some(9));
        let due = s.due(&st, t("11:15:02"));
        assert_eq!(
            due,
            vec![
                w("10:15:00", "10:30:00"),
                w("10:30:00", "10:45:00"),
                w("10:45:00", "11:00:00"),
                w("11:00:00", "11:15:00"),
            ]
        );
        // An earlier late row moves redo_from back; a later one does not.
        s.note_commits(&mut st, 10, Some(t("10:05:00")));
        assert_eq!(st.redo_from, Some(t("10:00:00")));
        s.note_commits(&mut st, 11, Some(t("10:50:00")));
        assert_eq!(st.redo_from, Some(t("10:00:00")));
        // Rows for windows not yet exported are no redo; before `start` clamps to it.
        let mut st = at("11:00:00");
        st.events_version = Some(1);
        s.note_commits(&mut st, 2, Some(t("11:03:00")));
        assert_eq!(st.redo_from, None);
        s.note_commits(&mut st, 3, Some(t("09:00:00")));
        assert_eq!(st.redo_from, Some(t("10:00:00")));
        // The first pass only records the head (nothing was exported before it).
        let mut st = ExportState::default();
        s.note_commits(&mut st, 5, Some(t("09:00:00")));
        assert_eq!((st.redo_from, st.events_version), (None, Some(5)));
    }

    #[test]
    fn after_a_window_the_state_moves_past_it() {
        let s = events();
        let mut st = ExportState::default();
        let first = w("10:00:00", "10:15:00");
        s.after_window(&mut st, first, 3, 1, t("10:15:03"), false);
        assert_eq!(st.next_start, Some(t("10:15:00")));
        assert_eq!((st.rows_exported, st.windows_done), (3, 1));
        assert_eq!(st.last_good.as_ref().map(|d| d.window), Some(first));
        // A backfill of windows ahead of the schedule leaves next_start alone...
        s.after_window(
            &mut st,
            w("12:00:00", "12:15:00"),
            1,
            1,
            t("12:20:00"),
            false,
        );
        assert_eq!(st.next_start, Some(t("10:15:00")));
        // ...and a re-run of an earlier window too.
        s.after_window(&mut st, first, 3, 1, t("12:21:00"), false);
        assert_eq!(st.next_start, Some(t("10:15:00")));
        assert_eq!((st.rows_exported, st.windows_done), (7, 3));
        // A snapshot pass skips to the window it ran.
        s.after_window(
            &mut st,
            w("12:00:00", "12:15:00"),
            1,
            1,
            t("12:20:00"),
            true,
        );
        assert_eq!(st.next_start, Some(t("12:15:00")));
    }

    #[test]
    fn redo_from_moves_through_the_windows_it_holds_and_ends() {
        let s = events();
        let mut st = at("11:00:00");
        st.redo_from = Some(t("10:15:00"));
        s.after_window(
            &mut st,
            w("10:15:00", "10:30:00"),
            1,
            1,
            t("11:16:00"),
            false,
        );
        assert_eq!(st.redo_from, Some(t("10:30:00")));
        s.after_window(
            &mut st,
            w("10:30:00", "10:45:00"),
            1,
            1,
            t("11:16:00"),
            false,
        );
        s.after_window(
            &mut st,
            w("10:45:00", "11:00:00"),
            1,
            1,
            t("11:16:00"),
            false,
        );
        assert_eq!(st.redo_from, None, "redo caught up with next_start");
        assert_eq!(st.next_start, Some(t("11:00:00")));
    }

    #[test]
    fn snapshots_run_only_the_newest_closed_window() {
        let s = Schedule {
            snapshot: true,
            ..events()
        };
        let st = ExportState::default();
        assert_eq!(s.due(&st, t("11:00:02")), vec![w("10:45:00", "11:00:00")]);
        assert_eq!(s.due(&st, t("10:15:01")), vec![]);
    }

    #[test]
    fn failures_back_off_doubling_then_pause() {
        let s = events();
        let max = Duration::minutes(5);
        let pause_after = Duration::minutes(20);
        let mut st = ExportState::default();
        let now = t("10:00:00");
        let cases = [
            (0, 30),
            (30, 60),
            (90, 120),
            (210, 240),
            (450, 300),
            (750, 300),
        ];
        for (after, backoff) in cases {
            let at = now + Duration::seconds(after);
            let d = s.after_failure(&mut st, at, "503", max, pause_after, false);
            assert_eq!(
                d,
                AfterFailure::RetryAt(at + Duration::seconds(backoff)),
                "{after}"
            );
        }
        assert_eq!(st.failures, 6);
        assert_eq!(st.failing_since, Some(now));
        let at = now + pause_after;
        match s.after_failure(&mut st, at, "503", max, pause_after, false) {
            AfterFailure::Pause { reason, retry_at } => {
                assert_eq!(reason, format!("failing since {now}: 503"));
                assert_eq!(retry_at, at + max);
            }
            other => panic!("expected a pause, got {other:?}"),
        }
        // An export already paused is not paused again.
        let d = s.after_failure(&mut st, at, "503", max, pause_after, true);
        assert_eq!(d, AfterFailure::RetryAt(at + max));
        assert!(!s.should_run(&st, false, at, false), "backing off");
        assert!(s.should_run(&st, true, at, true), "a manual run ignores it");
        resumed(&mut st);
        assert!(s.should_run(&st, false, at, false));
        after_success(&mut st);
        assert_eq!((st.failures, st.failing_since), (0, None));
    }

    #[test]
    fn lag_and_next_window() {
        let s = events();
        let st = at("10:15:00");
        assert_eq!(s.lag_seconds(&st, t("10:45:02")), 1800);
        assert_eq!(s.lag_seconds(&st, t("10:00:00")), 0);
        assert_eq!(s.next_window(&st), w("10:15:00", "10:30:00"));
    }

    #[test]
    fn backfills_align_outward_and_are_bounded() {
        let i = Interval::FifteenMinutes;
        let got = backfill_windows(i, t("10:05:00"), t("10:20:00")).expect("windows");
        assert_eq!(
            got,
            vec![w("10:00:00", "10:15:00"), w("10:15:00", "10:30:00")]
        );
        assert_eq!(
            backfill_windows(i, t("10:05:00"), t("10:05:00")),
            Err("to: must be after from".into())
        );
        let far = t("10:00:00") + Duration::days(200);
        assert_eq!(
            backfill_windows(i, t("10:00:00"), far),
            Err("to: at most 10000 windows of 15m per backfill".into())
        );
    }
}
