//! One webhook attempt: the target's headers parsed once, then per attempt a fresh
//! Standard Webhooks signature (the `webhook-timestamp` is the attempt's time; the
//! `webhook-id` is the message's, the same on every attempt) and the send through the
//! guarded client.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::{Message, Target};
use crate::client::SafeClient;
use crate::clock::SharedClock;
use crate::retry::{Verdict, judge, judge_failure};
use crate::sign::set_headers;

/// A target with its fixed headers parsed once (not per attempt).
#[derive(Debug)]
pub(super) struct Prepared {
    pub(super) target: Target,
    headers: http::header::HeaderMap,
}

impl Prepared {
    pub(super) fn new(target: Target) -> Prepared {
        let mut headers = crate::client::header_map(&target.headers).unwrap_or_else(|e| {
            // Subscriptions are validated when written; a bad header here is dropped.
            tracing::warn!(error = %e, "dropping custom headers");
            http::header::HeaderMap::new()
        });
        headers.insert(
            http::header::CONTENT_TYPE,
            http::header::HeaderValue::from_static("application/json"),
        );
        Prepared { target, headers }
    }
}

/// What an attempt task hands back.
pub(super) struct Done {
    pub(super) message: Message,
    pub(super) at: DateTime<Utc>,
    pub(super) verdict: Verdict,
    pub(super) http_status: Option<u16>,
    pub(super) latency: Duration,
}

/// Signs and sends one attempt.
pub(super) async fn attempt(
    client: SafeClient,
    clock: SharedClock,
    prepared: Arc<Prepared>,
    message: Message,
) -> Done {
    let at = clock.now();
    let target = &prepared.target;
    let mut headers = prepared.headers.clone();
    set_headers(
        &mut headers,
        &target.secrets,
        &message.id,
        at.timestamp(),
        &message.body,
    );
    let sent = client
        .send(
            target.method.clone(),
            &target.url,
            headers,
            message.body.clone(),
        )
        .await;
    let (verdict, http_status, latency) = match sent {
        Ok(response) => (
            judge(&response, at),
            Some(response.status),
            response.latency,
        ),
        Err(failure) => (judge_failure(&failure), None, failure.latency),
    };
    Done {
        message,
        at,
        verdict,
        http_status,
        latency,
    }
}
