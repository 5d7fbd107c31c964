//! Integration tests of the UDFs: the DataFusion adapters against the shared vectors
//! (`vectors`), and the Arroyo plugins of `udfs/arroyo/` built, loaded and called the way
//! Arroyo's worker calls them (`arroyo`).

#![cfg(feature = "datafusion")]
#![allow(clippy::unwrap_used)]

mod arroyo;
mod vectors;
