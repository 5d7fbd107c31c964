//! Reading `events` for a run: the commits after a cursor, and the three inputs the job
//! SQL reads (`new_events`, `prior_events`, `job_params`).

use std::sync::Arc;
use std::time::Duration;

use arrow::array::{Array, Int64Array, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::catalog::{MemTable, TableProvider};
use datafusion::common::ScalarValue;
use datafusion::prelude::{SessionConfig, SessionContext, col, lit};
use deltalake::DeltaTable;
use deltalake::kernel::Add;
use deltalake::logstore::get_actions;

use super::defs::{COUNTED_EVENTS_SQL, REPEATED_EVENTS_SQL};
use super::plan::Commit;
use crate::ballista::{self, Engine, scan::FilesTable};
use crate::storage::events_table::{self, col as ev};
use crate::{Error, Result};

/// Tuning that the job SQL reads from `job_params`.
#[derive(Debug, Clone, Copy)]
pub struct Params {
    pub clock_skew_tolerance_us: i64,
    pub dedup_window_us: i64,
}

/// A DataFusion session with tidemark's UDFs registered.
pub fn session(target_partitions: Option<usize>) -> Result<SessionContext> {
    session_on(target_partitions, &Engine::Embedded, Duration::MAX)
}

/// [`session`] whose queries run on `engine` (see [`crate::ballista`]): the inputs below
/// then register Parquet-file scans and views where the embedded engine reads Delta
/// providers and keeps rows in memory. On a cluster, one [`ballista::collect`] that takes
/// longer than `timeout` fails.
pub fn session_on(
    target_partitions: Option<usize>,
    engine: &Engine,
    timeout: Duration,
) -> Result<SessionContext> {
    let mut config = SessionConfig::new();
    if let Some(n) = target_partitions {
        config = config.with_target_partitions(n);
    }
    let config = crate::ballista::with_engine(config, engine)
        .with_extension(Arc::new(crate::ballista::StepTimeout(timeout)));
    let mut ctx = SessionContext::new_with_config(config);
    tidemark_udfs::register_all(&mut ctx)?;
    Ok(ctx)
}

/// The commits `from..=to` of `events`, in order.
pub async fn read_commits(events: &DeltaTable, from: i64, to: i64) -> Result<Vec<Commit>> {
    let log_store = events.log_store();
    let mut commits = Vec::new();
    for version in from..=to {
        let bytes = log_store.read_commit_entry(version as u64).await?.ok_or_else(|| {
            Error::NotFound(format!(
                "the events log no longer holds version {version} (log retention); run `tidemark jobs rebuild`"
            ))
        })?;
        commits.push(Commit {
            version,
            actions: get_actions(version as u64, &bytes)?,
        });
    }
    Ok(commits)
}

/// The newest version of `table` (-1 before its first commit).
pub fn head_version(table: &DeltaTable) -> i64 {
    table.version().map_or(-1, |v| v as i64)
}

/// `events` as of `version`.
pub async fn events_at(events: &DeltaTable, version: i64) -> Result<DeltaTable> {
    let mut table = events.clone();
    table.load_version(version as u64).await?;
    Ok(table)
}

/// Registers `job_params`.
pub fn register_params(ctx: &SessionContext, params: Params) -> Result<()> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("clock_skew_tolerance_us", DataType::Int64, false),
        Field::new("dedup_window_us", DataType::Int64, false),
    ]));
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from(vec![params.clock_skew_tolerance_us])),
            Arc::new(Int64Array::from(vec![params.dedup_window_us])),
        ],
    )?;
    ctx.register_batch("job_params", batch)?;
    Ok(())
}

/// The `events` columns the job SQL reads.
const JOB_COLUMNS: &str = "environment, event_id, event_name, category, user_id, platform, \
     occurred_at, received_at, received_date";

/// Registers `new_events` as the rows of `adds` (live in `snapshot`), or as every row of
/// `snapshot` when `adds` is `None` (a rebuild), plus `id_key` (`event_key(environment,
/// event_id)`, hashed once here for the dedup joins). The rows are read once into memory
/// (the columns the jobs use): the job SQL reads `new_events` three times, and decoding
/// the Parquet files once instead of three times halves a rebuild's dedup step.
///
/// With `aliases` (the `aliases` table, see [`crate::users::aliases`]), an event whose
/// `user_id` is a linked previous id gets the user id it links to.
pub async fn register_new_events(
    ctx: &SessionContext,
    snapshot: &DeltaTable,
    adds: Option<Vec<Add>>,
    aliases: Option<&DeltaTable>,
) -> Result<()> {
    let scan = scan_of(ctx, events_table::TABLE, snapshot, adds).await?;
    let Some(aliases) = aliases else {
        let select =
            format!("SELECT {JOB_COLUMNS}, event_key(environment, event_id) AS id_key FROM scan");
        materialize_from(ctx, scan, &select, "new_events").await?;
        return Ok(());
    };
    let links = scan_of(ctx, crate::users::aliases::TABLE, aliases, None).await?;
    ctx.register_table("aliases", links)?;
    let resolved = ctx.sql(crate::users::aliases::RESOLVED_SQL).await;
    ctx.deregister_table("aliases")?;
    ctx.register_table("resolved_aliases", resolved?.into_view())?;
    let columns = JOB_COLUMNS
        .split(", ")
        .map(|c| match c {
            "user_id" => "COALESCE(a.alias_user_id, s.user_id) AS user_id".to_string(),
            c => format!("s.{c}"),
        })
        .collect::<Vec<_>>()
        .join(", ");
    // The links are few: they are the left (build) side of the join.
    let select = format!(
        "SELECT {columns}, event_key(s.environment, s.event_id) AS id_key \
         FROM resolved_aliases a RIGHT JOIN scan s \
         ON a.environment = s.environment AND a.previous_id = s.user_id"
    );
    let registered = materialize_from(ctx, scan, &select, "new_events").await;
    ctx.deregister_table("resolved_aliases")?;
    registered?;
    Ok(())
}

/// Registers `new_changes`: the rows of `adds` of `profile_changes` (every row when
/// `None`), read once into memory.
pub async fn register_new_changes(
    ctx: &SessionContext,
    snapshot: &DeltaTable,
    adds: Option<Vec<Add>>,
) -> Result<usize> {
    let select = "SELECT environment, user_id, change_id, at, op, name, value FROM scan";
    let table = crate::users::changes::TABLE;
    let scan = scan_of(ctx, table, snapshot, adds).await?;
    let rows = materialize_from(ctx, scan, select, "new_changes").await?;
    count(ctx, "new_changes", rows).await
}

/// The rows of `adds` of `snapshot` of table `name` (every row when `None`): the Delta
/// provider embedded, the Parquet files themselves on a cluster engine.
async fn scan_of(
    ctx: &SessionContext,
    name: &str,
    snapshot: &DeltaTable,
    adds: Option<Vec<Add>>,
) -> Result<Arc<dyn TableProvider>> {
    match adds {
        None => ballista::provider(ctx, name, snapshot).await,
        Some(adds) if !ballista::engine_of(ctx).is_embedded() => {
            Ok(Arc::new(FilesTable::of(name, snapshot, Some(&adds)).await?))
        }
        Some(adds) => {
            snapshot.update_datafusion_session(&ctx.state())?;
            Ok(snapshot.table_provider().with_adds(adds).await?)
        }
    }
}

/// Registers `name` as `select` (which reads `scan`) over `scan`; see [`materialize`].
async fn materialize_from(
    ctx: &SessionContext,
    scan: Arc<dyn TableProvider>,
    select: &str,
    name: &str,
) -> Result<Option<usize>> {
    ctx.register_table("scan", scan)?;
    // The plan holds the provider itself: the name can go before it runs.
    let df = ctx.sql(select).await;
    ctx.deregister_table("scan")?;
    materialize_df(ctx, df?, name).await
}

/// Registers `prior_events`: rows of `prior` (the table at the cursor) received within
/// the dedup window before the earliest new row; an empty table when `prior` is `None`.
pub async fn register_prior_events(
    ctx: &SessionContext,
    prior: Option<&DeltaTable>,
    dedup_window_us: i64,
) -> Result<()> {
    let earliest = match prior {
        None => None,
        Some(_) => {
            let df = ctx
                .sql("SELECT CAST(min(received_at) AS BIGINT) FROM new_events")
                .await?;
            let batches = ballista::collect(ctx, df).await?;
            batches.first().and_then(|b| {
                let a = b.column(0).as_any().downcast_ref::<Int64Array>()?;
                (!a.is_null(0)).then(|| a.value(0))
            })
        }
    };
    match (prior, earliest) {
        (Some(prior), Some(earliest)) => {
            let from_us = earliest.saturating_sub(dedup_window_us);
            let from_day = i32::try_from(from_us.div_euclid(86_400_000_000)).unwrap_or(i32::MIN);
            let provider = scan_of(ctx, events_table::TABLE, prior, None).await?;
            let view = ctx
                .read_table(provider)?
                .filter(
                    col(ev::RECEIVED_DATE)
                        .gt_eq(lit(ScalarValue::Date32(Some(from_day))))
                        .and(
                            col(ev::RECEIVED_AT).gt_eq(lit(ScalarValue::TimestampMicrosecond(
                                Some(from_us),
                                Some("UTC".into()),
                            ))),
                        ),
                )?
                .into_view();
            ctx.register_table("prior_events", view)?;
        }
        _ => {
            // An always-false filter makes the planner see an empty relation and drop the
            // anti-join against it (a rebuild saves a pass over every event).
            let empty = MemTable::try_new(events_table::schema(), vec![vec![]])?;
            let view = ctx
                .read_table(Arc::new(empty))?
                .filter(lit(false))?
                .into_view();
            ctx.register_table("prior_events", view)?;
        }
    }
    Ok(())
}

/// Materializes `repeated_events` and then `counted_events` from the registered inputs;
/// returns the number of counted events.
pub async fn register_counted_events(ctx: &SessionContext) -> Result<usize> {
    materialize(ctx, REPEATED_EVENTS_SQL, "repeated_events").await?;
    let rows = materialize(ctx, COUNTED_EVENTS_SQL, "counted_events").await?;
    count(ctx, "counted_events", rows).await
}

/// Runs `sql` and keeps its result in memory as table `name`, split into `partitions`
/// for parallel reads; returns its rows. On a cluster engine `name` is a view instead
/// (the executors compute it from the files where it is used; nothing is shipped from
/// here) and the count is `None`.
pub async fn materialize(ctx: &SessionContext, sql: &str, name: &str) -> Result<Option<usize>> {
    materialize_df(ctx, ctx.sql(sql).await?, name).await
}

async fn materialize_df(
    ctx: &SessionContext,
    df: datafusion::dataframe::DataFrame,
    name: &str,
) -> Result<Option<usize>> {
    if !ballista::engine_of(ctx).is_embedded() {
        ctx.register_table(name, df.into_view())?;
        return Ok(None);
    }
    let (table, rows) = in_memory(ctx, df).await?;
    ctx.register_table(name, table)?;
    Ok(Some(rows))
}

/// The rows of `name`: `known` when [`materialize`] counted them, else a count query.
async fn count(ctx: &SessionContext, name: &str, known: Option<usize>) -> Result<usize> {
    if let Some(n) = known {
        return Ok(n);
    }
    let df = ctx
        .sql(&format!("SELECT count(*) AS n FROM {name}"))
        .await?;
    let batches = ballista::collect(ctx, df).await?;
    Ok(batches
        .first()
        .and_then(|b| {
            b.column(0)
                .as_any()
                .downcast_ref::<Int64Array>()
                .map(|a| a.value(0))
        })
        .unwrap_or(0) as usize)
}

/// Runs `df` and keeps its rows as a table split into the session's partitions; also
/// returns the row count.
pub async fn in_memory(
    ctx: &SessionContext,
    df: datafusion::dataframe::DataFrame,
) -> Result<(Arc<MemTable>, usize)> {
    let schema = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await?;
    let rows = batches.iter().map(RecordBatch::num_rows).sum();
    let n = ctx.state().config().target_partitions().max(1);
    let mut parts: Vec<Vec<RecordBatch>> = vec![Vec::new(); n];
    for (i, b) in batches.into_iter().enumerate() {
        parts[i % n].push(b);
    }
    Ok((Arc::new(MemTable::try_new(schema, parts)?), rows))
}
