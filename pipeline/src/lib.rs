//! tidemark: a self-hosted customer data pipeline.
//!
//! # Layout
//!
//! - [`config`]: the layered configuration (defaults -> `tidemark.toml` -> `TIDEMARK_*` -> flags).
//! - [`storage`]: the object store behind everything, the one place that builds storage
//!   paths ([`storage::paths`]), versioned JSON config documents ([`storage::docs`]) and the
//!   Delta tables ([`storage::events_table`]).
//! - [`auth`]: environments and API keys (hashed at rest, verified in constant time).
//! - [`ingest`]: event parsing and validation into Arrow, the dedup index, the write-ahead
//!   log with group commit, and the flusher that commits WAL segments to Delta.
//! - [`jobs`]: the SQL jobs (`sql/jobs/`) that derive `profiles` and `event_stats`
//!   incrementally, and the views readers see them through.
//! - [`users`]: custom fields, profile writes (`profile_changes`), profile reads.
//! - [`server`]: the HTTP API (axum): ingest, users, fields and ops endpoints.
//! - [`query`]: DataFusion over the Delta tables, used by `tidemark sql`.
//! - [`metrics`]: Prometheus counters and histograms.
//! - [`cli`]: the `tidemark` command line.

pub mod auth;
pub mod cli;
pub mod config;
pub mod error;
pub mod exports;
pub mod ingest;
pub mod jobs;
pub mod metrics;
pub mod query;
pub mod segments;
pub mod server;
pub mod storage;
pub mod users;
pub mod webhooks;

pub use error::{Error, Result};
