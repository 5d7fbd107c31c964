//! Aliases: the `aliases` Delta table, one row per link an SDK's `alias` call (or
//! PostHog's `$identify` / `$create_alias`) made between a previous id and a user id.
//!
//! The jobs count an event whose `user_id` is a previous id for the user it links to
//! (`jobs::inputs::register_new_events`). When a previous id was linked more than once,
//! the earliest link wins: an anonymous id belongs to the first user it was tied to.
//! Links apply to the events a job run counts after the link is stored; a rebuild
//! applies every link to every event.

use std::collections::HashSet;
use std::sync::{Arc, LazyLock};

use arrow::array::AsArray;
use datafusion::prelude::{SessionContext, col, lit};

use arrow::array::{RecordBatch, StringArray, TimestampMicrosecondArray};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::DeltaTable;
use deltalake::protocol::SaveMode;

use crate::Result;
use crate::storage::events_table::{timestamp_type, writer_properties};
use crate::storage::{Store, TableSpec};

pub const TABLE: &str = "aliases";
pub const PARTITION_COLUMNS: [&str; 1] = ["environment"];

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("environment", DataType::Utf8, false),
        // the id events were sent under before (an anonymous id)
        Field::new("previous_id", DataType::Utf8, false),
        // the user those events count for
        Field::new("user_id", DataType::Utf8, false),
        Field::new("at", timestamp_type(), false),
    ]))
});

pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

/// One link between a previous id and a user id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alias {
    pub previous_id: String,
    pub user_id: String,
}

/// The rows of `links` for `environment`, stamped `at_us`.
pub fn rows(environment: &str, links: &[Alias], at_us: i64) -> Result<RecordBatch> {
    Ok(RecordBatch::try_new(
        schema(),
        vec![
            Arc::new(StringArray::from(vec![environment; links.len()])),
            Arc::new(StringArray::from_iter_values(
                links.iter().map(|l| l.previous_id.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                links.iter().map(|l| l.user_id.as_str()),
            )),
            Arc::new(
                TimestampMicrosecondArray::from(vec![at_us; links.len()]).with_timezone("UTC"),
            ),
        ],
    )?)
}

/// Loads `aliases`, creating it (empty) first if needed.
pub async fn open_or_create(store: &Store) -> Result<DeltaTable> {
    store
        .load_or_create_table(&TableSpec {
            name: TABLE,
            comment: Some("tidemark aliases: previous ids and the users they count for"),
            schema: &schema(),
            partition_columns: &PARTITION_COLUMNS,
            stats_columns: "at",
        })
        .await
}

/// Appends the `links` of `environment` the table does not hold yet, in one Delta commit
/// (an SDK's retry of a stored alias adds no row; two racing writers may both add one,
/// which the earliest-link rule reads as one).
pub async fn append(store: &Store, environment: &str, links: &[Alias]) -> Result<()> {
    let table = open_or_create(store).await?;
    let held = held(&table, environment, links).await?;
    let mut new: Vec<Alias> = Vec::new();
    for l in links {
        if !held.contains(&(l.previous_id.clone(), l.user_id.clone())) && !new.contains(l) {
            new.push(l.clone());
        }
    }
    if new.is_empty() {
        return Ok(());
    }
    let batch = rows(environment, &new, chrono::Utc::now().timestamp_micros())?;
    table
        .write(vec![batch])
        .with_save_mode(SaveMode::Append)
        .with_partition_columns(PARTITION_COLUMNS)
        .with_writer_properties(writer_properties(1))
        .await?;
    Ok(())
}

/// Which of `links` the table already holds.
async fn held(
    table: &DeltaTable,
    environment: &str,
    links: &[Alias],
) -> Result<HashSet<(String, String)>> {
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state())?;
    let ids: Vec<_> = links.iter().map(|l| lit(l.previous_id.as_str())).collect();
    let batches = ctx
        .read_table(table.table_provider().await?)?
        .filter(
            col("environment")
                .eq(lit(environment))
                .and(col("previous_id").in_list(ids, false)),
        )?
        .select_columns(&["previous_id", "user_id"])?
        .collect()
        .await?;
    let mut out = HashSet::new();
    for b in &batches {
        // Delta scans may give views of strings: cast to plain Utf8 first.
        let p = arrow::compute::cast(b.column(0), &DataType::Utf8)?;
        let u = arrow::compute::cast(b.column(1), &DataType::Utf8)?;
        let (p, u) = (p.as_string::<i32>(), u.as_string::<i32>());
        for i in 0..b.num_rows() {
            out.insert((p.value(i).to_string(), u.value(i).to_string()));
        }
    }
    Ok(out)
}

/// The job SQL's `resolved_aliases`: one row per (environment, previous_id), the earliest
/// link's user id; a link of an id to itself is no link.
pub const RESOLVED_SQL: &str = "SELECT environment, previous_id, \
     first_value(user_id ORDER BY at, user_id) AS alias_user_id \
     FROM aliases WHERE previous_id <> user_id GROUP BY environment, previous_id";
