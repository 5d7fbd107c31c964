//! Customer data written by the users API and the importer, and profile reads.
//!
//! - [`fields`]: the custom field registry (config document) and typed value checks.
//! - [`changes`]: the `profile_changes` Delta table, the update document, validation.
//! - [`read`]: one profile as JSON (activity, tags, typed fields, event stats, events)
//!   and the filtered, paged list.
//! - [`import`]: the CSV importer (CLI and API).
//! - [`erase`]: erasure of a user everywhere, its audit entries, retention and VACUUM.
//!
//! Writes are appended to `profile_changes`; the `profile_attributes` job
//! (`sql/jobs/profile_attributes.sql`) folds them in change order, and readers see them
//! in `profiles` (`sql/jobs/profiles_view.sql`).

pub mod changes;
pub mod erase;
pub mod fields;
pub mod import;
pub mod read;
