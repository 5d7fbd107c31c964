//! The batched pull API (closed hours, expiring links), and scheduled exports to an
//! HTTPS destination (status, auto-pause).

use super::*;

fn hour_key(start: DateTime<Utc>) -> String {
    tidemark::exports::batched::hour_key(start)
}

/// The batched pull API: hours rounded outward, empty hours as empty lists, open hours
/// left out, the same bytes on every download, links that work without a key and stop
/// working when altered or expired, and the refusals.
#[tokio::test(flavor = "multi_thread")]
async fn batched_pull_api_serves_closed_hours_with_expiring_links() {
    let ts = TestStore::new(Backend::Local);
    write_config(&ts, "[exports]\nenabled = false\ndownload_ttl = \"6s\"\n");
    let store = Store::open(&ts.data, &BTreeMap::new()).unwrap();
    let now = Utc::now();
    let h = tidemark::exports::window::Interval::Hour.floor(now) - chrono::Duration::hours(5);
    let at = |hours: i64, secs: i64| {
        h + chrono::Duration::hours(hours) + chrono::Duration::seconds(secs)
    };
    let mut first: Vec<Ev> = (0..30)
        .map(|i| ev(format!("a{i:02}"), at(0, 100 * i), "page_view"))
        .collect();
    first.extend((0..7).map(|i| Ev {
        env: "staging".into(),
        ..ev(format!("s{i}"), at(0, i), "page_view")
    }));
    commit(&store, &first).await;
    let third: Vec<Ev> = (0..45)
        .map(|i| ev(format!("c{i:02}"), at(2, 3599 - 70 * i), "buy"))
        .collect();
    commit(&store, &third[..20]).await;
    commit(&store, &third[20..]).await;
    // In the current (open) hour: never listed.
    commit(&store, &[ev("open".into(), now, "page_view")]).await;
    let node = ts.serve(&[], &[]);
    let read = ts.create_key("default", "read");
    let base = node.url("/v1/default/analytics/batched");

    let q = format!(
        "{base}?from={}&to={}&format=csv",
        (h + chrono::Duration::minutes(10))
            .to_rfc3339()
            .replace('+', "%2B"),
        (h + chrono::Duration::minutes(150))
            .to_rfc3339()
            .replace('+', "%2B"),
    );
    let (status, list) = get_json(&q, Some(&read)).await;
    assert_eq!(status, 200, "{list}");
    let hours = list["hours"].as_object().unwrap();
    let keys: Vec<&String> = hours.keys().collect();
    assert_eq!(
        keys,
        vec![
            &hour_key(at(0, 0)),
            &hour_key(at(1, 0)),
            &hour_key(at(2, 0))
        ]
    );
    assert_eq!(hours[&hour_key(at(1, 0))], json!([]));
    assert_eq!(list["rows"][hour_key(at(0, 0))], 30);
    assert_eq!(list["rows"][hour_key(at(2, 0))], 45);
    let csv_url = hours[&hour_key(at(0, 0))][0].as_str().unwrap().to_string();
    assert!(
        csv_url.contains(&format!("/{}.csv?", hour_key(at(0, 0)))),
        "{csv_url}"
    );

    // Without a key, twice: the same bytes, 30 rows in received order, no staging rows.
    let one = get(&csv_url, None).await;
    assert_eq!(one.status(), 200);
    assert_eq!(one.headers()["content-type"], "text/csv; charset=utf-8");
    let one = one.bytes().await.unwrap();
    // A commit in between (compaction or new data) does not change a listed hour's file.
    commit(&store, &[ev("later".into(), at(0, 5), "page_view")]).await;
    let two = get(&csv_url, None).await.bytes().await.unwrap();
    assert_eq!(one, two);
    let text = String::from_utf8(one.to_vec()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert!(
        lines[0].starts_with("event_id,event_name,category,user_id,occurred_at,received_at"),
        "{}",
        lines[0]
    );
    let ids: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l.split(',').next().unwrap())
        .collect();
    let want: Vec<String> = (0..30).map(|i| format!("a{i:02}")).collect();
    assert_eq!(ids, want);

    // The open hour is not listed even when asked for; a wider range lists the new row.
    let q2 = format!(
        "{base}?from={}&to={}&format=parquet",
        hour_key(at(-1, 0)),
        hour_key(at(9, 0))
    );
    let (status, list2) = get_json(&q2, Some(&read)).await;
    assert_eq!(status, 200, "{list2}");
    let hours2 = list2["hours"].as_object().unwrap();
    assert!(
        !hours2.contains_key(&hour_key(
            tidemark::exports::window::Interval::Hour.floor(now)
        )),
        "{list2}"
    );
    assert_eq!(list2["rows"][hour_key(at(0, 0))], 31);
    let pq_url = hours2[&hour_key(at(2, 0))][0].as_str().unwrap().to_string();
    let pq = get(&pq_url, None).await.bytes().await.unwrap();
    let rows: Vec<RecordBatch> =
        parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(pq.clone())
            .unwrap()
            .build()
            .unwrap()
            .map(|b| b.unwrap())
            .collect();
    let mut got: Vec<String> = rows
        .iter()
        .flat_map(|b| {
            let c = b.column_by_name("event_id").unwrap().as_string::<i32>();
            c.iter().map(|v| v.unwrap().to_string()).collect::<Vec<_>>()
        })
        .collect();
    let mut want: Vec<String> = (0..45).map(|i| format!("c{:02}", 44 - i)).collect();
    assert_eq!(got, want, "ordered by received_at");
    got.sort();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(get(&pq_url, None).await.bytes().await.unwrap(), pq);
    // `from` / `to` as hour keys are times (the key of 10:00-11:00 is 11:00).
    let nd_q = format!(
        "{base}?from={}&to={}&format=ndjson",
        hour_key(at(-1, 0)),
        hour_key(at(1, 0))
    );
    let (_, nd) = get_json(&nd_q, Some(&read)).await;
    assert_eq!(nd["hours"].as_object().unwrap().len(), 2, "{nd}");
    let nd_url = nd["hours"][hour_key(at(0, 0))][0].as_str().unwrap();
    let gz = get(nd_url, None).await.bytes().await.unwrap();
    let mut text = String::new();
    std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&gz[..]), &mut text).unwrap();
    assert_eq!(text.lines().count(), 31);
    let row: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(row["event_id"], "a00");

    // Altered links.
    let tampered = [
        csv_url.replace(
            &format!("{}.csv", hour_key(at(0, 0))),
            &format!("{}.csv", hour_key(at(2, 0))),
        ),
        csv_url.replace(".csv?", ".parquet?"),
        csv_url.replace("version=", "version=1"),
        {
            let mut u = csv_url.clone();
            let last = u.pop().unwrap();
            u.push(if last == 'A' { 'B' } else { 'A' });
            u
        },
        csv_url.split("&token=").next().unwrap().to_string(),
        node.url(&format!(
            "/v1/staging/analytics/batched/{}.csv?",
            hour_key(at(0, 0))
        )) + csv_url.split_once('?').unwrap().1,
    ];
    for u in &tampered {
        let (status, body) = get_json(u, None).await;
        assert_eq!(status, 403, "{u}: {body}");
        assert_eq!(body["error"], "invalid_token", "{u}");
    }

    // Refusals, by field.
    for (query, field) in [
        ("from=2026-01-01&to=2026-02-15", "to: the range"),
        ("to=2026-01-02", "from: is required"),
        (
            "from=2026-01-01&to=2026-01-02&format=xml",
            "format: unknown format",
        ),
        (
            "from=yesterday&to=2026-01-02",
            "from: \"yesterday\" is not a time",
        ),
        ("from=2026-01-02&to=2026-01-01", "to: must be after from"),
        (
            "from=2026-01-01&to=2026-01-02&limit=5",
            "limit: unknown parameter",
        ),
    ] {
        let (status, body) = get_json(&format!("{base}?{query}"), Some(&read)).await;
        assert_eq!(status, 400, "{query}: {body}");
        assert!(
            body["message"].as_str().unwrap().starts_with(field),
            "{query}: {body}"
        );
    }
    let (status, _) = get_json(&q, Some(node.ingest_key())).await;
    assert_eq!(status, 403);
    let (status, _) = get_json(&q, None).await;
    assert_eq!(status, 401);
    // 30 days exactly is fine.
    let (status, _) = get_json(
        &format!("{base}?from=2026-01-01&to=2026-01-31"),
        Some(&read),
    )
    .await;
    assert_eq!(status, 200);

    // Expiry (download_ttl = 6 s in this test).
    let expires: i64 = csv_url
        .split("expires=")
        .nth(1)
        .unwrap()
        .split('&')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let wait = expires - Utc::now().timestamp() + 1;
    tokio::time::sleep(Duration::from_secs(wait.max(0) as u64)).await;
    let (status, body) = get_json(&csv_url, None).await;
    assert_eq!(status, 410, "{body}");
    assert_eq!(body["error"], "token_expired");
    drop(node);
}

/// The exports API: refusals by field, an HTTPS destination that gets one signed POST per
/// file and the manifest last (re-sent files keep their webhook-id), status, a failing
/// export paused after `pause_after`, a profiles snapshot to `file://`, pause, resume and
/// delete.
#[tokio::test(flavor = "multi_thread")]
async fn exports_api_https_destination_status_and_auto_pause() {
    let rx = Receiver::start(1).await;
    let ts = TestStore::new(Backend::Local);
    let root = ts.tmp.path().join("exports");
    write_config(
        &ts,
        &format!(
            "[webhooks]\nallow_networks = [\"127.0.0.0/8\"]\n\
             [exports]\nenabled = false\npause_after = \"1s\"\nhttp_retry_schedule = [\"0s\", \"100ms\"]\n\
             file_roots = [{:?}]\n",
            root.display().to_string()
        ),
    );
    std::fs::create_dir_all(&root).unwrap();
    let inside = url::Url::from_directory_path(root.join("x"))
        .unwrap()
        .to_string();
    let store = Store::open(&ts.data, &BTreeMap::new()).unwrap();
    // Two closed 15-minute windows of events (a window closes 31 s after its end), even
    // when the test starts right after a quarter hour; a third, empty one may close too.
    let w0 = tidemark::exports::window::Interval::FifteenMinutes
        .floor(Utc::now() - chrono::Duration::minutes(2))
        - chrono::Duration::minutes(30);
    let evs: Vec<Ev> = (0..90)
        .map(|i| Ev {
            user: format!("u{}", i % 4),
            ..ev(
                format!("h{i:02}"),
                w0 + chrono::Duration::seconds(20 * i),
                "page_view",
            )
        })
        .collect();
    commit(&store, &evs).await;
    let node = ts.serve(&[], &[]);
    let admin = node.admin_key.clone().unwrap();
    let url = node.url("/v1/default/exports");

    let (status, body) = call(
        "POST",
        &url,
        &admin,
        Some(json!({"source": "nope", "interval": "2h", "format": "xml",
                    "destination": "ftp://host/x", "extra": 1})),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_export");
    let fields: BTreeSet<&str> = body["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["field"].as_str().unwrap())
        .collect();
    assert_eq!(
        fields,
        BTreeSet::from(["source", "interval", "format", "destination", "extra"]),
        "{body}"
    );
    for (input, field, message) in [
        (
            json!({"source": "events", "destination": "https://10.1.2.3/x"}),
            "destination",
            "destination refused",
        ),
        (
            json!({"source": "sql", "sql": "SELEC nonsense", "destination": inside}),
            "sql",
            "SQL error",
        ),
        (
            json!({"source": "sql", "destination": inside}),
            "sql",
            "is required for source sql",
        ),
        (
            json!({"source": "profiles", "filter": {"events": ["a"]}, "destination": inside}),
            "filter",
            "applies to the events source only",
        ),
        (
            json!({"source": "events", "destination": inside, "secret": "whsec_x"}),
            "secret",
            "",
        ),
        (
            json!({"source": "events", "destination": inside, "start": "noon"}),
            "start",
            "must be an RFC 3339 time",
        ),
        // Holes 1 and 2 of issue 16: file:// outside the operator's roots, and object-store
        // endpoints in refused ranges (the metadata service), are refused at create.
        (
            json!({"source": "events", "destination": "file:///etc/cron.d"}),
            "destination",
            "is not under an allowed directory (exports.file_roots:",
        ),
        (
            json!({"source": "events", "destination": format!("{inside}../../../escape")}),
            "destination",
            "is not under an allowed directory",
        ),
        (
            json!({"source": "events", "destination": "s3://b/p",
                   "options": {"aws_endpoint": "http://169.254.169.254/latest/meta-data"}}),
            "options.aws_endpoint",
            "169.254.169.254 is a link-local address",
        ),
        (
            json!({"source": "events", "destination": "s3://b/p",
                   "options": {"aws_endpiont": "https://s3.example.com"}}),
            "options.aws_endpiont",
            "is not an option of this destination's store",
        ),
        (json!({"source": "events"}), "destination", "is required"),
    ] {
        let (status, body) = call("POST", &url, &admin, Some(input.clone())).await;
        assert_eq!(status, 400, "{input}: {body}");
        let p = &body["problems"][0];
        assert_eq!(p["field"], field, "{input}: {body}");
        assert!(
            p["message"].as_str().unwrap().contains(message),
            "{input}: {body}"
        );
    }
    let read = ts.create_key("default", "read");
    let (status, _) = call("GET", &url, &read, None).await;
    assert_eq!(status, 403);

    // HTTPS (plain HTTP to the allow-listed receiver here), NDJSON gzip, 15-minute windows.
    let (status, created) = call(
        "POST",
        &url,
        &admin,
        Some(
            json!({"source": "events", "interval": "15m", "format": "ndjson",
                    "destination": rx.url("ok"), "start": w0.to_rfc3339()}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let secret = created["secret"].as_str().unwrap().to_string();
    let (status, run) = call("POST", &format!("{url}/{id}/run"), &admin, None).await;
    assert_eq!(status, 200, "{run}");
    // The two windows with events, then any empty window that has closed since `w0 + 30m`
    // by the time the test gets here (each is a manifest without files).
    let windows = run["windows"].as_array().unwrap();
    assert!(windows.len() >= 2, "{run}");
    assert!(windows[2..].iter().all(|w| w["rows"] == 0), "{run}");
    assert_eq!(run["error"], Value::Null);
    let got = rx.at("ok");
    assert_eq!(
        got.len(),
        4 + windows.len() - 2,
        "2 x (1 file + manifest), then manifests"
    );
    for empty in &got[4..] {
        assert_eq!(empty.json()["files"], json!([]));
    }
    verify_signed(&got, &secret);
    let mut ids = Vec::new();
    for pair in got[..4].chunks(2) {
        let (file, manifest) = (&pair[0], &pair[1]);
        assert_eq!(file.headers["content-type"], "application/gzip");
        assert_eq!(manifest.headers["content-type"], "application/json");
        let name = file.headers["tidemark-export-file"].to_str().unwrap();
        let m = manifest.json();
        assert_eq!(m["files"][0]["name"], name);
        assert_eq!(
            m["files"][0]["sha256"],
            tidemark_sinks::export::sha256_hex(&file.body)
        );
        let mut text = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&file.body[..]), &mut text)
            .unwrap();
        ids.extend(text.lines().map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["event_id"]
                .as_str()
                .unwrap()
                .to_string()
        }));
    }
    assert_exactly(&ids, &evs.iter().map(|e| e.id.clone()).collect());
    // A backfill re-sends the same files under the same webhook-ids.
    let (status, body) = call(
        "POST",
        &format!("{url}/{id}/backfill"),
        &admin,
        Some(json!({"from": w0.to_rfc3339(), "to": (w0 + chrono::Duration::minutes(30)).to_rfc3339()})),
    )
    .await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["windows"], 2);
    let before = got.len();
    assert!(rx.wait("ok", 30, |r| r.len() == before + 4).await);
    let again = rx.at("ok");
    for (a, b) in again[..4].iter().zip(&again[before..]) {
        assert_eq!(a.id, b.id);
        assert_eq!(
            a.headers.get("tidemark-export-file"),
            b.headers.get("tidemark-export-file")
        );
    }
    let (status, st) = call("GET", &format!("{url}/{id}/status"), &admin, None).await;
    assert_eq!(status, 200);
    assert_eq!(st["windows_done"], windows.len() + 2, "{st}");
    assert_eq!(st["rows_exported"], 180, "{st}");
    assert_eq!(st["failures"], 0, "{st}");
    let (_, list) = call("GET", &url, &admin, None).await;
    let text = list.to_string();
    assert!(
        !text.contains(&secret) && !text.contains("\"secret\""),
        "{text}"
    );

    // A failing destination: errors in status, then paused after pause_after (1 s).
    let (_, down) = call(
        "POST",
        &url,
        &admin,
        Some(
            json!({"source": "events", "interval": "15m", "destination": rx.url("down"),
                    "start": w0.to_rfc3339()}),
        ),
    )
    .await;
    let down_id = down["id"].as_str().unwrap().to_string();
    let (_, run) = call("POST", &format!("{url}/{down_id}/run"), &admin, None).await;
    assert!(
        run["error"]
            .as_str()
            .unwrap()
            .contains("after 2 attempt(s)"),
        "{run}"
    );
    assert_eq!(run["paused"], false);
    let (_, st) = call("GET", &format!("{url}/{down_id}/status"), &admin, None).await;
    assert_eq!(st["failures"], 1, "{st}");
    assert_eq!(st["exported_until"], Value::Null, "{st}");
    assert!(st["next_attempt_at"].is_string(), "{st}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_, run) = call("POST", &format!("{url}/{down_id}/run"), &admin, None).await;
    assert_eq!(run["paused"], true, "{run}");
    let (_, ex) = call("GET", &format!("{url}/{down_id}"), &admin, None).await;
    assert_eq!(ex["enabled"], false);
    assert!(
        ex["paused_reason"]
            .as_str()
            .unwrap()
            .starts_with("failing since"),
        "{ex}"
    );
    let (status, ex) = call("POST", &format!("{url}/{down_id}/resume"), &admin, None).await;
    assert_eq!((status, &ex["enabled"]), (200, &json!(true)));

    // A profiles snapshot to file://: one window (the newest closed), every profile.
    let profiles = ts.sql_until("SELECT count(*) AS n FROM profiles", |r| r[0]["n"] == 4);
    assert_eq!(profiles[0]["n"], 4);
    let dir = root.join("out");
    let (status, snap) = call(
        "POST",
        &url,
        &admin,
        Some(
            json!({"source": "profiles", "interval": "5m", "format": "csv",
                    "destination": url::Url::from_directory_path(&dir).unwrap().to_string(),
                    "start": (Utc::now() - chrono::Duration::hours(1)).to_rfc3339()}),
        ),
    )
    .await;
    assert_eq!(status, 201, "{snap}");
    assert!(snap.get("secret").is_none());
    let snap_id = snap["id"].as_str().unwrap();
    let (_, run) = call("POST", &format!("{url}/{snap_id}/run"), &admin, None).await;
    assert_eq!(run["windows"].as_array().unwrap().len(), 1, "{run}");
    let file = run["windows"][0]["files"][0].as_str().unwrap();
    let csv = std::fs::read_to_string(dir.join(file)).unwrap();
    assert_eq!(csv.lines().count(), 1 + 4, "{csv}");
    assert!(csv.lines().next().unwrap().contains("user_id"), "{csv}");
    let manifest = dir.join(file.replace(".csv", "_manifest.json"));
    assert!(manifest.exists(), "{}", manifest.display());

    // A SQL source: the window bounds are substituted.
    let (status, sql) = call(
        "POST",
        &url,
        &admin,
        Some(json!({"source": "sql", "interval": "15m", "format": "csv",
                    "sql": "SELECT user_id, count(*) AS n FROM events WHERE received_at >= {window_start} \
                            AND received_at < {window_end} GROUP BY user_id ORDER BY user_id",
                    "destination": url::Url::from_directory_path(&dir).unwrap().to_string(),
                    "start": w0.to_rfc3339()})),
    )
    .await;
    assert_eq!(status, 201, "{sql}");
    let (_, run) = call(
        "POST",
        &format!("{url}/{}/run", sql["id"].as_str().unwrap()),
        &admin,
        None,
    )
    .await;
    let sql_windows = run["windows"].as_array().unwrap();
    assert!(sql_windows.len() >= 2, "{run}");
    assert!(sql_windows[2..].iter().all(|w| w["rows"] == 0), "{run}");
    let first = run["windows"][0]["files"][0].as_str().unwrap();
    assert!(first.starts_with("sql/"), "{first}");
    // 45 events in each 15-minute window (one every 20 s), users u0..u3 round robin.
    let csv = std::fs::read_to_string(dir.join(first)).unwrap();
    assert_eq!(csv, "user_id,n\nu0,12\nu1,11\nu2,11\nu3,11\n", "{csv}");

    let (status, _) = call("POST", &format!("{url}/{snap_id}/pause"), &admin, None).await;
    assert_eq!(status, 200);
    let (status, _) = call("DELETE", &format!("{url}/{snap_id}"), &admin, None).await;
    assert_eq!(status, 204);
    let (status, body) = call("GET", &format!("{url}/{snap_id}"), &admin, None).await;
    assert_eq!(status, 404, "{body}");
    drop(node);
}
