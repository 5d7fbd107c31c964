//! The delivery log: Delta table `deliveries`, one row per attempt. It is also the record
//! the worker recovers from: a message whose newest row says `delivered` or `failed` is
//! done; any other stored message is sent again (with the same `webhook-id`).

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};

use arrow::array::{
    Array, Int32Array, Int64Array, ListBuilder, RecordBatch, StringArray, StringBuilder,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::prelude::{SessionContext, col, lit};
use deltalake::DeltaTable;
use deltalake::protocol::SaveMode;
use serde_json::Value;

use crate::storage::events_table::{timestamp_type, writer_properties};
use crate::storage::{Store, TableSpec};
use crate::{Error, Result};

pub const TABLE: &str = "deliveries";
const PARTITION_COLUMNS: [&str; 1] = ["environment"];

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("environment", DataType::Utf8, false),
        Field::new("subscription_id", DataType::Utf8, false),
        Field::new("message_id", DataType::Utf8, false),
        Field::new(
            "event_ids",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            true,
        ),
        Field::new("attempt", DataType::Int32, false),
        Field::new("status", DataType::Utf8, false),
        Field::new("http_status", DataType::Int32, true),
        Field::new("latency_ms", DataType::Int64, false),
        Field::new("error", DataType::Utf8, true),
        Field::new("at", timestamp_type(), false),
        Field::new("next_attempt_at", timestamp_type(), true),
    ]))
});

pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

/// One attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub environment: String,
    pub subscription_id: String,
    pub message_id: String,
    pub event_ids: Vec<String>,
    pub attempt: i32,
    /// `delivered`, `retrying`, `failed`, `gone`.
    pub status: String,
    pub http_status: Option<i32>,
    pub latency_ms: i64,
    pub error: Option<String>,
    pub at_us: i64,
    pub next_attempt_at_us: Option<i64>,
}

fn batch(rows: &[Row]) -> Result<RecordBatch> {
    let s = |f: fn(&Row) -> &str| StringArray::from_iter_values(rows.iter().map(f));
    let mut ids = ListBuilder::new(StringBuilder::new());
    for r in rows {
        for id in &r.event_ids {
            ids.values().append_value(id);
        }
        ids.append(true);
    }
    let utc = |a: TimestampMicrosecondArray| a.with_timezone("UTC");
    Ok(RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(s(|r| &r.environment)),
            Arc::new(s(|r| &r.subscription_id)),
            Arc::new(s(|r| &r.message_id)),
            Arc::new(ids.finish()),
            Arc::new(Int32Array::from_iter_values(rows.iter().map(|r| r.attempt))),
            Arc::new(s(|r| &r.status)),
            Arc::new(Int32Array::from_iter(rows.iter().map(|r| r.http_status))),
            Arc::new(Int64Array::from_iter_values(
                rows.iter().map(|r| r.latency_ms),
            )),
            Arc::new(StringArray::from_iter(
                rows.iter().map(|r| r.error.as_deref()),
            )),
            Arc::new(utc(TimestampMicrosecondArray::from_iter_values(
                rows.iter().map(|r| r.at_us),
            ))),
            Arc::new(utc(TimestampMicrosecondArray::from_iter(
                rows.iter().map(|r| r.next_attempt_at_us),
            ))),
        ],
    )?)
}

/// Loads `deliveries`, creating it (empty) first if needed.
pub async fn open_or_create(store: &Store) -> Result<DeltaTable> {
    store
        .load_or_create_table(&TableSpec {
            name: TABLE,
            comment: Some("tidemark webhook delivery attempts"),
            schema: &schema(),
            partition_columns: &PARTITION_COLUMNS,
            stats_columns: "subscription_id,status,at",
        })
        .await
}

/// Appends `rows` in one commit; returns the table after it.
pub async fn append(table: DeltaTable, rows: &[Row]) -> Result<DeltaTable> {
    Ok(table
        .write(vec![batch(rows)?])
        .with_save_mode(SaveMode::Append)
        .with_partition_columns(PARTITION_COLUMNS)
        .with_writer_properties(writer_properties(1))
        .await?)
}

/// Compacts small files of `deliveries` (one per log commit, about two a second under
/// load) into files of about `target_size` bytes. The worker's appends go on meanwhile
/// (blind appends do not conflict with a compaction). Returns the files removed.
pub async fn optimize(table: DeltaTable, target_size: u64) -> Result<(DeltaTable, u64)> {
    let target = std::num::NonZeroU64::new(target_size.max(1024 * 1024))
        .unwrap_or(std::num::NonZeroU64::MIN);
    let (table, metrics) = table
        .optimize()
        .with_target_size(target)
        .with_writer_properties(writer_properties(3))
        .await?;
    Ok((table, metrics.num_files_removed))
}

/// Deletes the attempts logged more than `keep` before `now` (`keep` zero: none).
/// Returns the rows deleted. Messages still being delivered are unaffected unless their
/// chunk is older than `keep` (a subscription paused that long): those are sent again
/// under their `webhook-id` after a restart, as at-least-once allows.
pub async fn apply_retention(
    store: &Store,
    keep: std::time::Duration,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<usize> {
    if keep.is_zero() {
        return Ok(0);
    }
    let Some(table) = store.load_table(TABLE).await? else {
        return Ok(0);
    };
    let keep_us = i64::try_from(keep.as_micros()).unwrap_or(i64::MAX);
    let cutoff = now.timestamp_micros().saturating_sub(keep_us);
    let at =
        datafusion::common::ScalarValue::TimestampMicrosecond(Some(cutoff), Some("UTC".into()));
    let (_, metrics) = table.delete().with_predicate(col("at").lt(lit(at))).await?;
    Ok(metrics.num_deleted_rows.unwrap_or(0))
}

/// The newest row of a message.
#[derive(Debug, Clone, PartialEq)]
pub struct Last {
    pub attempt: i32,
    pub status: String,
    pub at_us: i64,
    pub next_attempt_at_us: Option<i64>,
}

/// The newest row of each message of subscription `id` logged at or after `since_us`.
pub async fn last_rows(
    store: &Store,
    environment: &str,
    id: &str,
    since_us: i64,
) -> Result<HashMap<String, Last>> {
    let Some(table) = store.load_table(TABLE).await? else {
        return Ok(HashMap::new());
    };
    let ctx = SessionContext::new();
    let batches = ctx
        .read_table(table.table_provider().await?)?
        .filter(
            col("environment")
                .eq(lit(environment))
                .and(col("subscription_id").eq(lit(id)))
                .and(
                    col("at").gt_eq(lit(datafusion::scalar::ScalarValue::TimestampMicrosecond(
                        Some(since_us),
                        Some("UTC".into()),
                    ))),
                ),
        )?
        .select_columns(&["message_id", "attempt", "status", "at", "next_attempt_at"])?
        .collect()
        .await?;
    let mut last: HashMap<String, Last> = HashMap::new();
    for b in &batches {
        let b = &plain_strings(b)?;
        let ids = string_col(b, 0)?;
        let attempts = b
            .column(1)
            .as_any()
            .downcast_ref::<Int32Array>()
            .ok_or_else(|| Error::Invalid("deliveries.attempt is not int".into()))?;
        let statuses = string_col(b, 2)?;
        let ats = ts_col(b, 3)?;
        let nexts = ts_col(b, 4)?;
        for i in 0..b.num_rows() {
            let row = Last {
                attempt: attempts.value(i),
                status: statuses.value(i).to_string(),
                at_us: ats.value(i),
                next_attempt_at_us: (!nexts.is_null(i)).then(|| nexts.value(i)),
            };
            let newer = last
                .get(ids.value(i))
                .is_none_or(|l| (row.at_us, row.attempt) > (l.at_us, l.attempt));
            if newer {
                last.insert(ids.value(i).to_string(), row);
            }
        }
    }
    Ok(last)
}

/// The batch with view-typed text columns (what the Delta scan gives) cast to `Utf8`.
fn plain_strings(b: &RecordBatch) -> Result<RecordBatch> {
    let mut fields = Vec::new();
    let mut columns = Vec::new();
    for (f, c) in b.schema().fields().iter().zip(b.columns()) {
        if matches!(f.data_type(), DataType::Utf8View | DataType::LargeUtf8) {
            columns.push(arrow::compute::cast(c, &DataType::Utf8)?);
            fields.push(Field::new(f.name(), DataType::Utf8, f.is_nullable()));
        } else {
            columns.push(c.clone());
            fields.push(f.as_ref().clone());
        }
    }
    Ok(RecordBatch::try_new(
        Arc::new(Schema::new(fields)),
        columns,
    )?)
}

fn string_col(b: &RecordBatch, i: usize) -> Result<&StringArray> {
    b.column(i)
        .as_any()
        .downcast_ref::<StringArray>()
        .ok_or_else(|| Error::Invalid(format!("deliveries column {i} is not text")))
}

fn ts_col(b: &RecordBatch, i: usize) -> Result<&TimestampMicrosecondArray> {
    b.column(i)
        .as_any()
        .downcast_ref::<TimestampMicrosecondArray>()
        .ok_or_else(|| Error::Invalid(format!("deliveries column {i} is not a timestamp")))
}

/// The newest `limit` attempts of subscription `id` (optionally one status), newest first.
pub async fn recent(
    store: &Store,
    environment: &str,
    id: &str,
    status: Option<&str>,
    limit: usize,
) -> Result<Vec<Value>> {
    let Some(table) = store.load_table(TABLE).await? else {
        return Ok(Vec::new());
    };
    let ctx = SessionContext::new();
    let mut filter = col("environment")
        .eq(lit(environment))
        .and(col("subscription_id").eq(lit(id)));
    if let Some(s) = status {
        filter = filter.and(col("status").eq(lit(s)));
    }
    let batches = ctx
        .read_table(table.table_provider().await?)?
        .filter(filter)?
        .sort(vec![
            col("at").sort(false, true),
            col("attempt").sort(false, true),
        ])?
        .limit(0, Some(limit))?
        .drop_columns(&["environment"])?
        .collect()
        .await?;
    crate::query::to_json_rows(&batches)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[tokio::test]
    async fn retention_deletes_only_attempts_older_than_it() {
        let store = Store::open("memory://deliveries-retention", &Default::default()).unwrap();
        let day_us = 86_400_000_000i64;
        let now = chrono::DateTime::from_timestamp(1_795_946_400, 0).unwrap();
        let row = |id: &str, days_ago: i64| Row {
            environment: "default".into(),
            subscription_id: "wh_1".into(),
            message_id: id.into(),
            event_ids: vec![],
            attempt: 1,
            status: "delivered".into(),
            http_status: Some(204),
            latency_ms: 3,
            error: None,
            at_us: now.timestamp_micros() - days_ago * day_us,
            next_attempt_at_us: None,
        };
        let table = open_or_create(&store).await.unwrap();
        let rows = [
            row("old", 31),
            row("older", 90),
            row("recent", 29),
            row("today", 0),
        ];
        append(table, &rows).await.unwrap();
        let month = std::time::Duration::from_secs(30 * 86_400);
        assert_eq!(
            apply_retention(&store, std::time::Duration::ZERO, now)
                .await
                .unwrap(),
            0
        );
        assert_eq!(apply_retention(&store, month, now).await.unwrap(), 2);
        let left = recent(&store, "default", "wh_1", None, 10).await.unwrap();
        let mut ids: Vec<&str> = left
            .iter()
            .map(|r| r["message_id"].as_str().unwrap())
            .collect();
        ids.sort();
        assert_eq!(ids, vec!["recent", "today"]);
        assert_eq!(
            apply_retention(&store, month, now).await.unwrap(),
            0,
            "idempotent"
        );
    }

    #[tokio::test]
    async fn optimize_compacts_log_commits_and_keeps_every_row() {
        let store = Store::open("memory://deliveries-optimize", &Default::default()).unwrap();
        let mut table = open_or_create(&store).await.unwrap();
        for i in 0..6 {
            let rows: Vec<Row> = (0..10)
                .map(|k| Row {
                    environment: "default".into(),
                    subscription_id: "wh_1".into(),
                    message_id: format!("msg_{i}_{k}"),
                    event_ids: vec![format!("e{i}-{k}")],
                    attempt: 1,
                    status: "delivered".into(),
                    http_status: Some(204),
                    latency_ms: 3,
                    error: None,
                    at_us: 1_000_000 * (i * 10 + k),
                    next_attempt_at_us: None,
                })
                .collect();
            table = append(table, &rows).await.unwrap();
        }
        assert_eq!(table.snapshot().unwrap().log_data().num_files(), 6);
        let (table, removed) = optimize(table, 64 * 1024 * 1024).await.unwrap();
        assert_eq!(removed, 6);
        assert_eq!(table.snapshot().unwrap().log_data().num_files(), 1);
        let ctx = SessionContext::new();
        table.update_datafusion_session(&ctx.state()).unwrap();
        ctx.register_table("d", table.table_provider().await.unwrap())
            .unwrap();
        let n = ctx
            .sql("SELECT count(DISTINCT message_id) AS n FROM d")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let n = n[0]
            .column(0)
            .as_any()
            .downcast_ref::<Int64Array>()
            .unwrap()
            .value(0);
        assert_eq!(n, 60);
    }
}
