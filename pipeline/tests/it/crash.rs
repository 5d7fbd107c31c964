//! Crash safety: concurrent clients, SIGKILL at a random moment, restart; every
//! acknowledged event is stored exactly once.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::Rng;
use serde_json::json;

use crate::harness::{Backend, TestStore, client};

const CLIENTS: usize = 4;
const BATCH: usize = 50;

async fn crash_and_recover(backend: Backend) {
    let store = TestStore::new(backend);
    let node = store.serve(&[], &[("TIDEMARK_FLUSH_INTERVAL", "300ms")]);
    let key = node.ingest_key().to_string();
    let url = node.events_url("default");
    let acked: Arc<Mutex<Vec<Vec<String>>>> = Arc::default();

    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let (url, key, acked) = (url.clone(), key.clone(), acked.clone());
        tasks.push(tokio::spawn(async move {
            let http = client();
            for b in 0..10_000 {
                let ids: Vec<String> = (0..BATCH).map(|i| format!("c{c}-b{b}-{i}")).collect();
                let events: Vec<_> = ids
                    .iter()
                    .map(|id| json!({"event_id": id, "event_name": "tick", "user_id": format!("u{c}")}))
                    .collect();
                let resp = http
                    .post(&url)
                    .bearer_auth(&key)
                    .json(&events)
                    .send()
                    .await;
                match resp {
                    Ok(r) if r.status().as_u16() == 202 => acked.lock().unwrap().push(ids),
                    _ => return, // the server is gone
                }
            }
        }));
    }
    let wait_ms = rand::rng().random_range(1500..4000);
    tokio::time::sleep(Duration::from_millis(wait_ms)).await;
    node.kill();
    for t in tasks {
        t.await.unwrap();
    }
    let acked: Vec<Vec<String>> = acked.lock().unwrap().clone();
    let acked_ids: HashSet<String> = acked.iter().flatten().cloned().collect();
    assert!(
        acked.len() >= 4,
        "too few batches acknowledged before the kill: {}",
        acked.len()
    );

    // Restart: the WAL is replayed; a retry of an acknowledged batch is a duplicate.
    let node = store.serve(&[], &[]);
    let retry: Vec<_> = acked[acked.len() / 2]
        .iter()
        .map(|id| json!({"event_id": id, "event_name": "tick", "user_id": "u"}))
        .collect();
    let resp = client()
        .post(node.events_url("default"))
        .bearer_auth(&key)
        .json(&retry)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    assert_eq!(
        resp.json::<serde_json::Value>().await.unwrap(),
        json!({"accepted": 0, "duplicates": BATCH})
    );
    assert!(node.terminate().success());

    let rows = store.sql("select event_id, count(*) as n from events group by event_id");
    let mut counts: HashMap<String, i64> = HashMap::new();
    for r in &rows {
        counts.insert(
            r["event_id"].as_str().unwrap().to_string(),
            r["n"].as_i64().unwrap(),
        );
    }
    let twice: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    let missing: Vec<_> = acked_ids
        .iter()
        .filter(|id| !counts.contains_key(*id))
        .collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged events lost (of {}), e.g. {:?}",
        missing.len(),
        acked_ids.len(),
        missing.iter().take(5).collect::<Vec<_>>()
    );
    // Unacknowledged batches may or may not be stored, but only whole.
    let mut per_batch: HashMap<String, usize> = HashMap::new();
    for id in counts.keys() {
        let batch = id.rsplit_once('-').unwrap().0.to_string();
        *per_batch.entry(batch).or_default() += 1;
    }
    assert!(
        per_batch.values().all(|n| *n == BATCH),
        "a batch was stored in part"
    );
    eprintln!(
        "crash test ({backend:?}): killed after {wait_ms} ms, {} acknowledged, {} stored",
        acked_ids.len(),
        counts.len()
    );
}

on_both_backends!(crash_and_recover);
