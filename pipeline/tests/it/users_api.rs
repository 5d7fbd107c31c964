//! The users API over real HTTP: the field registry, profile writes (single and batch)
//! with every validation error, and profile reads with tags, typed fields and events.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Backend, TestStore, call};

/// Polls `GET url` until `done` holds for a 200 body (30 s at most).
async fn read_until(url: &str, key: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = call("GET", url, key, None).await;
        if status == 200 && done(&body) {
            return body;
        }
        assert!(
            Instant::now() < deadline,
            "condition not reached; last {status}: {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn problems(body: &Value) -> Vec<(u64, String, String)> {
    body["problems"]
        .as_array()
        .unwrap_or_else(|| panic!("no problems in {body}"))
        .iter()
        .map(|p| {
            (
                p["index"].as_u64().unwrap(),
                p["field"].as_str().unwrap_or("").to_string(),
                p["message"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn fields_writes_and_reads() {
    let ts = TestStore::new(Backend::Local);
    let node = ts.serve(&["--ack", "commit"], &[("TIDEMARK_JOBS__DEBOUNCE", "50ms")]);
    let admin = node.admin_key.clone().unwrap();
    let ingest = node.ingest_key().to_string();
    let read = ts.create_key("default", "read");
    let fields_url = node.url("/v1/default/fields");

    // --- field registry ---
    for (name, ty) in [
        ("plan", "text"),
        ("score", "number"),
        ("vip", "boolean"),
        ("renews_at", "datetime"),
        ("langs", "list"),
    ] {
        let (s, b) = call(
            "POST",
            &fields_url,
            &admin,
            Some(json!({"name": name, "type": ty, "label": name.to_uppercase()})),
        )
        .await;
        assert_eq!(s, 201, "{b}");
        assert_eq!(b["type"], ty);
    }
    let cases = [
        (
            json!({"name": "plan", "type": "text"}),
            409,
            "already exists",
        ),
        (
            json!({"name": "Bad-Name", "type": "text"}),
            400,
            "must match",
        ),
        (
            json!({"name": "last_seen_at", "type": "datetime"}),
            400,
            "built-in",
        ),
        (json!({"name": "x", "type": "money"}), 400, "type: 'money'"),
        (json!({"name": "x"}), 400, "missing field `type`"),
        (
            json!({"name": "x", "type": "text", "color": 1}),
            400,
            "unknown field `color`",
        ),
    ];
    for (body, status, msg) in cases {
        let (s, b) = call("POST", &fields_url, &admin, Some(body.clone())).await;
        assert_eq!(s, status, "{body} -> {b}");
        assert!(
            b["message"].as_str().unwrap().contains(msg),
            "{body} -> {b}"
        );
    }
    let (s, b) = call(
        "POST",
        &fields_url,
        &ingest,
        Some(json!({"name": "y", "type": "text"})),
    )
    .await;
    assert_eq!(s, 403, "{b}");
    let (s, b) = call("GET", &fields_url, &read, None).await;
    assert_eq!(s, 200);
    let names: Vec<_> = b["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names, ["langs", "plan", "renews_at", "score", "vip"]);
    let (s, b) = call("DELETE", &node.url("/v1/default/fields/nope"), &admin, None).await;
    assert_eq!(s, 404, "{b}");

    // --- writes ---
    let ann = node.url("/v1/default/users/ann");
    let (s, b) = call("PUT", &ann, &ingest, Some(json!({
        "set": {"plan": "gold", "score": 4.5, "renews_at": "2027-01-01T01:00:00+01:00", "langs": ["en", "fr"]},
        "set_once": {"vip": true},
        "tags": {"add": ["beta", "early"]}
    }))).await;
    assert_eq!(s, 202, "{b}");
    assert_eq!(b["changes"], 7);
    // set_once does not overwrite; set does; unset removes; a removed tag goes
    let (s, b) = call(
        "PUT",
        &ann,
        &admin,
        Some(json!({
            "set_once": {"vip": false, "plan": "silver"},
            "unset": ["langs"],
            "tags": {"remove": ["early"]}
        })),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    let (s, b) = call("PUT", &ann, &ingest, Some(json!({"set": {"score": 5}}))).await;
    assert_eq!(s, 202, "{b}");

    // every validation error, nothing written
    let (s, b) = call("PUT", &node.url("/v1/default/users/zed"), &ingest, Some(json!({
        "set": {"plan": 3, "score": "high", "vip": "yes", "renews_at": "tomorrow", "langs": ["a", 2], "nope": 1},
        "unset": ["plan", "ghost"],
        "tags": {"add": [""], "remove": []}
    }))).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["error"], "invalid_update");
    let got: Vec<_> = problems(&b).into_iter().map(|(i, f, _)| (i, f)).collect();
    let want: Vec<(u64, String)> = [
        "set.langs",
        "set.nope",
        "set.plan",
        "set.renews_at",
        "set.score",
        "set.vip",
        "unset[0]",
        "unset[1]",
        "tags.add[0]",
    ]
    .iter()
    .map(|f| (0, f.to_string()))
    .collect();
    assert_eq!(got, want, "{b}");
    assert!(
        b["problems"][1]["message"]
            .as_str()
            .unwrap()
            .contains("unknown field 'nope'")
    );
    for (body, msg) in [
        (json!({}), "changes nothing"),
        (json!({"set": {"plan": null}}), "unset"),
        (json!({"sett": {}}), "unknown field `sett`"),
        (json!([1]), "body must be an object"),
    ] {
        let (s, b) = call(
            "PUT",
            &node.url("/v1/default/users/zed"),
            &ingest,
            Some(body.clone()),
        )
        .await;
        assert_eq!(s, 400, "{body} -> {b}");
        assert!(b.to_string().contains(msg), "{body} -> {b}");
    }
    let (s, _) = call("PUT", &ann, &read, Some(json!({"set": {"plan": "x"}}))).await;
    assert_eq!(s, 403);
    let (s, _) = call(
        "PUT",
        &node.url("/v1/staging/users/ann"),
        &ingest,
        Some(json!({"set": {"plan": "x"}})),
    )
    .await;
    assert_eq!(s, 403);

    // batch: atomic, errors listed with their index
    let batch_url = node.url("/v1/default/users:batch");
    let (s, b) = call(
        "POST",
        &batch_url,
        &ingest,
        Some(json!([
            {"id": "bob", "set": {"plan": "free"}},
            {"id": "cy", "set": {"score": "NaN"}},
            {"id": "", "set": {"plan": "x"}},
            {"set": {"plan": "x"}}
        ])),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    let got: Vec<_> = problems(&b).into_iter().map(|(i, f, _)| (i, f)).collect();
    assert_eq!(got, vec![(3, String::new())], "{b}");
    let (s, b) = call(
        "POST",
        &batch_url,
        &ingest,
        Some(json!([
            {"id": "bob", "set": {"plan": "free"}},
            {"id": "cy", "set": {"score": "NaN"}},
            {"id": "", "set": {"plan": "x"}}
        ])),
    )
    .await;
    assert_eq!(s, 400, "{b}");
    let got: Vec<_> = problems(&b).into_iter().map(|(i, f, _)| (i, f)).collect();
    assert_eq!(
        got,
        vec![(1, "set.score".to_string()), (2, "id".to_string())],
        "{b}"
    );
    let too_many: Vec<Value> = (0..1001)
        .map(|i| json!({"id": format!("u{i}"), "tags": {"add": ["t"]}}))
        .collect();
    let (s, _) = call("POST", &batch_url, &ingest, Some(Value::Array(too_many))).await;
    assert_eq!(s, 413);
    let (s, b) = call(
        "POST",
        &batch_url,
        &ingest,
        Some(json!([
            {"id": "bob", "set": {"plan": "free"}, "tags": {"add": ["imported"]}},
            {"id": "cy", "set_once": {"score": 1}}
        ])),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    assert_eq!(b["users"], 2);

    // --- reads ---
    let profile = read_until(&ann, &read, |p| p["fields"]["score"]["value"] == 5).await;
    assert_eq!(profile["user_id"], "ann");
    let fields = &profile["fields"];
    assert_eq!(
        fields["plan"],
        json!({"type": "text", "value": "gold", "label": "PLAN"})
    );
    assert_eq!(fields["vip"]["value"], true);
    assert_eq!(fields["renews_at"]["value"], "2027-01-01T00:00:00.000000Z");
    assert!(fields.get("langs").is_none(), "{profile}");
    assert_eq!(profile["tags"], json!(["beta"]));
    // written, never seen
    assert!(profile["created_at"].is_string());
    assert!(profile["first_seen_at"].is_null());
    assert_eq!(profile["event_count"], 0);
    let bob = read_until(&node.url("/v1/default/users/bob"), &read, |_| true).await;
    assert_eq!(bob["tags"], json!(["imported"]));
    assert_eq!(bob["fields"]["plan"]["value"], "free");
    // the batch with errors wrote nothing: zed never existed
    let (s, b) = call("GET", &node.url("/v1/default/users/zed"), &read, None).await;
    assert_eq!(s, 404, "{b}");

    // events make ann seen; ?events=N returns the newest first
    let now = chrono::Utc::now();
    let events: Vec<Value> = (0..3)
        .map(|i| json!({"event_id": format!("e{i}"), "event_name": format!("ev{i}"), "user_id": "ann",
            "occurred_at": (now - chrono::Duration::minutes(10 - i)).to_rfc3339(), "platform": "ios",
            "properties": {"n": i}}))
        .collect();
    let (s, b) = crate::harness::post_json(
        &node.events_url("default"),
        Some(&ingest),
        &Value::Array(events).to_string(),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    let seen = read_until(&format!("{ann}?events=2"), &read, |p| p["event_count"] == 3).await;
    assert!(seen["first_seen_at"].is_string());
    assert_eq!(seen["fields"]["plan"]["value"], "gold");
    let evs = seen["events"].as_array().unwrap();
    assert_eq!(evs.len(), 2);
    assert_eq!(evs[0]["properties"], json!({"n": 2}));
    let (s, b) = call("GET", &format!("{ann}?events=many"), &read, None).await;
    assert_eq!(s, 400);
    assert!(b["message"].as_str().unwrap().starts_with("events:"), "{b}");

    // deleting a field hides it; declaring it again starts empty
    let (s, _) = call("DELETE", &node.url("/v1/default/fields/plan"), &admin, None).await;
    assert_eq!(s, 200);
    let p = read_until(&ann, &read, |_| true).await;
    assert!(p["fields"].get("plan").is_none(), "{p}");
    let (s, _) = call(
        "POST",
        &fields_url,
        &admin,
        Some(json!({"name": "plan", "type": "number"})),
    )
    .await;
    assert_eq!(s, 201);
    let p = read_until(&ann, &read, |_| true).await;
    assert!(p["fields"].get("plan").is_none(), "{p}");
    let (s, b) = call("PUT", &ann, &ingest, Some(json!({"set": {"plan": "gold"}}))).await;
    assert_eq!(s, 400, "the new declaration is a number: {b}");

    // the same data through SQL
    let rows = ts.sql("SELECT user_id, tags, fields, event_count FROM profiles ORDER BY user_id");
    let users: Vec<_> = rows
        .iter()
        .map(|r| r["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(users, ["ann", "bob", "cy"]);
    assert_eq!(rows[2]["fields"], "{\"score\":1}");
}

/// `GET /v1/{env}/users`: every filter, paging with a stable cursor, and each bad
/// parameter named in a 400.
#[tokio::test(flavor = "multi_thread")]
async fn list_filters_and_pages() {
    let ts = TestStore::new(Backend::Local);
    let node = ts.serve(&["--ack", "commit"], &[("TIDEMARK_JOBS__DEBOUNCE", "50ms")]);
    let admin = node.admin_key.clone().unwrap();
    let ingest = node.ingest_key().to_string();
    let read = ts.create_key("default", "read");
    for (name, ty) in [("plan", "text"), ("score", "number"), ("langs", "list")] {
        let (s, b) = call(
            "POST",
            &node.url("/v1/default/fields"),
            &admin,
            Some(json!({"name": name, "type": ty})),
        )
        .await;
        assert_eq!(s, 201, "{b}");
    }
    let updates: Vec<Value> = (0..7)
        .map(|i| {
            json!({"id": format!("u{i:02}"),
                   "set": {"plan": if i % 2 == 0 { "gold" } else { "free" }, "score": i,
                           "langs": if i < 3 { vec!["en", "fr"] } else { vec!["de"] }},
                   "tags": {"add": if i % 3 == 0 { vec!["vip"] } else { vec!["std"] }}})
        })
        .collect();
    let (s, b) = call(
        "POST",
        &node.url("/v1/default/users:batch"),
        &ingest,
        Some(Value::Array(updates)),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    // u01 and u04 are seen
    let events = json!([
        {"event_id": "x1", "event_name": "open", "user_id": "u01"},
        {"event_id": "x2", "event_name": "open", "user_id": "u04"}
    ]);
    let before_events = chrono::Utc::now() - chrono::Duration::seconds(5);
    let (s, b) = crate::harness::post_json(
        &node.events_url("default"),
        Some(&ingest),
        &events.to_string(),
    )
    .await;
    assert_eq!(s, 202, "{b}");

    let ids = |body: &Value| -> Vec<String> {
        body["users"]
            .as_array()
            .unwrap()
            .iter()
            .map(|u| u["user_id"].as_str().unwrap().to_string())
            .collect()
    };
    let url = |q: &str| node.url(&format!("/v1/default/users?{q}"));
    let all = read_until(&url("limit=1000"), &read, |b| {
        b["users"].as_array().unwrap().len() == 7
            && b["users"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|u| u["event_count"] == 1)
                .count()
                == 2
    })
    .await;
    assert_eq!(ids(&all), ["u00", "u01", "u02", "u03", "u04", "u05", "u06"]);
    assert!(all["next_cursor"].is_null());
    assert_eq!(
        all["users"][0]["fields"]["plan"],
        json!({"type": "text", "value": "gold"})
    );

    for (q, want) in [
        ("tag=vip", vec!["u00", "u03", "u06"]),
        ("tag=vip&tag=std", vec![]),
        ("field.plan=gold", vec!["u00", "u02", "u04", "u06"]),
        ("field.plan=gold&tag=vip", vec!["u00", "u06"]),
        ("field.score=3", vec!["u03"]),
        ("field.score=3.0", vec!["u03"]),
        ("field.langs=fr", vec!["u00", "u01", "u02"]),
        ("field.plan=gold%2C%20%22x%22", vec![]),
    ] {
        let (s, b) = call("GET", &url(q), &read, None).await;
        assert_eq!(s, 200, "{q}: {b}");
        assert_eq!(ids(&b), want, "{q}");
    }
    let since = before_events.to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (s, b) = call(
        "GET",
        &url(&format!("seen_after={}", since.replace('+', "%2B"))),
        &read,
        None,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(ids(&b), ["u01", "u04"]);
    let (_, b) = call(
        "GET",
        &url(&format!("seen_before={}", since.replace('+', "%2B"))),
        &read,
        None,
    )
    .await;
    assert_eq!(
        ids(&b),
        Vec::<String>::new(),
        "nobody was seen before the events"
    );
    for (q, want) in [
        (
            "prefix=u0",
            vec!["u00", "u01", "u02", "u03", "u04", "u05", "u06"],
        ),
        ("prefix=u03", vec!["u03"]),
        ("prefix=x", vec![]),
        ("prefix=u0&tag=vip&seen_before=2100-01-01T00:00:00Z", vec![]),
        ("seen_before=2100-01-01T00:00:00Z", vec!["u01", "u04"]),
    ] {
        let (s, b) = call("GET", &url(q), &read, None).await;
        assert_eq!(s, 200, "{q}: {b}");
        assert_eq!(ids(&b), want, "{q}");
    }
    // segment=: the members after the last evaluation
    let (s, b) = call(
        "POST",
        &node.url("/v1/default/segments"),
        &admin,
        Some(json!({"id": "vips", "name": "VIPs", "match": "all",
                    "conditions": [{"tag": "vip", "op": "has"}]})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    let b = read_until(&url("segment=vips"), &read, |b| {
        b["users"].as_array().is_some_and(|u| u.len() == 3)
    })
    .await;
    assert_eq!(ids(&b), ["u00", "u03", "u06"]);
    let (_, b) = call("GET", &url("segment=vips&field.plan=gold"), &read, None).await;
    assert_eq!(ids(&b), ["u00", "u06"]);
    let (_, segs) = call("GET", &node.url("/v1/default/segments"), &read, None).await;
    assert_eq!(segs["segments"][0]["member_count"], 3, "{segs}");
    let (_, u) = call("GET", &node.url("/v1/default/users/u03"), &read, None).await;
    assert_eq!(u["segments"], json!(["vips"]));
    assert_eq!(u["segment_memberships"][0]["segment_id"], "vips");
    assert!(u["segment_memberships"][0]["entered_at"].is_string(), "{u}");

    // pages of 3 with the cursor: every user once, in order
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..5 {
        let q = match &cursor {
            Some(c) => format!("limit=3&cursor={c}"),
            None => "limit=3".to_string(),
        };
        let (s, b) = call("GET", &url(&q), &read, None).await;
        assert_eq!(s, 200, "{b}");
        seen.extend(ids(&b));
        cursor = b["next_cursor"].as_str().map(str::to_string);
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(seen, ids(&all));

    // pages of 1 of filtered lists: the candidates of a window (e.g. every user with a
    // `plan`) mostly fail the filter, so a page takes several windows; every match once
    let (s, b) = call(
        "POST",
        &node.url("/v1/default/users:batch"),
        &ingest,
        Some(json!([{"id": "u03", "tags": {"remove": ["vip"]}}])),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    read_until(&url("tag=vip"), &read, |b| ids(b) == ["u00", "u06"]).await;
    for (q, want) in [
        ("field.plan=gold", vec!["u00", "u02", "u04", "u06"]),
        ("tag=vip", vec!["u00", "u06"]),
        ("field.score=5", vec!["u05"]),
        ("seen_before=2100-01-01T00:00:00Z", vec!["u01", "u04"]),
        ("prefix=u0&field.langs=de", vec!["u03", "u04", "u05", "u06"]),
    ] {
        let mut seen = Vec::new();
        let mut cursor: Option<String> = None;
        for _ in 0..10 {
            let page = match &cursor {
                Some(c) => format!("{q}&limit=1&cursor={c}"),
                None => format!("{q}&limit=1"),
            };
            let (s, b) = call("GET", &url(&page), &read, None).await;
            assert_eq!(s, 200, "{page}: {b}");
            assert!(ids(&b).len() <= 1, "{page}: {b}");
            seen.extend(ids(&b));
            cursor = b["next_cursor"].as_str().map(str::to_string);
            if cursor.is_none() {
                break;
            }
        }
        assert_eq!(seen, want, "{q} in pages of 1");
    }

    for (q, msg) in [
        ("limit=0", "limit:"),
        ("limit=abc", "limit:"),
        ("limit=1001", "limit:"),
        ("field.nope=1", "field.nope: unknown field"),
        ("field.score=abc", "field.score: 'abc' is not a number"),
        ("seen_after=yesterday", "seen_after:"),
        (
            "seen_before=soon",
            "seen_before: 'soon' is not an RFC 3339 time",
        ),
        ("segment=nope", "segment: no segment with id 'nope'"),
        ("cursor=%25%25", "cursor:"),
        ("color=red", "unknown query parameter 'color'"),
    ] {
        let (s, b) = call("GET", &url(q), &read, None).await;
        assert_eq!(s, 400, "{q}: {b}");
        assert!(b["message"].as_str().unwrap().contains(msg), "{q}: {b}");
    }
    let (s, _) = call("GET", &url(""), &ingest, None).await;
    assert_eq!(s, 403);
}
