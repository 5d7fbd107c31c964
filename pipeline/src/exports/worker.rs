//! The export worker: each pass, for every export that is enabled and not backing off,
//! re-runs the windows that late commits touched, then runs the closed windows in order.
//! A window is closed `flush_interval + grace` after its end. Runs `tidemark serve` and
//! `tidemark sinks run`; `tidemark exports run|backfill` use the same [`Runner`].

use chrono::{DateTime, Utc};
use datafusion::prelude::SessionContext;
use deltalake::kernel::Action;
use deltalake::logstore::get_actions;
use tokio::sync::watch;

use super::Context;
use super::def::{Export, Exports, SourceKind};
use super::run::{FileOptions, WindowReport, run_window};
use super::state::{self, Done, ExportState};
use super::window::Window;
use crate::storage::Store;
use crate::storage::events_table;
use crate::webhooks::follow::Follower;
use crate::{Error, Result};

/// Runs windows of exports.
pub struct Runner {
    pub store: Store,
    pub ctx: Context,
}

/// What one pass did for one export.
#[derive(Debug, Default)]
pub struct PassReport {
    pub windows: Vec<WindowReport>,
    pub error: Option<String>,
    pub paused: bool,
}

/// The smallest `received_at` among rows appended after `after` (commits that only
/// compact or remove rows are skipped), from the `add` actions' statistics.
async fn earliest_appended(store: &Store, after: i64, head: i64) -> Result<Option<DateTime<Utc>>> {
    let log = store.delta_table(events_table::TABLE)?.log_store();
    let mut earliest: Option<DateTime<Utc>> = None;
    for version in after + 1..=head {
        let Some(bytes) = log.read_commit_entry(version as u64).await? else {
            continue;
        };
        let actions = get_actions(version as u64, &bytes)?;
        if actions
            .iter()
            .any(|a| matches!(a, Action::Remove(r) if r.data_change))
        {
            continue;
        }
        for a in actions {
            let Action::Add(add) = a else { continue };
            if !add.data_change {
                continue;
            }
            let min = add
                .stats
                .as_deref()
                .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok())
                .and_then(|v| {
                    v["minValues"][events_table::col::RECEIVED_AT]
                        .as_str()
                        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                        .map(|t| t.to_utc())
                });
            let Some(min) = min else {
                tracing::warn!(version, path = %add.path, "exports: add without received_at stats");
                continue;
            };
            earliest = Some(earliest.map_or(min, |e| e.min(min)));
        }
    }
    Ok(earliest)
}

impl Runner {
    pub fn new(store: Store, ctx: Context) -> Runner {
        Runner { store, ctx }
    }

    fn file_options(&self) -> FileOptions {
        FileOptions {
            max_rows_per_file: self.ctx.config.max_rows_per_file,
            encode: tidemark_sinks::export::EncodeOptions {
                zstd_level: self.ctx.config.zstd_level,
                ..Default::default()
            },
        }
    }

    /// The end of the newest closed window at `now`.
    fn closed_until(&self, now: DateTime<Utc>) -> DateTime<Utc> {
        now - self.ctx.close_delay()
    }

    async fn head(&self) -> Result<i64> {
        Follower::new(self.store.clone())?.head(-1).await
    }

    /// Runs `windows` in order, saving progress after each; stops at the first failure.
    /// `next_start` moves past a window that starts at or before it (a backfill of later
    /// windows leaves the earlier ones to the schedule); `skip_to` (snapshot sources) moves
    /// it regardless.
    pub async fn run_windows(
        &self,
        environment: &str,
        export: &Export,
        windows: &[Window],
        state: &mut ExportState,
        skip_to: bool,
        mut on_done: impl FnMut(&WindowReport),
    ) -> Result<Vec<WindowReport>> {
        let mut out = Vec::new();
        if windows.is_empty() {
            return Ok(out);
        }
        let dest = export.destination(&self.ctx)?;
        let options = self.file_options();
        let version = self.head().await?;
        let session: SessionContext = crate::query::session(&self.store, Some(environment)).await?;
        super::run::tune(&session);
        for &w in windows {
            let report =
                run_window(&session, environment, export, w, &dest, &options, version).await?;
            state.rows_exported += report.rows;
            state.windows_done += 1;
            state.last_good = Some(Done {
                window: w,
                rows: report.rows,
                files: report.files.len(),
                finished_at: Utc::now(),
            });
            let next = state.next_start.unwrap_or(export.start);
            if w.end > next && (skip_to || w.start <= next) {
                state.next_start = Some(w.end);
            }
            if let Some(r) = state.redo_from
                && w.start <= r
                && r < w.end
            {
                state.redo_from = Some(w.end).filter(|e| state.next_start.is_some_and(|n| *e < n));
            }
            state::save(&self.store, environment, &export.id, state).await?;
            on_done(&report);
            out.push(report);
        }
        Ok(out)
    }

    /// The windows due at `now`: re-runs of late-touched windows first, then closed
    /// windows from `next_start` on.
    async fn due(
        &self,
        export: &Export,
        state: &mut ExportState,
        now: DateTime<Utc>,
    ) -> Result<Vec<Window>> {
        let interval = export.interval;
        let limit = self.ctx.config.max_windows_per_pass;
        let closed = self.closed_until(now);
        let next = state.next_start.unwrap_or(export.start);
        if export.source == SourceKind::Events {
            // Every commit up to `head` is accounted for after this: its rows in exported
            // windows by `redo_from`, the rest when their windows close (runs read a
            // version at least as new).
            let head = self.head().await?;
            if let Some(seen) = state.events_version
                && head > seen
                && let Some(min) = earliest_appended(&self.store, seen, head).await?
                && min < next
            {
                let from = interval.floor(min.max(export.start));
                tracing::info!(export = %export.id, from = %from, "exports: late rows; re-exporting");
                state.redo_from = Some(state.redo_from.map_or(from, |r| r.min(from)));
            }
            state.events_version = Some(head);
        }
        let mut windows = match state.redo_from {
            Some(from) => interval.windows(from, next, limit),
            None => Vec::new(),
        };
        let fresh = interval.windows(next, closed, limit - windows.len());
        if export.source.is_snapshot() {
            // One snapshot for everything missed: the newest closed window.
            let last = interval.windows(next, closed, usize::MAX).last().copied();
            windows.extend(last);
        } else {
            windows.extend(fresh);
        }
        Ok(windows)
    }

    /// Runs the due windows of `export` now, even if it is paused or backing off
    /// (`tidemark exports run`).
    pub async fn run_now(
        &self,
        environment: &str,
        export: &Export,
        now: DateTime<Utc>,
    ) -> Result<serde_json::Value> {
        let r = self.pass_one(environment, export, now, true).await?;
        Ok(serde_json::json!({
            "id": export.id,
            "windows": r.windows.iter().map(|w| serde_json::json!({
                "start": w.window.start,
                "end": w.window.end,
                "rows": w.rows,
                "files": w.files.iter().map(|f| f.name.clone()).collect::<Vec<_>>(),
            })).collect::<Vec<_>>(),
            "error": r.error,
            "paused": r.paused,
        }))
    }

    /// Re-exports `windows` (replacing their objects); the schedule's position moves only
    /// across windows it had reached.
    pub async fn backfill(
        &self,
        environment: &str,
        export: &Export,
        windows: &[Window],
        on_done: impl FnMut(&WindowReport),
    ) -> Result<Vec<WindowReport>> {
        let mut st = state::load(&self.store, environment, &export.id).await?;
        self.run_windows(environment, export, windows, &mut st, false, on_done)
            .await
    }

    /// One pass over one export (`force`: even if paused or backing off).
    pub async fn pass_one(
        &self,
        environment: &str,
        export: &Export,
        now: DateTime<Utc>,
        force: bool,
    ) -> Result<PassReport> {
        let mut report = PassReport::default();
        if export.paused && !force {
            return Ok(report);
        }
        let mut st = state::load(&self.store, environment, &export.id).await?;
        if st.next_attempt_at.is_some_and(|t| t > now) && !force {
            return Ok(report);
        }
        let result = match self.due(export, &mut st, now).await {
            Ok(windows) => {
                let skip = export.source.is_snapshot();
                self.run_windows(environment, export, &windows, &mut st, skip, |_| {})
                    .await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(windows) => {
                if st.failures > 0 || st.next_attempt_at.is_some() {
                    st.failures = 0;
                    st.failing_since = None;
                    st.next_attempt_at = None;
                }
                report.windows = windows;
                state::save(&self.store, environment, &export.id, &st).await?;
            }
            Err(e) => {
                let message = e.to_string();
                tracing::warn!(export = %export.id, error = %message, "exports: run failed");
                st.failures += 1;
                let since = *st.failing_since.get_or_insert(now);
                st.last_error = Some(message.clone());
                st.last_error_at = Some(now);
                let backoff = std::time::Duration::from_secs(30)
                    .saturating_mul(1 << st.failures.min(16).saturating_sub(1))
                    .min(self.ctx.config.max_backoff);
                st.next_attempt_at =
                    Some(now + chrono::Duration::from_std(backoff).unwrap_or_default());
                state::save(&self.store, environment, &export.id, &st).await?;
                let pause_after =
                    chrono::Duration::from_std(self.ctx.config.pause_after).unwrap_or_default();
                if now - since >= pause_after && !export.paused {
                    let reason = format!("failing since {since}: {message}");
                    Exports::new(self.store.clone())
                        .set_paused(environment, &export.id, true, Some(&reason))
                        .await?;
                    report.paused = true;
                }
                report.error = Some(message);
            }
        }
        Ok(report)
    }

    /// One pass over every export.
    pub async fn pass(&self, now: DateTime<Utc>) -> Result<usize> {
        let doc = Exports::new(self.store.clone()).all().await?;
        let mut windows = 0;
        for (env, exports) in &doc.environments {
            for export in exports.values() {
                // One export's storage trouble does not hold back the others.
                match self.pass_one(env, export, now, false).await {
                    Ok(r) => windows += r.windows.len(),
                    Err(e) => {
                        tracing::warn!(export = %export.id, error = %e, "exports: pass failed")
                    }
                }
            }
        }
        Ok(windows)
    }
}

/// The worker loop, until `stop`.
pub async fn run(store: Store, ctx: Context, mut stop: watch::Receiver<bool>) -> Result<()> {
    ctx.key()?;
    let poll = ctx.config.poll_interval;
    let runner = Runner::new(store, ctx);
    loop {
        if *stop.borrow() {
            return Ok(());
        }
        if let Err(e) = runner.pass(Utc::now()).await {
            tracing::warn!(error = %e, "exports: pass failed");
        }
        tokio::select! {
            _ = tokio::time::sleep(poll) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Windows `from..to` of `export` (aligned outward), at most 10,000.
pub fn backfill_windows(
    export: &Export,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Window>> {
    let i = export.interval;
    if to <= from {
        return Err(Error::Invalid("to: must be after from".into()));
    }
    let windows = i.windows(i.floor(from), i.ceil(to), 10_001);
    if windows.len() > 10_000 {
        return Err(Error::Invalid(format!(
            "to: at most 10000 windows of {} per backfill",
            i.name()
        )));
    }
    Ok(windows)
}

/// What `exports status` shows: the last good window, the lag behind the newest closed
/// window, errors and backoff.
pub async fn status(
    store: &Store,
    ctx: &Context,
    environment: &str,
    export: &Export,
    now: DateTime<Utc>,
) -> Result<serde_json::Value> {
    let st = state::load(store, environment, &export.id).await?;
    let next = st.next_start.unwrap_or(export.start);
    let next_window = export.interval.window(next);
    let exported_until = st.next_start;
    let lag = (now - ctx.close_delay() - next).num_seconds().max(0);
    Ok(serde_json::json!({
        "id": export.id,
        "source": export.source.name(),
        "enabled": !export.paused,
        "paused_reason": export.paused_reason,
        "last_good_window": st.last_good,
        "exported_until": exported_until,
        "next_window": {
            "start": next_window.start,
            "end": next_window.end,
            "closes_at": next_window.end + ctx.close_delay(),
        },
        "lag_seconds": lag,
        "windows_done": st.windows_done,
        "rows_exported": st.rows_exported,
        "redo_from": st.redo_from,
        "failures": st.failures,
        "failing_since": st.failing_since,
        "last_error": st.last_error,
        "last_error_at": st.last_error_at,
        "next_attempt_at": st.next_attempt_at,
    }))
}
