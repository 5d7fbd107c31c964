//! JSON helpers for the `fields` column of `profiles` (a JSON object of typed values):
//!
//! - `json_get(json, key)`: the JSON text of the top-level `key` (`NULL` when the text is
//!   not an object, or has no such key, or either argument is `NULL`), e.g.
//!   `json_get(fields, 'plan') = '"gold"'`.
//! - `json_list_contains(json, item)`: whether the JSON array `json` holds the string
//!   `item` (`NULL` when `json` is not an array), e.g.
//!   `json_list_contains(json_get(fields, 'langs'), 'en')`.
//! - `json_get_str(json, key)`, `json_get_num(json, key)`, `json_get_bool(json, key)`: the
//!   value of `key` as text (unescaped), `DOUBLE` or `BOOLEAN`; `NULL` when it is missing
//!   or of another JSON type. Segment conditions on custom fields compile to these.

use serde_json::Value;

/// The JSON text of `key` in the object `json`.
pub fn json_get(json: &str, key: &str) -> Option<String> {
    get(json, key).map(|v| v.to_string())
}

/// The value of top-level `key` in the object `json`, without building the other values
/// (they are skipped; keys are compared in place). `None` for other JSON or bad text.
fn get(json: &str, key: &str) -> Option<Value> {
    use serde::de::DeserializeSeed;
    let mut de = serde_json::Deserializer::from_str(json);
    let found = Find(key).deserialize(&mut de).ok()?;
    de.end().ok()?;
    found
}

/// Finds one key of a JSON object.
struct Find<'k>(&'k str);

impl<'de> serde::de::DeserializeSeed<'de> for Find<'_> {
    type Value = Option<Value>;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> serde::de::Visitor<'de> for Find<'_> {
    type Value = Option<Value>;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut found = None;
        while let Some(is_key) = map.next_key_seed(KeyIs(self.0))? {
            if is_key && found.is_none() {
                found = Some(map.next_value::<Value>()?);
            } else {
                map.next_value::<serde::de::IgnoredAny>()?;
            }
        }
        Ok(found)
    }
}

/// Deserializes a map key as "is it this key?", without allocating.
struct KeyIs<'k>(&'k str);

impl<'de> serde::de::DeserializeSeed<'de> for KeyIs<'_> {
    type Value = bool;

    fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> serde::de::Visitor<'de> for KeyIs<'_> {
    type Value = bool;

    fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.write_str("a string key")
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<bool, E> {
        Ok(v == self.0)
    }
}

/// The string value of `key` (unescaped).
pub fn json_get_str(json: &str, key: &str) -> Option<String> {
    match get(json, key)? {
        Value::String(s) => Some(s),
        _ => None,
    }
}

/// The number value of `key`.
pub fn json_get_num(json: &str, key: &str) -> Option<f64> {
    get(json, key)?.as_f64()
}

/// The boolean value of `key`.
pub fn json_get_bool(json: &str, key: &str) -> Option<bool> {
    get(json, key)?.as_bool()
}

/// Whether the array `json` holds the string `item`.
pub fn json_list_contains(json: &str, item: &str) -> Option<bool> {
    match serde_json::from_str::<Value>(json).ok()? {
        Value::Array(a) => Some(a.iter().any(|v| v.as_str() == Some(item))),
        _ => None,
    }
}

#[cfg(feature = "datafusion")]
pub use adapter::{get_bool_udf, get_num_udf, get_str_udf, get_udf, list_contains_udf};

/// The DataFusion adapters: two string arguments, `NULL` in gives `NULL` out.
#[cfg(feature = "datafusion")]
mod adapter {
    use std::sync::Arc;

    use arrow::array::{ArrayRef, BooleanArray, Float64Array, StringArray};
    use arrow::datatypes::DataType;
    use datafusion::common::{exec_err, plan_err};
    use datafusion::error::Result;
    use datafusion::logical_expr::{
        ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
    };

    use super::{json_get, json_get_bool, json_get_num, json_get_str, json_list_contains};
    use crate::adapter::string_at;

    #[derive(Debug, PartialEq, Eq, Hash, Clone, Copy)]
    enum Kind {
        Get,
        ListContains,
        Str,
        Num,
        Bool,
    }

    fn udf(kind: Kind) -> ScalarUDF {
        ScalarUDF::new_from_impl(JsonUdf {
            kind,
            signature: Signature::string(2, Volatility::Immutable),
        })
    }

    pub fn get_str_udf() -> ScalarUDF {
        udf(Kind::Str)
    }

    pub fn get_num_udf() -> ScalarUDF {
        udf(Kind::Num)
    }

    pub fn get_bool_udf() -> ScalarUDF {
        udf(Kind::Bool)
    }

    #[derive(Debug, PartialEq, Eq, Hash)]
    struct JsonUdf {
        kind: Kind,
        signature: Signature,
    }

    pub fn get_udf() -> ScalarUDF {
        udf(Kind::Get)
    }

    pub fn list_contains_udf() -> ScalarUDF {
        udf(Kind::ListContains)
    }

    fn is_string(t: &DataType) -> bool {
        matches!(
            t,
            DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 | DataType::Null
        )
    }

    impl ScalarUDFImpl for JsonUdf {
        fn name(&self) -> &str {
            match self.kind {
                Kind::Get => "json_get",
                Kind::ListContains => "json_list_contains",
                Kind::Str => "json_get_str",
                Kind::Num => "json_get_num",
                Kind::Bool => "json_get_bool",
            }
        }

        fn signature(&self) -> &Signature {
            &self.signature
        }

        fn return_type(&self, args: &[DataType]) -> Result<DataType> {
            match args {
                [a, b] if is_string(a) && is_string(b) => Ok(match self.kind {
                    Kind::Get | Kind::Str => DataType::Utf8,
                    Kind::ListContains | Kind::Bool => DataType::Boolean,
                    Kind::Num => DataType::Float64,
                }),
                other => plan_err!("{} takes two string arguments, got {other:?}", self.name()),
            }
        }

        fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
            let [a, b] = args.args.as_slice() else {
                return exec_err!("{} takes two arguments", self.name());
            };
            let n = args.number_rows;
            let (a, b) = (a.to_array(n)?, b.to_array(n)?);
            if !is_string(a.data_type()) || !is_string(b.data_type()) {
                return exec_err!("{}: expected string arguments", self.name());
            }
            let pairs = (0..n).map(|i| string_at(&a, i).zip(string_at(&b, i)));
            let out: ArrayRef = match self.kind {
                Kind::Get => Arc::new(
                    pairs
                        .map(|p| p.and_then(|(j, k)| json_get(j, k)))
                        .collect::<StringArray>(),
                ),
                Kind::ListContains => Arc::new(
                    pairs
                        .map(|p| p.and_then(|(j, k)| json_list_contains(j, k)))
                        .collect::<BooleanArray>(),
                ),
                Kind::Str => Arc::new(
                    pairs
                        .map(|p| p.and_then(|(j, k)| json_get_str(j, k)))
                        .collect::<StringArray>(),
                ),
                Kind::Num => Arc::new(
                    pairs
                        .map(|p| p.and_then(|(j, k)| json_get_num(j, k)))
                        .collect::<Float64Array>(),
                ),
                Kind::Bool => Arc::new(
                    pairs
                        .map(|p| p.and_then(|(j, k)| json_get_bool(j, k)))
                        .collect::<BooleanArray>(),
                ),
            };
            Ok(ColumnarValue::Array(out))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_functions() {
        let j = r#"{"plan":"gold","langs":["en","x\"en"],"n":1.5}"#;
        assert_eq!(json_get(j, "plan").as_deref(), Some("\"gold\""));
        assert_eq!(json_get(j, "n").as_deref(), Some("1.5"));
        assert_eq!(json_get(j, "nope"), None);
        assert_eq!(json_get("not json", "plan"), None);
        assert_eq!(json_get("[1]", "plan"), None);
        let langs = json_get(j, "langs").unwrap();
        assert_eq!(json_list_contains(&langs, "en"), Some(true));
        assert_eq!(json_list_contains(&langs, "x\"en"), Some(true));
        assert_eq!(json_list_contains(&langs, "fr"), Some(false));
        assert_eq!(json_list_contains("\"en\"", "en"), None);
        assert_eq!(json_get_str(j, "plan").as_deref(), Some("gold"));
        assert_eq!(json_get_str(j, "n"), None);
        assert_eq!(json_get_num(j, "n"), Some(1.5));
        assert_eq!(json_get_num(j, "plan"), None);
        assert_eq!(json_get_bool(r#"{"b":true}"#, "b"), Some(true));
        assert_eq!(json_get_bool(j, "plan"), None);
    }
}

#[cfg(all(test, feature = "datafusion"))]
mod adapter_tests {
    use arrow::array::{Array, AsArray};
    use datafusion::prelude::SessionContext;

    use super::*;

    #[tokio::test]
    async fn in_sql_with_every_string_type_and_nulls() {
        let ctx = SessionContext::new();
        ctx.register_udf(get_udf());
        ctx.register_udf(list_contains_udf());
        let out = ctx
            .sql(
                r#"SELECT json_get(arrow_cast(f, 'Utf8View'), 'plan') AS p,
                          json_list_contains(json_get(arrow_cast(f, 'LargeUtf8'), 'langs'), 'en') AS l
                   FROM (VALUES ('{"plan":"gold","langs":["en"]}'), (NULL), ('{}')) AS t(f)"#,
            )
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let p = out[0].column(0).as_string::<i32>();
        let l = out[0].column(1).as_boolean();
        assert_eq!(p.value(0), "\"gold\"");
        assert!(l.value(0));
        assert!(p.is_null(1) && l.is_null(1));
        assert!(p.is_null(2) && l.is_null(2));
    }
}
