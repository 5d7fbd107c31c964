//! Exporting one window: the source query, files of at most `max_rows_per_file` rows
//! named `{source}/{start}-{end}[-{n}].{ext}`, then `{source}/{start}-{end}_manifest.json`
//! (files, row counts, checksums) written last. Re-running a window first removes its
//! manifest, writes the same names again, deletes files of an earlier run that this run
//! did not write, then writes the manifest: re-runs replace, never duplicate.

use arrow::record_batch::RecordBatch;
use bytes::Bytes;
use chrono::Utc;
use datafusion::prelude::{DataFrame, SessionContext};
use futures::StreamExt;
use serde_json::{Value, json};
use tidemark_sinks::export::{Destination, EncodeOptions, sha256_hex};

use super::def::Export;
use super::source::{plan, source_sql};
use super::window::{Window, rfc3339};
use crate::{Error, Result};

/// Rows per batch in export sessions: 4x DataFusion's default. Exports read everything
/// and sort it, and bigger batches mean fewer sorted runs to merge and less per-batch
/// work (10M events: 8.2-8.7 s at 8,192, 6.9-7.2 s at 32,768; see benchmarks/README.md).
pub const EXPORT_BATCH_ROWS: usize = 32_768;

/// Sets the export tuning on `session`.
pub fn tune(session: &SessionContext) {
    let state = session.state_ref();
    let mut state = state.write();
    let set = state.config_mut().options_mut().set(
        "datafusion.execution.batch_size",
        &EXPORT_BATCH_ROWS.to_string(),
    );
    if let Err(e) = set {
        tracing::warn!(error = %e, "exports: batch size not set");
    }
}

/// One written file of a window.
#[derive(Debug, Clone, PartialEq)]
pub struct FileReport {
    pub name: String,
    pub rows: u64,
    pub bytes: u64,
    pub sha256: String,
}

#[derive(Debug, Clone)]
pub struct WindowReport {
    pub window: Window,
    pub files: Vec<FileReport>,
    pub rows: u64,
}

/// The object name of file `n` of a window.
pub fn file_name(export: &Export, w: Window, n: usize) -> String {
    let suffix = if n == 0 {
        String::new()
    } else {
        format!("-{n}")
    };
    format!(
        "{}/{}{suffix}.{}",
        export.source.name(),
        w.name(),
        export.format.extension()
    )
}

pub fn manifest_name(export: &Export, w: Window) -> String {
    format!("{}/{}_manifest.json", export.source.name(), w.name())
}

/// How files are cut and encoded.
#[derive(Debug, Clone)]
pub struct FileOptions {
    pub max_rows_per_file: u64,
    pub encode: EncodeOptions,
}

/// Streams `df` into files of at most `max_rows_per_file` rows, handing each finished file
/// to `sink` in order. A file is encoded on a blocking thread while the next one's rows are
/// read, so the query and the encoding overlap; at most two files are in memory.
pub async fn write_files<F, Fut>(
    df: DataFrame,
    format: tidemark_sinks::export::Format,
    options: &FileOptions,
    mut sink: F,
) -> Result<u64>
where
    F: FnMut(usize, u64, Bytes) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    type Encoding = tokio::task::JoinHandle<std::result::Result<Bytes, tidemark_sinks::Error>>;
    let mut stream = df.execute_stream().await?;
    let schema = stream.schema();
    let mut current: Vec<RecordBatch> = Vec::new();
    let mut current_rows = 0u64;
    let mut inflight: Option<(usize, u64, Encoding)> = None;
    let mut n = 0usize;
    let mut total = 0u64;
    let max = options.max_rows_per_file;
    let mut finished = false;
    while !finished {
        let next = stream.next().await.transpose()?;
        let mut batch = match next {
            Some(b) => b,
            None => {
                finished = true;
                RecordBatch::new_empty(schema.clone())
            }
        };
        loop {
            let take = ((max - current_rows) as usize).min(batch.num_rows());
            if take > 0 {
                current.push(batch.slice(0, take));
                current_rows += take as u64;
                total += take as u64;
                batch = batch.slice(take, batch.num_rows() - take);
            }
            let full = current_rows >= max || (finished && current_rows > 0);
            if !full {
                break;
            }
            // Hand the previous file to `sink` before starting the next encoding.
            if let Some((k, rows, encoding)) = inflight.take() {
                sink(k, rows, joined(encoding).await?).await?;
            }
            let batches = std::mem::take(&mut current);
            let (schema, encode) = (schema.clone(), options.encode.clone());
            let encoding = tokio::task::spawn_blocking(move || {
                tidemark_sinks::export::encode(format, schema, &encode, &batches)
            });
            inflight = Some((n, current_rows, encoding));
            n += 1;
            current_rows = 0;
            if batch.num_rows() == 0 {
                break;
            }
        }
    }
    if let Some((k, rows, encoding)) = inflight.take() {
        sink(k, rows, joined(encoding).await?).await?;
    }
    Ok(total)
}

async fn joined(
    encoding: tokio::task::JoinHandle<std::result::Result<Bytes, tidemark_sinks::Error>>,
) -> Result<Bytes> {
    encoding
        .await
        .map_err(|e| Error::Unavailable(format!("encoding task: {e}")))?
        .map_err(|e| Error::Unavailable(e.to_string()))
}

fn export_err(e: tidemark_sinks::Error) -> Error {
    Error::Unavailable(e.to_string())
}

/// Exports window `w` of `export` from `session` (the environment's views) to `dest`.
pub async fn run_window(
    session: &SessionContext,
    environment: &str,
    export: &Export,
    w: Window,
    dest: &Destination,
    options: &FileOptions,
    events_version: i64,
) -> Result<WindowReport> {
    let manifest = manifest_name(export, w);
    let stem = format!("{}/{}", export.source.name(), w.name());
    // An earlier run's files: the manifest goes first so no reader trusts a half-replaced
    // window.
    let before = dest.list(&stem).await.map_err(export_err)?;
    if before.contains(&manifest) {
        dest.delete(&manifest).await.map_err(export_err)?;
    }
    let df = plan(session, &source_sql(&export.query(), w)).await?;
    let mut files = Vec::new();
    let format = export.format;
    let rows = write_files(df, format, options, |n, rows, bytes| {
        let name = file_name(export, w, n);
        files.push(FileReport {
            name: name.clone(),
            rows,
            bytes: bytes.len() as u64,
            sha256: sha256_hex(&bytes),
        });
        async move {
            dest.put(&name, bytes, format.content_type())
                .await
                .map_err(export_err)
        }
    })
    .await?;
    for stale in before
        .iter()
        .filter(|b| **b != manifest && !files.iter().any(|f| &f.name == *b))
    {
        dest.delete(stale).await.map_err(export_err)?;
    }
    let body = json!({
        "export_id": export.id,
        "environment": environment,
        "source": export.source.name(),
        "format": format.name(),
        "window": {"start": rfc3339(w.start), "end": rfc3339(w.end)},
        "rows": rows,
        "files": files.iter().map(|f| json!({
            "name": f.name, "rows": f.rows, "bytes": f.bytes, "sha256": f.sha256,
        })).collect::<Vec<Value>>(),
        "events_version": events_version,
        "written_at": rfc3339(Utc::now()),
    });
    let bytes = serde_json::to_vec_pretty(&body)?;
    dest.put(&manifest, Bytes::from(bytes), "application/json")
        .await
        .map_err(export_err)?;
    Ok(WindowReport {
        window: w,
        files,
        rows,
    })
}
