//! The shared test vectors (`udfs/vectors.json`) and the plain functions called by name,
//! so every host (the DataFusion adapters here, the Arroyo plugins in `udfs/arroyo/`) is
//! checked against the same inputs and outputs.

use serde::Deserialize;
use serde_json::Value;

/// `vectors.json`, compiled in.
pub const JSON: &str = include_str!("../vectors.json");

#[derive(Debug, Deserialize)]
pub struct Vectors {
    pub functions: std::collections::BTreeMap<String, Function>,
}

#[derive(Debug, Deserialize)]
pub struct Function {
    /// `text`, `bool`, `uint64` or `float64`.
    pub returns: String,
    pub cases: Vec<Case>,
}

#[derive(Debug, Deserialize)]
pub struct Case {
    /// String arguments; `None` is SQL `NULL`.
    pub args: Vec<Option<String>>,
    /// The expected result; `null` is SQL `NULL`.
    pub out: Value,
}

/// Parses [`JSON`].
pub fn load() -> Vectors {
    serde_json::from_str(JSON).expect("udfs/vectors.json parses")
}

/// Calls the plain function `name` the way SQL does: any `NULL` argument gives `NULL`.
/// `None` when there is no function of that name or arity.
pub fn call(name: &str, args: &[Option<&str>]) -> Option<Value> {
    if args.iter().any(Option::is_none) {
        return Some(Value::Null);
    }
    let a: Vec<&str> = args.iter().map(|a| a.unwrap_or_default()).collect();
    let text = |v: Option<String>| v.map_or(Value::Null, Value::String);
    Some(match (name, a.as_slice()) {
        ("platform_bucket", [p]) => text(crate::platform::platform_bucket(p).map(String::from)),
        ("event_key", [e, id]) => Value::from(crate::event_key::event_key(e, id)),
        ("json_get", [j, k]) => text(crate::json::json_get(j, k)),
        ("json_list_contains", [j, i]) => {
            crate::json::json_list_contains(j, i).map_or(Value::Null, Value::Bool)
        }
        ("json_get_str", [j, k]) => text(crate::json::json_get_str(j, k)),
        ("json_get_num", [j, k]) => {
            crate::json::json_get_num(j, k).map_or(Value::Null, Value::from)
        }
        ("json_get_bool", [j, k]) => {
            crate::json::json_get_bool(j, k).map_or(Value::Null, Value::Bool)
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The plain functions against every vector.
    #[test]
    fn plain_functions_match_the_vectors() {
        let vectors = load();
        let mut n = 0;
        for (name, f) in &vectors.functions {
            for case in &f.cases {
                let args: Vec<Option<&str>> = case.args.iter().map(Option::as_deref).collect();
                let got = call(name, &args).unwrap_or_else(|| panic!("no plain {name}"));
                assert_eq!(got, case.out, "{name}{:?}", case.args);
                n += 1;
            }
        }
        assert_eq!(n, 47);
    }
}
