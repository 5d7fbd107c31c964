//! Startup recovery: replay WAL segments the table does not have yet (by `txn` version),
//! then rebuild the dedup index from the table's recent events.

use std::path::Path;
use std::time::Duration;

use arrow::array::{Array, AsArray};
use arrow::compute::cast;
use arrow::datatypes::{DataType, TimestampMicrosecondType};
use datafusion::prelude::{SessionContext, col, lit};
use datafusion::scalar::ScalarValue;
use deltalake::DeltaTable;
use futures::StreamExt;

use super::dedup::{self, Dedup};
use super::wal;
use crate::storage::paths::wal as wal_paths;
use crate::storage::{Store, events_table};
use crate::{Error, Result};

/// What recovery found.
pub struct Recovered {
    /// Held for the life of the process: one node per WAL directory.
    pub lock: std::fs::File,
    pub table: DeltaTable,
    /// The WAL's Delta `txn` app id.
    pub app_id: String,
    /// The sequence number the log continues with.
    pub next_seq: u64,
    pub replayed_segments: usize,
    pub replayed_rows: usize,
}

/// This node's id, created on first use and kept in the WAL directory.
fn node_id(dir: &Path) -> Result<String> {
    let file = wal_paths::node_id_file(dir);
    match std::fs::read_to_string(&file) {
        Ok(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
        _ => {
            let id = uuid::Uuid::new_v4().simple().to_string();
            let tmp = file.with_extension("tmp");
            std::fs::write(&tmp, &id)?;
            std::fs::File::open(&tmp)?.sync_all()?;
            std::fs::rename(&tmp, &file)?;
            wal::sync_dir(dir)?;
            Ok(id)
        }
    }
}

/// Takes the WAL directory's lock, so a second process on the same directory stops at once
/// instead of replaying and deleting segments the first one is writing.
fn lock_dir(dir: &Path) -> Result<std::fs::File> {
    let path = wal_paths::lock_file(dir);
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(Error::Wal {
            path: dir.to_path_buf(),
            message: "another tidemark process is using this write-ahead log directory (give each node its own --wal-dir)".into(),
        }),
        Err(std::fs::TryLockError::Error(e)) => Err(e.into()),
    }
}

/// Commits every segment in `wal_dir` newer than the table's `txn` version for this node.
pub async fn replay_wal(store: &Store, wal_dir: &Path) -> Result<Recovered> {
    std::fs::create_dir_all(wal_dir).map_err(|e| Error::Wal {
        path: wal_dir.to_path_buf(),
        message: format!("cannot create WAL directory: {e}"),
    })?;
    let lock = lock_dir(wal_dir)?;
    let app_id = format!("tidemark-ingest-{}", node_id(wal_dir)?);
    let mut table = events_table::open_or_create(store).await?;
    let last = events_table::committed_version(&table, &app_id)
        .await?
        .unwrap_or(0)
        .max(0) as u64;
    let mut max_seq = last;
    let (mut replayed_segments, mut replayed_rows) = (0, 0);
    for (seq, path) in wal::list_segments(wal_dir)? {
        max_seq = max_seq.max(seq);
        if seq <= last {
            // Committed before the crash, deleted only now.
            wal::remove_segment(&path)?;
            continue;
        }
        let seg = wal::read_segment(&path)?;
        if seg.torn {
            tracing::warn!(path = %path.display(), "dropping the torn tail of a WAL segment (never acknowledged)");
        }
        if !seg.batches.is_empty() {
            replayed_rows += seg.batches.iter().map(|b| b.num_rows()).sum::<usize>();
            table = events_table::append(table, seg.batches, Some(&app_id), seq as i64).await?;
            replayed_segments += 1;
        }
        wal::remove_segment(&path)?;
    }
    Ok(Recovered {
        lock,
        table,
        app_id,
        next_seq: max_seq + 1,
        replayed_segments,
        replayed_rows,
    })
}

/// Remembers every event id received within `window` before `now_us`.
pub async fn load_dedup(
    table: &DeltaTable,
    dedup: &Dedup,
    window: Duration,
    now_us: i64,
) -> Result<usize> {
    let cutoff_us = now_us - window.as_micros() as i64;
    let cutoff_day = cutoff_us.div_euclid(86_400_000_000) as i32;
    let ctx = SessionContext::new();
    table.update_datafusion_session(&ctx.state())?;
    let provider = table.table_provider().await?;
    let df = ctx
        .read_table(provider)?
        .filter(
            col(events_table::col::RECEIVED_DATE)
                .gt_eq(lit(ScalarValue::Date32(Some(cutoff_day))))
                .and(col(events_table::col::RECEIVED_AT).gt_eq(lit(
                    ScalarValue::TimestampMicrosecond(Some(cutoff_us), Some("UTC".into())),
                ))),
        )?
        .select_columns(&[
            events_table::col::ENVIRONMENT,
            events_table::col::EVENT_ID,
            events_table::col::RECEIVED_AT,
        ])?;
    let mut stream = df.execute_stream().await?;
    let mut n = 0;
    while let Some(batch) = stream.next().await {
        let batch = batch?;
        let env = cast(batch.column(0), &DataType::Utf8)?;
        let ids = cast(batch.column(1), &DataType::Utf8)?;
        let at = cast(batch.column(2), &events_table::timestamp_type())?;
        let (env, ids) = (env.as_string::<i32>(), ids.as_string::<i32>());
        let at = at.as_primitive::<TimestampMicrosecondType>();
        for i in 0..batch.num_rows() {
            if env.is_null(i) || ids.is_null(i) {
                continue;
            }
            let at_s = (at.value(i) / 1_000_000).clamp(0, i64::from(u32::MAX >> 1)) as u32;
            dedup.remember(dedup::key(env.value(i), ids.value(i)), at_s);
            n += 1;
        }
    }
    Ok(n)
}
