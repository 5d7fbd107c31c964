//! The DataFusion adapters against the shared vectors (`udfs/vectors.json`), called from
//! SQL with each argument as a literal.

use arrow::array::{Array, AsArray};
use arrow::datatypes::{DataType, Float64Type, UInt64Type};
use datafusion::prelude::SessionContext;
use serde_json::Value;

fn literal(arg: &Option<String>) -> String {
    match arg {
        Some(s) => format!("'{}'", s.replace('\'', "''")),
        None => "CAST(NULL AS VARCHAR)".to_string(),
    }
}

#[tokio::test]
async fn datafusion_adapters_match_the_vectors() {
    let mut ctx = SessionContext::new();
    tidemark_udfs::register_all(&mut ctx).unwrap();
    let vectors = tidemark_udfs::vectors::load();
    let mut n = 0;
    for (name, f) in &vectors.functions {
        for case in &f.cases {
            let args: Vec<String> = case.args.iter().map(literal).collect();
            let sql = format!("SELECT {name}({}) AS v", args.join(", "));
            let batches = ctx.sql(&sql).await.unwrap().collect().await.unwrap();
            let col = batches[0].column(0);
            let got = if col.is_null(0) {
                Value::Null
            } else {
                match col.data_type() {
                    DataType::Utf8 => Value::from(col.as_string::<i32>().value(0)),
                    DataType::Boolean => Value::from(col.as_boolean().value(0)),
                    DataType::UInt64 => Value::from(col.as_primitive::<UInt64Type>().value(0)),
                    DataType::Float64 => Value::from(col.as_primitive::<Float64Type>().value(0)),
                    other => panic!("{name}: unexpected type {other}"),
                }
            };
            assert_eq!(got, case.out, "{sql}");
            n += 1;
        }
    }
    assert_eq!(n, 47);
}
