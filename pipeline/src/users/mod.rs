//! Customer data written by the users API and the importer (reads and erasure are in
//! `profiles`, below the jobs).
//!
//! - [`fields`]: the custom field registry (config document) and typed value checks.
//! - [`aliases`]: the `aliases` Delta table (SDK alias calls) the jobs resolve ids through.
//! - [`change_id`]: the time-ordered ids that order profile changes.
//! - [`changes`]: the `profile_changes` Delta table, the update document, validation.
//! - [`import`]: the CSV importer (CLI and API).
//!
//! Writes are appended to `profile_changes`; the `profile_attributes` job
//! (`sql/jobs/profile_attributes.sql`) folds them in change order, and readers see them
//! in `profiles` (`sql/jobs/profiles_view.sql`).

pub mod aliases;
pub mod change_id;
pub mod changes;
pub mod fields;
pub mod import;
