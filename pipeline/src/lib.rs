//! tidemark: a self-hosted customer data pipeline.
//!
//! # Layout
//!
//! Base:
//! - [`config`]: the layered configuration (defaults -> `tidemark.toml` -> `TIDEMARK_*` -> flags).
//! - [`error`]: the crate's error and `Result`, classified (user, retryable, internal).
//! - [`problem`]: problems with user input, listed all at once, and `WriteError`.
//! - [`reltime`]: the one grammar of times users write (RFC 3339 or `-7d`, `24h`, `+1d`).
//! - [`storage`]: the object store behind everything, the one place that builds storage
//!   paths ([`storage::paths`]), versioned JSON documents ([`storage::docs`]), the Delta
//!   tables ([`storage::events_table`]), retention ([`storage::retention`]), the leases
//!   that give each singleton worker one process per store ([`storage::lease`]) and
//!   storage fault injection ([`storage::faults`]).
//! - [`auth`]: environments and API keys (hashed at rest, verified in constant time).
//! - [`metrics`]: Prometheus counters and histograms.
//! - [`supervisor`]: background tasks with one stop signal and an ordered shutdown.
//!
//! Data path, each layer using only those above it:
//! - [`ingest`]: event parsing and validation into Arrow, the dedup index, the write-ahead
//!   log with group commit, and the flusher that commits WAL segments to Delta.
//! - [`users`]: what is written about users: custom fields, profile changes, CSV import.
//! - [`jobs`]: the SQL jobs (`sql/jobs/`) that derive `profiles` and `event_stats`
//!   incrementally, and the views readers see them through.
//! - [`query`]: DataFusion sessions over the tables (one environment's views), and the
//!   one engine every data-team door runs queries with: read-only statement policy, time
//!   travel, `[query]` limits, streaming answer encoders.
//! - [`segments`]: segment definitions, their SQL, membership runs and previews.
//! - [`profiles`]: what is read about users (profiles, lists) and erasure.
//! - [`refresh`]: the loop that runs the jobs after commits, then the segments.
//! - [`webhooks`]: subscriptions and the delivery worker (signing and sending are in
//!   `tidemark-sinks`).
//! - [`exports`]: the batched pull API and scheduled exports (encoders and destinations
//!   are in `tidemark-sinks`).
//!
//! Doors:
//! - [`server`]: the HTTP API (axum), the Postgres (pgwire) and Flight SQL (tonic) doors,
//!   and running a node.
//! - [`cli`]: the `tidemark` command line.

pub mod auth;
pub mod ballista;
pub mod cli;
pub mod compat;
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
