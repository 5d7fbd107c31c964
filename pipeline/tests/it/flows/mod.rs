//! Flows end to end: a real `tidemark serve` running flows whose webhook steps reach a
//! local receiver that checks every signature with the `standardwebhooks` crate.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, RawQuery};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use bytes::Bytes;
use serde_json::{Value, json};

use crate::harness::{Backend, Node, TestStore, call};

mod api;
mod durable;
mod entry;

/// One request the receiver got.
#[derive(Debug, Clone)]
pub struct Got {
    pub path: String,
    pub query: String,
    pub id: String,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }
}

/// A receiver: `/ok/...` answers 200 `{"ticket": 42}`, `/down/...` 500, `/bad/...` 400,
/// `/flaky/...` 503 to a message's first attempt then 200, `/switch/...` 400 while
/// `failing` is set, else 200.
#[derive(Clone)]
pub struct Receiver {
    pub port: u16,
    pub got: Arc<Mutex<Vec<Got>>>,
    pub failing: Arc<AtomicBool>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let got: Arc<Mutex<Vec<Got>>> = Arc::default();
        let failing: Arc<AtomicBool> = Arc::default();
        let (g, f) = (got.clone(), failing.clone());
        let app = Router::new().route(
            "/{*path}",
            any(
                move |Path(path): Path<String>,
                      RawQuery(q): RawQuery,
                      headers: HeaderMap,
                      body: Bytes| {
                    let (g, f) = (g.clone(), f.load(Ordering::SeqCst));
                    async move { answer(g, path, q.unwrap_or_default(), headers, body, f) }
                },
            ),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { port, got, failing }
    }

    pub fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn all(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// Requests whose path starts with `prefix`.
    pub fn at(&self, prefix: &str) -> Vec<Got> {
        self.all()
            .into_iter()
            .filter(|g| g.path.starts_with(prefix))
            .collect()
    }

    /// Waits until `done(requests under prefix)` or `secs` pass; returns whether it held.
    pub async fn wait(&self, prefix: &str, secs: u64, done: impl Fn(&[Got]) -> bool) -> bool {
        let deadline = Instant::now() + Duration::from_secs(secs);
        loop {
            if done(&self.at(prefix)) {
                return true;
            }
            if Instant::now() > deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn answer(
    got: Arc<Mutex<Vec<Got>>>,
    path: String,
    query: String,
    headers: HeaderMap,
    body: Bytes,
    failing: bool,
) -> Response {
    let id = headers
        .get("webhook-id")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_string();
    let seen = {
        let mut g = got.lock().unwrap();
        let n = g.iter().filter(|r| r.id == id).count();
        g.push(Got {
            path: path.clone(),
            query,
            id,
            headers,
            body,
        });
        n
    };
    let first = path.split('/').next().unwrap_or_default();
    match first {
        "down" => (StatusCode::INTERNAL_SERVER_ERROR, "down").into_response(),
        "bad" => (StatusCode::BAD_REQUEST, "bad request").into_response(),
        "switch" if failing => (StatusCode::BAD_REQUEST, "switched off").into_response(),
        "flaky" if seen == 0 => (StatusCode::SERVICE_UNAVAILABLE, "not yet").into_response(),
        _ => (
            StatusCode::OK,
            [("content-type", "application/json")],
            json!({"ticket": 42, "path": path}).to_string(),
        )
            .into_response(),
    }
}

/// Checks every request's signature with the independent `standardwebhooks` crate.
pub fn verify(got: &[Got], secret: &str) {
    let wh = standardwebhooks::Webhook::new(secret).unwrap();
    for g in got {
        wh.verify(&g.body, &g.headers)
            .unwrap_or_else(|e| panic!("{} on {}: {e:?}", g.id, g.path));
    }
}

/// A store whose serve allows the loopback receiver, retries fast and runs segments
/// often.
pub fn store(backend: Backend) -> TestStore {
    let ts = TestStore::new(backend);
    std::fs::write(
        ts.tmp.path().join("tidemark.toml"),
        r#"lease_ttl = "3s"
[webhooks]
allow_networks = ["127.0.0.0/8"]
retry_schedule = ["0s", "1s", "1s"]
jitter = 0.0
timeout = "3s"
[flows]
poll_interval = "100ms"
pause_after_failures = 3
[segments]
interval = "1s"
"#,
    )
    .unwrap();
    ts
}

pub fn serve(ts: &TestStore) -> Node {
    ts.serve(&[], &[("TIDEMARK_JOBS__DEBOUNCE", "50ms")])
}

/// Creates and publishes a flow; returns its signing secret.
pub async fn publish(node: &Node, admin: &str, flow: Value) -> String {
    let (s, b) = call(
        "POST",
        &node.url("/v1/default/flows"),
        admin,
        Some(flow.clone()),
    )
    .await;
    assert_eq!(s, 201, "{flow}: {b}");
    let id = b["id"].as_str().unwrap().to_string();
    let secret = b["secret"].as_str().unwrap().to_string();
    let (s, b) = call(
        "POST",
        &node.url(&format!("/v1/default/flows/{id}/publish")),
        admin,
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    secret
}

/// A receiver, a store and its serve, the admin key, and `users` seen (with profiles).
pub async fn setup(users: &[&str]) -> (Receiver, TestStore, Node, String) {
    let rx = Receiver::start().await;
    let ts = store(Backend::Local);
    let node = serve(&ts);
    let admin = node.admin_key.clone().unwrap();
    let events: Vec<Value> = users
        .iter()
        .map(|u| json!({"event_name": "app-opened", "user_id": u}))
        .collect();
    seen(&node, &ts, Value::Array(events)).await;
    (rx, ts, node, admin)
}

/// Sends events and waits until every named user has a profile.
pub async fn seen(node: &Node, ts: &TestStore, events: Value) {
    crate::harness::ingest(node, "default", node.ingest_key(), events.clone()).await;
    let users: Vec<String> = events
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["user_id"].as_str().unwrap().to_string())
        .collect();
    let list = users
        .iter()
        .map(|u| format!("'{u}'"))
        .collect::<Vec<_>>()
        .join(",");
    let rows = ts.sql_until(
        &format!("select count(distinct user_id) as n from profiles where user_id in ({list})"),
        |r| {
            r[0]["n"].as_i64()
                == Some(
                    users
                        .iter()
                        .collect::<std::collections::BTreeSet<_>>()
                        .len() as i64,
                )
        },
    );
    assert!(!rows.is_empty());
}

/// The runs of a flow once `done` holds for them (or after `secs`).
pub async fn runs_until(
    node: &Node,
    admin: &str,
    flow: &str,
    secs: u64,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let (s, b) = call(
            "GET",
            &node.url(&format!("/v1/default/flows/{flow}/runs?limit=1000")),
            admin,
            None,
        )
        .await;
        assert_eq!(s, 200, "{b}");
        let runs = b["runs"].as_array().unwrap().clone();
        if done(&runs) || Instant::now() > deadline {
            return runs;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
