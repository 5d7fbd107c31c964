//! The `events` table is a plain Delta table: an independent reader (delta-rs's Python
//! package, `pip install deltalake pyarrow`, installed by `.ci/run`) reads what tidemark wrote.

use std::process::Command;

use serde_json::{Value, json};

use crate::harness::{Backend, TestStore, post_json};

const READER: &str = r#"
import json, os, sys
from deltalake import DeltaTable
t = DeltaTable(sys.argv[1])
rows = t.to_pyarrow_table().to_pylist()
out = {
    "partitions": t.metadata().partition_columns,
    "rows": sorted(
        [{"event_id": r["event_id"], "user_id": r["user_id"], "platform": r["platform"],
          "occurred_at": r["occurred_at"].isoformat(), "received_date": r["received_date"].isoformat(),
          "properties": r["properties"]} for r in rows],
        key=lambda r: r["event_id"]),
}
print(json.dumps(out))
sys.stdout.flush()
# Skip interpreter teardown: under load it sometimes aborts in native thread pools
# ("terminate called without an active exception") after the answer is out.
os._exit(0)
"#;

#[tokio::test(flavor = "multi_thread")]
async fn delta_rs_python_reads_events() {
    let store = TestStore::new(Backend::Local);
    let node = store.serve(&["--ack", "commit"], &[]);
    let body = json!([
        {"event_id": "r1", "event_name": "a", "user_id": "u1", "platform": "web",
         "occurred_at": "2024-05-01T12:00:00Z", "properties": {"k": "v"}},
        {"event_id": "r2", "event_name": "b", "user_id": "u2"},
    ])
    .to_string();
    assert_eq!(
        post_json(&node.events_url("default"), Some(node.ingest_key()), &body)
            .await
            .0,
        202
    );
    assert!(node.terminate().success());

    let table = std::path::Path::new(&store.data).join("events");
    let out = Command::new("python3")
        .arg("-c")
        .arg(READER)
        .arg(&table)
        .output()
        .expect("python3 must be installed");
    assert!(
        out.status.success(),
        "the delta-rs Python reader failed (pip install deltalake pyarrow): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["partitions"], json!(["environment", "received_date"]));
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0]["event_id"], "r1");
    assert_eq!(rows[0]["platform"], "web");
    assert_eq!(rows[0]["occurred_at"], "2024-05-01T12:00:00+00:00");
    assert_eq!(rows[0]["properties"], r#"{"k":"v"}"#);
    assert_eq!(rows[1]["user_id"], "u2");
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    assert_eq!(rows[1]["received_date"], today.as_str());
}
