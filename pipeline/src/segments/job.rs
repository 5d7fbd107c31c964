//! The segment job: evaluates every segment of an environment, records who entered and
//! who exited, and emits those changes as `system` events.
//!
//! Tables (partitioned by environment):
//! - `segment_changes` (environment, segment_id, user_id, change, at, run): append-only,
//!   the source of truth;
//! - `segment_members` (environment, segment_id, user_id, entered_at): the membership
//!   after the last run, rewritten per environment;
//! - `events`: a `segment-entered` / `segment-exited` event (category `system`,
//!   properties `{segment_id, segment_name}`) per change.
//!
//! A run N of an environment writes, in order, its changes, its events and its members,
//! each commit carrying the Delta `txn` (app id `tidemark-segments-<env>`, version N). A
//! crash between them is repaired by the next run before it evaluates: changes committed
//! for a run the members table has not reached are applied to the members, and their
//! events are appended if the events table has not reached that run. So no change is lost
//! and none is emitted twice.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use arrow::array::{
    Array, AsArray, Int64Array, RecordBatch, StringArray, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::prelude::{SessionContext, col, lit};
use deltalake::DeltaTable;
use deltalake::kernel::Transaction;
use deltalake::kernel::transaction::CommitProperties;
use deltalake::protocol::SaveMode;
use serde::Serialize;
use sha2::Digest;

use super::compile;
use super::membership::{self, Change, Members, apply};
use super::store::Segments;
use crate::query::to_json_rows;
use crate::storage::events_table::{self, SystemEvent, timestamp_type, writer_properties};
use crate::storage::lease::Leases;
use crate::storage::{Store, TableSpec};
use crate::{Result, query};

pub const MEMBERS: &str = "segment_members";
pub const CHANGES: &str = "segment_changes";
pub const ENTERED_EVENT: &str = "segment-entered";
pub const EXITED_EVENT: &str = "segment-exited";

static MEMBERS_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("environment", DataType::Utf8, false),
        Field::new("segment_id", DataType::Utf8, false),
        Field::new("user_id", DataType::Utf8, false),
        Field::new("entered_at", timestamp_type(), false),
    ]))
});

static CHANGES_SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("environment", DataType::Utf8, false),
        Field::new("segment_id", DataType::Utf8, false),
        Field::new("user_id", DataType::Utf8, false),
        Field::new("change", DataType::Utf8, false),
        Field::new("at", timestamp_type(), false),
        Field::new("run", DataType::Int64, false),
    ]))
});

fn app_id(environment: &str) -> String {
    format!("tidemark-segments-{environment}")
}

/// What one run of one environment did.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SegmentRun {
    pub environment: String,
    pub run: i64,
    pub segments: usize,
    pub entered: usize,
    pub exited: usize,
    /// Changes of an interrupted earlier run that this run completed.
    pub repaired: usize,
}

async fn table(store: &Store, name: &str, schema: &SchemaRef) -> Result<DeltaTable> {
    store
        .load_or_create_table(&TableSpec {
            name,
            comment: None,
            schema,
            partition_columns: &["environment"],
            stats_columns: if name == CHANGES {
                "segment_id,change,at,run"
            } else {
                "segment_id,entered_at"
            },
        })
        .await
}

async fn txn(table: &DeltaTable, app: &str) -> Result<i64> {
    Ok(events_table::committed_version(table, app)
        .await?
        .unwrap_or(0))
}

fn commit(app: &str, run: i64) -> CommitProperties {
    CommitProperties::default().with_application_transaction(Transaction::new(app, run))
}

/// Current members of `environment`: segment -> user -> entered_at (µs).
async fn read_members(ctx: &SessionContext, t: &DeltaTable, env: &str) -> Result<Members> {
    t.update_datafusion_session(&ctx.state())?;
    let batches = ctx
        .read_table(t.table_provider().await?)?
        .filter(col("environment").eq(lit(env)))?
        .collect()
        .await?;
    let mut out: Members = BTreeMap::new();
    for b in &batches {
        let seg = b
            .column_by_name("segment_id")
            .map(|c| arrow::compute::cast(c, &DataType::Utf8))
            .transpose()?;
        let user = b
            .column_by_name("user_id")
            .map(|c| arrow::compute::cast(c, &DataType::Utf8))
            .transpose()?;
        let at = b
            .column_by_name("entered_at")
            .map(|c| arrow::compute::cast(c, &DataType::Int64))
            .transpose()?;
        let (Some(seg), Some(user), Some(at)) = (seg, user, at) else {
            continue;
        };
        let (seg, user, at) = (
            seg.as_string::<i32>(),
            user.as_string::<i32>(),
            at.as_primitive::<arrow::datatypes::Int64Type>(),
        );
        for i in 0..b.num_rows() {
            out.entry(seg.value(i).to_string())
                .or_default()
                .insert(user.value(i).to_string(), at.value(i));
        }
    }
    Ok(out)
}

/// The changes `run` recorded for `environment`, with their time.
async fn read_changes(
    ctx: &SessionContext,
    t: &DeltaTable,
    env: &str,
    run: i64,
) -> Result<(Vec<Change>, i64)> {
    t.update_datafusion_session(&ctx.state())?;
    let batches = ctx
        .read_table(t.table_provider().await?)?
        .filter(col("environment").eq(lit(env)).and(col("run").eq(lit(run))))?
        .collect()
        .await?;
    let mut out = Vec::new();
    let mut at = 0;
    for r in to_json_rows(&batches)? {
        out.push(Change {
            segment_id: r["segment_id"].as_str().unwrap_or_default().into(),
            user_id: r["user_id"].as_str().unwrap_or_default().into(),
            entered: r["change"] == "entered",
        });
        if let Some(t) = r["at"]
            .as_str()
            .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
        {
            at = t.timestamp_micros();
        }
    }
    out.sort();
    Ok((out, at))
}

fn event_id(env: &str, run: i64, c: &Change) -> String {
    let mut h = sha2::Sha256::new();
    for part in [
        env,
        &run.to_string(),
        &c.segment_id,
        &c.user_id,
        if c.entered { "in" } else { "out" },
    ] {
        h.update(part.as_bytes());
        h.update([0xff]);
    }
    format!("seg_{}", &hex::encode(h.finalize())[..32])
}

fn changes_batch(env: &str, run: i64, at: i64, changes: &[Change]) -> Result<RecordBatch> {
    let n = changes.len();
    Ok(RecordBatch::try_new(
        CHANGES_SCHEMA.clone(),
        vec![
            Arc::new(StringArray::from(vec![env; n])),
            Arc::new(StringArray::from_iter_values(
                changes.iter().map(|c| c.segment_id.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                changes.iter().map(|c| c.user_id.as_str()),
            )),
            Arc::new(StringArray::from_iter_values(
                changes
                    .iter()
                    .map(|c| if c.entered { "entered" } else { "exited" }),
            )),
            Arc::new(TimestampMicrosecondArray::from(vec![at; n]).with_timezone("UTC")),
            Arc::new(Int64Array::from(vec![run; n])),
        ],
    )?)
}

fn members_batch(env: &str, members: &Members) -> Result<RecordBatch> {
    let rows: Vec<(&str, &str, i64)> = members
        .iter()
        .flat_map(|(s, users)| {
            users
                .iter()
                .map(move |(u, at)| (s.as_str(), u.as_str(), *at))
        })
        .collect();
    Ok(RecordBatch::try_new(
        MEMBERS_SCHEMA.clone(),
        vec![
            Arc::new(StringArray::from(vec![env; rows.len()])),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
            Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
            Arc::new(
                TimestampMicrosecondArray::from_iter_values(rows.iter().map(|r| r.2))
                    .with_timezone("UTC"),
            ),
        ],
    )?)
}

fn events_batch(
    env: &str,
    run: i64,
    at: i64,
    changes: &[Change],
    names: &BTreeMap<String, String>,
) -> Result<RecordBatch> {
    let rows: Vec<SystemEvent> = changes
        .iter()
        .map(|c| SystemEvent {
            environment: env.to_string(),
            event_id: event_id(env, run, c),
            event_name: if c.entered { ENTERED_EVENT } else { EXITED_EVENT }.to_string(),
            user_id: c.user_id.clone(),
            at_us: at,
            properties: serde_json::json!({
                "segment_id": c.segment_id,
                "segment_name": names.get(&c.segment_id).cloned().unwrap_or_else(|| c.segment_id.clone()),
            })
            .to_string(),
        })
        .collect();
    events_table::system_batch(&rows)
}

async fn write_changes(
    store: &Store,
    env: &str,
    run: i64,
    at: i64,
    changes: &[Change],
) -> Result<()> {
    let t = table(store, CHANGES, &CHANGES_SCHEMA).await?;
    t.write(vec![changes_batch(env, run, at, changes)?])
        .with_save_mode(SaveMode::Append)
        .with_partition_columns(["environment"])
        .with_writer_properties(writer_properties(1))
        .with_commit_properties(commit(&app_id(env), run))
        .await?;
    Ok(())
}

async fn write_events(
    store: &Store,
    env: &str,
    run: i64,
    at: i64,
    changes: &[Change],
    names: &BTreeMap<String, String>,
) -> Result<()> {
    let t = events_table::open_or_create(store).await?;
    if txn(&t, &app_id(env)).await? >= run {
        return Ok(());
    }
    if changes.is_empty() {
        return Ok(());
    }
    events_table::append(
        t,
        vec![events_batch(env, run, at, changes, names)?],
        Some(&app_id(env)),
        run,
    )
    .await?;
    Ok(())
}

async fn write_members(store: &Store, env: &str, run: i64, members: &Members) -> Result<()> {
    let t = table(store, MEMBERS, &MEMBERS_SCHEMA).await?;
    t.write(vec![members_batch(env, members)?])
        .with_save_mode(SaveMode::Overwrite)
        .with_replace_where(col("environment").eq(lit(env)))
        .with_partition_columns(["environment"])
        .with_writer_properties(writer_properties(3))
        .with_commit_properties(commit(&app_id(env), run))
        .await?;
    Ok(())
}

/// Fault injection for crash tests: `TIDEMARK_CRASH_AFTER=segment-changes` (or
/// `segment-events`) aborts the process right after that commit of a run.
fn crash_point(step: &str) {
    if std::env::var("TIDEMARK_CRASH_AFTER").is_ok_and(|v| v == step) {
        eprintln!("tidemark: crashing after {step} (TIDEMARK_CRASH_AFTER)");
        std::process::abort();
    }
}

/// Evaluates every segment of `environment` at `now_us` and records the changes.
pub async fn run_environment(store: &Store, environment: &str, now_us: i64) -> Result<SegmentRun> {
    let app = app_id(environment);
    let members_t = table(store, MEMBERS, &MEMBERS_SCHEMA).await?;
    let changes_t = table(store, CHANGES, &CHANGES_SCHEMA).await?;
    let ctx = query::session(store, Some(environment)).await?;
    let mut members = read_members(&ctx, &members_t, environment).await?;
    let mut m = txn(&members_t, &app).await?;
    let c = txn(&changes_t, &app).await?;
    let segments = Segments::new(store.clone());
    let stored = segments.list(environment).await?;
    let mut names = BTreeMap::new();
    let mut parsed = Vec::new();
    for (id, s) in &stored {
        names.insert(
            id.clone(),
            s.definition["name"].as_str().unwrap_or(id).to_string(),
        );
        match segments.validate(environment, &s.definition).await? {
            Ok(seg) => parsed.push(seg),
            Err(p) => {
                tracing::warn!(segment = %id, problems = ?p, "segment no longer valid; skipped")
            }
        }
    }
    let mut repaired = 0;
    if c > m {
        // an interrupted run: its changes are committed, its members (maybe its events) not
        let (changes, at) = read_changes(&ctx, &changes_t, environment, c).await?;
        write_events(store, environment, c, at, &changes, &names).await?;
        apply(&mut members, &changes, at);
        write_members(store, environment, c, &members).await?;
        repaired = changes.len();
        m = c;
    }
    let run = m + 1;
    super::materialize_inputs(&ctx).await?;
    let mut matching = BTreeMap::new();
    for seg in &parsed {
        let compiled = compile::compile(seg, environment, now_us);
        let batches = ctx
            .sql(&compiled.sql)
            .await?
            .with_param_values(compiled.params.clone())?
            .collect()
            .await?;
        let mut now_members = BTreeSet::new();
        for b in &batches {
            let ids = arrow::compute::cast(b.column(0), &DataType::Utf8)?;
            let ids = ids.as_string::<i32>();
            now_members.extend(
                (0..b.num_rows())
                    .filter(|i| !ids.is_null(*i))
                    .map(|i| ids.value(i).to_string()),
            );
        }
        matching.insert(seg.id.clone(), now_members);
    }
    let diff = membership::diff(&members, matching, now_us);
    let (entered, exited) = diff.counts();
    if diff.changed() {
        if !diff.changes.is_empty() {
            write_changes(store, environment, run, now_us, &diff.changes).await?;
            crash_point("segment-changes");
            write_events(store, environment, run, now_us, &diff.changes, &names).await?;
            crash_point("segment-events");
        }
        write_members(store, environment, run, &diff.next).await?;
    }
    Ok(SegmentRun {
        environment: environment.to_string(),
        run,
        segments: parsed.len(),
        entered,
        exited,
        repaired,
    })
}

/// Logs the runs that changed something.
pub fn log_runs(runs: &[SegmentRun]) {
    for r in runs
        .iter()
        .filter(|r| r.entered + r.exited + r.repaired > 0)
    {
        tracing::info!(environment = %r.environment, run = r.run, entered = r.entered,
            exited = r.exited, repaired = r.repaired, "segments evaluated");
    }
}

/// The lease segment runs take turns with (one run at a time on a store).
pub const LEASE: &str = "segments";

/// Runs every environment that has segments (or members to drop), holding the
/// [`LEASE`] (waiting while another process runs them).
pub async fn run_all(leases: &Leases, now_us: i64) -> Result<Vec<SegmentRun>> {
    leases
        .exclusive(LEASE, LEASE_POLL, async {
            let store = leases.store();
            let doc = Segments::new(store.clone()).all().await?;
            let mut out = Vec::new();
            for env in doc.environments.keys() {
                out.push(run_environment(store, env, now_us).await?);
            }
            Ok(out)
        })
        .await
}

/// How often a segment run waiting for another one checks the lease.
const LEASE_POLL: Duration = Duration::from_millis(200);
