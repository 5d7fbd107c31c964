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
///
/// Relies on the flusher's invariant: segments are committed strictly in sequence order
/// (a failed commit blocks the later ones), so every segment at or below the recorded
/// version is in the table.
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

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Arc;

    use arrow::array::AsArray;
    use arrow::compute::cast;
    use arrow::datatypes::DataType;
    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};
    use tokio::sync::Notify;

    use super::*;
    use crate::config::AckMode;
    use crate::ingest::batch::build_batch;
    use crate::ingest::event::{BodyFormat, parse_batch};
    use crate::ingest::log::{Log, LogOptions};

    fn batch(ids: &[String]) -> arrow::record_batch::RecordBatch {
        let body: String = ids
            .iter()
            .map(|id| format!("{{\"event_id\":\"{id}\",\"event_name\":\"n\",\"user_id\":\"u\"}}\n"))
            .collect();
        let ev = parse_batch(body.as_bytes(), BodyFormat::Ndjson, &Default::default()).unwrap();
        build_batch("default", 1_714_564_800_000_000, &ev, &vec![true; ev.len()]).unwrap()
    }

    async fn stored_ids(store: &Store) -> Vec<String> {
        let batches = crate::query::query(store, None, "select event_id from events")
            .await
            .unwrap();
        let mut ids: Vec<String> = batches
            .iter()
            .flat_map(|b| {
                let col = cast(b.column(0), &DataType::Utf8).unwrap();
                col.as_string::<i32>()
                    .iter()
                    .map(|v| v.unwrap().to_string())
                    .collect::<Vec<_>>()
            })
            .collect();
        ids.sort();
        ids
    }

    /// Random runs of segments, each crashed at a random point (after the commit and
    /// before the file is deleted, or before the commit), plus a torn tail: after replay
    /// every acknowledged batch is in the table exactly once and the WAL is empty.
    #[tokio::test(flavor = "multi_thread")]
    async fn replay_stores_every_acknowledged_batch_exactly_once() {
        for seed in 0..6u64 {
            let mut rng = StdRng::seed_from_u64(seed);
            let dir = tempfile::tempdir().unwrap();
            let name = format!("memory://replay-{seed}-{}", uuid::Uuid::new_v4().simple());
            let store = Store::open(&name, &Default::default()).unwrap();
            let first = replay_wal(&store, dir.path()).await.unwrap();
            drop(first.lock);
            let log = Log::start(LogOptions {
                mode: AckMode::Wal,
                dir: dir.path().to_path_buf(),
                next_seq: first.next_seq,
                flush_rows: usize::MAX,
                flush_now: Arc::new(Notify::new()),
            })
            .unwrap();
            let mut table = first.table;
            let mut expected = Vec::new();
            let segments = rng.random_range(1..5u64);
            // The flusher commits strictly in order, so the committed segments are always
            // a prefix: the crash comes after `crash_at` of them.
            let crash_at = rng.random_range(0..=segments);
            for s in 0..segments {
                for b in 0..rng.random_range(1..4) {
                    let ids: Vec<String> = (0..rng.random_range(1..20))
                        .map(|i| format!("{seed}-{s}-{b}-{i}"))
                        .collect();
                    let batch = batch(&ids);
                    let payload = wal::encode_batch(&batch).unwrap();
                    log.append(batch, payload).await.unwrap();
                    expected.extend(ids);
                }
                let seg = log.rotate().await.unwrap().unwrap();
                let path = seg.path.clone().unwrap();
                // Segments from `crash_at` on were never committed.
                if s < crash_at {
                    table = events_table::append(
                        table,
                        seg.batches,
                        Some(&first.app_id),
                        seg.seq as i64,
                    )
                    .await
                    .unwrap();
                    // Or the crash came between the commit and the deletion.
                    if rng.random_bool(0.5) {
                        wal::remove_segment(&path).unwrap();
                    }
                }
            }
            // One more acknowledged batch, then a record torn by the crash.
            let ids = vec![format!("{seed}-tail")];
            let b = batch(&ids);
            let p = wal::encode_batch(&b).unwrap();
            let seq = log.append(b, p).await.unwrap();
            expected.extend(ids);
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(wal_paths::segment(dir.path(), seq))
                .unwrap();
            f.write_all(&[200, 0, 0, 0, 1, 2, 3, 4, 5, 6]).unwrap();
            drop(log);

            let again = replay_wal(&store, dir.path()).await.unwrap();
            assert_eq!(again.app_id, first.app_id, "the node id survives restarts");
            assert!(again.next_seq > seq);
            expected.sort();
            assert_eq!(stored_ids(&store).await, expected, "seed {seed}");
            assert!(wal::list_segments(dir.path()).unwrap().is_empty());
        }
    }
}
