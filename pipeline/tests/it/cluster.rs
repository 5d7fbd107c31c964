//! Several processes on one store (issue 16, hole 5): two `serve` nodes, each with its own
//! WAL, share a local store. The webhook and export workers run on the one process holding
//! their lease, segment runs take turns, and when the holder is SIGKILLed the other node
//! takes over within the lease ttl.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Backend, Node, TestStore, call, post_json};
use crate::webhooks::Receiver;

const TTL_SECS: u64 = 3;

/// The process holding lease `name`, from its newest version on disk.
fn lease_holder(ts: &TestStore, name: &str) -> Option<(String, i64)> {
    let dir = std::path::Path::new(&ts.data)
        .join("_tidemark")
        .join("leases")
        .join(name);
    let newest = std::fs::read_dir(dir)
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .max()?;
    let doc: Value = serde_json::from_slice(&std::fs::read(newest).ok()?).ok()?;
    Some((
        doc["holder"].as_str()?.to_string(),
        doc["expires_ms"].as_i64()?,
    ))
}

/// The pid in a holder id (`host/pid/random`).
fn holder_pid(holder: &str) -> u32 {
    holder.split('/').nth(1).unwrap().parse().unwrap()
}

fn events(from: usize, to: usize) -> Value {
    Value::Array(
        (from..to)
            .map(|i| {
                json!({"event_id": format!("c{i}"), "event_name": if i % 2 == 0 { "buy" } else { "view" },
                       "user_id": format!("u{}", i % 20)})
            })
            .collect(),
    )
}

/// Event id -> the webhook-ids it was delivered under, over every receipt on `path` (the
/// test's events; segment events go out too).
fn deliveries(rx: &Receiver, path: &str) -> BTreeMap<String, BTreeSet<String>> {
    let mut out: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in rx.at(path) {
        for e in r.event_ids().into_iter().filter(|e| e.starts_with('c')) {
            out.entry(e).or_default().insert(r.id.clone());
        }
    }
    out
}

/// How many of the test's events the receipts hold.
fn ours(receipts: &[crate::webhooks::Receipt]) -> usize {
    receipts
        .iter()
        .flat_map(|r| r.event_ids())
        .filter(|e| e.starts_with('c'))
        .collect::<BTreeSet<_>>()
        .len()
}

#[tokio::test(flavor = "multi_thread")]
async fn two_nodes_on_one_store_run_each_worker_once_and_take_over_after_a_kill() {
    let rx = Receiver::start(1).await;
    let ts = TestStore::new(Backend::Local);
    std::fs::write(
        ts.tmp.path().join("tidemark.toml"),
        format!(
            "lease_ttl = \"{TTL_SECS}s\"\n\
             [jobs]\ndebounce = \"50ms\"\n\
             [segments]\ninterval = \"500ms\"\n\
             [webhooks]\nallow_networks = [\"127.0.0.0/8\"]\npoll_interval = \"100ms\"\nlog_interval = \"200ms\"\n\
             [exports]\npoll_interval = \"200ms\"\ngrace = \"0s\"\n"
        ),
    )
    .unwrap();
    let a = ts.serve(&[], &[]);
    let b = ts.serve_with_wal(&ts.tmp.path().join("wal-b"), &[], &[]);
    let admin = a.admin_key.clone().unwrap();
    let ingest = a.ingest_key().to_string();

    let (s, hook) = call(
        "POST",
        &a.url("/v1/default/webhooks"),
        &admin,
        Some(json!({"url": rx.url("hook"), "max_events": 10})),
    )
    .await;
    assert_eq!(s, 201, "{hook}");
    // An export of twelve closed 5-minute windows (an hour ago to now) to the receiver:
    // each window's file is POSTed with a webhook-id derived from its name.
    let start = tidemark::exports::window::Interval::FiveMinutes
        .floor(chrono::Utc::now() - chrono::Duration::hours(1));
    let (s, export) = call(
        "POST",
        &a.url("/v1/default/exports"),
        &admin,
        Some(
            json!({"source": "events", "interval": "5m", "format": "csv",
                    "destination": rx.url("export"), "start": start.to_rfc3339()}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{export}");
    let (s, seg) = call(
        "POST",
        &b.url("/v1/default/segments"),
        &admin,
        Some(
            json!({"id": "buyers", "name": "Bought today", "match": "all",
                    "conditions": [{"event": "buy", "op": "did", "within": "-1d"}]}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{seg}");

    // 200 events, half through each node.
    for chunk in 0..10 {
        let node = if chunk % 2 == 0 { &a } else { &b };
        let (s, body) = post_json(
            &node.events_url("default"),
            Some(&ingest),
            &events(chunk * 20, chunk * 20 + 20).to_string(),
        )
        .await;
        assert_eq!(s, 202, "{body}");
    }
    let all_200 = |r: &[crate::webhooks::Receipt]| ours(r) >= 200;
    assert!(rx.wait("hook", 60, all_200).await, "not all 200 delivered");
    // Let the holder log the attempts and move its cursor, then look for repeats.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = deliveries(&rx, "hook");
    assert_eq!(before.len(), 200);
    let receipts = rx.at("hook");
    let ids: BTreeSet<&str> = receipts.iter().map(|r| r.id.as_str()).collect();
    assert_eq!(
        ids.len(),
        receipts.len(),
        "a message was sent twice with one worker per store"
    );
    assert!(
        before.values().all(|w| w.len() == 1),
        "an event went out under two webhook-ids"
    );

    // The export: every window's file POSTed once.
    assert!(
        rx.wait("export", 60, |r| r.len() >= 12).await,
        "export windows not written"
    );
    let files = rx.at("export");
    let per_file: BTreeMap<&str, usize> = files.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r.id.as_str()).or_default() += 1;
        m
    });
    assert!(
        per_file.values().all(|n| *n == 1),
        "an export file was written twice: {per_file:?}"
    );

    // Segments: the ten buyers entered once each, however many runs both nodes made.
    let changes = ts.sql_until(
        "SELECT user_id, count(*) AS n FROM segment_changes WHERE change = 'entered' GROUP BY user_id",
        |r| r.len() >= 10,
    );
    assert_eq!(changes.len(), 10, "{changes:?}");
    assert!(
        changes.iter().all(|r| r["n"] == 1),
        "a user entered twice: {changes:?}"
    );

    // Kill the webhook holder; the other node takes the lease within the ttl.
    let (holder, _) = lease_holder(&ts, "webhooks").expect("a webhooks lease");
    let pid = holder_pid(&holder);
    let (killed, survivor): (Node, Node) = if a.child.id() == pid { (a, b) } else { (b, a) };
    assert_eq!(
        killed.child.id(),
        pid,
        "the holder {holder} is one of the nodes"
    );
    killed.kill();
    let killed_at = Instant::now();
    let took_over = loop {
        if let Some((h, _)) = lease_holder(&ts, "webhooks")
            && holder_pid(&h) == survivor.child.id()
        {
            break killed_at.elapsed();
        }
        assert!(
            killed_at.elapsed() < Duration::from_secs(TTL_SECS * 4),
            "no takeover"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!("takeover after {took_over:?} (lease ttl {TTL_SECS} s)");
    assert!(
        took_over <= Duration::from_secs(TTL_SECS) + Duration::from_secs(2),
        "takeover took {took_over:?}"
    );

    let (s, _) = post_json(
        &survivor.events_url("default"),
        Some(&ingest),
        &events(200, 250).to_string(),
    )
    .await;
    assert_eq!(s, 202);
    let all_250 = |r: &[crate::webhooks::Receipt]| ours(r) >= 250;
    assert!(
        rx.wait("hook", 60, all_250).await,
        "the survivor did not deliver"
    );
    let after = deliveries(&rx, "hook");
    assert_eq!(after.len(), 250);
    let twice: Vec<_> = after.iter().filter(|(_, w)| w.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "after the takeover an event went out under a second webhook-id: {twice:?}"
    );
    drop(survivor);
}

/// Posts batches of 20 events `{prefix}-{n}-{i}` to `url` until `stop`; returns the ids
/// acknowledged (202). A request the stopping node does not answer is not acknowledged.
async fn load_until(
    url: String,
    key: String,
    prefix: &'static str,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> BTreeSet<String> {
    let http = crate::harness::client();
    let mut acked = BTreeSet::new();
    let mut n = 0;
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let ids: Vec<String> = (0..20).map(|i| format!("{prefix}-{n}-{i}")).collect();
        n += 1;
        let body: Vec<Value> = ids
            .iter()
            .map(|id| json!({"event_id": id, "event_name": "view", "user_id": "u1"}))
            .collect();
        match http.post(&url).bearer_auth(&key).json(&body).send().await {
            Ok(r) if r.status().as_u16() == 202 => acked.extend(ids),
            Ok(_) => {}
            // The node is gone: nothing more will be acknowledged.
            Err(_) => break,
        }
    }
    acked
}

/// Two nodes share a store under load; one is stopped with SIGTERM in the middle of it.
/// By the time that process has exited, every event it acknowledged is in `events` (read
/// from the store itself, while the other node goes on), and none twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_node_stopped_with_sigterm_has_committed_what_it_acknowledged() {
    let ts = TestStore::new(Backend::Local);
    let a = ts.serve(&[], &[]);
    let b = ts.serve_with_wal(&ts.tmp.path().join("wal-b"), &[], &[]);
    let key = a.ingest_key().to_string();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let on_a = tokio::spawn(load_until(
        a.events_url("default"),
        key.clone(),
        "a",
        stop.clone(),
    ));
    let on_b = tokio::spawn(load_until(
        b.events_url("default"),
        key.clone(),
        "b",
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // SIGTERM while requests to b are in flight; the load on a goes on meanwhile.
    let status = tokio::task::spawn_blocking(move || b.terminate())
        .await
        .unwrap();
    assert!(status.success(), "b exited with {status}");
    let acked_b = on_b.await.unwrap();
    assert!(
        acked_b.len() >= 100,
        "only {} acknowledged by b",
        acked_b.len()
    );
    let stored = ts.sql(
        "SELECT event_id, count(*) AS n FROM events WHERE event_id LIKE 'b-%' GROUP BY event_id",
    );
    let stored_b: BTreeMap<String, i64> = stored
        .iter()
        .map(|r| {
            (
                r["event_id"].as_str().unwrap().to_string(),
                r["n"].as_i64().unwrap(),
            )
        })
        .collect();
    let missing: Vec<_> = acked_b
        .iter()
        .filter(|e| !stored_b.contains_key(*e))
        .collect();
    assert!(
        missing.is_empty(),
        "{} of {} events b acknowledged are not in events after it exited: {:?}",
        missing.len(),
        acked_b.len(),
        &missing[..missing.len().min(5)]
    );
    assert!(
        stored_b.values().all(|n| *n == 1),
        "an event of b stored twice"
    );
    // b's WAL holds nothing left to replay.
    let left: Vec<_> = std::fs::read_dir(ts.tmp.path().join("wal-b"))
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.path().extension().is_some_and(|x| x == "wal"))
        .collect();
    assert!(left.is_empty(), "segments left in b's WAL: {left:?}");
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let acked_a = on_a.await.unwrap();
    let status = tokio::task::spawn_blocking(move || a.terminate())
        .await
        .unwrap();
    assert!(status.success());
    let total = ts.sql("SELECT count(*) AS n FROM events");
    assert_eq!(total[0]["n"], json!(acked_a.len() + stored_b.len()));
}
