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
//! - [`refresh`]: the loop that runs the jobs after commits, then the segments.
//! - [`users`]: custom fields, profile writes (`profile_changes`), profile reads.
//! - [`server`]: the HTTP API (axum): ingest, users, fields and ops endpoints.
//! - [`query`]: DataFusion over the Delta tables, used by `tidemark sql`.
//! - [`metrics`]: Prometheus counters and histograms.
//! - [`reltime`]: the one grammar of times users write (RFC 3339 or `-7d`, `24h`, `+1d`).
//! - [`problem`]: problems with user input, listed all at once, and `WriteError`.
//! - [`supervisor`]: background tasks with one stop signal and an ordered shutdown.
//! - [`cli`]: the `tidemark` command line.

pub mod auth;
pub mod cli;
pub mod config;
pub mod error;
pub mod exports;
pub mod ingest;
pub mod jobs;
pub mod metrics;
pub mod problem;
pub mod profiles;
pub mod query;
pub mod refresh;
pub mod reltime;
pub mod segments;
pub mod server;
pub mod storage;
pub mod supervisor;
pub mod users;
pub mod webhooks;

pub use error::{Error, Result};
