//! The CSV importer through the CLI and the API: RFC 4180 quoting, CRLF, tags, --map,
//! typed cells, and every way a file or a row is refused.

use serde_json::{Value, json};

use crate::harness::{Backend, TestStore, call, client};

fn declare(ts: &TestStore) {
    for (name, ty) in [
        ("plan", "text"),
        ("score", "number"),
        ("vip", "boolean"),
        ("signup", "datetime"),
        ("langs", "list"),
    ] {
        ts.cli_ok(&["fields", "add", name, "--type", ty, "--env", "default"]);
    }
}

fn import(ts: &TestStore, csv: &str, extra: &[&str]) -> (i32, String, String) {
    let path = ts
        .tmp
        .path()
        .join(format!("in-{}.csv", uuid::Uuid::new_v4()));
    std::fs::write(&path, csv).unwrap();
    let mut args = vec!["import", path.to_str().unwrap(), "--env", "default"];
    args.extend_from_slice(extra);
    let out = ts.cli(&args);
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

fn changes(ts: &TestStore) -> i64 {
    let rows = ts.sql("SELECT count(*) AS n FROM profile_changes");
    rows[0]["n"].as_i64().unwrap()
}

#[test]
fn csv_import_from_the_cli() {
    let ts = TestStore::new(Backend::Local);
    declare(&ts);
    // CRLF, a quoted field with a comma, a quote and a line break, tags, a mapped column
    let good = "id,plan,Score,vip,signup,langs,tags\r\n\
                ann,\"gold, \"\"annual\"\"\nplan\",4.5,yes,2026-01-02T03:04:05Z,en;fr,beta;early\r\n\
                bob,free,,false,,,\r\n";
    let (code, out, err) = import(&ts, good, &["--map", "Score=score"]);
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("2 row(s): 2 applied, 0 failed"), "{out}");
    ts.cli_ok(&["jobs", "run", "--once"]);
    let rows = ts.sql("SELECT user_id, tags, fields FROM profiles ORDER BY user_id");
    assert_eq!(rows.len(), 2, "{rows:?}");
    let ann: Value = serde_json::from_str(rows[0]["fields"].as_str().unwrap()).unwrap();
    assert_eq!(
        ann,
        json!({"plan": "gold, \"annual\"\nplan", "score": 4.5, "vip": true,
               "signup": "2026-01-02T03:04:05.000000Z", "langs": ["en", "fr"]})
    );
    assert_eq!(rows[0]["tags"], json!(["beta", "early"]));
    let bob: Value = serde_json::from_str(rows[1]["fields"].as_str().unwrap()).unwrap();
    assert_eq!(bob, json!({"plan": "free", "vip": false}));

    // bad rows are reported with line, column and reason; the good ones are applied
    let before = changes(&ts);
    let bad = "id,plan,score,vip,signup\n\
               cy,silver,1,true,2026-01-01T00:00:00Z\n\
               dee,gold,many,maybe,yesterday\n\
               ,gold,1,true,\n\
               \"eve,gold,1\n\
               fay,bronze,2,false,\n";
    let (code, out, _) = import(&ts, bad, &[]);
    assert_eq!(code, 2, "{out}");
    assert!(out.contains("row(s): 1 applied"), "{out}");
    for line in [
        "line 3, column score: 'many' is not a number",
        "line 3, column vip: 'maybe' is not a boolean",
        "line 3, column signup: 'yesterday' is not an RFC 3339 datetime",
        "line 4, column id: user id must not be empty",
        "line 5: the row has 1 fields but the header has 5 (check the quoting)",
    ] {
        assert!(out.contains(line), "missing '{line}' in:\n{out}");
    }
    // cy's row: 4 changes
    assert_eq!(changes(&ts), before + 4);

    // --dry-run validates and changes nothing
    let before = changes(&ts);
    let (code, out, _) = import(&ts, "id,plan\nzed,x\nyan,y\n", &["--dry-run"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.starts_with("dry run: 2 row(s): 2 valid"), "{out}");
    let (code, out, _) = import(&ts, "id,score\nzed,x\n", &["--dry-run"]);
    assert_eq!(code, 2, "{out}");
    assert_eq!(changes(&ts), before);

    // files refused as a whole, exit 1
    let wide = {
        let header: Vec<String> = std::iter::once("id".to_string())
            .chain((1..=100).map(|i| format!("c{i}")))
            .collect();
        format!("{}\nann{}\n", header.join(","), ",x".repeat(100))
    };
    for (csv, args, msg) in [
        ("plan\ngold\n", vec![], "column 'id' is required"),
        (
            "id,nope\nann,1\n",
            vec![],
            "column 'nope': unknown field 'nope'",
        ),
        (
            "id,plan,plan\nann,a,b\n",
            vec![],
            "column 'plan' appears twice",
        ),
        (
            wide.as_str(),
            vec![],
            "the file has 101 columns, more than 100",
        ),
        (
            "id,plan\nann,a\n",
            vec!["--map", "other=plan"],
            "the file has no column 'other'",
        ),
        (
            "id,plan\nann,a\n",
            vec!["--map", "nonsense"],
            "is not COLUMN=FIELD",
        ),
    ] {
        let (code, out, err) = import(&ts, csv, &args);
        assert_ne!(code, 0, "{csv}: {out}");
        assert!(err.contains(msg), "{csv}: expected '{msg}' in: {err}");
    }
    assert_eq!(changes(&ts), before);
    let out = ts.cli(&["import", "/nonexistent.csv", "--env", "default"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent.csv"));
}

#[tokio::test(flavor = "multi_thread")]
async fn csv_import_over_http() {
    let ts = TestStore::new(Backend::Local);
    declare(&ts);
    let node = ts.serve(&["--ack", "commit"], &[("TIDEMARK_JOBS__DEBOUNCE", "50ms")]);
    let ingest = node.ingest_key().to_string();
    let read = ts.create_key("default", "read");
    let post = |query: &str, body: &'static str, key: &str| {
        let req = client()
            .post(node.url(&format!("/v1/default/imports{query}")))
            .bearer_auth(key)
            .header("content-type", "text/csv")
            .body(body);
        async move {
            let r = req.send().await.unwrap();
            let status = r.status().as_u16();
            (status, r.json::<Value>().await.unwrap())
        }
    };
    let (s, b) = post("?dry_run=true", "id,plan\nann,gold\n", &ingest).await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(b["dry_run"], true);
    assert_eq!(b["applied"], 1);
    assert_eq!(b["changes"], 0);
    let (s, b) = post(
        "?map=tier=plan",
        "id,tier,score\nann,gold,1\nbob,free,x\n",
        &ingest,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    assert_eq!(
        (b["applied"].as_u64(), b["failed"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(
        b["errors"],
        json!([{"line": 3, "column": "score", "reason": "'x' is not a number"}])
    );
    let (s, b) = post("", "plan\ngold\n", &ingest).await;
    assert_eq!(s, 400, "{b}");
    assert_eq!(b["message"], "column 'id' is required");
    let (s, b) = post("?dryrun=1", "id\nann\n", &ingest).await;
    assert_eq!(s, 400, "{b}");
    assert!(
        b["message"]
            .as_str()
            .unwrap()
            .contains("unknown query parameter 'dryrun'")
    );
    let (s, _) = post("", "id\nann\n", &read).await;
    assert_eq!(s, 403);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (s, p) = call("GET", &node.url("/v1/default/users/ann"), &read, None).await;
        if s == 200 && p["fields"]["plan"]["value"] == "gold" {
            assert_eq!(p["fields"]["score"]["value"], 1);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "{s} {p}");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}
