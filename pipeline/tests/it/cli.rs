//! The CLI: keys, sql, config layers.

use std::time::{Duration, Instant};

use serde_json::json;

use crate::harness::{Backend, TestStore, post_json};

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn keys_create_list_revoke(backend: Backend) {
    let store = TestStore::new(backend);
    let node = store.serve(&[], &[]);
    let key = store.create_key("default", "ingest");
    assert!(key.starts_with("tm_"), "{key}");
    let id = key[3..15].to_string();

    let (s, _) = post_json(
        &node.events_url("default"),
        Some(&key),
        r#"[{"event_name":"a","user_id":"u"}]"#,
    )
    .await;
    assert_eq!(s, 202);

    let list = store.cli(&["keys", "list", "--env", "default"]);
    assert!(list.status.success());
    let line = stdout(&list)
        .lines()
        .find(|l| l.starts_with(&id))
        .map(str::to_string);
    let line = line.expect("new key listed");
    assert!(
        line.contains("default") && line.contains("ingest") && line.ends_with('-'),
        "{line}"
    );
    assert!(!stdout(&list).contains(&key), "secrets are never listed");

    let out = store.cli(&["keys", "revoke", &id]);
    assert!(out.status.success(), "{}", stderr(&out));
    // The running server notices within a few seconds.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (s, v) = post_json(
            &node.events_url("default"),
            Some(&key),
            r#"[{"event_name":"a","user_id":"u"}]"#,
        )
        .await;
        if s == 401 {
            assert_eq!(v["message"], "unknown or revoked API key");
            break;
        }
        assert!(Instant::now() < deadline, "revoked key still accepted");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }

    let out = store.cli(&["keys", "revoke", "ffffffffffff"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no key with id 'ffffffffffff'"),
        "{}",
        stderr(&out)
    );
    let out = store.cli(&["keys", "create", "--env", "Bad Env", "--role", "read"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("environment: 'Bad Env' must match"),
        "{}",
        stderr(&out)
    );
    let out = store.cli(&["keys", "create", "--env", "x", "--role", "owner"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("owner"), "{}", stderr(&out));
    drop(node);
}

on_both_backends!(keys_create_list_revoke);

#[test]
fn sql_formats_and_errors() {
    let store = TestStore::new(Backend::Local);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let node = store.serve(&["--ack", "commit"], &[]);
    let key = store.create_key("staging", "ingest");
    rt.block_on(async {
        let body = json!([{"event_id": "a,1", "event_name": "x", "user_id": "u"}]).to_string();
        assert_eq!(
            post_json(&node.events_url("default"), Some(node.ingest_key()), &body)
                .await
                .0,
            202
        );
        let body = json!([{"event_id": "s1", "event_name": "y", "user_id": "u"}]).to_string();
        assert_eq!(
            post_json(&node.events_url("staging"), Some(&key), &body)
                .await
                .0,
            202
        );
    });
    let out = store.cli(&[
        "sql",
        "--format",
        "csv",
        "select event_id, event_name from events order by event_id",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "event_id,event_name\n\"a,1\",x\ns1,y\n");
    let out = store.cli(&[
        "sql",
        "--env",
        "staging",
        "--format",
        "json",
        "select event_id from events",
    ]);
    let answer = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap();
    assert_eq!(answer["rows"], json!([{"event_id": "s1"}]));
    assert_eq!(answer["row_count"], 1);
    assert_eq!(answer["columns"][0]["name"], "event_id");
    let out = store.cli(&["sql", "select count(*) as n from events"]);
    assert!(
        stdout(&out).contains("| n |") && stdout(&out).contains("| 2 |"),
        "{}",
        stdout(&out)
    );

    let out = store.cli(&["sql", "selec nothing"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).starts_with("error: SQL error:"),
        "{}",
        stderr(&out)
    );
    let out = store.cli(&["sql", "select * from nope"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("nope"), "{}", stderr(&out));
    let out = store.cli(&["sql", "drop table events"]);
    assert!(!out.status.success(), "DDL must be refused");
    assert!(
        stderr(&out).contains("DROP TABLE is not allowed: queries are read-only"),
        "{}",
        stderr(&out)
    );
    let out = store.cli(&["sql", "--format", "yaml", "select 1"]);
    assert_eq!(out.status.code(), Some(2));
    drop(node);
}

#[test]
fn config_layers_and_errors() {
    let store = TestStore::new(Backend::Local);
    // Example parses (through `config show` on a file holding it).
    let example = std::process::Command::new(crate::harness::BIN)
        .args(["config", "example"])
        .output()
        .unwrap();
    assert!(example.status.success());
    let path = store.tmp.path().join("tidemark.toml");
    std::fs::write(
        &path,
        stdout(&example).replace("flush_rows = 500000", "flush_rows = 7"),
    )
    .unwrap();
    // The file in the working directory is read; the environment beats it; flags beat both.
    let mut cmd = std::process::Command::new(crate::harness::BIN);
    cmd.current_dir(store.tmp.path())
        .env("TIDEMARK_DEDUP_WINDOW", "2h")
        .env("TIDEMARK_DATA", "/from/env")
        .args(["config", "show", "--data", "/from/flag"]);
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let shown = stdout(&out);
    assert!(shown.contains("flush_rows = 7"), "{shown}");
    assert!(shown.contains("dedup_window = \"2h\""), "{shown}");
    assert!(shown.contains("data = \"/from/flag\""), "{shown}");

    let out = std::process::Command::new(crate::harness::BIN)
        .current_dir(store.tmp.path())
        .env("TIDEMARK_FLUSH_INTERVALL", "2s")
        .args(["config", "show"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("flush_intervall"), "{}", stderr(&out));

    std::fs::write(&path, "[limits]\nmax_events_per_batch = 0\n").unwrap();
    let out = store.cli(&["serve"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("limits.max_events_per_batch: must be greater than 0"),
        "{}",
        stderr(&out)
    );
    let out = store.cli(&["sql", "--config", "/nonexistent.toml", "select 1"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("/nonexistent.toml does not exist"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn a_second_node_on_the_same_wal_is_refused() {
    let store = TestStore::new(Backend::Local);
    let node = store.serve(&[], &[]);
    let wal = store.wal_dir.to_string_lossy().into_owned();
    let out = store.cli(&["serve", "--listen", "127.0.0.1:0", "--wal-dir", &wal]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("another tidemark process is using this write-ahead log directory"),
        "{}",
        stderr(&out)
    );
    assert!(node.terminate().success());
}
