//! The delivery worker: one task that follows `events`, cuts each subscription's
//! matching events into messages (when, decided by [`super::batch`]; stored before they
//! are sent), feeds one
//! [`Endpoint`] task per subscription, and commits every attempt to `deliveries`.
//!
//! A message is done when its final attempt (delivered, or failed after the whole
//! schedule) is committed to the log; a chunk whose messages are all done is deleted
//! (its failed messages move to `failed/` for `recover`). After a crash, the chunks
//! still stored are sent again except the messages the log says are done, each with its
//! stored `webhook-id`: at least once, and a duplicate is recognisable.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use deltalake::DeltaTable;
use tidemark_sinks::client::SafeClient;
use tidemark_sinks::clock::SharedClock;
use tidemark_sinks::crypto::MasterKey;
use tidemark_sinks::webhook::{Endpoint, Report, Settings, Status, Target};
use tokio::sync::{mpsc, watch};

use super::batch::{self, Batching, Cut};
use super::follow::Follower;
use super::log::{self as dlog, Row};
use super::message::{body, profiles};
use super::state::{Chunk, Progress, StoredMessage, SubState};
use super::subscription::{Subscription, Subscriptions};
use crate::config::WebhooksConfig;
use crate::storage::Store;
use crate::{Error, Result};

/// Commits read per pass at most (a long backlog is worked through pass by pass).
const MAX_COMMITS_PER_PASS: i64 = 200;
/// An idle subscription's cursor is written at most this often.
const IDLE_CURSOR_EVERY: Duration = Duration::from_secs(10);

type Key = (String, String);

mod sub;
use sub::Sub;

pub struct Worker {
    store: Store,
    config: WebhooksConfig,
    key: MasterKey,
    client: SafeClient,
    clock: SharedClock,
    follower: Follower,
    subs: HashMap<Key, Sub>,
    /// Subscription id -> key (reports name the subscription only).
    by_id: HashMap<String, Key>,
    reports_tx: mpsc::UnboundedSender<Report>,
    reports_rx: mpsc::UnboundedReceiver<Report>,
    rows: Vec<Row>,
    /// Final outcomes waiting for their log commit: (key, chunk, message, failed).
    settled: Vec<(Key, i64, String, bool)>,
    deliveries: Option<DeltaTable>,
    doc_seen: Option<String>,
}

impl Worker {
    pub fn new(
        store: Store,
        config: WebhooksConfig,
        key: MasterKey,
        client: SafeClient,
        clock: SharedClock,
    ) -> Result<Worker> {
        let (reports_tx, reports_rx) = mpsc::unbounded_channel();
        Ok(Worker {
            follower: Follower::new(store.clone())?,
            store,
            config,
            key,
            client,
            clock,
            subs: HashMap::new(),
            by_id: HashMap::new(),
            reports_tx,
            reports_rx,
            rows: Vec::new(),
            settled: Vec::new(),
            deliveries: None,
            doc_seen: None,
        })
    }

    /// Runs until `stop` turns true, then commits the log it holds.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) -> Result<()> {
        let mut poll = tokio::time::interval(self.config.poll_interval);
        poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut flush = tokio::time::interval(self.config.log_interval);
        flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = poll.tick() => {
                    if let Err(e) = self.pass().await {
                        tracing::warn!(error = %e, "webhooks: pass failed; retrying");
                    }
                }
                Some(report) = self.reports_rx.recv() => {
                    self.on_report(report).await;
                    while let Ok(r) = self.reports_rx.try_recv() {
                        self.on_report(r).await;
                    }
                }
                _ = flush.tick() => {
                    if let Err(e) = self.flush_log().await {
                        tracing::warn!(error = %e, "webhooks: cannot commit the delivery log; retrying");
                    }
                }
                _ = stop.changed() => {
                    // Attempts still in flight finish or end with the process; one whose
                    // outcome is not logged is sent again after a restart (same id).
                    let keys: Vec<Key> = self.subs.keys().cloned().collect();
                    while let Ok(r) = self.reports_rx.try_recv() {
                        self.on_report(r).await;
                    }
                    self.flush_log().await?;
                    for k in keys {
                        if let Some(s) = self.subs.get(&k) {
                            let _ = s.state.write_progress(&s.progress()).await;
                        }
                    }
                    return Ok(());
                }
            }
        }
    }

    /// One pass: subscription changes, new events, messages cut and sent.
    pub async fn pass(&mut self) -> Result<()> {
        self.sync_subscriptions().await?;
        if self.subs.is_empty() {
            return Ok(());
        }
        let from = self.subs.values().map(|s| s.read_to).min().unwrap_or(0);
        let envs: HashSet<String> = self.subs.keys().map(|(e, _)| e.clone()).collect();
        let (last, events) = self
            .follower
            .read(from, MAX_COMMITS_PER_PASS, &envs)
            .await?;
        if last > from {
            let now = self.clock.now();
            for s in self.subs.values_mut() {
                if s.read_to >= last {
                    continue;
                }
                for e in &events {
                    let matches = s.sub.filter.matches(&e.event_name, &e.category);
                    if batch::joins(e.version, &e.environment, &s.env, s.read_to, matches) {
                        if s.open.is_empty() {
                            s.open_since = Some(now);
                        }
                        s.open.push(e.clone());
                    }
                }
                s.read_to = last;
            }
        }
        let keys: Vec<Key> = self.subs.keys().cloned().collect();
        for key in keys {
            self.cut(&key).await?;
        }
        Ok(())
    }

    /// Applies [`Batching::decide`]: stores the open events as a chunk of messages when
    /// the batch is cut, and advances the cursor.
    async fn cut(&mut self, key: &Key) -> Result<()> {
        let now = self.clock.now();
        let Some(s) = self.subs.get_mut(key) else {
            return Ok(());
        };
        if let Some(chunk) = s.unwritten.take() {
            s.store_chunk(chunk).await?;
        }
        let batching = Batching::new(s.sub.max_events, s.sub.max_wait_ms);
        match batching.decide(s.open.len(), s.open_since, now, s.read_to, s.cursor) {
            Cut::Hold => {}
            Cut::Advance { cursor } => s.cursor = cursor,
            Cut::Chunk { messages, cursor } => {
                let profiles = if s.sub.include_profile {
                    let users: Vec<String> = s.open.iter().map(|e| e.user_id.clone()).collect();
                    profiles(&self.store, &key.0, users).await?
                } else {
                    HashMap::new()
                };
                let messages: Vec<StoredMessage> = messages
                    .into_iter()
                    .map(|range| {
                        let batch = &s.open[range];
                        StoredMessage {
                            id: format!("msg_{}", uuid::Uuid::now_v7().simple()),
                            event_ids: batch.iter().map(|e| e.event_id.clone()).collect(),
                            body: body(&key.0, &s.sub.id, batch, &profiles),
                            failed_at: None,
                        }
                    })
                    .collect();
                let chunk = Chunk {
                    to_version: cursor,
                    written_at: now,
                    messages,
                };
                s.open.clear();
                s.open_since = None;
                s.store_chunk(chunk).await?;
            }
        }
        s.save_progress(false, now).await
    }

    /// Starts, updates and stops endpoint tasks to match the `webhooks` document.
    async fn sync_subscriptions(&mut self) -> Result<()> {
        let doc = Subscriptions::new(self.store.clone()).all().await?;
        let fingerprint = serde_json::to_string(&doc.environments)?;
        if self.doc_seen.as_deref() == Some(fingerprint.as_str()) {
            return Ok(());
        }
        let mut wanted: HashSet<Key> = HashSet::new();
        for (env, subs) in &doc.environments {
            for (id, sub) in subs {
                let key = (env.clone(), id.clone());
                wanted.insert(key.clone());
                let target = match self.target(sub) {
                    Ok(t) => t,
                    Err(e) => {
                        tracing::error!(webhook = %id, error = %e, "webhooks: cannot use subscription");
                        continue;
                    }
                };
                if let Some(s) = self.subs.get_mut(&key) {
                    s.endpoint.update(target);
                    let recover = sub.recover.clone();
                    s.sub = sub.clone();
                    if let Some(r) = recover
                        && r.seq > s.recover_seq
                    {
                        s.recover(r.since, self.clock.now()).await?;
                        s.recover_seq = r.seq;
                        s.save_progress(true, self.clock.now()).await?;
                    }
                } else {
                    let s = self.start(env, sub, target).await?;
                    self.by_id.insert(id.clone(), key.clone());
                    self.subs.insert(key, s);
                }
            }
        }
        let gone: Vec<Key> = self
            .subs
            .keys()
            .filter(|k| !wanted.contains(*k))
            .cloned()
            .collect();
        for key in gone {
            self.by_id.remove(&key.1);
            if let Some(s) = self.subs.remove(&key) {
                drop(s.endpoint);
                s.state.delete_all().await?;
            }
        }
        self.doc_seen = Some(fingerprint);
        Ok(())
    }

    fn target(&self, sub: &Subscription) -> Result<Target> {
        Ok(Target {
            url: url::Url::parse(&sub.url).map_err(|e| Error::Invalid(format!("url: {e}")))?,
            method: http::Method::from_bytes(sub.method.as_bytes())
                .map_err(|e| Error::Invalid(format!("method: {e}")))?,
            headers: sub.headers.clone().into_iter().collect(),
            secrets: sub.signing_secrets(&self.key, self.clock.now())?,
            max_in_flight: sub.max_in_flight as usize,
            rate_per_sec: sub.rate_limit,
            paused: sub.paused,
        })
    }

    /// Loads a subscription's state and restores its unfinished messages.
    async fn start(&self, env: &str, sub: &Subscription, target: Target) -> Result<Sub> {
        let state = SubState::new(&self.store, env, &sub.id);
        let chunks = state.chunks().await?;
        let progress = state.progress(&chunks).await?.unwrap_or(Progress {
            version: sub.start_version,
            ..Default::default()
        });
        let cursor = progress.version;
        let since = chunks.iter().map(|c| c.written_at).min();
        let last = match since {
            Some(t) => dlog::last_rows(&self.store, env, &sub.id, t.timestamp_micros()).await?,
            None => HashMap::new(),
        };
        let endpoint = Endpoint::spawn(
            sub.id.clone(),
            target,
            Settings {
                policy: super::retry_policy(&self.config),
                pause_after: self.config.pause_after,
            },
            self.client.clone(),
            self.clock.clone(),
            self.reports_tx.clone(),
            progress.failing_since,
        );
        let mut s = Sub {
            env: env.to_string(),
            sub: sub.clone(),
            endpoint,
            state,
            cursor,
            // Unknown (the cursor may stand on a chunk): the first chunk retired writes it.
            durable: i64::MIN,
            written: (progress.clone(), self.clock.now()),
            failing_since: progress.failing_since,
            read_to: cursor,
            open: Vec::new(),
            open_since: None,
            chunks: BTreeMap::new(),
            unwritten: None,
            recover_seq: progress.recover_seq,
        };
        for chunk in chunks {
            s.start_chunk(chunk, &last);
        }
        if let Some(r) = sub.recover.clone()
            && r.seq > s.recover_seq
        {
            s.recover(r.since, self.clock.now()).await?;
            s.recover_seq = r.seq;
            s.save_progress(true, self.clock.now()).await?;
        }
        Ok(s)
    }

    async fn on_report(&mut self, report: Report) {
        match report {
            Report::Attempt(a) => {
                let Some(key) = self.by_id.get(&a.endpoint).cloned() else {
                    return;
                };
                let Some(s) = self.subs.get_mut(&key) else {
                    return;
                };
                s.failing_since = a.failing_since;
                let to = a.tag as i64;
                let event_ids = s
                    .chunks
                    .get(&to)
                    .and_then(|c| c.messages.get(&a.message_id))
                    .map(|m| m.event_ids.clone())
                    .unwrap_or_default();
                self.rows.push(Row {
                    environment: key.0.clone(),
                    subscription_id: key.1.clone(),
                    message_id: a.message_id.clone(),
                    event_ids,
                    attempt: a.attempt as i32,
                    status: a.status.as_str().to_string(),
                    http_status: a.http_status.map(i32::from),
                    latency_ms: a.latency.as_millis() as i64,
                    error: a.error.clone(),
                    at_us: a.at.timestamp_micros(),
                    next_attempt_at_us: a.next_attempt_at.map(|t| t.timestamp_micros()),
                });
                match a.status {
                    Status::Delivered => self.settled.push((key, to, a.message_id, false)),
                    Status::Failed => self.settled.push((key, to, a.message_id, true)),
                    Status::Retrying | Status::Gone => {}
                }
            }
            Report::Paused { endpoint, reason } => {
                let Some(key) = self.by_id.get(&endpoint).cloned() else {
                    return;
                };
                tracing::warn!(webhook = %endpoint, %reason, "webhooks: subscription paused");
                let written = Subscriptions::new(self.store.clone())
                    .modify(&key.0, &key.1, |sub| {
                        sub.paused = true;
                        sub.paused_reason = Some(reason.clone());
                        Ok(())
                    })
                    .await;
                if let Err(e) = written {
                    tracing::warn!(webhook = %endpoint, error = ?e, "webhooks: cannot store the pause");
                }
            }
        }
    }

    /// Commits the attempts logged so far, then retires what they finished.
    pub async fn flush_log(&mut self) -> Result<()> {
        if self.rows.is_empty() {
            return Ok(());
        }
        let table = match self.deliveries.take() {
            Some(t) => t,
            None => dlog::open_or_create(&self.store).await?,
        };
        match dlog::append(table, &self.rows).await {
            Ok(t) => self.deliveries = Some(t),
            Err(e) => {
                // Reload next time: the handle may be behind another writer.
                return Err(e);
            }
        }
        self.rows.clear();
        let settled = std::mem::take(&mut self.settled);
        let now = self.clock.now();
        let mut touched: HashSet<(Key, i64)> = HashSet::new();
        for (key, to, id, failed) in settled {
            let Some(s) = self.subs.get_mut(&key) else {
                continue;
            };
            let Some(c) = s.chunks.get_mut(&to) else {
                continue;
            };
            if c.pending.remove(&id)
                && failed
                && let Some(mut m) = c.messages.get(&id).cloned()
            {
                m.failed_at = Some(now);
                c.failed.push(m);
            }
            touched.insert((key, to));
        }
        for (key, to) in touched {
            let Some(s) = self.subs.get_mut(&key) else {
                continue;
            };
            let done = s.chunks.get(&to).is_some_and(|c| c.pending.is_empty());
            if done && let Some(c) = s.chunks.remove(&to) {
                if !c.failed.is_empty() {
                    s.state.add_failed(to, c.failed).await?;
                }
                // The newest chunk stands for the cursor: before it goes, `cursor.json`
                // must hold its version, or a restart would cut its events again into
                // messages with new webhook-ids.
                if s.durable < to && !s.chunks.keys().any(|v| *v > to) {
                    s.save_progress(true, now).await?;
                }
                s.state.delete_chunk(to).await?;
            }
        }
        Ok(())
    }
}

/// Runs a worker with the system clock until `stop`.
pub async fn run(
    store: Store,
    config: WebhooksConfig,
    key: MasterKey,
    client: SafeClient,
    stop: watch::Receiver<bool>,
) -> Result<()> {
    let worker = Worker::new(
        store,
        config,
        key,
        client,
        Arc::new(tidemark_sinks::clock::SystemClock),
    )?;
    worker.run(stop).await
}
