//! Existing analytics SDKs, unchanged (issue 21): the real Segment, RudderStack and
//! PostHog client libraries from PyPI (`tests/sdks/sdk_test.py`) send to `tidemark serve`,
//! through a proxy that loses tidemark's first answer so each SDK retries a stored batch;
//! then the stored events, profiles and aliases are checked field by field. Bad input of
//! each kind gets the answer the SDKs expect.

use std::io::Write as _;
use std::process::Command;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::harness::{Backend, Node, TestStore, call, client};

fn sdks(node: &Node, key: &str, phase: u32) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdks/sdk_test.py");
    let args = json!({"url": node.url(""), "key": key, "phase": phase});
    let out = Command::new("python3")
        .arg(script)
        .arg(args.to_string())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "the SDK driver failed (needs `pip install segment-analytics-python rudder-sdk-python posthog`):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the driver prints JSON")
}

fn basic(key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    )
}

/// POSTs `body` to `path` with `auth` (an Authorization value) and optional gzip.
async fn post(
    node: &Node,
    path: &str,
    auth: Option<&str>,
    body: &str,
    gzip: bool,
) -> (u16, Option<String>, Value) {
    let mut req = client()
        .post(node.url(path))
        .header("content-type", "application/json");
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let req = if gzip {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(body.as_bytes()).unwrap();
        req.header("content-encoding", "gzip")
            .body(enc.finish().unwrap())
    } else {
        req.body(body.to_string())
    };
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let text = resp.text().await.unwrap();
    (
        status,
        retry,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

const EVENTS: &str = "SELECT event_id, event_name, user_id, category, platform, \
    CAST(CAST(occurred_at AS BIGINT) AS VARCHAR) AS occurred_us, properties \
    FROM events WHERE environment = 'default' ORDER BY event_id";

fn row<'a>(rows: &'a [Value], id: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["event_id"] == id)
        .unwrap_or_else(|| panic!("no event {id} in {rows:?}"))
}

fn stats(ts: &TestStore, user: &str) -> Vec<(String, i64)> {
    ts.sql(&format!(
        "SELECT event_name, \"count\" FROM event_stats WHERE user_id = '{user}' ORDER BY event_name"
    ))
    .iter()
    .map(|r| {
        (
            r["event_name"].as_str().unwrap().to_string(),
            r["count"].as_i64().unwrap(),
        )
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_segment_rudderstack_and_posthog_sdks_work_unchanged() {
    let ts = TestStore::new(Backend::Local);
    for (name, t) in [("plan", "text"), ("age", "number")] {
        let out = ts.cli(&["fields", "add", name, "--type", t, "--env", "default"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let read = ts.create_key("default", "read");
    let key = ts.create_key("default", "ingest");
    let node = ts.serve(
        &["--ack", "commit"],
        &[("TIDEMARK_JOBS__DEBOUNCE", "100ms")],
    );

    let seen = sdks(&node, &key, 1);
    for sdk in ["segment", "rudder", "posthog"] {
        let uploads = seen[sdk]["uploads"].as_array().unwrap();
        assert_eq!(seen[sdk]["failed"], 1, "{sdk}: {uploads:?}");
        assert!(
            uploads.len() >= 2,
            "{sdk} retried the batch whose answer was lost: {uploads:?}"
        );
        assert!(
            uploads.iter().all(|u| u["status"] == 200),
            "{sdk}: {uploads:?}"
        );
        // The retry of the stored batch stored nothing new.
        let accepted: i64 = uploads
            .iter()
            .map(|u| u["answer"]["accepted"].as_i64().unwrap())
            .sum();
        let duplicates: i64 = uploads
            .iter()
            .map(|u| u["answer"]["duplicates"].as_i64().unwrap())
            .sum();
        assert!(
            duplicates >= uploads[0]["answer"]["accepted"].as_i64().unwrap(),
            "{sdk}: {uploads:?}"
        );
        assert_eq!(
            accepted,
            [7, 5, 4][["segment", "rudder", "posthog"]
                .iter()
                .position(|s| *s == sdk)
                .unwrap()],
            "{sdk}: {uploads:?}"
        );
    }
    assert_eq!(seen["segment"]["uploads"][0]["path"], "/v1/batch");
    assert_eq!(
        seen["rudder"]["uploads"][0]["gzip"], true,
        "RudderStack's SDK gzips"
    );
    assert_eq!(seen["posthog"]["uploads"][0]["path"], "/batch/");
    let identify_answer = seen["segment"]["uploads"][0]["answer"].clone();
    assert_eq!(identify_answer["success"], true);
    assert_eq!(
        identify_answer["ignored_traits"],
        json!([{"index": 1, "trait": "email", "reason": "not a declared custom field (POST /v1/{env}/fields declares one)"}])
    );
    assert_eq!(seen["posthog"]["uploads"][0]["answer"]["status"], 1);

    // Every message once, field by field.
    let rows = ts.sql(EVENTS);
    assert_eq!(rows.len(), 16, "{rows:?}");
    let t0 = "1767323045678000";
    let want = [
        (
            "seg-m1",
            "Order Completed",
            "seg-u1",
            "custom",
            Some("server"),
            Some(t0),
            Some(json!({"total": 3.5})),
        ),
        (
            "seg-m2",
            "identify",
            "seg-u1",
            "sdk",
            Some("server"),
            None,
            Some(json!({"plan": "pro", "email": "a@example.com"})),
        ),
        (
            "seg-m3",
            "Home",
            "seg-u1",
            "sdk",
            Some("server"),
            None,
            Some(json!({"path": "/"})),
        ),
        (
            "seg-m4",
            "Feed",
            "seg-anon",
            "sdk",
            Some("server"),
            None,
            Some(json!({})),
        ),
        (
            "seg-m5",
            "Viewed",
            "seg-anon",
            "custom",
            Some("server"),
            None,
            Some(json!({})),
        ),
        (
            "seg-m6",
            "group",
            "seg-u1",
            "sdk",
            Some("server"),
            None,
            Some(json!({"group_id": "acme", "traits": {"name": "Acme"}})),
        ),
        (
            "seg-m7",
            "alias",
            "seg-u1",
            "sdk",
            Some("server"),
            None,
            Some(json!({"previous_id": "seg-anon"})),
        ),
        (
            "rs-m1",
            "Song Played",
            "rs-u1",
            "custom",
            Some("server"),
            Some(t0),
            Some(json!({"song": "x"})),
        ),
        (
            "rs-m2",
            "identify",
            "rs-u1",
            "sdk",
            Some("server"),
            None,
            Some(json!({"plan": "free", "age": 30})),
        ),
        (
            "rs-m3",
            "Pricing",
            "rs-anon",
            "sdk",
            Some("server"),
            None,
            Some(json!({})),
        ),
        (
            "rs-m5",
            "alias",
            "rs-u1",
            "sdk",
            Some("server"),
            None,
            Some(json!({"previous_id": "rs-anon"})),
        ),
        (
            "0190c2a4-0000-7000-8000-000000000001",
            "signed up",
            "ph-u1",
            "custom",
            Some("server"),
            Some("1767323045678000"),
            None,
        ),
        (
            "0190c2a4-0000-7000-8000-000000000003",
            "$create_alias",
            "ph-u1",
            "sdk",
            Some("server"),
            None,
            None,
        ),
        (
            "0190c2a4-0000-7000-8000-000000000004",
            "viewed",
            "ph-anon",
            "custom",
            Some("server"),
            None,
            None,
        ),
    ];
    for (id, name, user, category, platform, occurred, props) in want {
        let r = row(&rows, id);
        assert_eq!(r["event_name"], name, "{r}");
        assert_eq!(r["user_id"], user, "{r}");
        assert_eq!(r["category"], category, "{r}");
        assert_eq!(r["platform"].as_str(), platform, "{r}");
        if let Some(t) = occurred {
            assert_eq!(r["occurred_us"], t, "{r}");
        }
        if let Some(p) = props {
            let got: Option<Value> = r["properties"]
                .as_str()
                .map(|t| serde_json::from_str(t).unwrap());
            assert_eq!(got, Some(p), "{r}");
        }
    }
    let ph: Value = serde_json::from_str(
        row(&rows, "0190c2a4-0000-7000-8000-000000000001")["properties"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(ph["source"], "ad");
    assert_eq!(ph["$lib"], "posthog-python");

    // Traits and $set of declared fields reached the profiles; the rest did not.
    for (user, field, value) in [
        ("seg-u1", "plan", json!("pro")),
        ("rs-u1", "plan", json!("free")),
        ("rs-u1", "age", json!(30)),
        ("ph-u1", "plan", json!("team")),
    ] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (s, p) = call(
                "GET",
                &node.url(&format!("/v1/default/users/{user}")),
                &read,
                None,
            )
            .await;
            if s == 200 && p["fields"][field]["value"] == value {
                assert!(
                    p["fields"].get("email").is_none() && p["fields"].get("color").is_none(),
                    "{p}"
                );
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{user}.{field}: {s} {p}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    let aliases = ts.sql("SELECT previous_id, user_id FROM aliases ORDER BY previous_id");
    assert_eq!(
        aliases,
        vec![
            json!({"previous_id": "ph-anon", "user_id": "ph-u1"}),
            json!({"previous_id": "rs-anon", "user_id": "rs-u1"}),
            json!({"previous_id": "seg-anon", "user_id": "seg-u1"}),
        ]
    );

    // After the alias, an event under the anonymous id counts for the user.
    let seen = sdks(&node, &key, 2);
    assert_eq!(seen["segment"]["failed"], 1);
    let late = ts.sql_until(
        "SELECT user_id, \"count\" FROM event_stats WHERE event_name = 'Late'",
        |r| !r.is_empty(),
    );
    assert_eq!(late, vec![json!({"user_id": "seg-u1", "count": 1})]);

    bad_input(&node, &key, &read).await;

    // Erasing a user removes their aliases too (either side of the link).
    let admin = ts.create_key("default", "admin");
    let (s, b) = call("DELETE", &node.url("/v1/default/users/rs-u1"), &admin, None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["erasure"]["rows_deleted"]["aliases"], 1, "{b}");
    node.terminate();

    // A rebuild applies every alias to every event: the anonymous ids' events count for
    // their users, and the anonymous ids have no profiles of their own.
    let out = ts.cli(&["jobs", "rebuild"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let users: Vec<String> = ts
        .sql("SELECT user_id FROM profiles WHERE user_id LIKE '%anon%'")
        .iter()
        .map(|r| r["user_id"].to_string())
        .collect();
    // rs-anon's link went with the erased rs-u1; its own events stay its own.
    assert_eq!(users, vec!["\"rs-anon\"".to_string()]);
    let s = |v: &[(&str, i64)]| {
        v.iter()
            .map(|(n, c)| (n.to_string(), *c))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        stats(&ts, "seg-u1"),
        s(&[
            ("Feed", 1),
            ("Home", 1),
            ("Late", 1),
            ("Order Completed", 1),
            ("Viewed", 1),
            ("alias", 1),
            ("group", 1),
            ("identify", 1)
        ])
    );
    assert_eq!(stats(&ts, "rs-u1"), vec![]);
    assert_eq!(stats(&ts, "rs-anon"), s(&[("Pricing", 1)]));
    assert_eq!(
        stats(&ts, "ph-u1"),
        s(&[
            ("$create_alias", 1),
            ("$set", 1),
            ("signed up", 1),
            ("viewed", 1)
        ])
    );
}

/// What a client sending bad input gets, on each API.
async fn bad_input(node: &Node, key: &str, read: &str) {
    let auth = basic(key);
    let good = json!({"type": "track", "event": "ok", "userId": "bad-1", "messageId": "bad-m1"});
    // One bad message: the good one is stored and the answer names the other's problem.
    let body =
        json!({"batch": [good, {"type": "track", "userId": "bad-1", "messageId": "bad-m2"}]})
            .to_string();
    let (s, _, b) = post(node, "/v1/batch", Some(&auth), &body, false).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (b["accepted"].as_i64(), b["refused"].as_i64()),
        (Some(1), Some(1)),
        "{b}"
    );
    assert_eq!(
        b["problems"],
        json!([{"index": 1, "field": "event", "message": "is required for a track"}])
    );
    // Every message bad: 400 with the problems, in the shape the SDKs read.
    let body = json!({"batch": [{"type": "launch", "userId": "u"}]}).to_string();
    let (s, _, b) = post(node, "/v1/batch", Some(&auth), &body, true).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["code"], "invalid_events");
    assert!(b["message"].is_string() && b["detail"].is_string(), "{b}");
    assert_eq!(b["problems"][0]["field"], "type");
    // The single-message endpoints, a wrong type, a malformed body.
    let (s, _, b) = post(
        node,
        "/v1/identify",
        Some(&auth),
        &json!({"userId": "bad-2", "traits": {"plan": "x"}, "writeKey": key}).to_string(),
        false,
    )
    .await;
    assert_eq!((s, b["accepted"].as_i64()), (200, Some(1)), "{b}");
    let (s, _, b) = post(
        node,
        "/v1/alias",
        None,
        &json!({"previousId": "p", "writeKey": key}).to_string(),
        false,
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["problems"][0]["field"], "userId");
    let (s, _, b) = post(node, "/v1/batch", Some(&auth), "{\"batch\": [", false).await;
    assert_eq!(s, 400);
    assert!(
        b["message"].as_str().unwrap().contains("not valid JSON"),
        "{b}"
    );
    let (s, _, b) = post(node, "/v1/batch", Some(&auth), "[]", false).await;
    assert_eq!(s, 400);
    assert!(
        b["message"].as_str().unwrap().contains("'batch' array"),
        "{b}"
    );
    // Keys: none, unknown, a read key.
    let (s, _, b) = post(
        node,
        "/v1/batch",
        None,
        &json!({"batch": [good]}).to_string(),
        false,
    )
    .await;
    assert_eq!(s, 401, "{b}");
    assert!(
        b["message"].as_str().unwrap().contains("no write key"),
        "{b}"
    );
    let (s, _, _) = post(
        node,
        "/v1/batch",
        Some(&basic("tm_nope_nope")),
        &json!({"batch": [good]}).to_string(),
        false,
    )
    .await;
    assert_eq!(s, 401);
    let (s, _, b) = post(
        node,
        "/batch/",
        None,
        &json!({"api_key": read, "batch": [{"event": "e", "distinct_id": "u"}]}).to_string(),
        false,
    )
    .await;
    assert_eq!(s, 403, "{b}");
    // Limits: a message over 32 KB is refused alone; a request over 500 KB is 413.
    let big = json!({"type": "track", "event": "big", "userId": "bad-3", "properties": {"s": "x".repeat(33 * 1024)}});
    let (s, _, b) = post(
        node,
        "/v1/batch",
        Some(&auth),
        &json!({"batch": [good, big]}).to_string(),
        false,
    )
    .await;
    assert_eq!((s, b["refused"].as_i64()), (200, Some(1)), "{b}");
    assert!(
        b["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("limits.max_sdk_message_bytes"),
        "{b}"
    );
    let huge: Vec<Value> = (0..20).map(|i| json!({"type": "track", "event": "e", "userId": format!("h{i}"), "properties": {"s": "y".repeat(30 * 1024)}})).collect();
    let (s, _, b) = post(
        node,
        "/v1/batch",
        Some(&auth),
        &json!({"batch": huge}).to_string(),
        true,
    )
    .await;
    assert_eq!(s, 413, "{b}");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("limits.max_sdk_batch_bytes"),
        "{b}"
    );
    // PostHog: a single event with the key in its properties, gzip without the header.
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(json!({"event": "$pageview", "distinct_id": "bad-4", "properties": {"token": key, "$lib": "web"}}).to_string().as_bytes()).unwrap();
    let resp = client()
        .post(node.url("/e/?compression=gzip-js"))
        .body(enc.finish().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let b: Value = resp.json().await.unwrap();
    assert_eq!(
        (b["status"].as_i64(), b["accepted"].as_i64()),
        (Some(1), Some(1)),
        "{b}"
    );
    let (s, _, b) = post(
        node,
        "/capture/",
        None,
        &json!({"api_key": key, "event": "e"}).to_string(),
        false,
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["problems"][0]["field"], "distinct_id");
    assert_eq!(b["detail"], b["message"]);
}

/// Under backpressure the SDK endpoints answer 503 with Retry-After, and store nothing of
/// the refused request.
#[tokio::test(flavor = "multi_thread")]
async fn backpressure_answers_503_with_retry_after() {
    let ts = TestStore::new(Backend::Local);
    let node = ts.serve(
        &[],
        &[
            ("TIDEMARK_FLUSH_INTERVAL", "1h"),
            ("TIDEMARK_MAX_PENDING_BYTES", "1"),
        ],
    );
    let auth = basic(node.ingest_key());
    let msg = |id: &str| {
        json!({"batch": [{"type": "track", "event": "e", "userId": "u", "messageId": id}]})
            .to_string()
    };
    let (s, _, b) = post(&node, "/v1/batch", Some(&auth), &msg("bp1"), false).await;
    assert_eq!(s, 200, "{b}");
    let (s, retry, b) = post(&node, "/v1/batch", Some(&auth), &msg("bp2"), false).await;
    assert_eq!(s, 503, "{b}");
    assert_eq!(retry.as_deref(), Some("1"));
    assert_eq!(b["code"], "unavailable");
    let (s, retry, _) = post(
        &node,
        "/batch/",
        None,
        &json!({"api_key": node.ingest_key(), "batch": [{"event": "e", "distinct_id": "u"}]})
            .to_string(),
        false,
    )
    .await;
    assert_eq!((s, retry.as_deref()), (503, Some("1")));
    node.terminate();
    let rows = ts.sql("SELECT event_id FROM events");
    assert_eq!(rows, vec![json!({"event_id": "bp1"})]);
}
