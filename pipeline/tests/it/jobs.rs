//! The SQL jobs: incremental runs == rebuild == a naive computation (property test), the
//! runner killed mid-run, and profiles through `tidemark serve` and the users API.

use std::time::{Duration, Instant};

use proptest::prelude::*;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tidemark::jobs::{JobOptions, Runner};
use tidemark::storage::{Store, events_table};

use crate::harness::{Backend, TestStore, client};
use crate::jobs_model::{Ev, HOUR, MINUTE, T0, actual, commit, expected, published};

const WINDOW: i64 = 30 * MINUTE;
const SKEW: i64 = 5 * MINUTE;

fn options() -> JobOptions {
    JobOptions {
        clock_skew_tolerance: Duration::from_micros(SKEW as u64),
        dedup_window: Duration::from_micros(WINDOW as u64),
        max_versions_per_run: 4,
        target_partitions: Some(2),
        evaluate_segments: false,
        ..JobOptions::default()
    }
}

/// Random commits: users, platforms, categories, late and future-skewed events, and
/// re-sent copies of earlier events within and beyond the dedup window.
fn random_commits(seed: u64) -> Vec<Vec<Ev>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let names = ["open", "click", "buy", "segment-entered"];
    let categories = ["platform", "sdk", "custom", "system"];
    let platforms = [
        Some("ios"),
        Some("ipados"),
        Some("android"),
        Some("web"),
        Some("server"),
        Some("windows"),
        None,
    ];
    let mut all: Vec<Ev> = Vec::new();
    let mut commits = Vec::new();
    for k in 0..rng.random_range(1..9) {
        let mut evs = Vec::new();
        for i in 0..rng.random_range(1..16) {
            let received = T0 + k * 10 * MINUTE + i * 1_000_000;
            if !all.is_empty() && rng.random_bool(0.2) {
                let mut copy = all[rng.random_range(0..all.len())].clone();
                copy.received = received;
                evs.push(copy);
                continue;
            }
            let occurred = if rng.random_bool(0.2) {
                received + rng.random_range(0..20 * MINUTE)
            } else {
                received - rng.random_range(0..3 * HOUR)
            };
            evs.push(Ev {
                env: ["prod", "staging"][rng.random_range(0..2)].into(),
                id: format!("e{k}-{i}"),
                name: names[rng.random_range(0..names.len())].into(),
                category: categories[rng.random_range(0..categories.len())].into(),
                user: format!("u{}", rng.random_range(0..6)),
                occurred,
                received,
                platform: platforms[rng.random_range(0..platforms.len())].map(str::to_string),
            });
        }
        all.extend(evs.iter().cloned());
        commits.push(evs);
    }
    commits
}

async fn run_until_caught_up(runner: &Runner) -> usize {
    let mut runs = 0;
    while !runner.run_once().await.unwrap().is_empty() {
        runs += 1;
        assert!(runs < 100, "runner never caught up");
    }
    runs
}

async fn incremental_equals_rebuild_and_model(seed: u64) {
    let tmp = tempfile::tempdir().unwrap();
    let store = Store::open(tmp.path().to_str().unwrap(), &Default::default()).unwrap();
    let runner = Runner::new(store.clone(), options());
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let commits = random_commits(seed);
    let all: Vec<Ev> = commits.iter().flatten().cloned().collect();
    for evs in &commits {
        commit(&store, evs).await;
        if rng.random_bool(0.5) {
            run_until_caught_up(&runner).await;
        }
        if rng.random_bool(0.3) {
            // A publish between runs: tidemark's views still see every run once.
            runner.publish().await.unwrap();
        }
        if rng.random_bool(0.25) {
            let t = events_table::open_or_create(&store).await.unwrap();
            events_table::optimize_since(t, "1970-01-01", 1)
                .await
                .unwrap();
        }
    }
    if rng.random_bool(0.5) {
        // A compaction of events as the last commit: the cursor still reaches the head.
        let t = events_table::open_or_create(&store).await.unwrap();
        events_table::optimize_since(t, "1970-01-01", 1)
            .await
            .unwrap();
    }
    run_until_caught_up(&runner).await;
    for s in runner.status().await.unwrap() {
        assert_eq!(s.lag_versions, 0, "{s:?}");
        assert_eq!(s.lag_rows, Some(0), "{s:?}");
    }
    let want = expected(&all, WINDOW, SKEW);
    let incremental = actual(&store).await;
    assert_eq!(incremental, want, "incremental runs != model (seed {seed})");
    runner.publish().await.unwrap();
    assert_eq!(
        published(&store).await,
        want,
        "published tables != model (seed {seed})"
    );
    assert_eq!(
        actual(&store).await,
        want,
        "views after publish (seed {seed})"
    );
    runner.rebuild(None).await.unwrap();
    let rebuilt = actual(&store).await;
    assert_eq!(rebuilt, want, "rebuild != model (seed {seed})");
    assert_eq!(
        published(&store).await,
        want,
        "rebuilt tables (seed {seed})"
    );
    assert!(
        runner.run_once().await.unwrap().is_empty(),
        "nothing left after rebuild"
    );
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, ..ProptestConfig::default() })]
    #[test]
    fn incremental_runs_equal_rebuild_and_a_naive_model(seed in any::<u64>()) {
        let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
        rt.block_on(incremental_equals_rebuild_and_model(seed));
    }
}

/// A user's events, `n` of them, spread over `commits` commits.
fn user_events(prefix: &str, n: usize, users: usize, received_base: i64) -> Vec<Ev> {
    (0..n)
        .map(|i| Ev {
            env: "prod".into(),
            id: format!("{prefix}-{i}"),
            name: ["open", "click", "buy"][i % 3].into(),
            category: "custom".into(),
            user: format!("user-{}", i % users),
            occurred: received_base - (i as i64 % 1000) * 1_000_000,
            received: received_base + i as i64,
            platform: Some(["ios", "web"][i % 2].into()),
        })
        .collect()
}

/// `tidemark jobs run` killed with SIGKILL at random points, restarted each time, then
/// caught up with `--once`: the tables equal the model (nothing lost, nothing doubled).
#[tokio::test(flavor = "multi_thread")]
async fn runner_killed_mid_run_recovers_exactly() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let ts = TestStore::new(Backend::Local);
    let store = Store::open(&ts.data, &Default::default()).unwrap();
    let mut all = Vec::new();
    let mut rng = StdRng::seed_from_u64(7);
    let mut killed_mid_run = 0;
    for round in 0..6 {
        for c in 0..3 {
            let evs = user_events(&format!("r{round}c{c}"), 4000, 500, T0 + round * HOUR);
            commit(&store, &evs).await;
            all.extend(evs);
        }
        let mut child = std::process::Command::new(crate::harness::BIN)
            .args(["jobs", "run", "--data", &ts.data])
            .env("TIDEMARK_JOBS__POLL_INTERVAL", "100ms")
            .env("TIDEMARK_JOBS__PUBLISH_INTERVAL", "300ms")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let wait = Duration::from_millis(rng.random_range(50..1500));
        tokio::time::sleep(wait).await;
        let before = Runner::new(store.clone(), JobOptions::default())
            .status()
            .await
            .unwrap();
        kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).unwrap();
        child.wait().unwrap();
        if before.iter().any(|s| s.lag_versions > 0) {
            killed_mid_run += 1;
        }
    }
    ts.cli_ok(&["jobs", "run", "--once"]);
    let want = expected(&all, 3600 * 1_000_000, 300 * 1_000_000);
    let got = actual(&store).await;
    assert_eq!(got.profiles.len(), 500);
    assert_eq!(got, want);
    // `--once` published what it ran: the Delta tables alone give the same answer.
    assert_eq!(published(&store).await, want);
    assert!(
        killed_mid_run >= 1,
        "no kill landed while the jobs were behind"
    );
    let status = ts.cli(&["jobs", "status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    for s in status.as_array().unwrap() {
        assert_eq!(s["lag_versions"], 0, "{s}");
    }
}

/// `GET url` with a bearer key.
async fn get_as(url: impl reqwest::IntoUrl, key: &str) -> reqwest::Response {
    client().get(url).bearer_auth(key).send().await.unwrap()
}

/// Events posted to a running node show up in the profile API within seconds.
async fn profiles_follow_ingest(backend: Backend) {
    let ts = TestStore::new(backend);
    let node = ts.serve(
        &["--ack", "commit"],
        &[("TIDEMARK_JOBS__DEBOUNCE", "100ms")],
    );
    let read_key = ts.create_key("default", "read");
    let ingest = node.ingest_key().to_string();
    let now = chrono::Utc::now();
    let iso = |d: chrono::Duration| (now + d).to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    let body = serde_json::json!([
        {"event_id":"a1","event_name":"open","user_id":"ann","occurred_at":iso(chrono::Duration::hours(-2)),"platform":"iOS"},
        {"event_id":"a2","event_name":"buy","user_id":"ann","occurred_at":iso(chrono::Duration::hours(-1)),"platform":"web"},
        {"event_id":"b1","event_name":"open","user_id":"bob","occurred_at":iso(chrono::Duration::hours(3)),"platform":"android"}
    ]);
    let posted = Instant::now();
    let (status, reply) = crate::harness::post_json(
        &node.events_url("default"),
        Some(&ingest),
        &body.to_string(),
    )
    .await;
    assert_eq!(status, 202, "{reply}");

    let url = node.url("/v1/default/users/ann");
    // profiles and event_stats are separate Delta commits: wait until both have the events
    let profile = loop {
        let r = get_as(&url, &read_key).await;
        if r.status() == 200 {
            let p = r.json::<serde_json::Value>().await.unwrap();
            if p["event_stats"].as_array().is_some_and(|s| s.len() == 2) {
                break p;
            }
        } else {
            assert_eq!(r.status(), 404);
        }
        assert!(
            posted.elapsed() < Duration::from_secs(30),
            "profile did not appear"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    eprintln!(
        "profile visible {} ms after the ingest acknowledgement",
        posted.elapsed().as_millis()
    );
    assert_eq!(profile["user_id"], "ann");
    assert_eq!(profile["event_count"], 2);
    assert_eq!(profile["last_event_name"], "buy");
    let ts_of =
        |v: &serde_json::Value| chrono::DateTime::parse_from_rfc3339(v.as_str().unwrap()).unwrap();
    assert_eq!(
        ts_of(&profile["last_seen_at"]),
        ts_of(&profile["last_seen_web_at"])
    );
    assert_eq!(
        ts_of(&profile["first_seen_at"]),
        ts_of(&profile["last_seen_ios_at"])
    );
    assert_eq!(
        ts_of(&profile["last_seen_at"]) - ts_of(&profile["first_seen_at"]),
        chrono::Duration::hours(1)
    );
    assert!(profile["last_seen_android_at"].is_null());
    let stats = profile["event_stats"].as_array().unwrap();
    let names: Vec<&str> = stats
        .iter()
        .map(|s| s["event_name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["buy", "open"]);
    assert!(stats.iter().all(|s| s["count"] == 1));

    // Bob's clock is 3 h ahead: his activity is clamped to the time it was received.
    let bob = loop {
        let r = get_as(node.url("/v1/default/users/bob"), &read_key).await;
        if r.status() == 200 {
            break r.json::<serde_json::Value>().await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        ts_of(&bob["last_seen_at"]) < now + chrono::Duration::minutes(5),
        "{bob}"
    );
    assert_eq!(bob["last_seen_at"], bob["created_at"]);

    let r = get_as(node.url("/v1/default/users/nobody"), &read_key).await;
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "not_found");
    assert!(
        body["message"].as_str().unwrap().contains("'nobody'"),
        "{body}"
    );

    let r = get_as(&url, &ingest).await;
    assert_eq!(r.status(), 403, "an ingest key cannot read profiles");
    let r = get_as(node.url("/v1/staging/users/ann"), &read_key).await;
    assert_eq!(r.status(), 403, "a key of another environment");
    let r = client().get(&url).send().await.unwrap();
    assert_eq!(r.status(), 401);

    let rows = ts.sql("select user_id, event_count from profiles order by user_id");
    assert_eq!(
        rows,
        vec![
            serde_json::json!({"user_id":"ann","event_count":2}),
            serde_json::json!({"user_id":"bob","event_count":1}),
        ]
    );
    let out = ts.cli(&["jobs", "status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        text.contains("profiles") && text.contains("lag 0 version(s)"),
        "{text}"
    );
    // A publish pass now (on this backend's object store): every job's published table
    // then holds its cursor, and nothing is left pending.
    let out = ts.cli(&["jobs", "publish"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // (or nothing pending, when the first run was a rebuild that covered every event)
    assert!(
        text.contains("event_stats: published runs") || text.contains("nothing pending"),
        "{text}"
    );
    let status = ts.cli(&["jobs", "status", "--json"]);
    let status: serde_json::Value = serde_json::from_slice(&status.stdout).unwrap();
    for s in status.as_array().unwrap() {
        assert_eq!(s["published_through"], s["cursor"], "{s}");
        assert_eq!(s["unpublished_runs"], 0, "{s}");
    }
    let out = ts.cli(&["jobs", "publish"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("nothing pending"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    node.terminate();
}

on_both_backends!(profiles_follow_ingest);

/// A rebuild of a store without events says so; a bad --data fails with a message.
#[test]
fn jobs_cli_on_an_empty_store() {
    let ts = TestStore::new(Backend::Local);
    let out = ts.cli(&["jobs", "rebuild"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("nothing to rebuild"));
    let out = ts.cli(&["jobs", "status"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("never ran"));
    let out = std::process::Command::new(crate::harness::BIN)
        .args(["jobs", "run", "--once", "--data", "ftp://nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("ftp://"));
}

/// `tidemark jobs publish` killed with SIGKILL at random points of its pass, with more
/// events run into the pending tables before each: after every kill each published table
/// is readable and equals the model of the events up to its mark (the previous pass's or
/// this one's, never a mix), and the last, uninterrupted pass publishes everything.
#[tokio::test(flavor = "multi_thread")]
async fn publish_killed_mid_pass_leaves_the_previous_version() {
    use nix::sys::signal::{Signal, kill};
    use nix::unistd::Pid;

    let ts = TestStore::new(Backend::Local);
    let store = Store::open(&ts.data, &Default::default()).unwrap();
    let runner = Runner::new(
        store.clone(),
        JobOptions {
            evaluate_segments: false,
            ..JobOptions::default()
        },
    );
    // (events version, every event committed up to it)
    let mut history: Vec<(i64, Vec<Ev>)> = Vec::new();
    let mut all = Vec::new();
    let mut rng = StdRng::seed_from_u64(11);
    let (mut killed_mid_pass, mut orphans_seen, mut orphans_before) = (0, 0, 0);
    let events_version = |store: Store| async move {
        let t = store.load_table("events").await.unwrap().unwrap();
        t.version().unwrap() as i64
    };
    let model_at = |history: &[(i64, Vec<Ev>)], mark: Option<i64>| {
        let evs = mark
            .and_then(|m| history.iter().rev().find(|(v, _)| *v <= m))
            .map(|(_, e)| e.clone())
            .unwrap_or_default();
        expected(&evs, 3600 * 1_000_000, 300 * 1_000_000)
    };
    for round in 0..8 {
        let evs = user_events(&format!("k{round}"), 6000, 3000, T0 + round * HOUR);
        commit(&store, &evs).await;
        all.extend(evs);
        history.push((events_version(store.clone()).await, all.clone()));
        run_until_caught_up(&runner).await;
        let mut child = std::process::Command::new(crate::harness::BIN)
            .args(["jobs", "publish", "--data", &ts.data])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..2500))).await;
        if child.try_wait().unwrap().is_none() {
            killed_mid_pass += 1;
        }
        kill(Pid::from_raw(child.id() as i32), Signal::SIGKILL).ok();
        child.wait().unwrap();
        // Each table is at a mark, and holds exactly the events up to it.
        let status = runner.status().await.unwrap();
        let mark = |job: &str| {
            status
                .iter()
                .find(|s| s.job == job)
                .unwrap()
                .published_through
        };
        let got = published(&store).await;
        let want_profiles = model_at(&history, mark("profiles")).profiles;
        let want_stats = model_at(&history, mark("event_stats")).stats;
        assert_eq!(
            got.profiles, want_profiles,
            "round {round}: profiles at its mark"
        );
        assert_eq!(
            got.stats, want_stats,
            "round {round}: event_stats at its mark"
        );
        // Files written by the killed pass but never committed (VACUUM removes them).
        let dir = std::path::Path::new(&ts.data).join("event_stats");
        let orphans = parquet_files(&dir).difference(&added_files(&dir)).count();
        orphans_seen += usize::from(orphans > orphans_before);
        orphans_before = orphans;
    }
    ts.cli_ok(&["jobs", "publish"]);
    let want = expected(&all, 3600 * 1_000_000, 300 * 1_000_000);
    assert_eq!(published(&store).await, want);
    assert_eq!(actual(&store).await, want);
    assert!(
        killed_mid_pass >= 2,
        "only {killed_mid_pass} kill(s) landed mid-pass"
    );
    eprintln!(
        "publish crash test: {killed_mid_pass} of 8 kills mid-pass, {orphans_seen} left uncommitted files of event_stats"
    );
}

/// Names of the Parquet files below `dir` (any depth).
fn parquet_files(dir: &std::path::Path) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(parquet_files(&path));
        } else if path.extension().is_some_and(|e| e == "parquet") {
            out.insert(entry.file_name().to_string_lossy().into_owned());
        }
    }
    out
}

/// Names of the files any commit of the table at `dir` added.
fn added_files(dir: &std::path::Path) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    for entry in std::fs::read_dir(dir.join("_delta_log")).unwrap().flatten() {
        if !entry.file_name().to_string_lossy().ends_with(".json") {
            continue;
        }
        for line in std::fs::read_to_string(entry.path()).unwrap().lines() {
            let action: serde_json::Value = serde_json::from_str(line).unwrap();
            if let Some(path) = action["add"]["path"].as_str() {
                out.insert(path.rsplit('/').next().unwrap().to_string());
            }
        }
    }
    out
}
