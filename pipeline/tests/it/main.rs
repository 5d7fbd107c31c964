//! Integration tests: real `tidemark` processes over real HTTP, on the local filesystem and
//! on a real S3-protocol server (s3s-fs, in-process).

#![allow(clippy::unwrap_used)]

/// Runs the async test body `$f(backend)` once on local disk and once on S3, as the tests
/// `$f::local_disk` and `$f::s3`.
macro_rules! on_both_backends {
    ($f:ident) => {
        mod $f {
            use crate::harness::Backend;

            #[tokio::test(flavor = "multi_thread")]
            async fn local_disk() {
                super::$f(Backend::Local).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn s3() {
                super::$f(Backend::S3).await;
            }
        }
    };
}

mod harness;

mod auth_matrix;
mod bad_input;
mod ballista;
mod chaos;
mod cli;
mod cluster;
mod compaction;
mod console;
mod crash;
mod delta_readers;
mod erasure;
mod exports;
mod flows;
mod freshness;
mod import;
mod ingest_api;
mod jobs;
mod jobs_model;
mod lost_answers;
mod nesting;
mod sdks;
mod segments;
mod sql_doors;
mod stream;
mod users_api;
mod webhooks;
