//! tidemark: a self-hosted customer data pipeline.
//!
//! # Layout
//!
//! Each module uses only those listed before it (`scripts/layers.py` checks this).
//!
//! The ground floor:
//! - [`error`]: the crate's error and `Result`, classified (user, retryable, internal).
//! - [`config`]: the layered configuration (defaults -> `tidemark.toml` -> `TIDEMARK_*` ->
//!   flags), every section in it.
//! - [`problem`]: problems with user input, listed all at once, and `WriteError`.
//! - [`reltime`]: the one grammar of times users write (RFC 3339 or `-7d`, `24h`, `+1d`).
//! - [`storage`]: the object store behind everything, the one place that builds storage
//!   paths ([`storage::paths`]), versioned JSON documents ([`storage::docs`]) and the
//!   registry of config documents built on them ([`storage::registry`]), the Delta tables
//!   ([`storage::events_table`]), retention ([`storage::retention`]), the leases that give
//!   each singleton worker one process per store ([`storage::lease`]) and storage fault
//!   injection ([`storage::faults`]).
//! - [`auth`]: environments and API keys (hashed at rest, verified in constant time), and
//!   the one role check every door makes ([`auth::KeyCache::authorize`]).
//! - [`metrics`]: Prometheus counters and histograms.
//! - [`supervisor`]: background tasks with one stop signal and an ordered shutdown.
//! - [`ballista`]: running the jobs and queries on a Ballista cluster (the scheduler and
//!   executor roles, and the scan of tidemark's tables there).
//!
//! The data path:
//! - [`ingest`]: event parsing and validation into Arrow, the dedup index, the write-ahead
//!   log with group commit, and the flusher that commits WAL segments to Delta.
//! - [`users`]: what is written about users: custom fields, profile changes, CSV import.
//! - [`compat`]: the Segment / RudderStack and PostHog wire formats, mapped onto events
//!   (ingest) and profile writes and aliases (users).
//! - [`jobs`]: the SQL jobs (`sql/jobs/`) that derive `profiles` and `event_stats`
//!   incrementally, and the views readers see them through.
//! - [`query`]: DataFusion sessions over the tables (one environment's views), and the
//!   one engine every data-team door runs queries with: read-only statement policy, time
//!   travel, `[query]` limits, streaming answer encoders.
//! - [`segments`]: segment definitions, their SQL, membership runs and previews.
//! - [`profiles`]: what is read about users (profiles, lists) and erasure.
//! - [`webhooks`]: subscriptions and the delivery worker (signing and sending are in
//!   `tidemark-sinks`).
//! - [`exports`]: the batched pull API and scheduled exports (encoders and destinations
//!   are in `tidemark-sinks`).
//! - [`flows`]: flows (typed variables, starts, steps), their durable runs and the worker
//!   that fans them out to signed webhooks.
//!
//! On top:
//! - [`server`]: the doors: the HTTP API (axum), the Postgres (pgwire) and Flight SQL
//!   (tonic) doors, on the handlers' narrow state.
//! - [`node`]: the composition of a node: the store, the doors, recovery and every
//!   background pass (the job loop, segments, compaction, retention, key refresh, sinks).
//! - [`cli`]: the `tidemark` command line.

pub mod auth;
pub mod ballista;
pub mod cli;
pub mod compat;
pub mod config;
pub mod error;
pub mod exports;
pub mod flows;
pub mod ingest;
pub mod jobs;
pub mod metrics;
pub mod node;
pub mod problem;
pub mod profiles;
pub mod query;
pub mod reltime;
pub mod segments;
pub mod server;
pub mod storage;
pub mod supervisor;
pub mod users;
pub mod webhooks;

pub use error::{Error, Result};
