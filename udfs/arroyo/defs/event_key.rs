/*
[dependencies]
tidemark-udfs = { path = "{{ TIDEMARK_UDFS_PATH }}", default-features = false }
*/

//! `event_key(environment, event_id)`: the 64-bit xxh3 hash tidemark dedups events by.

use arroyo_udf_plugin::udf;

#[udf]
fn event_key(environment: &str, event_id: &str) -> u64 {
    tidemark_udfs::event_key::event_key(environment, event_id)
}
