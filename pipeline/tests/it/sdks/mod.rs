//! Existing analytics SDKs, unchanged (issue 21): the real Segment, RudderStack and
//! PostHog client libraries from PyPI (`tests/sdks/sdk_test.py`) send to `tidemark serve`,
//! through a proxy that loses tidemark's first answer so each SDK retries a stored batch;
//! then the stored events, profiles and aliases are checked field by field. Bad input of
//! each kind gets the answer the SDKs expect.

use std::io::Write as _;
use std::process::Command;

use base64::Engine as _;
use serde_json::{Value, json};

use crate::harness::{Backend, Node, TestStore, call, client};

fn sdks(node: &Node, key: &str, phase: u32) -> Value {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdks/sdk_test.py");
    let args = json!({"url": node.url(""), "key": key, "phase": phase});
    let out = Command::new("python3")
        .arg(script)
        .arg(args.to_string())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "the SDK driver failed (needs `pip install segment-analytics-python rudder-sdk-python posthog`):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the driver prints JSON")
}

fn basic(key: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{key}:"))
    )
}

/// POSTs `body` to `path` with `auth` (an Authorization value) and optional gzip.
async fn post(
    node: &Node,
    path: &str,
    auth: Option<&str>,
    body: &str,
    gzip: bool,
) -> (u16, Option<String>, Value) {
    let mut req = client()
        .post(node.url(path))
        .header("content-type", "application/json");
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let req = if gzip {
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(body.as_bytes()).unwrap();
        req.header("content-encoding", "gzip")
            .body(enc.finish().unwrap())
    } else {
        req.body(body.to_string())
    };
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let retry = resp
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    let text = resp.text().await.unwrap();
    (
        status,
        retry,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

const EVENTS: &str = "SELECT event_id, event_name, user_id, category, platform, \
    CAST(CAST(occurred_at AS BIGINT) AS VARCHAR) AS occurred_us, properties \
    FROM events WHERE environment = 'default' ORDER BY event_id";

fn row<'a>(rows: &'a [Value], id: &str) -> &'a Value {
    rows.iter()
        .find(|r| r["event_id"] == id)
        .unwrap_or_else(|| panic!("no event {id} in {rows:?}"))
}

fn stats(ts: &TestStore, user: &str) -> Vec<(String, i64)> {
    ts.sql(&format!(
        "SELECT event_name, \"count\" FROM event_stats WHERE user_id = '{user}' ORDER BY event_name"
    ))
    .iter()
    .map(|r| {
        (
            r["event_name"].as_str().unwrap().to_string(),
            r["count"].as_i64().unwrap(),
        )
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn the_segment_rudderstack_and_posthog_sdks_work_unchanged() {
    let ts = TestStore::new(Backend::Local);
    for (name, t) in [("plan", "text"), ("age", "number")] {
        ts.cli_ok(&["fields", "add", name, "--type", t, "--env", "default"]);
    }
    let read = ts.create_key("default", "read");
    let key = ts.create_key("default", "ingest");
    let node = ts.serve(
        &["--ack", "commit"],
        &[("TIDEMARK_JOBS__DEBOUNCE", "100ms")],
    );

    let seen = sdks(&node, &key, 1);
    for sdk in ["segment", "rudder", "posthog"] {
        let uploads = seen[sdk]["uploads"].as_array().unwrap();
        assert_eq!(seen[sdk]["failed"], 1, "{sdk}: {uploads:?}");
        assert!(
            uploads.len() >= 2,
            "{sdk} retried the batch whose answer was lost: {uploads:?}"
        );
        assert!(
            uploads.iter().all(|u| u["status"] == 200),
            "{sdk}: {uploads:?}"
        );
        // The retry of the stored batch stored nothing new.
        let accepted: i64 = uploads
            .iter()
            .map(|u| u["answer"]["accepted"].as_i64().unwrap())
            .sum();
        let duplicates: i64 = uploads
            .iter()
            .map(|u| u["answer"]["duplicates"].as_i64().unwrap())
            .sum();
        assert!(
            duplicates >= uploads[0]["answer"]["accepted"].as_i64().unwrap(),
            "{sdk}: {uploads:?}"
        );
        assert_eq!(
            accepted,
            [7, 5, 4][["segment", "rudder", "posthog"]
                .iter()
                .position(|s| *s == sdk)
                .unwrap()],
            "{sdk}: {uploads:?}"
        );
    }
    assert_eq!(seen["segment"]["uploads"][0]["path"], "/v1/batch");
    assert_eq!(
        seen["rudder"]["uploads"][0]["gzip"], true,
        "RudderStack's SDK gzips"
    );
    assert_eq!(seen["posthog"]["uploads"][0]["path"], "/batch/");
    let identify_answer = seen["segment"]["uploads"][0]["answer"].clone();
    assert_eq!(identify_answer["success"], true);
    assert_eq!(
        identify_answer["ignored_traits"],
        json!([{"index": 1, "trait": "email", "reason": "not a declared custom field (POST /v1/{env}/fields declares one)"}])
    );
    assert_eq!(seen["posthog"]["uploads"][0]["answer"]["status"], 1);

    // Every message once, field by field.
    let rows = ts.sql(EVENTS);
    assert_eq!(rows.len(), 16, "{rows:?}");
    let t0 = "1767323045678000";
    let want = [
        (
            "seg-m1",
            "Order Completed",
            "seg-u1",
            "custom",
            Some("server"),
            Some(t0),
            Some(json!({"total": 3.5})),
        ),
        (
            "seg-m2",
            "identify",
            "seg-u1",
            "sdk",
            Some("server"),
            None,
            Some(json!({"plan": "pro", "email": "a@example.com"})),
        ),
        (
            "seg-m3",
            "Home",
            "seg-u1",
            "sdk",
            Some("server"),
            None,
            Some(json!({"path": "/"})),
        ),
        (
            "seg-m4",
            "Feed",
            "seg-anon",
            "sdk",
            Some("server"),
            None,
            Some(json!({})),
        ),
        (
            "seg-m5",
            "Viewed",
            "seg-anon",
            "custom",
            Some("server"),
            None,
            Some(json!({})),
        ),
        (
            "seg-m6",
            "group",
            "seg-u1",
            "sdk",
            Some("server"),
            None,
            Some(json!({"group_id": "acme", "traits": {"name": "Acme"}})),
        ),
        (
            "seg-m7",
            "alias",
            "seg-u1",
            "sdk",
            Some("server"),
            None,
            Some(json!({"previous_id": "seg-anon"})),
        ),
        (
            "rs-m1",
            "Song Played",
            "rs-u1",
            "custom",
            Some("server"),
            Some(t0),
            Some(json!({"song": "x"})),
        ),
        (
            "rs-m2",
            "identify",
            "rs-u1",
            "sdk",
            Some("server"),
            None,
            Some(json!({"plan": "free", "age": 30})),
        ),
        (
            "rs-m3",
            "Pricing",
            "rs-anon",
            "sdk",
            Some("server"),
            None,
            Some(json!({})),
        ),
        (
            "rs-m5",
            "alias",
            "rs-u1",
            "sdk",
            Some("server"),
            None,
            Some(json!({"previous_id": "rs-anon"})),
        ),
        (
            "0190c2a4-0000-7000-8000-000000000001",
            "signed up",
            "ph-u1",
            "custom",
            Some("server"),
            Some("1767323045678000"),
            None,
        ),
        (
            "0190c2a4-0000-7000-8000-000000000003",
            "$create_alias",
            "ph-u1",
            "sdk",
            Some("server"),
            None,
            None,
        ),
        (
            "0190c2a4-0000-7000-8000-000000000004",
            "viewed",
            "ph-anon",
            "custom",
            Some("server"),
            None,
            None,
        ),
    ];
    for (id, name, user, category, platform, occurred, props) in want {
        let r = row(&rows, id);
        assert_eq!(r["event_name"], name, "{r}");
        assert_eq!(r["user_id"], user, "{r}");
        assert_eq!(r["category"], category, "{r}");
        assert_eq!(r["platform"].as_str(), platform, "{r}");
        if let Some(t) = occurred {
            assert_eq!(r["occurred_us"], t, "{r}");
        }
        if let Some(p) = props {
            let got: Option<Value> = r["properties"]
                .as_str()
                .map(|t| serde_json::from_str(t).unwrap());
            assert_eq!(got, Some(p), "{r}");
        }
    }
    let ph: Value = serde_json::from_str(
        row(&rows, "0190c2a4-0000-7000-8000-000000000001")["properties"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(ph["source"], "ad");
    assert_eq!(ph["$lib"], "posthog-python");

    // Traits and $set of declared fields reached the profiles; the rest did not.
    for (user, field, value) in [
        ("seg-u1", "plan", json!("pro")),
        ("rs-u1", "plan", json!("free")),
        ("rs-u1", "age", json!(30)),
        ("ph-u1", "plan", json!("team")),
    ] {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (s, p) = call(
                "GET",
                &node.url(&format!("/v1/default/users/{user}")),
                &read,
                None,
            )
            .await;
            if s == 200 && p["fields"][field]["value"] == value {
                assert!(
                    p["fields"].get("email").is_none() && p["fields"].get("color").is_none(),
                    "{p}"
                );
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{user}.{field}: {s} {p}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
    }
    let aliases = ts.sql("SELECT previous_id, user_id FROM aliases ORDER BY previous_id");
    assert_eq!(
        aliases,
        vec![
            json!({"previous_id": "ph-anon", "user_id": "ph-u1"}),
            json!({"previous_id": "rs-anon", "user_id": "rs-u1"}),
            json!({"previous_id": "seg-anon", "user_id": "seg-u1"}),
        ]
    );

    // After the alias, an event under the anonymous id counts for the user.
    let seen = sdks(&node, &key, 2);
    assert_eq!(seen["segment"]["failed"], 1);
    let late = ts.sql_until(
        "SELECT user_id, \"count\" FROM event_stats WHERE event_name = 'Late'",
        |r| !r.is_empty(),
    );
    assert_eq!(late, vec![json!({"user_id": "seg-u1", "count": 1})]);

    bad_input(&node, &key, &read).await;

    // Erasing a user removes their aliases too (either side of the link).
    let admin = ts.create_key("default", "admin");
    let (s, b) = call("DELETE", &node.url("/v1/default/users/rs-u1"), &admin, None).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["erasure"]["rows_deleted"]["aliases"], 1, "{b}");
    node.terminate();

    // A rebuild applies every alias to every event: the anonymous ids' events count for
    // their users, and the anonymous ids have no profiles of their own.
    ts.cli_ok(&["jobs", "rebuild"]);
    let users: Vec<String> = ts
        .sql("SELECT user_id FROM profiles WHERE user_id LIKE '%anon%'")
        .iter()
        .map(|r| r["user_id"].to_string())
        .collect();
    // rs-anon's link went with the erased rs-u1; its own events stay its own.
    assert_eq!(users, vec!["\"rs-anon\"".to_string()]);
    let s = |v: &[(&str, i64)]| {
        v.iter()
            .map(|(n, c)| (n.to_string(), *c))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        stats(&ts, "seg-u1"),
        s(&[
            ("Feed", 1),
            ("Home", 1),
            ("Late", 1),
            ("Order Completed", 1),
            ("Viewed", 1),
            ("alias", 1),
            ("group", 1),
            ("identify", 1)
        ])
    );
    assert_eq!(stats(&ts, "rs-u1"), vec![]);
    assert_eq!(stats(&ts, "rs-anon"), s(&[("Pricing", 1)]));
    assert_eq!(
        stats(&ts, "ph-u1"),
        s(&[
            ("$create_alias", 1),
            ("$set", 1),
            ("signed up", 1),
            ("viewed", 1)
        ])
    );
}

mod refusals;
use refusals::bad_input;
