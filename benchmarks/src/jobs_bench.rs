//! The profile jobs benchmark (see `benchmarks/jobs_bench.sh`, which drives it and DuckDB).
//!
//! - `generate`: writes N events (Zipf users, 50 event names, 30 days, 0.5% re-sent
//!   copies, 1% device clocks ahead) into a fresh store's `events` Delta table, one commit
//!   per day, the way the flusher lays them out (partitioned by environment, received date).
//! - `rebuild`: `jobs rebuild` of profiles + event_stats on 2 partitions / 2 threads.
//! - `append`: adds a fraction more events, received on the next day, in 10 commits.
//! - `incremental`: job runs until caught up (partial rows into the pending tables).
//! - `publish`: one publish pass (pending rows folded into the published tables).
//!
//! Each step prints one JSON line with its seconds and the process's peak memory.

use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use arrow::array::{
    ArrayRef, Date32Array, RecordBatch, StringArray, StringBuilder, TimestampMicrosecondArray,
};
use clap::{Parser, Subcommand};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tidemark::jobs::{JobOptions, Runner};
use tidemark::storage::{Store, events_table};
use tidemark_benchmarks::peak_rss_kb;
use tidemark_benchmarks::zipf::{sample, zipf_cdf};

#[derive(Parser, Debug)]
struct Args {
    #[command(subcommand)]
    step: Step,
}

#[derive(Subcommand, Debug)]
enum Step {
    Generate {
        #[arg(long)]
        data: String,
        #[arg(long, default_value_t = 10_000_000)]
        events: usize,
        #[arg(long, default_value_t = 1_000_000)]
        users: usize,
        #[arg(long, default_value_t = 30)]
        days: i64,
    },
    Rebuild {
        #[arg(long)]
        data: String,
    },
    Append {
        #[arg(long)]
        data: String,
        /// New events as a fraction of the table.
        #[arg(long, default_value_t = 0.01)]
        fraction: f64,
        #[arg(long, default_value_t = 1_000_000)]
        users: usize,
    },
    Incremental {
        #[arg(long)]
        data: String,
    },
    Publish {
        #[arg(long)]
        data: String,
    },
    /// Times one query over the rebuild inputs (`new_events` = all events, and
    /// `counted_events` materialized as the runner does), for tuning.
    Query {
        #[arg(long)]
        data: String,
        /// DataFusion settings, e.g. `--set datafusion.execution.batch_size=32768`.
        #[arg(long = "set", value_name = "KEY=VALUE")]
        settings: Vec<String>,
        sql: String,
    },
}

const NAMES: usize = 50;
const DAY_US: i64 = 86_400_000_000;
/// 2026-10-01T00:00:00Z.
const START_US: i64 = 1_790_812_800_000_000;
const PLATFORMS: [Option<&str>; 6] = [
    Some("ios"),
    Some("android"),
    Some("web"),
    Some("server"),
    Some("ipados"),
    None,
];

struct Gen {
    rng: StdRng,
    cdf: Vec<f64>,
    names: Vec<String>,
    next_id: u64,
}

impl Gen {
    fn new(users: usize, seed: u64) -> Gen {
        let names = (0..NAMES).map(|i| format!("event_{i:02}")).collect();
        Gen {
            rng: StdRng::seed_from_u64(seed),
            cdf: zipf_cdf(users, 1.07),
            names,
            next_id: seed << 40,
        }
    }

    /// `n` events received during day `day` (0 = START), in received order.
    fn day(&mut self, day: i64, n: usize) -> RecordBatch {
        let mut ids = StringBuilder::new();
        let (mut names, mut cats, mut users, mut plats) = (
            StringBuilder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
            StringBuilder::new(),
        );
        let (mut occurred, mut received) = (Vec::with_capacity(n), Vec::with_capacity(n));
        let mut last_id = String::new();
        let mut last: Option<(String, String, String, Option<&str>, i64)> = None;
        for i in 0..n {
            let recv = START_US + day * DAY_US + (i as i64 * DAY_US) / n as i64;
            // 0.5%: a client retry re-sends the previous event a few seconds later.
            if let Some((name, cat, user, plat, occ)) =
                last.as_ref().filter(|_| self.rng.random_bool(0.005))
            {
                ids.append_value(&last_id);
                names.append_value(name);
                cats.append_value(cat);
                users.append_value(user);
                plats.append_option(*plat);
                occurred.push(*occ);
                received.push(recv);
                continue;
            }
            self.next_id += 1;
            last_id = format!("{:016x}-{:08x}", self.next_id, self.rng.random::<u32>());
            let user = format!("user-{:07}", sample(&self.cdf, &mut self.rng));
            let name = self.names[self.rng.random_range(0..NAMES)].clone();
            let cat = if self.rng.random_bool(0.05) {
                "system"
            } else {
                ["custom", "sdk", "platform"][self.rng.random_range(0..3)]
            };
            let plat = PLATFORMS[self.rng.random_range(0..PLATFORMS.len())];
            let occ = if self.rng.random_bool(0.01) {
                recv + self.rng.random_range(0..3_600_000_000)
            } else {
                recv - self.rng.random_range(0..3_600_000_000)
            };
            ids.append_value(&last_id);
            names.append_value(&name);
            cats.append_value(cat);
            users.append_value(&user);
            plats.append_option(plat);
            occurred.push(occ);
            received.push(recv);
            last = Some((name, cat.to_string(), user, plat, occ));
        }
        let date = i32::try_from((START_US + day * DAY_US) / DAY_US).unwrap_or(0);
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec!["production"; n])),
            Arc::new(ids.finish()),
            Arc::new(names.finish()),
            Arc::new(cats.finish()),
            Arc::new(users.finish()),
            Arc::new(TimestampMicrosecondArray::from(occurred).with_timezone("UTC")),
            Arc::new(TimestampMicrosecondArray::from(received).with_timezone("UTC")),
            Arc::new(plats.finish()),
            Arc::new(StringArray::from(vec![
                Some(r#"{"screen":"home","ab":"b"}"#);
                n
            ])),
            Arc::new(Date32Array::from(vec![date; n])),
        ];
        RecordBatch::try_new(events_table::schema(), columns).unwrap_or_else(|e| panic!("{e}"))
    }
}

fn split(batch: &RecordBatch, rows: usize) -> Vec<RecordBatch> {
    (0..batch.num_rows())
        .step_by(rows)
        .map(|o| batch.slice(o, rows.min(batch.num_rows() - o)))
        .collect()
}

fn runner(data: &str) -> anyhow::Result<Runner> {
    let store = Store::open(data, &Default::default())?;
    let opts = JobOptions {
        target_partitions: Some(2),
        ..JobOptions::default()
    };
    Ok(Runner::new(store, opts))
}

async fn step(step: Step) -> anyhow::Result<serde_json::Value> {
    let started = Instant::now();
    let mut out = match step {
        Step::Generate {
            data,
            events,
            users,
            days,
        } => {
            let store = Store::open(&data, &Default::default())?;
            let mut table = events_table::open_or_create(&store).await?;
            let mut generator = Gen::new(users, 1);
            for day in 0..days {
                let n =
                    events / days as usize + usize::from((day as usize) < events % days as usize);
                let batch = generator.day(day, n);
                table = events_table::append(table, split(&batch, 65_536), None, 0).await?;
            }
            json!({"step": "generate", "events": events, "users": users, "days": days})
        }
        Step::Rebuild { data } => {
            let reports = runner(&data)?.rebuild(None).await?;
            json!({"step": "rebuild", "reports": reports})
        }
        Step::Append {
            data,
            fraction,
            users,
        } => {
            let store = Store::open(&data, &Default::default())?;
            let mut table = store
                .load_table(events_table::TABLE)
                .await?
                .context("no events table")?;
            let total: i64 = table
                .snapshot()?
                .log_data()
                .iter()
                .map(|f| f.num_records().unwrap_or(0) as i64)
                .sum();
            let n = (total as f64 * fraction) as usize;
            let day = table.snapshot()?.log_data().num_files() as i64; // any unused seed
            let mut generator = Gen::new(users, 1000 + day as u64);
            let batch = generator.day(30, n);
            for part in split(&batch, n.div_ceil(10).max(1)) {
                table = events_table::append(table, vec![part], None, 0).await?;
            }
            json!({"step": "append", "events": n, "commits": 10})
        }
        Step::Incremental { data } => {
            let runner = runner(&data)?;
            let mut reports = Vec::new();
            loop {
                let r = runner.run_once().await?;
                if r.is_empty() {
                    break;
                }
                reports.extend(r);
            }
            json!({"step": "incremental", "reports": reports})
        }
        Step::Publish { data } => {
            let reports = runner(&data)?.publish().await?;
            json!({"step": "publish", "reports": reports})
        }
        Step::Query {
            data,
            settings,
            sql,
        } => {
            let store = Store::open(&data, &Default::default())?;
            let table = store
                .load_table(events_table::TABLE)
                .await?
                .context("no events table")?;
            let ctx = tidemark::jobs::inputs::session(Some(2))?;
            for kv in &settings {
                let (k, v) = kv.split_once('=').context("--set takes KEY=VALUE")?;
                ctx.sql(&format!("SET {k} = {v}")).await?.collect().await?;
            }
            let started = Instant::now();
            tidemark::jobs::inputs::register_params(
                &ctx,
                tidemark::jobs::inputs::Params {
                    clock_skew_tolerance_us: 300_000_000,
                    dedup_window_us: 3_600_000_000,
                },
            )?;
            tidemark::jobs::inputs::register_new_events(&ctx, &table, None, None).await?;
            tidemark::jobs::inputs::register_prior_events(&ctx, None, 0).await?;
            let counted_started = Instant::now();
            tidemark::jobs::inputs::register_counted_events(&ctx).await?;
            let counted_seconds = counted_started.elapsed().as_secs_f64();
            let t = Instant::now();
            let batches = ctx.sql(&sql).await?.collect().await?;
            let rows: usize = batches.iter().map(RecordBatch::num_rows).sum();
            if sql.trim_start().to_ascii_lowercase().starts_with("explain") {
                eprintln!("{}", arrow::util::pretty::pretty_format_batches(&batches)?);
            }
            json!({"step": "query", "rows": rows, "counted_seconds": counted_seconds, "query_seconds": t.elapsed().as_secs_f64(), "total_seconds": started.elapsed().as_secs_f64()})
        }
    };
    out["seconds"] = json!(started.elapsed().as_secs_f64());
    out["peak_rss_mb"] = json!(peak_rss_kb() / 1024);
    Ok(out)
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("TIDEMARK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let out = rt.block_on(step(args.step))?;
    println!("{out}");
    Ok(())
}
