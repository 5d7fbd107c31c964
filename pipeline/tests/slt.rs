//! Runs the sqllogictest golden files in `sql/tests/*.slt` against embedded DataFusion
//! with tidemark's UDFs, each file in its own session with 2 target partitions.
//!
//! `{{name}}` in a statement is replaced by the text of `sql/jobs/name.sql`, so the files
//! test the job SQL the runner executes, not a copy of it. `{{segment:ID}}` is replaced by
//! the compiled SQL of the definition `sql/tests/segments/ID.json` (fields declared in
//! `sql/tests/segments/fields.json`, environment `prod`, now = 2026-01-10T00:00:00Z), with
//! its bound values written as escaped literals.
//!
//! `cargo test --test slt -- --complete` rewrites the expected results in place.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};

use arrow::array::{Array, RecordBatch};
use arrow::datatypes::DataType;
use arrow::util::display::{ArrayFormatter, FormatOptions};
use datafusion::error::DataFusionError;
use datafusion::prelude::{SessionConfig, SessionContext};
use sqllogictest::{DBOutput, DefaultColumnType};

fn sql_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../sql")
}

struct DataFusion {
    ctx: SessionContext,
}

fn expand(sql: &str) -> Result<String, DataFusionError> {
    let mut out = String::new();
    let mut rest = sql;
    while let Some(start) = rest.find("{{") {
        let end = rest[start..]
            .find("}}")
            .ok_or_else(|| DataFusionError::Plan("unclosed {{".into()))?;
        let name = &rest[start + 2..start + end];
        let text = match name.strip_prefix("segment:") {
            Some(id) => segment_sql(id)?,
            None => {
                let path = sql_dir().join("jobs").join(format!("{name}.sql"));
                std::fs::read_to_string(&path)
                    .map_err(|e| DataFusionError::Plan(format!("{}: {e}", path.display())))?
            }
        };
        out.push_str(&rest[..start]);
        out.push_str(&text);
        out.push('\n');
        rest = &rest[start + end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// 2026-01-10T00:00:00Z, the "now" of segment definitions in the golden files.
const SEGMENT_NOW_US: i64 = 1_768_003_200_000_000;

fn segment_sql(id: &str) -> Result<String, DataFusionError> {
    use tidemark::segments::{compile, def};
    use tidemark::users::fields::{FieldDef, FieldType};
    let dir = sql_dir().join("tests").join("segments");
    let read = |name: &str| -> Result<serde_json::Value, DataFusionError> {
        let path = dir.join(name);
        let text = std::fs::read_to_string(&path)
            .map_err(|e| DataFusionError::Plan(format!("{}: {e}", path.display())))?;
        serde_json::from_str(&text)
            .map_err(|e| DataFusionError::Plan(format!("{}: {e}", path.display())))
    };
    let types = read("fields.json")?;
    let fields = types
        .as_object()
        .into_iter()
        .flatten()
        .map(|(name, t)| {
            let field_type = FieldType::parse(t.as_str().unwrap_or_default()).unwrap();
            let def = FieldDef {
                name: name.clone(),
                field_type,
                label: None,
                created_at: chrono::Utc::now(),
                since_change_id: String::new(),
            };
            (name.clone(), def)
        })
        .collect();
    let doc = read(&format!("{id}.json"))?;
    let (_, segment) = def::parse(&doc, &fields)
        .map_err(|p| DataFusionError::Plan(format!("segment {id}: {p:?}")))?;
    Ok(compile::compile(&segment, "prod", SEGMENT_NOW_US).inline())
}

fn column_type(t: &DataType) -> DefaultColumnType {
    match t {
        DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8 => DefaultColumnType::Text,
        t if t.is_integer() => DefaultColumnType::Integer,
        t if t.is_floating() => DefaultColumnType::FloatingPoint,
        _ => DefaultColumnType::Any,
    }
}

fn rows(batches: &[RecordBatch]) -> Result<Vec<Vec<String>>, DataFusionError> {
    let options = FormatOptions::default().with_null("NULL");
    let mut out = Vec::new();
    for b in batches {
        let formatters = b
            .columns()
            .iter()
            .map(|c| ArrayFormatter::try_new(c.as_ref(), &options))
            .collect::<Result<Vec<_>, _>>()?;
        for r in 0..b.num_rows() {
            out.push(
                formatters
                    .iter()
                    .zip(b.columns())
                    .map(|(f, c)| {
                        let v = f.value(r).to_string();
                        if v.is_empty() && !c.is_null(r) {
                            "(empty)".into()
                        } else {
                            v
                        }
                    })
                    .collect(),
            );
        }
    }
    Ok(out)
}

#[async_trait::async_trait]
impl sqllogictest::AsyncDB for DataFusion {
    type Error = DataFusionError;
    type ColumnType = DefaultColumnType;

    async fn run(&mut self, sql: &str) -> Result<DBOutput<DefaultColumnType>, DataFusionError> {
        let sql = expand(sql)?;
        let df = self.ctx.sql(&sql).await?;
        let types: Vec<_> = df
            .schema()
            .fields()
            .iter()
            .map(|f| column_type(f.data_type()))
            .collect();
        let is_statement = {
            let head = sql.trim_start().to_ascii_uppercase();
            ["CREATE", "DROP", "INSERT", "SET"]
                .iter()
                .any(|k| head.starts_with(k))
        };
        let batches = df.collect().await?;
        if is_statement {
            return Ok(DBOutput::StatementComplete(0));
        }
        Ok(DBOutput::Rows {
            types,
            rows: rows(&batches)?,
        })
    }

    async fn shutdown(&mut self) {}

    fn engine_name(&self) -> &str {
        "datafusion"
    }
}

async fn connect() -> Result<DataFusion, DataFusionError> {
    let config = SessionConfig::new().with_target_partitions(2);
    let mut ctx = SessionContext::new_with_config(config);
    tidemark_udfs::register_all(&mut ctx)?;
    Ok(DataFusion { ctx })
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let complete = std::env::args().any(|a| a == "--complete");
    let mut files: Vec<PathBuf> = std::fs::read_dir(sql_dir().join("tests"))
        .unwrap()
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "slt"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .slt files in sql/tests");
    let mut failed = 0;
    for file in &files {
        let mut runner = sqllogictest::Runner::new(connect);
        let name = file.file_name().unwrap().to_string_lossy().into_owned();
        if complete {
            runner
                .update_test_file(
                    file,
                    " ",
                    sqllogictest::default_validator,
                    sqllogictest::default_normalizer,
                    sqllogictest::default_column_validator,
                )
                .await
                .unwrap();
            println!("completed {name}");
        } else {
            match runner.run_file_async(file).await {
                Ok(()) => println!("ok      {name}"),
                Err(e) => {
                    failed += 1;
                    println!("FAILED  {name}\n{e}");
                }
            }
        }
    }
    if failed > 0 {
        println!("{failed} of {} slt file(s) failed", files.len());
        std::process::exit(1);
    }
}
