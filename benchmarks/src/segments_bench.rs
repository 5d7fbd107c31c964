//! The segments benchmark: 100 segments of mixed conditions over 1M profiles and 10M
//! event_stats rows (Parquet), evaluated by embedded DataFusion with the SQL the segment
//! job runs, one query per segment, 2 threads. `segments_duckdb.py` runs the same SQL
//! (values inlined as escaped literals, written to `segments.sql`) on the same files.
//!
//! Usage: segments-bench generate --dir D [--users N] [--stats N]; segments-bench run --dir D

use std::io::Write;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use arrow::array::{
    ArrayRef, Int64Array, ListBuilder, RecordBatch, StringArray, StringBuilder,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use clap::{Parser, Subcommand};
use datafusion::prelude::{ParquetReadOptions, SessionConfig, SessionContext};
use parquet::arrow::ArrowWriter;
use parquet::basic::{Compression, ZstdLevel};
use parquet::file::properties::WriterProperties;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tidemark::segments::{compile, def};
use tidemark::users::fields::{FieldDef, FieldType};
use tidemark_benchmarks::peak_rss_kb;

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    step: Step,
}

#[derive(Subcommand)]
enum Step {
    Generate {
        #[arg(long)]
        dir: String,
        #[arg(long, default_value_t = 1_000_000)]
        users: usize,
        #[arg(long, default_value_t = 10_000_000)]
        stats: usize,
    },
    Run {
        #[arg(long)]
        dir: String,
    },
}

/// 2026-11-01T00:00:00Z: the evaluation time and the data's "now".
const NOW: i64 = 1_793_491_200_000_000;
const DAY: i64 = 86_400_000_000;
const NAMES: usize = 50;
const PLANS: [&str; 4] = ["free", "silver", "gold", "platinum"];
const TAGS: [&str; 6] = ["vip", "beta", "trial", "churn-risk", "b2b", "newsletter"];

fn ts() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into()))
}

fn write(
    path: &std::path::Path,
    batches: impl Iterator<Item = RecordBatch>,
    schema: Arc<Schema>,
) -> anyhow::Result<()> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
        .build();
    let mut w = ArrowWriter::try_new(std::fs::File::create(path)?, schema, Some(props))?;
    for b in batches {
        w.write(&b)?;
    }
    w.close()?;
    Ok(())
}

fn generate(dir: &str, users: usize, stats: usize) -> anyhow::Result<serde_json::Value> {
    std::fs::create_dir_all(dir)?;
    let mut rng = StdRng::seed_from_u64(42);
    let schema = Arc::new(Schema::new(vec![
        Field::new("environment", DataType::Utf8, false),
        Field::new("user_id", DataType::Utf8, false),
        Field::new("created_at", ts(), true),
        Field::new("last_seen_at", ts(), true),
        Field::new("last_seen_ios_at", ts(), true),
        Field::new("event_count", DataType::Int64, false),
        Field::new(
            "tags",
            DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
            true,
        ),
        Field::new("fields", DataType::Utf8, false),
    ]));
    let chunk = 100_000;
    let mut batches = Vec::new();
    for start in (0..users).step_by(chunk) {
        let n = chunk.min(users - start);
        let mut tags = ListBuilder::new(StringBuilder::new());
        let mut fields = Vec::with_capacity(n);
        let (mut created, mut seen, mut ios, mut count) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for _ in 0..n {
            let t: Vec<&str> = TAGS
                .iter()
                .copied()
                .filter(|_| rng.random_bool(0.2))
                .collect();
            if t.is_empty() {
                tags.append_null();
            } else {
                for x in t {
                    tags.values().append_value(x);
                }
                tags.append(true);
            }
            let mut f = serde_json::Map::new();
            if rng.random_bool(0.8) {
                f.insert(
                    "plan".into(),
                    json!(PLANS[rng.random_range(0..PLANS.len())]),
                );
            }
            if rng.random_bool(0.7) {
                f.insert("score".into(), json!(rng.random_range(0..1000)));
            }
            if rng.random_bool(0.5) {
                f.insert("vip".into(), json!(rng.random_bool(0.1)));
            }
            fields.push(serde_json::Value::Object(f).to_string());
            let c = NOW - rng.random_range(0..365) * DAY;
            created.push(Some(c));
            let s = (rng.random_bool(0.9)).then(|| NOW - rng.random_range(0..60 * 24) * DAY / 24);
            seen.push(s);
            ios.push(s.filter(|_| rng.random_bool(0.4)));
            count.push(rng.random_range(0..200));
        }
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec!["production"; n])),
            Arc::new(StringArray::from_iter_values(
                (start..start + n).map(|i| format!("user-{i:07}")),
            )),
            Arc::new(TimestampMicrosecondArray::from(created).with_timezone("UTC")),
            Arc::new(TimestampMicrosecondArray::from(seen).with_timezone("UTC")),
            Arc::new(TimestampMicrosecondArray::from(ios).with_timezone("UTC")),
            Arc::new(Int64Array::from(count)),
            Arc::new(tags.finish()),
            Arc::new(StringArray::from(fields)),
        ];
        batches.push(RecordBatch::try_new(schema.clone(), columns)?);
    }
    write(
        &std::path::Path::new(dir).join("profiles.parquet"),
        batches.into_iter(),
        schema,
    )?;

    let schema = Arc::new(Schema::new(vec![
        Field::new("environment", DataType::Utf8, false),
        Field::new("user_id", DataType::Utf8, false),
        Field::new("event_name", DataType::Utf8, false),
        Field::new("first_at", ts(), true),
        Field::new("last_at", ts(), true),
        Field::new("count", DataType::Int64, false),
    ]));
    let per_user = stats / users.max(1);
    let mut batches = Vec::new();
    for start in (0..users).step_by(chunk) {
        let n = chunk.min(users - start);
        let (mut user, mut name, mut first, mut last, mut count) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for u in start..start + n {
            // distinct names per user
            let offset = rng.random_range(0..NAMES);
            for k in 0..per_user.min(NAMES) {
                user.push(format!("user-{u:07}"));
                name.push(format!("event-{:02}", (offset + k * 7) % NAMES));
                let f = NOW - rng.random_range(0..365) * DAY;
                first.push(f);
                last.push((f + rng.random_range(0..60) * DAY).min(NOW));
                count.push(rng.random_range(1..50));
            }
        }
        let m = user.len();
        let columns: Vec<ArrayRef> = vec![
            Arc::new(StringArray::from(vec!["production"; m])),
            Arc::new(StringArray::from(user)),
            Arc::new(StringArray::from(name)),
            Arc::new(TimestampMicrosecondArray::from(first).with_timezone("UTC")),
            Arc::new(TimestampMicrosecondArray::from(last).with_timezone("UTC")),
            Arc::new(Int64Array::from(count)),
        ];
        batches.push(RecordBatch::try_new(schema.clone(), columns)?);
    }
    write(
        &std::path::Path::new(dir).join("event_stats.parquet"),
        batches.into_iter(),
        schema,
    )?;
    Ok(json!({"step": "generate", "users": users, "event_stats": per_user.min(NAMES) * users}))
}

/// 100 deterministic definitions mixing field, tag, event and group conditions.
fn definitions() -> Vec<serde_json::Value> {
    let mut rng = StdRng::seed_from_u64(7);
    (0..100)
        .map(|i| {
            let ev = |rng: &mut StdRng| format!("event-{:02}", rng.random_range(0..NAMES));
            let mut conds = vec![];
            for _ in 0..rng.random_range(1..4) {
                let c = match rng.random_range(0..8) {
                    0 => json!({"field": "plan", "op": "eq", "value": PLANS[rng.random_range(0..PLANS.len())]}),
                    1 => json!({"field": "score", "op": "gte", "value": rng.random_range(0..1000)}),
                    2 => json!({"tag": TAGS[rng.random_range(0..TAGS.len())], "op": if rng.random_bool(0.7) { "has" } else { "has_not" }}),
                    3 => json!({"field": "last_seen_at", "op": "within", "value": format!("-{}d", rng.random_range(1..30))}),
                    4 => json!({"event": ev(&mut rng), "op": "did", "within": format!("-{}d", rng.random_range(1..30))}),
                    5 => json!({"event": ev(&mut rng), "op": "did_not"}),
                    6 => json!({"event": ev(&mut rng), "op": "did", "count": {"op": "gte", "value": rng.random_range(1..40)}}),
                    _ => json!({"match": "any", "conditions": [
                        {"field": "event_count", "op": "gt", "value": rng.random_range(0..200)},
                        {"field": "vip", "op": "eq", "value": true}
                    ]}),
                };
                conds.push(c);
            }
            json!({"id": format!("s{i:03}"), "name": format!("segment {i}"),
                   "match": if rng.random_bool(0.8) { "all" } else { "any" }, "conditions": conds})
        })
        .collect()
}

async fn run(dir: &str) -> anyhow::Result<serde_json::Value> {
    let registry: std::collections::BTreeMap<String, FieldDef> = [
        ("plan", FieldType::Text),
        ("score", FieldType::Number),
        ("vip", FieldType::Boolean),
    ]
    .into_iter()
    .map(|(n, t)| {
        (
            n.to_string(),
            FieldDef {
                name: n.into(),
                field_type: t,
                label: None,
                created_at: chrono::Utc::now(),
                since_change_id: String::new(),
            },
        )
    })
    .collect();
    let mut compiled = Vec::new();
    let mut sql_file = std::fs::File::create(std::path::Path::new(dir).join("segments.sql"))?;
    for d in definitions() {
        let (_, seg) = def::parse(&d, &registry).map_err(|p| anyhow::anyhow!("{d}: {p:?}"))?;
        let c = compile::compile(&seg, "production", NOW);
        writeln!(sql_file, "{}", c.inline())?;
        compiled.push(c);
    }
    let mut ctx = SessionContext::new_with_config(SessionConfig::new().with_target_partitions(2));
    tidemark_udfs::register_all(&mut ctx)?;
    let path = |f: &str| {
        std::path::Path::new(dir)
            .join(f)
            .to_string_lossy()
            .into_owned()
    };
    ctx.register_parquet(
        "profiles",
        &path("profiles.parquet"),
        ParquetReadOptions::default(),
    )
    .await?;
    ctx.register_parquet(
        "event_stats",
        &path("event_stats.parquet"),
        ParquetReadOptions::default(),
    )
    .await?;
    let started = Instant::now();
    // as the segment job does: read both tables once, then evaluate every segment
    tidemark::segments::materialize_inputs(&ctx).await?;
    let mut counts = Vec::new();
    for c in &compiled {
        let n = ctx
            .sql(&c.sql)
            .await?
            .with_param_values(c.params.clone())?
            .count()
            .await
            .with_context(|| c.sql.clone())?;
        counts.push(n);
    }
    Ok(
        json!({"step": "run", "segments": compiled.len(), "seconds": started.elapsed().as_secs_f64(),
              "members": counts, "peak_rss_mb": peak_rss_kb() / 1024}),
    )
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let out = match cli.step {
        Step::Generate { dir, users, stats } => generate(&dir, users, stats)?,
        Step::Run { dir } => rt.block_on(run(&dir))?,
    };
    println!("{out}");
    Ok(())
}
