//! Runs the SQL jobs: incremental runs that follow `events` (or `profile_changes`) from
//! each job's cursor and append partial rows to its pending table, full rebuilds that
//! replace the published table, and publish passes ([`super::publish`]).
//!
//! A job's cursor is the Delta `txn` (app id [`Job::app_id`], version = the last source
//! version it covers) committed in the same Delta commit as the pending rows it wrote, so
//! a crash at any point either keeps both or neither: nothing is counted twice or lost.
//! A rebuild commits its rows to the published table instead, whose mark
//! ([`Job::publish_app_id`]) is then the source version it covered: the cursor is the
//! greater of both. Runs and rebuilds take turns under lease [`LEASE`], so a run never
//! straddles a rebuild.

use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use datafusion::prelude::SessionContext;
use deltalake::DeltaTable;
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;
use indicatif::ProgressBar;
use serde::{Deserialize, Serialize};

use super::defs::{self, Job, RUN_COLUMN, Source};
use super::inputs::{self, Params};
use super::plan::{self, PlanError};
use super::publish::{self, PublishReport};
use crate::storage::lease::Leases;
use crate::storage::{Store, events_table};
use crate::{Error, Result};

/// The lease incremental runs and rebuilds take turns with.
pub const LEASE: &str = "jobs";

/// How often a process waiting for [`LEASE`] or [`publish::LEASE`] tries again.
const LEASE_POLL: Duration = Duration::from_millis(100);

/// Settings of the job runner.
#[derive(Debug, Clone)]
pub struct JobOptions {
    pub clock_skew_tolerance: Duration,
    pub dedup_window: Duration,
    /// Publish the pending rows at most this long after a run wrote them (`jobs.publish_interval`).
    pub publish_interval: Duration,
    /// At most this many `events` versions per run (bounds one run's memory).
    pub max_versions_per_run: i64,
    /// DataFusion partitions (`None`: one per core).
    pub target_partitions: Option<usize>,
    /// Evaluate the segments after a pass that changed profiles (the job loop).
    pub evaluate_segments: bool,
    /// The ttl of the lease segment runs take turns with (`lease_ttl`).
    pub lease_ttl: Duration,
    /// Where the job SQL runs (`--engine`; embedded by default).
    pub engine: crate::ballista::Engine,
    /// A step on a cluster engine that takes longer fails the run (`jobs.engine_timeout`).
    pub engine_timeout: Duration,
}

impl JobOptions {
    /// The runner's settings in `config`.
    pub fn from_config(config: &crate::config::Config) -> JobOptions {
        JobOptions {
            clock_skew_tolerance: config.jobs.clock_skew_tolerance,
            dedup_window: config.dedup_window,
            publish_interval: config.jobs.publish_interval,
            evaluate_segments: !config.segments.interval.is_zero(),
            lease_ttl: config.lease_ttl,
            engine_timeout: config.jobs.engine_timeout,
            ..Default::default()
        }
    }
}

impl Default for JobOptions {
    fn default() -> Self {
        JobOptions {
            clock_skew_tolerance: Duration::from_secs(300),
            dedup_window: Duration::from_secs(3600),
            publish_interval: Duration::from_secs(30),
            max_versions_per_run: 500,
            target_partitions: None,
            evaluate_segments: true,
            lease_ttl: Duration::from_secs(15),
            engine: crate::ballista::Engine::Embedded,
            engine_timeout: Duration::from_secs(3600),
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
    pub seconds: f64,
    /// Unix milliseconds at the end of the run.
    pub finished_at_ms: i64,
}

impl RunReport {
    /// One line: what the run covered, read and wrote.
    pub fn summary(&self) -> String {
        format!(
            "{} of versions {}..={}: {} row(s) read, {} row(s) written in {:.2} s",
            self.kind,
            self.from_version,
            self.to_version,
            self.events_read,
            self.rows_written,
            self.seconds,
        )
    }
}

/// The job runner of one store.
#[derive(Clone)]
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

    /// A session for the job SQL, on the configured engine.
    fn session(&self) -> Result<SessionContext> {
        self.session_on(&self.opts.engine)
    }

    fn session_on(&self, engine: &crate::ballista::Engine) -> Result<SessionContext> {
        let ctx = inputs::session_on(
            self.opts.target_partitions,
            engine,
            self.opts.engine_timeout,
        )?;
        inputs::register_params(&ctx, self.params())?;
        Ok(ctx)
    }

    fn leases(&self) -> Leases {
        Leases::new(&self.store, self.opts.lease_ttl)
    }

    /// The cursor of `job`: the last source version it covers (`None`: never ran). The
    /// greater of the pending table's `txn` and the published table's mark (a rebuild
    /// moves only the latter); an old-layout published table counts as never ran.
    pub async fn cursor(&self, job: Job) -> Result<Option<i64>> {
        let pending = match self.store.load_table(job.pending()).await? {
            None => None,
            Some(t) => events_table::committed_version(&t, job.app_id()).await?,
        };
        let published = self.store.load_table(job.table()).await?;
        let published = match publish::published_state(published.as_ref(), job).await? {
            publish::Published::Current { through } => through,
            publish::Published::Missing | publish::Published::OldLayout => return Ok(None),
        };
        Ok(pending.max(published))
    }

    /// One incremental run of every job: reads the commits of each job's source table
    /// (`events` or `profile_changes`) after its cursor (jobs at the same cursor share the
    /// read) and appends partial rows to the pending tables. A job that never ran is
    /// rebuilt instead. Returns a report per job that did work.
    pub async fn run_once(&self) -> Result<Vec<RunReport>> {
        self.leases()
            .exclusive(LEASE, LEASE_POLL, self.run_once_held())
            .await
    }

    async fn run_once_held(&self) -> Result<Vec<RunReport>> {
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
                let aliases = self.store.load_table(crate::users::aliases::TABLE).await?;
                inputs::register_new_events(ctx, snapshot, adds, aliases.as_ref()).await?;
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
                let table = self.pending_table(job).await?;
                append_pending(table, job, Vec::new(), plan.to_version).await?;
                reports.push(self.report(job, "incremental", &plan, 0, 0, started));
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
            let table = self.pending_table(job).await?;
            append_pending(table, job, rows, plan.to_version).await?;
            reports.push(self.report(job, "incremental", &plan, counted, written, started));
        }
        Ok(reports)
    }

    fn report(
        &self,
        job: Job,
        kind: &str,
        plan: &plan::RunPlan,
        events_read: usize,
        rows_written: usize,
        started: Instant,
    ) -> RunReport {
        RunReport {
            job: job.table().into(),
            kind: kind.into(),
            from_version: plan.from_version,
            to_version: plan.to_version,
            events_read,
            rows_written,
            seconds: started.elapsed().as_secs_f64(),
            finished_at_ms: chrono::Utc::now().timestamp_millis(),
        }
    }

    /// Recomputes every job from all of its source table and replaces the published
    /// tables (pending rows are then dropped).
    pub async fn rebuild(&self, progress: Option<&ProgressBar>) -> Result<Vec<RunReport>> {
        self.leases()
            .exclusive(LEASE, LEASE_POLL, self.rebuild_held(progress))
            .await
    }

    async fn rebuild_held(&self, progress: Option<&ProgressBar>) -> Result<Vec<RunReport>> {
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

    /// Rebuilds `jobs` (the caller holds [`LEASE`]; this takes [`publish::LEASE`]).
    async fn rebuild_jobs(
        &self,
        source_table: &DeltaTable,
        jobs: &[Job],
        progress: Option<&ProgressBar>,
    ) -> Result<Vec<RunReport>> {
        self.leases()
            .exclusive(
                publish::LEASE,
                LEASE_POLL,
                self.rebuild_jobs_held(source_table, jobs, progress),
            )
            .await
    }

    async fn rebuild_jobs_held(
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
            let rows = publish::with_buckets(&ctx, job, ctx.sql(job.sql()).await?).await?;
            let written = rows.iter().map(RecordBatch::num_rows).sum();
            tracing::debug!(
                seconds = started.elapsed().as_secs_f64(),
                job = job.table(),
                "rebuild: aggregated"
            );
            step(format!("writing {written} rows of {}", job.table()));
            let table = publish::published_table(&self.store, job).await?;
            // Written in the background while the next job aggregates: Parquet encoding
            // and the next aggregation overlap.
            writes.push((
                job,
                written,
                tokio::spawn(publish::replace_all(table, job, rows, head)),
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
            // The published table now holds every run up to `head`.
            if let Some(pending) = self.store.load_table(job.pending()).await? {
                publish::drop_published_runs(pending, head).await?;
            }
            reports.push(RunReport {
                job: job.table().into(),
                kind: "rebuild".into(),
                from_version: 0,
                to_version: head,
                events_read: counted,
                rows_written: written,
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

    /// Folds the pending rows of every job into its published table (one pass, under
    /// [`publish::LEASE`]); a report per job that had rows to fold.
    pub async fn publish(&self) -> Result<Vec<PublishReport>> {
        self.leases()
            .exclusive(publish::LEASE, LEASE_POLL, async {
                // Folding reads the Delta tables of pending and published rows, a pass
                // bounded by the buckets touched: it stays in this process.
                let ctx = self.session_on(&crate::ballista::Engine::Embedded)?;
                let mut reports = Vec::new();
                for job in defs::ALL {
                    if let Some(r) = publish::publish_job(&self.store, &ctx, job).await? {
                        reports.push(r);
                    }
                }
                Ok(reports)
            })
            .await
    }

    /// The pending table of `job`, created (empty) if missing.
    async fn pending_table(&self, job: Job) -> Result<DeltaTable> {
        self.store
            .load_or_create_table(&crate::storage::TableSpec {
                name: job.pending(),
                schema: job.pending_schema().as_ref(),
                partition_columns: &defs::PENDING_PARTITIONS,
                stats_columns: job.stats_columns(),
                comment: None,
            })
            .await
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
    crate::ballista::collect(ctx, ctx.sql(job.sql()).await?)
        .await?
        .iter()
        .filter(|b| b.num_rows() > 0)
        .map(|b| defs::conform(b, &schema))
        .collect()
}

/// `batch` (the job's columns) with the [`RUN_COLUMN`] `run`.
fn with_run(batch: &RecordBatch, job: Job, run: i64) -> Result<RecordBatch> {
    let mut columns = batch.columns().to_vec();
    columns.push(std::sync::Arc::new(arrow::array::Int64Array::from(vec![
        run;
        batch.num_rows()
    ])));
    Ok(RecordBatch::try_new(job.pending_schema(), columns)?)
}

/// Appends `rows` to `job`'s pending table as run `cursor`, in one commit that also moves
/// the cursor to `cursor`.
async fn append_pending(
    table: DeltaTable,
    job: Job,
    rows: Vec<RecordBatch>,
    cursor: i64,
) -> Result<DeltaTable> {
    let commit = CommitProperties::default()
        .with_application_transaction(Transaction::new(job.app_id(), cursor));
    let mut rows = rows
        .iter()
        .map(|b| with_run(b, job, cursor))
        .collect::<Result<Vec<_>>>()?;
    // deltalake refuses a write without batches; an empty batch still commits the cursor.
    if rows.is_empty() {
        rows.push(RecordBatch::new_empty(job.pending_schema()));
    }
    debug_assert!(rows.iter().all(|b| b.schema().index_of(RUN_COLUMN).is_ok()));
    Ok(table
        .write(rows)
        .with_save_mode(SaveMode::Append)
        .with_partition_columns(defs::PENDING_PARTITIONS)
        .with_writer_properties(events_table::writer_properties(3))
        .with_commit_properties(commit)
        .await?)
}
