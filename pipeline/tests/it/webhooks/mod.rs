//! Webhooks end to end: a real `tidemark serve` (and `tidemark sinks run`) delivering to a
//! local receiver with scripted faults; signatures checked with the `standardwebhooks`
//! crate; the delivery log; crash recovery; the retry schedule under a paused clock.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::harness::{Backend, Node, TestStore, call, post_json};

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Receipt {
    pub path: String,
    pub id: String,
    pub timestamp: i64,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Receipt {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap()
    }

    pub fn event_ids(&self) -> Vec<String> {
        self.json()["events"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["event_id"].as_str().unwrap().to_string())
            .collect()
    }
}

/// A local webhook receiver. Paths script the answer:
/// `ok` 204; `flaky` 500 on a message's first two attempts, then 200; `redirect` 302;
/// `gone` 410; `busy` 429 + `Retry-After: <busy_after>` once per message, then 200;
/// `down` 500; `slow` 200 after 100 ms; `blackhole` never answers.
#[derive(Clone)]
pub struct Receiver {
    pub port: u16,
    pub got: Arc<Mutex<Vec<Receipt>>>,
}

impl Receiver {
    pub async fn start(busy_after: u64) -> Receiver {
        let got: Arc<Mutex<Vec<Receipt>>> = Arc::default();
        let g = got.clone();
        let app = Router::new().route(
            "/{path}",
            any(
                move |Path(path): Path<String>, headers: HeaderMap, body: Bytes| {
                    let g = g.clone();
                    async move { answer(g, path, headers, body, busy_after).await }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { port, got }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}/{path}", self.port)
    }

    pub fn at(&self, path: &str) -> Vec<Receipt> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Event ids received on `path` (with repeats).
    pub fn events_at(&self, path: &str) -> Vec<String> {
        self.at(path).iter().flat_map(Receipt::event_ids).collect()
    }

    /// Waits until `done(receipts on path)` or `secs` pass; returns whether it held.
    pub async fn wait(&self, path: &str, secs: u64, done: impl Fn(&[Receipt]) -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if done(&self.at(path)) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn answer(
    got: Arc<Mutex<Vec<Receipt>>>,
    path: String,
    headers: HeaderMap,
    body: Bytes,
    busy_after: u64,
) -> Response {
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let timestamp = headers
        .get("webhook-timestamp")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .unwrap_or_default();
    let seen_before = {
        let mut g = got.lock().unwrap();
        let n = g.iter().filter(|r| r.path == path && r.id == id).count();
        g.push(Receipt {
            path: path.clone(),
            id,
            timestamp,
            headers,
            body,
            at: Instant::now(),
        });
        n
    };
    match path.as_str() {
        "flaky" if seen_before < 2 => {
            (StatusCode::INTERNAL_SERVER_ERROR, "not yet").into_response()
        }
        "redirect" => (
            StatusCode::FOUND,
            [("location", "http://127.0.0.1:9/elsewhere")],
        )
            .into_response(),
        "gone" => StatusCode::GONE.into_response(),
        "busy" if seen_before == 0 => (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", busy_after.to_string())],
        )
            .into_response(),
        "down" => (StatusCode::INTERNAL_SERVER_ERROR, "down").into_response(),
        "slow" => {
            tokio::time::sleep(Duration::from_millis(100)).await;
            StatusCode::OK.into_response()
        }
        "blackhole" => std::future::pending().await,
        _ => StatusCode::NO_CONTENT.into_response(),
    }
}

/// Checks every receipt's signature with the independent `standardwebhooks` crate.
pub fn verify_all(receipts: &[Receipt], secret: &str) {
    let wh = standardwebhooks::Webhook::new(secret).unwrap();
    for r in receipts {
        wh.verify(&r.body, &r.headers)
            .unwrap_or_else(|e| panic!("{} on {}: {e:?}", r.id, r.path));
    }
}

/// Writes `tidemark.toml` in the store's working directory (the CLI and serve read it).
pub fn write_config(ts: &TestStore, webhooks: &str) {
    std::fs::write(
        ts.tmp.path().join("tidemark.toml"),
        format!("[webhooks]\n{webhooks}\n"),
    )
    .unwrap();
}

async fn create(node_url: &str, admin: &str, body: Value) -> (String, String) {
    let (s, b) = call("POST", node_url, admin, Some(body.clone())).await;
    assert_eq!(s, 201, "{body}: {b}");
    (
        b["id"].as_str().unwrap().to_string(),
        b["secret"].as_str().unwrap().to_string(),
    )
}

fn events(n: usize, name: &str, prefix: &str) -> Value {
    Value::Array(
        (0..n)
            .map(|i| json!({"event_id": format!("{prefix}-{i}"), "event_name": name, "user_id": format!("u{}", i % 5), "properties": {"i": i, "note": "Zoë"}}))
            .collect(),
    )
}

/// A node whose webhook worker is off, and the configuration a test runs the worker with
/// in its own process (fast polls and logs, the loopback network allowed).
pub fn node_without_worker(ts: &TestStore) -> (Node, tidemark::config::Config) {
    let node = ts.serve(
        &["--ack", "commit"],
        &[("TIDEMARK_WEBHOOKS__ENABLED", "false")],
    );
    let mut config = tidemark::config::Config {
        data: ts.data.clone(),
        ..Default::default()
    };
    config.webhooks.allow_networks = vec!["127.0.0.0/8".into()];
    config.webhooks.poll_interval = Duration::from_millis(50);
    config.webhooks.log_interval = Duration::from_millis(50);
    (node, config)
}

const SECRET_EXAMPLE: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

mod delivery;
mod serve;
pub use delivery::{sinks_run, stdout_line};
