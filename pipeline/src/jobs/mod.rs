//! The SQL jobs that derive `profiles` and `event_stats` from `events`.
//!
//! - [`defs`]: the jobs, their tables' schemas and their SQL (from `sql/jobs/`).
//! - [`plan`]: which `events` files a run reads (pure, no I/O).
//! - [`inputs`]: reading the `events` log and registering the SQL inputs.
//! - [`runner`]: incremental runs, rebuilds; the cursor is a Delta `txn` committed with
//!   the rows.
//! - [`publish`]: folding pending partial rows into the published tables.
//! - [`status`]: cursors and lag for `tidemark jobs status`.
//! - [`views`]: how tidemark's readers see the derived tables (published + pending).
//!
//! Each incremental run appends one partial row per key it touched to the job's pending
//! table (`_tidemark/pending/<table>`), so a run's cost follows the new events, not the
//! table's size. The published Delta tables (`profiles`, `event_stats`,
//! `profile_attributes`) hold one row per key with final values in every version: a
//! publish pass (every `jobs.publish_interval`) folds the pending rows in by the job's
//! merge SQL (first = min, last = max, count = sum), rewriting only the (environment,
//! user bucket) partitions they touch, in one commit per table. tidemark's own readers
//! merge the published rows with the pending ones and so see every run at once. The
//! choices and their costs are in `DERIVED_TABLES.md` beside this file.

pub mod defs;
pub mod inputs;
pub mod plan;
pub mod publish;
pub mod runner;
pub mod status;
pub mod views;

pub use defs::Job;
pub use runner::{JobOptions, RunReport, Runner};
