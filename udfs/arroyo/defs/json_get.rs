/*
[dependencies]
tidemark-udfs = { path = "{{ TIDEMARK_UDFS_PATH }}", default-features = false }
*/

//! `json_get(json, key)`: the JSON text of the value under `key` of a JSON object
//! (`'"gold"'`, `'3'`); NULL when the text is not an object or has no such key.

use arroyo_udf_plugin::udf;

#[udf]
fn json_get(json: &str, key: &str) -> Option<String> {
    tidemark_udfs::json::json_get(json, key)
}
