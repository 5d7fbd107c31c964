//! Erasure end to end: a user's events, fields and tags are erased through the API, the
//! jobs run, VACUUM runs, and then no file under the data directory (Parquet pages decoded,
//! every other file as bytes) holds the user id or the user's unique field value, while
//! another user's data is intact.

use std::path::Path;
use std::time::{Duration, Instant};

use arrow::util::display::{ArrayFormatter, FormatOptions};
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{Value, json};

use crate::harness::{Backend, TestStore, call, post_json};

const GONE_ID: &str = "erase-me-7f3a";
const GONE_VALUE: &str = "unique-nick-91c2e";
const KEPT_ID: &str = "keep-me-2b1d";
const KEPT_VALUE: &str = "keeper-nick-55aa";

/// Every file under `dir` whose content (decoded Parquet values, or raw bytes) contains
/// `needle`.
fn files_containing(dir: &Path, needle: &str) -> Vec<String> {
    let mut hits = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            let bytes = std::fs::read(&path).unwrap();
            let raw_hit = bytes.windows(needle.len()).any(|w| w == needle.as_bytes());
            let decoded_hit =
                path.extension().is_some_and(|e| e == "parquet") && parquet_contains(&path, needle);
            if raw_hit || decoded_hit {
                hits.push(path.display().to_string());
            }
        }
    }
    hits
}

fn parquet_contains(path: &Path, needle: &str) -> bool {
    let file = std::fs::File::open(path).unwrap();
    let reader = ParquetRecordBatchReaderBuilder::try_new(file)
        .unwrap()
        .build()
        .unwrap();
    for batch in reader {
        let batch = batch.unwrap();
        for column in batch.columns() {
            let f = ArrayFormatter::try_new(column.as_ref(), &FormatOptions::default()).unwrap();
            if (0..batch.num_rows()).any(|i| f.value(i).to_string().contains(needle)) {
                return true;
            }
        }
    }
    false
}

async fn wait_for(url: &str, key: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (s, b) = call("GET", url, key, None).await;
        if s == 200 && done(&b) {
            return b;
        }
        assert!(Instant::now() < deadline, "not reached: {s} {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn erased_users_leave_no_trace_after_vacuum() {
    let ts = TestStore::new(Backend::Local);
    let node = ts.serve(&["--ack", "commit"], &[("TIDEMARK_JOBS__DEBOUNCE", "50ms")]);
    let admin = node.admin_key.clone().unwrap();
    let ingest = node.ingest_key().to_string();
    let (s, b) = call(
        "POST",
        &node.url("/v1/default/fields"),
        &admin,
        Some(json!({"name": "nickname", "type": "text"})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    for (id, nick) in [(GONE_ID, GONE_VALUE), (KEPT_ID, KEPT_VALUE)] {
        let (s, b) = call(
            "PUT",
            &node.url(&format!("/v1/default/users/{id}")),
            &ingest,
            Some(json!({"set": {"nickname": nick}, "tags": {"add": ["vip"]}})),
        )
        .await;
        assert_eq!(s, 202, "{b}");
    }
    // several commits, so the user's rows are spread over several files
    for round in 0..3 {
        let events: Vec<Value> = [GONE_ID, KEPT_ID]
            .iter()
            .flat_map(|id| {
                (0..3).map(move |i| {
                    json!({"event_id": format!("{id}-{round}-{i}"), "event_name": "open", "user_id": id,
                           "platform": "web", "properties": {"email": format!("{id}@example.com")}})
                })
            })
            .collect();
        let (s, b) = post_json(
            &node.events_url("default"),
            Some(&ingest),
            &Value::Array(events).to_string(),
        )
        .await;
        assert_eq!(s, 202, "{b}");
    }
    for id in [GONE_ID, KEPT_ID] {
        wait_for(&node.url(&format!("/v1/default/users/{id}")), &admin, |p| {
            p["event_count"] == 9 && p["fields"]["nickname"].is_object()
        })
        .await;
    }
    let data = Path::new(&ts.data);
    assert!(!files_containing(data, GONE_ID).is_empty());
    assert!(!files_containing(data, GONE_VALUE).is_empty());

    // only an admin key may erase; a bad id is a 400
    let gone_url = node.url(&format!("/v1/default/users/{GONE_ID}"));
    let (s, _) = call("DELETE", &gone_url, &ingest, None).await;
    assert_eq!(s, 403);
    let (s, b) = call("DELETE", &node.url("/v1/default/users/%20"), &admin, None).await;
    assert_eq!(s, 400, "{b}");
    assert!(b["message"].as_str().unwrap().starts_with("id:"), "{b}");

    let (s, b) = call("DELETE", &gone_url, &admin, None).await;
    assert_eq!(s, 200, "{b}");
    let erasure = &b["erasure"];
    assert_eq!(erasure["rows_deleted"]["events"], 9, "{b}");
    assert_eq!(erasure["rows_deleted"]["profile_changes"], 2, "{b}");
    // the audit entry holds no personal data
    assert!(!b["erasure"].to_string().contains(GONE_ID));
    let (s, b) = call("GET", &gone_url, &admin, None).await;
    assert_eq!(s, 404, "{b}");
    let kept = wait_for(
        &node.url(&format!("/v1/default/users/{KEPT_ID}")),
        &admin,
        |_| true,
    )
    .await;
    assert_eq!(kept["event_count"], 9);
    assert_eq!(kept["fields"]["nickname"]["value"], KEPT_VALUE);
    assert_eq!(kept["tags"], json!(["vip"]));
    assert_eq!(node.terminate().code(), Some(0));

    // the jobs run once more (nothing comes back), then the report says files remain
    ts.cli_ok(&["jobs", "run", "--once"]);
    let out = ts.cli(&["users", "erasures", "--env", "default"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("pending:"), "{text}");

    ts.cli_ok(&["vacuum", "--retention", "0s"]);
    let out = ts.cli(&["users", "erasures", "--env", "default", "--json"]);
    let statuses: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(statuses[0]["complete"], true, "{statuses}");
    assert_eq!(statuses[0]["files_pending"], 0, "{statuses}");

    // no file under the data directory holds the erased id or value
    for needle in [GONE_ID, GONE_VALUE] {
        let hits = files_containing(data, needle);
        assert!(hits.is_empty(), "{needle} still in {hits:#?}");
    }
    // while the other user's data is intact (and the scan does find it)
    assert!(!files_containing(data, KEPT_ID).is_empty());
    assert!(!files_containing(data, KEPT_VALUE).is_empty());
    let rows = ts.sql("SELECT user_id, event_count, fields FROM profiles ORDER BY user_id");
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["user_id"], KEPT_ID);
    assert_eq!(rows[0]["event_count"], 9);
    let events = ts.sql("SELECT count(*) AS n FROM events");
    assert_eq!(events[0]["n"], 9);
}

/// Retention deletes whole days of events past each environment's setting, through the
/// CLI with the settings from the environment, and leaves the rest.
#[tokio::test(flavor = "multi_thread")]
async fn retention_deletes_old_events_per_environment() {
    use crate::jobs_model::{Ev, commit};
    let ts = TestStore::new(Backend::Local);
    let store = tidemark::storage::Store::open(&ts.data, &Default::default()).unwrap();
    let now = chrono::Utc::now().timestamp_micros();
    let day = 86_400_000_000i64;
    let ev = |env: &str, id: &str, age_days: i64| Ev {
        env: env.into(),
        id: id.into(),
        name: "open".into(),
        category: "custom".into(),
        user: "u".into(),
        occurred: now - age_days * day,
        received: now - age_days * day,
        platform: None,
    };
    commit(
        &store,
        &[
            ev("default", "d400", 400),
            ev("default", "d40", 40),
            ev("default", "d1", 1),
            ev("staging", "s40", 40),
            ev("staging", "s1", 1),
        ],
    )
    .await;
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"));
    let out = cmd
        .args(["retention", "--data", &ts.data])
        .env("TIDEMARK_RETENTION__ENVIRONMENTS", "{staging=30}")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("default: deleted 1 event(s) older than 365 days"),
        "{text}"
    );
    assert!(
        text.contains("staging: deleted 1 event(s) older than 30 days"),
        "{text}"
    );
    let rows = ts.sql("SELECT event_id FROM events ORDER BY event_id");
    let ids: Vec<_> = rows
        .iter()
        .map(|r| r["event_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["d1", "d40", "s1"]);
    // a bad setting is refused with its name
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_tidemark"))
        .args(["retention", "--data", &ts.data])
        .env("TIDEMARK_RETENTION__EVENTS_DAYS", "0")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("retention.events_days"));
}
