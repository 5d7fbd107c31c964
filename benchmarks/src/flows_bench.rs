//! Flows under load, against a release `tidemark serve` on the embedded default. Four
//! measurements, each on a fresh store (`--only` picks some):
//!
//! - `starts`: starts acknowledged per second over the API (100 users a request, with
//!   variables) next to native ingest of events of the same size, same client and
//!   concurrency, in the same run; the ratio is starts / events.
//! - `latency`: from the acknowledgement of a trigger event to receipt of the signed,
//!   rendered webhook of the run it starts, at `--trigger-rate` events/s: p50 / p99.
//! - `segment`: `--segment-users` users entering one segment at once (one event each):
//!   time until every run's first webhook is received, and serve's peak RSS.
//! - `waiting`: `--waiting` runs waiting in a delay: serve's RSS while they wait, and the
//!   time to release them all once due.
//!
//! Every webhook is verified with the `standardwebhooks` crate. Writes
//! `benchmarks/results/flows.json`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
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

#[derive(Parser, Debug)]
struct Args {
    /// Comma-separated: starts, latency, segment, waiting (default: all).
    #[arg(long, default_value = "starts,latency,segment,waiting")]
    only: String,
    /// Seconds of each load phase.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Concurrent requests in the throughput phases.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Users seeded for the throughput and latency phases.
    #[arg(long, default_value_t = 10_000)]
    users: usize,
    #[arg(long, default_value_t = 1000)]
    trigger_rate: usize,
    #[arg(long, default_value_t = 100_000)]
    segment_users: usize,
    #[arg(long, default_value_t = 1_000_000)]
    waiting: usize,
    /// The tidemark binary (default: beside this one).
    #[arg(long)]
    tidemark: Option<PathBuf>,
    #[arg(long, default_value = "benchmarks/results/flows.json")]
    out: PathBuf,
}

/// What the receiver got: receipt time per probe, counts.
#[derive(Default)]
struct Got {
    probes: HashMap<String, u64>,
    received: u64,
    bad_signatures: u64,
}

struct Rx {
    verifier: Mutex<Option<standardwebhooks::Webhook>>,
    got: Mutex<Got>,
    count: AtomicU64,
}

async fn receive(State(rx): State<Arc<Rx>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let at = now_us();
    let ok = rx
        .verifier
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .as_ref()
        .is_some_and(|v| v.verify(&body, &headers).is_ok());
    let mut got = rx.got.lock().unwrap_or_else(|e| e.into_inner());
    if !ok {
        got.bad_signatures += 1;
        return StatusCode::UNAUTHORIZED;
    }
    got.received += 1;
    rx.count.fetch_add(1, Ordering::Relaxed);
    let v: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    if let Some(p) = v["probe"].as_str() {
        got.probes.entry(p.to_string()).or_insert(at);
    }
    StatusCode::OK
}

struct Bench {
    bin: PathBuf,
    client: reqwest::Client,
    rx: Arc<Rx>,
    hook: String,
}

/// A node on a fresh store, and its directory (kept while it runs).
struct Fresh {
    node: Node,
    _dir: tempfile::TempDir,
}

impl Bench {
    fn start(&self) -> anyhow::Result<Fresh> {
        let dir = tempfile::tempdir_in("/var/tmp")?;
        let config = dir.path().join("tidemark.toml");
        std::fs::write(
            &config,
            format!(
                "data = \"{}\"\n[webhooks]\nallow_networks = [\"127.0.0.0/8\"]\n[segments]\ninterval = \"1s\"\n[flows]\npoll_interval = \"50ms\"\n",
                dir.path().join("data").display()
            ),
        )?;
        *self.rx.got.lock().unwrap_or_else(|e| e.into_inner()) = Got::default();
        self.rx.count.store(0, Ordering::Relaxed);
        Ok(Fresh {
            node: serve(&self.bin, &config)?,
            _dir: dir,
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        url: String,
        key: &str,
        body: &Value,
    ) -> anyhow::Result<Value> {
        let r = self
            .client
            .request(method, url)
            .bearer_auth(key)
            .json(body)
            .send()
            .await?;
        let status = r.status();
        let text = r.text().await?;
        if !status.is_success() {
            bail!("{status} {text}");
        }
        Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    async fn post(
        &self,
        node: &Node,
        path: &str,
        key: &str,
        body: &Value,
    ) -> anyhow::Result<Value> {
        self.call(
            reqwest::Method::POST,
            format!("{}/v1/default{path}", node.url),
            key,
            body,
        )
        .await
    }

    /// Creates and publishes `flow`; the receiver verifies with its secret.
    async fn flow(&self, node: &Node, flow: Value) -> anyhow::Result<()> {
        let created = self
            .post(node, "/flows", &node.admin, &flow)
            .await
            .context("creating the flow")?;
        let id = created["id"].as_str().context("flow id")?;
        let secret = created["secret"].as_str().context("secret")?;
        *self.rx.verifier.lock().unwrap_or_else(|e| e.into_inner()) =
            Some(standardwebhooks::Webhook::new(secret).map_err(|e| anyhow::anyhow!("{e:?}"))?);
        self.post(
            node,
            &format!("/flows/{id}/publish"),
            &node.admin,
            &json!({}),
        )
        .await?;
        Ok(())
    }

    async fn count(&self, node: &Node, sql: &str) -> anyhow::Result<i64> {
        let v = self
            .post(node, "/query", &node.admin, &json!({"sql": sql}))
            .await?;
        Ok(v["rows"][0]["n"].as_i64().unwrap_or(0))
    }

    /// Sends `n` users one `name` event each (1000 a request) and waits for their profiles.
    async fn seed(&self, node: &Node, n: usize, name: &str, prefix: &str) -> anyhow::Result<()> {
        for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
            let events: Vec<Value> = chunk
                .iter()
                .map(|i| json!({"event_name": name, "user_id": format!("{prefix}{i}")}))
                .collect();
            self.post(node, "/events", &node.ingest, &Value::Array(events))
                .await?;
        }
        let sql = format!("select count(*) as n from profiles where user_id like '{prefix}%'");
        wait(600, || async {
            Ok(self.count(node, &sql).await? >= n as i64)
        })
        .await
    }
}

async fn wait<F, Fut>(secs: u64, mut done: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<bool>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !done().await? {
        if Instant::now() > deadline {
            bail!("timed out after {secs} s");
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    Ok(())
}

/// `VmHWM` and `VmRSS` of process `pid`, in MiB.
fn rss_mib(pid: u32) -> (f64, f64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmRSS:"))
}

fn percentile(sorted: &[u64], p: f64) -> Option<f64> {
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len().checked_sub(1)?);
    Some(sorted[i] as f64 / 1e6)
}

/// Posts `body(i)` from `concurrency` tasks for `seconds`; returns items acknowledged
/// (each request carries `per` items) per second.
async fn hammer(
    bench: &Arc<Bench>,
    url: String,
    key: String,
    seconds: u64,
    concurrency: usize,
    per: usize,
    body: Arc<dyn Fn(usize) -> Value + Send + Sync>,
) -> anyhow::Result<f64> {
    let stop = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..concurrency {
        let (bench, url, key, body) = (bench.clone(), url.clone(), key.clone(), body.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = 0usize;
            let mut i = t;
            while Instant::now() < stop {
                bench
                    .call(reqwest::Method::POST, url.clone(), &key, &body(i))
                    .await?;
                n += per;
                i += concurrency;
            }
            anyhow::Ok(n)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total as f64 / started.elapsed().as_secs_f64())
}

async fn starts(bench: &Arc<Bench>, args: &Args) -> anyhow::Result<Value> {
    let f = bench.start()?;
    let node = &f.node;
    bench.seed(node, args.users, "seed", "u").await?;
    bench
        .flow(node, json!({"id": "bulk", "name": "Bulk",
            "variables": {"coupon": {"type": "text"}, "amount": {"type": "number"}, "note": {"type": "text"}},
            "steps": [{"id": "wait", "type": "delay", "duration": "1d"}]}))
        .await?;
    let users = args.users;
    // Events of the same size as one user's share of a start.
    let note = "x".repeat(40);
    let n2 = note.clone();
    let ingest = hammer(bench, format!("{}/v1/default/events", node.url), node.ingest.clone(), args.seconds, args.concurrency, 100,
        Arc::new(move |i| Value::Array((0..100).map(|k| json!({"event_name": "bench", "user_id": format!("u{}", (i * 100 + k) % users),
            "properties": {"coupon": "SPRING", "amount": 5, "note": n2}})).collect()))).await?;
    let started = hammer(bench, format!("{}/v1/default/flows/bulk/start", node.url), node.admin.clone(), args.seconds, args.concurrency, 100,
        Arc::new(move |i| json!({"user_ids": (0..100).map(|k| format!("u{}", (i * 100 + k) % users)).collect::<Vec<_>>(),
            "variables": {"coupon": "SPRING", "amount": 5, "note": note}}))).await?;
    let (peak, _) = rss_mib(node.proc.0.id());
    Ok(
        json!({"starts_per_s": started, "ingest_events_per_s": ingest, "ratio": started / ingest,
              "users_per_request": 100, "concurrency": args.concurrency, "serve_peak_rss_mib": peak}),
    )
}

async fn latency(bench: &Arc<Bench>, args: &Args) -> anyhow::Result<Value> {
    let f = bench.start()?;
    let node = &f.node;
    bench.seed(node, args.users, "seed", "u").await?;
    bench
        .flow(node, json!({"id": "trig", "name": "Trigger",
            "variables": {"probe": {"type": "text"}},
            "starts": {"events": [{"names": ["trigger"]}]},
            "steps": [{"id": "post", "type": "webhook", "url": format!("{}/{{{{ profile.user_id }}}}", bench.hook),
                       "body": {"probe": "{{ variables.probe }}", "user": "{{ profile.user_id }}"}}]}))
        .await?;
    let per_tick = (args.trigger_rate / 100).max(1);
    let ticks = 100 * args.seconds as usize;
    let acked: Arc<Mutex<HashMap<String, u64>>> = Arc::default();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    let mut tasks = Vec::new();
    let started = Instant::now();
    for t in 0..ticks {
        tick.tick().await;
        let probes: Vec<String> = (0..per_tick).map(|k| format!("p{t}-{k}")).collect();
        let events: Vec<Value> = probes
            .iter()
            .enumerate()
            .map(|(k, p)| json!({"event_name": "trigger", "user_id": format!("u{}", (t * per_tick + k) % args.users), "properties": {"probe": p}}))
            .collect();
        let (bench, node_url, key, acked) = (
            bench.clone(),
            node.url.clone(),
            node.ingest.clone(),
            acked.clone(),
        );
        tasks.push(tokio::spawn(async move {
            bench
                .call(
                    reqwest::Method::POST,
                    format!("{node_url}/v1/default/events"),
                    &key,
                    &Value::Array(events),
                )
                .await?;
            let at = now_us();
            let mut a = acked.lock().unwrap_or_else(|e| e.into_inner());
            for p in probes {
                a.insert(p, at);
            }
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    let rate = (per_tick * ticks) as f64 / started.elapsed().as_secs_f64();
    let want = acked.lock().unwrap_or_else(|e| e.into_inner()).len();
    let _ = wait(120, || async {
        Ok(bench
            .rx
            .got
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .probes
            .len()
            >= want)
    })
    .await;
    let got = bench.rx.got.lock().unwrap_or_else(|e| e.into_inner());
    let a = acked.lock().unwrap_or_else(|e| e.into_inner());
    let mut lat: Vec<u64> = a
        .iter()
        .filter_map(|(p, t)| got.probes.get(p).map(|r| r.saturating_sub(*t)))
        .collect();
    lat.sort_unstable();
    Ok(
        json!({"trigger_rate_target": args.trigger_rate, "trigger_rate_achieved": rate, "probes": want,
              "received": lat.len(), "bad_signatures": got.bad_signatures,
              "p50_s": percentile(&lat, 0.5), "p99_s": percentile(&lat, 0.99), "max_s": percentile(&lat, 1.0)}),
    )
}

async fn segment(bench: &Arc<Bench>, args: &Args) -> anyhow::Result<Value> {
    let f = bench.start()?;
    let node = &f.node;
    let n = args.segment_users;
    bench.seed(node, n, "seed", "s").await?;
    bench
        .post(
            node,
            "/segments",
            &node.admin,
            &json!({"id": "go", "name": "Go", "match": "all",
            "conditions": [{"event": "go", "op": "did"}]}),
        )
        .await?;
    bench
        .flow(node, json!({"id": "entered", "name": "Entered",
            "starts": {"events": [{"names": ["segment-entered"], "segment": "go"}]},
            "steps": [{"id": "post", "type": "webhook", "url": format!("{}/{{{{ profile.user_id }}}}", bench.hook),
                       "body": {"user": "{{ profile.user_id }}", "segment": "{{ trigger.properties.segment_id }}"}}]}))
        .await?;
    let t0 = Instant::now();
    for chunk in (0..n).collect::<Vec<_>>().chunks(1000) {
        let events: Vec<Value> = chunk
            .iter()
            .map(|i| json!({"event_name": "go", "user_id": format!("s{i}")}))
            .collect();
        bench
            .post(node, "/events", &node.ingest, &Value::Array(events))
            .await?;
    }
    let sent = t0.elapsed().as_secs_f64();
    let rx = bench.rx.clone();
    let res = wait(3600, || async {
        Ok(rx.count.load(Ordering::Relaxed) >= n as u64)
    })
    .await;
    let secs = t0.elapsed().as_secs_f64();
    let (peak, rss) = rss_mib(node.proc.0.id());
    let got = bench.rx.got.lock().unwrap_or_else(|e| e.into_inner());
    Ok(
        json!({"users": n, "ingest_seconds": sent, "all_received_seconds": secs, "completed": res.is_ok(),
              "received": got.received, "bad_signatures": got.bad_signatures,
              "serve_peak_rss_mib": peak, "serve_rss_mib_after": rss}),
    )
}

async fn waiting(bench: &Arc<Bench>, args: &Args) -> anyhow::Result<Value> {
    let f = bench.start()?;
    let node = &f.node;
    let n = args.waiting;
    // One user starts many runs: the store holds n runs whatever the number of users.
    let users = 1000.min(n);
    bench.seed(node, users, "seed", "w").await?;
    bench
        .flow(node, json!({"id": "wait", "name": "Wait",
            "variables": {"at": {"type": "datetime", "required": true}},
            "steps": [{"id": "wait", "type": "delay", "until": "{{ variables.at }}", "max": "1d"}]}))
        .await?;
    // Due once every start is surely stored (measured: ~7,700 runs/s taken in).
    let due = chrono::Utc::now() + chrono::Duration::seconds(60 + (n / 3000) as i64);
    let t0 = Instant::now();
    let ids: Vec<String> = (0..users).map(|i| format!("w{i}")).collect();
    let requests = n.div_ceil(users);
    let bench2 = bench.clone();
    let mut tasks = futures::stream::iter((0..requests).map(|_| {
        let (bench, url, key, body) = (
            bench2.clone(),
            format!("{}/v1/default/flows/wait/start", node.url),
            node.admin.clone(),
            json!({"user_ids": ids, "variables": {"at": due.to_rfc3339()}}),
        );
        async move { bench.call(reqwest::Method::POST, url, &key, &body).await }
    }))
    .buffer_unordered(4);
    use futures::StreamExt;
    while let Some(r) = tasks.next().await {
        r?;
    }
    let acked = t0.elapsed().as_secs_f64();
    let stored_sql = "select count(*) as n from events where event_name = 'flow-started'";
    wait(3600, || async {
        Ok(bench.count(node, stored_sql).await? >= (requests * users) as i64)
    })
    .await?;
    let stored = t0.elapsed().as_secs_f64();
    let (_, waiting_rss) = rss_mib(node.proc.0.id());
    // Released from when they are due, or from when the last was stored if that was later.
    let until_due = (due - chrono::Utc::now()).to_std().unwrap_or_default();
    let stored_after_due = until_due.is_zero();
    tokio::time::sleep(until_due).await;
    let t1 = Instant::now();
    let done_sql = "select count(*) as n from events where event_name = 'flow-completed'";
    wait(7200, || async {
        Ok(bench.count(node, done_sql).await? >= (requests * users) as i64)
    })
    .await?;
    let released = t1.elapsed().as_secs_f64();
    let (peak, after) = rss_mib(node.proc.0.id());
    Ok(
        json!({"runs": requests * users, "starts_acked_seconds": acked, "all_stored_seconds": stored,
              "serve_rss_mib_while_waiting": waiting_rss, "release_seconds": released,
              "stored_after_due": stored_after_due,
              "released_per_s": (requests * users) as f64 / released,
              "serve_peak_rss_mib": peak, "serve_rss_mib_after": after}),
    )
}

async fn run(args: Args) -> anyhow::Result<Value> {
    let me = std::env::current_exe()?;
    let bin = args
        .tidemark
        .clone()
        .unwrap_or_else(|| me.with_file_name("tidemark"));
    let rx = Arc::new(Rx {
        verifier: Mutex::default(),
        got: Mutex::default(),
        count: AtomicU64::new(0),
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hook = format!("http://{}/hook", listener.local_addr()?);
    let app = Router::new()
        .route("/hook/{user}", post(receive))
        .with_state(rx.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let bench = Arc::new(Bench {
        bin,
        client: reqwest::Client::new(),
        rx,
        hook,
    });
    let mut out = serde_json::Map::new();
    for part in args.only.split(',') {
        let started = Instant::now();
        let v = match part.trim() {
            "starts" => starts(&bench, &args).await?,
            "latency" => latency(&bench, &args).await?,
            "segment" => segment(&bench, &args).await?,
            "waiting" => waiting(&bench, &args).await?,
            other => bail!("--only: unknown part '{other}'"),
        };
        eprintln!("{part}: {v} ({:.0} s)", started.elapsed().as_secs_f64());
        out.insert(part.trim().to_string(), v);
    }
    out.insert("date".into(), json!(chrono::Utc::now().to_rfc3339()));
    Ok(Value::Object(out))
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let out = args.out.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = rt.block_on(run(args))?;
    println!("{}", serde_json::to_string_pretty(&result)?);
    if let Some(dir) = Path::new(&out).parent() {
        std::fs::create_dir_all(dir)?;
    }
    std::fs::write(&out, serde_json::to_string_pretty(&result)? + "\n")?;
    Ok(())
}
