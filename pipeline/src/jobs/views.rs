//! How readers see a derived table: its partial rows (registered as [`Job::parts`])
//! folded by the job's merge SQL, under the table's own name.

use std::sync::Arc;

use datafusion::catalog::TableProvider;
use datafusion::prelude::{SessionContext, col, lit};

use super::defs::Job;
use crate::Result;

/// Registers `job`'s merged view as `job.table()` over `parts` (the Delta table's
/// provider), restricted to `environment` when given.
pub async fn register(
    ctx: &SessionContext,
    job: Job,
    parts: Arc<dyn TableProvider>,
    environment: Option<&str>,
) -> Result<()> {
    let mut df = ctx.read_table(parts)?;
    if let Some(env) = environment {
        df = df.filter(col("environment").eq(lit(env)))?;
    }
    ctx.register_table(job.parts(), df.into_view())?;
    let merged = ctx.sql(job.merge_sql()).await?.into_view();
    ctx.register_table(job.table(), merged)?;
    Ok(())
}

/// The profile of `user_id` in `environment` as JSON, with an `event_stats` array
/// (newest first); `None` when the user has no profile.
pub async fn read_user(
    store: &crate::storage::Store,
    environment: &str,
    user_id: &str,
) -> Result<Option<serde_json::Value>> {
    let ctx = super::inputs::session(None)?;
    let mut rows = Vec::new();
    for job in super::defs::ALL {
        let Some(table) = store.load_table(job.table()).await? else {
            return Ok(None);
        };
        table.update_datafusion_session(&ctx.state())?;
        register(&ctx, job, table.table_provider().await?, Some(environment)).await?;
        let mut df = ctx
            .table(job.table())
            .await?
            .filter(col("user_id").eq(lit(user_id)))?;
        if job == Job::EventStats {
            df = df.sort(vec![
                col("last_at").sort(false, true),
                col("event_name").sort(true, true),
            ])?;
        }
        rows.push(to_json_rows(&df.collect().await?)?);
    }
    let mut rows = rows.into_iter();
    let (Some(profiles), Some(stats)) = (rows.next(), rows.next()) else {
        return Ok(None);
    };
    let Some(serde_json::Value::Object(mut profile)) = profiles.into_iter().next() else {
        return Ok(None);
    };
    let stats = stats
        .into_iter()
        .map(|mut s| {
            if let Some(o) = s.as_object_mut() {
                o.remove("environment");
                o.remove("user_id");
            }
            s
        })
        .collect();
    profile.insert("event_stats".into(), serde_json::Value::Array(stats));
    Ok(Some(serde_json::Value::Object(profile)))
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
