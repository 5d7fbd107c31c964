//! One subscription's state inside the [`Worker`](super::Worker): its cursor and how
//! much of it is durable, the events not yet cut, and the stored chunks still being
//! delivered. The worker drives it; this file keeps what a subscription does to itself
//! (save its cursor, store and start a chunk, recover failed messages).

use std::collections::{BTreeMap, HashMap, HashSet};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use tidemark_sinks::webhook::{Endpoint, Message};

use super::IDLE_CURSOR_EVERY;
use crate::Result;
use crate::webhooks::batch;
use crate::webhooks::follow::NewEvent;
use crate::webhooks::log as dlog;
use crate::webhooks::state::{Chunk, Progress, StoredMessage, SubState};
use crate::webhooks::subscription::Subscription;

pub(super) struct ChunkProgress {
    pub(super) messages: HashMap<String, StoredMessage>,
    pub(super) pending: HashSet<String>,
    pub(super) failed: Vec<StoredMessage>,
}

pub(super) struct Sub {
    pub(super) env: String,
    pub(super) sub: Subscription,
    pub(super) endpoint: Endpoint,
    pub(super) state: SubState,
    /// Durable: every event of versions <= cursor is in a chunk (or matched nothing).
    pub(super) cursor: i64,
    /// The version `cursor.json` holds (chunks newer than it stand for the cursor).
    pub(super) durable: i64,
    /// What `cursor.json` holds, and when it was written.
    pub(super) written: (Progress, DateTime<Utc>),
    pub(super) failing_since: Option<DateTime<Utc>>,
    /// Events of versions <= read_to are in `open` or in chunks.
    pub(super) read_to: i64,
    pub(super) open: Vec<NewEvent>,
    pub(super) open_since: Option<DateTime<Utc>>,
    pub(super) chunks: BTreeMap<i64, ChunkProgress>,
    /// A chunk whose write failed: written again, the same, before anything new is cut
    /// (the failed write may have landed; cutting its events again, with later ones, into
    /// a chunk of another version would leave the first one stored, to be sent after a
    /// restart under other webhook-ids).
    pub(super) unwritten: Option<Chunk>,
    pub(super) recover_seq: u64,
}

impl Sub {
    pub(super) fn progress(&self) -> Progress {
        Progress {
            version: self.cursor,
            recover_seq: self.recover_seq,
            failing_since: self.failing_since,
        }
    }

    /// Writes `cursor.json` when something other than the version changed (or `now`),
    /// and for a new version at most every [`IDLE_CURSOR_EVERY`] (re-reading a few
    /// versions after a crash only finds events that matched nothing).
    pub(super) async fn save_progress(&mut self, force: bool, now: DateTime<Utc>) -> Result<()> {
        let p = self.progress();
        let (old, at) = &self.written;
        let changed = p.recover_seq != old.recover_seq || p.failing_since != old.failing_since;
        let moved = p.version != old.version;
        if batch::write_cursor(force, changed, moved, *at, now, IDLE_CURSOR_EVERY) {
            self.state.write_progress(&p).await?;
            self.durable = p.version;
            self.written = (p, now);
        }
        Ok(())
    }

    /// Writes a newly cut chunk and starts sending it; on failure keeps it as
    /// [`Sub::unwritten`], to be written again as it is.
    pub(super) async fn store_chunk(&mut self, chunk: Chunk) -> Result<()> {
        if let Err(e) = self.state.write_chunk(&chunk).await {
            self.unwritten = Some(chunk);
            return Err(e);
        }
        self.cursor = chunk.to_version;
        // The chunk's version stands for the cursor until the next write.
        self.written.0.version = self.cursor;
        self.start_chunk(chunk, &HashMap::new());
        Ok(())
    }

    /// Tracks a stored chunk and hands its unfinished messages to the endpoint.
    pub(super) fn start_chunk(&mut self, chunk: Chunk, last: &HashMap<String, dlog::Last>) {
        let written_us = chunk.written_at.timestamp_micros();
        let mut progress = ChunkProgress {
            messages: HashMap::new(),
            pending: HashSet::new(),
            failed: Vec::new(),
        };
        for m in chunk.messages {
            let prior = last.get(&m.id).filter(|l| l.at_us >= written_us);
            match prior.map(|l| l.status.as_str()) {
                Some("delivered") => {}
                Some("failed") => {
                    let mut m = m.clone();
                    m.failed_at = prior.and_then(|l| DateTime::from_timestamp_micros(l.at_us));
                    progress.failed.push(m);
                }
                _ => {
                    self.endpoint.send(Message {
                        id: m.id.clone(),
                        body: Bytes::from(m.body.clone()),
                        attempts: prior.map_or(0, |l| l.attempt.max(0) as u32),
                        not_before: prior
                            .and_then(|l| l.next_attempt_at_us)
                            .and_then(DateTime::from_timestamp_micros),
                        tag: chunk.to_version as u64,
                    });
                    progress.pending.insert(m.id.clone());
                }
            }
            progress.messages.insert(m.id.clone(), m);
        }
        self.chunks.insert(chunk.to_version, progress);
    }

    /// Moves failed messages that failed at or after `since` back into delivery.
    pub(super) async fn recover(&mut self, since: DateTime<Utc>, now: DateTime<Utc>) -> Result<()> {
        for failed in self.state.failed().await? {
            let (again, keep): (Vec<_>, Vec<_>) = failed
                .messages
                .into_iter()
                .partition(|m| m.failed_at.is_none_or(|t| t >= since));
            if again.is_empty() {
                continue;
            }
            let to = failed.to_version;
            if self.chunks.contains_key(&to) {
                continue; // still being delivered from an earlier recovery
            }
            let chunk = Chunk {
                to_version: to,
                written_at: now,
                messages: again
                    .into_iter()
                    .map(|mut m| {
                        m.failed_at = None;
                        m
                    })
                    .collect(),
            };
            self.state.write_chunk(&chunk).await?;
            self.state.set_failed(to, keep).await?;
            self.start_chunk(chunk, &HashMap::new());
        }
        Ok(())
    }
}
