/*
[dependencies]
tidemark-udfs = { path = "{{ TIDEMARK_UDFS_PATH }}", default-features = false }
*/

//! `json_get_bool(json, key)`: the boolean under `key`; NULL otherwise.
//!
//! Answers 1/0 (INT), not BOOLEAN: arroyo-udf-plugin 0.2.0's `#[udf]` builds its results
//! with `PrimitiveBuilder<BooleanType>`, which does not compile (BOOLEAN is not an Arrow
//! primitive type), so no sync Arroyo UDF can return BOOLEAN. Compare with `= 1` or
//! `CAST(… AS BOOLEAN)` in the pipeline's SQL.

use arroyo_udf_plugin::udf;

#[udf]
fn json_get_bool(json: &str, key: &str) -> Option<i32> {
    tidemark_udfs::json::json_get_bool(json, key).map(i32::from)
}
