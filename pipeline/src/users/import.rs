//! The CSV importer (`tidemark import`, `POST /v1/{env}/imports`).
//!
//! Column `id` is required; a `tags` column holds `;`-separated tags to add; every other
//! column is a custom field (its own name, or the field `--map column=field` names). Files
//! are RFC 4180 (quoted fields, LF or CRLF), at most [`MAX_BYTES`] and [`MAX_COLUMNS`].
//! Problems with the header refuse the whole file. A row with any bad cell is skipped
//! and reported (line, column, reason); the other rows are applied, each row as one
//! change (`set` of its non-empty cells, `tag` of its tags). Parsing runs on a blocking
//! thread and hands chunks to the writer, so parsing and Delta commits overlap.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::time::Instant;

use serde::Serialize;
use tokio::sync::mpsc;

use super::changes::{self, ChangeBuilder, op};
use super::fields::{FieldDef, FieldType, Registry};
use crate::storage::Store;
use crate::{Error, Result};

/// Largest accepted file.
pub const MAX_BYTES: u64 = 128 * 1024 * 1024;
/// Most columns in a file.
pub const MAX_COLUMNS: usize = 100;
/// Row problems listed in a report (all are counted).
pub const MAX_LISTED: usize = 1000;
/// Ops per Delta commit.
const CHUNK_OPS: usize = 2_000_000;

#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// CSV column -> custom field.
    pub map: BTreeMap<String, String>,
    /// Validate everything, write nothing.
    pub dry_run: bool,
    /// Longest user id (`limits.max_string_len`).
    pub max_id_len: usize,
}

/// One rejected row (or a problem of the file at `line`).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct RowError {
    pub line: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<String>,
    pub reason: String,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ImportReport {
    pub dry_run: bool,
    /// Data rows read (the header excluded).
    pub rows: u64,
    /// Rows applied (with `dry_run`: that would be applied).
    pub applied: u64,
    pub failed: u64,
    /// The first [`MAX_LISTED`] problems.
    pub errors: Vec<RowError>,
    /// Changes written to `profile_changes`.
    pub changes: u64,
    pub commits: u64,
    pub seconds: f64,
}

enum Column {
    Id,
    Tags,
    Field {
        /// The CSV column (reported in row errors).
        header: String,
        /// The custom field it sets.
        name: String,
        field_type: FieldType,
    },
}

/// Checks the header against the registry: the column plan, or why the file is refused.
fn plan(
    headers: &csv::StringRecord,
    fields: &BTreeMap<String, FieldDef>,
    map: &BTreeMap<String, String>,
) -> Result<Vec<Column>> {
    if headers.len() > MAX_COLUMNS {
        return Err(Error::Invalid(format!(
            "the file has {} columns, more than {MAX_COLUMNS}",
            headers.len()
        )));
    }
    let mut seen = HashSet::new();
    let mut columns = Vec::new();
    for h in headers {
        let h = h.trim();
        if !seen.insert(h.to_string()) {
            return Err(Error::Invalid(format!("column '{h}' appears twice")));
        }
        columns.push(match h {
            "id" => Column::Id,
            "tags" if !map.contains_key("tags") => Column::Tags,
            _ => {
                let name = map.get(h).map_or(h, String::as_str);
                let Some(def) = fields.get(name) else {
                    return Err(Error::Invalid(format!(
                        "column '{h}': unknown field '{name}'; declare it (`tidemark fields add`) or map the column (--map {h}=FIELD)"
                    )));
                };
                Column::Field {
                    header: h.to_string(),
                    name: name.to_string(),
                    field_type: def.field_type,
                }
            }
        });
    }
    if !seen.contains("id") {
        return Err(Error::Invalid("column 'id' is required".into()));
    }
    if let Some(c) = map.keys().find(|c| !seen.contains(c.as_str())) {
        return Err(Error::Invalid(format!(
            "--map {c}=...: the file has no column '{c}'"
        )));
    }
    Ok(columns)
}

/// What reading a file's rows found.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    /// Data rows read (the header excluded).
    pub rows: u64,
    pub applied: u64,
    pub failed: u64,
    /// The first [`MAX_LISTED`] problems.
    pub errors: Vec<RowError>,
}

/// Lists `e` unless [`MAX_LISTED`] errors are listed already.
fn report(errors: &mut Vec<RowError>, e: RowError) {
    if errors.len() < MAX_LISTED {
        errors.push(e);
    }
}

/// A row the CSV reader could not read.
fn unreadable(e: &csv::Error) -> RowError {
    RowError {
        line: e.position().map_or(0, csv::Position::line),
        column: None,
        reason: match e.kind() {
            csv::ErrorKind::UnequalLengths {
                expected_len, len, ..
            } => format!(
                "the row has {len} fields but the header has {expected_len} (check the quoting)"
            ),
            csv::ErrorKind::Utf8 { .. } => "the row is not valid UTF-8".into(),
            _ => e.to_string(),
        },
    }
}

/// Checks every cell of a row: the user id, the tags and the typed field values (kept in
/// `cells` with their column). Returns the id and whether the row is bad.
fn check_row<'r>(
    record: &'r csv::StringRecord,
    columns: &[Column],
    opts: &ImportOptions,
    line: u64,
    cells: &mut Vec<(usize, String)>,
    errors: &mut Vec<RowError>,
) -> (&'r str, bool) {
    let mut bad = false;
    let mut id = "";
    cells.clear();
    for (i, (cell, column)) in record.iter().zip(columns).enumerate() {
        match column {
            Column::Id => {
                id = cell;
                if let Err(e) = changes::validate_user_id(cell, opts.max_id_len) {
                    bad = true;
                    report(
                        errors,
                        RowError {
                            line,
                            column: Some("id".into()),
                            reason: format!("user id {e}"),
                        },
                    );
                }
            }
            Column::Tags => {
                for t in cell.split(';').map(str::trim).filter(|t| !t.is_empty()) {
                    if t.len() > changes::MAX_TAG_BYTES || t.chars().any(char::is_control) {
                        bad = true;
                        report(
                            errors,
                            RowError {
                                line,
                                column: Some("tags".into()),
                                reason: format!(
                                    "tag '{t}' is longer than {} bytes or has control characters",
                                    changes::MAX_TAG_BYTES
                                ),
                            },
                        );
                    }
                }
            }
            Column::Field {
                header, field_type, ..
            } => {
                if cell.trim().is_empty() {
                    continue;
                }
                match field_type.parse_text(cell) {
                    Ok(v) => cells.push((i, v)),
                    Err(reason) => {
                        bad = true;
                        report(
                            errors,
                            RowError {
                                line,
                                column: Some(header.clone()),
                                reason,
                            },
                        );
                    }
                }
            }
        }
    }
    (id, bad)
}

/// Parses the rows of `rdr` (header already read) on this blocking thread, sending full
/// chunks of changes to `tx` (`None`: a dry run).
fn parse(
    mut rdr: csv::Reader<Box<dyn Read + Send>>,
    environment: &str,
    columns: &[Column],
    opts: &ImportOptions,
    tx: Option<mpsc::Sender<arrow::array::RecordBatch>>,
) -> Result<Parsed> {
    let mut out = Parsed {
        rows: 0,
        applied: 0,
        failed: 0,
        errors: Vec::new(),
    };
    let mut builder = ChangeBuilder::new(environment, "import");
    let mut record = csv::StringRecord::new();
    let mut cells: Vec<(usize, String)> = Vec::with_capacity(columns.len());
    loop {
        match rdr.read_record(&mut record) {
            Ok(false) => break,
            Ok(true) => {}
            Err(e) => {
                out.rows += 1;
                out.failed += 1;
                report(&mut out.errors, unreadable(&e));
                continue;
            }
        }
        out.rows += 1;
        let line = record.position().map_or(0, csv::Position::line);
        if record.iter().next_back().is_some_and(|f| f.ends_with('\r')) {
            record = without_cr(std::mem::take(&mut record));
        }
        let (id, bad) = check_row(&record, columns, opts, line, &mut cells, &mut out.errors);
        if bad {
            out.failed += 1;
            continue;
        }
        let tags = row_tags(&record, columns);
        out.applied += 1;
        if tx.is_none() || (cells.is_empty() && tags.is_empty()) {
            // a dry run, or a row with nothing to set
            continue;
        }
        builder.begin();
        for (i, value) in &cells {
            if let Column::Field { name, .. } = &columns[*i] {
                builder.push(id, op::SET, name, Some(value));
            }
        }
        for t in &tags {
            builder.push(id, op::TAG, t, None);
        }
        if builder.len() >= CHUNK_OPS {
            send(&mut builder, &tx)?;
        }
    }
    if !builder.is_empty() {
        send(&mut builder, &tx)?;
    }
    Ok(out)
}

/// The tags of a row's `tags` cell (`;`-separated, trimmed).
fn row_tags<'r>(record: &'r csv::StringRecord, columns: &[Column]) -> Vec<&'r str> {
    columns
        .iter()
        .position(|c| matches!(c, Column::Tags))
        .and_then(|i| record.get(i))
        .map(|c| {
            c.split(';')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .collect()
        })
        .unwrap_or_default()
}

/// Sends the changes built so far to the writer (none on a dry run).
fn send(
    builder: &mut ChangeBuilder,
    tx: &Option<mpsc::Sender<arrow::array::RecordBatch>>,
) -> Result<()> {
    if let Some(tx) = tx {
        let batch = builder.finish()?;
        if tx.blocking_send(batch).is_err() {
            return Err(Error::Unavailable("the import writer stopped".into()));
        }
    }
    Ok(())
}

/// Reads a whole file on this blocking thread: the header checked against `fields` (an
/// error refuses the file), then every row, sending chunks of changes to `tx` (`None`: a
/// dry run). Pure but for `tx`, so it is fuzzed on its own (`pipeline/fuzz`).
pub fn read_file(
    reader: Box<dyn Read + Send>,
    environment: &str,
    fields: &BTreeMap<String, FieldDef>,
    opts: &ImportOptions,
    tx: Option<mpsc::Sender<arrow::array::RecordBatch>>,
) -> Result<Parsed> {
    // Rows end at LF only, so the reader counts lines as an editor does (ending them at CR
    // too counts a CRLF's LF towards the next row: every row after one was reported a line
    // early); the CR of a CRLF is taken off the last field (`without_cr`).
    let mut rdr = csv::ReaderBuilder::new()
        .has_headers(true)
        .flexible(false)
        .terminator(csv::Terminator::Any(b'\n'))
        .from_reader(reader);
    let headers = rdr
        .headers()
        .map_err(|e| Error::Invalid(format!("cannot read the header: {e}")))?
        .clone();
    let headers = without_cr(headers);
    let columns = plan(&headers, fields, &opts.map)?;
    parse(rdr, environment, &columns, opts, tx)
}

/// `record` without the CR that ends its last field (a CRLF line end).
fn without_cr(record: csv::StringRecord) -> csv::StringRecord {
    let n = record.len();
    if !record.iter().next_back().is_some_and(|f| f.ends_with('\r')) {
        return record;
    }
    let mut out = csv::StringRecord::with_capacity(record.as_slice().len(), n);
    for (i, f) in record.iter().enumerate() {
        out.push_field(if i + 1 == n { &f[..f.len() - 1] } else { f });
    }
    out.set_position(record.position().cloned());
    out
}

/// Imports `reader` into `environment` (see the module docs).
pub async fn import(
    store: &Store,
    environment: &str,
    reader: Box<dyn Read + Send>,
    opts: ImportOptions,
) -> Result<ImportReport> {
    let started = Instant::now();
    let fields = Registry::new(store.clone()).list(environment).await?;
    let env = environment.to_string();
    let dry_run = opts.dry_run;
    let (tx, mut rx) = mpsc::channel(2);
    let parser = tokio::task::spawn_blocking(move || -> Result<Parsed> {
        let tx = (!opts.dry_run).then_some(tx);
        read_file(reader, &env, &fields, &opts, tx)
    });
    let (mut changes, mut commits) = (0u64, 0u64);
    let mut write_error = None;
    while let Some(batch) = rx.recv().await {
        if write_error.is_some() {
            continue;
        }
        let n = batch.num_rows() as u64;
        match changes::append(store, vec![batch]).await {
            Ok(_) => {
                changes += n;
                commits += 1;
            }
            Err(e) => write_error = Some(e),
        }
    }
    let parsed = parser
        .await
        .map_err(|e| Error::Unavailable(format!("import parser: {e}")))??;
    if let Some(e) = write_error {
        return Err(e);
    }
    Ok(ImportReport {
        dry_run,
        rows: parsed.rows,
        applied: parsed.applied,
        failed: parsed.failed,
        errors: parsed.errors,
        changes,
        commits,
        seconds: started.elapsed().as_secs_f64(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::fields::FieldType;

    /// Lines are counted as an editor shows them, whatever ends the rows (a file from
    /// Excel ends them in CRLF; one with a quoted line break spans two lines).
    #[tokio::test]
    async fn bad_rows_are_reported_on_their_line_with_crlf_and_lf() {
        let name = uuid::Uuid::new_v4().simple().to_string();
        let store = Store::open(&format!("memory:///{name}"), &Default::default()).unwrap();
        let registry = Registry::new(store.clone());
        registry
            .add("default", "score", FieldType::Number, None)
            .await
            .unwrap();
        registry
            .add("default", "note", FieldType::Text, None)
            .await
            .unwrap();
        for eol in ["\r\n", "\n"] {
            let csv = [
                "id,score,note",
                "a,1,x",
                "b,2,\"two\nlines\"",
                "c,many,x",
                "d,4,x",
                "",
            ]
            .join(eol);
            let opts = ImportOptions {
                dry_run: true,
                max_id_len: 512,
                ..Default::default()
            };
            let report = import(&store, "default", Box::new(std::io::Cursor::new(csv)), opts)
                .await
                .unwrap();
            assert_eq!((report.rows, report.failed), (4, 1), "{eol:?} {report:?}");
            assert_eq!(
                report.errors,
                vec![RowError {
                    line: 5,
                    column: Some("score".into()),
                    reason: "'many' is not a number".into()
                }],
                "{eol:?}"
            );
        }
    }
}
