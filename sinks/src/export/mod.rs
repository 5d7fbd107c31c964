//! Bulk-export writers, one file a job each:
//!
//! - [`format`]: the file encoders ([`FileWriter`]: Parquet zstd, NDJSON gzip, CSV);
//!   `parquet`: the parallel row-group encoder behind the Parquet one;
//! - [`destination`]: where files go ([`Destination`]: an object-store prefix or HTTPS);
//! - [`http`]: the HTTPS destination, one signed, retried POST per file;
//! - [`open`]: opening object-store destinations under the server's rules (the address
//!   guard on every connection, `file://` only under the operator's roots).
//!
//! Everything here is deterministic for the same rows in the same order: the same window
//! exported twice gives the same bytes, so re-runs replace objects with identical ones.

pub mod destination;
pub mod format;
pub mod http;
pub mod open;
mod parquet;

pub use self::http::HttpTarget;
pub use destination::Destination;
pub use format::{EncodeOptions, FileWriter, Format, encode, sha256_hex};
pub use open::{DestinationRules, open_store};
