//! Functions the tidemark SQL jobs call, written once as plain Rust (no arrow types) with
//! each one's DataFusion adapter beside it, behind the `datafusion` feature (on by
//! default). Built with `--no-default-features` the crate is the plain functions only,
//! which other hosts adapt: the Arroyo plugins in `udfs/arroyo/` call the same code.
//! `vectors.json` holds inputs and expected outputs (nulls included) that the plain
//! functions, the DataFusion adapters and the Arroyo plugins are all tested against.
//!
//! # Layout
//!
//! - [`platform`]: `platform_bucket(text)`, the platform family an event's `platform`
//!   string belongs to (`ios`, `android`, `web`, `server`), which the profile job uses
//!   for the `last_seen_<platform>_at` columns.
//! - [`event_key`]: `event_key(environment, event_id)`, a 64-bit hash of an event's
//!   identity, so the dedup step groups integers instead of strings.
//! - [`json`]: `json_get(json, key)` and `json_list_contains(json, item)` over the
//!   `fields` JSON of `profiles`.
//! - [`adapter`]: a generic [`ScalarUDFImpl`](datafusion::logical_expr::ScalarUDFImpl)
//!   adapter for `fn(&str) -> Option<&str>` functions that accepts `Utf8`, `Utf8View` and
//!   `LargeUtf8` and passes nulls through.
//!
//! - [`vectors`]: reading `vectors.json`, the cases every implementation is tested
//!   against.
//!
//! [`register_all`] adds every function to a DataFusion session.

#[cfg(feature = "datafusion")]
pub mod adapter;
pub mod event_key;
pub mod json;
pub mod platform;
pub mod vectors;

#[cfg(feature = "datafusion")]
use datafusion::execution::FunctionRegistry;
#[cfg(feature = "datafusion")]
use datafusion::logical_expr::ScalarUDF;

/// Every scalar UDF of this crate, ready for a DataFusion session.
#[cfg(feature = "datafusion")]
pub fn all() -> Vec<ScalarUDF> {
    vec![
        platform::udf(),
        event_key::udf(),
        json::get_udf(),
        json::list_contains_udf(),
        json::get_str_udf(),
        json::get_num_udf(),
        json::get_bool_udf(),
    ]
}

/// Registers every function of this crate with `registry` (a `SessionContext`, say).
#[cfg(feature = "datafusion")]
pub fn register_all(registry: &mut dyn FunctionRegistry) -> datafusion::error::Result<()> {
    for udf in all() {
        registry.register_udf(std::sync::Arc::new(udf))?;
    }
    Ok(())
}
