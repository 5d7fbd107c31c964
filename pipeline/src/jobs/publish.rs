//! Publishing: folding the pending partial rows into the published tables, so that every
//! Delta version of `profiles`, `event_stats` and `profile_attributes` holds exactly one
//! row per key with its final values, for readers that know nothing of tidemark.
//!
//! The incremental runs append partial rows to each job's pending table
//! ([`Job::pending`], below `_tidemark/`), tagged with their run (the source version the run
//! covered up to, [`RUN_COLUMN`]). A publish pass reads the pending runs after the published
//! table's mark (its `txn` [`Job::publish_app_id`]: the last run it holds), finds the
//! (environment, user bucket) partitions their keys fall in, merges those partitions'
//! published rows with the pending rows by the job's merge SQL, and replaces exactly those
//! partitions in one Delta commit that also moves the mark. Pending runs at or below the
//! mark are then dropped (a metadata-only delete: the pending table is partitioned by run).
//!
//! tidemark's own readers ([`super::views`]) see the published rows and the pending runs
//! after the mark, read pending first: a pass that commits in between only raises the mark
//! over runs the published table now holds. A crash before the commit leaves the previous
//! version (its written files are orphans that VACUUM removes); a crash after it leaves
//! pending runs at or below the mark, which readers skip and the next pass drops.
//!
//! One pass runs at a time per store (lease [`LEASE`]); a rebuild and an erasure hold it too.

use std::collections::BTreeSet;
use std::time::Instant;

use datafusion::prelude::{Expr, SessionContext, col, ident, lit};
use deltalake::DeltaTable;
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::operations::write::SchemaMode;
use deltalake::protocol::SaveMode;
use serde::{Deserialize, Serialize};

use super::defs::{self, BUCKET_COLUMN, BUCKET_SQL, Job, PUBLISHED_PARTITIONS, RUN_COLUMN};
use crate::storage::{Store, events_table};
use crate::{Error, Result};

/// The lease publish passes, rebuilds and erasures take turns with.
pub const LEASE: &str = "publish";

/// What the published table is, as a pass finds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Published {
    /// No table yet.
    Missing,
    /// A table of an older layout (not partitioned by user bucket): rewritten whole.
    OldLayout,
    /// The current layout, holding every run up to `through` (`None`: none yet).
    Current { through: Option<i64> },
}

/// What one pass does for one job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Nothing pending, nothing to drop.
    Nothing,
    /// Every pending run is published: drop runs `<= through`.
    Drop { through: i64 },
    /// Fold the pending runs in `(after, through]` into the published table, then drop runs
    /// `<= through`. `whole`: rewrite every partition (a new or old-layout table), else only
    /// the partitions the runs touch.
    Fold {
        after: Option<i64>,
        through: i64,
        whole: bool,
    },
}

/// Decides a pass from the published table's state and the runs the pending table holds.
pub fn plan(published: Published, runs: &BTreeSet<i64>) -> Step {
    let newest = runs.last().copied();
    match published {
        Published::Missing | Published::OldLayout => match (published, newest) {
            (Published::Missing, None) => Step::Nothing,
            // An old-layout table is rewritten even with nothing pending; its mark starts at
            // -1, below every run.
            (_, newest) => Step::Fold {
                after: None,
                through: newest.unwrap_or(-1),
                whole: true,
            },
        },
        Published::Current { through } => {
            let after = through.unwrap_or(i64::MIN);
            match newest {
                Some(n) if n > after => Step::Fold {
                    after: through,
                    through: n,
                    whole: false,
                },
                Some(_) => Step::Drop {
                    through: through.unwrap_or(-1),
                },
                None => Step::Nothing,
            }
        }
    }
}

/// What one pass did for one job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct PublishReport {
    pub job: String,
    /// The runs folded in: after `from_run`, up to `to_run` (the new mark).
    pub from_run: Option<i64>,
    pub to_run: i64,
    /// Partitions rewritten (environment, user bucket); `whole`: every one.
    pub partitions: usize,
    pub whole: bool,
    pub pending_rows: usize,
    pub rows_written: usize,
    pub seconds: f64,
}

impl PublishReport {
    pub fn summary(&self) -> String {
        format!(
            "published runs {}..={}: {} pending row(s) into {} partition(s){}, {} row(s) written in {:.2} s",
            self.from_run
                .map_or_else(|| "start".into(), |r| (r + 1).to_string()),
            self.to_run,
            self.pending_rows,
            self.partitions,
            if self.whole { " (whole table)" } else { "" },
            self.rows_written,
            self.seconds
        )
    }
}

/// The published table's state and mark.
pub async fn published_state(table: Option<&DeltaTable>, job: Job) -> Result<Published> {
    let Some(table) = table else {
        return Ok(Published::Missing);
    };
    let snapshot = table.snapshot()?;
    let partitions = snapshot.metadata().partition_columns();
    if !partitions
        .iter()
        .map(String::as_str)
        .eq(PUBLISHED_PARTITIONS)
    {
        return Ok(Published::OldLayout);
    }
    Ok(Published::Current {
        through: events_table::committed_version(table, job.publish_app_id()).await?,
    })
}

/// The runs a pending table holds (from its files' partition values: no data is read).
pub fn pending_runs(pending: Option<&DeltaTable>) -> Result<BTreeSet<i64>> {
    let Some(pending) = pending else {
        return Ok(BTreeSet::new());
    };
    let mut runs = BTreeSet::new();
    for file in pending.snapshot()?.log_data().iter() {
        let run = file
            .partition_values_map()
            .get(RUN_COLUMN)
            .cloned()
            .flatten()
            .and_then(|v| v.parse::<i64>().ok());
        match run {
            Some(r) => {
                runs.insert(r);
            }
            None => {
                return Err(Error::Invalid(format!(
                    "pending file {} has no '{RUN_COLUMN}' partition value",
                    file.path()
                )));
            }
        }
    }
    Ok(runs)
}

/// The job's columns (without bucket or run), for unions of published and pending rows.
pub fn job_columns(job: Job) -> Vec<Expr> {
    job.schema()
        .fields()
        .iter()
        .map(|f| ident(f.name()))
        .collect()
}

/// Rows of a pending table with a run in `(after, through]`.
pub async fn pending_rows(
    ctx: &SessionContext,
    pending: &DeltaTable,
    job: Job,
    after: Option<i64>,
    through: Option<i64>,
) -> Result<datafusion::dataframe::DataFrame> {
    let provider = crate::ballista::provider(ctx, job.pending(), pending).await?;
    let mut df = ctx.read_table(provider)?;
    if let Some(after) = after {
        df = df.filter(col(RUN_COLUMN).gt(lit(after)))?;
    }
    if let Some(through) = through {
        df = df.filter(col(RUN_COLUMN).lt_eq(lit(through)))?;
    }
    Ok(df.select(job_columns(job))?)
}

/// The predicate that names `partitions` of a published table.
fn partitions_predicate(partitions: &[(String, String)]) -> Option<Expr> {
    let mut by_env: std::collections::BTreeMap<&str, Vec<Expr>> = Default::default();
    for (env, bucket) in partitions {
        by_env.entry(env).or_default().push(lit(bucket.as_str()));
    }
    by_env
        .into_iter()
        .map(|(env, buckets)| {
            col("environment")
                .eq(lit(env))
                .and(col(BUCKET_COLUMN).in_list(buckets, false))
        })
        .reduce(Expr::or)
}

/// The distinct (environment, bucket) partitions of the rows of `df` (of `ctx`, whose
/// runtime knows the store).
async fn touched(
    ctx: &SessionContext,
    job: Job,
    df: datafusion::dataframe::DataFrame,
) -> Result<Vec<(String, String)>> {
    let name = format!("{}_new_rows", job.table());
    ctx.register_table(name.as_str(), df.into_view())?;
    let sql = format!(
        "SELECT DISTINCT CAST(environment AS VARCHAR), {BUCKET_SQL} FROM {name} ORDER BY 1, 2"
    );
    let batches = ctx.sql(&sql).await?.collect().await;
    ctx.deregister_table(name.as_str())?;
    let mut out = Vec::new();
    for batch in batches? {
        let env = arrow::compute::cast(batch.column(0), &arrow::datatypes::DataType::Utf8)?;
        let bucket = arrow::compute::cast(batch.column(1), &arrow::datatypes::DataType::Utf8)?;
        let env = arrow::array::AsArray::as_string::<i32>(&env);
        let bucket = arrow::array::AsArray::as_string::<i32>(&bucket);
        for i in 0..batch.num_rows() {
            out.push((env.value(i).to_string(), bucket.value(i).to_string()));
        }
    }
    Ok(out)
}

/// `rows` (the job's columns, one row per key) with their bucket, sorted as the published
/// files are: environment, bucket, user id, then the rest of the key.
pub async fn with_buckets(
    ctx: &SessionContext,
    job: Job,
    rows: datafusion::dataframe::DataFrame,
) -> Result<Vec<arrow::array::RecordBatch>> {
    let name = format!("{}_publish_rows", job.table());
    ctx.register_table(name.as_str(), rows.into_view())?;
    let keys: String = job
        .key_columns()
        .iter()
        .map(|k| format!(", \"{k}\""))
        .collect();
    let sql = format!(
        "SELECT *, {BUCKET_SQL} AS {BUCKET_COLUMN} FROM {name} \
         ORDER BY environment, {BUCKET_COLUMN}, user_id{keys}"
    );
    let batches = crate::ballista::collect(ctx, ctx.sql(&sql).await?).await?;
    ctx.deregister_table(name.as_str())?;
    let schema = job.published_schema();
    batches
        .iter()
        .filter(|b| b.num_rows() > 0)
        .map(|b| defs::conform(b, &schema))
        .collect()
}

/// Creates the published table of `job` (empty) when it is missing.
pub async fn published_table(store: &Store, job: Job) -> Result<DeltaTable> {
    store
        .load_or_create_table(&crate::storage::TableSpec {
            name: job.table(),
            schema: job.published_schema().as_ref(),
            partition_columns: &PUBLISHED_PARTITIONS,
            stats_columns: job.stats_columns(),
            comment: None,
        })
        .await
}

/// Replaces the whole published table with `rows` (bucketed, see [`with_buckets`]) and
/// marks it as holding every run up to `through`; also changes an old layout to the
/// current one.
pub async fn replace_all(
    table: DeltaTable,
    job: Job,
    rows: Vec<arrow::array::RecordBatch>,
    through: i64,
) -> Result<DeltaTable> {
    write_published(table, job, rows, through, None).await
}

async fn write_published(
    table: DeltaTable,
    job: Job,
    rows: Vec<arrow::array::RecordBatch>,
    through: i64,
    partitions: Option<Expr>,
) -> Result<DeltaTable> {
    let commit = CommitProperties::default()
        .with_application_transaction(Transaction::new(job.publish_app_id(), through));
    let rows = if rows.is_empty() {
        vec![arrow::array::RecordBatch::new_empty(job.published_schema())]
    } else {
        rows
    };
    let write = table
        .write(rows)
        .with_save_mode(SaveMode::Overwrite)
        .with_partition_columns(PUBLISHED_PARTITIONS)
        .with_writer_properties(events_table::writer_properties(3))
        .with_commit_properties(commit);
    let write = match partitions {
        Some(p) => write.with_replace_where(p),
        None => write.with_schema_mode(SchemaMode::Overwrite),
    };
    Ok(write.await?)
}

/// Drops the pending runs `<= through` (they are published).
pub async fn drop_published_runs(pending: DeltaTable, through: i64) -> Result<DeltaTable> {
    let (table, _) = pending
        .delete()
        .with_predicate(col(RUN_COLUMN).lt_eq(lit(through)))
        .await?;
    Ok(table)
}

/// One pass for `job` (the caller holds [`LEASE`]): `None` when there was nothing to fold.
pub async fn publish_job(
    store: &Store,
    ctx: &SessionContext,
    job: Job,
) -> Result<Option<PublishReport>> {
    let started = Instant::now();
    // Pending first, then published (see the module docs).
    let pending = store.load_table(job.pending()).await?;
    let published = store.load_table(job.table()).await?;
    let state = published_state(published.as_ref(), job).await?;
    let runs = pending_runs(pending.as_ref())?;
    let (after, through, whole) = match plan(state, &runs) {
        Step::Nothing => return Ok(None),
        Step::Drop { through } => {
            if let Some(p) = pending {
                drop_published_runs(p, through).await?;
            }
            return Ok(None);
        }
        Step::Fold {
            after,
            through,
            whole,
        } => (after, through, whole),
    };
    let table = match published {
        Some(t) => t,
        None => published_table(store, job).await?,
    };
    let new_rows = match &pending {
        Some(p) => Some(pending_rows(ctx, p, job, after, Some(through)).await?),
        None => None,
    };
    let pending_count = match &new_rows {
        Some(df) => df.clone().count().await?,
        None => 0,
    };
    let partitions = match (&new_rows, whole) {
        (Some(df), false) => Some(touched(ctx, job, df.clone()).await?),
        _ => None,
    };
    table.update_datafusion_session(&ctx.state())?;
    let mut old = ctx.read_table(table.table_provider().await?)?;
    let predicate = partitions.as_deref().and_then(partitions_predicate);
    if let Some(p) = &predicate {
        old = old.filter(p.clone())?;
    }
    let mut parts = old.select(job_columns(job))?;
    if let Some(df) = new_rows {
        parts = parts.union(df)?;
    }
    ctx.register_table(job.parts(), parts.into_view())?;
    let merged = ctx.sql(job.merge_sql()).await?;
    ctx.deregister_table(job.parts())?;
    let rows = with_buckets(ctx, job, merged).await?;
    let written = rows.iter().map(|b| b.num_rows()).sum();
    let count = partitions.as_ref().map_or(0, Vec::len);
    let table = write_published(table, job, rows, through, predicate).await?;
    drop(table);
    if let Some(p) = pending {
        drop_published_runs(p, through).await?;
    }
    Ok(Some(PublishReport {
        job: job.table().into(),
        from_run: after,
        to_run: through,
        partitions: count,
        whole,
        pending_rows: pending_count,
        rows_written: written,
        seconds: started.elapsed().as_secs_f64(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn runs(r: &[i64]) -> BTreeSet<i64> {
        r.iter().copied().collect()
    }

    #[test]
    fn a_missing_table_is_created_from_the_pending_runs() {
        assert_eq!(plan(Published::Missing, &runs(&[])), Step::Nothing);
        assert_eq!(
            plan(Published::Missing, &runs(&[3, 7])),
            Step::Fold {
                after: None,
                through: 7,
                whole: true
            }
        );
    }

    #[test]
    fn an_old_layout_is_rewritten_whole_even_with_nothing_pending() {
        assert_eq!(
            plan(Published::OldLayout, &runs(&[])),
            Step::Fold {
                after: None,
                through: -1,
                whole: true
            }
        );
        assert_eq!(
            plan(Published::OldLayout, &runs(&[4])),
            Step::Fold {
                after: None,
                through: 4,
                whole: true
            }
        );
    }

    #[test]
    fn runs_after_the_mark_are_folded_into_their_partitions() {
        let published = Published::Current { through: Some(5) };
        assert_eq!(
            plan(published, &runs(&[4, 5, 6, 9])),
            Step::Fold {
                after: Some(5),
                through: 9,
                whole: false
            }
        );
        // A table that holds no run yet (created, or rebuilt from an empty source).
        assert_eq!(
            plan(Published::Current { through: None }, &runs(&[0])),
            Step::Fold {
                after: None,
                through: 0,
                whole: false
            }
        );
    }

    #[test]
    fn published_runs_left_behind_by_a_crash_are_dropped() {
        let published = Published::Current { through: Some(9) };
        assert_eq!(plan(published, &runs(&[4, 9])), Step::Drop { through: 9 });
        assert_eq!(plan(published, &runs(&[])), Step::Nothing);
    }

    #[test]
    fn the_partition_predicate_groups_buckets_by_environment() {
        let p = partitions_predicate(&[
            ("prod".into(), "0".into()),
            ("prod".into(), "a".into()),
            ("dev".into(), "f".into()),
        ])
        .unwrap();
        assert_eq!(
            p.to_string(),
            "environment = Utf8(\"dev\") AND user_bucket IN ([Utf8(\"f\")]) OR \
             environment = Utf8(\"prod\") AND user_bucket IN ([Utf8(\"0\"), Utf8(\"a\")])"
        );
        assert_eq!(partitions_predicate(&[]), None);
    }
}
