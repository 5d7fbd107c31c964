/*
[dependencies]
tidemark-udfs = { path = "{{ TIDEMARK_UDFS_PATH }}", default-features = false }
*/

//! `json_get_str(json, key)`: the string under `key`; NULL when absent or not a string.

use arroyo_udf_plugin::udf;

#[udf]
fn json_get_str(json: &str, key: &str) -> Option<String> {
    tidemark_udfs::json::json_get_str(json, key)
}
