//! Ingest load generator.
//!
//! Starts `tidemark serve` (release build) on a fresh data directory, sends realistic
//! events (~300 bytes, Zipf-distributed user ids, 50 event names) in batches over loopback
//! HTTP from several connections, and reports events/s and acknowledgement latency p50/p99.
//! In the same run it measures the in-process ceiling: parse + Arrow build + Parquet (zstd)
//! encode of the same batches with no HTTP, and prints HTTP throughput as a ratio of it.

use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, bail};
use clap::Parser;
use rand::{Rng, SeedableRng};
use serde_json::json;
use tidemark_benchmarks::zipf::{sample, zipf_cdf};

#[derive(Parser, Debug)]
struct Args {
    /// Events to send over HTTP.
    #[arg(long, default_value_t = 3_000_000)]
    events: usize,
    /// Events per batch.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Concurrent HTTP connections.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Distinct users (Zipf, s = 1.07).
    #[arg(long, default_value_t = 1_000_000)]
    users: usize,
    /// The tidemark binary [default: next to this one].
    #[arg(long)]
    tidemark: Option<std::path::PathBuf>,
    /// `wal` or `commit`.
    #[arg(long, default_value = "wal")]
    ack: String,
    /// Where to write the JSON results.
    #[arg(long, default_value = "benchmarks/results/ingest.json")]
    out: std::path::PathBuf,
    /// Compare with the same events as Segment `track` messages to `/v1/batch` (basic
    /// auth, as the SDKs send them): each kind on its own fresh server, `--rounds` times
    /// with the order alternating, and report the ratios. Every event then has its own id
    /// (`event_id` / `messageId`, as SDKs send), so no batch is re-sent.
    #[arg(long)]
    segment: bool,
    /// Rounds of the `--segment` comparison (native and Segment once each per round).
    #[arg(long, default_value_t = 4)]
    rounds: usize,
}

const EVENT_NAMES: usize = 50;

/// Pre-generates `count` JSON batch bodies.
fn make_batches(args: &Args, count: usize) -> Vec<bytes::Bytes> {
    make_events(args, count)
        .into_iter()
        .map(|events| bytes::Bytes::from(serde_json::to_vec(&events).unwrap_or_default()))
        .collect()
}

/// The same events as Segment `track` messages, one `/v1/batch` body per batch.
fn segment_batches(args: &Args, count: usize) -> Vec<bytes::Bytes> {
    make_events(args, count)
        .into_iter()
        .map(|events| {
            let batch: Vec<_> = events
                .iter()
                .map(|e| {
                    let at = chrono::DateTime::from_timestamp_millis(
                        e["occurred_at"].as_i64().unwrap_or(0),
                    )
                    .unwrap_or_default();
                    json!({
                        "type": "track",
                        "event": e["event_name"],
                        "userId": e["user_id"],
                        "messageId": format!("seg-{}", e["event_id"].as_str().unwrap_or("")),
                        "timestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
                        "properties": e["properties"],
                        "context": {"library": {"name": "analytics-python", "version": "2.4.0"}},
                        "integrations": {}
                    })
                })
                .collect();
            let body = json!({"batch": batch, "sentAt": chrono::Utc::now().to_rfc3339()});
            bytes::Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
        })
        .collect()
}

/// `count` batches of generated events; with `--segment` each has a unique `event_id`.
fn make_events(args: &Args, count: usize) -> Vec<Vec<serde_json::Value>> {
    let cdf = zipf_cdf(args.users, 1.07);
    let mut rng = rand::rngs::StdRng::seed_from_u64(42);
    let names: Vec<String> = (0..EVENT_NAMES)
        .map(|i| {
            let kinds = ["card", "app", "stream", "push", "session"];
            let verbs = [
                "published",
                "displayed",
                "completed",
                "dismissed",
                "opened",
                "snoozed",
                "expired",
                "clicked",
                "viewed",
                "closed",
            ];
            format!(
                "{}-{}",
                kinds[i % kinds.len()],
                verbs[i / kinds.len() % verbs.len()]
            )
        })
        .collect();
    let platforms = ["ios", "android", "web", "server"];
    let base = chrono::Utc::now().timestamp_millis() - 3_600_000;
    let mut serial = 0u64;
    (0..count)
        .map(|_| {
            let events: Vec<_> = (0..args.batch)
                .map(|_| {
                    let user = sample(&cdf, &mut rng);
                    serial += 1;
                    let mut e = json!({
                        "event_name": names[rng.random_range(0..EVENT_NAMES)],
                        "user_id": format!("user-{user:07}"),
                        "occurred_at": base + rng.random_range(0..3_600_000i64),
                        "category": if rng.random_bool(0.7) { "sdk" } else { "custom" },
                        "platform": platforms[rng.random_range(0..4)],
                        "properties": {
                            "card_id": format!("card-{:05}", rng.random_range(0..20_000)),
                            "stream": "home",
                            "position": rng.random_range(0..20),
                            "app_version": "5.12.1",
                            "session_id": format!("s-{:016x}", rng.random::<u64>()),
                            "locale": "en-NZ",
                            "device": "iPhone15,2"
                        }
                    });
                    if args.segment {
                        e["event_id"] = json!(format!("e{serial:012}"));
                    }
                    e
                })
                .collect();
            events
        })
        .collect()
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// parse + Arrow build + Parquet encode, on `threads` threads, no HTTP. Events/s.
fn ceiling(batches: &[bytes::Bytes], threads: usize) -> anyhow::Result<f64> {
    use parquet::arrow::ArrowWriter;
    use parquet::basic::{Compression, ZstdLevel};
    use parquet::file::properties::WriterProperties;
    use tidemark::ingest::batch::build_batch;
    use tidemark::ingest::event::{BodyFormat, parse_batch};
    let limits = tidemark::config::Limits::default();
    let chunk = batches.len().div_ceil(threads);
    let started = Instant::now();
    let events: usize = std::thread::scope(|s| {
        let handles: Vec<_> = batches
            .chunks(chunk)
            .map(|part| {
                let limits = limits.clone();
                s.spawn(move || -> anyhow::Result<usize> {
                    let props = WriterProperties::builder()
                        .set_compression(Compression::ZSTD(ZstdLevel::try_new(1)?))
                        .build();
                    let mut out = Vec::new();
                    let mut w = ArrowWriter::try_new(
                        &mut out,
                        tidemark::storage::events_table::schema(),
                        Some(props),
                    )?;
                    let mut n = 0;
                    let now = chrono::Utc::now().timestamp_micros();
                    for body in part {
                        let ev = parse_batch(body, BodyFormat::JsonArray, &limits)
                            .map_err(|e| anyhow::anyhow!("{e}"))?;
                        let b = build_batch("default", now, &ev, &vec![true; ev.len()])?;
                        n += b.num_rows();
                        w.write(&b)?;
                    }
                    w.close()?;
                    Ok(n)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow::anyhow!("thread panicked"))?)
            .sum::<anyhow::Result<usize>>()
    })?;
    Ok(events as f64 / started.elapsed().as_secs_f64())
}

/// Sends every body of `batches` over `connections` connections with `auth`, expecting
/// `ok`; returns the seconds taken, the latencies (ms) and the batches sent.
async fn send_all(
    client: &reqwest::Client,
    url: &str,
    auth: &str,
    batches: &Arc<Vec<bytes::Bytes>>,
    connections: usize,
    total: usize,
    ok: u16,
) -> anyhow::Result<(f64, Vec<f64>, usize)> {
    let per_conn = total.div_ceil(connections);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (client, url, auth, batches) = (
            client.clone(),
            url.to_string(),
            auth.to_string(),
            batches.clone(),
        );
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per_conn);
            let mut sent = 0usize;
            for i in 0..per_conn {
                // Without ids (the default run), re-sending a pooled body stores new
                // events (tidemark assigns UUIDv7s) rather than hitting the dedup fast
                // path; with `--segment` every batch is distinct and sent once.
                let index = if total == batches.len() {
                    // Every batch once: connection c sends its own slice.
                    let k = c * per_conn + i;
                    if k >= total {
                        break;
                    }
                    k
                } else {
                    (c * 7919 + i) % batches.len()
                };
                let body = batches[index].clone();
                let t = Instant::now();
                let r = client
                    .post(&url)
                    .header("authorization", &auth)
                    .header("content-type", "application/json")
                    .body(body)
                    .send()
                    .await?;
                let status = r.status();
                let text = r.bytes().await?;
                if status.as_u16() != ok {
                    bail!(
                        "unexpected status {status}: {}",
                        String::from_utf8_lossy(&text)
                    );
                }
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                sent += 1;
            }
            Ok::<_, anyhow::Error>((lat, sent))
        }));
    }
    let mut lat = Vec::new();
    let mut sent = 0;
    for t in tasks {
        let (l, s) = t.await??;
        lat.extend(l);
        sent += s;
    }
    Ok((started.elapsed().as_secs_f64(), lat, sent))
}

/// What one phase (one kind of request on its own fresh server) measured.
struct Phase {
    /// Acknowledged events/s.
    rate: f64,
    /// Events/s until every acknowledged event was committed to the Delta table.
    committed_rate: f64,
    seconds: f64,
    seconds_until_all_committed: f64,
    /// Acknowledgement latencies, ms, sorted.
    latencies: Vec<f64>,
    events: usize,
}

impl Phase {
    fn json(&self) -> serde_json::Value {
        json!({
            "events": self.events,
            "seconds": self.seconds,
            "events_per_second": self.rate,
            "seconds_until_all_committed": self.seconds_until_all_committed,
            "committed_events_per_second": self.committed_rate,
            "ack_latency_ms_p50": percentile(&self.latencies, 0.50),
            "ack_latency_ms_p99": percentile(&self.latencies, 0.99),
        })
    }
}

/// The request shape a phase sends.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Api {
    /// `/v1/{env}/events`, bearer key, answered 202.
    Native,
    /// Segment's `/v1/batch`, basic auth with the key as user name, answered 200.
    Segment,
}

/// Starts `tidemark serve` on a fresh data directory, sends `n_batches` of `bodies` as
/// `api` requests, waits until the WAL holds nothing pending, and stops the server.
async fn phase(
    bin: &std::path::Path,
    args: &Args,
    api: Api,
    bodies: &Arc<Vec<bytes::Bytes>>,
    n_batches: usize,
) -> anyhow::Result<Phase> {
    let dir = tempfile::tempdir_in("/var/tmp").or_else(|_| tempfile::tempdir())?;
    let node = tidemark_benchmarks::node::start(
        Command::new(bin)
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--ack",
                &args.ack,
                "--data",
            ])
            .arg(dir.path().join("data")),
    )
    .with_context(|| format!("starting {}", bin.display()))?;
    let key = node.ingest.clone();
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(args.connections)
        .build()?;
    let (url, auth, ok) = match api {
        Api::Native => (
            format!("{}/v1/default/events", node.url),
            format!("Bearer {key}"),
            202,
        ),
        Api::Segment => (
            format!("{}/v1/batch", node.url),
            format!(
                "Basic {}",
                base64::Engine::encode(
                    &base64::engine::general_purpose::STANDARD,
                    format!("{key}:")
                )
            ),
            200,
        ),
    };
    let (elapsed, mut latencies, sent_batches) = send_all(
        &client,
        &url,
        &auth,
        bodies,
        args.connections,
        n_batches,
        ok,
    )
    .await?;
    latencies.sort_by(f64::total_cmp);
    let events = sent_batches * args.batch;

    // Sustained means the flusher keeps up: wait until every acknowledged event is
    // committed to the Delta table (the WAL holds nothing pending).
    let metrics_url = format!("{}/metrics", node.url);
    let started = Instant::now() - std::time::Duration::from_secs_f64(elapsed);
    let committed_after = loop {
        let text = client.get(&metrics_url).send().await?.text().await?;
        let pending = text
            .lines()
            .find_map(|l| l.strip_prefix("tidemark_wal_pending_bytes "))
            .and_then(|v| v.trim().parse::<i64>().ok())
            .unwrap_or(-1);
        if pending == 0 {
            break started.elapsed().as_secs_f64();
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    node.proc.terminate()?;
    Ok(Phase {
        rate: events as f64 / elapsed,
        committed_rate: events as f64 / committed_after,
        seconds: elapsed,
        seconds_until_all_committed: committed_after,
        latencies,
        events,
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => 0.0,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

fn avg_bytes(bodies: &[bytes::Bytes], events: usize) -> f64 {
    bodies.iter().map(|b| b.len()).sum::<usize>() as f64 / events as f64
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = match &args.tidemark {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("exe dir")?
            .join("tidemark"),
    };
    let n_batches = args.events.div_ceil(args.batch);
    let pool = if args.segment {
        n_batches
    } else {
        400.min(n_batches)
    };
    eprintln!(
        "generating {pool} distinct batches of {} events...",
        args.batch
    );
    let batches = Arc::new(make_batches(&args, pool));
    let native_bytes = avg_bytes(&batches, pool * args.batch);

    if args.segment {
        // Each phase on its own fresh server, the order alternating round by round, so
        // neither kind inherits the other's store, dedup index or background jobs.
        let bodies = Arc::new(segment_batches(&args, pool));
        let mut rounds = Vec::new();
        let (mut ratios, mut committed_ratios) = (Vec::new(), Vec::new());
        for round in 0..args.rounds {
            let order = if round % 2 == 0 {
                [Api::Native, Api::Segment]
            } else {
                [Api::Segment, Api::Native]
            };
            let (mut native, mut segment) = (None, None);
            for api in order {
                let b = if api == Api::Native {
                    &batches
                } else {
                    &bodies
                };
                let p = phase(&bin, &args, api, b, n_batches).await?;
                eprintln!(
                    "round {round} {api:?}: {:.0} events/s acked, {:.0} committed",
                    p.rate, p.committed_rate
                );
                match api {
                    Api::Native => native = Some(p),
                    Api::Segment => segment = Some(p),
                }
            }
            let (native, segment) = (native.context("native")?, segment.context("segment")?);
            ratios.push(segment.rate / native.rate);
            committed_ratios.push(segment.committed_rate / native.committed_rate);
            rounds.push(json!({
                "order": format!("{:?} then {:?}", order[0], order[1]),
                "native": native.json(),
                "segment": segment.json(),
                "ratio_acked": segment.rate / native.rate,
                "ratio_committed": segment.committed_rate / native.committed_rate,
            }));
        }
        let result = json!({
            "benchmark": "ingest_segment",
            "ack": args.ack,
            "events_per_phase": n_batches * args.batch,
            "batch": args.batch,
            "connections": args.connections,
            "avg_native_event_bytes": native_bytes,
            "avg_segment_message_bytes": avg_bytes(&bodies, pool * args.batch),
            "rounds": rounds,
            "median_ratio_acked": median(ratios),
            "median_ratio_committed": median(committed_ratios),
        });
        return write_result(&args, &result);
    }

    let native = phase(&bin, &args, Api::Native, &batches, n_batches).await?;
    let ceiling_rate = ceiling(&batches, 2)?;
    let result = json!({
        "benchmark": "ingest",
        "ack": args.ack,
        "events": native.events,
        "batch": args.batch,
        "connections": args.connections,
        "avg_event_bytes": native_bytes,
        "seconds": native.seconds,
        "events_per_second": native.rate,
        "seconds_until_all_committed": native.seconds_until_all_committed,
        "committed_events_per_second": native.committed_rate,
        "ack_latency_ms_p50": percentile(&native.latencies, 0.50),
        "ack_latency_ms_p99": percentile(&native.latencies, 0.99),
        "ceiling_events_per_second": ceiling_rate,
        "ratio_http_to_ceiling": native.rate / ceiling_rate,
        "ratio_committed_to_ceiling": native.committed_rate / ceiling_rate,
    });
    write_result(&args, &result)
}

fn write_result(args: &Args, result: &serde_json::Value) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(result)?);
    if let Some(parent) = args.out.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.out, serde_json::to_string_pretty(result)?)?;
    Ok(())
}
