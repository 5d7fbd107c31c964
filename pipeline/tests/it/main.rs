//! Integration tests: real `tidemark` processes over real HTTP, on the local filesystem and
//! on a real S3-protocol server (s3s-fs, in-process).

#![allow(clippy::unwrap_used)]

mod harness;

mod cli;
mod compaction;
mod crash;
mod delta_readers;
mod ingest_api;
