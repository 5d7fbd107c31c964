//! Bulk export: the batched pull API and scheduled push exports.
//!
//! - [`def`]: the config document `exports` (definitions, validation, encrypted
//!   credentials and signing secrets);
//! - [`window`]: intervals, windows and the object names they give;
//! - [`source`]: what an export reads: source kinds and the SQL of one window;
//! - [`run`]: exporting one window: files, the manifest written last;
//! - [`schedule`]: the pure decisions: due windows, window close, late-row re-export,
//!   the state after a window, backoff and pause;
//! - [`state`]: an export's progress, a versioned document under
//!   `_tidemark/state/exports/<env>/<id>/`;
//! - [`worker`]: the shell that reads the state and the commits, asks the schedule and
//!   runs the windows it names;
//! - [`batched`]: hourly batches by `received_at` with signed, expiring download links.
//!
//! File encoders and destinations (object stores, signed HTTPS POSTs) live in
//! `tidemark-sinks`.

pub mod batched;
pub mod def;
pub mod run;
pub mod schedule;
pub mod source;
pub mod state;
pub mod window;
pub mod worker;

use std::time::Duration;

use tidemark_sinks::client::SafeClient;
use tidemark_sinks::crypto::MasterKey;
use tidemark_sinks::export::DestinationRules;

use crate::config::{Config, ExportsConfig};
use crate::storage::Store;
use crate::{Error, Result};

/// What the API, the CLI and the worker need.
#[derive(Debug, Clone)]
pub struct Context {
    pub config: ExportsConfig,
    /// How often ingest commits: windows close `flush_interval + grace` after their end.
    pub flush_interval: Duration,
    /// `Err` says why credentials cannot be stored / links signed (no master key).
    pub key: std::result::Result<MasterKey, String>,
    /// The SSRF-safe client of webhooks (same address policy) for HTTPS destinations.
    pub client: SafeClient,
    /// What object-store destinations may reach: the same address policy, and the
    /// operator's `file_roots`.
    pub rules: DestinationRules,
}

impl Context {
    pub fn new(config: &Config, store: &Store) -> Result<Context> {
        let client = crate::webhooks::client(&config.webhooks)?;
        let rules = DestinationRules {
            policy: std::sync::Arc::new(client.policy().clone()),
            file_roots: config.exports.file_roots.clone(),
        };
        Ok(Context {
            config: config.exports.clone(),
            flush_interval: config.flush_interval,
            key: crate::webhooks::master_key(config, store).map_err(|e| e.to_string()),
            client,
            rules,
        })
    }

    pub fn key(&self) -> Result<&MasterKey> {
        self.key.as_ref().map_err(|e| Error::Unavailable(e.clone()))
    }

    /// How long after its end a window (or an hour) is closed.
    pub fn close_delay(&self) -> chrono::Duration {
        chrono::Duration::from_std(self.flush_interval + self.config.grace)
            .unwrap_or(chrono::Duration::MAX)
    }
}
