//! Bulk-export writers: one file format encoder ([`FileWriter`]: Parquet zstd, NDJSON gzip,
//! CSV) and the destinations files go to ([`Destination`]: an object-store prefix, or an
//! HTTPS endpoint that gets one signed POST per file).
//!
//! Everything here is deterministic for the same rows in the same order: the same window
//! exported twice gives the same bytes, so re-runs replace objects with identical ones.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use flate2::Compression as Gzip;
use flate2::write::GzEncoder;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use parquet::arrow::ArrowWriter;
use parquet::arrow::arrow_writer::{
    ArrowColumnChunk, ArrowColumnWriter, ArrowLeafColumn, ArrowRowGroupWriterFactory,
    compute_leaves,
};
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use parquet::file::writer::SerializedFileWriter;
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderName, HeaderValue};
use serde_json::Value;
use sha2::{Digest, Sha256};
use url::Url;

use crate::client::SafeClient;
use crate::retry::{RetryPolicy, Verdict, judge, judge_failure};
use crate::sign::Secret;
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

/// Rows per Parquet row group (the parquet crate's default).
const ROW_GROUP_ROWS: usize = 1024 * 1024;

/// A Parquet file whose row groups are encoded column by column on several threads (the
/// parquet crate's `ArrowColumnWriter` API); the bytes do not depend on the thread count.
struct ParallelParquet {
    writer: SerializedFileWriter<Vec<u8>>,
    factory: ArrowRowGroupWriterFactory,
    buffered: Vec<RecordBatch>,
    buffered_rows: usize,
    row_groups: usize,
    threads: usize,
}

impl ParallelParquet {
    fn new(schema: SchemaRef, props: WriterProperties, threads: usize) -> Result<ParallelParquet> {
        // ArrowWriter sets up the file (and embeds the Arrow schema); we take it apart.
        let (writer, factory) = ArrowWriter::try_new(Vec::new(), schema, Some(props))
            .and_then(ArrowWriter::into_serialized_writer)
            .map_err(arrow_err)?;
        Ok(ParallelParquet {
            writer,
            factory,
            buffered: Vec::new(),
            buffered_rows: 0,
            row_groups: 0,
            threads: threads.max(1),
        })
    }

    fn write(&mut self, batch: &RecordBatch) -> Result<()> {
        let mut batch = batch.clone();
        while batch.num_rows() > 0 {
            let take = (ROW_GROUP_ROWS - self.buffered_rows).min(batch.num_rows());
            self.buffered.push(batch.slice(0, take));
            self.buffered_rows += take;
            batch = batch.slice(take, batch.num_rows() - take);
            if self.buffered_rows == ROW_GROUP_ROWS {
                self.flush()?;
            }
        }
        Ok(())
    }

    /// Encodes the buffered rows as one row group, a column per task.
    fn flush(&mut self) -> Result<()> {
        if self.buffered_rows == 0 {
            return Ok(());
        }
        let batches = std::mem::take(&mut self.buffered);
        self.buffered_rows = 0;
        let writers = self
            .factory
            .create_column_writers(self.row_groups)
            .map_err(arrow_err)?;
        self.row_groups += 1;
        // leaves[b][c]: leaf column c of batch b (one per writer, in order).
        let mut leaves: Vec<Vec<ArrowLeafColumn>> = Vec::with_capacity(batches.len());
        for b in &batches {
            let mut row = Vec::with_capacity(writers.len());
            for (field, array) in b.schema_ref().fields().iter().zip(b.columns()) {
                row.extend(compute_leaves(field, array).map_err(arrow_err)?);
            }
            leaves.push(row);
        }
        let slots: Vec<std::sync::Mutex<Option<ArrowColumnWriter>>> = writers
            .into_iter()
            .map(|w| std::sync::Mutex::new(Some(w)))
            .collect();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let encode_one = |c: usize| -> Result<ArrowColumnChunk> {
            let mut w = slots[c]
                .lock()
                .ok()
                .and_then(|mut s| s.take())
                .ok_or_else(|| Error::Export("column writer taken twice".into()))?;
            for row in &leaves {
                w.write(&row[c]).map_err(arrow_err)?;
            }
            w.close().map_err(arrow_err)
        };
        let work = || -> Result<Vec<(usize, ArrowColumnChunk)>> {
            let mut done = Vec::new();
            loop {
                let c = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                if c >= slots.len() {
                    return Ok(done);
                }
                done.push((c, encode_one(c)?));
            }
        };
        let threads = self.threads.min(slots.len()).max(1);
        let mut chunks: Vec<(usize, ArrowColumnChunk)> = std::thread::scope(|scope| {
            let others: Vec<_> = (1..threads).map(|_| scope.spawn(work)).collect();
            let mut all = work()?;
            for h in others {
                all.extend(
                    h.join()
                        .map_err(|_| Error::Export("an encoding thread panicked".into()))??,
                );
            }
            Ok::<_, Error>(all)
        })?;
        chunks.sort_by_key(|(c, _)| *c);
        let mut rg = self.writer.next_row_group().map_err(arrow_err)?;
        for (_, chunk) in chunks {
            chunk.append_to_row_group(&mut rg).map_err(arrow_err)?;
        }
        rg.close().map_err(arrow_err)?;
        Ok(())
    }

    fn finish(mut self) -> Result<Vec<u8>> {
        self.flush()?;
        self.writer.into_inner().map_err(arrow_err)
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

fn arrow_err(e: impl std::fmt::Display) -> Error {
    Error::Export(format!("encoding: {e}"))
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

/// An HTTPS endpoint that receives one signed POST per file.
#[derive(Clone)]
pub struct HttpTarget {
    pub url: Url,
    pub headers: HeaderMap,
    pub secrets: Vec<Secret>,
    pub client: SafeClient,
    /// Attempts within one run; the export's own backoff retries the window later.
    pub retry: RetryPolicy,
}

/// Where an export's files go.
#[derive(Clone)]
pub enum Destination {
    /// An object-store prefix (`s3://`, `gs://`, `az://`, `file://`, `memory://`).
    Store {
        store: Arc<dyn ObjectStore>,
        prefix: Path,
    },
    Http(Box<HttpTarget>),
}

impl std::fmt::Debug for Destination {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Destination::Store { store, prefix } => write!(f, "Store({store}, {prefix})"),
            Destination::Http(t) => write!(f, "Http({})", t.url),
        }
    }
}

/// Opens an object-store URL with its options (credentials, endpoint, region: the keys
/// `object_store` knows, e.g. `aws_access_key_id`, `aws_endpoint`,
/// `google_service_account`, `azure_storage_account_name`).
pub fn open_store(
    url: &Url,
    options: &BTreeMap<String, String>,
    field: &str,
) -> Result<(Arc<dyn ObjectStore>, Path)> {
    match url.scheme() {
        "s3" | "s3a" | "gs" | "az" | "abfs" | "abfss" | "azure" | "file" | "memory" => {}
        other => {
            return Err(Error::invalid(
                field,
                format!(
                    "unsupported scheme {other}://; use s3://, gs://, az://, file:// or https://"
                ),
            ));
        }
    }
    let (store, prefix) = object_store::parse_url_opts(url, options.iter())
        .map_err(|e| Error::invalid(field, e.to_string()))?;
    Ok((Arc::from(store), prefix))
}

impl Destination {
    /// Writes (or replaces) `name` under the prefix / POSTs it.
    pub async fn put(&self, name: &str, bytes: Bytes, content_type: &str) -> Result<()> {
        match self {
            Destination::Store { store, prefix } => {
                let path = join(prefix, name);
                store
                    .put(&path, bytes.into())
                    .await
                    .map_err(|e| Error::Export(format!("writing {path}: {e}")))?;
                Ok(())
            }
            Destination::Http(t) => t.post(name, bytes, content_type).await,
        }
    }

    /// The names (relative to the prefix) that start with `start`; nothing for HTTP.
    /// Lists from `start` on (`list_with_offset`), so a directory of many older windows is
    /// not read each time.
    pub async fn list(&self, start: &str) -> Result<Vec<String>> {
        use futures::TryStreamExt;
        let Destination::Store { store, prefix } = self else {
            return Ok(Vec::new());
        };
        let full = join(prefix, start);
        let parts: Vec<_> = full.parts().collect();
        let dir: Path = parts[..parts.len().saturating_sub(1)]
            .iter()
            .cloned()
            .collect();
        let file_prefix = full.filename().unwrap_or_default().to_string();
        let listed: Vec<_> = store
            .list_with_offset(Some(&dir), &full)
            .try_collect()
            .await
            .map_err(|e| Error::Export(format!("listing {dir}: {e}")))?;
        let base = prefix.as_ref();
        let mut names: Vec<String> = listed
            .into_iter()
            .filter(|m| {
                m.location.parts().count() == parts.len()
                    && m.location
                        .filename()
                        .is_some_and(|f| f.starts_with(&file_prefix))
            })
            .map(|m| {
                let loc = m.location.as_ref();
                loc.strip_prefix(base)
                    .unwrap_or(loc)
                    .trim_start_matches('/')
                    .to_string()
            })
            .collect();
        names.sort();
        Ok(names)
    }

    /// Deletes `name` (missing is fine); nothing for HTTP.
    pub async fn delete(&self, name: &str) -> Result<()> {
        if let Destination::Store { store, prefix } = self {
            let path = join(prefix, name);
            match store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(Error::Export(format!("deleting {path}: {e}"))),
            }
        }
        Ok(())
    }

    /// Reads `name` back (tests and verification); `None` for HTTP.
    pub async fn get(&self, name: &str) -> Result<Option<Bytes>> {
        let Destination::Store { store, prefix } = self else {
            return Ok(None);
        };
        let path = join(prefix, name);
        match store.get(&path).await {
            Ok(r) => {
                Ok(Some(r.bytes().await.map_err(|e| {
                    Error::Export(format!("reading {path}: {e}"))
                })?))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::Export(format!("reading {path}: {e}"))),
        }
    }
}

fn join(prefix: &Path, name: &str) -> Path {
    name.split('/')
        .filter(|p| !p.is_empty())
        .fold(prefix.clone(), |p, part| p.join(part))
}

impl HttpTarget {
    /// POSTs one file, signed like a webhook. The `webhook-id` is derived from the file
    /// name, so a re-sent file carries the same id and receivers can de-duplicate.
    async fn post(&self, name: &str, bytes: Bytes, content_type: &str) -> Result<()> {
        let id = format!("exp_{}", &sha256_hex(name.as_bytes())[..32]);
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            let now = chrono::Utc::now();
            let mut headers = self.headers.clone();
            headers.insert(
                CONTENT_TYPE,
                HeaderValue::from_str(content_type).map_err(arrow_err)?,
            );
            if let Ok(v) = HeaderValue::from_str(name) {
                headers.insert(HeaderName::from_static("tidemark-export-file"), v);
            }
            crate::sign::set_headers(&mut headers, &self.secrets, &id, now.timestamp(), &bytes);
            let (error, after) = match self
                .client
                .send(reqwest::Method::POST, &self.url, headers, bytes.clone())
                .await
            {
                Ok(r) => match judge(&r, now) {
                    Verdict::Delivered => return Ok(()),
                    Verdict::Gone => ("HTTP 410 Gone".to_string(), None),
                    Verdict::Retry { error, after } => (error, after),
                },
                Err(f) => match judge_failure(&f) {
                    Verdict::Retry { error, after } => (error, after),
                    _ => (f.message, None),
                },
            };
            match self.retry.delay_before(attempt + 1) {
                Some(d) => {
                    let wait = after.unwrap_or(d).min(Duration::from_secs(300));
                    tokio::time::sleep(wait).await;
                }
                None => {
                    return Err(Error::Export(format!(
                        "POST {name} to {}: {error} after {attempt} attempt(s)",
                        self.url
                    )));
                }
            }
        }
    }
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

    #[test]
    fn formats_and_schemes_are_named_in_errors() {
        let e = Format::parse("xml", "format").unwrap_err().to_string();
        assert!(e.starts_with("format: unknown format \"xml\""), "{e}");
        let url = Url::parse("ftp://host/x").expect("url");
        let e = open_store(&url, &BTreeMap::new(), "destination")
            .expect_err("refused")
            .to_string();
        assert!(e.contains("destination: unsupported scheme ftp://"), "{e}");
    }

    #[tokio::test]
    async fn store_destination_replaces_and_lists_by_prefix() {
        let dir = tempfile_dir();
        let url = Url::from_directory_path(&dir).expect("url");
        let (store, prefix) = open_store(&url, &BTreeMap::new(), "d").expect("open");
        let d = Destination::Store { store, prefix };
        d.put("events/a-b.csv", Bytes::from("1"), "text/csv")
            .await
            .expect("put");
        d.put("events/a-b-1.csv", Bytes::from("2"), "text/csv")
            .await
            .expect("put");
        d.put("events/a-c.csv", Bytes::from("3"), "text/csv")
            .await
            .expect("put");
        d.put("events/a-b.csv", Bytes::from("4"), "text/csv")
            .await
            .expect("replace");
        assert_eq!(
            d.list("events/a-b").await.expect("list"),
            vec!["events/a-b-1.csv", "events/a-b.csv"]
        );
        assert_eq!(
            d.get("events/a-b.csv").await.expect("get"),
            Some(Bytes::from("4"))
        );
        d.delete("events/a-b-1.csv").await.expect("delete");
        d.delete("events/missing").await.expect("missing is fine");
        assert_eq!(
            d.list("events/a-").await.expect("list"),
            vec!["events/a-b.csv", "events/a-c.csv"]
        );
        std::fs::remove_dir_all(&dir).ok();
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "tidemark-sinks-export-{}-{}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir_all(&dir).expect("dir");
        dir
    }
}
