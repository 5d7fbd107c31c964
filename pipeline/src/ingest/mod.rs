//! Ingest: validate a batch, drop retried events, make it durable, acknowledge.
//!
//! - [`event`]: parse and validate a body into events.
//! - [`fields`]: checks of single JSON values, shared with the SDK formats (strings, ids,
//!   `occurred_at`, objects stored as `properties`).
//! - [`json_check`]: one walk over `properties` (duplicate keys, big numbers, depth).
//! - [`batch`]: build the Arrow record batch of validated events.
//! - [`dedup`]: the index of recently accepted event ids.
//! - [`wal`]: the on-disk segment format (framing, checksums, torn tails).
//! - [`wal_frame`]: the records of a segment, written and read without I/O (a torn tail
//!   ends the reading).
//! - [`log`]: the log thread (group commit, rotation).
//! - [`flusher`]: commits sealed segments to the `events` Delta table.
//! - [`recovery`]: WAL replay and dedup rebuild at startup.

pub mod batch;
pub mod dedup;
pub mod event;
pub mod fields;
pub mod flusher;
pub mod json_check;
pub mod log;
pub mod recovery;
pub mod wal;
pub mod wal_frame;

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::config::{AckMode, Limits};
use crate::metrics::Metrics;
use dedup::Dedup;
use event::{BatchError, BodyFormat};

/// The answer to an accepted batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Outcome {
    /// Events newly stored.
    pub accepted: usize,
    /// Events dropped because the same `event_id` was stored within the dedup window.
    pub duplicates: usize,
}

/// Why a batch was not acknowledged.
#[derive(Debug)]
pub enum IngestError {
    /// The client's fault; nothing was stored.
    Batch(BatchError),
    /// Try again later (overload, storage trouble, shutdown, a concurrent identical batch).
    Unavailable(String),
    /// A bug or an unexpected failure.
    Internal(String),
}

impl From<BatchError> for IngestError {
    fn from(e: BatchError) -> Self {
        IngestError::Batch(e)
    }
}

pub struct Ingestor {
    pub limits: Limits,
    pub mode: AckMode,
    pub log: log::Log,
    pub dedup: Arc<Dedup>,
    /// Highest segment sequence committed to Delta.
    pub committed: watch::Receiver<u64>,
    pub commit_timeout: Duration,
    pub max_pending_bytes: u64,
    pub metrics: Arc<Metrics>,
}

fn now_us() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

impl Ingestor {
    /// Validates, de-duplicates and durably appends one batch for `environment`.
    pub async fn ingest(
        &self,
        environment: &str,
        body: &[u8],
        format: BodyFormat,
    ) -> Result<Outcome, IngestError> {
        let started = Instant::now();
        let events = event::parse_batch(body, format, &self.limits)?;
        self.ingest_events(environment, &events, started).await
    }

    /// De-duplicates and durably appends `events` (already validated) for `environment`;
    /// `started` is when the request arrived (for the acknowledgement latency).
    pub async fn ingest_events(
        &self,
        environment: &str,
        events: &[event::Event<'_>],
        started: Instant,
    ) -> Result<Outcome, IngestError> {
        if self.log.pending_bytes() > self.max_pending_bytes {
            return Err(IngestError::Unavailable(
                "too much data is waiting to be committed to storage; retry later".into(),
            ));
        }
        let received_us = now_us();
        let now_s = (received_us / 1_000_000) as u32;

        let (positions, keys) = dedup::keys_of(environment, events);
        let seen = self.dedup.check_and_insert(&keys, now_s);
        let dedup::Verdict {
            keep,
            fresh,
            in_flight,
        } = dedup::verdict(events.len(), &positions, &keys, &seen);
        if in_flight {
            self.dedup.forget(&fresh);
            return Err(IngestError::Unavailable(
                "events with some of these event_ids are being stored by a concurrent request; retry shortly".into(),
            ));
        }
        let accepted = keep.iter().filter(|k| **k).count();
        let outcome = Outcome {
            accepted,
            duplicates: events.len() - accepted,
        };
        self.metrics
            .events_duplicate
            .inc_by(outcome.duplicates as u64);
        if accepted == 0 {
            return Ok(outcome);
        }
        let built = batch::build_batch(environment, received_us, events, &keep)
            .map_err(|e| IngestError::Internal(format!("building the batch: {e}")))
            .and_then(|batch| {
                wal::encode_batch(&batch)
                    .map(|payload| (batch, payload))
                    .map_err(|e| IngestError::Internal(format!("encoding the batch: {e}")))
            });
        let (batch, payload) = match built {
            Ok(x) => x,
            Err(e) => {
                self.dedup.forget(&fresh);
                return Err(e);
            }
        };
        self.metrics.wal_bytes.inc_by(payload.len() as u64);
        let seq = match self.log.append(batch, payload).await {
            Ok(seq) => seq,
            Err(e) => {
                self.dedup.forget(&fresh);
                return Err(IngestError::Unavailable(e.to_string()));
            }
        };
        self.metrics
            .wal_pending_bytes
            .set(self.log.pending_bytes() as i64);
        if self.mode == AckMode::Commit {
            self.wait_committed(seq, &fresh).await?;
        }
        self.dedup.confirm(&fresh);
        self.metrics.accepted(environment, accepted as u64);
        self.metrics
            .ack_latency
            .observe(started.elapsed().as_secs_f64());
        Ok(outcome)
    }

    /// With `ack = "commit"`: waits until WAL segment `seq` is committed to Delta, at most
    /// `commit_timeout`.
    async fn wait_committed(&self, seq: u64, fresh: &[u128]) -> Result<(), IngestError> {
        let mut committed = self.committed.clone();
        let wait = committed.wait_for(|c| *c >= seq);
        match tokio::time::timeout(self.commit_timeout, wait).await {
            Ok(Ok(_)) => {}
            _ => {
                // The segment may still commit later: keep the keys in flight until it
                // does, so a retry cannot be acknowledged before the data is stored.
                let (dedup, mut committed) = (self.dedup.clone(), self.committed.clone());
                let fresh = fresh.to_vec();
                tokio::spawn(async move {
                    if committed.wait_for(|c| *c >= seq).await.is_ok() {
                        dedup.confirm(&fresh);
                    }
                });
                return Err(IngestError::Unavailable(
                    "the batch was not committed within commit_timeout; retry with the same event_ids".into(),
                ));
            }
        }
        Ok(())
    }
}
