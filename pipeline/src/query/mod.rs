//! SQL over the store's Delta tables with embedded DataFusion.
//!
//! - [`session`]: a session with every table registered as a view of one environment
//!   (tidemark's own readers: the users API, the segment job, exports);
//! - [`engine`]: how data-team queries run, the same for all four doors (`tidemark
//!   sql`, `POST /v1/{env}/query`, Postgres, Flight SQL): [`policy`] (read-only
//!   statements), [`depth`] (how deep expressions may nest, bounded before parsing),
//!   [`time_travel`] (`VERSION AS OF`), [`limits`] (`[query]`: timeout,
//!   memory, concurrency, JSON caps) and the errors each door maps to its protocol;
//! - [`encode`]: answers as CSV, JSON, NDJSON, Arrow IPC or Parquet, batch by batch;
//!   [`to_json_rows`]: batches as JSON values for the API's own answers.

pub mod depth;
pub mod encode;
pub mod engine;
pub mod limits;
pub mod policy;
pub mod time_travel;

use std::sync::Arc;

use arrow::record_batch::RecordBatch;
use datafusion::catalog::TableProvider;
use datafusion::execution::runtime_env::RuntimeEnv;
use datafusion::prelude::{SessionConfig, SessionContext, col, lit};
use futures::TryStreamExt;

pub use encode::{Encoder, Format};
pub use engine::{Engine, Planned, Rows};
pub use limits::QueryError;

use crate::jobs::{self, Job};
use crate::storage::Store;
use crate::{Error, Result};

/// A session with every table registered; with `environment`, each table is a view of
/// that environment's rows only.
pub async fn session(store: &Store, environment: Option<&str>) -> Result<SessionContext> {
    session_with(store, environment, None).await
}

/// [`session`] on `runtime` (a query's own memory pool) when given. With `environment`,
/// a table without an `environment` column is left out: nothing is visible that the
/// environment filter cannot bound.
pub async fn session_with(
    store: &Store,
    environment: Option<&str>,
    runtime: Option<Arc<RuntimeEnv>>,
) -> Result<SessionContext> {
    session_on(
        store,
        environment,
        runtime,
        &crate::ballista::Engine::Embedded,
    )
    .await
}

/// [`session_with`] whose queries execute on `engine`: on a cluster every table is the
/// Parquet files of its snapshot ([`crate::ballista`]).
pub async fn session_on(
    store: &Store,
    environment: Option<&str>,
    runtime: Option<Arc<RuntimeEnv>>,
    engine: &crate::ballista::Engine,
) -> Result<SessionContext> {
    Ok(session_narrowable(store, environment, runtime, engine)
        .await?
        .0)
}

/// [`session`] of `environment` and its [`jobs::views::Narrowing`], for readers of a
/// few profiles.
pub async fn profiles_session(
    store: &Store,
    environment: &str,
) -> Result<(SessionContext, jobs::views::Narrowing)> {
    session_narrowable(
        store,
        Some(environment),
        None,
        &crate::ballista::Engine::Embedded,
    )
    .await
}

async fn session_narrowable(
    store: &Store,
    environment: Option<&str>,
    runtime: Option<Arc<RuntimeEnv>>,
    engine: &crate::ballista::Engine,
) -> Result<(SessionContext, jobs::views::Narrowing)> {
    let mut config =
        crate::ballista::with_engine(SessionConfig::new().with_information_schema(true), engine);
    // DataFusion 55's TopK dynamic filter asserts at least one input partition when a
    // plan's state is reset, and a sort with a limit over a table with no files has none
    // (the users list's top-k of ids on a new store); without the filter TopK is exact.
    config
        .options_mut()
        .optimizer
        .enable_topk_dynamic_filter_pushdown = false;
    let mut ctx = match runtime {
        Some(rt) => SessionContext::new_with_config_rt(config, rt),
        None => SessionContext::new_with_config(config),
    };
    tidemark_udfs::register_all(&mut ctx)?;
    for name in crate::storage::table_dirs(store).await? {
        if Job::by_name(&name).is_some() {
            // registered below as merged views
            continue;
        }
        // `None`: a directory without a Delta log.
        let Some(table) = store.load_table(&name).await? else {
            continue;
        };
        register_scoped(&ctx, &name, &table, environment).await?;
    }
    let narrowing = jobs::views::register_all(&ctx, store, environment).await?;
    Ok((ctx, narrowing))
}

/// Registers `table` as `name`, as a view of `environment`'s rows when given (and not
/// at all when it has no `environment` column).
async fn register_scoped(
    ctx: &SessionContext,
    name: &str,
    table: &deltalake::DeltaTable,
    environment: Option<&str>,
) -> Result<()> {
    let provider: Arc<dyn TableProvider> = crate::ballista::provider(ctx, name, table).await?;
    let scoped = provider.schema().field_with_name("environment").is_ok();
    match environment {
        Some(env) if scoped => {
            let view = ctx
                .read_table(provider)?
                .filter(col("environment").eq(lit(env)))?
                .into_view();
            ctx.register_table(name, view)?;
        }
        Some(_) => {}
        None => {
            ctx.register_table(name, provider)?;
        }
    }
    Ok(())
}

/// Registers each time-travel reference of a query: the Delta table at that version or
/// time, scoped like every other table. A derived table's snapshot is its published
/// Delta table (one row per key, up to its publish mark).
pub async fn register_as_of(
    ctx: &SessionContext,
    store: &Store,
    environment: Option<&str>,
    refs: &[time_travel::AsOf],
) -> Result<()> {
    use time_travel::At;
    if refs.is_empty() {
        return Ok(());
    }
    let tables = crate::storage::table_dirs(store).await?;
    for r in refs {
        if !tables.contains(&r.table) {
            return Err(Error::Invalid(format!(
                "{} AS OF: no Delta table named '{}' (tables: {})",
                match r.at {
                    At::Version(_) => "VERSION",
                    At::Timestamp(_) => "TIMESTAMP",
                },
                r.table,
                tables.join(", ")
            )));
        }
        let mut table = store.delta_table(&r.table)?;
        let loaded = match &r.at {
            At::Version(v) => table.load_version(*v).await,
            At::Timestamp(text) => table.load_with_datetime(parse_time(text)?).await,
        };
        if let Err(e) = loaded {
            return Err(Error::Invalid(format!(
                "'{}' has no snapshot {}: {e}",
                r.table,
                match &r.at {
                    At::Version(v) => format!("at version {v}"),
                    At::Timestamp(t) => format!("at '{t}'"),
                }
            )));
        }
        register_scoped(ctx, &r.name, &table, environment).await?;
    }
    Ok(())
}

/// `TIMESTAMP AS OF` text: RFC 3339, `YYYY-MM-DD HH:MM:SS` (UTC) or a date (its start,
/// UTC).
fn parse_time(text: &str) -> Result<chrono::DateTime<chrono::Utc>> {
    use chrono::{NaiveDate, NaiveDateTime, TimeZone, Utc};
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Ok(t.with_timezone(&Utc));
    }
    if let Ok(t) = NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S") {
        return Ok(Utc.from_utc_datetime(&t));
    }
    if let Ok(d) = NaiveDate::parse_from_str(text, "%Y-%m-%d") {
        return Ok(Utc.from_utc_datetime(&d.and_hms_opt(0, 0, 0).expect("midnight")));
    }
    Err(Error::Invalid(format!(
        "TIMESTAMP AS OF '{text}': expected RFC 3339 ('2026-11-25T00:00:00Z'), \
         'YYYY-MM-DD HH:MM:SS' (UTC) or a date"
    )))
}

/// Runs one read-only statement.
pub async fn run(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
    let df = ctx.sql_with_options(sql, engine::read_only()).await?;
    let stream = crate::ballista::execute_stream(ctx, df).await?;
    Ok(stream.try_collect().await?)
}

/// Convenience for tests and tools: one query, its rows as batches.
pub async fn query(
    store: &Store,
    environment: Option<&str>,
    sql: &str,
) -> Result<Vec<RecordBatch>> {
    let ctx = session(store, environment).await?;
    run(&ctx, sql).await
}

/// Rows as JSON objects (nulls kept as `null`, timestamps as RFC 3339 text).
pub fn to_json_rows(batches: &[arrow::array::RecordBatch]) -> Result<Vec<serde_json::Value>> {
    let mut buf = Vec::new();
    {
        let mut w = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::JsonArray>(&mut buf);
        for b in batches {
            w.write(b)?;
        }
        w.finish()?;
    }
    if buf.is_empty() {
        return Ok(Vec::new());
    }
    Ok(serde_json::from_slice(&buf)?)
}
