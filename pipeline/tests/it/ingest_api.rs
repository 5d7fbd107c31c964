//! The ingest API over real HTTP: round trips, every validation and auth error, dedup
//! across restarts, SIGTERM flushing, ack = "commit", ops endpoints.

use std::io::Write;

use serde_json::{Value, json};

use crate::harness::{Backend, TestStore, client, post_json, post_raw};

async fn round_trip(backend: Backend) {
    let store = TestStore::new(backend);
    let node = store.serve(&[], &[]);
    let key = node.ingest_key().to_string();
    let url = node.events_url("default");

    // A JSON array with every field, and defaults.
    let body = json!([
        {"event_id": "e-1", "event_name": "card-opened", "user_id": "u-1",
         "occurred_at": "2024-05-01T12:00:00Z", "category": "sdk", "platform": "iOS",
         "properties": {"card": "c-9", "n": [1, 2]}},
        {"event_id": "e-2", "event_name": "app-opened", "user_id": "u-2",
         "occurred_at": 1714564800123i64},
    ])
    .to_string();
    let (status, resp) = post_json(&url, Some(&key), &body).await;
    assert_eq!(
        (status, resp.clone()),
        (202, json!({"accepted": 2, "duplicates": 0}))
    );

    // NDJSON, gzip-encoded.
    let ndjson = "{\"event_id\":\"e-3\",\"event_name\":\"card-dismissed\",\"user_id\":\"u-1\",\"category\":\"platform\"}\n";
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(ndjson.as_bytes()).unwrap();
    let resp = client()
        .post(&url)
        .bearer_auth(&key)
        .header("content-type", "application/x-ndjson")
        .header("content-encoding", "gzip")
        .body(gz.finish().unwrap())
        .send()
        .await
        .expect("request");
    assert_eq!(resp.status().as_u16(), 202);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"accepted": 1, "duplicates": 0})
    );

    let sql = "select event_id, event_name, user_id, category, platform, properties, \
               cast(occurred_at as varchar) as occurred_at, environment, \
               cast(received_date as varchar) as received_date from events order by event_id";
    let rows = store.sql_until(sql, |r| r.len() == 3);
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows[0]["event_name"], "card-opened");
    assert_eq!(rows[0]["user_id"], "u-1");
    assert_eq!(rows[0]["category"], "sdk");
    assert_eq!(rows[0]["platform"], "ios");
    assert_eq!(rows[0]["environment"], "default");
    let props: Value = serde_json::from_str(rows[0]["properties"].as_str().unwrap()).unwrap();
    assert_eq!(props, json!({"card": "c-9", "n": [1, 2]}));
    assert!(
        rows[0]["occurred_at"]
            .as_str()
            .unwrap()
            .starts_with("2024-05-01T12:00:00"),
        "{rows:?}"
    );
    assert!(
        rows[1]["occurred_at"]
            .as_str()
            .unwrap()
            .starts_with("2024-05-01T12:00:00.123"),
        "{rows:?}"
    );
    assert_eq!(rows[1]["category"], "custom");
    assert!(rows[1].get("platform").is_none_or(Value::is_null));
    assert_eq!(rows[2]["category"], "platform");
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert_eq!(rows[2]["received_date"], today.as_str());

    // A retry of the first batch stores nothing new.
    let (status, resp) = post_json(&url, Some(&key), &body).await;
    assert_eq!(
        (status, resp),
        (202, json!({"accepted": 0, "duplicates": 2}))
    );

    // Dedup survives a restart; SIGTERM exits 0.
    let status = node.terminate();
    assert!(status.success(), "{status}");
    let node = store.serve(&[], &[]);
    assert!(
        node.ingest_key.is_none(),
        "keys are printed only on an empty store"
    );
    let mixed = json!([
        {"event_id": "e-1", "event_name": "card-opened", "user_id": "u-1"},
        {"event_id": "e-4", "event_name": "card-opened", "user_id": "u-1"},
        {"event_id": "e-4", "event_name": "card-opened", "user_id": "u-1"},
    ])
    .to_string();
    let (status, resp) = post_json(&node.events_url("default"), Some(&key), &mixed).await;
    assert_eq!(
        (status, resp),
        (202, json!({"accepted": 1, "duplicates": 2}))
    );
    let rows = store.sql_until("select event_id from events order by event_id", |r| {
        r.len() >= 4
    });
    let ids: Vec<&str> = rows
        .iter()
        .map(|r| r["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["e-1", "e-2", "e-3", "e-4"]);
    assert!(node.terminate().success());
}

on_both_backends!(round_trip);

/// Every refusal: status, error code, and a message that names the problem.
#[tokio::test(flavor = "multi_thread")]
async fn refusals_name_the_problem_and_store_nothing() {
    let store = TestStore::new(Backend::Local);
    let node = store.serve(
        &[],
        &[
            ("TIDEMARK_LIMITS__MAX_BODY_BYTES", "4096"),
            ("TIDEMARK_LIMITS__MAX_EVENTS_PER_BATCH", "3"),
            ("TIDEMARK_LIMITS__MAX_PROPERTIES_DEPTH", "3"),
            ("TIDEMARK_LIMITS__MAX_STRING_LEN", "32"),
        ],
    );
    let ingest = node.ingest_key().to_string();
    let admin = node.admin_key.clone().unwrap();
    let read = store.create_key("default", "read");
    let other_env = store.create_key("staging", "ingest");
    let url = node.events_url("default");
    let ok = r#"[{"event_name":"a","user_id":"u"}]"#;

    // Authentication and authorization.
    let cases: Vec<(Option<&str>, &str, u16, &str, &str)> = vec![
        (
            None,
            ok,
            401,
            "unauthorized",
            "missing Authorization header",
        ),
        (
            Some("tm_000000000000_nope"),
            ok,
            401,
            "unauthorized",
            "unknown or revoked API key",
        ),
        (
            Some("garbage"),
            ok,
            401,
            "unauthorized",
            "unknown or revoked API key",
        ),
        (
            Some(&read),
            ok,
            403,
            "forbidden",
            "role 'read' cannot do this",
        ),
        (
            Some(&other_env),
            ok,
            403,
            "forbidden",
            "belongs to environment 'staging', not 'default'",
        ),
    ];
    for (key, body, status, code, msg) in cases {
        let (s, v) = post_json(&url, key, body).await;
        assert_eq!(s, status, "{key:?}: {v}");
        assert_eq!(v["error"], code, "{v}");
        assert!(v["message"].as_str().unwrap().contains(msg), "{v}");
    }

    // Validation: every problem with index and field.
    let body = r#"[{"event_name":"a","user_id":"u"},{"user_id":"u","category":"system"},
        {"event_name":"a","user_id":"u","occurred_at":"yesterday","extra":1}]"#;
    let (s, v) = post_json(&url, Some(&ingest), body).await;
    assert_eq!(s, 400, "{v}");
    assert_eq!(v["error"], "invalid_events");
    assert_eq!(
        v["problems"],
        json!([
            {"index": 1, "field": "event_name", "message": "is required"},
            {"index": 1, "field": "category", "message": "'system' is reserved for events tidemark generates itself"},
            {"index": 2, "field": "extra", "message": "unknown field; known fields are event_id, event_name, user_id, occurred_at, category, platform, properties"},
            {"index": 2, "field": "occurred_at", "message": v["problems"][3]["message"].clone()},
        ])
    );
    assert!(
        v["problems"][3]["message"]
            .as_str()
            .unwrap()
            .contains("RFC 3339")
    );

    let long = format!(r#"[{{"event_name":"{}","user_id":"u"}}]"#, "x".repeat(33));
    let deep = r#"[{"event_name":"a","user_id":"u","properties":{"a":{"b":{"c":{}}}}}]"#;
    let big = format!(
        r#"[{{"event_name":"a","user_id":"u","properties":{{"s":"{}"}}}}]"#,
        "x".repeat(5000)
    );
    let many = r#"[{"event_name":"a","user_id":"u"},{"event_name":"a","user_id":"u"},{"event_name":"a","user_id":"u"},{"event_name":"a","user_id":"u"}]"#;
    let cases: Vec<(String, u16, &str, &str)> = vec![
        (long, 400, "invalid_events", "problem"),
        (deep.into(), 400, "invalid_events", "problem"),
        (big, 413, "too_large", "larger than the limit of 4096 bytes"),
        (
            many.into(),
            413,
            "too_large",
            "batch has 4 events, more than the limit of 3",
        ),
        (
            "not json".into(),
            400,
            "bad_request",
            "body must be a JSON array",
        ),
        (
            "[{\"event_name\":".into(),
            400,
            "bad_request",
            "body is not valid JSON",
        ),
        ("[]".into(), 400, "bad_request", "batch contains no events"),
    ];
    for (body, status, code, msg) in cases {
        let (s, v) = post_json(&url, Some(&ingest), &body).await;
        assert_eq!(s, status, "{v}");
        assert_eq!(v["error"], code, "{v}");
        assert!(v["message"].as_str().unwrap().contains(msg), "{v}");
    }
    let (_, v) = post_json(&url, Some(&ingest), deep).await;
    assert!(
        v["problems"][0]["message"]
            .as_str()
            .unwrap()
            .contains("nested 4 levels deep"),
        "{v}"
    );

    // Unsupported media types and encodings.
    let resp = post_raw(&url, &ingest, ("content-type", "text/csv"), "a,b").await;
    assert_eq!(resp.status().as_u16(), 415);
    let resp = post_raw(&url, &ingest, ("content-encoding", "br"), ok).await;
    assert_eq!(resp.status().as_u16(), 415);
    let v: Value = resp.json().await.unwrap();
    let msg = v["message"].as_str().unwrap();
    assert!(msg.contains("Content-Encoding 'br'"), "{v}");
    // A gzip bomb: small on the wire, over the limit decoded.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    gz.write_all(&vec![b' '; 1 << 20]).unwrap();
    let gzip = ("content-encoding", "gzip");
    let resp = post_raw(&url, &ingest, gzip, gz.finish().unwrap()).await;
    assert_eq!(resp.status().as_u16(), 413);
    let resp = post_raw(&url, &ingest, gzip, "not gzip").await;
    assert_eq!(resp.status().as_u16(), 400);

    // Admin keys may ingest too; then exactly that one event is stored.
    let (s, v) = post_json(
        &url,
        Some(&admin),
        r#"[{"event_name":"only","user_id":"u"}]"#,
    )
    .await;
    assert_eq!((s, v), (202, json!({"accepted": 1, "duplicates": 0})));
    let metrics = node.metrics().await;
    assert!(
        metrics.contains("tidemark_requests_rejected_total{reason=\"unauthorized\"} 3"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tidemark_requests_rejected_total{reason=\"forbidden\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics.contains("tidemark_events_accepted_total{environment=\"default\"} 1"),
        "{metrics}"
    );
    assert!(node.terminate().success());
    let rows = store.sql("select event_name from events");
    assert_eq!(rows, vec![json!({"event_name": "only"})]);
}

/// SIGTERM commits what the WAL holds, even with a flush interval of an hour.
async fn sigterm_flushes_everything_acknowledged(backend: Backend) {
    let store = TestStore::new(backend);
    let node = store.serve(&[], &[("TIDEMARK_FLUSH_INTERVAL", "1h")]);
    let body = json!([{"event_name": "a", "user_id": "u1"}, {"event_name": "b", "user_id": "u2"}])
        .to_string();
    let (s, _) = post_json(&node.events_url("default"), Some(node.ingest_key()), &body).await;
    assert_eq!(s, 202);
    assert_eq!(
        store.sql("select count(*) as n from events"),
        vec![json!({"n": 0})]
    );
    assert!(node.terminate().success());
    assert_eq!(
        store.sql("select count(*) as n from events"),
        vec![json!({"n": 2})]
    );
    // The WAL is empty after a clean stop.
    let left: Vec<_> = std::fs::read_dir(&store.wal_dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().ends_with(".wal"))
        .collect();
    assert!(left.is_empty(), "{left:?}");
}

/// With ack = "commit" the events are in the table when the 202 arrives.
async fn ack_commit_means_committed(backend: Backend) {
    let store = TestStore::new(backend);
    let node = store.serve(&["--ack", "commit"], &[]);
    let body = json!([{"event_id": "c1", "event_name": "a", "user_id": "u1"}]).to_string();
    let (s, v) = post_json(&node.events_url("default"), Some(node.ingest_key()), &body).await;
    assert_eq!((s, v), (202, json!({"accepted": 1, "duplicates": 0})));
    assert_eq!(
        store.sql("select event_id from events"),
        vec![json!({"event_id": "c1"})]
    );
    let (s, v) = post_json(&node.events_url("default"), Some(node.ingest_key()), &body).await;
    assert_eq!((s, v), (202, json!({"accepted": 0, "duplicates": 1})));
    assert!(node.terminate().success());
}

#[tokio::test(flavor = "multi_thread")]
async fn ops_endpoints() {
    let store = TestStore::new(Backend::Local);
    let node = store.serve(&[], &[]);
    let c = client();
    let r = c.get(node.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let r = c.get(node.url("/readyz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"status": "ready"}));
    let body = json!([{"event_name": "a", "user_id": "u1"}]).to_string();
    post_json(&node.events_url("default"), Some(node.ingest_key()), &body).await;
    store.sql_until("select * from events", |r| r.len() == 1);
    let text = node.metrics().await;
    for want in [
        "tidemark_events_accepted_total{environment=\"default\"} 1",
        "tidemark_commits_total 1",
        "tidemark_wal_pending_bytes 0",
        "tidemark_flush_latency_seconds_count 1",
        "tidemark_ack_latency_seconds_count 1",
    ] {
        assert!(text.contains(want), "{want} missing from:\n{text}");
    }
    let r = c.get(node.url("/nope")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 404);
    assert_eq!(r.json::<Value>().await.unwrap()["error"], "not_found");
    let r = c.get(node.events_url("default")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 405);
    let v = r.json::<Value>().await.unwrap();
    assert_eq!(
        v["message"],
        "method GET is not allowed on /v1/default/events"
    );
    assert!(node.terminate().success());
}

/// Past `max_pending_bytes` of uncommitted data, ingest answers 503 with Retry-After and
/// stores nothing of the refused batch.
#[tokio::test(flavor = "multi_thread")]
async fn backpressure_when_commits_fall_behind() {
    let store = TestStore::new(Backend::Local);
    let node = store.serve(
        &[],
        &[
            ("TIDEMARK_FLUSH_INTERVAL", "1h"),
            ("TIDEMARK_MAX_PENDING_BYTES", "1"),
        ],
    );
    let url = node.events_url("default");
    let first = json!([{"event_id": "p1", "event_name": "a", "user_id": "u"}]).to_string();
    assert_eq!(
        post_json(&url, Some(node.ingest_key()), &first).await.0,
        202
    );
    let second = json!([{"event_id": "p2", "event_name": "a", "user_id": "u"}]).to_string();
    let resp = client()
        .post(&url)
        .bearer_auth(node.ingest_key())
        .header("content-type", "application/json")
        .body(second)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 503);
    assert_eq!(resp.headers()["retry-after"], "1");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"], "unavailable");
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("waiting to be committed"),
        "{v}"
    );
    assert!(node.terminate().success());
    assert_eq!(
        store.sql("select event_id from events"),
        vec![json!({"event_id": "p1"})]
    );
}

on_both_backends!(sigterm_flushes_everything_acknowledged);

on_both_backends!(ack_commit_means_committed);
