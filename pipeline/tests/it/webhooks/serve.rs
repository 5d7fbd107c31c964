//! Delivery from `serve`: signed events, filters, batching, retries and the delivery log.

use super::*;

/// Delivery from `serve`: filters, batching with profiles, retries, redirects, 410,
/// Retry-After, an endpoint that never answers beside ones that must not wait for it,
/// segment events (`system`), the delivery log, recover and the API's refusals.
#[tokio::test(flavor = "multi_thread")]
async fn serve_delivers_signed_events_with_retries_and_a_log() {
    let rx = Receiver::start(1).await;
    let ts = TestStore::new(Backend::Local);
    write_config(
        &ts,
        r#"allow_networks = ["127.0.0.0/8"]
retry_schedule = ["0s", "1s", "1s"]
jitter = 0.0
timeout = "3s"
poll_interval = "100ms"
log_interval = "200ms""#,
    );
    let node = ts.serve(&[], &[("TIDEMARK_JOBS__DEBOUNCE", "50ms")]);
    let admin = node.admin_key.clone().unwrap();
    let ingest = node.ingest_key().to_string();
    let hooks = node.url("/v1/default/webhooks");

    // Refusals name the field.
    for (body, field, says) in [
        (json!({"url": "http://10.1.2.3/x"}), "url", "private"),
        (
            json!({"url": "http://[::ffff:192.168.0.1]/x"}),
            "url",
            "private",
        ),
        (
            json!({"url": "gopher://x.example/"}),
            "url",
            "http:// or https://",
        ),
        (
            json!({"url": rx.url("ok"), "filter": {"categories": ["nope"]}}),
            "filter.categories[0]",
            "must be one of",
        ),
        (
            json!({"url": rx.url("ok"), "headers": {"webhook-signature": "x"}}),
            "headers.webhook-signature",
            "set by tidemark",
        ),
        (
            json!({"url": rx.url("ok"), "max_events": 5000}),
            "max_events",
            "1 to 1000",
        ),
        (
            json!({"url": rx.url("ok"), "secret": "whsec_short"}),
            "secret",
            "",
        ),
    ] {
        let (s, b) = call("POST", &hooks, &admin, Some(body.clone())).await;
        assert_eq!(s, 400, "{body}: {b}");
        assert_eq!(b["error"], "invalid_webhook", "{b}");
        let p = &b["problems"][0];
        assert_eq!(p["field"], field, "{b}");
        assert!(p["message"].as_str().unwrap().contains(says), "{b}");
    }
    let (s, _) = call("POST", &hooks, &ingest, Some(json!({"url": rx.url("ok")}))).await;
    assert_eq!(s, 403);

    let (ok, ok_secret) = create(&hooks, &admin, json!({"url": rx.url("ok"), "filter": {"events": ["order-*"], "categories": ["custom"]}, "headers": {"X-Team": "data"}})).await;
    let (_, blackhole_secret) = create(
        &hooks,
        &admin,
        json!({"url": rx.url("blackhole"), "max_in_flight": 2}),
    )
    .await;
    let _ = blackhole_secret;
    let (flaky, flaky_secret) = create(
        &hooks,
        &admin,
        json!({"url": rx.url("flaky"), "filter": {"events": ["order-placed"]}, "method": "PUT"}),
    )
    .await;
    let (redirect, _) = create(
        &hooks,
        &admin,
        json!({"url": rx.url("redirect"), "filter": {"events": ["order-placed"]}}),
    )
    .await;
    let (gone, _) = create(
        &hooks,
        &admin,
        json!({"url": rx.url("gone"), "filter": {"events": ["order-placed"]}}),
    )
    .await;
    let (_, busy_secret) = create(
        &hooks,
        &admin,
        json!({"url": rx.url("busy"), "filter": {"events": ["order-placed"]}}),
    )
    .await;
    let (_, batch_secret) = create(&hooks, &admin, json!({"url": rx.url("batch"), "filter": {"events": ["order-*"]}, "max_events": 10, "max_wait_ms": 300, "include_profile": true})).await;
    let (_, system_secret) = create(
        &hooks,
        &admin,
        json!({"url": rx.url("system"), "filter": {"categories": ["system"]}}),
    )
    .await;

    // A profile with a tag, applied before the events arrive.
    let (s, b) = call(
        "PUT",
        &node.url("/v1/default/users/u1"),
        &admin,
        Some(json!({"tags": {"add": ["vip"]}})),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    let (s, b) = call("POST", &node.url("/v1/default/segments"), &admin, Some(json!({"id": "placed", "name": "Placed an order", "match": "all", "conditions": [{"event": "order-placed", "op": "did"}]}))).await;
    assert_eq!(s, 201, "{b}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (_, b) = call("GET", &node.url("/v1/default/users/u1"), &admin, None).await;
        if b["tags"] == json!(["vip"]) {
            break;
        }
        assert!(Instant::now() < deadline, "profile write not applied: {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let sent = Instant::now();
    for batch in [
        events(20, "order-placed", "p"),
        events(5, "order-paid", "q"),
        events(5, "app-opened", "a"),
    ] {
        let (s, b) = post_json(
            &node.events_url("default"),
            Some(&ingest),
            &batch.to_string(),
        )
        .await;
        assert_eq!(s, 202, "{b}");
    }
    let placed: BTreeSet<String> = (0..20).map(|i| format!("p-{i}")).collect();
    let orders: BTreeSet<String> = placed
        .iter()
        .cloned()
        .chain((0..5).map(|i| format!("q-{i}")))
        .collect();

    // The endpoint that never answers does not hold up the others.
    assert!(
        rx.wait("ok", 10, |r| r.len() >= 25).await,
        "ok got {}",
        rx.at("ok").len()
    );
    let took = sent.elapsed();
    assert!(took < Duration::from_secs(8), "ok endpoint waited {took:?}");
    let ok_got = rx.at("ok");
    assert_eq!(
        ok_got
            .iter()
            .flat_map(Receipt::event_ids)
            .collect::<BTreeSet<_>>(),
        orders
    );
    assert_eq!(
        ok_got.len(),
        25,
        "one event per message, app-opened filtered out"
    );
    verify_all(&ok_got, &ok_secret);
    for r in &ok_got {
        assert_eq!(r.headers["x-team"], "data");
        let body = r.json();
        assert_eq!(body["type"], "events");
        assert_eq!(body["environment"], "default");
        assert_eq!(body["subscription_id"], ok.as_str());
        let e = &body["events"][0];
        assert_eq!(e["category"], "custom");
        assert_eq!(e["properties"]["note"], "Zoë");
        assert!(e["received_at"].as_str().unwrap().ends_with('Z'));
    }
    // The blackhole is being tried (its requests hang until the client's 3 s timeout).
    assert!(
        rx.wait("blackhole", 10, |r| !r.is_empty()).await,
        "the blackhole was never tried"
    );

    // flaky: two 500s then 200, same webhook-id on all three attempts.
    assert!(
        rx.wait("flaky", 15, |r| r.len() >= 60).await,
        "flaky got {}",
        rx.at("flaky").len()
    );
    let flaky_got = rx.at("flaky");
    verify_all(&flaky_got, &flaky_secret);
    let mut by_id: BTreeMap<String, Vec<&Receipt>> = BTreeMap::new();
    for r in &flaky_got {
        by_id.entry(r.id.clone()).or_default().push(r);
    }
    assert_eq!(by_id.len(), 20);
    for (id, rs) in &by_id {
        assert_eq!(rs.len(), 3, "{id}");
        assert!(
            rs.iter().all(|r| r.body == rs[0].body),
            "same body on every attempt"
        );
        assert!(
            rs[1].at - rs[0].at >= Duration::from_millis(900),
            "retry waited the schedule"
        );
    }

    // busy: 429 + Retry-After 1, then 200.
    assert!(rx.wait("busy", 15, |r| r.len() >= 40).await);
    verify_all(&rx.at("busy"), &busy_secret);

    // batching: at most 10 per message, every order event once, profile attached.
    assert!(
        rx.wait("batch", 15, |r| r
            .iter()
            .map(|x| x.event_ids().len())
            .sum::<usize>()
            >= 25)
            .await
    );
    let batch_got = rx.at("batch");
    verify_all(&batch_got, &batch_secret);
    assert!(
        batch_got.len() < 25 && batch_got.iter().all(|r| r.event_ids().len() <= 10),
        "{}",
        batch_got.len()
    );
    assert_eq!(
        rx.events_at("batch").into_iter().collect::<BTreeSet<_>>(),
        orders
    );
    let u1_events: Vec<Value> = batch_got
        .iter()
        .flat_map(|r| r.json()["events"].as_array().unwrap().clone())
        .filter(|e| e["user_id"] == "u1")
        .collect();
    assert!(!u1_events.is_empty());
    for e in &u1_events {
        assert_eq!(e["profile"]["tags"], json!(["vip"]), "{e}");
    }

    // segment events arrive as `system`.
    assert!(
        rx.wait("system", 30, |r| r.len() >= 5).await,
        "system got {}",
        rx.at("system").len()
    );
    let sys = rx.at("system");
    verify_all(&sys, &system_secret);
    for r in &sys {
        let e = &r.json()["events"][0];
        assert_eq!(
            (e["category"].as_str(), e["event_name"].as_str()),
            (Some("system"), Some("segment-entered"))
        );
        assert_eq!(e["properties"]["segment_id"], "placed");
    }
    assert_eq!(sys.len(), 5, "one entered event per user");

    // gone: 410 paused the subscription after its first attempt.
    let gone_url = format!("{hooks}/{gone}");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, b) = call("GET", &gone_url, &admin, None).await;
        if b["enabled"] == json!(false) {
            assert!(b["paused_reason"].as_str().unwrap().contains("410"), "{b}");
            break;
        }
        assert!(Instant::now() < deadline, "not paused: {b}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let gone_attempts = rx.at("gone").len();
    assert!((1..=8).contains(&gone_attempts), "{gone_attempts}");

    // redirect: 3 attempts (the schedule's length), then failed; the log says so.
    assert!(rx.wait("redirect", 15, |r| r.len() >= 60).await);
    let log_url = format!("{hooks}/{redirect}/deliveries?status=failed&limit=1000");
    let deadline = Instant::now() + Duration::from_secs(10);
    let failed = loop {
        let (s, b) = call("GET", &log_url, &admin, None).await;
        assert_eq!(s, 200, "{b}");
        let rows = b["deliveries"].as_array().unwrap().clone();
        if rows.len() >= 20 || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(failed.len(), 20);
    for row in &failed {
        assert_eq!(
            (row["attempt"].as_i64(), row["http_status"].as_i64()),
            (Some(3), Some(302)),
            "{row}"
        );
        assert!(
            row["error"]
                .as_str()
                .unwrap()
                .contains("redirect to http://127.0.0.1:9/elsewhere not followed"),
            "{row}"
        );
        assert_eq!(row["event_ids"].as_array().unwrap().len(), 1);
    }
    let failed_ids: BTreeSet<String> = failed
        .iter()
        .map(|r| r["message_id"].as_str().unwrap().to_string())
        .collect();
    // recover re-sends them with their ids.
    let before = rx.at("redirect").len();
    let (s, b) = call(
        "POST",
        &format!("{hooks}/{redirect}/recover"),
        &admin,
        Some(json!({"since": "1h"})),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    assert!(rx.wait("redirect", 15, |r| r.len() >= before + 60).await);
    let again: BTreeSet<String> = rx.at("redirect")[before..]
        .iter()
        .map(|r| r.id.clone())
        .collect();
    assert_eq!(again, failed_ids);

    // The flaky subscription's log: retrying, retrying, delivered for each message.
    let (_, b) = call(
        "GET",
        &format!("{hooks}/{flaky}/deliveries?limit=1000"),
        &admin,
        None,
    )
    .await;
    let rows = b["deliveries"].as_array().unwrap();
    let mut per: HashMap<&str, Vec<(i64, &str, i64)>> = HashMap::new();
    for r in rows {
        per.entry(r["message_id"].as_str().unwrap())
            .or_default()
            .push((
                r["attempt"].as_i64().unwrap(),
                r["status"].as_str().unwrap(),
                r["http_status"].as_i64().unwrap(),
            ));
    }
    assert_eq!(per.len(), 20, "{b}");
    for (_, mut attempts) in per {
        attempts.sort();
        assert_eq!(
            attempts,
            [
                (1, "retrying", 500),
                (2, "retrying", 500),
                (3, "delivered", 204)
            ]
        );
    }
    let (s, b) = call(
        "GET",
        &format!("{hooks}/{flaky}/deliveries?limit=0"),
        &admin,
        None,
    )
    .await;
    assert_eq!(
        (s, b["message"].as_str().unwrap_or_default()),
        (400, "limit: must be an integer from 1 to 1000")
    );

    // The deliveries table is plain SQL too.
    let rows = ts.sql(&format!("select count(*) as n from deliveries where subscription_id = '{ok}' and status = 'delivered'"));
    assert_eq!(rows[0]["n"], 25);

    // test, update, list, delete over the API.
    let one = format!("{hooks}/{ok}");
    let n = rx.at("ok").len();
    let (s, b) = call("POST", &format!("{one}/test"), &admin, None).await;
    assert_eq!(
        (s, &b["delivered"], &b["http_status"]),
        (200, &json!(true), &json!(204)),
        "{b}"
    );
    assert!(rx.wait("ok", 5, |r| r.len() > n).await);
    let test_msg = rx.at("ok")[n].clone();
    verify_all(std::slice::from_ref(&test_msg), &ok_secret);
    assert_eq!(test_msg.json()["type"], "tidemark.test");
    assert_eq!(test_msg.id, b["message_id"].as_str().unwrap());
    let (s, b) = call(
        "PATCH",
        &one,
        &admin,
        Some(json!({"max_events": 5, "description": "orders"})),
    )
    .await;
    assert_eq!(
        (s, &b["max_events"], &b["description"]),
        (200, &json!(5), &json!("orders")),
        "{b}"
    );
    assert_eq!(
        b["filter"]["events"],
        json!(["order-*"]),
        "untouched settings stay"
    );
    let (s, b) = call(
        "PATCH",
        &one,
        &admin,
        Some(json!({"secret": SECRET_EXAMPLE})),
    )
    .await;
    assert_eq!(
        (s, b["problems"][0]["field"].as_str()),
        (400, Some("secret")),
        "{b}"
    );
    let (s, b) = call("GET", &hooks, &admin, None).await;
    assert_eq!((s, b["webhooks"].as_array().unwrap().len()), (200, 8));
    assert!(
        !b.to_string().contains("whsec_"),
        "secrets are never listed"
    );
    let (s, _) = call("DELETE", &one, &admin, None).await;
    assert_eq!(s, 204);
    let (s, b) = call("GET", &one, &admin, None).await;
    assert_eq!(s, 404, "{b}");
    let (s, _) = call("GET", &format!("{hooks}/wh_nope/deliveries"), &admin, None).await;
    assert_eq!(s, 404);
    drop(node);
}
