//! Answers in every format and their limits, the `tidemark sql` REPL, and TLS on the
//! Postgres door.

use super::*;

#[tokio::test(flavor = "multi_thread")]
async fn answers_stream_in_every_format_and_limits_fail_alone() {
    let store = TestStore::new(Backend::Local);
    let node = store.serve(
        &[],
        &[
            ("TIDEMARK_QUERY__TIMEOUT", "3s"),
            ("TIDEMARK_QUERY__MAX_MEMORY_BYTES", "4194304"),
            ("TIDEMARK_QUERY__MAX_JSON_ROWS", "50"),
            ("TIDEMARK_QUERY__MAX_CONCURRENT", "2"),
            DOOR_ENV[0],
            DOOR_ENV[1],
        ],
    );
    let doors = doors(&node);
    let key = store.create_key("default", "read");
    let series = "SELECT value FROM generate_series(1, 1000)";
    // Streamed formats carry every row; JSON is capped.
    let (status, csv) = http_query(&node, "default", &key, series, "text/csv").await;
    assert_eq!(status, 200);
    let lines: Vec<&str> = csv.lines().collect();
    assert_eq!(lines.len(), 1001);
    assert_eq!((lines[0], lines[1], lines[1000]), ("value", "1", "1000"));
    let (status, nd) = http_query(&node, "default", &key, series, "application/x-ndjson").await;
    assert_eq!(status, 200);
    assert_eq!(nd.lines().count(), 1000);
    assert_eq!(nd.lines().last(), Some(r#"{"value":1000}"#));
    let arrow = client()
        .post(node.url("/v1/default/query"))
        .bearer_auth(&key)
        .header("accept", "application/vnd.apache.arrow.stream")
        .json(&json!({"sql": series}))
        .send()
        .await
        .unwrap();
    assert_eq!(
        arrow.headers()["content-type"],
        "application/vnd.apache.arrow.stream"
    );
    let bytes = arrow.bytes().await.unwrap();
    let reader =
        arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(bytes), None).unwrap();
    let rows: usize = reader.map(|b| b.unwrap().num_rows()).sum();
    assert_eq!(rows, 1000);
    let (status, body) = http_query(&node, "default", &key, series, "application/json").await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("query.max_json_rows"), "{body}");
    let (status, body) = http_query(&node, "default", &key, "SELECT 1", "image/png").await;
    assert_eq!(
        (status, body.contains("'image/png'")),
        (406, true),
        "{body}"
    );

    // Over the memory budget: a hash join whose build side cannot spill.
    let join = "SELECT count(*) AS n FROM generate_series(1, 3000000) a(x) \
                JOIN generate_series(1, 3000000) b(y) ON a.x = b.y";
    let (status, body) = http_query(&node, "default", &key, join, "application/json").await;
    assert_eq!(status, 422, "{body}");
    assert!(body.contains("query.max_memory_bytes"), "{body}");
    let answer = psql(&doors, "default", &key, join);
    assert!(answer.contains("memory limit"), "{answer}");

    // Over the time budget, while ingest keeps acknowledging and another query runs.
    // (The filter keeps DataFusion from answering count(*) from statistics.)
    let slow = "SELECT count(*) AS n FROM generate_series(1, 100000000000) WHERE value % 7 = 3";
    let started = Instant::now();
    let slow_http = {
        let url = node.url("/v1/default/query");
        let key = key.clone();
        tokio::spawn(async move {
            let r = client()
                .post(url)
                .bearer_auth(key)
                .json(&json!({"sql": slow}))
                .send()
                .await
                .unwrap();
            (r.status().as_u16(), r.text().await.unwrap())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut slowest = Duration::ZERO;
    for i in 0..5 {
        let t = Instant::now();
        ingest(
            &node,
            "default",
            node.ingest_key(),
            json!([
                {"event_id": format!("e{i}"), "event_name": "during", "user_id": "u1"}
            ]),
        )
        .await;
        slowest = slowest.max(t.elapsed());
    }
    let (status, body) = http_query(
        &node,
        "default",
        &key,
        "SELECT 6 * 7 AS n",
        "application/json",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        first_value(&serde_json::from_str(&body).unwrap()).as_deref(),
        Some("42")
    );
    // All of it while the slow query still ran.
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "ingest and a small query took {:?} (slowest ingest {slowest:?})",
        started.elapsed()
    );
    eprintln!("ingest during a query at its time limit: slowest ack {slowest:?}");
    // With one slow query running and max_concurrent = 2, a third at once is refused.
    let second_slow = {
        let url = node.url("/v1/default/query");
        let key = key.clone();
        tokio::spawn(async move {
            client()
                .post(url)
                .bearer_auth(key)
                .json(&json!({"sql": slow}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let resp = client()
        .post(node.url("/v1/default/query"))
        .bearer_auth(&key)
        .json(&json!({"sql": "SELECT 1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 429);
    assert_eq!(resp.headers()["retry-after"], "1");
    let body = resp.text().await.unwrap();
    assert!(body.contains("query.max_concurrent"), "{body}");
    let (status, body) = slow_http.await.unwrap();
    assert_eq!(status, 408, "{body}");
    assert!(body.contains("query.timeout"), "{body}");
    let elapsed = started.elapsed();
    assert!(
        elapsed >= Duration::from_secs(3) && elapsed < Duration::from_secs(10),
        "{elapsed:?}"
    );
    assert_eq!(second_slow.await.unwrap(), 408);
    // The doors serve again once the slow queries are gone; what was acknowledged is there.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = psql(
            &doors,
            "default",
            &key,
            "SELECT count(*) FROM events WHERE event_name = 'during'",
        );
        if n == "5" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "events after the slow queries: {n}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    drop(node);
}

#[test]
fn the_repl_reads_statements_meta_commands_and_files() {
    let store = TestStore::new(Backend::Local);
    let mut cmd = store.command();
    cmd.args(["sql", "--env", "default", "--data", &store.data])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let input = "\\d\n\\d event_stats\n\\timing\nSELECT 40 + 2\n  AS answer;\nSELECT nope;\n\\q\n";
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), input.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("| profiles ") && stdout.contains("| VIEW "),
        "{stdout}"
    );
    assert!(
        stdout.contains("| first_at ") && stdout.contains("| Timestamp"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| answer |") && stdout.contains("| 42 "),
        "{stdout}"
    );
    assert!(
        stderr.contains("Timing is on.") && stderr.contains("1 rows,"),
        "{stderr}"
    );
    assert!(stderr.contains("nope"), "{stderr}");
    // A failed statement read from a pipe is the exit status.
    assert_eq!(out.status.code(), Some(1));

    // --output writes the file in the format asked.
    let file = store.tmp.path().join("series.parquet");
    store.cli_ok(&[
        "sql",
        "--format",
        "parquet",
        "--output",
        file.to_str().unwrap(),
        "SELECT value FROM generate_series(1, 10)",
    ]);
    let reader =
        parquet::file::reader::SerializedFileReader::new(std::fs::File::open(&file).unwrap())
            .unwrap();
    assert_eq!(
        parquet::file::reader::FileReader::metadata(&reader)
            .file_metadata()
            .num_rows(),
        10
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_postgres_door_offers_tls_with_a_configured_certificate() {
    let store = TestStore::new(Backend::Local);
    let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert_path, key_path) = (
        store.tmp.path().join("cert.pem"),
        store.tmp.path().join("key.pem"),
    );
    std::fs::write(&cert_path, cert.cert.pem()).unwrap();
    std::fs::write(&key_path, cert.signing_key.serialize_pem()).unwrap();
    let node = store.serve(
        &[],
        &[
            DOOR_ENV[0],
            ("TIDEMARK_QUERY__TLS_CERT", cert_path.to_str().unwrap()),
            ("TIDEMARK_QUERY__TLS_KEY", key_path.to_str().unwrap()),
        ],
    );
    assert!(
        node.lines
            .iter()
            .any(|l| l.contains("postgres protocol on") && l.contains("with TLS")),
        "{:#?}",
        node.lines
    );
    let port = node
        .lines
        .iter()
        .find_map(|l| l.strip_prefix("tidemark: postgres protocol on "))
        .and_then(|l| l.split_whitespace().next())
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse::<u16>().ok())
        .unwrap();
    let key = store.create_key("default", "read");
    let out = Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={port} dbname=default user=u sslmode=require"
        ))
        .args(["-At", "-c", "SELECT 6 * 7"])
        .env("PGPASSWORD", &key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "42");
    // psql says which protocol it negotiated.
    let out = Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={port} dbname=default user=u sslmode=require"
        ))
        .args(["-c", "\\conninfo"])
        .env("PGPASSWORD", &key)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("SSL connection (protocol: TLSv1."), "{text}");
}
