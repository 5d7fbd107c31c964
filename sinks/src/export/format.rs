//! File encoders: Parquet (zstd, row groups encoded in parallel), NDJSON (gzip) and CSV,
//! deterministic for the same rows in the same order, so a re-run writes the same bytes.

use std::io::Write;
use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use flate2::Compression as Gzip;
use flate2::write::GzEncoder;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;

use super::parquet::{ParallelParquet, arrow_err};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::{Error, Result};

/// The file formats of exports and of the batched pull API.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// Parquet, zstd-compressed.
    Parquet,
    /// Newline-delimited JSON, gzip-compressed.
    Ndjson,
    /// CSV with a header row (uncompressed).
    Csv,
}

impl Format {
    pub const NAMES: &'static str = "parquet, ndjson, csv";

    pub fn parse(text: &str, field: &str) -> Result<Format> {
        match text.trim().to_ascii_lowercase().as_str() {
            "parquet" => Ok(Format::Parquet),
            "ndjson" | "jsonl" | "json" => Ok(Format::Ndjson),
            "csv" => Ok(Format::Csv),
            other => Err(Error::invalid(
                field,
                format!("unknown format {other:?}; expected one of {}", Self::NAMES),
            )),
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Ndjson => "ndjson",
            Format::Csv => "csv",
        }
    }

    /// The file extension (without the dot).
    pub fn extension(self) -> &'static str {
        match self {
            Format::Parquet => "parquet",
            Format::Ndjson => "ndjson.gz",
            Format::Csv => "csv",
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::Parquet => "application/vnd.apache.parquet",
            Format::Ndjson => "application/gzip",
            Format::Csv => "text/csv; charset=utf-8",
        }
    }
}

/// How files are encoded.
#[derive(Debug, Clone)]
pub struct EncodeOptions {
    /// zstd level of Parquet files.
    pub zstd_level: i32,
    /// Text columns holding JSON documents (e.g. `properties`): NDJSON embeds them as
    /// JSON values instead of strings.
    pub json_columns: Vec<String>,
    /// Threads that encode a Parquet row group's columns in parallel.
    pub threads: usize,
}

impl Default for EncodeOptions {
    fn default() -> Self {
        EncodeOptions {
            zstd_level: 3,
            json_columns: vec!["properties".into()],
            threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        }
    }
}

/// Encodes `batches` as one file.
pub fn encode(
    format: Format,
    schema: SchemaRef,
    options: &EncodeOptions,
    batches: &[RecordBatch],
) -> Result<Bytes> {
    let mut w = FileWriter::new(format, schema, options)?;
    for b in batches {
        w.write(b)?;
    }
    w.finish()
}

enum Inner {
    Parquet(Box<ParallelParquet>),
    Ndjson(Box<GzEncoder<Vec<u8>>>),
    Csv(Box<arrow::csv::Writer<Vec<u8>>>),
}

/// Encodes the batches of one file in memory.
pub struct FileWriter {
    inner: Inner,
    schema: SchemaRef,
    json_columns: Vec<usize>,
    rows: u64,
}

/// The schema files are written with: string and binary views (DataFusion's in-memory
/// form) become plain strings and binaries, which every Parquet reader maps alike.
/// CSV has no nested values: lists, structs and maps become JSON text.
fn file_schema(schema: &SchemaRef, csv: bool) -> SchemaRef {
    use arrow::datatypes::{DataType, Field, Schema};
    let plain = |f: &arrow::datatypes::FieldRef| -> Field {
        let t = match f.data_type() {
            DataType::Utf8View => DataType::Utf8,
            DataType::BinaryView => DataType::Binary,
            t if csv && t.is_nested() => DataType::Utf8,
            t => t.clone(),
        };
        f.as_ref().clone().with_data_type(t)
    };
    if !schema.fields().iter().any(|f| {
        matches!(f.data_type(), DataType::Utf8View | DataType::BinaryView)
            || (csv && f.data_type().is_nested())
    }) {
        return schema.clone();
    }
    Arc::new(Schema::new_with_metadata(
        schema.fields().iter().map(plain).collect::<Vec<_>>(),
        schema.metadata().clone(),
    ))
}

impl FileWriter {
    pub fn new(format: Format, schema: SchemaRef, options: &EncodeOptions) -> Result<FileWriter> {
        let schema = file_schema(&schema, format == Format::Csv);
        let inner = match format {
            Format::Parquet => {
                let zstd = ZstdLevel::try_new(options.zstd_level).map_err(arrow_err)?;
                let props = WriterProperties::builder()
                    .set_compression(Compression::ZSTD(zstd))
                    .build();
                Inner::Parquet(Box::new(ParallelParquet::new(
                    schema.clone(),
                    props,
                    options.threads,
                )?))
            }
            Format::Ndjson => Inner::Ndjson(Box::new(GzEncoder::new(Vec::new(), Gzip::fast()))),
            Format::Csv => Inner::Csv(Box::new(
                arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(Vec::new()),
            )),
        };
        let json_columns = options
            .json_columns
            .iter()
            .filter_map(|c| schema.index_of(c).ok())
            .collect();
        Ok(FileWriter {
            inner,
            schema,
            json_columns,
            rows: 0,
        })
    }

    pub fn rows(&self) -> u64 {
        self.rows
    }

    pub fn schema(&self) -> &SchemaRef {
        &self.schema
    }

    pub fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        self.rows += batch.num_rows() as u64;
        if let Inner::Parquet(w) = &mut self.inner {
            // The Parquet encoder takes string / binary views as they are (the same bytes
            // as the plain arrays the file's schema names): no cast.
            return w.write(batch);
        }
        let cast;
        let batch = if batch.schema_ref().fields() == self.schema.fields() {
            batch
        } else {
            let columns = batch
                .columns()
                .iter()
                .zip(self.schema.fields())
                .map(|(c, f)| {
                    if c.data_type().is_nested() && !f.data_type().is_nested() {
                        json_text(c)
                    } else {
                        arrow::compute::cast(c, f.data_type())
                    }
                })
                .collect::<std::result::Result<Vec<_>, _>>()
                .map_err(arrow_err)?;
            cast = RecordBatch::try_new(self.schema.clone(), columns).map_err(arrow_err)?;
            &cast
        };
        match &mut self.inner {
            Inner::Parquet(_) => Ok(()),
            Inner::Csv(w) => w.write(batch).map_err(arrow_err),
            Inner::Ndjson(gz) => {
                let lines = ndjson_lines(batch, &self.json_columns)?;
                gz.write_all(&lines).map_err(arrow_err)
            }
        }
    }

    /// The finished file.
    pub fn finish(self) -> Result<Bytes> {
        let bytes = match self.inner {
            Inner::Parquet(w) => w.finish()?,
            Inner::Csv(w) => w.into_inner(),
            Inner::Ndjson(gz) => gz.finish().map_err(arrow_err)?,
        };
        Ok(Bytes::from(bytes))
    }
}

/// Each value of a nested column as JSON text (nulls stay null).
fn json_text(
    column: &arrow::array::ArrayRef,
) -> std::result::Result<arrow::array::ArrayRef, arrow::error::ArrowError> {
    use arrow::array::{Array, StringArray};
    let field = arrow::datatypes::Field::new("v", column.data_type().clone(), true);
    let batch = RecordBatch::try_new(
        Arc::new(arrow::datatypes::Schema::new(vec![field])),
        vec![column.clone()],
    )?;
    let mut buf = Vec::new();
    {
        let mut w = arrow::json::ArrayWriter::new(&mut buf);
        w.write(&batch)?;
        w.finish()?;
    }
    let rows: Vec<serde_json::Map<String, Value>> = if buf.is_empty() {
        Vec::new()
    } else {
        serde_json::from_slice(&buf)
            .map_err(|e| arrow::error::ArrowError::JsonError(e.to_string()))?
    };
    let values: StringArray = (0..column.len())
        .map(|i| {
            if column.is_null(i) {
                None
            } else {
                rows.get(i).and_then(|r| r.get("v")).map(Value::to_string)
            }
        })
        .collect();
    Ok(Arc::new(values))
}

/// One JSON object per row (explicit nulls), with `json_columns` embedded as JSON.
fn ndjson_lines(batch: &RecordBatch, json_columns: &[usize]) -> Result<Vec<u8>> {
    let mut buf = Vec::new();
    {
        let mut w = arrow::json::WriterBuilder::new()
            .with_explicit_nulls(true)
            .build::<_, arrow::json::writer::LineDelimited>(&mut buf);
        w.write(batch).map_err(arrow_err)?;
        w.finish().map_err(arrow_err)?;
    }
    if json_columns.is_empty() {
        return Ok(buf);
    }
    let names: Vec<&str> = json_columns
        .iter()
        .map(|&i| batch.schema_ref().field(i).name().as_str())
        .collect();
    let mut out = Vec::with_capacity(buf.len());
    for line in buf.split(|b| *b == b'\n').filter(|l| !l.is_empty()) {
        let mut row: serde_json::Map<String, Value> =
            serde_json::from_slice(line).map_err(arrow_err)?;
        for name in &names {
            if let Some(Value::String(text)) = row.get(*name)
                && let Ok(parsed) = serde_json::from_str::<Value>(text)
            {
                row.insert((*name).to_string(), parsed);
            }
        }
        serde_json::to_writer(&mut out, &row).map_err(arrow_err)?;
        out.push(b'\n');
    }
    Ok(out)
}

/// Lowercase hex SHA-256 of `bytes` (manifest checksums).
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use arrow::array::{Int64Array, StringArray};
    use arrow::datatypes::{DataType, Field, Schema};

    fn batch() -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("properties", DataType::Utf8, true),
        ]));
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(Int64Array::from(vec![1, 2])),
                Arc::new(StringArray::from(vec![Some(r#"{"a":[1,"é"]}"#), None])),
            ],
        )
        .expect("batch")
    }

    fn encode(format: Format) -> Bytes {
        let b = batch();
        let mut w = FileWriter::new(format, b.schema(), &EncodeOptions::default()).expect("w");
        w.write(&b).expect("write");
        assert_eq!(w.rows(), 2);
        w.finish().expect("finish")
    }

    #[test]
    fn ndjson_is_gzipped_lines_with_embedded_json() {
        let gz = encode(Format::Ndjson);
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut text)
            .expect("gunzip");
        let rows: Vec<Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).expect("json"))
            .collect();
        assert_eq!(
            rows,
            vec![
                serde_json::json!({"n": 1, "properties": {"a": [1, "é"]}}),
                serde_json::json!({"n": 2, "properties": null}),
            ]
        );
    }

    #[test]
    fn encoding_is_deterministic_and_parquet_reads_back() {
        for f in [Format::Parquet, Format::Ndjson, Format::Csv] {
            assert_eq!(encode(f), encode(f), "{f:?}");
        }
        let bytes = encode(Format::Parquet);
        let reader =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(bytes.clone())
                .expect("parquet")
                .build()
                .expect("reader");
        let batches: Vec<RecordBatch> = reader.map(|b| b.expect("batch")).collect();
        assert_eq!(batches, vec![batch()]);
        let meta = parquet::file::reader::SerializedFileReader::new(bytes).expect("meta");
        let col = parquet::file::reader::FileReader::metadata(&meta)
            .row_group(0)
            .column(0)
            .compression();
        assert!(matches!(col, Compression::ZSTD(_)), "{col:?}");
        let csv = encode(Format::Csv);
        assert_eq!(
            std::str::from_utf8(&csv).expect("utf8"),
            "n,properties\n1,\"{\"\"a\"\":[1,\"\"é\"\"]}\"\n2,\n"
        );
    }

    #[test]
    fn parallel_parquet_bytes_do_not_depend_on_threads() {
        let b = batch();
        let big =
            arrow::compute::concat_batches(&b.schema(), &vec![b.clone(); 5000]).expect("concat");
        let encode_with = |threads| {
            let options = EncodeOptions {
                threads,
                ..Default::default()
            };
            super::encode(
                Format::Parquet,
                big.schema(),
                &options,
                std::slice::from_ref(&big),
            )
            .expect("encode")
        };
        let one = encode_with(1);
        assert_eq!(one, encode_with(2));
        assert_eq!(one, encode_with(8));
        let rows: usize =
            parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(one)
                .expect("parquet")
                .build()
                .expect("reader")
                .map(|b| b.expect("batch").num_rows())
                .sum();
        assert_eq!(rows, 10_000);
    }

    #[test]
    fn string_views_encode_like_plain_strings() {
        let plain = batch();
        let views: Vec<arrow::array::ArrayRef> = plain
            .columns()
            .iter()
            .map(|c| match c.data_type() {
                arrow::datatypes::DataType::Utf8 => {
                    arrow::compute::cast(c, &arrow::datatypes::DataType::Utf8View).expect("cast")
                }
                _ => c.clone(),
            })
            .collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("n", DataType::Int64, false),
            Field::new("properties", DataType::Utf8View, true),
        ]));
        let viewed = RecordBatch::try_new(schema, views).expect("batch");
        for f in [Format::Parquet, Format::Ndjson, Format::Csv] {
            let a = super::encode(
                f,
                plain.schema(),
                &EncodeOptions::default(),
                std::slice::from_ref(&plain),
            );
            let b = super::encode(
                f,
                viewed.schema(),
                &EncodeOptions::default(),
                std::slice::from_ref(&viewed),
            );
            assert_eq!(a.expect("plain"), b.expect("views"), "{f:?}");
        }
    }

    #[test]
    fn csv_writes_nested_values_as_json_text() {
        use arrow::array::{Array, ListBuilder, StringBuilder};
        let mut tags = ListBuilder::new(StringBuilder::new());
        tags.values().append_value("vip");
        tags.values().append_value("a,b");
        tags.append(true);
        tags.append(false);
        let tags = tags.finish();
        let schema = Arc::new(Schema::new(vec![Field::new(
            "tags",
            tags.data_type().clone(),
            true,
        )]));
        let b = RecordBatch::try_new(schema.clone(), vec![Arc::new(tags)]).expect("batch");
        let mut w = FileWriter::new(Format::Csv, schema, &EncodeOptions::default()).expect("w");
        w.write(&b).expect("write");
        let csv = w.finish().expect("finish");
        assert_eq!(
            std::str::from_utf8(&csv).expect("utf8"),
            // A lone null is written `""` so the row is not an empty line.
            "tags\n\"[\"\"vip\"\",\"\"a,b\"\"]\"\n\"\"\n"
        );
    }
}
