//! The segments API and CLI, and users entering and leaving segments as events arrive.

use super::*;

/// The segments API and CLI over a running node: CRUD, preview, explain, every refusal.
#[tokio::test(flavor = "multi_thread")]
async fn segments_api_and_cli() {
    use crate::harness::{Backend, TestStore, call};
    let ts = TestStore::new(Backend::Local);
    let node = ts.serve(&["--ack", "commit"], &[("TIDEMARK_JOBS__DEBOUNCE", "50ms")]);
    let admin = node.admin_key.clone().unwrap();
    let ingest = node.ingest_key().to_string();
    let read = ts.create_key("default", "read");
    let (s, b) = call(
        "POST",
        &node.url("/v1/default/fields"),
        &admin,
        Some(json!({"name": "plan", "type": "text"})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let (s, b) = call(
        "POST",
        &node.url("/v1/default/users:batch"),
        &ingest,
        Some(json!([
            {"id": "ann", "set": {"plan": "gold"}, "tags": {"add": ["vip"]}},
            {"id": "bob", "set": {"plan": "free"}}
        ])),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    let events = json!([{"event_id": "e1", "event_name": "card-opened", "user_id": "ann"}]);
    let (s, _) = crate::harness::post_json(
        &node.events_url("default"),
        Some(&ingest),
        &events.to_string(),
    )
    .await;
    assert_eq!(s, 202);
    let preview_url = node.url("/v1/default/segments:preview");
    let gold_opened = json!({"match": "all", "conditions": [
        {"field": "plan", "op": "eq", "value": "gold"},
        {"event": "card-opened", "op": "did", "within": "-7d"}]});
    // wait until the jobs folded the writes and the event in
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let b = loop {
        let (s, b) = call("POST", &preview_url, &read, Some(gold_opened.clone())).await;
        assert_eq!(s, 200, "{b}");
        if b["count"] == 1 {
            break b;
        }
        assert!(std::time::Instant::now() < deadline, "{b}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(b["sample"], json!(["ann"]));
    assert!(
        b["explain"]["sql"]
            .as_str()
            .unwrap()
            .contains("FROM profiles p")
    );
    let (s, b) = call(
        "POST",
        &preview_url,
        &read,
        Some(json!({"match": "any", "conditions": [{"tag": "vip", "op": "has_not"}]})),
    )
    .await;
    assert_eq!((s, b["sample"].clone()), (200, json!(["bob"])), "{b}");
    let (s, b) = call(
        "POST",
        &preview_url,
        &read,
        Some(json!({"match": "all", "conditions": [{"field": "nope", "op": "exists"}]})),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["error"], "invalid_segment");
    assert_eq!(b["problems"][0]["field"], "conditions[0].field");

    // create, duplicate, invalid, wrong role
    let seg_url = node.url("/v1/default/segments");
    let mut def = gold_opened.clone();
    def["id"] = json!("gold-active");
    def["name"] = json!("Gold, active");
    let (s, b) = call("POST", &seg_url, &admin, Some(def.clone())).await;
    assert_eq!(s, 201, "{b}");
    assert_eq!(b["version"], 1);
    let (s, _) = call("POST", &seg_url, &admin, Some(def.clone())).await;
    assert_eq!(s, 409);
    let (s, _) = call("POST", &seg_url, &read, Some(def.clone())).await;
    assert_eq!(s, 403);
    let (s, b) = call("POST", &seg_url, &admin, Some(json!({"id": "Bad Id", "name": "", "match": "most", "conditions": [{"tag": "x", "op": "maybe"}]}))).await;
    assert_eq!(s, 400, "{b}");
    let paths: Vec<_> = b["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["field"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(paths, ["id", "name", "match", "conditions[0].op"], "{b}");

    // read, explain, update, list, delete
    let one = node.url("/v1/default/segments/gold-active");
    let (s, b) = call("GET", &one, &read, None).await;
    assert_eq!(s, 200, "{b}");
    let params: Vec<_> = b["explain"]["params"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect();
    assert!(
        params.contains(&"gold".to_string()) && params.contains(&"card-opened".to_string()),
        "{params:?}"
    );
    let sql = b["explain"]["sql"].as_str().unwrap();
    assert!(
        !sql.contains("gold") && !sql.contains("card-opened"),
        "{sql}"
    );
    let mut changed = def.clone();
    changed["conditions"] = json!([{"field": "plan", "op": "eq", "value": "free"}]);
    let (s, b) = call("PUT", &one, &admin, Some(changed)).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["version"], 2);
    let (s, b) = call(
        "PUT",
        &node.url("/v1/default/segments/other"),
        &admin,
        Some(def.clone()),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    let (s, b) = call("GET", &seg_url, &read, None).await;
    assert_eq!(s, 200);
    assert_eq!(b["segments"].as_array().unwrap().len(), 1);
    let (s, _) = call("DELETE", &one, &admin, None).await;
    assert_eq!(s, 200);
    let (s, _) = call("GET", &one, &read, None).await;
    assert_eq!(s, 404);

    // the CLI: YAML definitions, explain, preview, and a refusal naming the path
    let yaml = ts.tmp.path().join("vip.yaml");
    std::fs::write(
        &yaml,
        "id: vips\nname: VIPs\nmatch: all\nconditions:\n  - tag: vip\n    op: has\n",
    )
    .unwrap();
    ts.cli_ok(&[
        "segments",
        "add",
        yaml.to_str().unwrap(),
        "--env",
        "default",
    ]);
    let out = ts.cli(&["segments", "explain", "vips", "--env", "default"]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        text.contains("array_has(p.\"tags\", CAST($2 AS VARCHAR))") && text.contains("-- $2 = vip"),
        "{text}"
    );
    let out = ts.cli(&[
        "segments",
        "preview",
        yaml.to_str().unwrap(),
        "--env",
        "default",
    ]);
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(text.starts_with("1 member(s)\n  ann"), "{text}");
    let bad = ts.tmp.path().join("bad.json");
    std::fs::write(&bad, r#"{"id": "b", "name": "b", "match": "all", "conditions": [{"event": "x", "op": "did", "count": {"op": "gte"}}]}"#).unwrap();
    let out = ts.cli(&["segments", "add", bad.to_str().unwrap(), "--env", "default"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("conditions[0].count:"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = ts.cli(&["segments", "list", "--env", "default"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("vips"));

    // inside serve, the segments are evaluated right after the profile job changes profiles
    let events = json!([{"event_id": "e2", "event_name": "open", "user_id": "ann"}]);
    let (s, _) = crate::harness::post_json(
        &node.events_url("default"),
        Some(&ingest),
        &events.to_string(),
    )
    .await;
    assert_eq!(s, 202);
    let members = node.url("/v1/default/segments/vips/members");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (s, b) = call("GET", &members, &read, None).await;
        assert_eq!(s, 200, "{b}");
        let ids: Vec<_> = b["members"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["user_id"].clone())
            .collect();
        if ids == [json!("ann")] {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{b}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

/// Events flow in, a user enters a segment (the `segment-entered` event is in `events`, the
/// profile lists the segment, the members API pages it); time passes (an injected clock:
/// `segments run --now`) and the user exits.
#[tokio::test(flavor = "multi_thread")]
async fn users_enter_and_exit_with_events() {
    use crate::harness::{Backend, TestStore, call};
    let ts = TestStore::new(Backend::Local);
    let node = ts.serve(
        &["--ack", "commit"],
        &[
            ("TIDEMARK_JOBS__DEBOUNCE", "50ms"),
            ("TIDEMARK_SEGMENTS__INTERVAL", "0s"),
        ],
    );
    let admin = node.admin_key.clone().unwrap();
    let ingest = node.ingest_key().to_string();
    let def = json!({"id": "recent-openers", "name": "Opened a card today", "match": "all",
                     "conditions": [{"event": "card-opened", "op": "did", "within": "-1d"}]});
    let (s, b) = call("POST", &node.url("/v1/default/segments"), &admin, Some(def)).await;
    assert_eq!(s, 201, "{b}");
    let events = json!([
        {"event_id": "o1", "event_name": "card-opened", "user_id": "ann", "platform": "ios"},
        {"event_id": "o2", "event_name": "open", "user_id": "bob"}
    ]);
    let (s, _) = crate::harness::post_json(
        &node.events_url("default"),
        Some(&ingest),
        &events.to_string(),
    )
    .await;
    assert_eq!(s, 202);
    let ann_url = node.url("/v1/default/users/ann");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let seen = loop {
        let (s, p) = call("GET", &ann_url, &admin, None).await;
        if s == 200 && p["event_stats"].as_array().is_some_and(|a| a.len() == 1) {
            break p;
        }
        assert!(std::time::Instant::now() < deadline, "{s} {p}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let last_seen = seen["last_seen_at"].clone();
    let run = |now: chrono::DateTime<chrono::Utc>| {
        let out = ts.cli_ok(&["segments", "run", "--now", &now.to_rfc3339()]);
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    let now = chrono::Utc::now();
    let out = run(now);
    assert!(
        out.contains("default: run 1, 1 segment(s), 1 entered, 0 exited"),
        "{out}"
    );
    let (s, b) = call(
        "GET",
        &node.url("/v1/default/segments/recent-openers/members"),
        &admin,
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["members"].as_array().unwrap().len(), 1);
    assert_eq!(b["members"][0]["user_id"], "ann");
    // the entered event is a system event in `events`; it never makes ann "seen"
    let rows = ts.sql(
        "SELECT event_name, category, user_id, properties FROM events WHERE category = 'system'",
    );
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["event_name"], "segment-entered");
    let props: Value = serde_json::from_str(rows[0]["properties"].as_str().unwrap()).unwrap();
    assert_eq!(
        props,
        json!({"segment_id": "recent-openers", "segment_name": "Opened a card today"})
    );
    // once the jobs folded the entered event in (its event_stats row), ann's activity
    // columns still count only her own event
    let p = loop {
        let (_, p) = call("GET", &ann_url, &admin, None).await;
        if p["event_stats"].as_array().is_some_and(|a| a.len() == 2) {
            break p;
        }
        assert!(std::time::Instant::now() < deadline, "{p}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(p["last_seen_at"], last_seen);
    assert_eq!(p["event_count"], 1, "{p}");
    assert_eq!(p["last_event_name"], "card-opened", "{p}");
    assert_eq!(p["segments"], json!(["recent-openers"]));
    // the same time again: nothing changes
    assert!(run(now).contains("0 entered, 0 exited"));
    // two days later ann has not opened a card for a day: she exits. The first attempt
    // crashes after committing its changes (before the events and the members); the next
    // run completes it, so the exit is recorded and emitted exactly once.
    let later = (now + chrono::Duration::days(2)).to_rfc3339();
    let mut crash = std::process::Command::new(crate::harness::BIN);
    crash
        .args(["segments", "run", "--now", &later, "--data", &ts.data])
        .env("TIDEMARK_CRASH_AFTER", "segment-changes");
    let out = crash.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(
        err.contains("crashing after segment-changes"),
        "the injected crash did not happen: {err}"
    );
    let out = run(now + chrono::Duration::days(2));
    assert!(
        out.contains("1 change(s) of an interrupted run completed"),
        "{out}"
    );
    assert!(out.contains("0 entered, 0 exited"), "{out}");
    let (_, b) = call(
        "GET",
        &node.url("/v1/default/segments/recent-openers/members"),
        &admin,
        None,
    )
    .await;
    assert_eq!(b["members"], json!([]));
    let rows =
        ts.sql("SELECT event_name FROM events WHERE category = 'system' ORDER BY event_name");
    let names: Vec<_> = rows
        .iter()
        .map(|r| r["event_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["segment-entered", "segment-exited"]);
    let rows = ts.sql("SELECT change, user_id FROM segment_changes ORDER BY run");
    assert_eq!(
        rows,
        vec![
            json!({"change": "entered", "user_id": "ann"}),
            json!({"change": "exited", "user_id": "ann"})
        ]
    );
    // a changed definition is re-evaluated: with a 3-day window ann is back in
    let wider = json!({"name": "Opened a card lately", "match": "all",
                       "conditions": [{"event": "card-opened", "op": "did", "within": "-3d"}]});
    let (s, b) = call(
        "PUT",
        &node.url("/v1/default/segments/recent-openers"),
        &admin,
        Some(wider),
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let out = run(now + chrono::Duration::days(2));
    assert!(out.contains("1 entered, 0 exited"), "{out}");
    let rows = ts.sql(
        "SELECT properties FROM events WHERE event_name = 'segment-entered' ORDER BY received_at",
    );
    assert_eq!(rows.len(), 2);
    assert!(
        rows[1]["properties"]
            .as_str()
            .unwrap()
            .contains("Opened a card lately")
    );
    let (s, _) = call(
        "GET",
        &node.url("/v1/default/segments/nope/members"),
        &admin,
        None,
    )
    .await;
    assert_eq!(s, 404);
}
