//! The SQL jobs that derive `profiles` and `event_stats` from `events`.
//!
//! - [`defs`]: the jobs, their tables' schemas and their SQL (from `sql/jobs/`).
//! - [`plan`]: which `events` files a run reads (pure, no I/O).
//! - [`inputs`]: reading the `events` log and registering the SQL inputs.
//! - [`runner`]: incremental runs, rebuilds, compaction; the cursor is a Delta `txn`
//!   committed with the rows.
//! - [`status`]: cursors and lag for `tidemark jobs status`.
//! - [`views`]: how readers see the derived tables (partial rows merged).
//!
//! Derived tables hold partial aggregates: each incremental run appends one row per key
//! it touched, and readers see them folded by the job's merge SQL (first = min, last =
//! max, count = sum). Compaction rewrites a table with its merged rows once it has many
//! files, so a run's cost follows the new events, not the table's size.

pub mod defs;
pub mod inputs;
pub mod plan;
pub mod runner;
pub mod status;
pub mod views;

pub use defs::Job;
pub use runner::{JobOptions, RunReport, Runner};
