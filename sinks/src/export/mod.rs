//! Bulk-export writers, one file a job each:
//!
//! - [`format`]: the file encoders ([`FileWriter`]: Parquet zstd, NDJSON gzip, CSV);
//!   `parquet`: the parallel row-group encoder behind the Parquet one;
//! - [`destination`]: where files go ([`Destination`]: an object-store prefix or HTTPS);
//! - [`http`]: the HTTPS destination, one signed, retried POST per file.
//!
//! Everything here is deterministic for the same rows in the same order: the same window
//! exported twice gives the same bytes, so re-runs replace objects with identical ones.

pub mod destination;
pub mod format;
pub mod http;
mod parquet;

pub use self::http::HttpTarget;
pub use destination::{Destination, open_store};
pub use format::{EncodeOptions, FileWriter, Format, encode, sha256_hex};
