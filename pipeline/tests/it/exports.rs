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
