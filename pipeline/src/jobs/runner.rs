//! Runs the SQL jobs: incremental runs that follow `events` from each job's cursor,
//! full rebuilds, and compaction of the partial rows.
//!
//! A job's cursor is the Delta `txn` (app id [`Job::app_id`], version = the last `events`
//! version it covers) committed in the same Delta commit as the rows it wrote, so a crash
//! at any point either keeps both or neither: nothing is counted twice or lost.

use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use deltalake::kernel::StructType;
use deltalake::kernel::Transaction;
use deltalake::kernel::engine::arrow_conversion::TryFromArrow;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use super::defs::{self, Job, Source};
use super::inputs::{self, Params};
use super::plan::{self, PlanError};
use crate::storage::{Store, events_table};
use crate::{Error, Result};

/// Settings of the job runner.
#[derive(Debug, Clone)]
pub struct JobOptions {
    pub clock_skew_tolerance: Duration,
    pub dedup_window: Duration,
    /// Compact a derived table once it has more files than this.
    pub compact_files: usize,
    /// At most this many `events` versions per run (bounds one run's memory).
    pub max_versions_per_run: i64,
    /// DataFusion partitions (`None`: one per core).
    pub target_partitions: Option<usize>,
    /// Evaluate the segments after a pass that changed profiles (the job loop).
    pub evaluate_segments: bool,
    /// The ttl of the lease segment runs take turns with (`lease_ttl`).
    pub lease_ttl: Duration,
}

impl JobOptions {
    /// The runner's settings in `config`.
    pub fn from_config(config: &crate::config::Config) -> JobOptions {
        JobOptions {
            clock_skew_tolerance: config.jobs.clock_skew_tolerance,
            dedup_window: config.dedup_window,
            compact_files: config.jobs.compact_files,
            evaluate_segments: !config.segments.interval.is_zero(),
            lease_ttl: config.lease_ttl,
            ..Default::default()
        }
    }
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            clock_skew_tolerance: Duration::from_secs(300),
            dedup_window: Duration::from_secs(3600),
            compact_files: 64,
            max_versions_per_run: 500,
            target_partitions: None,
            evaluate_segments: true,
            lease_ttl: Duration::from_secs(15),
        }
    }
}

/// What one run of one job did.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunReport {
    pub job: String,
    /// `incremental` or `rebuild`.
    pub kind: String,
    /// The first and last `events` versions covered (the last is the new cursor).
    pub from_version: i64,
    pub to_version: i64,
    /// Events read and counted (after dedup), rows written to the derived table.
    pub events_read: usize,
    pub rows_written: usize,
    pub compacted: bool,
    pub seconds: f64,
    /// Unix milliseconds at the end of the run.
    pub finished_at_ms: i64,
}

impl RunReport {
    /// One line: what the run covered, read and wrote.
    pub fn summary(&self) -> String {
        format!(
            "{} of versions {}..={}: {} row(s) read, {} row(s) written in {:.2} s{}",
            self.kind,
            self.from_version,
            self.to_version,
            self.events_read,
            self.rows_written,
            self.seconds,
            // A rebuild always writes one row per key; say so only for incremental runs.
            if self.compacted && self.kind != "rebuild" {
                ", compacted"
            } else {
                ""
            }
        )
    }
}

/// The job runner of one store.
pub struct Runner {
    store: Store,
    opts: JobOptions,
}

fn micros(d: Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl Runner {
    pub fn new(store: Store, opts: JobOptions) -> Runner {
        Runner { store, opts }
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn options(&self) -> &JobOptions {
        &self.opts
    }

    fn params(&self) -> Params {
        Params {
            clock_skew_tolerance_us: micros(self.opts.clock_skew_tolerance),
            dedup_window_us: micros(self.opts.dedup_window),
        }
    }

    fn session(&self) -> Result<SessionContext> {
        let ctx = inputs::session(self.opts.target_partitions)?;
        inputs::register_params(&ctx, self.params())?;
        Ok(ctx)
    }

    /// The cursor of `job`: the last `events` version it covers (`None`: never ran).
    pub async fn cursor(&self, job: Job) -> Result<Option<i64>> {
        match self.store.load_table(job.table()).await? {
            None => Ok(None),
            Some(t) => events_table::committed_version(&t, job.app_id()).await,
        }
    }

    /// One incremental run of every job: reads the commits of each job's source table
    /// (`events` or `profile_changes`) after its cursor (jobs at the same cursor share the
    /// read) and appends partial rows. A job that never ran is rebuilt instead. Returns a
    /// report per job that did work.
    pub async fn run_once(&self) -> Result<Vec<RunReport>> {
        let mut reports = Vec::new();
        for source in defs::SOURCES {
            let Some(table) = self.store.load_table(source.table()).await? else {
                continue;
            };
            let head = inputs::head_version(&table);
            let mut pending: Vec<(i64, Job)> = Vec::new();
            for job in Job::of(source) {
                match self.cursor(job).await? {
                    None => reports.extend(self.rebuild_jobs(&table, &[job], None).await?),
                    Some(c) if c < head => pending.push((c, job)),
                    Some(_) => {}
                }
            }
            pending.sort_by_key(|(c, _)| *c);
            let mut i = 0;
            while i < pending.len() {
                let cursor = pending[i].0;
                let jobs: Vec<Job> = pending[i..]
                    .iter()
                    .take_while(|(c, _)| *c == cursor)
                    .map(|(_, j)| *j)
                    .collect();
                i += jobs.len();
                reports.extend(self.incremental(&table, cursor, head, &jobs).await?);
            }
        }
        for r in &reports {
            self.save_report(r).await;
        }
        Ok(reports)
    }

    /// Registers the inputs of `source`'s jobs for the rows of `adds` of `snapshot` (all
    /// rows when `None`); `prior` is the source at the cursor (dedup of events). Returns
    /// the rows the jobs read (counted events, or changes).
    async fn register_inputs(
        &self,
        ctx: &SessionContext,
        source: Source,
        snapshot: &DeltaTable,
        adds: Option<Vec<deltalake::kernel::Add>>,
        prior: Option<&DeltaTable>,
    ) -> Result<usize> {
        match source {
            Source::Events => {
                inputs::register_new_events(ctx, snapshot, adds).await?;
                inputs::register_prior_events(ctx, prior, self.params().dedup_window_us).await?;
                inputs::register_counted_events(ctx).await
            }
            Source::ProfileChanges => inputs::register_new_changes(ctx, snapshot, adds).await,
        }
    }

    async fn incremental(
        &self,
        source_table: &DeltaTable,
        cursor: i64,
        head: i64,
        jobs: &[Job],
    ) -> Result<Vec<RunReport>> {
        let started = Instant::now();
        let source = jobs.first().map_or(Source::Events, |j| j.source());
        let to = head.min(cursor + self.opts.max_versions_per_run);
        let commits = inputs::read_commits(source_table, cursor + 1, to).await?;
        let plan = match plan::plan(cursor, &commits) {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(Vec::new()),
            Err(PlanError::NeedsRebuild { version, operation }) => {
                return Err(Error::Invalid(format!(
                    "{} version {version} ({operation}) removed rows the jobs already counted; run `tidemark jobs rebuild`",
                    source.table()
                )));
            }
        };
        if plan.adds.is_empty() {
            // Only rewrites (OPTIMIZE) or skipped deletes since the cursor: nothing to
            // count, but move the cursor past them so the lag reads 0.
            let mut reports = Vec::new();
            for &job in jobs {
                let table = self.derived_table(job).await?;
                write(table, job, Vec::new(), plan.to_version, SaveMode::Append).await?;
                reports.push(self.report(job, "incremental", &plan, 0, 0, false, started));
            }
            return Ok(reports);
        }
        let ctx = self.session()?;
        let snapshot = inputs::events_at(source_table, plan.to_version).await?;
        let prior = if cursor >= 0 && source == Source::Events {
            Some(inputs::events_at(source_table, cursor).await?)
        } else {
            None
        };
        let counted = self
            .register_inputs(
                &ctx,
                source,
                &snapshot,
                Some(plan.adds.clone()),
                prior.as_ref(),
            )
            .await?;
        let mut reports = Vec::new();
        for &job in jobs {
            let rows = job_rows(&ctx, job).await?;
            let written = rows.iter().map(RecordBatch::num_rows).sum();
            let table = self.derived_table(job).await?;
            let table = write(table, job, rows, plan.to_version, SaveMode::Append).await?;
            let compacted = self.compact_if_needed(table, job, plan.to_version).await?;
            reports.push(self.report(
                job,
                "incremental",
                &plan,
                counted,
                written,
                compacted,
                started,
            ));
        }
        Ok(reports)
    }

    #[allow(clippy::too_many_arguments)]
    fn report(
        &self,
        job: Job,
        kind: &str,
        plan: &plan::RunPlan,
        events_read: usize,
        rows_written: usize,
        compacted: bool,
        started: Instant,
    ) -> RunReport {
        RunReport {
            job: job.table().into(),
            kind: kind.into(),
            from_version: plan.from_version,
            to_version: plan.to_version,
            events_read,
            rows_written,
            compacted,
            seconds: started.elapsed().as_secs_f64(),
            finished_at_ms: chrono::Utc::now().timestamp_millis(),
        }
    }

    /// Recomputes every job from all of its source table and replaces the derived tables.
    pub async fn rebuild(&self, progress: Option<&ProgressBar>) -> Result<Vec<RunReport>> {
        let mut reports = Vec::new();
        for source in defs::SOURCES {
            let Some(table) = self.store.load_table(source.table()).await? else {
                continue;
            };
            reports.extend(
                self.rebuild_jobs(&table, &Job::of(source), progress)
                    .await?,
            );
        }
        for r in &reports {
            self.save_report(r).await;
        }
        Ok(reports)
    }

    async fn rebuild_jobs(
        &self,
        source_table: &DeltaTable,
        jobs: &[Job],
        progress: Option<&ProgressBar>,
    ) -> Result<Vec<RunReport>> {
        let started = Instant::now();
        let head = inputs::head_version(source_table);
        let source = jobs.first().map_or(Source::Events, |j| j.source());
        let step = |msg: String| {
            if let Some(p) = progress {
                p.set_message(msg);
                p.inc(1);
            }
        };
        let ctx = self.session()?;
        step(format!("reading {} (version {head})", source.table()));
        let counted = self
            .register_inputs(&ctx, source, source_table, None, None)
            .await?;
        tracing::debug!(
            seconds = started.elapsed().as_secs_f64(),
            counted,
            "rebuild: inputs read"
        );
        let mut reports = Vec::new();
        let mut writes = Vec::new();
        for &job in jobs {
            step(format!("computing {} from {counted} rows", job.table()));
            let rows = job_rows(&ctx, job).await?;
            let written = rows.iter().map(RecordBatch::num_rows).sum();
            tracing::debug!(
                seconds = started.elapsed().as_secs_f64(),
                job = job.table(),
                "rebuild: aggregated"
            );
            step(format!("writing {written} rows of {}", job.table()));
            let table = self.derived_table(job).await?;
            // Written in the background while the next job aggregates: Parquet encoding
            // and the next aggregation overlap.
            writes.push((
                job,
                written,
                tokio::spawn(write(table, job, rows, head, SaveMode::Overwrite)),
            ));
        }
        for (job, written, task) in writes {
            task.await
                .map_err(|e| Error::Unavailable(format!("writing {}: {e}", job.table())))??;
            tracing::debug!(
                seconds = started.elapsed().as_secs_f64(),
                job = job.table(),
                "rebuild: written"
            );
            reports.push(RunReport {
                job: job.table().into(),
                kind: "rebuild".into(),
                from_version: 0,
                to_version: head,
                events_read: counted,
                rows_written: written,
                compacted: true,
                seconds: started.elapsed().as_secs_f64(),
                finished_at_ms: chrono::Utc::now().timestamp_millis(),
            });
        }
        Ok(reports)
    }

    /// Steps a rebuild reports to a progress bar.
    pub fn rebuild_steps() -> u64 {
        (defs::SOURCES.len() + 2 * defs::ALL.len()) as u64
    }

    /// Rewrites `job`'s table as one row per key when it has too many files.
    async fn compact_if_needed(&self, table: DeltaTable, job: Job, cursor: i64) -> Result<bool> {
        let files = table.snapshot()?.log_data().num_files();
        if files <= self.opts.compact_files {
            return Ok(false);
        }
        self.compact(table, job, cursor).await?;
        Ok(true)
    }

    /// Rewrites `job`'s table with its merge SQL (same rows as readers see). The runner
    /// serializes this with its own appends; the `txn` keeps the cursor where it was.
    pub async fn compact(&self, table: DeltaTable, job: Job, cursor: i64) -> Result<DeltaTable> {
        let ctx = self.session()?;
        table.update_datafusion_session(&ctx.state())?;
        ctx.register_table(job.parts(), table.table_provider().await?)?;
        let merged = ctx.sql(job.merge_sql()).await?.collect().await?;
        write(table, job, merged, cursor, SaveMode::Overwrite).await
    }

    /// The derived table of `job`, created (empty) if missing.
    async fn derived_table(&self, job: Job) -> Result<DeltaTable> {
        if let Some(t) = self.store.load_table(job.table()).await? {
            return Ok(t);
        }
        let columns = StructType::try_from_arrow(job.schema().as_ref())?;
        self.store
            .delta_table(job.table())?
            .create()
            .with_table_name(job.table())
            .with_columns(columns.fields().cloned())
            .with_partition_columns(defs::PARTITION_COLUMNS)
            .with_configuration_property(
                deltalake::TableProperty::DataSkippingStatsColumns,
                Some(job.stats_columns()),
            )
            .with_save_mode(SaveMode::Ignore)
            .await?;
        self.store
            .load_table(job.table())
            .await?
            .ok_or_else(|| Error::NotFound(format!("{} vanished after create", job.table())))
    }

    async fn save_report(&self, report: &RunReport) {
        let path = self.store.paths().job_state(&report.job);
        let body = match serde_json::to_vec_pretty(report) {
            Ok(b) => b,
            Err(_) => return,
        };
        // Informational only (the cursor is the table's txn): a failed write is logged.
        if let Err(e) = object_store::ObjectStoreExt::put(
            self.store.object_store().as_ref(),
            &path,
            body.into(),
        )
        .await
        {
            tracing::warn!(error = %e, job = %report.job, "cannot save job status");
        }
    }

    /// The last saved report of `job`.
    pub async fn last_report(&self, job: Job) -> Result<Option<RunReport>> {
        let path = self.store.paths().job_state(job.table());
        match object_store::ObjectStoreExt::get(self.store.object_store().as_ref(), &path).await {
            Ok(got) => Ok(Some(serde_json::from_slice(&got.bytes().await?)?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

async fn job_rows(ctx: &SessionContext, job: Job) -> Result<Vec<RecordBatch>> {
    let schema = job.schema();
    ctx.sql(job.sql())
        .await?
        .collect()
        .await?
        .iter()
        .filter(|b| b.num_rows() > 0)
        .map(|b| defs::conform(b, &schema))
        .collect()
}

/// Writes `rows` to `job`'s table in one commit that also moves the cursor to `cursor`.
async fn write(
    table: DeltaTable,
    job: Job,
    rows: Vec<RecordBatch>,
    cursor: i64,
    mode: SaveMode,
) -> Result<DeltaTable> {
    let commit = CommitProperties::default()
        .with_application_transaction(Transaction::new(job.app_id(), cursor));
    // deltalake refuses a write without batches; an empty batch still commits the cursor.
    let rows = if rows.is_empty() {
        vec![RecordBatch::new_empty(job.schema())]
    } else {
        rows
    };
    Ok(table
        .write(rows)
        .with_save_mode(mode)
        .with_partition_columns(defs::PARTITION_COLUMNS)
        .with_writer_properties(events_table::writer_properties(3))
        .with_commit_properties(commit)
        .await?)
}
