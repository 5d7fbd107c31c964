//! The flusher: every `flush_interval` (or when `flush_rows` are waiting) it seals the
//! current WAL segment and commits it to `events` as one Delta transaction whose `txn`
//! version is the segment's sequence number, then deletes the segment file. A segment that
//! fails to commit stays queued and is retried, in order, on the next tick.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use deltalake::DeltaTable;
use tokio::sync::{Notify, watch};

use super::log::{Log, Segment};
use super::wal;
use crate::metrics::Metrics;
use crate::storage::events_table;
use crate::{Error, Result};

pub struct Flusher {
    pub table: DeltaTable,
    /// The Delta `txn` app id of this node's WAL (`None` with `ack = "commit"`).
    pub app_id: Option<String>,
    pub log: Log,
    pub committed: watch::Sender<u64>,
    pub metrics: Arc<Metrics>,
    pub interval: Duration,
    pub flush_now: Arc<Notify>,
    pub queue: VecDeque<Segment>,
    /// The WAL directory's lock, released when the flusher is done with the WAL.
    pub wal_lock: Option<std::fs::File>,
    /// A commit failed: the next one first checks whether it landed anyway.
    pub verify_next: bool,
}

impl Flusher {
    /// Runs until `shutdown` turns true, then flushes what is left and returns.
    pub async fn run(mut self, mut shutdown: watch::Receiver<bool>) -> Result<()> {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(self.interval) => {}
                _ = self.flush_now.notified() => {}
                _ = shutdown.changed() => break,
            }
            if let Err(e) = self.flush_once().await {
                tracing::warn!(error = %e, queued = self.queue.len(), "commit to events failed; will retry");
            }
        }
        // Final flush: everything acknowledged goes to the table before exit.
        let mut delay = Duration::from_millis(100);
        for _ in 0..8 {
            match self.flush_once().await {
                Ok(()) if self.queue.is_empty() => return Ok(()),
                Ok(()) => {}
                Err(e) => tracing::warn!(error = %e, "final flush failed; retrying"),
            }
            tokio::time::sleep(delay).await;
            delay *= 2;
        }
        Err(Error::Unavailable(format!(
            "{} segment(s) could not be committed at shutdown; they stay in the WAL and are replayed on the next start",
            self.queue.len()
        )))
    }

    /// Seals the current segment and commits every queued segment in order.
    pub async fn flush_once(&mut self) -> Result<()> {
        if let Some(seg) = self.log.rotate().await? {
            self.queue.push_back(seg);
        }
        while let Some(seq) = self.queue.front().map(|s| s.seq) {
            let landed = self.already_committed(seq as i64).await?;
            let Some(seg) = self.queue.front() else {
                break;
            };
            let started = Instant::now();
            let result = if landed {
                // A commit whose answer was lost (a timeout after the store applied it):
                // committing again would store the segment twice.
                tracing::warn!(
                    segment = seg.seq,
                    "segment found committed; not committing it again"
                );
                Ok(self.table.clone())
            } else {
                events_table::append(
                    self.table.clone(),
                    seg.batches.clone(),
                    self.app_id.as_deref(),
                    seg.seq as i64,
                )
                .await
            };
            match result {
                Ok(table) => {
                    self.table = table;
                    self.metrics
                        .flush_latency
                        .observe(started.elapsed().as_secs_f64());
                    self.metrics.commits.inc();
                    if let Some(path) = &seg.path
                        && let Err(e) = wal::remove_segment(path)
                    {
                        // Harmless: the txn version makes a replay skip it.
                        tracing::warn!(error = %e, path = %path.display(), "cannot delete committed WAL segment");
                    }
                    self.log.committed(seg.bytes);
                    self.metrics
                        .wal_pending_bytes
                        .set(self.log.pending_bytes() as i64);
                    self.committed.send_replace(seg.seq);
                    self.queue.pop_front();
                }
                Err(e) => {
                    self.metrics.commit_failures.inc();
                    // The commit may have landed all the same: check before the next one.
                    self.verify_next = true;
                    // Refresh the handle; the next attempt starts from the newest version.
                    let _ = self.table.update_state().await;
                    return Err(e);
                }
            }
        }
        Ok(())
    }

    /// After a failed commit, whether segment `seq` is in the table all the same (its
    /// `txn` version says so). Without a WAL (`ack = "commit"`) there is no txn to check.
    async fn already_committed(&mut self, seq: i64) -> Result<bool> {
        let Some(app_id) = self.app_id.clone() else {
            return Ok(false);
        };
        if !self.verify_next {
            return Ok(false);
        }
        self.table.update_state().await?;
        let committed = events_table::committed_version(&self.table, &app_id).await?;
        self.verify_next = false;
        Ok(committed.is_some_and(|v| v >= seq))
    }
}
