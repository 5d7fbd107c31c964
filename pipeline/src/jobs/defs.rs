//! The derived tables and the SQL that computes them (from `sql/jobs/`, compiled in).

use std::sync::{Arc, LazyLock};

use arrow::array::{ArrayRef, RecordBatch};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};

use crate::storage::events_table::timestamp_type;
use crate::{Error, Result};

/// Shared by every job: the events a run counts (dedup, clock skew, platform family).
pub const COUNTED_EVENTS_SQL: &str = include_str!("../../../sql/jobs/counted_events.sql");
pub const REPEATED_EVENTS_SQL: &str = include_str!("../../../sql/jobs/repeated_events.sql");

/// What readers see as `profiles`: activity from events joined with written attributes.
pub const PROFILES_VIEW_SQL: &str = include_str!("../../../sql/jobs/profiles_view.sql");

/// The table a job follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `events`: the job reads `counted_events` (deduplicated, clock skew clamped).
    Events,
    /// `profile_changes`: the job reads `new_changes`.
    ProfileChanges,
}

impl Source {
    pub fn table(self) -> &'static str {
        match self {
            Source::Events => crate::storage::events_table::TABLE,
            Source::ProfileChanges => crate::users::changes::TABLE,
        }
    }

    /// The SQL input holding the rows added since the cursor.
    pub fn input(self) -> &'static str {
        match self {
            Source::Events => "new_events",
            Source::ProfileChanges => "new_changes",
        }
    }
}

pub const SOURCES: [Source; 2] = [Source::Events, Source::ProfileChanges];

/// One SQL job and the Delta table it maintains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Job {
    Profiles,
    EventStats,
    Attributes,
}

pub const ALL: [Job; 3] = [Job::Profiles, Job::EventStats, Job::Attributes];

/// The jobs' pending tables, which live below `_tidemark/` (for VACUUM).
pub fn pending_tables() -> Vec<String> {
    ALL.iter().map(|j| j.pending().to_string()).collect()
}

impl Job {
    pub fn source(self) -> Source {
        match self {
            Job::Profiles | Job::EventStats => Source::Events,
            Job::Attributes => Source::ProfileChanges,
        }
    }

    /// The jobs that follow `source`.
    pub fn of(source: Source) -> Vec<Job> {
        ALL.into_iter().filter(|j| j.source() == source).collect()
    }

    /// The name readers see the merged rows under. `profiles` itself is
    /// [`PROFILES_VIEW_SQL`] over `profile_activity` and `profile_attributes`.
    pub fn view(self) -> &'static str {
        match self {
            Job::Profiles => "profile_activity",
            Job::EventStats => "event_stats",
            Job::Attributes => "profile_attributes",
        }
    }

    /// The columns whose min/max the Delta log keeps (for file skipping). Never user ids
    /// or values: the log outlives an erasure's VACUUM.
    pub fn stats_columns(self) -> &'static str {
        match self {
            Job::Profiles => "created_at,updated_at",
            Job::EventStats => "event_name,first_at,last_at",
            Job::Attributes => "kind,created_at,updated_at",
        }
    }

    /// The Delta table (and the name readers query, through the merge view).
    pub fn table(self) -> &'static str {
        match self {
            Job::Profiles => "profiles",
            Job::EventStats => "event_stats",
            Job::Attributes => "profile_attributes",
        }
    }

    /// The name the merge SQL reads the raw (partial) rows under.
    pub fn parts(self) -> &'static str {
        match self {
            Job::Profiles => "profile_parts",
            Job::EventStats => "event_stats_parts",
            Job::Attributes => "profile_attribute_parts",
        }
    }

    /// Aggregates `counted_events` (or `new_changes`) into partial rows.
    pub fn sql(self) -> &'static str {
        match self {
            Job::Profiles => include_str!("../../../sql/jobs/profiles.sql"),
            Job::EventStats => include_str!("../../../sql/jobs/event_stats.sql"),
            Job::Attributes => include_str!("../../../sql/jobs/profile_attributes.sql"),
        }
    }

    /// Folds partial rows into one row per key.
    pub fn merge_sql(self) -> &'static str {
        match self {
            Job::Profiles => include_str!("../../../sql/jobs/profiles_merge.sql"),
            Job::EventStats => include_str!("../../../sql/jobs/event_stats_merge.sql"),
            Job::Attributes => include_str!("../../../sql/jobs/profile_attributes_merge.sql"),
        }
    }

    /// The internal Delta table the incremental runs append partial rows to, with a
    /// [`RUN_COLUMN`]; only tidemark's views merge it (see [`super::publish`]).
    pub fn pending(self) -> &'static str {
        match self {
            Job::Profiles => "_tidemark/pending/profiles",
            Job::EventStats => "_tidemark/pending/event_stats",
            Job::Attributes => "_tidemark/pending/profile_attributes",
        }
    }

    /// The Delta `txn` app id on the published table: the last run it holds.
    pub fn publish_app_id(self) -> &'static str {
        match self {
            Job::Profiles => "tidemark-publish-profiles",
            Job::EventStats => "tidemark-publish-event_stats",
            Job::Attributes => "tidemark-publish-profile_attributes",
        }
    }

    /// The columns after the user id that make a row's key, in the published files'
    /// sort order.
    pub fn key_columns(self) -> &'static [&'static str] {
        match self {
            Job::Profiles => &[],
            Job::EventStats => &["event_name"],
            Job::Attributes => &["kind", "name"],
        }
    }

    /// The schema of the published table: [`Job::schema`] and [`BUCKET_COLUMN`].
    pub fn published_schema(self) -> SchemaRef {
        with_column(
            &self.schema(),
            Field::new(BUCKET_COLUMN, DataType::Utf8, false),
        )
    }

    /// The schema of the pending table: [`Job::schema`] and [`RUN_COLUMN`].
    pub fn pending_schema(self) -> SchemaRef {
        with_column(
            &self.schema(),
            Field::new(RUN_COLUMN, DataType::Int64, false),
        )
    }

    /// The Delta `txn` app id that holds the job's cursor, committed with its rows (on the
    /// pending table; a rebuild or publish also moves it, see [`super::runner`]).
    pub fn app_id(self) -> &'static str {
        match self {
            Job::Profiles => "tidemark-job-profiles",
            Job::EventStats => "tidemark-job-event_stats",
            Job::Attributes => "tidemark-job-profile_attributes",
        }
    }

    pub fn schema(self) -> SchemaRef {
        match self {
            Job::Profiles => PROFILES.clone(),
            Job::EventStats => EVENT_STATS.clone(),
            Job::Attributes => PROFILE_ATTRIBUTES.clone(),
        }
    }

    pub fn by_name(name: &str) -> Option<Job> {
        ALL.into_iter().find(|j| j.table() == name)
    }
}

/// The published tables' bucket of a user: the first hex digit of `md5(user_id)`, 16
/// buckets, so any engine can compute it (`substr(md5(user_id), 1, 1)` in DuckDB, Spark,
/// DataFusion, Trino's `substr(to_hex(md5(to_utf8(user_id))), 1, 1)` lower-cased).
pub const BUCKET_COLUMN: &str = "user_bucket";

/// The bucket expression in DataFusion SQL.
pub const BUCKET_SQL: &str = "substr(md5(user_id), 1, 1)";

/// Published tables: one row per key, files per environment and user bucket, each file
/// sorted by user id.
pub const PUBLISHED_PARTITIONS: [&str; 2] = ["environment", BUCKET_COLUMN];

/// The pending tables' run: the source version the run that wrote the row covered up to.
pub const RUN_COLUMN: &str = "run";

/// Pending tables: one partition per run, so dropping published runs is a metadata-only
/// delete.
pub const PENDING_PARTITIONS: [&str; 2] = ["environment", RUN_COLUMN];

fn with_column(schema: &SchemaRef, field: Field) -> SchemaRef {
    let mut fields: Vec<Field> = schema.fields().iter().map(|f| f.as_ref().clone()).collect();
    fields.push(field);
    Arc::new(Schema::new(fields))
}

static PROFILES: LazyLock<SchemaRef> = LazyLock::new(|| {
    let ts = |name: &str| Field::new(name, timestamp_type(), true);
    Arc::new(Schema::new(vec![
        Field::new("environment", DataType::Utf8, false),
        Field::new("user_id", DataType::Utf8, false),
        ts("created_at"),
        ts("first_seen_at"),
        ts("last_seen_at"),
        ts("last_seen_ios_at"),
        ts("last_seen_android_at"),
        ts("last_seen_web_at"),
        ts("last_seen_server_at"),
        Field::new("event_count", DataType::Int64, false),
        Field::new("last_event_name", DataType::Utf8, true),
        ts("last_event_at"),
        ts("updated_at"),
    ]))
});

static EVENT_STATS: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("environment", DataType::Utf8, false),
        Field::new("user_id", DataType::Utf8, false),
        Field::new("event_name", DataType::Utf8, false),
        Field::new("first_at", timestamp_type(), true),
        Field::new("last_at", timestamp_type(), true),
        Field::new("count", DataType::Int64, false),
    ]))
});

static PROFILE_ATTRIBUTES: LazyLock<SchemaRef> = LazyLock::new(|| {
    let text = |name: &str, nullable| Field::new(name, DataType::Utf8, nullable);
    Arc::new(Schema::new(vec![
        text("environment", false),
        text("user_id", false),
        text("kind", false),
        text("name", false),
        text("first_set_id", true),
        text("first_once", true),
        text("last_write", true),
        Field::new("created_at", timestamp_type(), true),
        Field::new("updated_at", timestamp_type(), true),
    ]))
});

/// Brings a query's batch to the table's declared schema (column order, types,
/// nullability), so every writer of the table agrees on it.
pub fn conform(batch: &RecordBatch, schema: &SchemaRef) -> Result<RecordBatch> {
    let mut columns: Vec<ArrayRef> = Vec::with_capacity(schema.fields().len());
    for field in schema.fields() {
        let column = batch.column_by_name(field.name()).ok_or_else(|| {
            Error::Invalid(format!("job output has no column '{}'", field.name()))
        })?;
        let column = if column.data_type() == field.data_type() {
            column.clone()
        } else {
            arrow::compute::cast(column, field.data_type())?
        };
        if !field.is_nullable() && column.null_count() > 0 {
            return Err(Error::Invalid(format!(
                "job output column '{}' has nulls but the table declares it NOT NULL",
                field.name()
            )));
        }
        columns.push(column);
    }
    Ok(RecordBatch::try_new(schema.clone(), columns)?)
}
