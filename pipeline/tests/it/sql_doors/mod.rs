//! The four SQL doors with real clients: `POST /v1/{env}/query` (reqwest), `tidemark sql`
//! on the store and with `--server`, the Postgres protocol (`psql`, psycopg) and Flight
//! SQL (the ADBC driver, with pyarrow). Each door sees only its key's environment, refuses
//! every non-read statement class with its message, and is bounded.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::harness::{Backend, Node, TestStore, client, ingest};

/// Where a node's Postgres and Flight SQL doors listen (from what it printed).
struct Doors {
    pg_port: u16,
    flight: String,
}

fn doors(node: &Node) -> Doors {
    let line = |prefix: &str| {
        node.lines
            .iter()
            .find_map(|l| l.strip_prefix(prefix).map(str::to_string))
            .unwrap_or_else(|| panic!("no '{prefix}' line in {:#?}", node.lines))
    };
    let pg = line("tidemark: postgres protocol on ");
    let pg_port = pg
        .split_whitespace()
        .next()
        .and_then(|a| a.rsplit(':').next())
        .and_then(|p| p.parse().ok())
        .expect("pg port");
    let flight = line("tidemark: flight sql on ");
    let flight = flight
        .split_whitespace()
        .next()
        .expect("flight url")
        .to_string();
    Doors { pg_port, flight }
}

/// Both doors on ephemeral ports.
const DOOR_ENV: [(&str, &str); 2] = [
    ("TIDEMARK_QUERY__PG_LISTEN", "127.0.0.1:0"),
    ("TIDEMARK_QUERY__FLIGHT_LISTEN", "127.0.0.1:0"),
];

/// `POST /v1/{env}/query`: the status and the body (JSON, or text for other formats).
async fn http_query(node: &Node, env: &str, key: &str, sql: &str, accept: &str) -> (u16, String) {
    let resp = client()
        .post(node.url(&format!("/v1/{env}/query")))
        .bearer_auth(key)
        .header("accept", accept)
        .json(&json!({ "sql": sql }))
        .send()
        .await
        .expect("query");
    (resp.status().as_u16(), resp.text().await.expect("body"))
}

/// Runs each query through psycopg and ADBC Flight SQL; per query and door, the first
/// row's first value as text, or `ERR: <message>`.
const PY_CLIENTS: &str = r#"
import json, os, sys
import psycopg
import adbc_driver_flightsql.dbapi as flight
from adbc_driver_flightsql import DatabaseOptions
args = json.loads(sys.argv[1])
out = {"psycopg": [], "adbc": []}
def first(rows):
    return None if not rows else (None if rows[0][0] is None else str(rows[0][0]))
pg = psycopg.connect(host="127.0.0.1", port=args["pg_port"], dbname=args["env"], user="u",
                     password=args["key"], sslmode="disable", autocommit=True)
for q in args["queries"]:
    try:
        out["psycopg"].append(first(pg.execute(q).fetchall()))
    except Exception as e:
        out["psycopg"].append("ERR: " + str(e))
fl = flight.connect(args["flight"], db_kwargs={
    DatabaseOptions.AUTHORIZATION_HEADER.value: "Bearer " + args["key"]}, autocommit=True)
for q in args["queries"]:
    cur = fl.cursor()
    try:
        cur.execute(q)
        out["adbc"].append(first(cur.fetchall()))
    except Exception as e:
        out["adbc"].append("ERR: " + str(e))
    cur.close()
if args.get("objects"):
    objs = fl.adbc_get_objects(depth="all").read_all().to_pylist()
    out["objects"] = sorted(t["table_name"] for c in objs for s in c["catalog_db_schemas"]
                            for t in s["db_schema_tables"])
    cur = fl.cursor()
    cur.execute("SELECT count(*) AS n FROM events WHERE user_id = $1 AND event_name = $2",
                parameters=("u1", args["event"]))
    out["prepared"] = str(cur.fetchall()[0][0])
    cur.close()
fl.close()
print(json.dumps(out))
sys.stdout.flush()
os._exit(0)
"#;

fn py_clients(doors: &Doors, env: &str, key: &str, queries: &[&str], objects: bool) -> Value {
    let args = json!({
        "pg_port": doors.pg_port, "flight": doors.flight, "env": env, "key": key,
        "queries": queries, "objects": objects, "event": "buy",
    });
    let out = Command::new("python3")
        .arg("-c")
        .arg(PY_CLIENTS)
        .arg(args.to_string())
        .output()
        .expect("python3");
    assert!(
        out.status.success(),
        "psycopg/ADBC clients failed (pip install 'psycopg[binary]' adbc-driver-flightsql): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("clients json")
}

/// `psql -At -c` (password from PGPASSWORD): the output or `ERR: <stderr>`.
fn psql(doors: &Doors, env: &str, key: &str, sql: &str) -> String {
    let out = Command::new("psql")
        .arg(format!(
            "host=127.0.0.1 port={} dbname={env} user=u sslmode=disable",
            doors.pg_port
        ))
        .args(["-At", "-c", sql])
        .env("PGPASSWORD", key)
        .output()
        .expect("psql (apt install postgresql-client)");
    if out.status.success() {
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    } else {
        format!("ERR: {}", String::from_utf8_lossy(&out.stderr).trim())
    }
}

/// The first value of a JSON answer's first row, as text.
fn first_value(answer: &Value) -> Option<String> {
    let row = answer["rows"].as_array()?.first()?.as_object()?;
    let v = row.values().next()?;
    Some(match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// What every door answers for `sql` with `key` of `env`: one text per door.
async fn every_door(
    store: &TestStore,
    node: &Node,
    doors: &Doors,
    env: &str,
    key: &str,
    sqls: &[&str],
) -> Vec<Vec<(String, String)>> {
    let py = py_clients(doors, env, key, sqls, false);
    let mut out = Vec::new();
    for (i, sql) in sqls.iter().enumerate() {
        let mut answers = Vec::new();
        let (status, body) = http_query(node, env, key, sql, "application/json").await;
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        answers.push((
            "http".to_string(),
            if status == 200 {
                first_value(&v).unwrap_or_default()
            } else {
                format!("ERR: {status} {}", v["message"].as_str().unwrap_or(&body))
            },
        ));
        let cli = |args: &[&str]| {
            let out = store.cli(args);
            if out.status.success() {
                let v: Value = serde_json::from_slice(&out.stdout).expect("cli json");
                first_value(&v).unwrap_or_default()
            } else {
                format!("ERR: {}", String::from_utf8_lossy(&out.stderr))
            }
        };
        answers.push((
            "cli".into(),
            cli(&["sql", "--env", env, "--format", "json", sql]),
        ));
        let server = node.url("");
        let mut cmd = store.command();
        let remote = cmd
            .args([
                "sql", "--server", &server, "--key", key, "--env", env, "--format", "json", sql,
            ])
            .output()
            .expect("tidemark sql --server");
        answers.push((
            "cli --server".into(),
            if remote.status.success() {
                first_value(&serde_json::from_slice(&remote.stdout).expect("json"))
                    .unwrap_or_default()
            } else {
                format!("ERR: {}", String::from_utf8_lossy(&remote.stderr))
            },
        ));
        answers.push(("psql".into(), psql(doors, env, key, sql)));
        for door in ["psycopg", "adbc"] {
            let v = &py[door][i];
            answers.push((
                door.into(),
                v.as_str().map(str::to_string).unwrap_or_default(),
            ));
        }
        out.push(answers);
    }
    out
}

#[tokio::test(flavor = "multi_thread")]
async fn every_door_sees_only_its_environment_and_refuses_writes() {
    let store = TestStore::new(Backend::Local);
    let node = store.serve(&["--ack", "commit"], &DOOR_ENV);
    let doors = doors(&node);
    let default_read = store.create_key("default", "read");
    let staging_ingest = store.create_key("staging", "ingest");
    let staging_read = store.create_key("staging", "read");
    // Overlapping user ids: u1 and u2 exist in both environments.
    ingest(
        &node,
        "default",
        node.ingest_key(),
        json!([
            {"event_id": "d1", "event_name": "buy", "user_id": "u1"},
            {"event_id": "d2", "event_name": "buy", "user_id": "u1"},
            {"event_id": "d3", "event_name": "view", "user_id": "u2"},
        ]),
    )
    .await;
    ingest(
        &node,
        "staging",
        &staging_ingest,
        json!([
            {"event_id": "s1", "event_name": "buy", "user_id": "u1"},
            {"event_id": "s2", "event_name": "secret", "user_id": "u2"},
            {"event_id": "s3", "event_name": "secret", "user_id": "u3"},
            {"event_id": "s4", "event_name": "secret", "user_id": "u3"},
        ]),
    )
    .await;
    store.sql_until("SELECT count(*) AS n FROM profiles", |r| r[0]["n"] == 5);
    // The newest events version holds both environments' events.
    let events_version =
        std::fs::read_dir(std::path::Path::new(&store.data).join("events/_delta_log"))
            .unwrap()
            .filter_map(|e| {
                e.ok()?
                    .file_name()
                    .to_str()?
                    .strip_suffix(".json")?
                    .parse::<u64>()
                    .ok()
            })
            .max()
            .unwrap();
    let tt = format!(
        "SELECT count(*) AS n FROM events VERSION AS OF {events_version} WHERE event_name = 'secret' OR user_id = 'u3'"
    );
    let tt_env = format!(
        "SELECT count(DISTINCT environment) AS n FROM events VERSION AS OF {events_version}"
    );
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let tt_time = format!(
        "SELECT count(*) AS n FROM events TIMESTAMP AS OF '{now}' e \
         JOIN events VERSION AS OF {events_version} f ON e.event_id = f.event_id"
    );
    let probes: Vec<(&str, &str)> = vec![
        ("SELECT count(*) AS n FROM events", "3"),
        (
            "SELECT count(*) AS n FROM events WHERE environment = 'staging'",
            "0",
        ),
        ("SELECT max(environment) AS n FROM profiles", "default"),
        ("SELECT count(*) AS n FROM profiles", "2"),
        (
            "SELECT count(*) AS n FROM events e JOIN event_stats s ON e.user_id = s.user_id AND e.event_name = s.event_name",
            "3",
        ),
        (
            "SELECT count(*) AS n FROM (SELECT * FROM event_stats WHERE event_name = 'secret') q",
            "0",
        ),
        (
            "WITH a AS (SELECT environment FROM events UNION SELECT environment FROM profiles \
             UNION SELECT environment FROM event_stats) SELECT count(*) AS n FROM a",
            "1",
        ),
        (
            "SELECT count(*) AS n FROM events WHERE user_id IN (SELECT user_id FROM profiles WHERE user_id = 'u3')",
            "0",
        ),
        (
            "SELECT count(*) AS n FROM information_schema.columns WHERE table_schema = 'public' AND table_name = 'events'",
            "10",
        ),
        (&tt, "0"),
        (&tt_env, "1"),
        (&tt_time, "3"),
    ];
    let sqls: Vec<&str> = probes.iter().map(|(s, _)| *s).collect();
    let got = every_door(&store, &node, &doors, "default", &default_read, &sqls).await;
    for ((sql, want), answers) in probes.iter().zip(&got) {
        for (door, answer) in answers {
            assert_eq!(answer, want, "{door}: {sql}");
        }
    }
    // The other environment sees its own rows through the same doors.
    let got = every_door(
        &store,
        &node,
        &doors,
        "staging",
        &staging_read,
        &["SELECT count(*) AS n FROM events WHERE event_name = 'secret'"],
    )
    .await;
    for (door, answer) in &got[0] {
        assert_eq!(answer, "3", "{door}");
    }

    // Every refused statement class, through every door, with its message.
    let refused: Vec<(&str, &str)> = vec![
        (
            "INSERT INTO events SELECT * FROM events",
            "INSERT is not allowed",
        ),
        ("UPDATE events SET user_id = 'x'", "UPDATE is not allowed"),
        ("DELETE FROM events", "DELETE is not allowed"),
        (
            "CREATE TABLE t AS SELECT 1 AS a",
            "CREATE TABLE is not allowed",
        ),
        (
            "CREATE VIEW v AS SELECT 1 AS a",
            "CREATE VIEW is not allowed",
        ),
        ("DROP TABLE events", "DROP TABLE is not allowed"),
        (
            "CREATE EXTERNAL TABLE x STORED AS PARQUET LOCATION '/etc/'",
            "CREATE EXTERNAL TABLE is not allowed",
        ),
        ("COPY events TO '/tmp/leak.parquet'", "COPY is not allowed"),
        (
            "SELECT * FROM read_parquet('/etc/passwd')",
            "table function 'read_parquet' is not available",
        ),
        ("SELECT * FROM '/etc/passwd'", "is not a table"),
        ("SET datafusion.execution.batch_size = 1", "is not allowed"),
    ];
    let sqls: Vec<&str> = refused.iter().map(|(s, _)| *s).collect();
    let got = every_door(&store, &node, &doors, "default", &default_read, &sqls).await;
    for ((sql, want), answers) in refused.iter().zip(&got) {
        for (door, answer) in answers {
            assert!(
                answer.starts_with("ERR: ") && answer.contains(want),
                "{door}: {sql}: {answer}"
            );
        }
    }
    assert!(!std::path::Path::new("/tmp/leak.parquet").exists());

    // A key never reaches another environment: by path, by database, by basic-auth user.
    let (status, _) = http_query(
        &node,
        "staging",
        &default_read,
        "SELECT 1",
        "application/json",
    )
    .await;
    assert_eq!(status, 403);
    let answer = psql(&doors, "staging", &default_read, "SELECT 1");
    assert!(
        answer.contains("belongs to environment 'default'"),
        "{answer}"
    );
    let answer = psql(&doors, "default", "tm_nope_nope", "SELECT 1");
    assert!(
        answer.contains("password authentication failed"),
        "{answer}"
    );
    // An ingest key reads nothing.
    let (status, _) = http_query(
        &node,
        "default",
        node.ingest_key(),
        "SELECT 1",
        "application/json",
    )
    .await;
    assert_eq!(status, 403);

    // ADBC's catalog calls list the environment's views; prepared statements bind values.
    let py = py_clients(&doors, "default", &default_read, &[], true);
    let objects: Vec<&str> = py["objects"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for name in ["events", "profiles", "event_stats", "profile_attributes"] {
        assert!(objects.contains(&name), "{objects:?}");
    }
    assert_eq!(py["prepared"], "2");
    // psql's \d and \d NAME, answered from pg_catalog.
    let list = psql(&doors, "default", &default_read, "\\d");
    assert!(
        list.contains("public|events|view") && list.contains("public|profiles|view"),
        "{list}"
    );
    let columns = psql(&doors, "default", &default_read, "\\d events");
    assert!(
        columns.contains("event_id|text") && columns.contains("received_date|date"),
        "{columns}"
    );
    drop(node);
}

mod answers;
