//! A node's ingest: replay the write-ahead log, load the dedup index, then run the log
//! thread and the flusher that commits it to the `events` table.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::{Notify, watch};

use crate::config::{AckMode, Config};
use crate::ingest::dedup::Dedup;
use crate::ingest::flusher::Flusher;
use crate::ingest::log::{Log, LogOptions};
use crate::ingest::{Ingestor, recovery};
use crate::server::AppState;
use crate::storage::paths::wal as wal_paths;
use crate::storage::{Store, events_table};
use crate::{Error, Result};

/// The WAL directory `config` asks for.
pub fn wal_dir(config: &Config, store: &Store) -> PathBuf {
    match (&config.wal_dir, store.local_dir()) {
        (Some(dir), _) => dir.clone(),
        (None, Some(data)) => wal_paths::default_dir_in(data),
        (None, None) => PathBuf::from("./tidemark-wal"),
    }
}

/// Recovery, then the log and the flusher. Returns the flusher's task.
pub async fn start(
    config: &Config,
    state: &AppState,
    stop_rx: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<Result<()>>> {
    let (store, metrics) = (&state.store, state.metrics.clone());
    let dir = wal_dir(config, store);
    let (table, app_id, next_seq, wal_lock) = if config.ack == AckMode::Wal || dir.exists() {
        let r = recovery::replay_wal(store, &dir).await?;
        if r.replayed_segments > 0 {
            println!(
                "tidemark: replayed {} WAL segment(s), {} event(s)",
                r.replayed_segments, r.replayed_rows
            );
        }
        (r.table, Some(r.app_id), r.next_seq, Some(r.lock))
    } else {
        (events_table::open_or_create(store).await?, None, 1, None)
    };
    let app_id = if config.ack == AckMode::Wal {
        app_id
    } else {
        None
    };

    let dedup = Arc::new(Dedup::new(config.dedup_window, config.dedup_max_entries));
    let now = chrono::Utc::now().timestamp_micros();
    let remembered = recovery::load_dedup(&table, &dedup, config.dedup_window, now).await?;
    tracing::info!(remembered, "dedup index loaded");

    let flush_now = Arc::new(Notify::new());
    let log = Log::start(LogOptions {
        mode: config.ack,
        dir,
        next_seq,
        flush_rows: config.flush_rows,
        flush_now: flush_now.clone(),
    })?;
    let (committed_tx, committed_rx) = watch::channel(next_seq - 1);
    let ingestor = Arc::new(Ingestor {
        limits: config.limits.clone(),
        mode: config.ack,
        log: log.clone(),
        dedup,
        committed: committed_rx,
        commit_timeout: config.commit_timeout,
        max_pending_bytes: config.max_pending_bytes,
        metrics: metrics.clone(),
    });
    let flusher = Flusher {
        table,
        app_id,
        log,
        committed: committed_tx,
        metrics,
        interval: config.flush_interval,
        flush_now,
        queue: VecDeque::new(),
        wal_lock,
        verify_next: false,
    };
    let task = tokio::spawn(flusher.run(stop_rx));
    state
        .ingestor
        .set(ingestor)
        .map_err(|_| Error::Unavailable("ingest started twice".into()))?;
    Ok(task)
}
