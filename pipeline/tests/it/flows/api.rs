//! The flows API: validation, starts with variables and idempotency keys, signed and
//! personalised requests, the profile left alone, redaction in `events`, previews,
//! event-triggered flows, failures that say so, bulk retry and auto-pause.

use std::sync::atomic::Ordering;

use super::*;

fn problems(b: &Value) -> Vec<String> {
    b["problems"]
        .as_array()
        .unwrap_or(&Vec::new())
        .iter()
        .map(|p| {
            format!(
                "{}: {}",
                p["field"].as_str().unwrap_or(""),
                p["message"].as_str().unwrap_or("")
            )
        })
        .collect()
}

fn has(list: &[String], prefix: &str) -> bool {
    list.iter().any(|l| l.starts_with(prefix))
}

#[tokio::test(flavor = "multi_thread")]
async fn api_starts_send_personalised_signed_requests_and_leave_the_profile_alone() {
    let (rx, ts, node, admin) = setup(&["u1", "u2", "u3"]).await;
    let flows = node.url("/v1/default/flows");

    // Saving validates everything at once, each problem with its path.
    let bad = json!({"name": "Bad", "variables": {"coupon": {"type": "text"}},
        "steps": [
            {"id": "a", "type": "webhook", "url": "http://10.0.0.1/x",
             "body": {"c": "{{ variables.copon }}", "broken": "{{ variables.coupon "}},
            {"id": "b", "type": "exit"},
            {"id": "c", "type": "webhook", "url": format!("{}/ok", rx.base())}]});
    let (s, b) = call("POST", &flows, &admin, Some(bad)).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["error"], "invalid_flow");
    let p = problems(&b);
    assert!(has(&p, "steps[0].url: 'http://10.0.0.1/x'"), "{p:#?}");
    assert!(
        has(
            &p,
            "steps[0].body.c: 'variables.copon': no variable 'copon'"
        ),
        "{p:#?}"
    );
    assert!(
        has(&p, "steps[0].body.broken: does not compile: syntax error"),
        "{p:#?}"
    );
    assert!(has(&p, "steps[2]: no step reaches 'c'"), "{p:#?}");

    let flow = json!({"id": "offer", "name": "Offer",
        "variables": {
            "coupon": {"type": "text", "default": "WELCOME"},
            "amount": {"type": "number", "default": 5, "allow_override": false},
            "order": {"type": "json", "required": true},
            "email": {"type": "text", "redact": true}},
        "steps": [{"id": "post", "type": "webhook",
            "url": format!("{}/ok/{{{{ profile.user_id }}}}?coupon={{{{ variables.coupon }}}}", rx.base()),
            "headers": {"x-run": "{{ run.id }}"},
            "body": {"user": "{{ profile.user_id }}", "coupon": "{{ variables.coupon }}",
                     "amount": "{{ variables.amount }}", "order": "{{ variables.order }}",
                     "email": "{{ variables.email }}", "note": "Hi {{ profile.user_id }}, \"{{ variables.coupon }}\""}}]});
    let (s, b) = call("POST", &flows, &admin, Some(flow.clone())).await;
    assert_eq!(s, 201, "{b}");
    let secret = b["secret"].as_str().unwrap().to_string();
    assert!(secret.starts_with("whsec_"));
    let start = node.url("/v1/default/flows/offer/start");
    let (s, b) = call(
        "POST",
        &start,
        &admin,
        Some(json!({"user_id": "u1", "variables": {"order": 1}})),
    )
    .await;
    assert_eq!(s, 409, "unpublished: {b}");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("no published version"),
        "{b}"
    );
    let (s, b) = call(
        "POST",
        &node.url("/v1/default/flows/offer/publish"),
        &admin,
        None,
    )
    .await;
    assert_eq!((s, b["version"].clone()), (200, json!(1)), "{b}");

    let (s, b) = call(
        "PUT",
        &node.url("/v1/default/users/u1"),
        &admin,
        Some(json!({"tags": {"add": ["vip"]}})),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    ts.sql_until(
        "select count(*) as n from profiles where array_has(tags, 'vip')",
        |r| r[0]["n"] == 1,
    );
    let fields_before = ts.sql("select user_id, fields, tags from profiles order by user_id");
    let changes_before = ts.sql("select count(*) as n from profile_changes");

    // Refusals name the field, the value and the problem; nothing starts.
    for (body, field, says) in [
        (
            json!({"user_id": "u1", "variables": {"coupon": 7, "order": 1}}),
            "variables.coupon",
            "7 is not text",
        ),
        (
            json!({"user_id": "u1", "variables": {}}),
            "variables.order",
            "is required (json)",
        ),
        (
            json!({"user_id": "u1", "variables": {"order": 1, "copon": "x"}}),
            "variables.copon",
            "unknown variable; the flow declares amount, coupon, email, order",
        ),
        (
            json!({"user_id": "ghost", "variables": {"order": 1}}),
            "user_id",
            "no user 'ghost' in environment 'default'",
        ),
        (
            json!({"segment": "nope", "variables": {"order": 1}}),
            "segment",
            "no segment 'nope'",
        ),
        (
            json!({"user_id": "u1", "user_ids": ["u2"], "variables": {"order": 1}}),
            "user_id",
            "exactly one of",
        ),
        (
            json!({"user_id": "u1", "variables": {"order": "x".repeat(20_000)}}),
            "variables.order",
            "at most 16384",
        ),
        (
            json!({"user_id": "u1", "variables": {"order": 1}, "when": 1}),
            "when",
            "unknown field",
        ),
    ] {
        let (s, b) = call("POST", &start, &admin, Some(body.clone())).await;
        assert_eq!(s, 400, "{body}: {b}");
        assert_eq!(b["error"], "invalid_start", "{b}");
        let p = &b["problems"][0];
        assert_eq!(p["field"], field, "{b}");
        assert!(
            p["message"].as_str().unwrap().contains(says),
            "{says} in {b}"
        );
    }
    let (s, _) = call(
        "POST",
        &node.url("/v1/default/flows/nope/start"),
        &admin,
        Some(json!({"user_id": "u1"})),
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = call(
        "POST",
        &start,
        node.ingest_key(),
        Some(json!({"user_id": "u1"})),
    )
    .await;
    assert_eq!(s, 403);

    // A start with variables, twice with one idempotency key.
    let body = json!({"user_id": "u1", "idempotency_key": "order-7",
        "variables": {"coupon": "VIP", "amount": 99, "order": {"id": 7, "items": [1, 2]}, "email": "ann@example.com"}});
    let (s, first) = call("POST", &start, &admin, Some(body.clone())).await;
    assert_eq!(s, 202, "{first}");
    assert_eq!(
        first["variables"]["coupon"],
        json!({"value": "VIP", "source": "trigger"})
    );
    assert_eq!(
        first["variables"]["amount"],
        json!({"value": 5, "source": "refused_override"})
    );
    assert_eq!(first["ignored"]["amount"]["value"], 99);
    assert_eq!(first["variables"]["email"]["value"], "[redacted]");
    let run = first["runs"][0]["run_id"].as_str().unwrap().to_string();
    let (s, again) = call("POST", &start, &admin, Some(body)).await;
    assert_eq!(s, 200, "{again}");
    assert_eq!(again["replayed"], true);
    assert_eq!(again["runs"], first["runs"]);

    assert!(rx.wait("ok/u1", 30, |g| !g.is_empty()).await, "no request");
    tokio::time::sleep(Duration::from_secs(1)).await;
    let got = rx.at("ok/u1");
    assert_eq!(got.len(), 1, "one start, one request: {got:?}");
    verify(&got, &secret);
    let g = &got[0];
    assert_eq!(g.query, "coupon=VIP");
    assert_eq!(g.id, format!("msg_{}_post", run.trim_start_matches("run_")));
    assert_eq!(g.headers["x-run"].to_str().unwrap(), run);
    assert_eq!(
        g.json(),
        json!({"user": "u1", "coupon": "VIP", "amount": 5, "order": {"id": 7, "items": [1, 2]},
               "email": "ann@example.com", "note": "Hi u1, \"VIP\""})
    );
    let runs = runs_until(&node, &admin, "offer", 30, |r| {
        r.iter().any(|x| x["status"] == "completed")
    })
    .await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0]["status"], "completed");
    let (s, one) = call(
        "GET",
        &node.url(&format!("/v1/default/flows/offer/runs/{run}")),
        &admin,
        None,
    )
    .await;
    assert_eq!(s, 200);
    assert_eq!(one["variables"]["email"], "[redacted]", "{one}");
    let what: Vec<&str> = one["log"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["what"].as_str().unwrap())
        .collect();
    assert_eq!(what, vec!["started", "completed", "completed"]);
    assert_eq!(one["outputs"]["post"]["body"]["ticket"], 42);

    // The flow's events are in `events`, the redacted value nowhere.
    let evs = ts.sql_until(
        "select event_name, properties from events where category = 'system' and event_name like 'flow-%' order by event_name",
        |r| r.len() >= 3,
    );
    let names: Vec<&str> = evs
        .iter()
        .map(|e| e["event_name"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        vec!["flow-completed", "flow-started", "flow-step-completed"]
    );
    let started: Value = serde_json::from_str(evs[1]["properties"].as_str().unwrap()).unwrap();
    assert_eq!(started["run_id"], run);
    assert_eq!(started["variables"]["email"], "[redacted]");
    assert_eq!(started["variables"]["coupon"], "VIP");
    assert_eq!(
        ts.sql("select count(*) as n from events where properties like '%ann@example.com%'")[0]["n"],
        0
    );

    // The profile is what it was: no variable reached profile_changes or profiles.
    assert_eq!(
        ts.sql("select user_id, fields, tags from profiles order by user_id"),
        fields_before
    );
    assert_eq!(
        ts.sql("select count(*) as n from profile_changes"),
        changes_before
    );
    assert_eq!(
        ts.sql(
            "select count(*) as n from profiles where fields like '%VIP%' or fields like '%ann@%'"
        )[0]["n"],
        0
    );

    // A preview renders for one user and sends nothing.
    let before = rx.all().len();
    let (s, p) = call(
        "POST",
        &node.url("/v1/default/flows/offer/preview"),
        &admin,
        Some(json!({"user_id": "u2", "variables": {"order": {"id": 9}, "amount": 1}})),
    )
    .await;
    assert_eq!(s, 200, "{p}");
    assert_eq!(p["sent"], false);
    assert_eq!(
        p["variables"]["coupon"],
        json!({"value": "WELCOME", "source": "default"})
    );
    assert_eq!(p["ignored"]["amount"]["value"], 1);
    let req = &p["steps"][0]["request"];
    assert_eq!(req["url"], format!("{}/ok/u2?coupon=WELCOME", rx.base()));
    assert_eq!(req["body"]["order"], json!({"id": 9}));
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rx.all().len(), before, "a preview sent a request");
    assert_eq!(
        runs_until(&node, &admin, "offer", 0, |_| true).await.len(),
        1,
        "a preview stored a run"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn events_start_flows_and_failures_say_so_then_retry_in_bulk() {
    let (rx, ts, node, admin) = setup(&["u1", "u2", "u3"]).await;

    // An event filter starts a run per matching event, with its properties as variables.
    let secret = publish(&node, &admin, json!({"id": "trig", "name": "Checkout",
        "variables": {"coupon": {"type": "text", "default": "NONE"}, "total": {"type": "number"}},
        "starts": {"events": [{"names": ["checkout-*"], "categories": ["custom"]}]},
        "steps": [{"id": "post", "type": "webhook", "url": format!("{}/ok/trig/{{{{ profile.user_id }}}}", rx.base()),
                   "body": {"coupon": "{{ variables.coupon }}", "total": "{{ variables.total }}",
                            "event": "{{ trigger.event_name }}"}}]})).await;
    crate::harness::ingest(&node, "default", node.ingest_key(), json!([
        {"event_id": "e1", "event_name": "checkout-started", "user_id": "u2", "properties": {"coupon": "EVT", "total": 12.5}},
        {"event_id": "e2", "event_name": "browse", "user_id": "u2"},
        {"event_id": "e3", "event_name": "checkout-done", "user_id": "u3", "properties": {"total": "not a number"}},
    ])).await;
    assert!(
        rx.wait("ok/trig/", 30, |g| g.len() >= 2).await,
        "{:?}",
        rx.all()
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = rx.at("ok/trig/");
    assert_eq!(got.len(), 2, "{got:?}");
    verify(&got, &secret);
    let u2 = got.iter().find(|g| g.path == "ok/trig/u2").unwrap();
    assert_eq!(
        u2.json(),
        json!({"coupon": "EVT", "total": 12.5, "event": "checkout-started"})
    );
    let u3 = got.iter().find(|g| g.path == "ok/trig/u3").unwrap();
    assert_eq!(
        u3.json(),
        json!({"coupon": "NONE", "total": null, "event": "checkout-done"})
    );

    // A failing destination says so: the run fails with the answer, flow-step-failed.
    rx.failing.store(true, Ordering::SeqCst);
    publish(&node, &admin, json!({"id": "sw", "name": "Switch",
        "steps": [{"id": "post", "type": "webhook", "url": format!("{}/switch/{{{{ profile.user_id }}}}", rx.base())}]})).await;
    let (s, b) = call(
        "POST",
        &node.url("/v1/default/flows/sw/start"),
        &admin,
        Some(json!({"user_ids": ["u1", "u2"]})),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    let runs = runs_until(&node, &admin, "sw", 30, |r| {
        r.len() == 2 && r.iter().all(|x| x["status"] == "failed")
    })
    .await;
    assert!(runs.iter().all(|r| r["status"] == "failed"), "{runs:?}");
    assert!(
        runs[0]["error"]
            .as_str()
            .unwrap()
            .contains("post: HTTP 400: switched off"),
        "{runs:?}"
    );
    let failed = ts.sql_until(
        "select count(*) as n from events where event_name = 'flow-step-failed' and properties like '%switched off%'",
        |r| r[0]["n"] == 2,
    );
    assert_eq!(failed[0]["n"], 2);

    // Bulk retry of the failed runs since a time: same webhook-id per (run, step).
    rx.failing.store(false, Ordering::SeqCst);
    let (s, b) = call(
        "POST",
        &node.url("/v1/default/flows/sw/retry"),
        &admin,
        Some(json!({"since": "1h"})),
    )
    .await;
    assert_eq!((s, b["retrying"].clone()), (202, json!(2)), "{b}");
    let runs = runs_until(&node, &admin, "sw", 30, |r| {
        r.iter().all(|x| x["status"] == "completed")
    })
    .await;
    assert!(runs.iter().all(|r| r["status"] == "completed"), "{runs:?}");
    for r in &runs {
        let id = format!(
            "msg_{}_post",
            r["id"].as_str().unwrap().trim_start_matches("run_")
        );
        let n = rx.all().iter().filter(|g| g.id == id).count();
        assert_eq!(n, 2, "{id}: one failed attempt, one after the retry");
    }

    // Runs that keep failing pause the flow, with the reason; a paused flow starts nothing.
    publish(&node, &admin, json!({"id": "broken", "name": "Broken",
        "steps": [{"id": "post", "type": "webhook", "url": format!("{}/bad/{{{{ profile.user_id }}}}", rx.base())}]})).await;
    let (s, _) = call(
        "POST",
        &node.url("/v1/default/flows/broken/start"),
        &admin,
        Some(json!({"user_ids": ["u1", "u2", "u3"]})),
    )
    .await;
    assert_eq!(s, 202);
    let deadline = Instant::now() + Duration::from_secs(30);
    let flow = loop {
        let (_, f) = call("GET", &node.url("/v1/default/flows/broken"), &admin, None).await;
        if f["enabled"] == false || Instant::now() > deadline {
            break f;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(flow["enabled"], false, "{flow}");
    assert!(
        flow["paused_reason"]
            .as_str()
            .unwrap()
            .starts_with("3 runs failed in a row; last: HTTP 400"),
        "{flow}"
    );
    let (s, b) = call(
        "POST",
        &node.url("/v1/default/flows/broken/start"),
        &admin,
        Some(json!({"user_id": "u1"})),
    )
    .await;
    assert_eq!(s, 409, "{b}");
    assert!(b["message"].as_str().unwrap().contains("is paused"), "{b}");

    // The list shows counts from the flow-* events.
    let (_, list) = call("GET", &node.url("/v1/default/flows"), &admin, None).await;
    let sw = list["flows"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["id"] == "sw")
        .unwrap();
    assert_eq!(sw["runs"]["started"], 2, "{sw}");
    assert_eq!(sw["runs"]["completed"], 2, "{sw}");
    assert_eq!(sw["runs"]["failed"], 2, "{sw}");
}
