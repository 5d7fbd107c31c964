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

use crate::harness::{Backend, TestStore, call, post_json};

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

/// Delivery from `serve`: filters, batching with profiles, retries, redirects, 410,
/// Retry-After, an endpoint that never answers beside ones that must not wait for it,
/// segment events (`system`), the delivery log, recover and the API's refusals.
#[tokio::test(flavor = "multi_thread")]
async fn serve_delivers_signed_events_with_retries_and_a_log() {
    let rx = Receiver::start(1).await;
    let ts = TestStore::new(Backend::Local);
    write_config(
        &ts,
        r#"allow_networks = ["127.0.0.0/8"]
retry_schedule = ["0s", "1s", "1s"]
jitter = 0.0
timeout = "3s"
poll_interval = "100ms"
log_interval = "200ms""#,
    );
    let node = ts.serve(&[], &[("TIDEMARK_JOBS__DEBOUNCE", "50ms")]);
    let admin = node.admin_key.clone().unwrap();
    let ingest = node.ingest_key().to_string();
    let hooks = node.url("/v1/default/webhooks");

    // Refusals name the field.
    for (body, field, says) in [
        (json!({"url": "http://10.1.2.3/x"}), "url", "private"),
        (
            json!({"url": "http://[::ffff:192.168.0.1]/x"}),
            "url",
            "private",
        ),
        (
            json!({"url": "gopher://x.example/"}),
            "url",
            "http:// or https://",
        ),
        (
            json!({"url": rx.url("ok"), "filter": {"categories": ["nope"]}}),
            "filter.categories[0]",
            "must be one of",
        ),
        (
            json!({"url": rx.url("ok"), "headers": {"webhook-signature": "x"}}),
            "headers.webhook-signature",
            "set by tidemark",
        ),
        (
            json!({"url": rx.url("ok"), "max_events": 5000}),
            "max_events",
            "1 to 1000",
        ),
        (
            json!({"url": rx.url("ok"), "secret": "whsec_short"}),
            "secret",
            "",
        ),
    ] {
        let (s, b) = call("POST", &hooks, &admin, Some(body.clone())).await;
        assert_eq!(s, 400, "{body}: {b}");
        assert_eq!(b["error"], "invalid_webhook", "{b}");
        let p = &b["problems"][0];
        assert_eq!(p["field"], field, "{b}");
        assert!(p["message"].as_str().unwrap().contains(says), "{b}");
    }
    let (s, _) = call("POST", &hooks, &ingest, Some(json!({"url": rx.url("ok")}))).await;
    assert_eq!(s, 403);

    let (ok, ok_secret) = create(&hooks, &admin, json!({"url": rx.url("ok"), "filter": {"events": ["order-*"], "categories": ["custom"]}, "headers": {"X-Team": "data"}})).await;
    let (_, blackhole_secret) = create(
        &hooks,
        &admin,
        json!({"url": rx.url("blackhole"), "max_in_flight": 2}),
    )
    .await;
    let _ = blackhole_secret;
    let (flaky, flaky_secret) = create(
        &hooks,
        &admin,
        json!({"url": rx.url("flaky"), "filter": {"events": ["order-placed"]}, "method": "PUT"}),
    )
    .await;
    let (redirect, _) = create(
        &hooks,
        &admin,
        json!({"url": rx.url("redirect"), "filter": {"events": ["order-placed"]}}),
    )
    .await;
    let (gone, _) = create(
        &hooks,
        &admin,
        json!({"url": rx.url("gone"), "filter": {"events": ["order-placed"]}}),
    )
    .await;
    let (_, busy_secret) = create(
        &hooks,
        &admin,
        json!({"url": rx.url("busy"), "filter": {"events": ["order-placed"]}}),
    )
    .await;
    let (_, batch_secret) = create(&hooks, &admin, json!({"url": rx.url("batch"), "filter": {"events": ["order-*"]}, "max_events": 10, "max_wait_ms": 300, "include_profile": true})).await;
    let (_, system_secret) = create(
        &hooks,
        &admin,
        json!({"url": rx.url("system"), "filter": {"categories": ["system"]}}),
    )
    .await;

    // A profile with a tag, applied before the events arrive.
    let (s, b) = call(
        "PUT",
        &node.url("/v1/default/users/u1"),
        &admin,
        Some(json!({"tags": {"add": ["vip"]}})),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    let (s, b) = call("POST", &node.url("/v1/default/segments"), &admin, Some(json!({"id": "placed", "name": "Placed an order", "match": "all", "conditions": [{"event": "order-placed", "op": "did"}]}))).await;
    assert_eq!(s, 201, "{b}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, b) = call("GET", &node.url("/v1/default/users/u1"), &admin, None).await;
        if b["tags"] == json!(["vip"]) {
            break;
        }
        assert!(Instant::now() < deadline, "profile write not applied: {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let sent = Instant::now();
    for batch in [
        events(20, "order-placed", "p"),
        events(5, "order-paid", "q"),
        events(5, "app-opened", "a"),
    ] {
        let (s, b) = post_json(
            &node.events_url("default"),
            Some(&ingest),
            &batch.to_string(),
        )
        .await;
        assert_eq!(s, 202, "{b}");
    }
    let placed: BTreeSet<String> = (0..20).map(|i| format!("p-{i}")).collect();
    let orders: BTreeSet<String> = placed
        .iter()
        .cloned()
        .chain((0..5).map(|i| format!("q-{i}")))
        .collect();

    // The endpoint that never answers does not hold up the others.
    assert!(
        rx.wait("ok", 10, |r| r.len() >= 25).await,
        "ok got {}",
        rx.at("ok").len()
    );
    let took = sent.elapsed();
    assert!(took < Duration::from_secs(8), "ok endpoint waited {took:?}");
    let ok_got = rx.at("ok");
    assert_eq!(
        ok_got
            .iter()
            .flat_map(Receipt::event_ids)
            .collect::<BTreeSet<_>>(),
        orders
    );
    assert_eq!(
        ok_got.len(),
        25,
        "one event per message, app-opened filtered out"
    );
    verify_all(&ok_got, &ok_secret);
    for r in &ok_got {
        assert_eq!(r.headers["x-team"], "data");
        let body = r.json();
        assert_eq!(body["type"], "events");
        assert_eq!(body["environment"], "default");
        assert_eq!(body["subscription_id"], ok.as_str());
        let e = &body["events"][0];
        assert_eq!(e["category"], "custom");
        assert_eq!(e["properties"]["note"], "Zoë");
        assert!(e["received_at"].as_str().unwrap().ends_with('Z'));
    }
    // The blackhole is being tried (its requests hang until the client's 3 s timeout).
    assert!(
        rx.wait("blackhole", 10, |r| !r.is_empty()).await,
        "the blackhole was never tried"
    );

    // flaky: two 500s then 200, same webhook-id on all three attempts.
    assert!(
        rx.wait("flaky", 15, |r| r.len() >= 60).await,
        "flaky got {}",
        rx.at("flaky").len()
    );
    let flaky_got = rx.at("flaky");
    verify_all(&flaky_got, &flaky_secret);
    let mut by_id: BTreeMap<String, Vec<&Receipt>> = BTreeMap::new();
    for r in &flaky_got {
        by_id.entry(r.id.clone()).or_default().push(r);
    }
    assert_eq!(by_id.len(), 20);
    for (id, rs) in &by_id {
        assert_eq!(rs.len(), 3, "{id}");
        assert!(
            rs.iter().all(|r| r.body == rs[0].body),
            "same body on every attempt"
        );
        assert!(
            rs[1].at - rs[0].at >= Duration::from_millis(900),
            "retry waited the schedule"
        );
    }

    // busy: 429 + Retry-After 1, then 200.
    assert!(rx.wait("busy", 15, |r| r.len() >= 40).await);
    verify_all(&rx.at("busy"), &busy_secret);

    // batching: at most 10 per message, every order event once, profile attached.
    assert!(
        rx.wait("batch", 15, |r| r
            .iter()
            .map(|x| x.event_ids().len())
            .sum::<usize>()
            >= 25)
            .await
    );
    let batch_got = rx.at("batch");
    verify_all(&batch_got, &batch_secret);
    assert!(
        batch_got.len() < 25 && batch_got.iter().all(|r| r.event_ids().len() <= 10),
        "{}",
        batch_got.len()
    );
    assert_eq!(
        rx.events_at("batch").into_iter().collect::<BTreeSet<_>>(),
        orders
    );
    let u1_events: Vec<Value> = batch_got
        .iter()
        .flat_map(|r| r.json()["events"].as_array().unwrap().clone())
        .filter(|e| e["user_id"] == "u1")
        .collect();
    assert!(!u1_events.is_empty());
    for e in &u1_events {
        assert_eq!(e["profile"]["tags"], json!(["vip"]), "{e}");
    }

    // segment events arrive as `system`.
    assert!(
        rx.wait("system", 30, |r| r.len() >= 5).await,
        "system got {}",
        rx.at("system").len()
    );
    let sys = rx.at("system");
    verify_all(&sys, &system_secret);
    for r in &sys {
        let e = &r.json()["events"][0];
        assert_eq!(
            (e["category"].as_str(), e["event_name"].as_str()),
            (Some("system"), Some("segment-entered"))
        );
        assert_eq!(e["properties"]["segment_id"], "placed");
    }
    assert_eq!(sys.len(), 5, "one entered event per user");

    // gone: 410 paused the subscription after its first attempt.
    let gone_url = format!("{hooks}/{gone}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, b) = call("GET", &gone_url, &admin, None).await;
        if b["enabled"] == json!(false) {
            assert!(b["paused_reason"].as_str().unwrap().contains("410"), "{b}");
            break;
        }
        assert!(Instant::now() < deadline, "not paused: {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gone_attempts = rx.at("gone").len();
    assert!((1..=8).contains(&gone_attempts), "{gone_attempts}");

    // redirect: 3 attempts (the schedule's length), then failed; the log says so.
    assert!(rx.wait("redirect", 15, |r| r.len() >= 60).await);
    let log_url = format!("{hooks}/{redirect}/deliveries?status=failed&limit=1000");
    let deadline = Instant::now() + Duration::from_secs(10);
    let failed = loop {
        let (s, b) = call("GET", &log_url, &admin, None).await;
        assert_eq!(s, 200, "{b}");
        let rows = b["deliveries"].as_array().unwrap().clone();
        if rows.len() >= 20 || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(failed.len(), 20);
    for row in &failed {
        assert_eq!(
            (row["attempt"].as_i64(), row["http_status"].as_i64()),
            (Some(3), Some(302)),
            "{row}"
        );
        assert!(
            row["error"]
                .as_str()
                .unwrap()
                .contains("redirect to http://127.0.0.1:9/elsewhere not followed"),
            "{row}"
        );
        assert_eq!(row["event_ids"].as_array().unwrap().len(), 1);
    }
    let failed_ids: BTreeSet<String> = failed
        .iter()
        .map(|r| r["message_id"].as_str().unwrap().to_string())
        .collect();
    // recover re-sends them with their ids.
    let before = rx.at("redirect").len();
    let (s, b) = call(
        "POST",
        &format!("{hooks}/{redirect}/recover"),
        &admin,
        Some(json!({"since": "1h"})),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    assert!(rx.wait("redirect", 15, |r| r.len() >= before + 60).await);
    let again: BTreeSet<String> = rx.at("redirect")[before..]
        .iter()
        .map(|r| r.id.clone())
        .collect();
    assert_eq!(again, failed_ids);

    // The flaky subscription's log: retrying, retrying, delivered for each message.
    let (_, b) = call(
        "GET",
        &format!("{hooks}/{flaky}/deliveries?limit=1000"),
        &admin,
        None,
    )
    .await;
    let rows = b["deliveries"].as_array().unwrap();
    let mut per: HashMap<&str, Vec<(i64, &str, i64)>> = HashMap::new();
    for r in rows {
        per.entry(r["message_id"].as_str().unwrap())
            .or_default()
            .push((
                r["attempt"].as_i64().unwrap(),
                r["status"].as_str().unwrap(),
                r["http_status"].as_i64().unwrap(),
            ));
    }
    assert_eq!(per.len(), 20, "{b}");
    for (_, mut attempts) in per {
        attempts.sort();
        assert_eq!(
            attempts,
            [
                (1, "retrying", 500),
                (2, "retrying", 500),
                (3, "delivered", 204)
            ]
        );
    }
    let (s, b) = call(
        "GET",
        &format!("{hooks}/{flaky}/deliveries?limit=0"),
        &admin,
        None,
    )
    .await;
    assert_eq!(
        (s, b["message"].as_str().unwrap_or_default()),
        (400, "limit: must be an integer from 1 to 1000")
    );

    // The deliveries table is plain SQL too.
    let rows = ts.sql(&format!("select count(*) as n from deliveries where subscription_id = '{ok}' and status = 'delivered'"));
    assert_eq!(rows[0]["n"], 25);

    // test, update, list, delete over the API.
    let one = format!("{hooks}/{ok}");
    let n = rx.at("ok").len();
    let (s, b) = call("POST", &format!("{one}/test"), &admin, None).await;
    assert_eq!(
        (s, &b["delivered"], &b["http_status"]),
        (200, &json!(true), &json!(204)),
        "{b}"
    );
    assert!(rx.wait("ok", 5, |r| r.len() > n).await);
    let test_msg = rx.at("ok")[n].clone();
    verify_all(std::slice::from_ref(&test_msg), &ok_secret);
    assert_eq!(test_msg.json()["type"], "tidemark.test");
    assert_eq!(test_msg.id, b["message_id"].as_str().unwrap());
    let (s, b) = call(
        "PATCH",
        &one,
        &admin,
        Some(json!({"max_events": 5, "description": "orders"})),
    )
    .await;
    assert_eq!(
        (s, &b["max_events"], &b["description"]),
        (200, &json!(5), &json!("orders")),
        "{b}"
    );
    assert_eq!(
        b["filter"]["events"],
        json!(["order-*"]),
        "untouched settings stay"
    );
    let (s, b) = call(
        "PATCH",
        &one,
        &admin,
        Some(json!({"secret": SECRET_EXAMPLE})),
    )
    .await;
    assert_eq!(
        (s, b["problems"][0]["field"].as_str()),
        (400, Some("secret")),
        "{b}"
    );
    let (s, b) = call("GET", &hooks, &admin, None).await;
    assert_eq!((s, b["webhooks"].as_array().unwrap().len()), (200, 8));
    assert!(
        !b.to_string().contains("whsec_"),
        "secrets are never listed"
    );
    let (s, _) = call("DELETE", &one, &admin, None).await;
    assert_eq!(s, 204);
    let (s, b) = call("GET", &one, &admin, None).await;
    assert_eq!(s, 404, "{b}");
    let (s, _) = call("GET", &format!("{hooks}/wh_nope/deliveries"), &admin, None).await;
    assert_eq!(s, 404);
    drop(node);
}

const SECRET_EXAMPLE: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The retry schedule under a paused clock: the worker runs in this process with a
/// manual clock; an endpoint that always fails is tried at exactly 0 s, 5 s, 5 min,
/// 30 min, 2 h, 5 h, 10 h, 10 h (jitter off), its attempts are logged, and it is paused
/// once it has failed for longer than `pause_after`; a 429 waits its Retry-After.
#[tokio::test(flavor = "multi_thread")]
async fn retries_follow_the_schedule_on_a_paused_clock() {
    use tidemark::config::Config;
    use tidemark::storage::Store;
    use tidemark::webhooks::subscription::Subscriptions;
    use tidemark::webhooks::{self, worker::Worker};
    use tidemark_sinks::clock::ManualClock;

    let rx = Receiver::start(120).await;
    let ts = TestStore::new(Backend::Local);
    let node = ts.serve(
        &["--ack", "commit"],
        &[("TIDEMARK_WEBHOOKS__ENABLED", "false")],
    );
    let mut config = Config {
        data: ts.data.clone(),
        ..Default::default()
    };
    config.webhooks.allow_networks = vec!["127.0.0.0/8".into()];
    config.webhooks.jitter = 0.0;
    config.webhooks.pause_after = Duration::from_secs(20 * 3600);
    config.webhooks.poll_interval = Duration::from_millis(50);
    config.webhooks.log_interval = Duration::from_millis(50);
    let store = Store::open(&config.data, &config.storage.options).unwrap();
    let key = webhooks::master_key(&config, &store).unwrap();
    let subs = Subscriptions::new(store.clone());
    let mut secrets = HashMap::new();
    let mut ids = HashMap::new();
    for path in ["down", "busy"] {
        let (sub, secret) = subs
            .create("default", &json!({"url": rx.url(path)}), &key, -1, &|_| {
                Ok(())
            })
            .await
            .unwrap();
        secrets.insert(path, secret);
        ids.insert(path, sub.id);
    }
    let (s, _) = post_json(
        &node.events_url("default"),
        Some(node.ingest_key()),
        &events(1, "signup", "s").to_string(),
    )
    .await;
    assert_eq!(s, 202);

    let t0 = chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp(), 0).unwrap();
    let clock = ManualClock::new(t0);
    let worker = Worker::new(
        store.clone(),
        config.webhooks.clone(),
        key,
        webhooks::client(&config.webhooks).unwrap(),
        clock.clone(),
    )
    .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(worker.run(stop_rx));

    let schedule: [i64; 8] = [0, 5, 300, 1800, 7200, 18000, 36000, 36000];
    let mut at = t0;
    for (n, delay) in schedule.iter().enumerate() {
        at += chrono::Duration::seconds(*delay);
        clock.set(at);
        assert!(
            rx.wait("down", 20, |r| r.len() > n).await,
            "attempt {} never came",
            n + 1
        );
        if n == 1 {
            // busy answered 429 + Retry-After: 120 at t0; nothing before t0 + 120 s.
            assert_eq!(rx.at("busy").len(), 1);
            clock.set(t0 + chrono::Duration::seconds(120));
            assert!(rx.wait("busy", 20, |r| r.len() == 2).await);
            let busy = rx.at("busy");
            assert_eq!(
                (busy[0].timestamp, busy[1].timestamp),
                (t0.timestamp(), t0.timestamp() + 120)
            );
            assert_eq!(busy[0].id, busy[1].id);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let down = rx.at("down");
    assert_eq!(down.len(), 8, "no attempt after the last of the schedule");
    let mut expected = t0.timestamp();
    for (r, delay) in down.iter().zip(schedule) {
        expected += delay;
        assert_eq!(r.timestamp, expected);
        assert_eq!(r.id, down[0].id, "one webhook-id on every attempt");
        // Signed afresh with the attempt's own timestamp.
        let want = standardwebhooks::Webhook::new(&secrets["down"].expose())
            .unwrap()
            .sign(&r.id, r.timestamp, &r.body)
            .unwrap();
        assert_eq!(r.headers["webhook-signature"].to_str().unwrap(), want);
    }

    // The log: 7 retrying rows with their next attempt, then failed.
    let deadline = Instant::now() + Duration::from_secs(10);
    let rows = loop {
        let rows = webhooks::log::recent(&store, "default", &ids["down"], None, 100)
            .await
            .unwrap();
        if rows.len() == 8 || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut rows = rows;
    rows.reverse();
    let mut expected = t0;
    for (i, row) in rows.iter().enumerate() {
        expected += chrono::Duration::seconds(schedule[i]);
        assert_eq!(row["attempt"], i as i64 + 1);
        assert_eq!(row["http_status"], 500);
        assert_eq!(row["error"], "HTTP 500: down");
        let logged = chrono::DateTime::parse_from_rfc3339(row["at"].as_str().unwrap()).unwrap();
        assert_eq!(logged, expected, "{row}");
        if i < 7 {
            assert_eq!(row["status"], "retrying");
            let next =
                chrono::DateTime::parse_from_rfc3339(row["next_attempt_at"].as_str().unwrap())
                    .unwrap();
            assert_eq!(next, expected + chrono::Duration::seconds(schedule[i + 1]));
        } else {
            assert_eq!(row["status"], "failed");
            assert!(row["next_attempt_at"].is_null());
        }
    }
    // Failing since t0 for 27.6 h > pause_after (20 h): paused with the reason.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sub = subs.get("default", &ids["down"]).await.unwrap();
        if sub.paused {
            assert!(
                sub.paused_reason
                    .unwrap()
                    .starts_with("failing continuously since")
            );
            break;
        }
        assert!(Instant::now() < deadline, "not paused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!subs.get("default", &ids["busy"]).await.unwrap().paused);
    stop_tx.send(true).unwrap();
    running.await.unwrap().unwrap();
    drop(node);
}

pub fn stdout_line<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?} in {out}"))
        .trim()
}

/// A `tidemark sinks run` process, killed when dropped (also when a test fails).
pub struct SinksRun(pub std::process::Child);

impl Drop for SinksRun {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn sinks_run(ts: &TestStore) -> SinksRun {
    SinksRun(
        ts.command()
            .args(["sinks", "run", "--data", &ts.data])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// `tidemark sinks run` killed with SIGKILL mid-delivery: after a restart every event is
/// delivered, and every duplicate carries the webhook-id of its first delivery. Then the
/// CLI: rotate-secret (both secrets verify), pause (nothing sent, nothing dropped),
/// resume, deliveries, and its refusals.
#[tokio::test(flavor = "multi_thread")]
async fn sinks_run_survives_sigkill_and_the_cli_manages_subscriptions() {
    let rx = Receiver::start(1).await;
    let ts = TestStore::new(Backend::Local);
    write_config(
        &ts,
        "allow_networks = [\"127.0.0.0/8\"]\npoll_interval = \"100ms\"\nlog_interval = \"300ms\"",
    );
    let node = ts.serve(
        &["--ack", "commit"],
        &[("TIDEMARK_WEBHOOKS__ENABLED", "false")],
    );

    let out = ts.cli(&[
        "webhooks",
        "add",
        "--env",
        "default",
        "--url",
        &rx.url("slow"),
        "--max-events",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("max_events: must be an integer from 1 to 1000"),
        "{err}"
    );
    let out = ts.cli(&[
        "webhooks",
        "add",
        "--env",
        "default",
        "--url",
        "http://192.168.1.10/hook",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("url: destination refused: 192.168.1.10 is a private address")
    );
    let out = ts.cli(&[
        "webhooks",
        "add",
        "--env",
        "default",
        "--url",
        &rx.url("slow"),
        "--max-in-flight",
        "2",
        "--event",
        "order-*",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let id = stdout_line(&text, "added webhook ").to_string();
    let secret = stdout_line(&text, "signing secret (shown only now): ").to_string();
    // The secret is stored encrypted: it appears nowhere under the data directory.
    let listed = ts.cli(&["webhooks", "list", "--env", "default", "--json"]);
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed[0]["id"], id.as_str());
    assert!(!listed.to_string().contains("whsec_"));

    let all: BTreeSet<String> = (0..200).map(|i| format!("o-{i}")).collect();
    let (s, _) = post_json(
        &node.events_url("default"),
        Some(node.ingest_key()),
        &events(200, "order-placed", "o").to_string(),
    )
    .await;
    assert_eq!(s, 202);

    let mut worker = sinks_run(&ts);
    assert!(
        rx.wait("slow", 60, |r| r.len() >= 40).await,
        "deliveries did not start"
    );
    worker.0.kill().unwrap(); // SIGKILL
    worker.0.wait().unwrap();
    let before_restart = rx.at("slow").len();
    assert!(
        before_restart < 200,
        "killed mid-delivery ({before_restart})"
    );
    let mut worker = sinks_run(&ts);
    assert!(
        rx.wait("slow", 120, |r| r
            .iter()
            .flat_map(Receipt::event_ids)
            .collect::<BTreeSet<_>>()
            == all)
            .await,
        "not every event arrived after the restart"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = rx.at("slow");
    verify_all(&got, &secret);
    let mut ids_of: HashMap<String, BTreeSet<String>> = HashMap::new();
    for r in &got {
        for e in r.event_ids() {
            ids_of.entry(e).or_default().insert(r.id.clone());
        }
    }
    assert_eq!(ids_of.len(), 200);
    for (event, ids) in &ids_of {
        assert_eq!(
            ids.len(),
            1,
            "{event} arrived under several webhook-ids: {ids:?}"
        );
    }
    eprintln!(
        "crash test: {} receipts for 200 events ({} before the kill)",
        got.len(),
        before_restart
    );

    // rotate-secret: the next messages carry both signatures.
    let out = ts.cli(&[
        "webhooks",
        "rotate-secret",
        &id,
        "--env",
        "default",
        "--grace",
        "1h",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    let new_secret = stdout_line(&text, "new signing secret (shown only now): ").to_string();
    // The worker picks the change up on its next pass: probe until a message shows it.
    let mut probe = 0;
    let rotated = loop {
        let n = rx.at("slow").len();
        let (s, _) = post_json(
            &node.events_url("default"),
            Some(node.ingest_key()),
            &events(1, "order-paid", &format!("r{probe}")).to_string(),
        )
        .await;
        assert_eq!(s, 202);
        assert!(rx.wait("slow", 30, |r| r.len() > n).await);
        let got = rx.at("slow")[n].clone();
        let signatures = got.headers["webhook-signature"]
            .to_str()
            .unwrap()
            .split(' ')
            .count();
        if signatures == 2 {
            break got;
        }
        probe += 1;
        assert!(probe < 50, "the rotation never reached the worker");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    verify_all(std::slice::from_ref(&rotated), &secret);
    verify_all(std::slice::from_ref(&rotated), &new_secret);

    // pause: nothing is sent, nothing is dropped; resume delivers the backlog.
    let out = ts.cli(&["webhooks", "pause", &id, "--env", "default"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("paused (paused by a user)"));
    // The worker polls every 100 ms; give a loaded CI machine ample time to see the pause.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let n = rx.at("slow").len();
    let (s, _) = post_json(
        &node.events_url("default"),
        Some(node.ingest_key()),
        &events(4, "order-paid", "w").to_string(),
    )
    .await;
    assert_eq!(s, 202);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        rx.at("slow").len(),
        n,
        "a paused subscription sent something"
    );
    let out = ts.cli(&["webhooks", "resume", &id, "--env", "default"]);
    assert!(out.status.success());
    assert!(rx.wait("slow", 30, |r| r.len() >= n + 4).await);
    let resumed: BTreeSet<String> = rx.at("slow")[n..]
        .iter()
        .flat_map(Receipt::event_ids)
        .collect();
    assert_eq!(resumed, (0..4).map(|i| format!("w-{i}")).collect());

    // deliveries from the CLI; unknown ids and bad flags are named.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let out = ts.cli(&[
        "webhooks",
        "deliveries",
        &id,
        "--env",
        "default",
        "--json",
        "--limit",
        "1000",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let delivered: BTreeSet<String> = rows
        .iter()
        .filter(|r| r["status"] == "delivered")
        .flat_map(|r| {
            r["event_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e.as_str().unwrap().to_string())
        })
        .collect();
    assert!(
        delivered.is_superset(&all),
        "the log has every delivered event"
    );
    let out = ts.cli(&["webhooks", "deliveries", "wh_nope", "--env", "default"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no webhook 'wh_nope' in environment 'default'")
    );
    let out = ts.cli(&[
        "webhooks",
        "recover",
        &id,
        "--env",
        "default",
        "--since",
        "yesterday-ish",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--since: \"yesterday-ish\" is neither an RFC 3339 time nor a duration")
    );

    // SIGTERM stops the worker cleanly.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(worker.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(worker.0.wait().unwrap().success());
    let out = ts.cli(&["webhooks", "delete", &id, "--env", "default"]);
    assert!(out.status.success());
    drop(node);
}
