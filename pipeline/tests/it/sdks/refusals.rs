//! What the SDK endpoints refuse: bad input message by message, and backpressure (503
//! with Retry-After).

use super::*;

/// What a client sending bad input gets, on each API.
pub(super) async fn bad_input(node: &Node, key: &str, read: &str) {
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
