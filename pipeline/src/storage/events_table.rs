//! The `events` Delta table: its schema, creation, idempotent appends (Delta `txn`), and
//! compaction of recent partitions.

use std::num::NonZeroU64;
use std::sync::{Arc, LazyLock};

use arrow::array::ArrayRef;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::record_batch::RecordBatch;
use deltalake::DeltaTable;
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::parquet::basic::{Compression, ZstdLevel};
use deltalake::parquet::file::properties::WriterProperties;
use deltalake::protocol::SaveMode;
use deltalake::{FilterOp, FilterValue};

use super::{Store, TableSpec};
use crate::Result;

pub const TABLE: &str = "events";
pub const PARTITION_COLUMNS: [&str; 2] = ["environment", "received_date"];
/// The columns whose min/max the Delta log keeps (file skipping by time and name).
pub const STATS_COLUMNS: &str = "event_name,category,occurred_at,received_at";

/// Column names, in schema order.
pub mod col {
    pub const ENVIRONMENT: &str = "environment";
    pub const EVENT_ID: &str = "event_id";
    pub const EVENT_NAME: &str = "event_name";
    pub const CATEGORY: &str = "category";
    pub const USER_ID: &str = "user_id";
    pub const OCCURRED_AT: &str = "occurred_at";
    pub const RECEIVED_AT: &str = "received_at";
    pub const PLATFORM: &str = "platform";
    pub const PROPERTIES: &str = "properties";
    pub const RECEIVED_DATE: &str = "received_date";
}

/// Timestamps are microseconds since the epoch in UTC, as Delta stores them.
pub fn timestamp_type() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new(col::ENVIRONMENT, DataType::Utf8, false),
        Field::new(col::EVENT_ID, DataType::Utf8, false),
        Field::new(col::EVENT_NAME, DataType::Utf8, false),
        Field::new(col::CATEGORY, DataType::Utf8, false),
        Field::new(col::USER_ID, DataType::Utf8, false),
        Field::new(col::OCCURRED_AT, timestamp_type(), false),
        Field::new(col::RECEIVED_AT, timestamp_type(), false),
        Field::new(col::PLATFORM, DataType::Utf8, true),
        Field::new(col::PROPERTIES, DataType::Utf8, true),
        Field::new(col::RECEIVED_DATE, DataType::Date32, false),
    ]))
});

/// The Arrow schema of the batches ingest builds and the flusher appends.
pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

/// zstd at `level`: 1 for the flusher's small, frequent files (cheap on the ingest path),
/// 3 for compaction, which rewrites them once into the long-lived files.
pub(crate) fn writer_properties(level: i32) -> WriterProperties {
    let zstd = ZstdLevel::try_new(level)
        .map(Compression::ZSTD)
        .unwrap_or(Compression::SNAPPY);
    WriterProperties::builder().set_compression(zstd).build()
}

/// An event tidemark itself emits (category `system`): segment changes, flow progress.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct SystemEvent {
    pub environment: String,
    pub event_id: String,
    pub event_name: String,
    pub user_id: String,
    /// Occurred and received at, microseconds since the epoch.
    pub at_us: i64,
    /// JSON text.
    pub properties: String,
}

/// `rows` as one batch of the `events` schema.
pub fn system_batch(rows: &[SystemEvent]) -> Result<RecordBatch> {
    use arrow::array::{Date32Array, StringArray, TimestampMicrosecondArray};
    let n = rows.len();
    let text = |f: fn(&SystemEvent) -> &str| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
    };
    let times = || -> ArrayRef {
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.at_us))
                .with_timezone("UTC"),
        )
    };
    Ok(RecordBatch::try_new(
        schema(),
        vec![
            text(|r| &r.environment),
            text(|r| &r.event_id),
            text(|r| &r.event_name),
            Arc::new(StringArray::from(vec!["system"; n])),
            text(|r| &r.user_id),
            times(),
            times(),
            Arc::new(StringArray::from(vec![None::<&str>; n])),
            text(|r| &r.properties),
            Arc::new(Date32Array::from_iter_values(rows.iter().map(|r| {
                i32::try_from(r.at_us.div_euclid(86_400_000_000)).unwrap_or_default()
            }))),
        ],
    )?)
}

/// Loads `events`, creating the (empty) table first if it does not exist.
pub async fn open_or_create(store: &Store) -> Result<DeltaTable> {
    store
        .load_or_create_table(&TableSpec {
            name: TABLE,
            comment: Some("tidemark analytics events"),
            schema: &schema(),
            partition_columns: &PARTITION_COLUMNS,
            // No min/max of user ids, event ids or properties in the Delta log: the log
            // outlives an erasure's VACUUM.
            stats_columns: STATS_COLUMNS,
        })
        .await
}

/// The last WAL segment that `app_id` committed, from the table's `txn` actions.
pub async fn committed_version(table: &DeltaTable, app_id: &str) -> Result<Option<i64>> {
    let log_store = table.log_store();
    Ok(table
        .snapshot()?
        .transaction_version(log_store.as_ref(), app_id)
        .await?)
}

/// Appends `batches` in one Delta commit that also records `(app_id, version)` as a `txn`,
/// so a replay can tell the segment was committed.
pub async fn append(
    table: DeltaTable,
    batches: Vec<RecordBatch>,
    app_id: Option<&str>,
    version: i64,
) -> Result<DeltaTable> {
    let mut commit = CommitProperties::default();
    if let Some(app_id) = app_id {
        commit = commit.with_application_transaction(Transaction::new(app_id, version));
    }
    Ok(table
        .write(batches)
        .with_save_mode(SaveMode::Append)
        .with_partition_columns(PARTITION_COLUMNS)
        .with_writer_properties(writer_properties(1))
        .with_commit_properties(commit)
        .await?)
}

/// Compacts small files of the partitions received on or after `since` (a date, `YYYY-MM-DD`).
/// Returns the table and the number of files removed.
pub async fn optimize_since(
    table: DeltaTable,
    since: &str,
    target_size: u64,
) -> Result<(DeltaTable, u64)> {
    let filters = [(col::RECEIVED_DATE, FilterOp::Ge, FilterValue::Scalar(since))];
    let target = NonZeroU64::new(target_size.max(1024 * 1024)).unwrap_or(NonZeroU64::MIN);
    let (table, metrics) = table
        .optimize()
        .with_filters(&filters)
        .with_target_size(target)
        .with_writer_properties(writer_properties(3))
        .await?;
    Ok((table, metrics.num_files_removed))
}
