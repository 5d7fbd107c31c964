//! Freshness of segments: a definition written through the API is evaluated at once, not
//! at the next `segments.interval` (an hour here).

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Backend, TestStore, call, post_json};

/// Polls `url` until `done` holds, up to `within`; the answer and how long it took.
async fn until(
    url: &str,
    key: &str,
    within: Duration,
    done: impl Fn(&Value) -> bool,
) -> (Value, Duration) {
    let started = Instant::now();
    loop {
        let (s, b) = call("GET", url, key, None).await;
        if s == 200 && done(&b) {
            return (b, started.elapsed());
        }
        assert!(started.elapsed() < within, "not within {within:?}: {s} {b}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_new_or_changed_segment_is_evaluated_at_once() {
    let ts = TestStore::new(Backend::Local);
    let node = ts.serve(
        &["--ack", "commit"],
        &[
            ("TIDEMARK_JOBS__DEBOUNCE", "50ms"),
            ("TIDEMARK_SEGMENTS__INTERVAL", "1h"),
        ],
    );
    let admin = node.admin_key.clone().unwrap();
    let events = json!([
        {"event_id": "o1", "event_name": "card-opened", "user_id": "ann"},
        {"event_id": "o2", "event_name": "card-opened", "user_id": "ann"},
        {"event_id": "o3", "event_name": "card-opened", "user_id": "bob"},
        {"event_id": "o4", "event_name": "open", "user_id": "cy"}
    ]);
    let (s, _) = post_json(
        &node.events_url("default"),
        Some(node.ingest_key()),
        &events.to_string(),
    )
    .await;
    assert_eq!(s, 202);
    let ann = node.url("/v1/default/users/ann");
    until(&ann, &admin, Duration::from_secs(30), |p| {
        p["event_count"] == 2
    })
    .await;
    until(
        &node.url("/v1/default/users/cy"),
        &admin,
        Duration::from_secs(30),
        |p| p["event_count"] == 1,
    )
    .await;

    // A new segment over existing profiles: members and entered events within seconds.
    let def = json!({"id": "openers", "name": "Opened a card", "match": "all",
                     "conditions": [{"event": "card-opened", "op": "did", "within": "-1d"}]});
    let (s, b) = call("POST", &node.url("/v1/default/segments"), &admin, Some(def)).await;
    assert_eq!(s, 201, "{b}");
    let members = node.url("/v1/default/segments/openers/members");
    let (b, took) = until(&members, &admin, Duration::from_secs(10), |b| {
        b["members"].as_array().is_some_and(|m| m.len() == 2)
    })
    .await;
    let ids: Vec<&str> = b["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["ann", "bob"]);
    eprintln!("new segment: members after {took:?}");
    let entered =
        ts.sql("SELECT user_id FROM events WHERE event_name = 'segment-entered' ORDER BY user_id");
    assert_eq!(
        entered,
        vec![json!({"user_id": "ann"}), json!({"user_id": "bob"})]
    );

    // A changed definition: bob (one card) exits, at once too.
    let changed = json!({"name": "Opened cards", "match": "all", "conditions": [
        {"event": "card-opened", "op": "did", "count": {"op": "gte", "value": 2}}]});
    let (s, b) = call(
        "PUT",
        &node.url("/v1/default/segments/openers"),
        &admin,
        Some(changed),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let (_, took) = until(&members, &admin, Duration::from_secs(10), |b| {
        b["members"] == json!([{"user_id": "ann", "entered_at": b["members"][0]["entered_at"]}])
    })
    .await;
    eprintln!("changed segment: members after {took:?}");
    let exited = ts.sql("SELECT user_id FROM events WHERE event_name = 'segment-exited'");
    assert_eq!(exited, vec![json!({"user_id": "bob"})]);

    // Deleted: its members are dropped at once (without exit events: the segment is gone).
    let (s, _) = call(
        "DELETE",
        &node.url("/v1/default/segments/openers"),
        &admin,
        None,
    )
    .await;
    assert_eq!(s, 200);
    let started = Instant::now();
    loop {
        let rows = ts.sql("SELECT count(*) AS n FROM segment_members WHERE segment_id = 'openers'");
        if rows[0]["n"] == 0 {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "members kept: {rows:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let exited = ts.sql("SELECT count(*) AS n FROM events WHERE event_name = 'segment-exited'");
    assert_eq!(exited, vec![json!({"n": 1})]);
}
