//! The webhook sink's driving loop: queue, in-flight limit, rate limit, timers for
//! retries, and settling each attempt with [`crate::delivery::decide`].

use std::cmp::Ordering;
use std::collections::{BinaryHeap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use futures::stream::FuturesUnordered;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use super::request::{Done, Prepared, attempt};
use super::{Attempt, Message, Report, Settings, Status, Target};
use crate::client::SafeClient;
use crate::clock::SharedClock;
use crate::delivery::{Attempted, decide};

/// Handle of a running endpoint task; dropping it stops the task.
#[derive(Debug)]
pub struct Endpoint {
    messages: mpsc::UnboundedSender<Message>,
    target: watch::Sender<Arc<Prepared>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Endpoint {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Endpoint {
    #[allow(clippy::too_many_arguments)]
    pub fn spawn(
        id: String,
        target: Target,
        settings: Settings,
        client: SafeClient,
        clock: SharedClock,
        reports: mpsc::UnboundedSender<Report>,
        failing_since: Option<DateTime<Utc>>,
    ) -> Endpoint {
        let (messages, inbox) = mpsc::unbounded_channel();
        let (target, targets) = watch::channel(Arc::new(Prepared::new(target)));
        let worker = Worker {
            id,
            settings,
            client,
            clock,
            reports,
            failing_since,
            ready: VecDeque::new(),
            waiting: BinaryHeap::new(),
            seq: 0,
            bucket: None,
            self_paused: false,
        };
        let task = tokio::spawn(worker.run(inbox, targets));
        Endpoint {
            messages,
            target,
            task,
        }
    }

    pub fn send(&self, message: Message) {
        let _ = self.messages.send(message);
    }

    pub fn update(&self, target: Target) {
        let _ = self.target.send(Arc::new(Prepared::new(target)));
    }
}

struct Waiting {
    at: DateTime<Utc>,
    seq: u64,
    message: Message,
}

impl PartialEq for Waiting {
    fn eq(&self, other: &Self) -> bool {
        (self.at, self.seq) == (other.at, other.seq)
    }
}
impl Eq for Waiting {}
impl PartialOrd for Waiting {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Waiting {
    // Reversed: BinaryHeap is a max-heap and the earliest must come out first.
    fn cmp(&self, other: &Self) -> Ordering {
        (other.at, other.seq).cmp(&(self.at, self.seq))
    }
}

/// A token bucket of one second's worth of attempts.
struct Bucket {
    rate: u32,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Takes a token, or says how long until one is there.
    fn take(&mut self) -> Result<(), Duration> {
        let now = Instant::now();
        let rate = f64::from(self.rate);
        self.tokens = (self.tokens + (now - self.at).as_secs_f64() * rate).min(rate);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / rate))
        }
    }
}

struct Worker {
    id: String,
    settings: Settings,
    client: SafeClient,
    clock: SharedClock,
    reports: mpsc::UnboundedSender<Report>,
    failing_since: Option<DateTime<Utc>>,
    ready: VecDeque<Message>,
    waiting: BinaryHeap<Waiting>,
    seq: u64,
    bucket: Option<Bucket>,
    /// Paused by this task (410, failing too long) until the target says paused too:
    /// from then on the target decides (a resume clears both).
    self_paused: bool,
}

impl Worker {
    async fn run(
        mut self,
        mut inbox: mpsc::UnboundedReceiver<Message>,
        mut targets: watch::Receiver<Arc<Prepared>>,
    ) {
        // Attempts run inside this task (no task per attempt): the endpoint's own
        // futures, polled as their connections wake them.
        let mut in_flight = FuturesUnordered::new();
        let mut inbox_open = true;
        let mut prepared = targets.borrow_and_update().clone();
        loop {
            // `changed()` below marks a new value seen, so compare instead of asking.
            let latest = targets.borrow_and_update().clone();
            if !Arc::ptr_eq(&latest, &prepared) {
                prepared = latest;
                if prepared.target.paused {
                    self.self_paused = false;
                }
            }
            let target = &prepared.target;
            let paused = target.paused || self.self_paused;
            self.sync_bucket(target.rate_per_sec);
            let now = self.clock.now();
            while self.waiting.peek().is_some_and(|w| w.at <= now) {
                if let Some(w) = self.waiting.pop() {
                    self.ready.push_back(w.message);
                }
            }
            // Start as many attempts as the limits allow.
            let mut rate_wait = None;
            while !paused && in_flight.len() < target.max_in_flight.max(1) {
                if self.ready.is_empty() {
                    break;
                }
                if let Some(bucket) = &mut self.bucket
                    && let Err(wait) = bucket.take()
                {
                    rate_wait = Some(wait);
                    break;
                }
                if let Some(message) = self.ready.pop_front() {
                    in_flight.push(attempt(
                        self.client.clone(),
                        self.clock.clone(),
                        prepared.clone(),
                        message,
                    ));
                }
            }
            let next_timer = self.waiting.peek().map(|w| w.at);
            tokio::select! {
                got = inbox.recv(), if inbox_open => match got {
                    Some(message) => self.enqueue(message),
                    None => inbox_open = false,
                },
                changed = targets.changed() => {
                    if changed.is_err() && !inbox_open && in_flight.is_empty() {
                        return;
                    }
                }
                Some(done) = in_flight.next(), if !in_flight.is_empty() => {
                    self.settle(done, paused);
                }
                () = sleep_until_opt(&self.clock, next_timer), if next_timer.is_some() => {}
                () = tokio::time::sleep(rate_wait.unwrap_or_default()), if rate_wait.is_some() => {}
            }
        }
    }

    fn sync_bucket(&mut self, rate: Option<u32>) {
        match (rate.filter(|r| *r > 0), &self.bucket) {
            (None, _) => self.bucket = None,
            (Some(r), Some(b)) if b.rate == r => {}
            (Some(r), _) => {
                self.bucket = Some(Bucket {
                    rate: r,
                    tokens: f64::from(r),
                    at: Instant::now(),
                })
            }
        }
    }

    fn enqueue(&mut self, message: Message) {
        match message.not_before {
            Some(at) if at > self.clock.now() => self.wait(at, message),
            _ => self.ready.push_back(message),
        }
    }

    fn wait(&mut self, at: DateTime<Utc>, message: Message) {
        self.seq += 1;
        self.waiting.push(Waiting {
            at,
            seq: self.seq,
            message,
        });
    }

    /// Applies [`decide`] to a finished attempt: reports it, queues a retry or keeps a
    /// gone message, and pauses when the decision says so.
    fn settle(&mut self, done: Done, paused: bool) {
        let Done {
            mut message,
            at,
            verdict,
            http_status,
            latency,
        } = done;
        message.attempts += 1;
        let attempted = Attempted {
            at,
            attempts: message.attempts,
            failing_since: self.failing_since,
            paused,
            jitter: rand::random::<f64>(),
        };
        let d = decide(
            verdict,
            attempted,
            &self.settings.policy,
            self.settings.pause_after,
        );
        self.failing_since = d.failing_since;
        let report = Attempt {
            endpoint: self.id.clone(),
            message_id: message.id.clone(),
            tag: message.tag,
            attempt: message.attempts,
            at,
            status: d.status,
            http_status,
            latency,
            error: d.error,
            next_attempt_at: d.next_attempt_at,
            failing_since: d.failing_since,
        };
        match (d.status, d.next_attempt_at) {
            // Kept: delivered after a resume.
            (Status::Gone, _) => self.ready.push_front(message),
            (Status::Retrying, Some(next_at)) => self.wait(next_at, message),
            _ => {}
        }
        let _ = self.reports.send(Report::Attempt(report));
        if let Some(reason) = d.pause {
            self.self_paused = true;
            let _ = self.reports.send(Report::Paused {
                endpoint: self.id.clone(),
                reason,
            });
        }
    }
}

async fn sleep_until_opt(clock: &SharedClock, at: Option<DateTime<Utc>>) {
    match at {
        Some(at) => clock.sleep_until(at).await,
        None => std::future::pending().await,
    }
}
