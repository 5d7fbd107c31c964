/*
[dependencies]
tidemark-udfs = { path = "{{ TIDEMARK_UDFS_PATH }}", default-features = false }
*/

//! `platform_bucket(platform)`: the platform family (`ios`, `android`, `web`, `server`) of
//! an event's `platform` string, NULL for anything else. Same code as tidemark's SQL jobs.

use arroyo_udf_plugin::udf;

#[udf]
fn platform_bucket(platform: &str) -> Option<String> {
    tidemark_udfs::platform::platform_bucket(platform).map(String::from)
}
