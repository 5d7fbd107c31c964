//! The read side of customer data, above the jobs that derive it.
//!
//! - [`read`]: one profile as JSON (activity, tags, typed fields, segments, event stats,
//!   latest events) and the filtered, paged list.
//! - [`erase`]: erasure of a user everywhere (source and derived tables) and its audit
//!   entries.

pub mod erase;
pub mod read;
