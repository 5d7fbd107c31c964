//! Adapts plain `fn(&str) -> Option<&'static str>` functions to DataFusion.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, StringArray};
use arrow::datatypes::DataType;
use datafusion::common::{ScalarValue, exec_err, plan_err};
use datafusion::error::Result;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDFImpl, Signature, TypeSignature, Volatility,
};

/// Reads row `i` of any string array (`Utf8`, `Utf8View`, `LargeUtf8`).
pub fn string_at(array: &ArrayRef, i: usize) -> Option<&str> {
    if array.is_null(i) {
        return None;
    }
    match array.data_type() {
        DataType::Utf8 => Some(array.as_string::<i32>().value(i)),
        DataType::LargeUtf8 => Some(array.as_string::<i64>().value(i)),
        DataType::Utf8View => Some(array.as_string_view().value(i)),
        _ => None,
    }
}

/// A string-to-string scalar UDF: accepts `Utf8`, `Utf8View` and `LargeUtf8`, returns
/// `Utf8`; a null input or a `None` result is a null output.
#[derive(Debug)]
pub struct StrToStrUdf {
    name: &'static str,
    func: fn(&str) -> Option<&'static str>,
    signature: Signature,
}

impl StrToStrUdf {
    pub fn new(name: &'static str, func: fn(&str) -> Option<&'static str>) -> StrToStrUdf {
        let one_string = [DataType::Utf8, DataType::Utf8View, DataType::LargeUtf8]
            .into_iter()
            .map(|t| TypeSignature::Exact(vec![t]))
            .collect();
        StrToStrUdf {
            name,
            func,
            signature: Signature::one_of(one_string, Volatility::Immutable),
        }
    }

    fn apply(&self, input: &ArrayRef) -> Result<ArrayRef> {
        let out: StringArray = match input.data_type() {
            DataType::Utf8 => input
                .as_string::<i32>()
                .iter()
                .map(|v| v.and_then(self.func))
                .collect(),
            DataType::LargeUtf8 => input
                .as_string::<i64>()
                .iter()
                .map(|v| v.and_then(self.func))
                .collect(),
            DataType::Utf8View => input
                .as_string_view()
                .iter()
                .map(|v| v.and_then(self.func))
                .collect(),
            DataType::Null => StringArray::new_null(input.len()),
            other => return exec_err!("{}: expected a string argument, got {other}", self.name),
        };
        Ok(Arc::new(out))
    }
}

// Functions are identified by name (function pointers have no stable identity).
impl PartialEq for StrToStrUdf {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}

impl Eq for StrToStrUdf {}

impl std::hash::Hash for StrToStrUdf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ScalarUDFImpl for StrToStrUdf {
    fn name(&self) -> &str {
        self.name
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match args {
            [DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 | DataType::Null] => {
                Ok(DataType::Utf8)
            }
            other => plan_err!("{} takes one string argument, got {other:?}", self.name),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let [arg] = args.args.as_slice() else {
            return exec_err!("{} takes one argument", self.name);
        };
        match arg {
            ColumnarValue::Array(array) => Ok(ColumnarValue::Array(self.apply(array)?)),
            ColumnarValue::Scalar(scalar) => {
                let value = match scalar {
                    ScalarValue::Utf8(v) | ScalarValue::LargeUtf8(v) | ScalarValue::Utf8View(v) => {
                        v.as_deref().and_then(self.func)
                    }
                    ScalarValue::Null => None,
                    other => {
                        return exec_err!(
                            "{}: expected a string argument, got {other:?}",
                            self.name
                        );
                    }
                };
                Ok(ColumnarValue::Scalar(ScalarValue::Utf8(
                    value.map(str::to_string),
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{LargeStringArray, RecordBatch, StringViewArray};
    use arrow::datatypes::{Field, Schema};
    use datafusion::prelude::SessionContext;

    async fn run(array: ArrayRef) -> Vec<Option<String>> {
        let ctx = SessionContext::new();
        ctx.register_udf(crate::platform::udf());
        let schema = Schema::new(vec![Field::new("p", array.data_type().clone(), true)]);
        let batch = RecordBatch::try_new(Arc::new(schema), vec![array]).unwrap();
        ctx.register_batch("t", batch).unwrap();
        let out = ctx
            .sql("select platform_bucket(p) as b from t")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        out.iter()
            .flat_map(|b| {
                let col = b.column(0).as_string::<i32>().clone();
                col.iter()
                    .map(|v| v.map(str::to_string))
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    fn expected() -> Vec<Option<String>> {
        vec![Some("ios".into()), None, Some("web".into()), None]
    }

    #[tokio::test]
    async fn accepts_every_string_type_and_passes_nulls() {
        let values = [Some("iPhone"), None, Some("browser"), Some("tv")];
        assert_eq!(
            run(Arc::new(StringArray::from(values.to_vec()))).await,
            expected()
        );
        assert_eq!(
            run(Arc::new(LargeStringArray::from(values.to_vec()))).await,
            expected()
        );
        assert_eq!(
            run(Arc::new(StringViewArray::from(values.to_vec()))).await,
            expected()
        );
    }

    #[tokio::test]
    async fn scalars_and_null_literals() {
        let ctx = SessionContext::new();
        ctx.register_udf(crate::platform::udf());
        let out = ctx
            .sql("select platform_bucket('Android') as a, platform_bucket(NULL) as b, platform_bucket(arrow_cast('ios', 'LargeUtf8')) as c")
            .await
            .unwrap()
            .collect()
            .await
            .unwrap();
        let b = &out[0];
        assert_eq!(b.column(0).as_string::<i32>().value(0), "android");
        assert!(b.column(1).is_null(0));
        assert_eq!(b.column(2).as_string::<i32>().value(0), "ios");
    }
}
