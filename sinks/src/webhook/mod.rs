//! The webhook sink: one delivery task per subscription (endpoint), with its own queue,
//! in-flight limit and rate limit, so a slow or dead endpoint only ever holds up its own
//! messages.
//!
//! - here: the sink's configuration ([`Target`], [`Settings`]), what it is given
//!   ([`Message`]) and what it reports ([`Attempt`], [`Report`]);
//! - [`request`]: building and sending one signed attempt;
//! - [`sink`]: the driving loop ([`Endpoint`]); what follows an attempt is decided by
//!   [`crate::delivery`].
//!
//! Every attempt is reported, whatever its outcome, to the caller, which logs it and
//! decides when a message is done for good.

pub mod request;
pub mod sink;

use std::time::Duration;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use url::Url;

pub use crate::delivery::Status;
use crate::retry::RetryPolicy;
use crate::sign::Secret;
pub use sink::Endpoint;

/// A message to deliver.
#[derive(Debug, Clone)]
pub struct Message {
    /// `webhook-id`: the same on every attempt and after restarts.
    pub id: String,
    /// The exact bytes sent and signed.
    pub body: Bytes,
    /// Attempts already made (0 for a new message).
    pub attempts: u32,
    /// The earliest time of the next attempt (a retry restored after a restart).
    pub not_before: Option<DateTime<Utc>>,
    /// The caller's handle (e.g. which stored chunk holds the message).
    pub tag: u64,
}

/// Where and how to deliver; replaced while running by [`Endpoint::update`].
#[derive(Debug, Clone)]
pub struct Target {
    pub url: Url,
    pub method: http::Method,
    pub headers: Vec<(String, String)>,
    /// Signing secrets, newest first (several during a rotation).
    pub secrets: Vec<Secret>,
    pub max_in_flight: usize,
    /// Attempts started per second at most (None = unlimited).
    pub rate_per_sec: Option<u32>,
    pub paused: bool,
}

/// The task's fixed settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub policy: RetryPolicy,
    /// Pause the endpoint after failing continuously for this long.
    pub pause_after: Duration,
}

/// One attempt, as the delivery log records it.
#[derive(Debug, Clone)]
pub struct Attempt {
    pub endpoint: String,
    pub message_id: String,
    pub tag: u64,
    /// 1-based.
    pub attempt: u32,
    pub at: DateTime<Utc>,
    pub status: Status,
    pub http_status: Option<u16>,
    pub latency: Duration,
    pub error: Option<String>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When the endpoint's current run of failures began (None after a success).
    pub failing_since: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub enum Report {
    Attempt(Attempt),
    /// The endpoint paused itself (410 Gone, or failing for `pause_after`).
    Paused {
        endpoint: String,
        reason: String,
    },
}
