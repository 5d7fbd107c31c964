//! The bad-input sweep (issue 16): hundreds of malformed requests over every HTTP
//! endpoint, sent as raw bytes (so paths, bodies and headers arrive exactly as written):
//! invalid UTF-8, deep nesting, huge numbers, NaN/Infinity, duplicate keys, BOMs, oversize
//! and slow bodies, wrong content types, unicode edge cases in names and ids, path
//! traversal, wrong methods. Each must get a 4xx whose JSON message says what was wrong;
//! the server stays healthy, and nothing of a rejected request is stored.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::auth_matrix::ENDPOINTS;
use crate::harness::{Backend, TestStore};

/// One request: what it tries, and words one of which the refusal's message must contain
/// (empty: any message).
struct Input {
    what: String,
    method: String,
    path: String,
    content_type: Option<&'static str>,
    body: Vec<u8>,
    says: &'static [&'static str],
}

/// A raw HTTP/1.1 exchange (`Connection: close`): the status and the body.
async fn send(addr: SocketAddr, auth: &str, input: &Input) -> (u16, Vec<u8>) {
    let mut req = format!(
        "{} {} HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {auth}\r\nConnection: close\r\nContent-Length: {}\r\n",
        input.method,
        input.path,
        input.body.len()
    )
    .into_bytes();
    if let Some(ct) = input.content_type {
        req.extend_from_slice(format!("Content-Type: {ct}\r\n").as_bytes());
    }
    req.extend_from_slice(b"\r\n");
    req.extend_from_slice(&input.body);
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(&req).await.unwrap();
    read_response(&mut s).await
}

async fn read_response(s: &mut TcpStream) -> (u16, Vec<u8>) {
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut out)).await;
    let text = String::from_utf8_lossy(&out);
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = match out.windows(4).position(|w| w == b"\r\n\r\n") {
        Some(i) => out[i + 4..].to_vec(),
        None => Vec::new(),
    };
    (status, body)
}

const JSON: Option<&str> = Some("application/json");

fn input(what: &str, method: &str, path: &str, ct: Option<&'static str>, body: Vec<u8>) -> Input {
    Input {
        what: what.to_string(),
        method: method.to_string(),
        path: path.to_string(),
        content_type: ct,
        body,
        says: &[],
    }
}

fn says(mut i: Input, words: &'static [&'static str]) -> Input {
    i.says = words;
    i
}

/// The endpoints that read a JSON body (the others take none, or CSV).
const JSON_BODIES: &[(&str, &str)] = &[
    ("POST", "/v1/{env}/events"),
    ("PUT", "/v1/{env}/users/{id}"),
    ("POST", "/v1/{env}/users:batch"),
    ("POST", "/v1/{env}/fields"),
    ("POST", "/v1/{env}/segments"),
    ("POST", "/v1/{env}/segments:preview"),
    ("PUT", "/v1/{env}/segments/{id}"),
    ("POST", "/v1/{env}/webhooks"),
    ("PATCH", "/v1/{env}/webhooks/{id}"),
    ("POST", "/v1/{env}/webhooks/{id}/recover"),
    ("POST", "/v1/{env}/exports"),
];

fn concrete(path: &str) -> String {
    path.replace("{env}", "default")
        .replace("{id}", "x")
        .replace("{name}", "x")
        .replace("{file}", "x")
}

/// A bad body: what it is, its content type, its bytes, words its refusal may contain.
type BadBody = (
    &'static str,
    Option<&'static str>,
    Vec<u8>,
    &'static [&'static str],
);

mod cases;
use cases::{bad_events, bad_json_bodies};

#[tokio::test(flavor = "multi_thread")]
async fn the_sweep_gets_a_named_4xx_for_every_bad_input_and_stores_nothing() {
    let ts = TestStore::new(Backend::Local);
    let node = ts.serve(
        &["--ack", "commit"],
        &[
            ("TIDEMARK_LIMITS__MAX_BODY_BYTES", "65536"),
            ("TIDEMARK_LIMITS__MAX_EVENTS_PER_BATCH", "10"),
            ("TIDEMARK_LIMITS__MAX_PROPERTIES_DEPTH", "8"),
            ("TIDEMARK_LIMITS__MAX_STRING_LEN", "512"),
            ("TIDEMARK_LIMITS__BODY_TIMEOUT", "1s"),
        ],
    );
    let addr = node.addr.unwrap();
    let admin = node.admin_key.clone().unwrap();

    // Resources for the endpoints that act on one (so bodies reach their validation).
    for (path, body) in [
        (
            "/v1/default/segments",
            json!({"id": "x", "name": "X", "match": "all", "conditions": [{"event": "a", "op": "did"}]}),
        ),
        (
            "/v1/default/webhooks",
            json!({"url": "https://example.com/hook"}),
        ),
    ] {
        let (s, b) = send(
            addr,
            &admin,
            &input("setup", "POST", path, JSON, body.to_string().into_bytes()),
        )
        .await;
        assert_eq!(s, 201, "{path}: {}", String::from_utf8_lossy(&b));
    }
    let webhook: Value = {
        let (_, b) = send(
            addr,
            &admin,
            &input("setup", "GET", "/v1/default/webhooks", None, vec![]),
        )
        .await;
        serde_json::from_slice(&b).unwrap()
    };
    let webhook_id = webhook
        .as_array()
        .or_else(|| {
            webhook
                .as_object()
                .and_then(|o| o.values().find_map(Value::as_array))
        })
        .and_then(|a| a.first())
        .and_then(|w| w["id"].as_str())
        .expect("the webhook's id")
        .to_string();
    // More than every endpoint's limit (the largest is a segment's 1 MiB).
    let oversize = vec![b'['; 1_100_000];

    let mut inputs: Vec<Input> = Vec::new();
    // 1. Every endpoint that reads a JSON body, with every bad JSON body.
    for (method, path) in JSON_BODIES {
        let p = concrete(path).replace("/webhooks/x", &format!("/webhooks/{webhook_id}"));
        for (what, ct, body, words) in bad_json_bodies() {
            inputs.push(says(input(what, method, &p, ct, body), words));
        }
        // Oversize (64 KiB limit).
        inputs.push(says(
            input("oversize body", method, &p, JSON, oversize.clone()),
            &["larger than the limit"],
        ));
    }
    // 2. The events API, field by field (JSON and NDJSON).
    for (what, body, words) in bad_events() {
        inputs.push(says(
            input(
                what,
                "POST",
                "/v1/default/events",
                JSON,
                body.clone().into_bytes(),
            ),
            words,
        ));
        if let Ok(evs) = serde_json::from_str::<Vec<&serde_json::value::RawValue>>(&body)
            && !evs.is_empty()
        {
            let nd: Vec<&str> = evs.iter().map(|e| e.get()).collect();
            inputs.push(input(
                what,
                "POST",
                "/v1/default/events",
                Some("application/x-ndjson"),
                nd.join("\n").into_bytes(),
            ));
        }
    }
    // 3. Ids and names in paths: traversal, encodings, unicode, length.
    let long_id = "i".repeat(5000);
    let weird_ids = [
        "..",
        "%2e%2e",
        "..%2f..%2fetc%2fpasswd",
        "%2e%2e%2f%2e%2e%2fetc",
        "a%00b",
        "%ff%fe",
        "%e2%80%ae",
        "%f0%9f%92%a9",
        "%0d%0aSet-Cookie:x",
        "a%2fb",
        "~root",
        "%25",
        &long_id,
        "%c0%ae%c0%ae",
        "con",
        "a%20b",
    ];
    for (method, path, _) in ENDPOINTS {
        // Erasing a user id that has no data is a valid request (it is audited).
        let erasure = *method == "DELETE" && path.contains("/users/");
        if erasure || !(path.contains("{id}") || path.contains("{name}") || path.contains("{file}"))
        {
            continue;
        }
        for id in weird_ids {
            let p = path
                .replace("{env}", "default")
                .replace("{id}", id)
                .replace("{name}", id)
                .replace("{file}", id);
            let body = if matches!(*method, "GET" | "DELETE") {
                vec![]
            } else {
                b"{}".to_vec()
            };
            let ct = if body.is_empty() { None } else { JSON };
            inputs.push(input("odd id", method, &p, ct, body));
        }
    }
    // Environments that do not exist or cannot exist.
    for env in [
        "..",
        "%2e%2e",
        "nope",
        "a%00",
        "%e2%80%ae",
        "UPPER",
        &"e".repeat(300),
    ] {
        inputs.push(input(
            "odd environment",
            "GET",
            &format!("/v1/{env}/users"),
            None,
            vec![],
        ));
        inputs.push(input(
            "odd environment",
            "POST",
            &format!("/v1/{env}/events"),
            JSON,
            br#"[{"event_name":"a","user_id":"u"}]"#.to_vec(),
        ));
    }
    // 4. Wrong methods on every path, and paths that do not exist.
    let mut methods_of: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (method, path, _) in ENDPOINTS {
        methods_of.entry(path).or_default().push(method);
    }
    for (path, allowed) in &methods_of {
        for m in ["GET", "POST", "PUT", "PATCH", "DELETE"] {
            if !allowed.contains(&m) {
                inputs.push(says(
                    input("wrong method", m, &concrete(path), None, vec![]),
                    &["method"],
                ));
            }
        }
    }
    // `/` and `/console` redirect to the console (tests/it/console.rs checks that)
    for p in [
        "/nothing",
        "/v1",
        "/v2/default/events",
        "/v1/default/nothing",
        "/v1/default/users/x/y/z",
        "/%ff",
    ] {
        inputs.push(input("no such path", "GET", p, None, vec![]));
    }
    // 5. Specific refusals of other APIs' bodies.
    for (path, method, body, words) in [
        (
            "/v1/default/segments",
            "POST",
            json!({"id": "s", "name": "S", "match": "all", "conditions": [{"event": "a", "op": "frobnicate"}]}),
            &["'frobnicate'"][..],
        ),
        (
            "/v1/default/segments",
            "POST",
            json!({"id": "../s", "conditions": []}),
            &["id"],
        ),
        (
            "/v1/default/segments:preview",
            "POST",
            json!({"match": "some"}),
            &["'some'"],
        ),
        (
            "/v1/default/webhooks",
            "POST",
            json!({"url": "http://169.254.169.254/latest"}),
            &["link-local"],
        ),
        (
            "/v1/default/webhooks",
            "POST",
            json!({"url": "http://[64:ff9b::a00:1]/"}),
            &["NAT64"],
        ),
        (
            "/v1/default/webhooks",
            "POST",
            json!({"url": "file:///etc/passwd"}),
            &["url"],
        ),
        (
            "/v1/default/webhooks",
            "POST",
            json!({"url": "https://example.com", "filter": {"categories": ["nope"]}}),
            &["nope", "must be"],
        ),
        (
            "/v1/default/exports",
            "POST",
            json!({"source": "events", "destination": "file:///etc/cron.d"}),
            &["file://"],
        ),
        (
            "/v1/default/exports",
            "POST",
            json!({"source": "events", "destination": "s3://b/p", "options": {"aws_endpoint": "http://127.0.0.1:9000"}}),
            &["loopback"],
        ),
        (
            "/v1/default/exports",
            "POST",
            json!({"source": "events", "destination": "s3://b/p", "options": {"aws_proxy_url": "http://p"}}),
            &["prox"],
        ),
        (
            "/v1/default/fields",
            "POST",
            json!({"name": "../x", "type": "text"}),
            &["name"],
        ),
        (
            "/v1/default/fields",
            "POST",
            json!({"name": "x", "type": "blob"}),
            &["type"],
        ),
        (
            "/v1/default/users/u",
            "PUT",
            json!({"set": {"undeclared": 1}}),
            &["undeclared"],
        ),
        (
            "/v1/default/users:batch",
            "POST",
            json!({"ops": [{"op": "frobnicate"}]}),
            &[][..],
        ),
    ] {
        inputs.push(says(
            input(
                "API refusal",
                method,
                path,
                JSON,
                body.to_string().into_bytes(),
            ),
            words,
        ));
    }
    // CSV imports that are refused whole.
    for (what, body) in [
        ("import: no id column", b"name\nx\n".to_vec()),
        ("import: BOM and no id", b"\xef\xbb\xbfname\nx\n".to_vec()),
        (
            "import: undeclared column",
            b"id,shoe_size\nu,44\n".to_vec(),
        ),
        (
            "import: 101 columns",
            format!(
                "id,{}\n",
                (0..100)
                    .map(|i| format!("c{i}"))
                    .collect::<Vec<_>>()
                    .join(",")
            )
            .into_bytes(),
        ),
    ] {
        inputs.push(input(
            what,
            "POST",
            "/v1/default/imports",
            Some("text/csv"),
            body,
        ));
    }
    inputs.push(input(
        "import: JSON body",
        "POST",
        "/v1/default/imports",
        JSON,
        b"{}".to_vec(),
    ));

    // Send everything; check each answer.
    let mut wrong = Vec::new();
    let mut by_status: BTreeMap<u16, usize> = BTreeMap::new();
    for (n, i) in inputs.iter().enumerate() {
        let (status, body) = send(addr, &admin, i).await;
        *by_status.entry(status).or_default() += 1;
        // The message, with the problems listed beside it (field and message each).
        let explained = serde_json::from_slice::<Value>(&body).ok().and_then(|v| {
            let message = v["message"].as_str()?.to_string();
            Some(format!("{message} {}", v["problems"]))
        });
        let named = match &explained {
            Some(m) => i.says.is_empty() || i.says.iter().any(|w| m.contains(w)),
            None => false,
        };
        if !(400..500).contains(&status) || !named {
            wrong.push(format!(
                "{} {} ({}): {status} {}",
                i.method,
                i.path.chars().take(80).collect::<String>(),
                i.what,
                String::from_utf8_lossy(&body)
                    .chars()
                    .take(300)
                    .collect::<String>()
            ));
        }
        if n % 100 == 0 {
            let (s, _) = send(
                addr,
                &admin,
                &input("health", "GET", "/healthz", None, vec![]),
            )
            .await;
            assert_eq!(s, 200, "unhealthy after {n} inputs");
        }
    }

    // Slow bodies: 408 within limits.body_timeout (1 s), and the connection is closed.
    for path in [
        "/v1/default/events",
        "/v1/default/segments",
        "/v1/default/imports",
    ] {
        let started = Instant::now();
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(
            format!(
                "POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {admin}\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n[{{\"event"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        let (status, body) = read_response(&mut s).await;
        let took = started.elapsed();
        *by_status.entry(status).or_default() += 1;
        let text = String::from_utf8_lossy(&body);
        if status != 408 || !text.contains("limits.body_timeout") || took > Duration::from_secs(10)
        {
            wrong.push(format!(
                "slow body on {path}: {status} after {took:?}: {text}"
            ));
        }
    }
    let total = inputs.len() + 3;
    assert!(
        wrong.is_empty(),
        "{} of {total} answered badly:\n{}",
        wrong.len(),
        wrong.join("\n")
    );
    assert!(total >= 500, "only {total} inputs");
    eprintln!("bad-input sweep: {total} inputs, statuses {by_status:?}");

    // Nothing of it was stored: no event, no profile change, no member.
    assert_eq!(ts.sql("SELECT count(*) AS n FROM events")[0]["n"], 0);
    for table in ["profile_changes", "segment_members"] {
        let out = ts.cli(&[
            "sql",
            "--format",
            "json",
            &format!("SELECT count(*) AS n FROM {table}"),
        ]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned()
            + &String::from_utf8_lossy(&out.stderr);
        // Never created, or empty.
        assert!(
            text.contains(&format!("table 'datafusion.public.{table}' not found"))
                || text.contains("\"n\":0"),
            "{table}: {text}"
        );
    }
    // Only what the test set up: one segment, one webhook (unchanged), no export or field.
    for (list, n) in [
        ("/v1/default/segments", 1),
        ("/v1/default/webhooks", 1),
        ("/v1/default/exports", 0),
        ("/v1/default/fields", 0),
    ] {
        let (s, body) = send(addr, &admin, &input("list", "GET", list, None, vec![])).await;
        assert_eq!(s, 200);
        let v: Value = serde_json::from_slice(&body).unwrap();
        let items = v
            .as_array()
            .or_else(|| {
                v.as_object()
                    .and_then(|o| o.values().find_map(Value::as_array))
            })
            .cloned()
            .unwrap_or_default();
        assert_eq!(items.len(), n, "{list} holds {v}");
        if list.ends_with("webhooks") {
            assert_eq!(items[0]["url"], "https://example.com/hook", "{v}");
            assert_ne!(items[0]["paused"], true, "{v}");
        }
    }

    // And still healthy: a good event goes in and is the only one.
    let good = input(
        "good",
        "POST",
        "/v1/default/events",
        JSON,
        br#"[{"event_id":"good-1","event_name":"a","user_id":"u"}]"#.to_vec(),
    );
    let (s, body) = send(addr, &admin, &good).await;
    assert_eq!(s, 202, "{}", String::from_utf8_lossy(&body));
    assert_eq!(
        ts.sql("SELECT event_id FROM events"),
        vec![json!({"event_id": "good-1"})]
    );
}
