//! `tidemark sql`: one query, or with none an interactive prompt (line editing and
//! history, statements ending in `;`, `\d`, `\d NAME`, `\timing`, `\q`). It reads the
//! store directly, or a running server with `--server URL --key KEY` (the query API,
//! Arrow answers). Either way the query runs under `[query]`'s rules and limits.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use anyhow::Context;
use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use futures::StreamExt;

use crate::query::{Encoder, Engine, Format};

#[derive(clap::Args, Debug)]
pub struct SqlArgs {
    /// Storage root: a directory, s3://bucket/prefix or memory:// [default: ./tidemark-data]
    #[arg(long, value_name = "DIR", conflicts_with = "server")]
    pub data: Option<String>,
    /// Only this environment's rows are visible (required with --server).
    #[arg(long = "env", value_name = "ENV")]
    pub environment: Option<String>,
    /// Output format [default: table]
    #[arg(long, value_enum)]
    pub format: Option<Format>,
    /// Write the answer to this file instead of standard output.
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Query a running server (its HTTP address) instead of the store.
    #[arg(long, value_name = "URL", requires = "key")]
    pub server: Option<String>,
    /// A read or admin key of --env, for --server.
    #[arg(long, value_name = "KEY", env = "TIDEMARK_KEY", hide_env_values = true)]
    pub key: Option<String>,
    /// Where the query runs on the store: `embedded` or `ballista://HOST:PORT` (planned
    /// here, executed by the cluster's executors).
    #[arg(long, default_value = "embedded", value_parser = crate::ballista::Engine::parse, conflicts_with = "server")]
    pub engine: crate::ballista::Engine,
    /// The query (read-only); without one, an interactive prompt opens.
    pub sql: Option<String>,
}

/// Where queries go.
enum Target {
    Store {
        engine: Box<Engine>,
        environment: Option<String>,
    },
    Server {
        client: reqwest::Client,
        url: String,
        key: String,
    },
}

impl Target {
    /// Runs `sql`, writing its answer to `out`; the rows written.
    async fn run(&self, sql: &str, out: &mut Output) -> anyhow::Result<usize> {
        match self {
            Target::Store {
                engine,
                environment,
            } => {
                let rows = engine
                    .query(environment.as_deref(), sql, Vec::new())
                    .await?;
                out.start(&rows.schema)?;
                let mut stream = rows.stream;
                while let Some(batch) = stream.next().await {
                    out.batch(&batch?)?;
                }
            }
            Target::Server { client, url, key } => {
                let resp = client
                    .post(url)
                    .bearer_auth(key)
                    .header("accept", Format::Arrow.content_type())
                    .json(&serde_json::json!({ "sql": sql }))
                    .send()
                    .await
                    .with_context(|| format!("POST {url}"))?;
                let status = resp.status();
                if !status.is_success() {
                    let text = resp.text().await.unwrap_or_default();
                    let message = serde_json::from_str::<serde_json::Value>(&text)
                        .ok()
                        .and_then(|v| v["message"].as_str().map(str::to_string))
                        .unwrap_or(text);
                    anyhow::bail!("{message} (HTTP {status})");
                }
                let bytes = resp.bytes().await.context("reading the answer")?;
                let reader =
                    arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None)?;
                out.start(&reader.schema())?;
                for batch in reader {
                    out.batch(&batch?)?;
                }
            }
        }
        out.finish()
    }
}

/// Encodes an answer to standard output or a file.
struct Output {
    format: Format,
    path: Option<PathBuf>,
    encoder: Option<Encoder>,
    writer: Option<Box<dyn Write>>,
}

impl Output {
    fn start(&mut self, schema: &SchemaRef) -> anyhow::Result<()> {
        let writer: Box<dyn Write> = match &self.path {
            Some(p) => Box::new(std::io::BufWriter::new(
                std::fs::File::create(p).with_context(|| format!("--output {}", p.display()))?,
            )),
            None => Box::new(std::io::stdout().lock()),
        };
        let (encoder, head) = Encoder::new(self.format, schema)?;
        self.writer = Some(writer);
        self.write(&head)?;
        self.encoder = Some(encoder);
        Ok(())
    }

    fn write(&mut self, bytes: &[u8]) -> anyhow::Result<()> {
        if let Some(w) = self.writer.as_mut() {
            w.write_all(bytes)?;
        }
        Ok(())
    }

    fn batch(&mut self, batch: &RecordBatch) -> anyhow::Result<()> {
        let bytes = match self.encoder.as_mut() {
            Some(e) => e.batch(batch)?,
            None => return Ok(()),
        };
        self.write(&bytes)
    }

    /// The rows written.
    fn finish(&mut self) -> anyhow::Result<usize> {
        let Some(encoder) = self.encoder.take() else {
            return Ok(0);
        };
        let rows = encoder.rows();
        let tail = encoder.finish()?;
        self.write(&tail)?;
        if self.format == Format::Json {
            self.write(b"\n")?;
        }
        if let Some(mut w) = self.writer.take() {
            w.flush()?;
        }
        Ok(rows)
    }
}

pub fn run(file: Option<&Path>, args: SqlArgs) -> anyhow::Result<ExitCode> {
    if let Some(env) = &args.environment {
        crate::auth::validate_environment(env)?;
    }
    let target = match &args.server {
        Some(server) => {
            let Some(env) = &args.environment else {
                anyhow::bail!("--env: required with --server (the key's environment)");
            };
            Target::Server {
                client: reqwest::Client::new(),
                url: format!("{}/v1/{env}/query", server.trim_end_matches('/')),
                key: args.key.clone().unwrap_or_default(),
            }
        }
        None => {
            let (config, store) = super::open_store(file, super::DataArgs { data: args.data })?;
            Target::Store {
                engine: Box::new(Engine::new(store, config.query).on(args.engine.clone())),
                environment: args.environment.clone(),
            }
        }
    };
    let mut out = Output {
        format: args.format.unwrap_or(Format::Table),
        path: args.output.clone(),
        encoder: None,
        writer: None,
    };
    let rt = super::runtime()?;
    match &args.sql {
        Some(sql) => {
            rt.block_on(target.run(sql, &mut out))?;
            Ok(ExitCode::SUCCESS)
        }
        None => repl(&rt, &target, &mut out),
    }
}

/// What one input line of the prompt asks for.
#[derive(Debug, PartialEq, Eq)]
enum Input {
    Quit,
    Timing,
    /// `\d`: tables and views.
    List,
    /// `\d NAME`: one table's columns.
    Describe(String),
    /// A complete statement (without its `;`).
    Statement(String),
    /// A meta command the prompt does not know.
    Unknown(String),
    /// More lines are needed.
    More,
}

/// Adds `line` to `buffer` (the statement so far) and says what to do.
fn read_line(buffer: &mut String, line: &str) -> Input {
    let trimmed = line.trim();
    if buffer.trim().is_empty() && trimmed.starts_with('\\') {
        buffer.clear();
        let mut words = trimmed.split_whitespace();
        return match (words.next(), words.next()) {
            (Some("\\q"), None) => Input::Quit,
            (Some("\\timing"), None) => Input::Timing,
            (Some("\\d"), None) => Input::List,
            (Some("\\d"), Some(name)) => Input::Describe(name.trim_end_matches(';').to_string()),
            _ => Input::Unknown(trimmed.to_string()),
        };
    }
    if !buffer.is_empty() {
        buffer.push('\n');
    }
    buffer.push_str(line);
    let text = buffer.trim_end();
    if let Some(statement) = text.strip_suffix(';') {
        let statement = statement.trim().to_string();
        buffer.clear();
        if statement.is_empty() {
            return Input::More;
        }
        return Input::Statement(statement);
    }
    Input::More
}

/// `\d NAME` as a query; the name is quoted as a string literal.
fn describe_sql(name: &str) -> String {
    format!(
        "SELECT column_name, data_type, is_nullable FROM information_schema.columns \
         WHERE table_schema = 'public' AND table_name = '{}' ORDER BY ordinal_position",
        name.replace('\'', "''")
    )
}

const LIST_SQL: &str = "SELECT table_name, table_type FROM information_schema.tables \
     WHERE table_schema = 'public' ORDER BY table_name";

fn repl(
    rt: &tokio::runtime::Runtime,
    target: &Target,
    out: &mut Output,
) -> anyhow::Result<ExitCode> {
    let mut editor = rustyline::DefaultEditor::new()?;
    let history = std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".tidemark_history"));
    if let Some(h) = &history {
        let _ = editor.load_history(h);
    }
    let interactive = std::io::IsTerminal::is_terminal(&std::io::stdin());
    if interactive {
        eprintln!(
            "tidemark sql: statements end with ';'. \\d lists tables, \\d NAME shows one, \\timing, \\q quits."
        );
    }
    let mut timing = false;
    let mut buffer = String::new();
    let mut failed = false;
    loop {
        let prompt = if buffer.is_empty() {
            "tidemark> "
        } else {
            "     ...> "
        };
        let line = match editor.readline(prompt) {
            Ok(l) => l,
            Err(rustyline::error::ReadlineError::Interrupted) => {
                buffer.clear();
                continue;
            }
            Err(rustyline::error::ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        let sql = match read_line(&mut buffer, &line) {
            Input::Quit => break,
            Input::More => continue,
            Input::Timing => {
                timing = !timing;
                eprintln!("Timing is {}.", if timing { "on" } else { "off" });
                continue;
            }
            Input::Unknown(cmd) => {
                eprintln!("unknown command {cmd}: \\d, \\d NAME, \\timing, \\q");
                failed = true;
                continue;
            }
            Input::List => LIST_SQL.to_string(),
            Input::Describe(name) => describe_sql(&name),
            Input::Statement(s) => {
                let _ = editor.add_history_entry(format!("{s};"));
                s
            }
        };
        let started = Instant::now();
        match rt.block_on(target.run(&sql, out)) {
            Ok(rows) => {
                if timing {
                    eprintln!("{rows} rows, {:.3} s", started.elapsed().as_secs_f64());
                }
            }
            Err(e) => {
                failed = true;
                out.encoder = None;
                out.writer = None;
                eprintln!("error: {e:#}");
            }
        }
    }
    if let Some(h) = &history {
        let _ = editor.save_history(h);
    }
    // Statements read from a pipe: a failure is the exit status, as in psql -v ON_ERROR_STOP.
    Ok(if failed && !interactive {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_statements_and_commands() {
        let mut buf = String::new();
        let steps: Vec<(&str, Input)> = vec![
            ("\\d", Input::List),
            ("\\d events", Input::Describe("events".into())),
            ("\\timing", Input::Timing),
            ("SELECT 1;", Input::Statement("SELECT 1".into())),
            ("SELECT user_id", Input::More),
            ("FROM events", Input::More),
            (
                "WHERE user_id = 'a' ;",
                Input::Statement("SELECT user_id\nFROM events\nWHERE user_id = 'a'".into()),
            ),
            (";", Input::More),
            ("\\x", Input::Unknown("\\x".into())),
            ("\\q", Input::Quit),
        ];
        for (line, want) in steps {
            assert_eq!(read_line(&mut buf, line), want, "{line}");
        }
        // A backslash inside a statement is part of it.
        let mut buf = String::new();
        assert_eq!(read_line(&mut buf, "SELECT '"), Input::More);
        assert_eq!(
            read_line(&mut buf, "\\d';"),
            Input::Statement("SELECT '\n\\d'".into())
        );
        assert!(describe_sql("x'y").contains("table_name = 'x''y'"));
    }
}
