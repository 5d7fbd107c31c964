//! The SQL jobs on a real Ballista cluster: a scheduler and two executors, each a
//! separate `tidemark ballista …` process on loopback ports. A rebuild and an incremental
//! run with `--engine ballista://…` must leave the derived tables equal, row for row, to
//! what the embedded engine derives from the same store; an executor killed in the middle
//! of a rebuild leaves the published tables as they were or complete, and a rerun works.

use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{BIN, Backend, TestStore, call, ingest};

/// A free loopback port (and the one after it, which executors use for gRPC).
fn free_port() -> u16 {
    loop {
        let a = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = a.local_addr().unwrap().port();
        if port < 65000 && TcpListener::bind(("127.0.0.1", port + 1)).is_ok() {
            return port;
        }
    }
}

/// A running role; killed on drop.
struct Role(Child);

impl Drop for Role {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn role(args: &[&str]) -> Role {
    let child = Command::new(BIN)
        .args(["ballista"])
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn tidemark ballista");
    Role(child)
}

/// Waits until something listens on `port`.
fn listening(port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nothing listens on {port}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

struct Cluster {
    url: String,
    scheduler_port: u16,
    _scheduler: Role,
    executors: Vec<Role>,
}

impl Cluster {
    /// Starts one more executor (2 task slots) and waits for it to register.
    fn add_executor(&mut self) {
        let port = free_port();
        let r = role(&[
            "executor",
            "--scheduler",
            &format!("127.0.0.1:{}", self.scheduler_port),
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--concurrent-tasks",
            "2",
            "--heartbeat",
            "1",
        ]);
        listening(port);
        self.executors.push(r);
        // Executors register with their first heartbeat.
        std::thread::sleep(Duration::from_secs(2));
    }
}

fn cluster(executors: usize) -> Cluster {
    let sched = free_port();
    let scheduler = role(&[
        "scheduler",
        "--bind",
        &format!("127.0.0.1:{sched}"),
        "--executor-timeout",
        "6",
    ]);
    listening(sched);
    let mut cluster = Cluster {
        url: format!("ballista://127.0.0.1:{sched}"),
        scheduler_port: sched,
        _scheduler: scheduler,
        executors: Vec::new(),
    };
    for _ in 0..executors {
        cluster.add_executor();
    }
    cluster
}

/// Starts `jobs rebuild --engine`, kills `victims` executors after `after`, and returns
/// whether the rebuild succeeded (with what it printed).
fn rebuild_killing(
    ts: &TestStore,
    data: &str,
    cluster: &mut Cluster,
    victims: usize,
    after: Duration,
) -> (bool, String) {
    let mut rebuild = ts
        .command()
        .args(["jobs", "rebuild", "--engine", &cluster.url, "--data", data])
        .env("TIDEMARK_JOBS__ENGINE_TIMEOUT", "120s")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(after);
    for mut victim in cluster.executors.drain(..victims) {
        victim.0.kill().unwrap();
        victim.0.wait().unwrap();
    }
    // jobs.engine_timeout bounds every step; this bounds the test even if it did not
    let deadline = Instant::now() + Duration::from_secs(600);
    while rebuild.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = rebuild.kill();
            panic!("jobs rebuild on {} still running after 600 s", cluster.url);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let out = rebuild.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// Every derived table, ordered, without the columns that record when it was written.
fn derived(ts: &TestStore, data: &str) -> Vec<(String, Vec<Value>)> {
    let queries = [
        (
            "profiles",
            "SELECT * EXCLUDE (updated_at) FROM profiles ORDER BY environment, user_id",
        ),
        (
            "event_stats",
            "SELECT * FROM event_stats ORDER BY environment, user_id, event_name",
        ),
        (
            "profile_attributes",
            "SELECT * EXCLUDE (updated_at) FROM profile_attributes ORDER BY environment, user_id, kind, name",
        ),
    ];
    queries
        .iter()
        .map(|(name, sql)| (name.to_string(), sql_rows(ts, data, sql, None)))
        .collect()
}

/// Queries over every UDF (and the views, a join, the catalog), for `sql --engine`.
const UDF_QUERIES: &[&str] = &[
    "SELECT platform_bucket(platform) AS b, count(*) AS n FROM events GROUP BY 1 ORDER BY 1 NULLS FIRST",
    "SELECT sum(event_key(environment, event_id) % 1000) AS s, count(DISTINCT event_key(environment, event_id)) AS n FROM events",
    "SELECT json_get_bool(properties, 'ok') AS ok, json_list_contains(json_get(properties, 'langs'), 'en') AS en, \
     count(*) AS n, sum(json_get_num(properties, 'i')) AS s FROM events GROUP BY 1, 2 ORDER BY 1, 2",
    "SELECT user_id, json_get_str(fields, 'plan') AS plan, tags FROM profiles \
     WHERE json_get(fields, 'plan') IS NOT NULL ORDER BY user_id",
    "SELECT s.event_name, count(*) AS users, sum(s.count) AS events FROM profiles p \
     JOIN event_stats s USING (environment, user_id) GROUP BY 1 ORDER BY 1",
    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1",
];

/// `tidemark sql --format json` rows, on `engine` when given.
fn sql_rows(ts: &TestStore, data: &str, sql: &str, engine: Option<&str>) -> Vec<Value> {
    let mut cmd = ts.command();
    cmd.args(["sql", "--format", "json", "--data", data]);
    if let Some(e) = engine {
        cmd.args(["--engine", e]);
    }
    let out = cmd.arg(sql).output().unwrap();
    assert!(
        out.status.success(),
        "{sql}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let answer: Value = serde_json::from_slice(&out.stdout).unwrap();
    answer["rows"].as_array().unwrap().clone()
}

fn jobs(ts: &TestStore, data: &str, args: &[&str]) -> (bool, String) {
    let out = ts
        .command()
        .arg("jobs")
        .args(args)
        .args(["--data", data])
        .env("TIDEMARK_JOBS__ENGINE_TIMEOUT", "300s")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

/// A copy of the store `data` in the test's directory, as `name`; its path.
fn copy_of(ts: &TestStore, data: &str, name: &str) -> String {
    let to = ts.tmp.path().join(name);
    let status = Command::new("cp")
        .arg("-r")
        .arg(data)
        .arg(&to)
        .status()
        .unwrap();
    assert!(status.success());
    to.to_string_lossy().into_owned()
}

/// Events of `users` users on every platform bucket, named by turn; ids `{tag}-{i}`.
fn events(tag: &str, n: usize, users: usize) -> Value {
    let platforms = [
        json!("ios"),
        json!("Android"),
        json!("web"),
        json!("backend"),
        Value::Null,
    ];
    let names = ["open", "buy", "view", "share"];
    Value::Array(
        (0..n)
            .map(|i| {
                json!({
                    "event_id": format!("{tag}-{i}"),
                    "event_name": names[i % names.len()],
                    "user_id": format!("u{}", (i * 7919) % users),
                    "platform": platforms[i % platforms.len()],
                    "properties": {"i": i, "ok": i % 2 == 0, "langs": if i % 3 == 0 { json!(["en", "de"]) } else { json!(["fr"]) }},
                })
            })
            .collect(),
    )
}

#[tokio::test(flavor = "multi_thread")]
async fn jobs_on_a_ballista_cluster_equal_the_embedded_engine() {
    let ts = TestStore::new(Backend::Local);
    ts.cli_ok(&[
        "fields", "add", "plan", "--type", "text", "--env", "default",
    ]);
    let data = ts.data.clone();
    let key = ts.create_key("default", "ingest");

    // A store with events, duplicates and profile writes; the node stopped after.
    let node = ts.serve(&["--ack", "commit"], &[("TIDEMARK_JOBS__ENABLED", "false")]);
    for b in 0..8 {
        ingest(&node, "default", &key, events(&format!("a{b}"), 5000, 3000)).await;
    }
    ingest(&node, "default", &key, events("a0", 100, 3000)).await;
    let writes: Vec<Value> = (0..50)
        .map(|u| json!({"id": format!("u{u}"), "set": {"plan": format!("p{}", u % 3)}, "tags": {"add": ["vip"]}}))
        .collect();
    let (s, b) = call(
        "POST",
        &node.url("/v1/default/users:batch"),
        &key,
        Some(Value::Array(writes)),
    )
    .await;
    assert_eq!(s, 202, "{b}");
    node.terminate();

    let mut cluster = cluster(2);
    let engine = cluster.url.clone();

    // Rebuild on the cluster, then the same store rebuilt embedded in a copy.
    let (ok, text) = jobs(&ts, &data, &["rebuild", "--engine", &engine]);
    assert!(ok, "{text}");
    assert!(text.contains("40000 row(s) read"), "{text}");
    let on_cluster = derived(&ts, &data);
    let copy = copy_of(&ts, &data, "copy");
    let (ok, text) = jobs(&ts, &copy, &["rebuild"]);
    assert!(ok, "{text}");
    let embedded = derived(&ts, &copy);
    assert_eq!(on_cluster[0].1.len(), 3000);
    assert!(
        on_cluster[0]
            .1
            .iter()
            .any(|p| p["tags"].to_string().contains("vip"))
    );
    assert_eq!(on_cluster, embedded, "rebuild on Ballista vs embedded");

    // `tidemark sql --engine`: the same answers as embedded, for queries that use every
    // UDF, the merged views, a join, and a catalog query (which runs on the client).
    for sql in UDF_QUERIES {
        let cluster_answer = sql_rows(&ts, &data, sql, Some(&engine));
        let embedded_answer = sql_rows(&ts, &data, sql, None);
        assert!(!embedded_answer.is_empty(), "{sql}");
        assert_eq!(cluster_answer, embedded_answer, "{sql}");
    }

    // New events and writes, then one incremental run on each engine.
    let node = ts.serve(&["--ack", "commit"], &[("TIDEMARK_JOBS__ENABLED", "false")]);
    ingest(&node, "default", &key, events("b", 3000, 4000)).await;
    ingest(&node, "default", &key, events("a1", 50, 3000)).await;
    node.terminate();
    let before = copy_of(&ts, &data, "before");
    let (ok, text) = jobs(&ts, &data, &["run", "--once", "--engine", &engine]);
    assert!(ok, "{text}");
    let (ok, text2) = jobs(&ts, &before, &["run", "--once"]);
    assert!(ok, "{text2}");
    assert!(text.contains("3000 row(s) read"), "{text}");
    let (incremental_cluster, incremental_embedded) = (derived(&ts, &data), derived(&ts, &before));
    assert!(incremental_cluster[0].1.len() > 3000);
    assert_eq!(
        incremental_cluster, incremental_embedded,
        "incremental run: {text}"
    );

    // An executor killed while a rebuild runs: the rebuild either fails or finishes on
    // the other executor; the published tables are the old ones or the complete new
    // ones, never a mix, and a rerun gives the embedded answer.
    let node = ts.serve(&["--ack", "commit"], &[("TIDEMARK_JOBS__ENABLED", "false")]);
    for b in 0..6 {
        ingest(&node, "default", &key, events(&format!("c{b}"), 5000, 5000)).await;
    }
    node.terminate();
    let third = copy_of(&ts, &data, "third");
    let (ok, text) = jobs(&ts, &third, &["rebuild"]);
    assert!(ok, "{text}");
    let want = derived(&ts, &third);
    let old = derived(&ts, &data);
    let (ok, text) = rebuild_killing(&ts, &data, &mut cluster, 1, Duration::from_millis(700));
    let after = derived(&ts, &data);
    eprintln!("rebuild with one of two executors killed: ok={ok} {text}");
    if ok {
        assert_eq!(after, want, "a rebuild that succeeded is complete");
    } else {
        assert_eq!(after, old, "a rebuild that failed changed nothing");
    }
    // Ballista 55's scheduler can wedge after losing an executor mid-stage: it rolls the
    // stage back ("Ignore TaskStatus update … in UnResolved status") and never reruns it,
    // and the abandoned job keeps later jobs from starting (CI runs 31 and 32 ended there
    // at jobs.engine_timeout, nothing committed). The rerun goes to a restarted cluster
    // with the one executor left, as an operator would do.
    drop(cluster);
    let mut cluster = self::cluster(1);
    let engine = cluster.url.clone();
    let (ok, text) = jobs(&ts, &data, &["rebuild", "--engine", &engine]);
    assert!(ok, "rerun: {text}");
    assert_eq!(derived(&ts, &data), want, "the rerun equals embedded");

    // Every executor killed mid-rebuild: the job fails (after the scheduler's grace) and
    // nothing is committed; with an executor back, the rerun completes.
    let node = ts.serve(&["--ack", "commit"], &[("TIDEMARK_JOBS__ENABLED", "false")]);
    ingest(&node, "default", &key, events("d", 5000, 6000)).await;
    node.terminate();
    let fourth = copy_of(&ts, &data, "fourth");
    let (ok, text) = jobs(&ts, &fourth, &["rebuild"]);
    assert!(ok, "{text}");
    let want = derived(&ts, &fourth);
    let old = derived(&ts, &data);
    assert_ne!(old, want);
    let started = Instant::now();
    let (ok, text) = rebuild_killing(&ts, &data, &mut cluster, 1, Duration::from_millis(700));
    eprintln!(
        "rebuild with every executor killed: ok={ok} after {:?}",
        started.elapsed()
    );
    assert!(!ok, "{text}");
    assert!(
        text.contains("ballista://"),
        "the error names the engine: {text}"
    );
    assert_eq!(derived(&ts, &data), old, "a failed rebuild changed nothing");
    cluster.add_executor();
    let (ok, text) = jobs(&ts, &data, &["rebuild", "--engine", &engine]);
    assert!(ok, "rerun: {text}");
    assert_eq!(derived(&ts, &data), want, "the rerun equals embedded");

    // A cluster without executors keeps the job queued: jobs.engine_timeout fails the
    // run, naming the setting, and nothing is committed.
    let empty = self::cluster(0);
    let started = Instant::now();
    let out = ts
        .command()
        .args(["jobs", "rebuild", "--engine", &empty.url, "--data", &data])
        .env("TIDEMARK_JOBS__ENGINE_TIMEOUT", "3s")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    eprintln!(
        "rebuild on a cluster without executors: {:?}",
        started.elapsed()
    );
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains(&empty.url) && text.contains("jobs.engine_timeout (3s)"),
        "{text}"
    );
    assert_eq!(
        derived(&ts, &data),
        want,
        "a timed-out rebuild changed nothing"
    );

    // Bad engine URLs are refused before anything runs.
    let (ok, text) = jobs(&ts, &data, &["rebuild", "--engine", "ballista://h:x"]);
    assert!(!ok && text.contains("port 'x'"), "{text}");
}
