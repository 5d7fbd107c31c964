//! The web console (issue 20) in a real browser: `tidemark serve` with a seeded store, a
//! webhook endpoint that fails until told otherwise, a scheduled export, and
//! `pipeline/tests/console/console_test.py` driving Debian's Chromium with Playwright for
//! Python through every page (it compares what the pages show with the API's answers).
//! Screenshots land in `$CARGO_TARGET_TMPDIR/console-screenshots/`.

use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{any, get};
use chrono::Utc;
use serde_json::{Value, json};

use crate::harness::{Backend, TestStore, call, ingest};

/// A webhook endpoint: 500 until `GET /fix`, then 204. Counts the 2xx answers.
struct Endpoint {
    port: u16,
    delivered: Arc<AtomicUsize>,
}

async fn endpoint() -> Endpoint {
    let fixed = Arc::new(AtomicBool::new(false));
    let delivered = Arc::new(AtomicUsize::new(0));
    let (f1, f2, d) = (fixed.clone(), fixed, delivered.clone());
    let app = Router::new()
        .route(
            "/hook",
            any(move || {
                let (f, d) = (f1.clone(), d.clone());
                async move {
                    if f.load(Ordering::SeqCst) {
                        d.fetch_add(1, Ordering::SeqCst);
                        StatusCode::NO_CONTENT
                    } else {
                        StatusCode::INTERNAL_SERVER_ERROR
                    }
                }
            }),
        )
        .route(
            "/fix",
            get(move || {
                let f = f2.clone();
                async move {
                    f.store(true, Ordering::SeqCst);
                    "fixed"
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    Endpoint { port, delivered }
}

/// 80 users: `alice-0..9`, `bob-10..79`; user i sends i % 5 + 1 events, every second one
/// a purchase, so "at least 3 events" and "at least 2 purchases" pick fewer and fewer.
fn seed_events() -> Value {
    let mut out = Vec::new();
    for i in 0..80 {
        let user = if i < 10 {
            format!("alice-{i}")
        } else {
            format!("bob-{i}")
        };
        for j in 0..(i % 5 + 1) {
            out.push(json!({
                "event_id": format!("seed-{i}-{j}"),
                "event_name": if j % 2 == 1 { "purchase" } else { "view" },
                "user_id": user,
                "category": "sdk",
                "platform": if j % 2 == 1 { "web" } else { "ios" },
                "occurred_at": (Utc::now() - chrono::Duration::minutes(5 * (5 - j as i64))).to_rfc3339(),
                "properties": {"i": i, "j": j},
            }));
        }
    }
    Value::Array(out)
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_in_chromium() {
    let ts = TestStore::new(Backend::Local);
    let exports_root = ts.tmp.path().join("exports");
    std::fs::create_dir_all(&exports_root).unwrap();
    std::fs::write(
        ts.tmp.path().join("tidemark.toml"),
        format!(
            "[webhooks]\nallow_networks = [\"127.0.0.0/8\"]\nretry_schedule = [\"0s\", \"100ms\"]\n\
             pause_after = \"1h\"\npoll_interval = \"100ms\"\nlog_interval = \"200ms\"\n\
             [exports]\nenabled = false\nfile_roots = [{:?}]\n",
            exports_root.display().to_string()
        ),
    )
    .unwrap();
    let node = ts.serve(&[], &[]);
    let admin = node.admin_key.clone().unwrap();
    let ingest_key = node.ingest_key().to_string();
    let read = ts.create_key("default", "read");
    let other_ingest = ts.create_key("other", "ingest");
    let url = |p: &str| node.url(p);

    // `/` and `/console` lead to the console; unknown console files are a named 404
    let no_follow = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for p in ["/", "/console"] {
        let r = no_follow.get(url(p)).send().await.unwrap();
        assert_eq!(r.status(), 308, "GET {p}");
        assert_eq!(r.headers()["location"], "/console/", "GET {p}");
    }
    let r = no_follow.get(url("/console/nope.js")).send().await.unwrap();
    assert_eq!(r.status(), 404);
    let body: Value = r.json().await.unwrap();
    assert!(body.to_string().contains("nope.js"), "{body}");

    let (s, b) = call(
        "POST",
        &url("/v1/default/fields"),
        &admin,
        Some(json!({"name": "plan", "type": "text"})),
    )
    .await;
    assert_eq!(s, 201, "{b}");
    ingest(&node, "default", &ingest_key, seed_events()).await;
    ingest(
        &node,
        "other",
        &other_ingest,
        json!([{"event_name": "view", "user_id": "secret-other-user"}]),
    )
    .await;
    let (s, b) = call(
        "POST",
        &url("/v1/default/users:batch"),
        &admin,
        Some(json!([
            {"id": "alice-1", "set": {"plan": "gold"}, "tags": {"add": ["vip"]}},
            {"id": "alice-2", "set": {"plan": "silver"}, "tags": {"add": ["vip"]}},
        ])),
    )
    .await;
    assert_eq!(s, 202, "{b}");

    // profiles and tags first (the events must be committed before the subscription
    // exists, or it would deliver them too)
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (_, u) = call("GET", &url("/v1/default/users/alice-2"), &admin, None).await;
        let (_, list) = call("GET", &url("/v1/default/users?limit=1000"), &admin, None).await;
        let users = list["users"].as_array().map_or(0, Vec::len);
        if u["tags"] == json!(["vip"]) && users == 80 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "seed not ready: {u} / {users} users"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }

    // a subscription whose endpoint fails, and a purchase that fails every attempt
    let ep = endpoint().await;
    let (s, hook) = call(
        "POST",
        &url("/v1/default/webhooks"),
        &admin,
        Some(json!({"url": format!("http://127.0.0.1:{}/hook", ep.port),
                    "filter": {"events": ["purchase"]}, "description": "orders service"})),
    )
    .await;
    assert_eq!(s, 201, "{hook}");
    let webhook_id = hook["id"].as_str().unwrap().to_string();
    ingest(
        &node,
        "default",
        &ingest_key,
        json!([{"event_id": "wh-1", "event_name": "purchase", "user_id": "alice-3"}]),
    )
    .await;
    let dest = url::Url::from_directory_path(exports_root.join("profiles")).unwrap();
    let (s, export) = call(
        "POST",
        &url("/v1/default/exports"),
        &admin,
        Some(
            json!({"source": "profiles", "interval": "5m", "format": "csv",
                    "destination": dest.to_string(), "description": "profiles-to-disk",
                    "start": (Utc::now() - chrono::Duration::hours(1)).to_rfc3339()}),
        ),
    )
    .await;
    assert_eq!(s, 201, "{export}");

    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let (_, w) = call(
            "GET",
            &url(&format!("/v1/default/webhooks/{webhook_id}")),
            &admin,
            None,
        )
        .await;
        if w["status"]["failed"] == 1 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no failed delivery: {w}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    }

    let artifacts = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    let _ = std::fs::remove_dir_all(&artifacts);
    let args = json!({
        "base": url("").trim_end_matches('/'),
        "admin_key": admin, "read_key": read, "ingest_key": ingest_key,
        "other_ingest_key": other_ingest, "other_user": "secret-other-user",
        "webhook_id": webhook_id, "export_id": export["id"],
        "receiver_fix": format!("http://127.0.0.1:{}/fix", ep.port),
        "artifacts": artifacts,
    });
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/console/console_test.py");
    let out = tokio::task::spawn_blocking(move || {
        Command::new("python3")
            .arg(script)
            .arg(args.to_string())
            .output()
            .expect("python3")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    // the whole of stderr beside the screenshots; the message keeps its end, where Python
    // names the failed step and the assertion (a CI log may cut a long message short)
    let _ = std::fs::write(artifacts.join("browser-stderr.txt"), stderr.as_bytes());
    let tail: String = {
        let lines: Vec<&str> = stderr.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };
    assert!(
        out.status.success(),
        "the browser test failed (needs `apt install chromium` and `pip install playwright`; \
         screenshots and browser-stderr.txt in {}):\nstdout: {}\nstderr (last 40 lines):\n{tail}",
        artifacts.display(),
        String::from_utf8_lossy(&out.stdout)
    );
    let report: Value = serde_json::from_slice(
        out.stdout
            .split(|b| *b == b'\n')
            .rfind(|l| !l.is_empty())
            .unwrap(),
    )
    .unwrap();
    eprintln!("console: {report}");
    assert!(report["checks"].as_u64().unwrap() > 60, "{report}");
    // every page photographed, each a real PNG
    let shots = report["screenshots"].as_array().unwrap();
    assert!(shots.len() >= 15, "{report}");
    for s in shots {
        let bytes = std::fs::read(s.as_str().unwrap()).unwrap();
        assert!(bytes.len() > 5000 && bytes.starts_with(b"\x89PNG"), "{s}");
    }
    // the failed purchase reached the endpoint after the console's recover (and a test
    // message after "send test")
    assert!(ep.delivered.load(Ordering::SeqCst) >= 2);
    // the console's writes are in the store: the tag, the field, the erasure, the segment
    let (_, u) = call("GET", &url("/v1/default/users/alice-1"), &admin, None).await;
    assert!(
        u["tags"]
            .as_array()
            .unwrap()
            .contains(&json!("console-added")),
        "{u}"
    );
    assert_eq!(u["fields"]["plan"]["value"], "platinum");
    let (s, _) = call("GET", &url("/v1/default/users/bob-29"), &admin, None).await;
    assert_eq!(s, 404);
    let (s, seg) = call(
        "GET",
        &url("/v1/default/segments/console-buyers"),
        &admin,
        None,
    )
    .await;
    assert_eq!(s, 200, "{seg}");
    let counts = report["segment_counts"].as_array().unwrap();
    assert!(counts[0].as_u64() > counts[2].as_u64(), "{report}");
    node.terminate();
}
