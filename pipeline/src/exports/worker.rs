//! The export worker, a thin shell over [`super::schedule`]: each pass, for every export
//! that is enabled and not backing off, it reads the state and the `events` commits since
//! the last pass, asks the schedule which windows are due, runs them and writes each
//! window's transition. Runs in `tidemark serve` and `tidemark sinks run`;
//! `tidemark exports run|backfill` use the same [`Runner`].

use chrono::{DateTime, Utc};
use datafusion::prelude::SessionContext;
use deltalake::kernel::Action;
use deltalake::logstore::get_actions;
use tokio::sync::watch;

use super::Context;
use super::def::{Export, Exports};
use super::run::{FileOptions, WindowReport, run_window};
use super::schedule::{self, AfterFailure, Schedule};
use super::source::SourceKind;
use super::state::{self, ExportState};
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

fn chrono_duration(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// The schedule settings of `export` under `ctx`.
pub fn schedule_of(ctx: &Context, export: &Export) -> Schedule {
    Schedule {
        interval: export.interval,
        start: export.start,
        snapshot: export.source.is_snapshot(),
        close_delay: ctx.close_delay(),
        limit: ctx.config.max_windows_per_pass,
    }
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

    async fn head(&self) -> Result<i64> {
        Follower::new(self.store.clone())?.head(-1).await
    }

    /// Runs `windows` in order, writing each one's transition
    /// ([`Schedule::after_window`]); stops at the first failure.
    pub async fn run_windows(
        &self,
        environment: &str,
        export: &Export,
        windows: &[Window],
        skip_to: bool,
        mut on_done: impl FnMut(&WindowReport),
    ) -> Result<Vec<WindowReport>> {
        let mut out = Vec::new();
        if windows.is_empty() {
            return Ok(out);
        }
        let sched = schedule_of(&self.ctx, export);
        let dest = export.destination(&self.ctx)?;
        let options = self.file_options();
        let version = self.head().await?;
        let session: SessionContext = crate::query::session(&self.store, Some(environment)).await?;
        super::run::tune(&session);
        for &w in windows {
            let report =
                run_window(&session, environment, export, w, &dest, &options, version).await?;
            let (rows, files, at) = (report.rows, report.files.len(), Utc::now());
            state::update(&self.store, environment, &export.id, |st| {
                sched.after_window(st, w, rows, files, at, skip_to)
            })
            .await?;
            on_done(&report);
            out.push(report);
        }
        Ok(out)
    }

    /// The windows due at `now` from state `st`, after accounting for the `events` commits
    /// since the last pass ([`Schedule::note_commits`]).
    async fn due(
        &self,
        environment: &str,
        export: &Export,
        sched: &Schedule,
        mut st: ExportState,
        now: DateTime<Utc>,
    ) -> Result<Vec<Window>> {
        if export.source == SourceKind::Events {
            let head = self.head().await?;
            let earliest = match sched.late_rows_after(&st, head) {
                Some(seen) => earliest_appended(&self.store, seen, head).await?,
                None => None,
            };
            let mut next = st.clone();
            sched.note_commits(&mut next, head, earliest);
            if next != st {
                if let Some(from) = next.redo_from.filter(|f| st.redo_from != Some(*f)) {
                    tracing::info!(export = %export.id, from = %from, "exports: late rows; re-exporting");
                }
                st = state::update(&self.store, environment, &export.id, |s| {
                    sched.note_commits(s, head, earliest)
                })
                .await?;
            }
        }
        Ok(sched.due(&st, now))
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
        self.run_windows(environment, export, windows, false, on_done)
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
        let sched = schedule_of(&self.ctx, export);
        let st = state::load(&self.store, environment, &export.id).await?;
        if !sched.should_run(&st, export.paused, now, force) {
            return Ok(report);
        }
        // Window transitions leave the failure fields alone: `st` tells whether this good
        // pass ends a run of failures.
        let was_failing = st.failures > 0 || st.next_attempt_at.is_some();
        let result = match self.due(environment, export, &sched, st, now).await {
            Ok(windows) => {
                self.run_windows(environment, export, &windows, sched.snapshot, |_| {})
                    .await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(windows) => {
                if was_failing {
                    state::update(
                        &self.store,
                        environment,
                        &export.id,
                        schedule::after_success,
                    )
                    .await?;
                }
                report.windows = windows;
            }
            Err(e) => {
                let message = e.to_string();
                tracing::warn!(export = %export.id, error = %message, "exports: run failed");
                report.paused = self
                    .failed(environment, export, &sched, now, &message)
                    .await?;
                report.error = Some(message);
            }
        }
        Ok(report)
    }

    /// Writes a failed pass's transition; pauses the export when the schedule says so.
    async fn failed(
        &self,
        environment: &str,
        export: &Export,
        sched: &Schedule,
        now: DateTime<Utc>,
        message: &str,
    ) -> Result<bool> {
        let config = &self.ctx.config;
        let (max_backoff, pause_after) = (
            chrono_duration(config.max_backoff),
            chrono_duration(config.pause_after),
        );
        let mut decision = None;
        state::update(&self.store, environment, &export.id, |st| {
            decision = Some(sched.after_failure(
                st,
                now,
                message,
                max_backoff,
                pause_after,
                export.paused,
            ));
        })
        .await?;
        let Some(AfterFailure::Pause { reason, .. }) = decision else {
            return Ok(false);
        };
        Exports::new(self.store.clone())
            .set_paused(environment, &export.id, true, Some(&reason))
            .await?;
        Ok(true)
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

/// Windows `from..to` of `export` (aligned outward), at most
/// [`schedule::MAX_BACKFILL_WINDOWS`].
pub fn backfill_windows(
    export: &Export,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<Window>> {
    schedule::backfill_windows(export.interval, from, to).map_err(Error::Invalid)
}

/// What `exports status` shows: the last good window and its files (names are fixed by
/// the window), the lag behind the newest closed window, errors and backoff.
pub async fn status(
    store: &Store,
    ctx: &Context,
    environment: &str,
    export: &Export,
    now: DateTime<Utc>,
) -> Result<serde_json::Value> {
    let st: ExportState = state::load(store, environment, &export.id).await?;
    let sched = schedule_of(ctx, export);
    let next_window = sched.next_window(&st);
    let last_files: Vec<String> = st
        .last_good
        .as_ref()
        .map(|d| {
            (0..d.files)
                .map(|n| super::run::file_name(export, d.window, n))
                .collect()
        })
        .unwrap_or_default();
    Ok(serde_json::json!({
        "id": export.id,
        "source": export.source.name(),
        "enabled": !export.paused,
        "paused_reason": export.paused_reason,
        "last_good_window": st.last_good,
        "last_files": last_files,
        "exported_until": st.next_start,
        "next_window": {
            "start": next_window.start,
            "end": next_window.end,
            "closes_at": sched.closes_at(next_window),
        },
        "lag_seconds": sched.lag_seconds(&st, now),
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
