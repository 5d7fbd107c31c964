//! Query answers as bytes, batch by batch, so a door can stream them: CSV (with a
//! header), NDJSON (one object per row), JSON (one document: column names and types, the
//! rows as objects, the row count), an Arrow IPC stream and Parquet.

use std::sync::Arc;

use arrow::datatypes::{DataType, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use parquet::arrow::ArrowWriter;

use crate::{Error, Result};

/// The answer formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// Aligned text (the CLI's default; needs every row first).
    Table,
    Csv,
    Json,
    Ndjson,
    /// Arrow IPC stream.
    Arrow,
    Parquet,
}

impl Format {
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Table => "text/plain; charset=utf-8",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Json => "application/json",
            Format::Ndjson => "application/x-ndjson",
            Format::Arrow => "application/vnd.apache.arrow.stream",
            Format::Parquet => "application/vnd.apache.parquet",
        }
    }

    /// The format an `Accept` header asks for (its first known media type; JSON when
    /// there is none or it accepts anything). `Err` names what was asked.
    pub fn from_accept(accept: Option<&str>) -> Result<Format, String> {
        let Some(accept) = accept.filter(|a| !a.trim().is_empty()) else {
            return Ok(Format::Json);
        };
        for part in accept.split(',') {
            let mime = part
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase();
            let format = match mime.as_str() {
                "application/json" | "*/*" | "application/*" => Format::Json,
                "text/csv" | "text/*" => Format::Csv,
                "application/x-ndjson" | "application/ndjson" | "application/jsonl" => {
                    Format::Ndjson
                }
                "application/vnd.apache.arrow.stream" => Format::Arrow,
                "application/vnd.apache.parquet" => Format::Parquet,
                _ => continue,
            };
            return Ok(format);
        }
        Err(format!(
            "Accept '{accept}' names no format this endpoint answers in; use application/json, \
             text/csv, application/x-ndjson, application/vnd.apache.arrow.stream or \
             application/vnd.apache.parquet"
        ))
    }
}

/// Turns batches into the bytes of one answer.
pub struct Encoder {
    inner: Inner,
    rows: usize,
}

enum Inner {
    Csv { header: bool },
    Ndjson,
    Json { first_row: bool },
    Arrow(Box<arrow::ipc::writer::StreamWriter<Vec<u8>>>),
    Parquet(Box<ArrowWriter<Vec<u8>>>),
    Table(Vec<RecordBatch>),
}

impl Encoder {
    /// The encoder and the answer's first bytes.
    pub fn new(format: Format, schema: &SchemaRef) -> Result<(Encoder, Bytes)> {
        let (inner, head) = match format {
            Format::Csv => (Inner::Csv { header: true }, Vec::new()),
            Format::Ndjson => (Inner::Ndjson, Vec::new()),
            Format::Json => {
                let columns: Vec<_> = schema
                    .fields()
                    .iter()
                    .map(|f| {
                        serde_json::json!({
                            "name": f.name(),
                            "type": f.data_type().to_string(),
                            "nullable": f.is_nullable(),
                        })
                    })
                    .collect();
                let mut head = br#"{"columns":"#.to_vec();
                serde_json::to_writer(&mut head, &columns)?;
                head.extend_from_slice(br#","rows":["#);
                (Inner::Json { first_row: true }, head)
            }
            Format::Arrow => {
                let mut w = arrow::ipc::writer::StreamWriter::try_new(Vec::new(), schema)?;
                let head = std::mem::take(w.get_mut());
                (Inner::Arrow(Box::new(w)), head)
            }
            Format::Parquet => {
                let w = ArrowWriter::try_new(Vec::new(), schema.clone(), None)
                    .map_err(|e| Error::Invalid(format!("parquet: {e}")))?;
                (Inner::Parquet(Box::new(w)), Vec::new())
            }
            Format::Table => (Inner::Table(Vec::new()), Vec::new()),
        };
        Ok((Encoder { inner, rows: 0 }, Bytes::from(head)))
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The bytes for `batch` (empty for formats that wait for the end).
    pub fn batch(&mut self, batch: &RecordBatch) -> Result<Bytes> {
        self.rows += batch.num_rows();
        let mut out = Vec::new();
        match &mut self.inner {
            Inner::Csv { header } => {
                let mut w = arrow::csv::WriterBuilder::new()
                    .with_header(*header)
                    .build(&mut out);
                w.write(batch)?;
                *header = false;
            }
            Inner::Ndjson => {
                let mut w = json_writer::<arrow::json::writer::LineDelimited>(&mut out);
                w.write(batch)?;
                w.finish()?;
            }
            Inner::Json { first_row } => {
                let mut rows = Vec::new();
                let mut w = json_writer::<arrow::json::writer::LineDelimited>(&mut rows);
                w.write(batch)?;
                w.finish()?;
                for line in rows.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
                    if !*first_row {
                        out.push(b',');
                    }
                    *first_row = false;
                    out.extend_from_slice(line);
                }
            }
            Inner::Arrow(w) => {
                w.write(batch)?;
                out = std::mem::take(w.get_mut());
            }
            Inner::Parquet(w) => {
                w.write(batch)
                    .map_err(|e| Error::Invalid(format!("parquet: {e}")))?;
                out = std::mem::take(w.inner_mut());
            }
            Inner::Table(batches) => batches.push(batch.clone()),
        }
        Ok(Bytes::from(out))
    }

    /// The answer's last bytes.
    pub fn finish(self) -> Result<Bytes> {
        let rows = self.rows;
        let out = match self.inner {
            Inner::Csv { .. } | Inner::Ndjson => Vec::new(),
            Inner::Json { .. } => format!(r#"],"row_count":{rows}}}"#).into_bytes(),
            Inner::Arrow(mut w) => {
                w.finish()?;
                std::mem::take(w.get_mut())
            }
            Inner::Parquet(w) => w
                .into_inner()
                .map_err(|e| Error::Invalid(format!("parquet: {e}")))?,
            Inner::Table(batches) => {
                let mut text = arrow::util::pretty::pretty_format_batches(&batches)?.to_string();
                text.push('\n');
                text.into_bytes()
            }
        };
        Ok(Bytes::from(out))
    }
}

/// Nulls written as `null`, so every row has every column.
fn json_writer<F: arrow::json::writer::JsonFormat>(
    out: &mut Vec<u8>,
) -> arrow::json::Writer<&mut Vec<u8>, F> {
    arrow::json::WriterBuilder::new()
        .with_explicit_nulls(true)
        .build::<_, F>(out)
}

/// The type clients outside DataFusion read best: string and binary views (DataFusion's
/// defaults) as plain strings and binaries. ADBC's Flight SQL driver reads a 10M-row
/// answer of views 2.5-6x slower than the same plain columns; older clients cannot read
/// views at all.
pub fn plain_type(t: &DataType) -> DataType {
    match t {
        DataType::Utf8View => DataType::Utf8,
        DataType::BinaryView => DataType::Binary,
        other => other.clone(),
    }
}

pub fn plain_schema(schema: &Schema) -> arrow::datatypes::SchemaRef {
    Arc::new(Schema::new_with_metadata(
        schema
            .fields()
            .iter()
            .map(|f| f.as_ref().clone().with_data_type(plain_type(f.data_type())))
            .collect::<Vec<_>>(),
        schema.metadata().clone(),
    ))
}

/// `batch` with its view columns cast to [`plain_schema`]'s types.
pub fn to_plain(
    batch: RecordBatch,
    schema: &arrow::datatypes::SchemaRef,
) -> Result<RecordBatch, arrow::error::ArrowError> {
    if batch.schema().fields() == schema.fields() {
        return Ok(batch);
    }
    let columns = batch
        .columns()
        .iter()
        .zip(schema.fields())
        .map(|(c, f)| arrow::compute::cast(c, f.data_type()))
        .collect::<Result<Vec<_>, _>>()?;
    RecordBatch::try_new(schema.clone(), columns)
}

#[cfg(test)]
mod tests {
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::Field;

    use super::*;

    fn batch(ids: &[&str], n: &[Option<i64>]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("user_id", DataType::Utf8, false),
            Field::new("n", DataType::Int64, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from(ids.to_vec())),
                Arc::new(Int64Array::from(n.to_vec())),
            ],
        )
        .unwrap()
    }

    fn encode(format: Format, batches: &[RecordBatch]) -> Vec<u8> {
        let (mut enc, head) = Encoder::new(format, &batches[0].schema()).unwrap();
        let mut out = head.to_vec();
        for b in batches {
            out.extend_from_slice(&enc.batch(b).unwrap());
        }
        out.extend_from_slice(&enc.finish().unwrap());
        out
    }

    #[test]
    fn every_format_holds_every_row_across_batches() {
        let batches = [
            batch(&["a", "b"], &[Some(1), None]),
            batch(&["c"], &[Some(3)]),
        ];
        let json: serde_json::Value =
            serde_json::from_slice(&encode(Format::Json, &batches)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({
                "columns": [
                    {"name": "user_id", "type": "Utf8", "nullable": false},
                    {"name": "n", "type": "Int64", "nullable": true}
                ],
                "rows": [
                    {"user_id": "a", "n": 1}, {"user_id": "b", "n": null},
                    {"user_id": "c", "n": 3}
                ],
                "row_count": 3
            })
        );
        assert_eq!(
            String::from_utf8(encode(Format::Csv, &batches)).unwrap(),
            "user_id,n\na,1\nb,\nc,3\n"
        );
        assert_eq!(
            String::from_utf8(encode(Format::Ndjson, &batches)).unwrap(),
            "{\"user_id\":\"a\",\"n\":1}\n{\"user_id\":\"b\",\"n\":null}\n{\"user_id\":\"c\",\"n\":3}\n"
        );
        let ipc = encode(Format::Arrow, &batches);
        let read: Vec<RecordBatch> =
            arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(ipc), None)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
        assert_eq!(read, batches.to_vec());
        let pq = Bytes::from(encode(Format::Parquet, &batches));
        let read: Vec<RecordBatch> =
            parquet::arrow::arrow_reader::ParquetRecordBatchReader::try_new(pq, 1024)
                .unwrap()
                .collect::<Result<_, _>>()
                .unwrap();
        assert_eq!(
            arrow::compute::concat_batches(&read[0].schema(), &read)
                .unwrap()
                .num_rows(),
            3
        );
        let empty: serde_json::Value =
            serde_json::from_slice(&encode(Format::Json, &[batch(&[], &[])])).unwrap();
        assert_eq!(empty["row_count"], 0);
        assert_eq!(empty["rows"], serde_json::json!([]));
    }

    #[test]
    fn accept_headers_choose_the_format() {
        for (accept, want) in [
            (None, Format::Json),
            (Some("*/*"), Format::Json),
            (Some("text/csv"), Format::Csv),
            (Some("application/x-ndjson"), Format::Ndjson),
            (Some("application/vnd.apache.arrow.stream"), Format::Arrow),
            (Some("text/html, text/csv;q=0.9"), Format::Csv),
        ] {
            assert_eq!(Format::from_accept(accept), Ok(want), "{accept:?}");
        }
        let err = Format::from_accept(Some("image/png")).unwrap_err();
        assert!(err.contains("'image/png'"), "{err}");
    }
}
