//! `event_key(environment, event_id)`: a 64-bit hash of an event's identity.
//!
//! The dedup step of the jobs groups ten million ids to find the few sent more than once;
//! grouping a `UInt64` is several times cheaper than grouping strings. A collision only
//! sends a unique event down the exact (string) comparison path, so results never depend
//! on the hash being perfect.

use xxhash_rust::xxh3::Xxh3;

/// The key of `(environment, event_id)`.
pub fn event_key(environment: &str, event_id: &str) -> u64 {
    let mut h = Xxh3::new();
    h.update(environment.as_bytes());
    // 0xff never occurs in UTF-8, so ("ab", "c") and ("a", "bc") differ.
    h.update(&[0xff]);
    h.update(event_id.as_bytes());
    h.digest()
}

#[cfg(feature = "datafusion")]
pub use adapter::udf;

/// The DataFusion adapter: `event_key(text, text) -> UInt64`, null when either is null.
#[cfg(feature = "datafusion")]
mod adapter {
    use std::sync::Arc;

    use arrow::array::UInt64Array;
    use arrow::datatypes::DataType;
    use datafusion::common::{ScalarValue, exec_err, plan_err};
    use datafusion::error::Result;
    use datafusion::logical_expr::{
        ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility,
    };

    use super::event_key;
    use crate::adapter::string_at;

    pub fn udf() -> ScalarUDF {
        ScalarUDF::new_from_impl(EventKeyUdf {
            signature: Signature::string(2, Volatility::Immutable),
        })
    }

    #[derive(Debug, PartialEq, Eq, Hash)]
    struct EventKeyUdf {
        signature: Signature,
    }

    impl ScalarUDFImpl for EventKeyUdf {
        fn name(&self) -> &str {
            "event_key"
        }

        fn signature(&self) -> &Signature {
            &self.signature
        }

        fn return_type(&self, args: &[DataType]) -> Result<DataType> {
            match args {
                [a, b]
                    if [a, b].iter().all(|t| {
                        matches!(
                            t,
                            DataType::Utf8
                                | DataType::Utf8View
                                | DataType::LargeUtf8
                                | DataType::Null
                        )
                    }) =>
                {
                    Ok(DataType::UInt64)
                }
                other => plan_err!("event_key takes two string arguments, got {other:?}"),
            }
        }

        fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
            let [a, b] = args.args.as_slice() else {
                return exec_err!("event_key takes two arguments");
            };
            if let (ColumnarValue::Scalar(a), ColumnarValue::Scalar(b)) = (a, b) {
                let s = |v: &ScalarValue| match v {
                    ScalarValue::Utf8(s) | ScalarValue::LargeUtf8(s) | ScalarValue::Utf8View(s) => {
                        s.clone()
                    }
                    _ => None,
                };
                let key = s(a).zip(s(b)).map(|(a, b)| event_key(&a, &b));
                return Ok(ColumnarValue::Scalar(ScalarValue::UInt64(key)));
            }
            let n = args.number_rows;
            let (a, b) = (a.to_array(n)?, b.to_array(n)?);
            for arr in [&a, &b] {
                if !matches!(
                    arr.data_type(),
                    DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 | DataType::Null
                ) {
                    return exec_err!(
                        "event_key: expected string arguments, got {}",
                        arr.data_type()
                    );
                }
            }
            let out: UInt64Array = (0..n)
                .map(|i| Some(event_key(string_at(&a, i)?, string_at(&b, i)?)))
                .collect();
            Ok(ColumnarValue::Array(Arc::new(out)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separates_environment_from_id() {
        assert_ne!(event_key("ab", "c"), event_key("a", "bc"));
        assert_eq!(event_key("prod", "e1"), event_key("prod", "e1"));
        assert_ne!(event_key("prod", "e1"), event_key("staging", "e1"));
    }
}

#[cfg(all(test, feature = "datafusion"))]
mod adapter_tests {
    use std::sync::Arc;

    use arrow::array::{
        Array, ArrayRef, AsArray, LargeStringArray, RecordBatch, StringArray, StringViewArray,
    };
    use arrow::datatypes::{DataType, Field, Schema};
    use datafusion::prelude::SessionContext;

    use super::*;
    use crate::adapter::string_at;

    #[tokio::test]
    async fn every_string_type_and_nulls() {
        let ctx = SessionContext::new();
        ctx.register_udf(udf());
        let env: ArrayRef = Arc::new(LargeStringArray::from(vec![
            Some("prod"),
            Some("prod"),
            None,
        ]));
        let id: ArrayRef = Arc::new(StringViewArray::from(vec![Some("e1"), None, Some("e3")]));
        let schema = Schema::new(vec![
            Field::new("env", DataType::LargeUtf8, true),
            Field::new("id", DataType::Utf8View, true),
        ]);
        let batch = RecordBatch::try_new(Arc::new(schema), vec![env, id]).unwrap();
        ctx.register_batch("t", batch).unwrap();
        let out = ctx
            .sql("select event_key(env, id) as k, event_key('prod', 'e1') as s from t")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let k = out[0]
            .column(0)
            .as_primitive::<arrow::datatypes::UInt64Type>();
        let s = out[0]
            .column(1)
            .as_primitive::<arrow::datatypes::UInt64Type>();
        assert_eq!(k.value(0), event_key("prod", "e1"));
        assert_eq!(s.value(0), event_key("prod", "e1"));
        assert!(k.is_null(1) && k.is_null(2));
        let plain: ArrayRef = Arc::new(StringArray::from(vec!["x"]));
        assert_eq!(string_at(&plain, 0), Some("x"));
    }
}
