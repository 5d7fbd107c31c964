//! The bulk-export benchmark (see `benchmarks/export_bench.sh`, which drives it and
//! DuckDB): one scheduled export of `events` to Parquet (zstd) on the local store, run as a
//! backfill of the window(s) holding every event, timed end to end (query, sort by
//! `(received_at, event_id)`, encode, write, manifest). Prints one JSON line.

use std::time::Instant;

use anyhow::Context as _;
use clap::Parser;
use serde_json::json;
use tidemark::config::Config;
use tidemark::exports::def::Exports;
use tidemark::exports::worker::{Runner, backfill_windows};
use tidemark::storage::Store;
use tidemark_benchmarks::peak_rss_kb;

#[derive(Parser, Debug)]
struct Args {
    /// The store holding `events` (made by `jobs-bench generate`).
    #[arg(long)]
    data: String,
    /// The directory the export writes to.
    #[arg(long)]
    out: std::path::PathBuf,
    /// The environment whose events are exported.
    #[arg(long, default_value = "production")]
    env: String,
}

async fn run(args: Args) -> anyhow::Result<serde_json::Value> {
    let mut config = Config {
        data: args.data.clone(),
        ..Config::default()
    };
    // The operator allows the output directory for file:// destinations.
    std::fs::create_dir_all(&args.out)?;
    config.exports.file_roots = vec![std::fs::canonicalize(&args.out)?];
    let store = Store::open(&args.data, &Default::default())?;
    let ctx = tidemark::exports::Context::new(&config, &store)?;
    let session = tidemark::query::session(&store, Some(&args.env)).await?;
    let bounds = tidemark::query::run(
        &session,
        "SELECT CAST(min(received_at) AS VARCHAR) AS lo, CAST(max(received_at) AS VARCHAR) AS hi, count(*) AS n FROM events",
    )
    .await?;
    let rows = tidemark::query::to_json_rows(&bounds)?;
    let parse = |k: &str| -> anyhow::Result<chrono::DateTime<chrono::Utc>> {
        let text = rows[0][k].as_str().context("no events")?;
        Ok(
            chrono::DateTime::parse_from_rfc3339(&text.replace(' ', "T"))
                .or_else(|_| chrono::DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.f%#z"))
                .with_context(|| format!("time {text}"))?
                .to_utc(),
        )
    };
    let (lo, hi) = (parse("lo")?, parse("hi")?);
    std::fs::create_dir_all(&args.out)?;
    let destination = url::Url::from_directory_path(std::fs::canonicalize(&args.out)?)
        .map_err(|_| anyhow::anyhow!("bad out dir"))?;
    let (export, _) = Exports::new(store.clone())
        .create(
            &args.env,
            &json!({"source": "events", "interval": "1d", "format": "parquet",
                    "destination": destination.to_string(), "start": lo.to_rfc3339()}),
            &ctx,
        )
        .await
        .map_err(|e| anyhow::anyhow!("{e:?}"))?;
    let windows = backfill_windows(&export, lo, hi + chrono::Duration::microseconds(1))?;
    let started = Instant::now();
    let done = Runner::new(store, ctx)
        .backfill(&args.env, &export, &windows, |_| {})
        .await?;
    let seconds = started.elapsed().as_secs_f64();
    let exported: u64 = done.iter().map(|w| w.rows).sum();
    let bytes: u64 = done
        .iter()
        .flat_map(|w| w.files.iter().map(|f| f.bytes))
        .sum();
    let files: usize = done.iter().map(|w| w.files.len()).sum();
    Ok(json!({
        "step": "export",
        "rows": exported,
        "windows": done.len(),
        "files": files,
        "bytes": bytes,
        "seconds": seconds,
        "rows_per_second": exported as f64 / seconds,
        "from": windows.first().map(|w| w.start.to_rfc3339()),
        "to": windows.last().map(|w| w.end.to_rfc3339()),
        "peak_rss_mb": peak_rss_kb() / 1024,
    }))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    // 2 threads, like DuckDB's `SET threads = 2` in the same run.
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let out = rt.block_on(run(args))?;
    println!("{out}");
    Ok(())
}
