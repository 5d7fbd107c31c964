/*
[dependencies]
tidemark-udfs = { path = "{{ TIDEMARK_UDFS_PATH }}", default-features = false }
*/

//! `json_get_num(json, key)`: the number under `key` as a double; NULL otherwise.

use arroyo_udf_plugin::udf;

#[udf]
fn json_get_num(json: &str, key: &str) -> Option<f64> {
    tidemark_udfs::json::json_get_num(json, key)
}
