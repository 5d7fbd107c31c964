//! SQL over the store's Delta tables with embedded DataFusion (`tidemark sql`).

use arrow::record_batch::RecordBatch;
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::{SessionConfig, SessionContext, col, lit};
use futures::TryStreamExt;

use crate::jobs::{self, Job};
use crate::storage::Store;
use crate::{Error, Result};

/// Output formats of `tidemark sql`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Table,
    Csv,
    Json,
}

/// A session with every table registered; with `environment`, each table is a view of
/// that environment's rows only.
pub async fn session(store: &Store, environment: Option<&str>) -> Result<SessionContext> {
    let config = SessionConfig::new().with_information_schema(true);
    let mut ctx = SessionContext::new_with_config(config);
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
        table.update_datafusion_session(&ctx.state())?;
        let provider = table.table_provider().await?;
        match environment {
            Some(env) if provider.schema().field_with_name("environment").is_ok() => {
                let view = ctx
                    .read_table(provider)?
                    .filter(col("environment").eq(lit(env)))?
                    .into_view();
                ctx.register_table(name.as_str(), view)?;
            }
            _ => {
                ctx.register_table(name.as_str(), provider)?;
            }
        }
    }
    jobs::views::register_all(&ctx, store, environment).await?;
    Ok(ctx)
}

/// Runs one read-only statement.
pub async fn run(ctx: &SessionContext, sql: &str) -> Result<Vec<RecordBatch>> {
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    let df = ctx.sql_with_options(sql, options).await?;
    let stream = df.execute_stream().await?;
    Ok(stream.try_collect().await?)
}

/// Renders batches in `format`.
pub fn render(batches: &[RecordBatch], format: Format) -> Result<String> {
    match format {
        Format::Table => Ok(arrow::util::pretty::pretty_format_batches(batches)?.to_string()),
        Format::Csv => {
            let mut buf = Vec::new();
            {
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut buf);
                for b in batches {
                    w.write(b)?;
                }
            }
            String::from_utf8(buf).map_err(|e| Error::Invalid(e.to_string()))
        }
        Format::Json => {
            let mut buf = Vec::new();
            {
                let mut w = arrow::json::ArrayWriter::new(&mut buf);
                let refs: Vec<&RecordBatch> = batches.iter().collect();
                w.write_batches(&refs)?;
                w.finish()?;
            }
            let mut s = String::from_utf8(buf).map_err(|e| Error::Invalid(e.to_string()))?;
            if s.is_empty() {
                s.push_str("[]");
            }
            Ok(s)
        }
    }
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
