//! Deep nesting on every door (issue 35): JSON nested 10, 1,000, 100,000 and 1,000,000
//! levels, as arrays, as objects and both mixed, sent to every route of the HTTP route
//! table that reads a body (`tidemark::server::routes`, so a new route cannot be left
//! out), in every body encoding it takes (JSON, NDJSON, each plain and gzip), both as the
//! whole body and inside the field a real client would nest it in (CSV, the one body
//! that is not JSON, has no nesting). The server runs with
//! size limits raised far enough that the bodies reach the parsers (the default limits
//! refuse most of them on size alone). Each answer must be a 4xx with a JSON message,
//! `/healthz` must answer 200 after it, and the store must hold exactly the control
//! batches sent around them. The same depths go to the SQL doors (HTTP and Postgres) and
//! to the CLI's definition files (JSON and YAML).

use std::io::Write;

use serde_json::{Value, json};
use tidemark::server::{Input, routes};

use crate::harness::{Backend, Node, TestStore, client};

const DEPTHS: [usize; 4] = [10, 1_000, 100_000, 1_000_000];

#[derive(Debug, Clone, Copy)]
enum Shape {
    Arrays,
    Objects,
    Mixed,
}

const SHAPES: [Shape; 3] = [Shape::Arrays, Shape::Objects, Shape::Mixed];

/// A JSON value nested `n` levels deep.
fn deep(shape: Shape, n: usize) -> String {
    match shape {
        Shape::Arrays => format!("{}1{}", "[".repeat(n), "]".repeat(n)),
        Shape::Objects => format!("{}1{}", "{\"k\":".repeat(n), "}".repeat(n)),
        Shape::Mixed => {
            let pairs = n / 2;
            let odd = n % 2 == 1;
            format!(
                "{}{}1{}{}",
                "{\"k\":[".repeat(pairs),
                if odd { "[" } else { "" },
                if odd { "]" } else { "" },
                "]}".repeat(pairs)
            )
        }
    }
}

/// Where a real client of `route` would nest a value: the body with `@` where the deep
/// value goes. Every route that reads a body needs a template here; a new one fails the
/// test until it has one.
fn template(method: &str, path: &str, input: Input) -> &'static str {
    let event = r#"{"event_name":"deep","user_id":"u1","properties":{"a":@}}"#;
    match (input, method, path) {
        (Input::Events, _, _) => event,
        (Input::Sdk, _, "/v1/batch") => {
            r#"{"batch":[{"type":"track","event":"deep","userId":"u1","properties":{"a":@},"context":{"c":@}}]}"#
        }
        (Input::Sdk, _, p) if p.starts_with("/v1/") => {
            r#"{"type":"track","event":"deep","userId":"u1","properties":{"a":@},"traits":{"t":@},"context":{"c":@}}"#
        }
        (Input::Sdk, _, _) => {
            r#"{"api_key":"KEY","batch":[{"event":"deep","distinct_id":"u1","properties":{"a":@,"$set":{"s":@}}}]}"#
        }
        (_, "POST", "/v1/{env}/query") => r#"{"sql":"select 1","params":[@]}"#,
        (_, "POST", "/v1/{env}/keys") => r#"{"role":@}"#,
        (_, "PUT", "/v1/{env}/users/{id}") => r#"{"set":{"plan":@}}"#,
        (_, "POST", "/v1/{env}/users:batch") => r#"[{"id":"u1","set":{"plan":@}}]"#,
        (_, "POST", "/v1/{env}/fields") => r#"{"name":"plan","type":"text","label":@}"#,
        (_, _, "/v1/{env}/segments" | "/v1/{env}/segments:preview" | "/v1/{env}/segments/{id}") => {
            r#"{"id":"deep","name":"deep","match":"all","conditions":[{"match":"any","conditions":[@]}]}"#
        }
        (_, _, "/v1/{env}/webhooks" | "/v1/{env}/webhooks/{id}") => {
            r#"{"url":"https://example.com/hook","filter":@}"#
        }
        (_, "POST", "/v1/{env}/webhooks/{id}/recover") => r#"{"since":@}"#,
        (_, "POST", "/v1/{env}/webhooks/{id}/rotate-secret") => r#"{"expire_in":@}"#,
        (_, "POST", "/v1/{env}/exports") => {
            r#"{"source":"events","interval":"1h","format":"csv","destination":"file:///tmp/x","options":@}"#
        }
        (_, "POST", "/v1/{env}/exports/{id}/backfill") => r#"{"from":@}"#,
        (_, _, "/v1/{env}/flows" | "/v1/{env}/flows/{id}") => {
            r#"{"name":"deep","steps":[{"id":"a","type":"webhook","url":"https://example.com/x","body":@}]}"#
        }
        (_, "POST", "/v1/{env}/flows/{id}/start" | "/v1/{env}/flows/{id}/preview") => {
            r#"{"user_id":"u1","variables":{"v":@}}"#
        }
        (_, "POST", "/v1/{env}/flows/{id}/retry") => r#"{"since":@}"#,
        (input, method, path) => panic!(
            "no nesting template for {method} {path} ({input:?}): add one to nesting::template"
        ),
    }
}

/// The route's path with its parameters filled in.
fn concrete(path: &str) -> String {
    path.replace("{env}", "default")
        .replace("{id}", "deep")
        .replace("{name}", "plan")
        .replace("{file}", "x")
        .replace("{*path}", "index.html")
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}

/// One request of the sweep.
struct Sent {
    what: String,
    method: reqwest::Method,
    path: String,
    content_type: &'static str,
    gzip: bool,
    body: Vec<u8>,
}

/// The bodies a route is sent for one deep value: the value as the whole body and in its
/// template, in each framing the route reads.
fn bodies(
    method: &str,
    path: &str,
    input: Input,
    value: &str,
    key: &str,
) -> Vec<(String, &'static str, Vec<u8>)> {
    let nested = template(method, path, input)
        .replace("KEY", key)
        .replace('@', value);
    let mut out = vec![
        (
            "whole body".to_string(),
            "application/json",
            value.as_bytes().to_vec(),
        ),
        (
            "nested in a field".to_string(),
            "application/json",
            nested.clone().into_bytes(),
        ),
    ];
    if input == Input::Events {
        out[1].2 = format!("[{nested}]").into_bytes();
        out.push((
            "NDJSON line".into(),
            "application/x-ndjson",
            format!("{nested}\n").into_bytes(),
        ));
        out.push((
            "NDJSON whole".into(),
            "application/x-ndjson",
            format!("{value}\n").into_bytes(),
        ));
    }
    out
}

/// Sends `s` as HTTP/1.1 with `Expect: 100-continue`, as curl does for large bodies: the
/// body goes only once the server asks for it, so a route that refuses the request on its
/// headers alone (a `Content-Length` past its limit: 413) answers without the client
/// writing into a closed connection. Returns the final status and body.
async fn send(node: &Node, key: &str, s: &Sent) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let body = if s.gzip {
        gzip(&s.body)
    } else {
        s.body.clone()
    };
    let addr = node.url("").trim_start_matches("http://").to_string();
    let mut head = format!(
        "{} {} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {key}\r\n\
         Content-Type: {}\r\nContent-Length: {}\r\nExpect: 100-continue\r\nConnection: close\r\n",
        s.method,
        s.path,
        s.content_type,
        body.len()
    );
    if s.gzip {
        head.push_str("Content-Encoding: gzip\r\n");
    }
    head.push_str("\r\n");
    let mut conn = tokio::net::TcpStream::connect(&addr)
        .await
        .unwrap_or_else(|e| panic!("{}: cannot connect: {e}", s.what));
    conn.write_all(head.as_bytes()).await.unwrap();
    // The first answer: 100 Continue (then the body), or the final one.
    let mut got = Vec::new();
    let mut buf = [0u8; 8192];
    let end_of_head = |b: &[u8]| b.windows(4).position(|w| w == b"\r\n\r\n");
    while end_of_head(&got).is_none() {
        let n = tokio::time::timeout(std::time::Duration::from_secs(60), conn.read(&mut buf))
            .await
            .unwrap_or_else(|_| panic!("{}: no answer within 60 s", s.what))
            .unwrap_or_else(|e| panic!("{}: {e}", s.what));
        assert!(n > 0, "{}: the connection closed without an answer", s.what);
        got.extend_from_slice(&buf[..n]);
    }
    if got.starts_with(b"HTTP/1.1 100") {
        let rest = got.split_off(end_of_head(&got).unwrap() + 4);
        got = rest;
        conn.write_all(&body)
            .await
            .unwrap_or_else(|e| panic!("{}: sending the body: {e}", s.what));
    }
    tokio::time::timeout(
        std::time::Duration::from_secs(60),
        conn.read_to_end(&mut got),
    )
    .await
    .unwrap_or_else(|_| panic!("{}: no answer within 60 s", s.what))
    .unwrap_or_else(|e| panic!("{}: {e}", s.what));
    let text = String::from_utf8_lossy(&got).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("{}: not an HTTP answer: {text:.200}", s.what));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

async fn healthy(node: &Node, after: &str) {
    let resp = client()
        .get(node.url("/healthz"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("/healthz unreachable after {after}: {e}"));
    assert_eq!(resp.status().as_u16(), 200, "/healthz after {after}");
}

/// Sends control batch `n` (two events) and expects it acknowledged.
async fn control(node: &Node, key: &str, n: usize) {
    let batch = json!([
        {"event_id": format!("ctl-{n}-a"), "event_name": "control", "user_id": "ctl"},
        {"event_id": format!("ctl-{n}-b"), "event_name": "control", "user_id": "ctl"},
    ]);
    let (s, body) =
        crate::harness::post_json(&node.events_url("default"), Some(key), &batch.to_string()).await;
    assert_eq!(s, 202, "control batch {n}: {body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn every_body_route_refuses_deep_nesting_and_stays_up() {
    let ts = TestStore::new(Backend::Local);
    // Size limits far above the payloads, so every depth reaches the parsers and walks; a
    // depth limit below the shallowest payload (10), so each one is past it.
    std::fs::write(
        ts.tmp.path().join("tidemark.toml"),
        "[limits]\nmax_body_bytes = 67108864\nmax_properties_bytes = 67108864\n\
         max_sdk_message_bytes = 67108864\nmax_sdk_batch_bytes = 67108864\n\
         max_properties_depth = 8\n",
    )
    .unwrap();
    let node = ts.serve(&[], &[]);
    let admin = node.admin_key.clone().unwrap();
    // Every route that reads JSON. CSV (the importer) has no nesting: its cells are text,
    // lists split on `;` (the `csv_import` fuzz target covers its parser).
    let table: Vec<_> = routes()
        .into_iter()
        .filter(|r| !matches!(r.input, Input::Nothing | Input::Csv))
        .collect();
    assert!(table.len() >= 30, "{} body routes", table.len());

    let mut controls = 0;
    control(&node, &admin, controls).await;
    controls += 1;
    let mut sent = 0;
    for depth in DEPTHS {
        for shape in SHAPES {
            let value = deep(shape, depth);
            for route in &table {
                let method = route.method.as_str();
                for (form, content_type, body) in
                    bodies(method, &route.path, route.input, &value, &admin)
                {
                    for gz in [false, true] {
                        let s = Sent {
                            what: format!(
                                "{method} {} {form} {shape:?} x{depth}{}",
                                route.path,
                                if gz { " gzip" } else { "" }
                            ),
                            method: route.method.clone(),
                            path: concrete(&route.path),
                            content_type,
                            gzip: gz,
                            body: body.clone(),
                        };
                        let (status, text) = send(&node, &admin, &s).await;
                        assert!(
                            (400..500).contains(&status),
                            "{}: answered {status}: {}",
                            s.what,
                            &text[..text.len().min(300)]
                        );
                        let answer: Value = serde_json::from_str(&text).unwrap_or_else(|_| {
                            panic!("{}: not a JSON answer: {text:.300}", s.what)
                        });
                        assert!(
                            answer["message"].as_str().is_some_and(|m| !m.is_empty()),
                            "{}: {answer}",
                            s.what
                        );
                        if depth >= 1_000
                            && route.input == Input::Events
                            && form != "whole body"
                            && form != "NDJSON whole"
                        {
                            // The event's own walk refuses it by name and limit.
                            assert!(
                                text.contains("properties")
                                    && text.contains("max_properties_depth"),
                                "{}: {text:.300}",
                                s.what
                            );
                        }
                        healthy(&node, &s.what).await;
                        sent += 1;
                    }
                }
            }
            control(&node, &admin, controls).await;
            controls += 1;
        }
    }
    eprintln!(
        "nesting sweep: {sent} deep requests to {} routes, all refused",
        table.len()
    );

    // The store holds the control batches and nothing else.
    let expected = controls * 2;
    let rows = ts.sql_until("SELECT count(*) AS n FROM events", |r| {
        r.first().and_then(|r| r["n"].as_u64()) == Some(expected as u64)
    });
    assert_eq!(rows[0]["n"], expected, "events in the store");
    let ids =
        ts.sql("SELECT count(DISTINCT event_id) AS n FROM events WHERE event_name = 'control'");
    assert_eq!(ids[0]["n"], expected);
}

/// `psql` with `sql` on its standard input (a statement of megabytes is too long for an
/// argument): its output, or `ERR: <stderr>`.
fn psql_stdin(port: u16, key: &str, sql: &str) -> String {
    let mut child = std::process::Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={port} dbname=default user=u sslmode=disable"
        ))
        .args(["-At", "-v", "ON_ERROR_STOP=1", "-f", "-"])
        .env("PGPASSWORD", key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("psql (apt install postgresql-client)");
    let mut stdin = child.stdin.take().unwrap();
    let text = format!("{sql};\n");
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(text.as_bytes());
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    if out.status.success() {
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    } else {
        format!("ERR: {}", String::from_utf8_lossy(&out.stderr).trim())
    }
}

/// The SQL doors: deep parentheses, long operator chains, prefix operators and nested
/// function calls, over HTTP and the Postgres protocol. The parser's recursion limit
/// refuses the nesting; the depth bound (`query::depth`) refuses chains past 1000 before
/// anything parses them. Each answer is an error naming the problem, and the server stays
/// up.
#[tokio::test(flavor = "multi_thread")]
async fn sql_doors_refuse_deep_expressions() {
    let ts = TestStore::new(Backend::Local);
    let node = ts.serve(&[], &[("TIDEMARK_QUERY__PG_LISTEN", "127.0.0.1:0")]);
    let admin = node.admin_key.clone().unwrap();
    let pg_port: u16 = node
        .lines
        .iter()
        .find_map(|l| l.strip_prefix("tidemark: postgres protocol on "))
        .and_then(|a| a.split_whitespace().next())
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .expect("pg port");
    // Just inside the bound: a chain of 998 operators is answered.
    let (status, body) = crate::harness::call(
        "POST",
        &node.url("/v1/default/query"),
        &admin,
        Some(json!({ "sql": format!("SELECT 1{}", "+1".repeat(998)) })),
    )
    .await;
    assert_eq!(status, 200, "{body:.300}");
    assert_eq!(
        body["rows"][0].as_object().unwrap().values().next(),
        Some(&json!(999))
    );
    for depth in DEPTHS {
        let statements = [
            (
                "parentheses",
                format!("SELECT {}1{}", "(".repeat(depth), ")".repeat(depth)),
            ),
            ("additions", format!("SELECT 1{}", "+1".repeat(depth))),
            (
                "alternatives",
                format!(
                    "SELECT count(*) FROM events WHERE {}",
                    vec!["user_id = 'a'"; depth].join(" OR ")
                ),
            ),
            ("nots", format!("SELECT {}true", "NOT ".repeat(depth))),
            (
                "calls",
                format!("SELECT {}1{}", "abs(".repeat(depth), ")".repeat(depth)),
            ),
        ];
        for (what, sql) in statements {
            // With `Expect: 100-continue`: a statement past the door's body limit is
            // refused on its headers (413) before the client writes it.
            let sent = Sent {
                what: format!("SQL {what} x{depth}"),
                method: reqwest::Method::POST,
                path: "/v1/default/query".into(),
                content_type: "application/json",
                gzip: false,
                body: json!({ "sql": sql }).to_string().into_bytes(),
            };
            let (status, text) = send(&node, &admin, &sent).await;
            let body: Value = serde_json::from_str(&text).unwrap_or(Value::String(text));
            let pg = psql_stdin(pg_port, &admin, &sql);
            eprintln!("SQL {what} x{depth}: HTTP {status}, psql {:.120}", pg);
            if depth <= 10 {
                assert_eq!(status, 200, "{what} x{depth}: {body}");
                assert!(!pg.starts_with("ERR"), "{what} x{depth}: {pg}");
            } else {
                assert!(
                    (400..500).contains(&status),
                    "{what} x{depth}: {status} {body:.300}"
                );
                let message = body["message"].as_str().unwrap_or_default();
                assert!(
                    message.contains("limit") || message.contains("recursion"),
                    "{what} x{depth}: {message:.300}"
                );
                assert!(pg.starts_with("ERR"), "{what} x{depth}: {pg:.300}");
            }
            healthy(&node, &format!("SQL {what} x{depth}")).await;
        }
    }
}

/// The CLI's definition files, JSON and YAML (flow style), at every depth: refused with a
/// message and a non-zero exit (libyaml is quadratic in flow depth: a million levels ran
/// for over 20 minutes before the text was measured ahead of parsing).
#[test]
fn cli_definition_files_refuse_deep_nesting() {
    let ts = TestStore::new(Backend::Local);
    for depth in DEPTHS {
        for shape in SHAPES {
            let value = deep(shape, depth);
            for (ext, text) in [
                (
                    "json",
                    format!(r#"{{"id":"deep","name":"deep","match":"all","conditions":{value}}}"#),
                ),
                (
                    "yaml",
                    format!("id: deep\nname: deep\nmatch: all\nconditions: {value}\n"),
                ),
            ] {
                let file = ts.tmp.path().join(format!("deep.{ext}"));
                std::fs::write(&file, &text).unwrap();
                let out = ts.cli(&["segments", "add", file.to_str().unwrap()]);
                let stderr = String::from_utf8_lossy(&out.stderr);
                assert!(!out.status.success(), "{ext} {shape:?} x{depth} was stored");
                assert!(
                    stderr.contains("deep."),
                    "{ext} {shape:?} x{depth}: {stderr:.300}"
                );
            }
        }
    }
}
