//! The read side of customer data, above the jobs that derive it.
//!
//! - [`read`]: one profile as JSON (activity, tags, typed fields, segments, event stats,
//!   latest events).
//! - [`list`]: the filtered, paged list, found in windows of user ids.
//! - [`erase`]: erasure of a user everywhere (source and derived tables) and its audit
//!   entries.

pub mod erase;
pub mod list;
pub mod read;
