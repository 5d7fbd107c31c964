//! Bulk export end to end: scheduled exports to a real S3-protocol server (s3s-fs), read
//! back and compared with the source; no gaps and no duplicates under late rows,
//! backfills and a SIGKILLed `tidemark sinks run`; signed HTTPS destinations; the
//! batched pull API with its expiring links.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use arrow::array::{AsArray, RecordBatch};
use bytes::Bytes;
use chrono::{DateTime, TimeZone, Utc};
use futures::TryStreamExt;
use object_store::ObjectStoreExt;
use serde_json::{Value, json};
use tidemark::config::Config;
use tidemark::exports::def::Exports;
use tidemark::exports::worker::Runner;
use tidemark::storage::Store;

use crate::harness::{Backend, S3_BUCKET, S3_KEY, S3_SECRET, S3Server, TestStore, call};
use crate::jobs_model::{Ev, commit};
use crate::webhooks::{Receiver, sinks_run, stdout_line, verify_all};

fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

fn ev(id: String, received: DateTime<Utc>, name: &str) -> Ev {
    Ev {
        env: "default".into(),
        id,
        name: name.into(),
        category: "custom".into(),
        user: "u1".into(),
        occurred: micros(received),
        received: micros(received),
        platform: None,
    }
}

/// `s3://bucket/<prefix>` on `s3` and the options that reach it.
/// Destination rules that let the test's own S3 server (on loopback) through.
fn loopback() -> tidemark_sinks::export::DestinationRules {
    tidemark_sinks::export::DestinationRules {
        policy: std::sync::Arc::new(tidemark_sinks::address::AddressPolicy::new(vec![
            "127.0.0.0/8".parse().unwrap(),
        ])),
        file_roots: Vec::new(),
    }
}

fn s3_destination(s3: &S3Server, prefix: &str) -> (String, Value) {
    (
        format!("s3://{S3_BUCKET}/{prefix}"),
        json!({
            "aws_access_key_id": S3_KEY,
            "aws_secret_access_key": S3_SECRET,
            "aws_endpoint": s3.endpoint,
            "aws_region": "us-east-1",
            "aws_allow_http": "true",
        }),
    )
}

/// What an export wrote under `{prefix}/{source}/`, checked for consistency: every data
/// file is listed by exactly one manifest, with its row count and checksum.
struct Exported {
    /// Window name -> manifest.
    manifests: BTreeMap<String, Value>,
    /// Event ids in file order, over every manifest.
    ids: Vec<String>,
    /// Data files and their rows (Parquet read back).
    files: BTreeMap<String, Vec<RecordBatch>>,
}

/// The test's S3 destination under `prefix`, opened as the worker opens it.
fn open_s3_destination(
    s3: &S3Server,
    prefix: &str,
) -> (
    std::sync::Arc<dyn object_store::ObjectStore>,
    object_store::path::Path,
) {
    let (url, options) = s3_destination(s3, prefix);
    let options: BTreeMap<String, String> = serde_json::from_value(options).unwrap();
    tidemark_sinks::export::open_store(&url::Url::parse(&url).unwrap(), &options, "d", &loopback())
        .unwrap()
}

async fn read_exported(s3: &S3Server, prefix: &str, source: &str) -> Exported {
    let (store, root) = open_s3_destination(s3, prefix);
    let dir = root.clone().join(source);
    let listed: Vec<_> = store.list(Some(&dir)).try_collect().await.unwrap();
    let mut manifests: BTreeMap<String, Value> = BTreeMap::new();
    let mut data = BTreeMap::new();
    for meta in listed {
        let name = meta.location.filename().unwrap().to_string();
        let bytes = store
            .get(&meta.location)
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        match name.strip_suffix("_manifest.json") {
            Some(window) => {
                manifests.insert(window.to_string(), serde_json::from_slice(&bytes).unwrap());
            }
            None => {
                data.insert(format!("{source}/{name}"), bytes);
            }
        }
    }
    let mut listed_files = BTreeSet::new();
    let mut ids = Vec::new();
    let mut files = BTreeMap::new();
    for (window, m) in &manifests {
        let mut rows = 0;
        for f in m["files"].as_array().unwrap() {
            let name = f["name"].as_str().unwrap().to_string();
            assert!(name.starts_with(&format!("{source}/{window}")), "{name}");
            assert!(listed_files.insert(name.clone()), "{name} listed twice");
            let bytes: &Bytes = data
                .get(&name)
                .unwrap_or_else(|| panic!("{name} in the manifest of {window} is missing"));
            assert_eq!(
                f["sha256"].as_str().unwrap(),
                tidemark_sinks::export::sha256_hex(bytes),
                "{name}"
            );
            let batches: Vec<RecordBatch> =
                parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder::try_new(
                    bytes.clone(),
                )
                .unwrap()
                .build()
                .unwrap()
                .map(|b| b.unwrap())
                .collect();
            let n: usize = batches.iter().map(|b| b.num_rows()).sum();
            assert_eq!(f["rows"].as_u64().unwrap(), n as u64, "{name}");
            rows += n;
            for b in &batches {
                let col = b.column_by_name("event_id").unwrap().as_string::<i32>();
                ids.extend(col.iter().map(|v| v.unwrap().to_string()));
            }
            files.insert(name, batches);
        }
        assert_eq!(m["rows"].as_u64().unwrap(), rows as u64, "{window}");
    }
    let orphans: Vec<&String> = data.keys().filter(|n| !listed_files.contains(*n)).collect();
    assert!(orphans.is_empty(), "files no manifest lists: {orphans:?}");
    Exported {
        manifests,
        ids,
        files,
    }
}

fn assert_exactly(ids: &[String], expected: &BTreeSet<String>) {
    let got: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(got.len(), ids.len(), "duplicates among the exported rows");
    assert_eq!(got.len(), expected.len());
    assert!(got == *expected, "the exported ids differ from the source");
}

fn test_config(data: &str) -> Config {
    let mut config = Config {
        data: data.to_string(),
        ..Config::default()
    };
    config.exports.max_rows_per_file = 300;
    config.exports.max_windows_per_pass = 4;
    // The test's S3 server is on loopback, refused unless allowed.
    config.webhooks.allow_networks = vec!["127.0.0.0/8".into()];
    config
}

/// The worker on a simulated clock: events arrive every minute while 5-minute windows
/// close; some arrive late (received in windows already exported, as after a WAL
/// replay); a backfill re-runs a range in the middle. The union of the exported files is
/// the source exactly, every window's Parquet equals the SQL result row for row, and
/// late rows made their windows re-export.
#[tokio::test(flavor = "multi_thread")]
async fn scheduled_windows_are_exact_under_late_rows_and_backfills() {
    let s3 = S3Server::start();
    let ts = TestStore::new(Backend::Local);
    let store = Store::open(&ts.data, &BTreeMap::new()).unwrap();
    let config = test_config(&ts.data);
    let ctx = tidemark::exports::Context::new(&config, &store).unwrap();
    let t0 = Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap();
    let (destination, options) = s3_destination(&s3, "exports");
    let exports = Exports::new(store.clone());
    let (export, secret) = exports
        .create(
            "default",
            &json!({"source": "events", "interval": "5m", "format": "parquet",
                    "destination": destination, "options": options,
                    "start": t0.to_rfc3339(), "filter": {"events": ["page_*", "buy"]}}),
            &ctx,
        )
        .await
        .unwrap();
    assert!(secret.is_none());
    let runner = Runner::new(store.clone(), ctx.clone());
    let mut expected = BTreeSet::new();
    let mut late = 0;
    let minute = chrono::Duration::minutes(1);
    for step in 0..90i64 {
        let at = t0 + minute * step as i32;
        let mut evs: Vec<Ev> = (0..150)
            .map(|k| {
                let name = ["page_view", "buy", "ignored"][k % 3];
                ev(
                    format!("e{step}-{k}"),
                    at + chrono::Duration::milliseconds(k as i64 * 397),
                    name,
                )
            })
            .collect();
        if step % 10 == 9 && step >= 30 {
            // Received 25 minutes ago: that window is exported already.
            evs.extend((0..20).map(|k| {
                ev(
                    format!("late{step}-{k}"),
                    at - minute * 25 + chrono::Duration::seconds(k),
                    "buy",
                )
            }));
            late += 1;
        }
        expected.extend(
            evs.iter()
                .filter(|e| e.name != "ignored")
                .map(|e| e.id.clone()),
        );
        commit(&store, &evs).await;
        if step == 60 {
            let windows = tidemark::exports::worker::backfill_windows(
                &export,
                t0 + minute * 10,
                t0 + minute * 40,
            )
            .unwrap();
            assert_eq!(windows.len(), 6);
            let done = runner
                .backfill("default", &export, &windows, |_| {})
                .await
                .unwrap();
            assert_eq!(done.len(), 6);
        }
        runner.pass(at + minute).await.unwrap();
    }
    assert_eq!(late, 6);
    // Long after the last event: everything closes.
    for _ in 0..20 {
        runner.pass(t0 + chrono::Duration::hours(3)).await.unwrap();
    }
    let out = read_exported(&s3, "exports", "events").await;
    // 90 minutes of 5-minute windows, then empty windows up to the close.
    assert!(out.manifests.len() >= 18, "{}", out.manifests.len());
    assert_exactly(&out.ids, &expected);
    assert!(
        out.files
            .contains_key("events/20260101T000000Z-20260101T000500Z.parquet")
    );
    assert!(
        out.files
            .contains_key("events/20260101T000000Z-20260101T000500Z-1.parquet")
    );
    let first = &out.manifests["20260101T000000Z-20260101T000500Z"];
    assert_eq!(first["rows"], 500);
    assert_eq!(first["files"].as_array().unwrap().len(), 1 + 1);
    assert_eq!(first["window"]["end"], "2026-01-01T00:05:00.000000Z");
    // Row for row: one window's files against the SQL result.
    let session = tidemark::query::session(&store, Some("default"))
        .await
        .unwrap();
    let w = "20260101T003500Z-20260101T004000Z";
    let sql = format!(
        "SELECT {} FROM events WHERE received_at >= TIMESTAMP '2026-01-01T00:35:00Z' \
         AND received_at < TIMESTAMP '2026-01-01T00:40:00Z' AND event_name <> 'ignored' \
         ORDER BY received_at, event_id",
        tidemark::exports::source::EVENT_COLUMNS
    );
    let want = session.sql(&sql).await.unwrap().collect().await.unwrap();
    let got: Vec<RecordBatch> = out.manifests[w]["files"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|f| out.files[f["name"].as_str().unwrap()].clone())
        .collect();
    let (got, want) = (
        arrow::util::pretty::pretty_format_batches(&got)
            .unwrap()
            .to_string(),
        arrow::util::pretty::pretty_format_batches(&want)
            .unwrap()
            .to_string(),
    );
    assert_eq!(got.lines().count(), 500 + 4);
    let diff = got.lines().zip(want.lines()).find(|(a, b)| a != b);
    assert!(got == want, "first difference: {diff:?}");
    // Late rows (received 25 minutes before steps 39, 49, ...) re-exported their windows.
    let late_window = &out.manifests["20260101T001000Z-20260101T001500Z"];
    assert_eq!(late_window["rows"], 500 + 20, "{late_window}");
    let st = tidemark::exports::state::load(&store, "default", &export.id)
        .await
        .unwrap();
    assert!(st.windows_done > out.manifests.len() as u64 + 6, "{st:?}");
    assert_eq!(st.redo_from, None);
    assert_eq!(st.failures, 0);
}

fn write_config(ts: &TestStore, text: &str) {
    std::fs::write(ts.tmp.path().join("tidemark.toml"), text).unwrap();
}

fn cli_ok(ts: &TestStore, args: &[&str]) -> String {
    let out = ts.cli(args);
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

async fn manifest_count(s3: &S3Server, prefix: &str) -> usize {
    let (store, root) = open_s3_destination(s3, prefix);
    let listed: Vec<_> = store.list(Some(&root)).try_collect().await.unwrap();
    listed
        .iter()
        .filter(|m| m.location.as_ref().ends_with("_manifest.json"))
        .count()
}

/// `tidemark sinks run` SIGKILLed mid-export, restarted, then `exports backfill` over the
/// middle with a different file size (so the backfill must delete the files of the
/// earlier run): every event is exported exactly once.
#[tokio::test(flavor = "multi_thread")]
async fn sigkill_mid_export_and_backfill_leave_every_event_once() {
    let s3 = S3Server::start();
    let ts = TestStore::new(Backend::Local);
    write_config(
        &ts,
        "[webhooks]\nenabled = true\nallow_networks = [\"127.0.0.0/8\"]\n\
         [exports]\npoll_interval = \"100ms\"\nmax_rows_per_file = 150\n",
    );
    let store = Store::open(&ts.data, &BTreeMap::new()).unwrap();
    // Three hours of closed 5-minute windows, 600 events each, in 9 commits.
    let now = Utc::now();
    let base =
        tidemark::exports::window::Interval::FiveMinutes.floor(now) - chrono::Duration::hours(3);
    let mut expected = BTreeSet::new();
    for c in 0..9 {
        let evs: Vec<Ev> = (0..2400)
            .map(|k| {
                let i = c * 2400 + k;
                ev(
                    format!("e{i}"),
                    base + chrono::Duration::milliseconds(i * 500),
                    "page_view",
                )
            })
            .collect();
        expected.extend(evs.iter().map(|e| e.id.clone()));
        commit(&store, &evs).await;
    }
    let (destination, options) = s3_destination(&s3, "crash");
    let mut args = vec![
        "exports".to_string(),
        "add".into(),
        "--source".into(),
        "events".into(),
        "--interval".into(),
        "5m".into(),
        "--destination".into(),
        destination,
        "--start".into(),
        base.to_rfc3339(),
    ];
    for (k, v) in options.as_object().unwrap() {
        args.push("--option".into());
        args.push(format!("{k}={}", v.as_str().unwrap()));
    }
    let argv: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = cli_ok(&ts, &argv);
    let id = stdout_line(&out, "added export").to_string();

    let first = sinks_run(&ts);
    // Meanwhile rows keep arriving late (received 10-55 minutes after `base`, windows the
    // worker has exported or is exporting), before and after the kill.
    let late = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut ids = Vec::new();
            for c in 0..16i64 {
                let evs: Vec<Ev> = (0..25i64)
                    .map(|k| {
                        let at = base
                            + chrono::Duration::minutes(10)
                            + chrono::Duration::seconds((c * 25 + k) * 6);
                        ev(format!("late{c}-{k}"), at, "page_view")
                    })
                    .collect();
                ids.extend(evs.iter().map(|e| e.id.clone()));
                commit(&store, &evs).await;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            ids
        })
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while manifest_count(&s3, "crash").await < 3 {
        assert!(Instant::now() < deadline, "no window exported");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    drop(first); // SIGKILL
    let at_kill = manifest_count(&s3, "crash").await;
    assert!(
        at_kill < 36,
        "the worker finished before the kill ({at_kill})"
    );

    let _second = sinks_run(&ts);
    expected.extend(late.await.unwrap());
    let head = tidemark::storage::events_table::open_or_create(&store)
        .await
        .unwrap()
        .version()
        .unwrap() as i64;
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        // Caught up: every commit seen and no window waiting to be re-exported.
        let st = tidemark::exports::state::load(&store, "default", &id)
            .await
            .unwrap();
        if st.events_version != Some(head) || st.redo_from.is_some() {
            assert!(Instant::now() < deadline, "late rows not handled: {st:?}");
            tokio::time::sleep(Duration::from_millis(300)).await;
            continue;
        }
        let status: Value =
            serde_json::from_str(&cli_ok(&ts, &["exports", "status", &id])).unwrap();
        if status["exported_until"].as_str().is_some_and(|t| {
            DateTime::parse_from_rfc3339(t).unwrap().to_utc() >= base + chrono::Duration::hours(3)
        }) {
            assert_eq!(status["failures"], 0, "{status}");
            assert!(status["lag_seconds"].as_i64().unwrap() < 300, "{status}");
            // The newest window holds 600 events, unless the (empty) window after it has
            // closed meanwhile.
            let last = &status["last_good_window"];
            let ends_at_base = last["window"]["end"].as_str().is_some_and(|t| {
                DateTime::parse_from_rfc3339(t).unwrap().to_utc()
                    == base + chrono::Duration::hours(3)
            });
            assert_eq!(last["rows"], if ends_at_base { 600 } else { 0 }, "{status}");
            assert!(status["windows_done"].as_u64().unwrap() >= 36, "{status}");
            break;
        }
        assert!(Instant::now() < deadline, "not caught up: {status}");
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    drop(_second);
    let out = read_exported(&s3, "crash", "events").await;
    assert_exactly(&out.ids, &expected);
    let w = tidemark::exports::window::Interval::FiveMinutes
        .window(base)
        .name();
    assert_eq!(out.manifests[&w]["files"].as_array().unwrap().len(), 4);

    // Backfill the middle hour with one file per window: the 150-row files of those
    // windows must go.
    let from = (base + chrono::Duration::minutes(60)).to_rfc3339();
    let to = (base + chrono::Duration::minutes(120)).to_rfc3339();
    let mut cmd = ts.command();
    cmd.args([
        "exports", "backfill", &id, "--from", &from, "--to", &to, "--data", &ts.data,
    ])
    .env("TIDEMARK_EXPORTS__MAX_ROWS_PER_FILE", "1000");
    let done = cmd.output().unwrap();
    assert!(
        done.status.success(),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    let text = String::from_utf8_lossy(&done.stdout);
    assert!(
        text.contains("backfilled 12 window(s), 7200 rows"),
        "{text}"
    );
    let out = read_exported(&s3, "crash", "events").await;
    assert_exactly(&out.ids, &expected);
    let w = tidemark::exports::window::Interval::FiveMinutes
        .window(base + chrono::Duration::minutes(60))
        .name();
    assert_eq!(out.manifests[&w]["files"].as_array().unwrap().len(), 1);
    assert_eq!(out.manifests[&w]["rows"], 600);

    // Refusals name the field.
    let bad = ts.cli(&[
        "exports",
        "add",
        "--source",
        "nope",
        "--destination",
        "ftp://x/y",
    ]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("source: unknown source \"nope\""), "{err}");
    assert!(
        err.contains("destination: unsupported scheme ftp://"),
        "{err}"
    );
    let bad = ts.cli(&["exports", "backfill", &id, "--from", "soon", "--to", &to]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("--from: \"soon\" is not a time"));
    let bad = ts.cli(&["exports", "status", "ex_missing"]);
    assert!(String::from_utf8_lossy(&bad.stderr).contains("export \"ex_missing\" does not exist"));
}

async fn get(url: &str, key: Option<&str>) -> reqwest::Response {
    let mut req = crate::harness::client().get(url);
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    req.send().await.unwrap()
}

async fn get_json(url: &str, key: Option<&str>) -> (u16, Value) {
    let resp = get(url, key).await;
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

/// Text bodies (manifests) are checked with the `standardwebhooks` crate; it refuses
/// non-UTF-8 payloads, so the gzip / Parquet files are checked with a direct HMAC-SHA256
/// of `id.timestamp.body` under the decoded secret (the same definition).
fn verify_signed(receipts: &[crate::webhooks::Receipt], secret: &str) {
    use base64::Engine;
    use hmac::Mac;
    let text: Vec<_> = receipts
        .iter()
        .filter(|r| std::str::from_utf8(&r.body).is_ok())
        .cloned()
        .collect();
    assert!(!text.is_empty());
    verify_all(&text, secret);
    let key = base64::engine::general_purpose::STANDARD
        .decode(secret.strip_prefix("whsec_").unwrap())
        .unwrap();
    for r in receipts
        .iter()
        .filter(|r| std::str::from_utf8(&r.body).is_err())
    {
        let mut mac = <hmac::Hmac<sha2::Sha256> as Mac>::new_from_slice(&key).unwrap();
        mac.update(format!("{}.{}.", r.id, r.timestamp).as_bytes());
        mac.update(&r.body);
        let want = format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        );
        let header = r.headers["webhook-signature"].to_str().unwrap();
        assert!(header.split(' ').any(|s| s == want), "{}: {header}", r.id);
    }
}

mod pull_and_https;
