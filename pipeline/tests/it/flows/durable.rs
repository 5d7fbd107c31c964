//! Durable runs: a delay across a SIGKILL and a restart, `wait_for_event` met and timed
//! out, a segment-entered flow, and two nodes on one store delivering each (run, step)
//! under one webhook-id.

use std::collections::{BTreeMap, BTreeSet};

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_delay_survives_a_kill_and_waits_end_by_event_or_timeout() {
    let (rx, ts, node, admin) = setup(&["u1", "u2"]).await;
    let later = publish(&node, &admin, json!({"id": "later", "name": "Later",
        "steps": [{"id": "wait", "type": "delay", "duration": "8s"},
                  {"id": "post", "type": "webhook", "url": format!("{}/ok/later/{{{{ profile.user_id }}}}", rx.base())}]})).await;
    let waiter = publish(&node, &admin, json!({"id": "waiter", "name": "Waiter",
        "steps": [
            {"id": "w", "type": "wait_for_event", "event": "purchase", "timeout": "15s", "on_timeout": "nudge",
             "filter": "event.properties.amount > 10"},
            {"id": "thanks", "type": "webhook", "url": format!("{}/ok/thanks/{{{{ profile.user_id }}}}", rx.base()),
             "body": {"amount": "{{ steps.w.event.properties.amount }}"}, "next": "end"},
            {"id": "nudge", "type": "webhook", "url": format!("{}/ok/nudge/{{{{ profile.user_id }}}}", rx.base())},
            {"id": "end", "type": "exit"}]})).await;

    let started = Instant::now();
    let (s, b) = call(
        "POST",
        &node.url("/v1/default/flows/later/start"),
        &admin,
        Some(json!({"user_id": "u1"})),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    let run = b["runs"][0]["run_id"].as_str().unwrap().to_string();
    let ingest = node.ingest_key().to_string();
    let (s, b) = call(
        "POST",
        &node.url("/v1/default/flows/waiter/start"),
        &admin,
        Some(json!({"user_ids": ["u1", "u2"]})),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    // Both runs are stored as waiting before the process dies.
    let r = runs_until(&node, &admin, "later", 30, |r| {
        r.iter().any(|x| x["due_at"].is_string())
    })
    .await;
    assert_eq!(r[0]["status"], "running", "{r:?}");
    runs_until(&node, &admin, "waiter", 30, |r| {
        r.len() == 2 && r.iter().all(|x| x["status"] == "waiting")
    })
    .await;
    node.kill();
    assert!(rx.at("ok/").is_empty(), "nothing was due yet");

    let node = serve(&ts);
    // A smaller purchase does not pass the wait's filter; a larger one resumes u1's run.
    crate::harness::ingest(
        &node,
        "default",
        &ingest,
        json!([
            {"event_name": "purchase", "user_id": "u1", "properties": {"amount": 3}},
        ]),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    crate::harness::ingest(
        &node,
        "default",
        &ingest,
        json!([
            {"event_name": "purchase", "user_id": "u1", "properties": {"amount": 30}},
        ]),
    )
    .await;
    assert!(
        rx.wait("ok/thanks/u1", 30, |g| !g.is_empty()).await,
        "{:?}",
        rx.all()
    );
    let thanks = rx.at("ok/thanks/");
    assert_eq!(thanks.len(), 1, "{thanks:?}");
    assert_eq!(thanks[0].json(), json!({"amount": 30}));
    verify(&thanks, &waiter);

    assert!(
        rx.wait("ok/later/u1", 30, |g| !g.is_empty()).await,
        "the delay ended after the restart"
    );
    assert!(
        started.elapsed() >= Duration::from_secs(8),
        "the delay was cut short: {:?}",
        started.elapsed()
    );
    let got = rx.at("ok/later/");
    assert_eq!(got.len(), 1, "{got:?}");
    assert_eq!(
        got[0].id,
        format!("msg_{}_post", run.trim_start_matches("run_"))
    );
    verify(&got, &later);

    // u2 never bought: its wait times out and takes the on_timeout branch.
    assert!(
        rx.wait("ok/nudge/u2", 30, |g| !g.is_empty()).await,
        "{:?}",
        rx.all()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(rx.at("ok/nudge/u1").is_empty());
    assert!(rx.at("ok/thanks/u2").is_empty());
    let runs = runs_until(&node, &admin, "waiter", 30, |r| {
        r.iter().all(|x| x["status"] == "exited")
    })
    .await;
    let by_user: BTreeMap<String, String> = runs
        .iter()
        .map(|r| {
            (
                r["user_id"].as_str().unwrap().to_string(),
                r["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        by_user,
        BTreeMap::from([
            ("u1".into(), "exited".into()),
            ("u2".into(), "exited".into())
        ])
    );
    let (_, one) = call(
        "GET",
        &node.url(&format!(
            "/v1/default/flows/waiter/runs/{}",
            runs.iter().find(|r| r["user_id"] == "u2").unwrap()["id"]
                .as_str()
                .unwrap()
        )),
        &admin,
        None,
    )
    .await;
    assert_eq!(one["outputs"].get("w"), None, "{one}");
    let steps: Vec<&str> = one["log"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["step"].as_str())
        .collect();
    assert_eq!(steps, vec!["w", "w", "nudge", "end"], "{one}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_segment_entry_starts_a_flow_and_two_nodes_send_each_step_once() {
    let rx = Receiver::start().await;
    let ts = store(Backend::Local);
    let env = [
        ("TIDEMARK_JOBS__DEBOUNCE", "50ms"),
        ("TIDEMARK_LEASE_TTL", "3s"),
    ];
    let a = ts.serve(&[], &env);
    let admin = a.admin_key.clone().unwrap();
    let (s, b) = call("POST", &a.url("/v1/default/segments"), &admin,
        Some(json!({"id": "buyers", "name": "Buyers", "match": "all", "conditions": [{"event": "purchase", "op": "did"}]}))).await;
    assert_eq!(s, 201, "{b}");
    let secret = publish(&a, &admin, json!({"id": "seg", "name": "Welcome buyers",
        "starts": {"events": [{"names": ["segment-entered"], "segment": "buyers"}]},
        "steps": [{"id": "post", "type": "webhook", "url": format!("{}/ok/seg/{{{{ profile.user_id }}}}", rx.base()),
                   "body": {"segment": "{{ trigger.properties.segment_id }}"}}]})).await;
    let b2 = ts.tmp.path().join("wal-b");
    let b_node = ts.serve_with_wal(&b2, &[], &env);

    // Users enter the segment on node b's ingest; the flow worker (on whichever node holds
    // its lease) starts one run each.
    let users: Vec<String> = (0..10).map(|i| format!("buyer{i}")).collect();
    let events: Vec<Value> = users
        .iter()
        .map(|u| json!({"event_name": "purchase", "user_id": u}))
        .collect();
    crate::harness::ingest(&b_node, "default", a.ingest_key(), Value::Array(events)).await;
    assert!(
        rx.wait("ok/seg/", 60, |g| g.len() >= 10).await,
        "{:?}",
        rx.all().len()
    );
    let got = rx.at("ok/seg/");
    verify(&got, &secret);
    assert!(got.iter().all(|g| g.json() == json!({"segment": "buyers"})));

    // Many API starts through node b while node a, the first lease holder, is killed.
    for u in &users {
        let (s, b) = call(
            "POST",
            &b_node.url("/v1/default/flows/seg/start"),
            &admin,
            Some(json!({"user_id": u})),
        )
        .await;
        assert_eq!(s, 202, "{b}");
    }
    a.kill();
    let runs = runs_until(&b_node, &admin, "seg", 90, |r| {
        r.len() == 20 && r.iter().all(|x| x["status"] == "completed")
    })
    .await;
    assert_eq!(runs.len(), 20, "{runs:?}");
    assert!(runs.iter().all(|r| r["status"] == "completed"), "{runs:?}");
    let expected: BTreeSet<String> = runs
        .iter()
        .map(|r| {
            format!(
                "msg_{}_post",
                r["id"].as_str().unwrap().trim_start_matches("run_")
            )
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = rx.at("ok/seg/");
    let ids: BTreeSet<String> = got.iter().map(|g| g.id.clone()).collect();
    assert_eq!(ids, expected, "each (run, step) under one webhook-id");
    // At least once: a request repeated after the kill carries the same id and body.
    let mut bodies: BTreeMap<String, Bytes> = BTreeMap::new();
    for g in &got {
        let prev = bodies.entry(g.id.clone()).or_insert_with(|| g.body.clone());
        assert_eq!(prev, &g.body, "{}", g.id);
    }
    let per_user: BTreeMap<String, usize> = runs.iter().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r["user_id"].as_str().unwrap().to_string())
            .or_default() += 1;
        m
    });
    assert!(
        per_user.values().all(|n| *n == 2),
        "one segment run and one API run per user: {per_user:?}"
    );
    // The events table holds each run's flow-started once.
    let started = ts.sql_until(
        "select count(*) as n, count(distinct json_get_str(properties, 'run_id')) as d from events where event_name = 'flow-started'",
        |r| r[0]["n"] == 20,
    );
    assert_eq!(started[0]["n"], 20, "{started:?}");
    assert_eq!(started[0]["d"], 20, "{started:?}");
}

/// A crash right after a pass's journal is written, and right after its events are
/// committed: the restart applies the journal again, so every run is there once, each
/// `flow-*` event once, and each webhook step sent under its one id.
#[tokio::test(flavor = "multi_thread")]
async fn a_crash_in_the_middle_of_a_pass_loses_nothing_and_counts_nothing_twice() {
    let (rx, ts, node, admin) = setup(&["u1", "u2"]).await;
    let secret = publish(&node, &admin, json!({"id": "crash", "name": "Crash",
        "steps": [{"id": "post", "type": "webhook", "url": format!("{}/ok/crash/{{{{ profile.user_id }}}}", rx.base())}]})).await;
    node.kill();
    for (point, user) in [("flow-journal", "u1"), ("flow-events", "u2")] {
        let mut node = ts.serve(&[], &[("TIDEMARK_CRASH_AFTER", point)]);
        let (s, b) = call(
            "POST",
            &node.url("/v1/default/flows/crash/start"),
            &admin,
            Some(json!({"user_id": user})),
        )
        .await;
        assert_eq!(s, 202, "{b}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while node.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "{point}: the node did not crash");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let node = serve(&ts);
        let runs = runs_until(&node, &admin, "crash", 30, |r| {
            r.iter()
                .filter(|x| x["user_id"] == user && x["status"] == "completed")
                .count()
                == 1
        })
        .await;
        let mine: Vec<&Value> = runs.iter().filter(|r| r["user_id"] == user).collect();
        assert_eq!(mine.len(), 1, "{point}: {runs:?}");
        assert_eq!(mine[0]["status"], "completed", "{point}: {runs:?}");
        let id = format!(
            "msg_{}_post",
            mine[0]["id"].as_str().unwrap().trim_start_matches("run_")
        );
        let got = rx.at(&format!("ok/crash/{user}"));
        assert!(
            !got.is_empty() && got.iter().all(|g| g.id == id),
            "{point}: {got:?}"
        );
        verify(&got, &secret);
        let rows = ts.sql_until(
            &format!("select event_name, count(*) as n from events where event_name like 'flow-%' and user_id = '{user}' group by event_name order by event_name"),
            |r| r.len() == 3,
        );
        assert_eq!(
            rows,
            vec![
                json!({"event_name": "flow-completed", "n": 1}),
                json!({"event_name": "flow-started", "n": 1}),
                json!({"event_name": "flow-step-completed", "n": 1}),
            ],
            "{point}"
        );
        node.kill();
    }
}
