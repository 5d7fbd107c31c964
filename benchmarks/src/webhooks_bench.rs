//! Webhook fan-out benchmark.
//!
//! `webhooks-bench receive` is the receiver: a separate process serving 100 endpoints
//! (one port each), verifying every signature with the `standardwebhooks` crate, counting
//! requests and events, and recording each event's end-to-end latency (receipt time minus
//! the `sent_us` property the load generator stamped just before its ingest request).
//!
//! `webhooks-bench run` drives `tidemark` (release build) through three phases:
//! 1. signed deliveries/s: 100 subscriptions (`max_events = 1`) and N preloaded events,
//!    delivered by `tidemark sinks run`; the same requests sent by a bare signed reqwest
//!    client with the same concurrency and no durability (the peer) give the ratio, and
//!    sent by tidemark's HTTP client alone (no worker) show what the worker costs;
//! 2. events/s with batching (`max_events = 100`);
//! 3. end-to-end latency at a fixed ingest rate: `tidemark serve` with the worker inside
//!    (and the profile jobs), 100 subscriptions each receiving one event name, with
//!    `max_events = 100, max_wait_ms = 100` and again with `max_events = 1`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, post};
use bytes::Bytes;
use clap::{Parser, Subcommand};
use serde_json::{Value, json};
use tidemark_benchmarks::node::{Node, Proc, now_us, serve};

#[derive(Parser, Debug)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Serve `endpoints` receivers on ports base+1..=base+endpoints, stats on base.
    Receive {
        #[arg(long, default_value_t = 18300)]
        base_port: u16,
        #[arg(long, default_value_t = 100)]
        endpoints: u16,
        #[arg(long)]
        secret: String,
    },
    /// Run the three phases and write the results.
    Run {
        #[arg(long, default_value_t = 100)]
        endpoints: u16,
        /// Events preloaded for the max_events = 1 phase (deliveries = events x endpoints).
        #[arg(long, default_value_t = 3000)]
        events: usize,
        /// Events preloaded for the batching phase.
        #[arg(long, default_value_t = 30000)]
        batch_events: usize,
        /// Ingest rate of the latency phase (events/s) and its length.
        #[arg(long, default_value_t = 10000)]
        rate: usize,
        #[arg(long, default_value_t = 30)]
        seconds: u64,
        #[arg(long, default_value_t = 18300)]
        base_port: u16,
        #[arg(long)]
        tidemark: Option<PathBuf>,
        #[arg(long, default_value = "benchmarks/results/webhooks.json")]
        out: PathBuf,
        /// Only phase 1 and the peer (quick comparisons); prints, writes no results file.
        #[arg(long)]
        deliveries_only: bool,
    },
}

// The same allocator as the `tidemark` binary, so the peer and the receiver are not
// handicapped against it.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    events: AtomicU64,
    bad: AtomicU64,
    first_us: AtomicU64,
    last_us: AtomicU64,
    latencies_us: Mutex<Vec<u64>>,
}

struct Rx {
    counters: Counters,
    verifier: standardwebhooks::Webhook,
}

async fn receive(State(rx): State<Arc<Rx>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let at = now_us();
    let c = &rx.counters;
    if rx.verifier.verify(&body, &headers).is_err() {
        c.bad.fetch_add(1, Ordering::Relaxed);
        return StatusCode::UNAUTHORIZED;
    }
    let _ = c
        .first_us
        .compare_exchange(0, at, Ordering::Relaxed, Ordering::Relaxed);
    c.last_us.fetch_max(at, Ordering::Relaxed);
    c.requests.fetch_add(1, Ordering::Relaxed);
    let parsed: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let events = parsed["events"]
        .as_array()
        .map_or(&[][..], |v| v.as_slice());
    c.events.fetch_add(events.len() as u64, Ordering::Relaxed);
    let sent: Vec<u64> = events
        .iter()
        .filter_map(|e| e["properties"]["sent_us"].as_u64())
        .map(|s| at.saturating_sub(s))
        .collect();
    if !sent.is_empty() {
        c.latencies_us
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(sent);
    }
    StatusCode::NO_CONTENT
}

async fn stats(State(rx): State<Arc<Rx>>) -> axum::Json<Value> {
    let c = &rx.counters;
    let mut lat = c
        .latencies_us
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    lat.sort_unstable();
    let pct = |p: f64| {
        lat.get(((lat.len() as f64 * p) as usize).min(lat.len().saturating_sub(1)))
            .copied()
    };
    axum::Json(json!({
        "requests": c.requests.load(Ordering::Relaxed),
        "events": c.events.load(Ordering::Relaxed),
        "bad_signatures": c.bad.load(Ordering::Relaxed),
        "first_us": c.first_us.load(Ordering::Relaxed),
        "last_us": c.last_us.load(Ordering::Relaxed),
        "latency_samples": lat.len(),
        "p50_ms": pct(0.50).map(|v| v as f64 / 1000.0),
        "p99_ms": pct(0.99).map(|v| v as f64 / 1000.0),
        "max_ms": lat.last().map(|v| *v as f64 / 1000.0),
    }))
}

async fn reset(State(rx): State<Arc<Rx>>) -> StatusCode {
    let c = &rx.counters;
    for a in [&c.requests, &c.events, &c.bad, &c.first_us, &c.last_us] {
        a.store(0, Ordering::Relaxed);
    }
    c.latencies_us
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clear();
    StatusCode::NO_CONTENT
}

async fn serve_receiver(base: u16, endpoints: u16, secret: &str) -> anyhow::Result<()> {
    let rx = Arc::new(Rx {
        counters: Counters::default(),
        verifier: standardwebhooks::Webhook::new(secret).map_err(|e| anyhow::anyhow!("{e:?}"))?,
    });
    let hooks = Router::new()
        .route("/hook", post(receive))
        .with_state(rx.clone());
    for i in 1..=endpoints {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", base + i)).await?;
        let app = hooks.clone();
        tokio::spawn(async move { axum::serve(listener, app).await });
    }
    let control = Router::new()
        .route("/stats", get(stats))
        .route("/reset", post(reset))
        .with_state(rx);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", base)).await?;
    println!("receiver ready");
    axum::serve(listener, control).await?;
    Ok(())
}

fn write_config(dir: &Path, worker_in_serve: bool) -> anyhow::Result<PathBuf> {
    let path = dir.join("tidemark.toml");
    std::fs::write(
        &path,
        format!(
            "data = \"{}\"\n[webhooks]\nenabled = {worker_in_serve}\nallow_networks = [\"127.0.0.0/8\"]\n",
            dir.join("data").display()
        ),
    )?;
    Ok(path)
}

async fn create_subs(
    client: &reqwest::Client,
    node: &Node,
    base: u16,
    endpoints: u16,
    max_events: u32,
    one_name_each: bool,
) -> anyhow::Result<()> {
    for i in 1..=endpoints {
        let mut body = json!({
            "url": format!("http://127.0.0.1:{}/hook", base + i),
            "secret": SECRET,
            "max_events": max_events,
            "max_wait_ms": 100,
            "max_in_flight": 8,
        });
        if one_name_each {
            body["filter"] = json!({"events": [format!("ev-{}", i - 1)]});
        }
        let r = client
            .post(format!("{}/v1/default/webhooks", node.url))
            .bearer_auth(&node.admin)
            .json(&body)
            .send()
            .await?;
        if r.status() != 201 {
            bail!(
                "creating a subscription: {} {}",
                r.status(),
                r.text().await?
            );
        }
    }
    Ok(())
}

fn event_batch(from: usize, n: usize, names: usize, stamp: bool) -> String {
    let sent = now_us();
    let events: Vec<Value> = (from..from + n)
        .map(|i| {
            let mut props = json!({"plan": "gold", "amount": i % 977, "currency": "EUR"});
            if stamp {
                props["sent_us"] = json!(sent);
            }
            json!({"event_name": format!("ev-{}", i % names), "user_id": format!("u{}", i % 5000), "properties": props})
        })
        .collect();
    Value::Array(events).to_string()
}

async fn ingest(client: &reqwest::Client, node: &Node, body: String) -> anyhow::Result<()> {
    let r = client
        .post(format!("{}/v1/default/events", node.url))
        .bearer_auth(&node.ingest)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await?;
    if r.status() != 202 {
        bail!("ingest: {} {}", r.status(), r.text().await?);
    }
    Ok(())
}

async fn rx_stats(client: &reqwest::Client, base: u16) -> anyhow::Result<Value> {
    Ok(client
        .get(format!("http://127.0.0.1:{base}/stats"))
        .send()
        .await?
        .json()
        .await?)
}

async fn rx_reset(client: &reqwest::Client, base: u16) -> anyhow::Result<()> {
    client
        .post(format!("http://127.0.0.1:{base}/reset"))
        .send()
        .await?;
    Ok(())
}

/// Waits until the receiver counted `field >= want`; returns the stats.
async fn wait_for(
    client: &reqwest::Client,
    base: u16,
    field: &str,
    want: u64,
    limit: Duration,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + limit;
    loop {
        let s = rx_stats(client, base).await?;
        if s[field].as_u64().unwrap_or(0) >= want {
            return Ok(s);
        }
        if Instant::now() > deadline {
            bail!("timed out waiting for {want} {field}: {s}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Phases 1 and 2: preload events with the worker off, then time `tidemark sinks run`.
async fn preloaded(
    bin: &Path,
    client: &reqwest::Client,
    base: u16,
    endpoints: u16,
    events: usize,
    max_events: u32,
) -> anyhow::Result<Value> {
    let dir = tempfile::tempdir_in("/var/tmp")?;
    let config = write_config(dir.path(), false)?;
    let node = serve(bin, &config)?;
    create_subs(client, &node, base, endpoints, max_events, false).await?;
    for start in (0..events).step_by(500) {
        ingest(
            client,
            &node,
            event_batch(start, 500.min(events - start), 50, false),
        )
        .await?;
    }
    node.proc.terminate()?;
    rx_reset(client, base).await?;
    let want_events = (events * endpoints as usize) as u64;
    let started = Instant::now();
    let sinks = Proc(
        Command::new(bin)
            .arg("--config")
            .arg(&config)
            .args(["sinks", "run"])
            .env("TIDEMARK_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()?,
    );
    let s = wait_for(
        client,
        base,
        "events",
        want_events,
        Duration::from_secs(600),
    )
    .await?;
    let wall = started.elapsed().as_secs_f64();
    sinks.terminate()?;
    let span =
        (s["last_us"].as_u64().unwrap_or(0) - s["first_us"].as_u64().unwrap_or(0)) as f64 / 1e6;
    let requests = s["requests"].as_u64().unwrap_or(0);
    Ok(json!({
        "max_events": max_events,
        "events": events,
        "subscriptions": endpoints,
        "requests": requests,
        "events_delivered": s["events"],
        "bad_signatures": s["bad_signatures"],
        "seconds_first_to_last": span,
        "seconds_from_start": wall,
        "requests_per_s": requests as f64 / span,
        "events_per_s": want_events as f64 / span,
    }))
}

/// Who sends the bare signed requests.
#[derive(Clone)]
enum Bare {
    /// The peer: reqwest, what a home-grown sender would use.
    Reqwest(reqwest::Client),
    /// tidemark's own HTTP client without the worker around it (no durability, no log):
    /// the ceiling of the client alone.
    Safe(tidemark_sinks::client::SafeClient),
}

/// The same number of signed POSTs from a bare client, same concurrency (8 per endpoint),
/// no durability, no log.
async fn blast(
    client: &reqwest::Client,
    bare: Bare,
    base: u16,
    endpoints: u16,
    per_endpoint: usize,
) -> anyhow::Result<Value> {
    rx_reset(client, base).await?;
    let secret = tidemark_sinks::sign::Secret::parse(SECRET)?;
    let body = event_batch(0, 1, 50, false);
    let body = Bytes::from(format!(
        r#"{{"type":"events","environment":"default","subscription_id":"wh_x","events":{body}}}"#
    ));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for e in 1..=endpoints {
        for lane in 0..8 {
            let (bare, secret, body) = (bare.clone(), secret.clone(), body.clone());
            let url: url::Url = format!("http://127.0.0.1:{}/hook", base + e).parse()?;
            tasks.push(tokio::spawn(async move {
                let mut i = lane;
                while i < per_endpoint {
                    let mut headers = reqwest::header::HeaderMap::new();
                    headers.insert(
                        reqwest::header::CONTENT_TYPE,
                        reqwest::header::HeaderValue::from_static("application/json"),
                    );
                    tidemark_sinks::sign::set_headers(
                        &mut headers,
                        std::slice::from_ref(&secret),
                        &format!("msg_{e}_{i}"),
                        chrono::Utc::now().timestamp(),
                        &body,
                    );
                    match &bare {
                        Bare::Reqwest(c) => {
                            let r = c
                                .post(url.clone())
                                .headers(headers)
                                .body(body.clone())
                                .send()
                                .await?;
                            let _ = r.bytes().await?;
                        }
                        Bare::Safe(c) => {
                            c.send(reqwest::Method::POST, &url, headers, body.clone())
                                .await
                                .map_err(|f| anyhow::anyhow!("{}", f.message))?;
                        }
                    }
                    i += 8;
                }
                anyhow::Ok(())
            }));
        }
    }
    for t in tasks {
        t.await??;
    }
    let secs = started.elapsed().as_secs_f64();
    let requests = endpoints as usize * per_endpoint;
    let s = rx_stats(client, base).await?;
    Ok(
        json!({"requests": requests, "seconds": secs, "requests_per_s": requests as f64 / secs, "bad_signatures": s["bad_signatures"]}),
    )
}

/// Phase 3: ingest at `rate` events/s into `serve` (worker inside), 100 event names, each
/// subscription receiving one; latency from send to receipt.
async fn latency(
    bin: &Path,
    client: &reqwest::Client,
    base: u16,
    endpoints: u16,
    rate: usize,
    seconds: u64,
    max_events: u32,
) -> anyhow::Result<Value> {
    let dir = tempfile::tempdir_in("/var/tmp")?;
    let config = write_config(dir.path(), true)?;
    let node = serve(bin, &config)?;
    create_subs(client, &node, base, endpoints, max_events, true).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    rx_reset(client, base).await?;
    // 100 requests per second of rate/100 events each, paced.
    let per_tick = rate / 100;
    let total = per_tick * 100 * seconds as usize;
    let started = Instant::now();
    let mut sent = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut pending = Vec::new();
    while sent < total {
        tick.tick().await;
        let body = event_batch(sent, per_tick, endpoints as usize, true);
        let (c, url, key) = (
            client.clone(),
            format!("{}/v1/default/events", node.url),
            node.ingest.clone(),
        );
        pending.push(tokio::spawn(async move {
            let r = c
                .post(url)
                .bearer_auth(key)
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await?;
            anyhow::ensure!(r.status() == 202, "ingest: {}", r.status());
            anyhow::Ok(())
        }));
        sent += per_tick;
    }
    for p in pending {
        p.await??;
    }
    let ingest_secs = started.elapsed().as_secs_f64();
    let s = wait_for(
        client,
        base,
        "events",
        total as u64,
        Duration::from_secs(300),
    )
    .await?;
    node.proc.terminate()?;
    Ok(json!({
        "max_events": max_events,
        "max_wait_ms": 100,
        "ingest_rate_target": rate,
        "ingest_rate_achieved": total as f64 / ingest_secs,
        "events": total,
        "subscriptions": endpoints,
        "requests": s["requests"],
        "bad_signatures": s["bad_signatures"],
        "p50_ms": s["p50_ms"],
        "p99_ms": s["p99_ms"],
        "max_ms": s["max_ms"],
    }))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    match cli.cmd {
        Cmd::Receive { base_port, endpoints, secret } => rt.block_on(serve_receiver(base_port, endpoints, &secret)),
        Cmd::Run { endpoints, events, batch_events, rate, seconds, base_port, tidemark, out, deliveries_only } => rt.block_on(async move {
            let me = std::env::current_exe()?;
            let bin = tidemark.unwrap_or_else(|| me.with_file_name("tidemark"));
            let mut receiver = Proc(
                Command::new(&me)
                    .args(["receive", "--base-port", &base_port.to_string(), "--endpoints", &endpoints.to_string(), "--secret", SECRET])
                    .stdout(Stdio::piped())
                    .spawn()?,
            );
            let mut lines = BufReader::new(receiver.0.stdout.take().context("stdout")?).lines();
            if lines.next().transpose()?.as_deref() != Some("receiver ready") {
                bail!("the receiver did not start");
            }
            let client = reqwest::Client::builder().pool_max_idle_per_host(16).build()?;
            eprintln!("phase 1: {events} events x {endpoints} subscriptions, max_events = 1");
            let single = preloaded(&bin, &client, base_port, endpoints, events, 1).await?;
            eprintln!("{single}");
            eprintln!("peer: bare signed client, same requests");
            let peer = blast(&client, Bare::Reqwest(client.clone()), base_port, endpoints, events).await?;
            eprintln!("{peer}");
            eprintln!("tidemark's HTTP client alone, same requests");
            let safe = tidemark_sinks::client::SafeClient::new(tidemark_sinks::client::ClientOptions {
                allow: vec!["127.0.0.0/8".parse()?],
                ..Default::default()
            })?;
            let client_alone = blast(&client, Bare::Safe(safe), base_port, endpoints, events).await?;
            eprintln!("{client_alone}");
            if deliveries_only {
                let ratio = single["requests_per_s"].as_f64().unwrap_or(0.0) / peer["requests_per_s"].as_f64().unwrap_or(1.0);
                println!("{}", json!({"signed_deliveries": single, "peer_bare_client": peer, "tidemark_over_peer": ratio, "tidemark_client_alone": client_alone}));
                return Ok(());
            }
            eprintln!("phase 2: {batch_events} events x {endpoints} subscriptions, max_events = 100");
            let batched = preloaded(&bin, &client, base_port, endpoints, batch_events, 100).await?;
            eprintln!("{batched}");
            eprintln!("phase 3: {rate} events/s for {seconds} s, 100 subscriptions of one event name each, max_events = 100");
            let lat = latency(&bin, &client, base_port, endpoints, rate, seconds, 100).await?;
            eprintln!("{lat}");
            eprintln!("phase 3b: the same with max_events = 1 ({rate} signed deliveries/s)");
            let lat_single = latency(&bin, &client, base_port, endpoints, rate, seconds, 1).await?;
            eprintln!("{lat_single}");
            let ratio = single["requests_per_s"].as_f64().unwrap_or(0.0) / peer["requests_per_s"].as_f64().unwrap_or(1.0);
            let result = json!({
                "signed_deliveries": single,
                "peer_bare_client": peer,
                "tidemark_over_peer": ratio,
                "tidemark_client_alone": client_alone,
                "batched": batched,
                "latency": lat,
                "latency_max_events_1": lat_single,
                "targets": {"deliveries_per_s": 20000, "p99_ms": 2000},
            });
            if let Some(parent) = out.parent() {
                std::fs::create_dir_all(parent)?;
            }
            std::fs::write(&out, serde_json::to_string_pretty(&result)?)?;
            println!("{}", serde_json::to_string_pretty(&result)?);
            Ok(())
        }),
    }
}
