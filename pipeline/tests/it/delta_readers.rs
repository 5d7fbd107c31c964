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
    let v = python_reader(READER, &table.to_string_lossy());
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

/// Reads every derived table with delta-rs: the newest version's rows (timestamps as
/// microseconds) and, for every version, how many rows share a key.
const DERIVED_READER: &str = r#"
import hashlib, json, os, sys
import pyarrow as pa
from deltalake import DeltaTable
KEYS = {"profiles": ["environment", "user_id"],
        "event_stats": ["environment", "user_id", "event_name"],
        "profile_attributes": ["environment", "user_id", "kind", "name"]}
root, out = sys.argv[1], {"duplicates": []}
for name, keys in KEYS.items():
    path = os.path.join(root, name)
    table = DeltaTable(path)
    for v in range(0, table.version() + 1):
        rows = DeltaTable(path, version=v).to_pyarrow_table(columns=keys).to_pylist()
        ks = [tuple(r[k] for k in keys) for r in rows]
        if len(ks) != len(set(ks)):
            out["duplicates"].append([name, v, len(ks) - len(set(ks))])
    data = table.to_pyarrow_table()
    cols = {}
    for f in data.schema:
        c = data[f.name]
        cols[f.name] = (c.cast(pa.int64()) if pa.types.is_timestamp(f.type) else c).to_pylist()
    rows = [dict(zip(cols, vals)) for vals in zip(*cols.values())]
    rows.sort(key=lambda r: tuple(r[k] for k in keys))
    for r in rows:
        if r["user_bucket"] != hashlib.md5(r["user_id"].encode()).hexdigest()[0]:
            out["duplicates"].append([name, "bucket", r["user_id"], r["user_bucket"]])
    # what an engine opens for one user when the query names the bucket too
    one = [("environment", "=", "default"),
           ("user_bucket", "=", hashlib.md5(b"u00").hexdigest()[0])]
    out[name] = {"rows": rows, "versions": table.version() + 1,
                 "partitions": table.metadata().partition_columns,
                 "files": len(table.file_uris()),
                 "files_for_u00": len(table.file_uris(partition_filters=one))}
print(json.dumps(out))
sys.stdout.flush()
os._exit(0)
"#;

/// Runs the Python `script` on `path` and parses the JSON it prints.
fn python_reader(script: &str, path: &str) -> Value {
    let out = Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(path)
        .output()
        .expect("python3 must be installed");
    assert!(
        out.status.success(),
        "the delta-rs Python reader failed (pip install deltalake pyarrow): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn read_derived(data: &str) -> Value {
    python_reader(DERIVED_READER, data)
}

/// The columns both sides compare, per table: timestamps as microseconds.
const ACTIVITY_SQL: &str = "SELECT environment, user_id, CAST(created_at AS BIGINT) AS created_at, \
    CAST(first_seen_at AS BIGINT) AS first_seen_at, CAST(last_seen_at AS BIGINT) AS last_seen_at, \
    CAST(last_seen_ios_at AS BIGINT) AS last_seen_ios_at, \
    CAST(last_seen_android_at AS BIGINT) AS last_seen_android_at, \
    CAST(last_seen_web_at AS BIGINT) AS last_seen_web_at, \
    CAST(last_seen_server_at AS BIGINT) AS last_seen_server_at, event_count, last_event_name, \
    CAST(last_event_at AS BIGINT) AS last_event_at, CAST(updated_at AS BIGINT) AS updated_at \
    FROM profile_activity ORDER BY environment, user_id";
const STATS_SQL: &str = "SELECT environment, user_id, event_name, CAST(first_at AS BIGINT) AS first_at, \
    CAST(last_at AS BIGINT) AS last_at, \"count\" FROM event_stats \
    ORDER BY environment, user_id, event_name";
const ATTRIBUTES_SQL: &str = "SELECT environment, user_id, kind, name, first_set_id, first_once, \
    last_write, CAST(created_at AS BIGINT) AS created_at, CAST(updated_at AS BIGINT) AS updated_at \
    FROM profile_attributes ORDER BY environment, user_id, kind, name";
const EVENTS_SQL: &str = "SELECT environment, event_id, event_name, category, user_id, platform, \
    CAST(occurred_at AS BIGINT) AS occurred, CAST(received_at AS BIGINT) AS received FROM events";

/// `rows` restricted to the keys of `columns` (the published files also hold the bucket).
fn project(rows: &[Value], columns: &[String]) -> Vec<Value> {
    rows.iter()
        .map(|r| Value::Array(columns.iter().map(|c| r[c.as_str()].clone()).collect()))
        .collect()
}

/// Whether the published rows of `table` equal tidemark's `view_rows` (on its columns).
fn same_rows(published: &Value, table: &str, view_rows: &[Value]) -> bool {
    let cols = columns(view_rows);
    let rows = published[table]["rows"].as_array().unwrap();
    project(rows, &cols) == project(view_rows, &cols)
}

fn columns(rows: &[Value]) -> Vec<String> {
    rows.first()
        .and_then(Value::as_object)
        .map(|o| o.keys().cloned().collect())
        .unwrap_or_default()
}

/// The naive computation of `tests/it/jobs_model.rs` over the `events` rows as stored.
fn model(ts: &TestStore) -> crate::jobs_model::Tables {
    let events: Vec<crate::jobs_model::Ev> = ts
        .sql(EVENTS_SQL)
        .iter()
        .map(|r| crate::jobs_model::Ev {
            env: r["environment"].as_str().unwrap().into(),
            id: r["event_id"].as_str().unwrap().into(),
            name: r["event_name"].as_str().unwrap().into(),
            category: r["category"].as_str().unwrap().into(),
            user: r["user_id"].as_str().unwrap().into(),
            occurred: r["occurred"].as_i64().unwrap(),
            received: r["received"].as_i64().unwrap(),
            platform: r["platform"].as_str().map(str::to_string),
        })
        .collect();
    crate::jobs_model::expected(&events, 3600 * 1_000_000, 300 * 1_000_000)
}

/// The published tables' rows in the model's shapes.
fn as_model(published: &Value) -> crate::jobs_model::Tables {
    let s = |v: &Value| v.as_str().unwrap().to_string();
    let profiles = published["profiles"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let times = [
                "created_at",
                "first_seen_at",
                "last_seen_at",
                "last_seen_ios_at",
                "last_seen_android_at",
                "last_seen_web_at",
                "last_seen_server_at",
                "last_event_at",
                "updated_at",
            ]
            .iter()
            .map(|c| r[*c].as_i64())
            .collect();
            (
                s(&r["environment"]),
                s(&r["user_id"]),
                times,
                r["event_count"].as_i64().unwrap(),
                r["last_event_name"].as_str().map(str::to_string),
            )
        })
        .collect();
    let stats = published["event_stats"]["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                s(&r["environment"]),
                s(&r["user_id"]),
                s(&r["event_name"]),
                r["first_at"].as_i64(),
                r["last_at"].as_i64(),
                r["count"].as_i64().unwrap(),
            )
        })
        .collect();
    crate::jobs_model::Tables { profiles, stats }
}

/// Events through serve in three phases (late events, re-sent duplicates, events without
/// `occurred_at`, clock skew into the future) and profile writes; after each phase every
/// derived Delta table, read by delta-rs, equals `tidemark sql` and the naive model once
/// the publish lag has passed, and no version of any of them ever held two rows for a key.
#[tokio::test(flavor = "multi_thread")]
async fn delta_rs_reads_exact_derived_tables() {
    let ts = TestStore::new(Backend::Local);
    let node = ts.serve(
        &["--ack", "commit"],
        &[
            ("TIDEMARK_JOBS__DEBOUNCE", "50ms"),
            ("TIDEMARK_JOBS__PUBLISH_INTERVAL", "1s"),
        ],
    );
    let ingest = node.ingest_key().to_string();
    let admin = node.admin_key.clone().unwrap();
    let (s, b) = crate::harness::call(
        "POST",
        &node.url("/v1/default/fields"),
        &admin,
        Some(json!({"name": "plan", "type": "text"})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let now = chrono::Utc::now();
    let iso = |d: chrono::Duration| (now + d).to_rfc3339();
    let platforms = ["ios", "android", "web", "server"];
    let categories = ["platform", "sdk", "custom"];
    let event = |phase: usize, i: usize, occurred: Option<String>| {
        let name = ["open", "click", "buy", "view"][(i + phase) % 4];
        let mut e = json!({
            "event_id": format!("p{phase}-{i}"),
            "event_name": name,
            "category": categories[i % 3],
            "platform": platforms[(i / 3) % 4],
            "user_id": format!("u{:02}", (i * 7 + phase) % 40),
        });
        if let Some(t) = occurred {
            e["occurred_at"] = json!(t);
        }
        e
    };
    let mut sent: Vec<Value> = Vec::new();
    for phase in 0..3usize {
        let mut batch: Vec<Value> = (0..120)
            .map(|i| {
                let occurred = match (phase, i % 4) {
                    // late: days before everything else
                    (1, 0) => Some(iso(-chrono::Duration::days(20 + i as i64))),
                    // no occurred_at: received_at counts
                    (1, 1) | (2, 1) => None,
                    // an hour in the future: beyond the 5-minute tolerance, clamped
                    (2, 2) => Some(iso(chrono::Duration::hours(1))),
                    _ => Some(iso(-chrono::Duration::minutes(
                        i as i64 + 60 * phase as i64,
                    ))),
                };
                event(phase, i, occurred)
            })
            .collect();
        // duplicates: earlier events re-sent as they were
        batch.extend(sent.iter().step_by(7).cloned());
        let (s, b) = post_json(
            &node.events_url("default"),
            Some(&ingest),
            &Value::Array(batch.clone()).to_string(),
        )
        .await;
        assert_eq!(s, 202, "{b}");
        sent.extend(batch);
        let writes: Vec<Value> = (0..10)
            .map(|u| {
                json!({"id": format!("u{:02}", u * 4 + phase), "set": {"plan": format!("plan-{phase}")},
                       "tags": if phase == 2 { json!({"remove": ["vip"]}) } else { json!({"add": ["vip"]}) }})
            })
            .collect();
        let (s, b) = crate::harness::call(
            "POST",
            &node.url("/v1/default/users:batch"),
            &ingest,
            Some(Value::Array(writes)),
        )
        .await;
        assert_eq!(s, 202, "{b}");

        // Once the jobs and a publish have run, all three agree.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        // Ingest drops the re-sent copies (its dedup index remembers the ids).
        let stored = sent
            .iter()
            .map(|e| e["event_id"].as_str().unwrap())
            .collect::<std::collections::HashSet<_>>()
            .len();
        loop {
            let events = ts.sql("SELECT count(*) AS n FROM events");
            let want = model(&ts);
            let views = (
                ts.sql(ACTIVITY_SQL),
                ts.sql(STATS_SQL),
                ts.sql(ATTRIBUTES_SQL),
            );
            let published = read_derived(&ts.data);
            // (also lists rows whose bucket is not the first hex digit of md5(user_id))
            assert_eq!(
                published["duplicates"],
                json!([]),
                "a version held two rows for a key"
            );
            let got = as_model(&published);
            let checks = [
                ("every event stored", events[0]["n"] == json!(stored)),
                (
                    "profiles = tidemark sql",
                    same_rows(&published, "profiles", &views.0),
                ),
                (
                    "event_stats = tidemark sql",
                    same_rows(&published, "event_stats", &views.1),
                ),
                (
                    "profile_attributes = tidemark sql",
                    same_rows(&published, "profile_attributes", &views.2),
                ),
                ("profiles = model", got.profiles == want.profiles),
                ("event_stats = model", got.stats == want.stats),
            ];
            if checks.iter().all(|(_, ok)| *ok) {
                for table in ["profiles", "event_stats", "profile_attributes"] {
                    let t = &published[table];
                    assert_eq!(t["partitions"], json!(["environment", "user_bucket"]));
                    // 40 users over 16 buckets: one file per bucket, one file for a user
                    let files = t["files"].as_u64().unwrap();
                    assert!((2..=16).contains(&files), "{table}: {files} files");
                    assert_eq!(t["files_for_u00"], 1, "{table}");
                }
                break;
            }
            if std::time::Instant::now() > deadline {
                let failed: Vec<&str> = checks.iter().filter(|c| !c.1).map(|c| c.0).collect();
                let first = |a: &[crate::jobs_model::ProfileRow],
                             b: &[crate::jobs_model::ProfileRow]| {
                    a.iter()
                        .zip(b)
                        .find(|(x, y)| x != y)
                        .map(|(x, y)| format!("{x:?}\n{y:?}"))
                };
                panic!(
                    "phase {phase}: never matched: {failed:?}; first differing profile (published, model):\n{:?}\n{} vs {} profiles",
                    first(&got.profiles, &want.profiles),
                    got.profiles.len(),
                    want.profiles.len()
                );
            }
            tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        }
    }
    // The phase-2 writes removed the tag from u02, u06, …: tidemark's profiles agree.
    let tags = ts.sql("SELECT user_id, tags FROM profiles WHERE user_id = 'u04'");
    assert_eq!(tags[0]["tags"], json!(["vip"]), "{tags:?}");
    let tags = ts.sql("SELECT user_id, tags FROM profiles WHERE user_id = 'u06'");
    assert!(tags[0]["tags"].is_null(), "{tags:?}");
    assert!(node.terminate().success());
}
