//! Small files of `events` are compacted on a schedule, and nothing is lost or doubled.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Backend, TestStore, post_json};

/// Active data files of `events`, read through the Delta log with the library.
async fn file_count(store: &TestStore) -> usize {
    let s = tidemark::storage::Store::open(&store.data, &Default::default()).unwrap();
    let table = s.load_table("events").await.unwrap().unwrap();
    table.get_file_uris().unwrap().count()
}

#[tokio::test(flavor = "multi_thread")]
async fn small_files_are_compacted() {
    let store = TestStore::new(Backend::Local);
    // First without compaction: one file per flush.
    let node = store.serve(
        &[],
        &[
            ("TIDEMARK_FLUSH_INTERVAL", "50ms"),
            ("TIDEMARK_OPTIMIZE_INTERVAL", "0s"),
        ],
    );
    let key = node.ingest_key().to_string();
    let url = node.events_url("default");
    for i in 0..6 {
        let body =
            json!([{"event_id": format!("x{i}"), "event_name": "a", "user_id": "u"}]).to_string();
        assert_eq!(post_json(&url, Some(&key), &body).await.0, 202);
        // Let each batch become its own commit (its own file).
        store.sql_until("select count(*) as n from events", |r| r[0]["n"] == i + 1);
    }
    assert!(node.terminate().success());
    let before = file_count(&store).await;
    assert_eq!(before, 6, "expected one file per flush");
    // Then with compaction every second.
    let node = store.serve(&[], &[("TIDEMARK_OPTIMIZE_INTERVAL", "1s")]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut after = before;
    while Instant::now() < deadline {
        after = file_count(&store).await;
        if after == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert_eq!(after, 1, "files were not compacted ({before} before)");
    let rows = store.sql("select event_id from events order by event_id");
    let ids: Vec<&str> = rows
        .iter()
        .map(|r| r["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["x0", "x1", "x2", "x3", "x4", "x5"]);
    let metrics = node.metrics().await;
    let removed: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tidemark_optimize_files_removed_total "))
        .and_then(|v| v.trim().parse().ok())
        .expect("compaction metric");
    assert_eq!(removed, 6, "{metrics}");
    assert!(node.terminate().success());
}
