//! The retry schedule on a paused clock, and `tidemark sinks run` surviving SIGKILL while
//! the CLI manages subscriptions.

use super::*;

/// The retry schedule under a paused clock: the worker runs in this process with a
/// manual clock; an endpoint that always fails is tried at exactly 0 s, 5 s, 5 min,
/// 30 min, 2 h, 5 h, 10 h, 10 h (jitter off), its attempts are logged, and it is paused
/// once it has failed for longer than `pause_after`; a 429 waits its Retry-After.
#[tokio::test(flavor = "multi_thread")]
async fn retries_follow_the_schedule_on_a_paused_clock() {
    use tidemark::storage::Store;
    use tidemark::webhooks::subscription::Subscriptions;
    use tidemark::webhooks::{self, worker::Worker};
    use tidemark_sinks::clock::ManualClock;

    let rx = Receiver::start(120).await;
    let ts = TestStore::new(Backend::Local);
    let (node, mut config) = node_without_worker(&ts);
    config.webhooks.jitter = 0.0;
    config.webhooks.pause_after = Duration::from_secs(20 * 3600);
    let store = Store::open(&config.data, &config.storage.options).unwrap();
    let key = webhooks::master_key(&config, &store).unwrap();
    let subs = Subscriptions::new(store.clone());
    let mut secrets = HashMap::new();
    let mut ids = HashMap::new();
    for path in ["down", "busy"] {
        let (sub, secret) = subs
            .create("default", &json!({"url": rx.url(path)}), &key, -1, &|_| {
                Ok(())
            })
            .await
            .unwrap();
        secrets.insert(path, secret);
        ids.insert(path, sub.id);
    }
    let (s, _) = post_json(
        &node.events_url("default"),
        Some(node.ingest_key()),
        &events(1, "signup", "s").to_string(),
    )
    .await;
    assert_eq!(s, 202);

    let t0 = chrono::DateTime::from_timestamp(chrono::Utc::now().timestamp(), 0).unwrap();
    let clock = ManualClock::new(t0);
    let worker = Worker::new(
        store.clone(),
        config.webhooks.clone(),
        key,
        webhooks::client(&config.webhooks).unwrap(),
        clock.clone(),
    )
    .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let running = tokio::spawn(worker.run(stop_rx));

    let schedule: [i64; 8] = [0, 5, 300, 1800, 7200, 18000, 36000, 36000];
    let mut at = t0;
    for (n, delay) in schedule.iter().enumerate() {
        at += chrono::Duration::seconds(*delay);
        clock.set(at);
        assert!(
            rx.wait("down", 20, |r| r.len() > n).await,
            "attempt {} never came",
            n + 1
        );
        if n == 1 {
            // busy answered 429 + Retry-After: 120 at t0; nothing before t0 + 120 s.
            assert_eq!(rx.at("busy").len(), 1);
            clock.set(t0 + chrono::Duration::seconds(120));
            assert!(rx.wait("busy", 20, |r| r.len() == 2).await);
            let busy = rx.at("busy");
            assert_eq!(
                (busy[0].timestamp, busy[1].timestamp),
                (t0.timestamp(), t0.timestamp() + 120)
            );
            assert_eq!(busy[0].id, busy[1].id);
        }
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let down = rx.at("down");
    assert_eq!(down.len(), 8, "no attempt after the last of the schedule");
    let mut expected = t0.timestamp();
    for (r, delay) in down.iter().zip(schedule) {
        expected += delay;
        assert_eq!(r.timestamp, expected);
        assert_eq!(r.id, down[0].id, "one webhook-id on every attempt");
        // Signed afresh with the attempt's own timestamp.
        let want = standardwebhooks::Webhook::new(&secrets["down"].expose())
            .unwrap()
            .sign(&r.id, r.timestamp, &r.body)
            .unwrap();
        assert_eq!(r.headers["webhook-signature"].to_str().unwrap(), want);
    }

    // The log: 7 retrying rows with their next attempt, then failed.
    let deadline = Instant::now() + Duration::from_secs(10);
    let rows = loop {
        let rows = webhooks::log::recent(&store, "default", &ids["down"], None, 100)
            .await
            .unwrap();
        if rows.len() == 8 || Instant::now() > deadline {
            break rows;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut rows = rows;
    rows.reverse();
    let mut expected = t0;
    for (i, row) in rows.iter().enumerate() {
        expected += chrono::Duration::seconds(schedule[i]);
        assert_eq!(row["attempt"], i as i64 + 1);
        assert_eq!(row["http_status"], 500);
        assert_eq!(row["error"], "HTTP 500: down");
        let logged = chrono::DateTime::parse_from_rfc3339(row["at"].as_str().unwrap()).unwrap();
        assert_eq!(logged, expected, "{row}");
        if i < 7 {
            assert_eq!(row["status"], "retrying");
            let next =
                chrono::DateTime::parse_from_rfc3339(row["next_attempt_at"].as_str().unwrap())
                    .unwrap();
            assert_eq!(next, expected + chrono::Duration::seconds(schedule[i + 1]));
        } else {
            assert_eq!(row["status"], "failed");
            assert!(row["next_attempt_at"].is_null());
        }
    }
    // Failing since t0 for 27.6 h > pause_after (20 h): paused with the reason.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let sub = subs.get("default", &ids["down"]).await.unwrap();
        if sub.paused {
            assert!(
                sub.paused_reason
                    .unwrap()
                    .starts_with("failing continuously since")
            );
            break;
        }
        assert!(Instant::now() < deadline, "not paused");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!subs.get("default", &ids["busy"]).await.unwrap().paused);
    stop_tx.send(true).unwrap();
    running.await.unwrap().unwrap();
    drop(node);
}

pub fn stdout_line<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no line {prefix:?} in {out}"))
        .trim()
}

/// A `tidemark sinks run` process, killed when dropped (also when a test fails).
pub struct SinksRun(pub std::process::Child);

impl Drop for SinksRun {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn sinks_run(ts: &TestStore) -> SinksRun {
    SinksRun(
        ts.command()
            .args(["sinks", "run", "--data", &ts.data])
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    )
}

/// `tidemark sinks run` killed with SIGKILL mid-delivery: after a restart every event is
/// delivered, and every duplicate carries the webhook-id of its first delivery. Then the
/// CLI: rotate-secret (both secrets verify), pause (nothing sent, nothing dropped),
/// resume, deliveries, and its refusals.
#[tokio::test(flavor = "multi_thread")]
async fn sinks_run_survives_sigkill_and_the_cli_manages_subscriptions() {
    let rx = Receiver::start(1).await;
    let ts = TestStore::new(Backend::Local);
    write_config(
        &ts,
        "allow_networks = [\"127.0.0.0/8\"]\npoll_interval = \"100ms\"\nlog_interval = \"300ms\"",
    );
    let node = ts.serve(
        &["--ack", "commit"],
        &[("TIDEMARK_WEBHOOKS__ENABLED", "false")],
    );

    let out = ts.cli(&[
        "webhooks",
        "add",
        "--env",
        "default",
        "--url",
        &rx.url("slow"),
        "--max-events",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("max_events: must be an integer from 1 to 1000"),
        "{err}"
    );
    let out = ts.cli(&[
        "webhooks",
        "add",
        "--env",
        "default",
        "--url",
        "http://192.168.1.10/hook",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("url: destination refused: 192.168.1.10 is a private address")
    );
    let out = ts.cli_ok(&[
        "webhooks",
        "add",
        "--env",
        "default",
        "--url",
        &rx.url("slow"),
        "--max-in-flight",
        "2",
        "--event",
        "order-*",
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    let id = stdout_line(&text, "added webhook ").to_string();
    let secret = stdout_line(&text, "signing secret (shown only now): ").to_string();
    // The secret is stored encrypted: it appears nowhere under the data directory.
    let listed = ts.cli(&["webhooks", "list", "--env", "default", "--json"]);
    let listed: Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(listed[0]["id"], id.as_str());
    assert!(!listed.to_string().contains("whsec_"));

    let all: BTreeSet<String> = (0..200).map(|i| format!("o-{i}")).collect();
    let (s, _) = post_json(
        &node.events_url("default"),
        Some(node.ingest_key()),
        &events(200, "order-placed", "o").to_string(),
    )
    .await;
    assert_eq!(s, 202);

    let mut worker = sinks_run(&ts);
    assert!(
        rx.wait("slow", 60, |r| r.len() >= 40).await,
        "deliveries did not start"
    );
    worker.0.kill().unwrap(); // SIGKILL
    worker.0.wait().unwrap();
    let before_restart = rx.at("slow").len();
    assert!(
        before_restart < 200,
        "killed mid-delivery ({before_restart})"
    );
    let mut worker = sinks_run(&ts);
    assert!(
        rx.wait("slow", 120, |r| r
            .iter()
            .flat_map(Receipt::event_ids)
            .collect::<BTreeSet<_>>()
            == all)
            .await,
        "not every event arrived after the restart"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    let got = rx.at("slow");
    verify_all(&got, &secret);
    let mut ids_of: HashMap<String, BTreeSet<String>> = HashMap::new();
    for r in &got {
        for e in r.event_ids() {
            ids_of.entry(e).or_default().insert(r.id.clone());
        }
    }
    assert_eq!(ids_of.len(), 200);
    for (event, ids) in &ids_of {
        assert_eq!(
            ids.len(),
            1,
            "{event} arrived under several webhook-ids: {ids:?}"
        );
    }
    eprintln!(
        "crash test: {} receipts for 200 events ({} before the kill)",
        got.len(),
        before_restart
    );

    // rotate-secret: the next messages carry both signatures.
    let out = ts.cli_ok(&[
        "webhooks",
        "rotate-secret",
        &id,
        "--env",
        "default",
        "--grace",
        "1h",
    ]);
    let text = String::from_utf8(out.stdout).unwrap();
    let new_secret = stdout_line(&text, "new signing secret (shown only now): ").to_string();
    // The worker picks the change up on its next pass: probe until a message shows it.
    let mut probe = 0;
    let rotated = loop {
        let n = rx.at("slow").len();
        let (s, _) = post_json(
            &node.events_url("default"),
            Some(node.ingest_key()),
            &events(1, "order-paid", &format!("r{probe}")).to_string(),
        )
        .await;
        assert_eq!(s, 202);
        assert!(rx.wait("slow", 30, |r| r.len() > n).await);
        let got = rx.at("slow")[n].clone();
        let signatures = got.headers["webhook-signature"]
            .to_str()
            .unwrap()
            .split(' ')
            .count();
        if signatures == 2 {
            break got;
        }
        probe += 1;
        assert!(probe < 50, "the rotation never reached the worker");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    verify_all(std::slice::from_ref(&rotated), &secret);
    verify_all(std::slice::from_ref(&rotated), &new_secret);

    // pause: nothing is sent, nothing is dropped; resume delivers the backlog.
    let out = ts.cli(&["webhooks", "pause", &id, "--env", "default"]);
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains("paused (paused by a user)"));
    // The worker polls every 100 ms; give a loaded CI machine ample time to see the pause.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let n = rx.at("slow").len();
    let (s, _) = post_json(
        &node.events_url("default"),
        Some(node.ingest_key()),
        &events(4, "order-paid", "w").to_string(),
    )
    .await;
    assert_eq!(s, 202);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        rx.at("slow").len(),
        n,
        "a paused subscription sent something"
    );
    let out = ts.cli(&["webhooks", "resume", &id, "--env", "default"]);
    assert!(out.status.success());
    assert!(rx.wait("slow", 30, |r| r.len() >= n + 4).await);
    let resumed: BTreeSet<String> = rx.at("slow")[n..]
        .iter()
        .flat_map(Receipt::event_ids)
        .collect();
    assert_eq!(resumed, (0..4).map(|i| format!("w-{i}")).collect());

    // deliveries from the CLI; unknown ids and bad flags are named.
    tokio::time::sleep(Duration::from_millis(600)).await;
    let out = ts.cli_ok(&[
        "webhooks",
        "deliveries",
        &id,
        "--env",
        "default",
        "--json",
        "--limit",
        "1000",
    ]);
    let rows: Vec<Value> = serde_json::from_slice(&out.stdout).unwrap();
    let delivered: BTreeSet<String> = rows
        .iter()
        .filter(|r| r["status"] == "delivered")
        .flat_map(|r| {
            r["event_ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| e.as_str().unwrap().to_string())
        })
        .collect();
    assert!(
        delivered.is_superset(&all),
        "the log has every delivered event"
    );
    let out = ts.cli(&["webhooks", "deliveries", "wh_nope", "--env", "default"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("no webhook 'wh_nope' in environment 'default'")
    );
    let out = ts.cli(&[
        "webhooks",
        "recover",
        &id,
        "--env",
        "default",
        "--since",
        "yesterday-ish",
    ]);
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("--since: \"yesterday-ish\" is neither an RFC 3339 time nor a duration")
    );

    // SIGTERM stops the worker cleanly.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(worker.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(worker.0.wait().unwrap().success());
    let out = ts.cli(&["webhooks", "delete", &id, "--env", "default"]);
    assert!(out.status.success());
    drop(node);
}
