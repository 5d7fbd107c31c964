//! Webhook subscriptions and their delivery.
//!
//! - [`subscription`]: the config document `webhooks`, validation, encrypted secrets;
//! - [`checks`]: checks of a subscription's URL, headers and event filter;
//! - [`follow`]: the rows each new `events` commit appended;
//! - [`state`]: a subscription's cursor, pending chunks and failed messages;
//! - [`message`]: the body of a message (events, optionally with profiles);
//! - [`log`]: the `deliveries` table (every attempt; what a restart recovers from);
//! - [`batch`]: the pure batching decisions: which events join, when a batch is cut,
//!   where the cursor moves and when it is written;
//! - [`worker`]: follows `events`, cuts messages, runs one [`tidemark_sinks::webhook`]
//!   delivery task per subscription, logs every attempt.
//!
//! Signing, the SSRF-safe client, the retry schedule and the per-endpoint task live in
//! `tidemark-sinks`.

pub mod batch;
pub mod checks;
pub mod follow;
pub mod log;
pub mod message;
pub mod state;
pub mod subscription;
pub mod worker;

use std::path::PathBuf;

use bytes::Bytes;
use serde_json::{Value, json};
use tidemark_sinks::address::AddressPolicy;
use tidemark_sinks::client::{ClientOptions, SafeClient};
use tidemark_sinks::crypto::MasterKey;
use tidemark_sinks::retry::RetryPolicy;

use crate::config::{Config, WebhooksConfig};
use crate::storage::Store;
use crate::{Error, Result};

pub const MASTER_KEY_ENV: &str = "TIDEMARK_MASTER_KEY";

/// The master key: `TIDEMARK_MASTER_KEY`, else the key file (created with mode 0600 on
/// first use).
pub fn master_key(config: &Config, store: &Store) -> Result<MasterKey> {
    if let Ok(text) = std::env::var(MASTER_KEY_ENV) {
        return MasterKey::parse(&text, MASTER_KEY_ENV).map_err(|e| Error::Config(e.to_string()));
    }
    let path: PathBuf = match (&config.webhooks.master_key_file, store.local_dir()) {
        (Some(p), _) => p.clone(),
        (None, Some(dir)) => dir.join("_tidemark").join("master.key"),
        (None, None) => {
            return Err(Error::Config(format!(
                "webhooks need a master key to encrypt secrets: set {MASTER_KEY_ENV} (base64 of 32 bytes) or webhooks.master_key_file"
            )));
        }
    };
    MasterKey::load_or_create(&path)
        .map_err(|e| Error::Config(format!("master key file {}: {e}", path.display())))
}

pub fn client(config: &WebhooksConfig) -> Result<SafeClient> {
    let allow = AddressPolicy::parse_allow(&config.allow_networks, "webhooks.allow_networks")
        .map_err(|e| Error::Config(e.to_string()))?;
    SafeClient::new(ClientOptions {
        allow,
        connect_timeout: config.connect_timeout,
        timeout: config.timeout,
        max_response_bytes: config.max_response_bytes,
        extra_roots: Vec::new(),
    })
    .map_err(|e| Error::Config(e.to_string()))
}

pub fn retry_policy(config: &WebhooksConfig) -> RetryPolicy {
    RetryPolicy {
        schedule: config.retry_schedule.clone(),
        jitter: config.jitter,
    }
}

/// What the API and the CLI need to manage subscriptions.
#[derive(Debug, Clone)]
pub struct Context {
    pub config: WebhooksConfig,
    /// `Err` says why webhooks cannot be used (no master key).
    pub key: std::result::Result<MasterKey, String>,
    pub client: SafeClient,
}

impl Context {
    pub fn new(config: &Config, store: &Store) -> Result<Context> {
        Ok(Context {
            config: config.webhooks.clone(),
            key: master_key(config, store).map_err(|e| e.to_string()),
            client: client(&config.webhooks)?,
        })
    }

    pub fn key(&self) -> Result<&MasterKey> {
        self.key.as_ref().map_err(|e| Error::Unavailable(e.clone()))
    }

    /// The address check of a subscription URL, for validation.
    pub fn check_url(&self, url: &url::Url) -> std::result::Result<(), String> {
        self.client.check_url(url).map_err(|f| f.message)
    }
}

/// Sends one signed test message now (not logged, not retried) and says what came back.
pub async fn send_test(
    ctx: &Context,
    environment: &str,
    sub: &subscription::Subscription,
) -> Result<Value> {
    let now = chrono::Utc::now();
    let secrets = sub.signing_secrets(ctx.key()?, now)?;
    let id = format!("msg_{}", uuid::Uuid::now_v7().simple());
    let body = json!({
        "type": "tidemark.test",
        "environment": environment,
        "subscription_id": sub.id,
        "timestamp": now.to_rfc3339(),
        "events": [],
    })
    .to_string();
    let custom: Vec<(String, String)> = sub.headers.clone().into_iter().collect();
    let mut headers =
        tidemark_sinks::client::header_map(&custom).map_err(|e| Error::Invalid(e.to_string()))?;
    headers.insert(
        http::header::CONTENT_TYPE,
        http::header::HeaderValue::from_static("application/json"),
    );
    tidemark_sinks::sign::set_headers(
        &mut headers,
        &secrets,
        &id,
        now.timestamp(),
        body.as_bytes(),
    );
    let url = url::Url::parse(&sub.url).map_err(|e| Error::Invalid(format!("url: {e}")))?;
    let method = http::Method::from_bytes(sub.method.as_bytes())
        .map_err(|e| Error::Invalid(format!("method: {e}")))?;
    Ok(
        match ctx
            .client
            .send(method, &url, headers, Bytes::from(body))
            .await
        {
            Ok(r) => json!({
                "message_id": id,
                "delivered": (200..300).contains(&r.status),
                "http_status": r.status,
                "latency_ms": r.latency.as_millis() as u64,
                "response": String::from_utf8_lossy(&r.body).chars().take(1000).collect::<String>(),
            }),
            Err(f) => json!({
                "message_id": id,
                "delivered": false,
                "http_status": null,
                "latency_ms": f.latency.as_millis() as u64,
                "error": f.message,
            }),
        },
    )
}

/// A time given by a user ([`crate::reltime`]): RFC 3339, or a duration ago (`24h`, `3d`).
pub fn parse_time(text: &str) -> std::result::Result<chrono::DateTime<chrono::Utc>, String> {
    crate::reltime::parse_time(text).map(|t| t.at_time(chrono::Utc::now()))
}

/// A subscription's health as the API shows it: `state` is `paused`, `failing` (an
/// attempt has failed and none has succeeded since `failing_since`) or `healthy`;
/// `pending` messages are cut but not yet delivered, `failed` ones gave up and wait for
/// `recover`; `version` is the last `events` version turned into messages.
pub async fn status(
    store: &Store,
    environment: &str,
    sub: &subscription::Subscription,
) -> Result<Value> {
    let st = state::SubState::new(store, environment, &sub.id);
    let chunks = st.chunks().await?;
    let progress = st.progress(&chunks).await?.unwrap_or_default();
    let failed: usize = st.failed().await?.iter().map(|c| c.messages.len()).sum();
    let pending: usize = chunks.iter().map(|c| c.messages.len()).sum();
    let state = if sub.paused {
        "paused"
    } else if progress.failing_since.is_some() {
        "failing"
    } else {
        "healthy"
    };
    Ok(json!({
        "state": state,
        "failing_since": progress.failing_since,
        "paused_reason": sub.paused_reason,
        "pending": pending,
        "failed": failed,
        "version": progress.version.max(sub.start_version),
    }))
}
