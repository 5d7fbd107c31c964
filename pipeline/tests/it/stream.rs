//! `GET /v1/{env}/events/stream` with the SSE client Arroyo's SSE source uses
//! (`eventsource-client` 0.13, at Arroyo's version): commit order, filters, resumption with
//! `Last-Event-ID` (the header Arroyo sends after restoring a checkpoint), environment
//! isolation, the refusals, and a stalled consumer that holds back nobody else.

use std::time::{Duration, Instant};

use eventsource_client::{self as es, Client};
use futures::StreamExt;
use serde_json::{Value, json};

use crate::harness::{Backend, Node, TestStore, client, ingest};

/// One received message: its id and its event.
#[derive(Debug, Clone, PartialEq)]
struct Got {
    id: String,
    event: Value,
}

fn position(id: &str) -> (i64, u64) {
    let (v, n) = id.split_once('-').expect("V-N");
    (v.parse().unwrap(), n.parse().unwrap())
}

/// An Arroyo-style SSE client: bearer key header, optional Last-Event-ID.
fn sse(
    node: &Node,
    env: &str,
    query: &str,
    key: &str,
    last_id: Option<&str>,
) -> impl Client + use<> {
    let url = node.url(&format!("/v1/{env}/events/stream{query}"));
    let mut builder = es::ClientBuilder::for_url(&url)
        .unwrap()
        .header("Authorization", &format!("Bearer {key}"))
        .unwrap();
    if let Some(id) = last_id {
        builder = builder.last_event_id(id.to_string());
    }
    builder.build_http()
}

/// The first `n` messages of a stream (panics after `within`).
async fn take(client: &impl Client, n: usize, within: Duration) -> Vec<Got> {
    let mut stream = client.stream();
    let mut out = Vec::new();
    let deadline = Instant::now() + within;
    while out.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        let item = tokio::time::timeout(left, stream.next())
            .await
            .unwrap_or_else(|_| panic!("{} of {n} messages after {within:?}", out.len()))
            .expect("stream ended");
        match item {
            Ok(es::SSE::Event(e)) => {
                assert_eq!(e.event_type, "message");
                out.push(Got {
                    id: e.id.expect("every message has an id"),
                    event: serde_json::from_str(&e.data).expect("data is JSON"),
                });
            }
            Ok(es::SSE::Comment(_) | es::SSE::Connected(_)) => {}
            Err(e) => panic!("stream error: {e:?}"),
        }
    }
    out
}

/// `n` events named by turn `a`, `b`, `c`, users `u0`..`u4`, ids `{tag}-{i}`.
fn events(tag: &str, n: usize, pad: usize) -> Value {
    let names = ["a", "b", "c"];
    Value::Array(
        (0..n)
            .map(|i| {
                json!({
                    "event_id": format!("{tag}-{i}"),
                    "event_name": names[i % 3],
                    "category": if i % 2 == 0 { "custom" } else { "sdk" },
                    "user_id": format!("u{}", i % 5),
                    "properties": {"i": i, "pad": "x".repeat(pad)},
                })
            })
            .collect(),
    )
}

/// The newest version of `events` in a local store.
fn events_version(store: &TestStore) -> i64 {
    std::fs::read_dir(std::path::Path::new(&store.data).join("events/_delta_log"))
        .map(|dir| {
            dir.filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                name.strip_suffix(".json")?.parse::<i64>().ok()
            })
            .max()
            .unwrap_or(-1)
        })
        .unwrap_or(-1)
}

async fn get(node: &Node, path: &str, key: Option<&str>, last_id: Option<&str>) -> (u16, Value) {
    let mut req = client().get(node.url(path));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(id) = last_id {
        req = req.header("last-event-id", id);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let body = if status == 200 {
        Value::Null
    } else {
        resp.json().await.unwrap()
    };
    (status, body)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_event_stream_is_ordered_filtered_resumable_and_isolated() {
    let store = TestStore::new(Backend::Local);
    let node = store.serve(&["--ack", "commit"], &[]);
    let read = store.create_key("default", "read");
    let staging_ingest = store.create_key("staging", "ingest");
    let staging_read = store.create_key("staging", "read");
    let initial = events_version(&store);
    ingest(&node, "default", node.ingest_key(), events("old", 5, 0)).await;
    let before = events_version(&store);

    // A live stream (no position: from now on), opened before the new events.
    let live = sse(&node, "default", "", &read, None);
    let mut live_stream = Box::pin(take(&live, 150, Duration::from_secs(60)));
    // Let it connect before anything is committed.
    assert!(
        tokio::time::timeout(Duration::from_millis(700), &mut live_stream)
            .await
            .is_err()
    );
    for batch in 0..3 {
        ingest(
            &node,
            "default",
            node.ingest_key(),
            events(&format!("b{batch}"), 50, 0),
        )
        .await;
        ingest(
            &node,
            "staging",
            &staging_ingest,
            events(&format!("s{batch}"), 10, 0),
        )
        .await;
    }
    let got = live_stream.await;
    let ids: Vec<&str> = got
        .iter()
        .map(|g| g.event["event_id"].as_str().unwrap())
        .collect();
    let sent: Vec<String> = (0..3)
        .flat_map(|b| (0..50).map(move |i| format!("b{b}-{i}")))
        .collect();
    assert_eq!(
        ids, sent,
        "commit order is ingest order; no old or staging events"
    );
    let positions: Vec<(i64, u64)> = got.iter().map(|g| position(&g.id)).collect();
    assert!(positions.windows(2).all(|w| w[0] < w[1]), "{positions:?}");
    assert!(positions[0].0 > before);
    assert_eq!(got[0].event["user_id"], "u0");
    assert_eq!(got[1].event["properties"]["i"], 1);
    assert_eq!(got[1].event["category"], "sdk");

    // From a version: the old batch and everything after, the same ids as live.
    let all = take(
        &sse(&node, "default", &format!("?after={initial}"), &read, None),
        155,
        Duration::from_secs(30),
    )
    .await;
    let old: Vec<&str> = all[..5]
        .iter()
        .map(|g| g.event["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(old, ["old-0", "old-1", "old-2", "old-3", "old-4"]);
    assert_eq!(all[5..], got[..]);

    // Filters: every one given must match, a list is any of its values; ids unchanged.
    let query = format!("?after={before}&event_name=a,b&category=custom&user_id=u1&user_id=u2");
    let want: Vec<Got> = got
        .iter()
        .filter(|g| {
            ["a", "b"].contains(&g.event["event_name"].as_str().unwrap())
                && g.event["category"] == "custom"
                && ["u1", "u2"].contains(&g.event["user_id"].as_str().unwrap())
        })
        .cloned()
        .collect();
    assert!(want.len() >= 10, "{}", want.len());
    let filtered = take(
        &sse(&node, "default", &query, &read, None),
        want.len(),
        Duration::from_secs(30),
    )
    .await;
    assert_eq!(filtered, want);

    // Resumption: Last-Event-ID (as Arroyo sends it after a restore) gives exactly the
    // events after that id, also in the middle of a version; it wins over `after`.
    for cut in [0, 37, 49, 50, 120, 148] {
        let id = got[cut].id.clone();
        let rest = take(
            &sse(&node, "default", "?after=0", &read, Some(&id)),
            149 - cut,
            Duration::from_secs(30),
        )
        .await;
        assert_eq!(rest[..], got[cut + 1..], "resumed after {id}");
    }
    // Resumed and then live: the next commit arrives after the replayed ones.
    let last = got[149].id.clone();
    let resumed = sse(&node, "default", "", &read, Some(&last));
    let mut next = Box::pin(take(&resumed, 2, Duration::from_secs(30)));
    assert!(
        tokio::time::timeout(Duration::from_millis(500), &mut next)
            .await
            .is_err(),
        "nothing after the last id yet"
    );
    ingest(&node, "default", node.ingest_key(), events("late", 2, 0)).await;
    let late: Vec<Value> = next
        .await
        .into_iter()
        .map(|g| g.event["event_id"].clone())
        .collect();
    assert_eq!(late, [json!("late-0"), json!("late-1")]);

    // The staging stream has staging's events only.
    let staging = take(
        &sse(&node, "staging", "?after=0", &staging_read, None),
        30,
        Duration::from_secs(30),
    )
    .await;
    assert!(
        staging
            .iter()
            .all(|g| g.event["event_id"].as_str().unwrap().starts_with('s'))
    );

    // Refusals: another environment's key, an ingest key, no key, bad positions and
    // parameters, each naming what is wrong.
    let path = "/v1/default/events/stream";
    // (key, url, Last-Event-ID, status, part of the message)
    type Case<'a> = (Option<&'a str>, String, Option<&'a str>, u16, &'a str);
    let cases: Vec<Case> = vec![
        (Some(&staging_read), path.into(), None, 403, ""),
        (Some(node.ingest_key()), path.into(), None, 403, ""),
        (None, path.into(), None, 401, ""),
        (
            Some(&read),
            format!("{path}?after=abc"),
            None,
            400,
            "after: 'abc'",
        ),
        (
            Some(&read),
            format!("{path}?after=-1"),
            None,
            400,
            "after: '-1'",
        ),
        (
            Some(&read),
            format!("{path}?user=u1"),
            None,
            400,
            "unknown query parameter 'user'",
        ),
        (
            Some(&read),
            path.into(),
            Some("7-x"),
            400,
            "Last-Event-ID: '7-x'",
        ),
        (
            Some(&read),
            format!("{path}?after=999999"),
            None,
            400,
            "after the newest version",
        ),
    ];
    for (key, url, last_id, status, message) in cases {
        let (got_status, body) = get(&node, &url, key, last_id).await;
        assert_eq!(got_status, status, "{url} {key:?}: {body}");
        let text = body["message"].as_str().unwrap_or_default();
        assert!(text.contains(message), "{url}: {body}");
    }
}

/// A consumer that stops reading fills its socket and its channel, and then only its own
/// reader waits: ingest is acknowledged, a second stream sees every event live, and the
/// stalled one, when it reads again, gets them all in order.
#[tokio::test(flavor = "multi_thread")]
async fn a_stalled_consumer_holds_back_only_itself() {
    let store = TestStore::new(Backend::Local);
    let node = store.serve(&["--ack", "commit"], &[]);
    let read = store.create_key("default", "read");

    // The stalled consumer: a raw HTTP response whose body is not read.
    let stalled = client()
        .get(node.url("/v1/default/events/stream"))
        .bearer_auth(&read)
        .send()
        .await
        .unwrap();
    assert_eq!(stalled.status(), 200);
    assert_eq!(stalled.headers()["content-type"], "text/event-stream");
    let live = sse(&node, "default", "", &read, None);
    let (batches, per_batch, pad) = (24, 500, 2000);
    let total = batches * per_batch;
    let live_task = tokio::spawn(async move { take(&live, total, Duration::from_secs(120)).await });
    tokio::time::sleep(Duration::from_millis(700)).await;

    // ~24 MB of events: far more than loopback socket buffers and the stream's channel.
    let mut slowest = Duration::ZERO;
    for b in 0..batches {
        let t = Instant::now();
        ingest(
            &node,
            "default",
            node.ingest_key(),
            events(&format!("b{b}"), per_batch, pad),
        )
        .await;
        slowest = slowest.max(t.elapsed());
    }
    let live_got = live_task.await.unwrap();
    assert_eq!(live_got.len(), total);
    // The live stream has closed (its client is gone), the stalled one is open, and it
    // has sent only part of the events: it waits on its consumer.
    let metrics = node.metrics().await;
    let metric = |name: &str| -> u64 {
        let line = metrics.lines().find(|l| l.starts_with(name)).unwrap();
        line.rsplit(' ').next().unwrap().parse().unwrap()
    };
    assert_eq!(metric("tidemark_stream_connections "), 1, "{metrics}");
    let sent = metric("tidemark_stream_events_total ");
    assert!(sent >= total as u64 && sent < 2 * total as u64, "{sent}");
    eprintln!(
        "events sent to the stalled stream before it read: {}",
        sent - total as u64
    );
    eprintln!("slowest of {batches} acknowledgements with a stalled stream open: {slowest:?}");

    // Now read the stalled one: everything, in order, nothing lost while it waited.
    let mut body = stalled.bytes_stream();
    let mut buf = String::new();
    let mut ids = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while ids.len() < total {
        let left = deadline.saturating_duration_since(Instant::now());
        let chunk = tokio::time::timeout(left, body.next())
            .await
            .expect("in time")
            .unwrap()
            .unwrap();
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
        while let Some(end) = buf.find("\n\n") {
            let message: String = buf.drain(..end + 2).collect();
            if let Some(data) = message.lines().find_map(|l| l.strip_prefix("data: ")) {
                let event: Value = serde_json::from_str(data).unwrap();
                ids.push(event["event_id"].as_str().unwrap().to_string());
            }
        }
    }
    let live_ids: Vec<String> = live_got
        .iter()
        .map(|g| g.event["event_id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ids, live_ids);
    drop(body);
}
