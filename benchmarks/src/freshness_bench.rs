//! Freshness end to end: how long after its ingest acknowledgement an event that makes a
//! user enter a segment reaches a webhook receiver as a signed `segment-entered`.
//!
//! `tidemark serve` (release build, the embedded default) with `segments.interval = 1h`,
//! so only the job loop's evaluation after each profile change counts; 100 segments (99
//! on the background event names, one on `probe`); one webhook subscription on `system`
//! events, received here and verified with the `standardwebhooks` crate. Background load
//! at `--rate` events/s over `--users` users; every `--probe-every-ms` one `probe` event
//! for a new user, whose ingest answer time is the start. The receipt of that user's
//! `segment-entered` for the probe segment is the end. Prints and writes p50 / p99 / max.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use bytes::Bytes;
use clap::Parser;
use serde_json::{Value, json};
use tidemark_benchmarks::node::{Node, now_us, serve};

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const PROBE_SEGMENT: &str = "probe";

#[derive(Parser, Debug)]
struct Args {
    /// Background ingest rate, events/s.
    #[arg(long, default_value_t = 10_000)]
    rate: usize,
    #[arg(long, default_value_t = 60)]
    seconds: u64,
    #[arg(long, default_value_t = 100)]
    segments: usize,
    #[arg(long, default_value_t = 20_000)]
    users: usize,
    #[arg(long, default_value_t = 500)]
    probe_every_ms: u64,
    /// The tidemark binary (default: beside this one).
    #[arg(long)]
    tidemark: Option<PathBuf>,
    #[arg(long, default_value = "benchmarks/results/freshness.json")]
    out: PathBuf,
}

/// Receipt time of each probe user's `segment-entered` (first one), and counts.
#[derive(Default)]
struct Received {
    probes: HashMap<String, u64>,
    entered: u64,
    bad_signatures: u64,
}

struct Rx {
    verifier: standardwebhooks::Webhook,
    got: Mutex<Received>,
}

async fn receive(State(rx): State<Arc<Rx>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let at = now_us();
    let mut got = rx.got.lock().unwrap_or_else(|e| e.into_inner());
    if rx.verifier.verify(&body, &headers).is_err() {
        got.bad_signatures += 1;
        return StatusCode::UNAUTHORIZED;
    }
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    for e in parsed["events"].as_array().into_iter().flatten() {
        if e["event_name"] != "segment-entered" {
            continue;
        }
        got.entered += 1;
        let props: Value = match &e["properties"] {
            Value::String(s) => serde_json::from_str(s).unwrap_or(Value::Null),
            v => v.clone(),
        };
        if props["segment_id"] == PROBE_SEGMENT
            && let Some(user) = e["user_id"].as_str()
        {
            got.probes.entry(user.to_string()).or_insert(at);
        }
    }
    StatusCode::NO_CONTENT
}

async fn post_json(
    client: &reqwest::Client,
    url: String,
    key: &str,
    body: Value,
) -> anyhow::Result<()> {
    let r = client.post(url).bearer_auth(key).json(&body).send().await?;
    if !r.status().is_success() {
        bail!("{} {}", r.status(), r.text().await?);
    }
    Ok(())
}

async fn setup(
    client: &reqwest::Client,
    node: &Node,
    hook: &str,
    segments: usize,
) -> anyhow::Result<()> {
    post_json(
        client,
        format!("{}/v1/default/webhooks", node.url),
        &node.admin,
        json!({"url": hook, "secret": SECRET, "filter": {"categories": ["system"]},
               "max_events": 100, "max_wait_ms": 50}),
    )
    .await
    .context("creating the subscription")?;
    let mut defs = vec![json!({"id": PROBE_SEGMENT, "name": "Probe", "match": "all",
                               "conditions": [{"event": "probe", "op": "did"}]})];
    for i in 1..segments {
        defs.push(
            json!({"id": format!("s{i}"), "name": format!("Did ev-{i}"), "match": "all",
                         "conditions": [{"event": format!("ev-{i}"), "op": "did"}]}),
        );
    }
    for d in defs {
        post_json(
            client,
            format!("{}/v1/default/segments", node.url),
            &node.admin,
            d,
        )
        .await
        .context("creating a segment")?;
    }
    Ok(())
}

fn percentile(sorted: &[u64], p: f64) -> Option<f64> {
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len().checked_sub(1)?);
    Some(sorted[i] as f64 / 1000.0)
}

async fn run(args: Args) -> anyhow::Result<Value> {
    let me = std::env::current_exe()?;
    let bin = args
        .tidemark
        .clone()
        .unwrap_or_else(|| me.with_file_name("tidemark"));
    let rx = Arc::new(Rx {
        verifier: standardwebhooks::Webhook::new(SECRET).map_err(|e| anyhow::anyhow!("{e:?}"))?,
        got: Mutex::default(),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook = format!("http://{}/hook", listener.local_addr()?);
    let app = Router::new()
        .route("/hook", post(receive))
        .with_state(rx.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });

    let dir = tempfile::tempdir_in("/var/tmp")?;
    let config = dir.path().join("tidemark.toml");
    std::fs::write(
        &config,
        format!(
            "data = \"{}\"\n[webhooks]\nallow_networks = [\"127.0.0.0/8\"]\n[segments]\ninterval = \"1h\"\n",
            dir.path().join("data").display()
        ),
    )?;
    let node = serve(&bin, &config)?;
    let client = reqwest::Client::new();
    setup(&client, &node, &hook, args.segments).await?;

    // Background: 100 requests/s of rate/100 events; probes on their own timer.
    let per_tick = (args.rate / 100).max(1);
    let ticks = 100 * args.seconds as usize;
    let started = Instant::now();
    let acked: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let mut tasks = Vec::new();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let probe_every = (args.probe_every_ms / 10).max(1) as usize;
    let names = args.segments.max(2) - 1;
    for t in 0..ticks {
        tick.tick().await;
        let events: Vec<Value> = (0..per_tick)
            .map(|i| {
                let n = t * per_tick + i;
                json!({"event_name": format!("ev-{}", 1 + n % names), "user_id": format!("u{}", (n * 7919) % args.users),
                       "properties": {"plan": "gold", "amount": n % 977}})
            })
            .collect();
        let (c, url, key) = (
            client.clone(),
            format!("{}/v1/default/events", node.url),
            node.ingest.clone(),
        );
        tasks.push(tokio::spawn(async move {
            post_json(&c, url, &key, Value::Array(events)).await
        }));
        if t % probe_every == 0 {
            let user = format!("probe-{t}");
            let (c, url, key, acked) = (
                client.clone(),
                format!("{}/v1/default/events", node.url),
                node.ingest.clone(),
                acked.clone(),
            );
            tasks.push(tokio::spawn(async move {
                post_json(
                    &c,
                    url,
                    &key,
                    json!([{"event_name": "probe", "user_id": user}]),
                )
                .await?;
                acked
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .insert(user, now_us());
                Ok(())
            }));
        }
    }
    for t in tasks {
        t.await??;
    }
    let ingest_seconds = started.elapsed().as_secs_f64();
    let probes = acked.lock().unwrap_or_else(|e| e.into_inner()).clone();
    let deadline = Instant::now() + Duration::from_secs(120);
    while Instant::now() < deadline {
        let got = rx
            .got
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .probes
            .len();
        if got >= probes.len() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    node.proc.terminate()?;
    let got = rx.got.lock().unwrap_or_else(|e| e.into_inner());
    let mut latencies: Vec<u64> = probes
        .iter()
        .filter_map(|(user, ack)| got.probes.get(user).map(|r| r.saturating_sub(*ack)))
        .collect();
    latencies.sort_unstable();
    Ok(json!({
        "rate_target": args.rate,
        "rate_achieved": (per_tick * ticks) as f64 / ingest_seconds,
        "seconds": args.seconds,
        "segments": args.segments,
        "users": args.users,
        "probes": probes.len(),
        "probes_received": latencies.len(),
        "segment_entered_received": got.entered,
        "bad_signatures": got.bad_signatures,
        "p50_s": percentile(&latencies, 0.50).map(|ms| ms / 1000.0),
        "p99_s": percentile(&latencies, 0.99).map(|ms| ms / 1000.0),
        "max_s": latencies.last().map(|v| *v as f64 / 1e6),
        "segments_interval": "1h",
    }))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let out = args.out.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(run(args))?;
    println!("{}", serde_json::to_string_pretty(&result)?);
    std::fs::write(&out, serde_json::to_string_pretty(&result)? + "\n")?;
    Ok(())
}
