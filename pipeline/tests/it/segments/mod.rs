//! Segments: random definitions over random profiles and event stats, evaluated by the
//! compiled SQL (DataFusion) and by a direct evaluation written here in Rust; and hostile
//! values and names, which must be matched literally or rejected, never executed.

use std::collections::BTreeMap;
use std::sync::Arc;

use arrow::array::{
    ArrayRef, Int64Array, ListBuilder, RecordBatch, StringArray, StringBuilder,
    TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema};
use datafusion::prelude::SessionContext;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use tidemark::segments::{compile, def, preview};
use tidemark::users::fields::{FieldDef, FieldType};

const NOW: i64 = 1_800_000_000_000_000;
const DAY: i64 = 86_400_000_000;
const EVENTS: [&str; 3] = ["open", "buy", "card-opened"];
const WORDS: [&str; 5] = [
    "gold",
    "silver",
    "go",
    "o'brien; --",
    "\u{e9}t\u{e9} \"x\" \\",
];
const TAGS: [&str; 4] = ["vip", "beta", "a'b", "ü; DROP TABLE profiles; --"];

#[derive(Debug, Clone)]
struct Profile {
    user: String,
    last_seen: Option<i64>,
    event_count: i64,
    tags: Vec<String>,
    plan: Option<String>,
    score: Option<f64>,
    vip: Option<bool>,
    renew: Option<i64>,
    langs: Option<Vec<String>>,
}

#[derive(Debug, Clone)]
struct Stat {
    user: String,
    event: String,
    first: i64,
    last: i64,
    count: i64,
}

fn registry() -> BTreeMap<String, FieldDef> {
    tidemark::users::fields::declared(&[
        ("plan", FieldType::Text),
        ("score", FieldType::Number),
        ("vip", FieldType::Boolean),
        ("renew", FieldType::Datetime),
        ("langs", FieldType::List),
    ])
}

fn random_data(rng: &mut StdRng) -> (Vec<Profile>, Vec<Stat>) {
    let mut profiles = Vec::new();
    let mut stats = Vec::new();
    for i in 0..40 {
        let user = format!("u{i:02}");
        let maybe = |rng: &mut StdRng| rng.random_bool(0.7);
        let p = Profile {
            user: user.clone(),
            last_seen: maybe(rng).then(|| NOW - rng.random_range(0..20) * DAY / 2),
            event_count: rng.random_range(0..5),
            tags: TAGS
                .iter()
                .filter(|_| rng.random_bool(0.4))
                .map(|t| t.to_string())
                .collect(),
            plan: maybe(rng).then(|| WORDS[rng.random_range(0..WORDS.len())].to_string()),
            score: maybe(rng).then(|| rng.random_range(0..5) as f64 * 1.5),
            vip: maybe(rng).then(|| rng.random_bool(0.5)),
            renew: maybe(rng).then(|| NOW + rng.random_range(-10..10) * DAY),
            langs: maybe(rng).then(|| {
                ["en", "fr", "de"]
                    .iter()
                    .filter(|_| rng.random_bool(0.5))
                    .map(|s| s.to_string())
                    .collect()
            }),
        };
        for e in EVENTS {
            if rng.random_bool(0.5) {
                let first = NOW - rng.random_range(0..30) * DAY;
                stats.push(Stat {
                    user: user.clone(),
                    event: e.into(),
                    first,
                    last: first + rng.random_range(0..30) * DAY / 3,
                    count: rng.random_range(1..6),
                });
            }
        }
        profiles.push(p);
    }
    (profiles, stats)
}

fn fields_json(p: &Profile) -> String {
    let mut m = serde_json::Map::new();
    if let Some(v) = &p.plan {
        m.insert("plan".into(), json!(v));
    }
    if let Some(v) = p.score {
        m.insert("score".into(), json!(v));
    }
    if let Some(v) = p.vip {
        m.insert("vip".into(), json!(v));
    }
    if let Some(v) = p.renew {
        let t = chrono::DateTime::from_timestamp_micros(v).unwrap();
        m.insert(
            "renew".into(),
            json!(t.to_rfc3339_opts(chrono::SecondsFormat::Micros, true)),
        );
    }
    if let Some(v) = &p.langs {
        m.insert("langs".into(), json!(v));
    }
    Value::Object(m).to_string()
}

fn session(profiles: &[Profile], stats: &[Stat]) -> SessionContext {
    let mut ctx = SessionContext::new();
    tidemark_udfs::register_all(&mut ctx).unwrap();
    let ts = || DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into()));
    let tags_field = Field::new(
        "tags",
        DataType::List(Arc::new(Field::new("item", DataType::Utf8, true))),
        true,
    );
    let schema = Arc::new(Schema::new(vec![
        Field::new("environment", DataType::Utf8, false),
        Field::new("user_id", DataType::Utf8, false),
        Field::new("last_seen_at", ts(), true),
        Field::new("event_count", DataType::Int64, false),
        tags_field,
        Field::new("fields", DataType::Utf8, false),
    ]));
    let mut tags = ListBuilder::new(StringBuilder::new());
    for p in profiles {
        if p.tags.is_empty() {
            tags.append_null();
        } else {
            for t in &p.tags {
                tags.values().append_value(t);
            }
            tags.append(true);
        }
    }
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(
            profiles.iter().map(|_| "prod"),
        )),
        Arc::new(StringArray::from_iter_values(
            profiles.iter().map(|p| p.user.as_str()),
        )),
        Arc::new(
            TimestampMicrosecondArray::from(
                profiles.iter().map(|p| p.last_seen).collect::<Vec<_>>(),
            )
            .with_timezone("UTC"),
        ),
        Arc::new(Int64Array::from_iter_values(
            profiles.iter().map(|p| p.event_count),
        )),
        Arc::new(tags.finish()),
        Arc::new(StringArray::from_iter_values(
            profiles.iter().map(fields_json),
        )),
    ];
    ctx.register_batch("profiles", RecordBatch::try_new(schema, columns).unwrap())
        .unwrap();
    let schema = Arc::new(Schema::new(vec![
        Field::new("environment", DataType::Utf8, false),
        Field::new("user_id", DataType::Utf8, false),
        Field::new("event_name", DataType::Utf8, false),
        Field::new("first_at", ts(), true),
        Field::new("last_at", ts(), true),
        Field::new("count", DataType::Int64, false),
    ]));
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(stats.iter().map(|_| "prod"))),
        Arc::new(StringArray::from_iter_values(
            stats.iter().map(|s| s.user.as_str()),
        )),
        Arc::new(StringArray::from_iter_values(
            stats.iter().map(|s| s.event.as_str()),
        )),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(stats.iter().map(|s| s.first))
                .with_timezone("UTC"),
        ),
        Arc::new(
            TimestampMicrosecondArray::from_iter_values(stats.iter().map(|s| s.last))
                .with_timezone("UTC"),
        ),
        Arc::new(Int64Array::from_iter_values(stats.iter().map(|s| s.count))),
    ];
    ctx.register_batch(
        "event_stats",
        RecordBatch::try_new(schema, columns).unwrap(),
    )
    .unwrap();
    ctx
}

fn pick(rng: &mut StdRng, options: &[&'static str]) -> &'static str {
    options[rng.random_range(0..options.len())]
}

fn rel(rng: &mut StdRng) -> String {
    format!("-{}d", rng.random_range(1..15))
}

fn random_condition(rng: &mut StdRng, depth: usize) -> Value {
    match rng.random_range(0..if depth < 2 { 5 } else { 4 }) {
        0 => {
            json!({"tag": TAGS[rng.random_range(0..TAGS.len())], "op": if rng.random_bool(0.5) { "has" } else { "has_not" }})
        }
        1 => {
            let e = EVENTS[rng.random_range(0..EVENTS.len())];
            match rng.random_range(0..5) {
                0 => json!({"event": e, "op": "did"}),
                1 => json!({"event": e, "op": "did_not", "within": rel(rng)}),
                2 => json!({"event": e, "op": "did", "within": rel(rng)}),
                3 => {
                    json!({"event": e, "op": "did", "count": {"op": pick(rng, &["eq", "neq", "gt", "gte", "lt", "lte"]), "value": rng.random_range(0..6)}})
                }
                _ => {
                    json!({"event": e, "op": "did", (if rng.random_bool(0.5) { "first" } else { "last" }): {"op": pick(rng, &["before", "after", "within"]), "value": rel(rng)}})
                }
            }
        }
        2 => {
            let w = WORDS[rng.random_range(0..WORDS.len())];
            match rng.random_range(0..6) {
                0 => {
                    json!({"field": "plan", "op": pick(rng, &["eq", "neq", "gt", "lt", "contains", "starts_with"]), "value": w})
                }
                1 => json!({"field": "plan", "op": "in", "value": [w, WORDS[0]]}),
                2 => {
                    json!({"field": "score", "op": pick(rng, &["eq", "neq", "gt", "gte", "lt", "lte"]), "value": rng.random_range(0..5) as f64 * 1.5})
                }
                3 => {
                    json!({"field": "vip", "op": pick(rng, &["eq", "neq"]), "value": rng.random_bool(0.5)})
                }
                4 => {
                    json!({"field": pick(rng, &["plan", "score", "vip", "renew", "langs", "tags", "last_seen_at"]), "op": pick(rng, &["exists", "not_exists"])})
                }
                _ => {
                    json!({"field": "langs", "op": "contains", "value": pick(rng, &["en", "fr", "de"])})
                }
            }
        }
        3 => match rng.random_range(0..4) {
            0 => {
                json!({"field": "renew", "op": pick(rng, &["before", "after"]), "value": format!("{}{}d", if rng.random_bool(0.5) { "-" } else { "+" }, rng.random_range(0..10))})
            }
            1 => json!({"field": "last_seen_at", "op": "within", "value": rel(rng)}),
            2 => {
                json!({"field": "event_count", "op": pick(rng, &["gt", "lte", "eq"]), "value": rng.random_range(0..5)})
            }
            _ => {
                json!({"field": "tags", "op": "contains", "value": TAGS[rng.random_range(0..TAGS.len())]})
            }
        },
        _ => {
            let n = rng.random_range(1..4);
            json!({"match": if rng.random_bool(0.5) { "any" } else { "all" },
                   "conditions": (0..n).map(|_| random_condition(rng, depth + 1)).collect::<Vec<_>>()})
        }
    }
}

// --- the direct evaluation ---

fn time(s: &str) -> i64 {
    match def::parse_time(s).unwrap() {
        def::Time::Relative(d) => NOW + d,
        def::Time::Absolute(t) => t,
    }
}

fn cmp_f(op: &str, a: f64, b: f64) -> bool {
    match op {
        "eq" => a == b,
        "neq" => a != b,
        "gt" => a > b,
        "gte" => a >= b,
        "lt" => a < b,
        "lte" => a <= b,
        _ => unreachable!("{op}"),
    }
}

fn eval(c: &Value, p: &Profile, stats: &[Stat]) -> bool {
    let o = c.as_object().unwrap();
    if let Some(conds) = o.get("conditions") {
        let mut it = conds.as_array().unwrap().iter().map(|c| eval(c, p, stats));
        return if o["match"] == "any" {
            it.any(|b| b)
        } else {
            it.all(|b| b)
        };
    }
    let op = o["op"].as_str().unwrap();
    if let Some(tag) = o.get("tag") {
        let has = p.tags.iter().any(|t| t == tag.as_str().unwrap());
        return if op == "has" { has } else { !has };
    }
    if let Some(e) = o.get("event") {
        let matching = stats
            .iter()
            .filter(|s| s.user == p.user && s.event == e.as_str().unwrap());
        let ok = |s: &&Stat| {
            if let Some(c) = o.get("count")
                && !cmp_f(
                    c["op"].as_str().unwrap(),
                    s.count as f64,
                    c["value"].as_f64().unwrap(),
                )
            {
                return false;
            }
            if let Some(w) = o.get("within")
                && s.last < time(w.as_str().unwrap())
            {
                return false;
            }
            for (k, at) in [("first", s.first), ("last", s.last)] {
                if let Some(x) = o.get(k) {
                    let t = time(x["value"].as_str().unwrap());
                    let good = match x["op"].as_str().unwrap() {
                        "before" => at < t,
                        "after" => at > t,
                        _ => at >= t && at <= NOW,
                    };
                    if !good {
                        return false;
                    }
                }
            }
            true
        };
        let any = matching.clone().any(|s| ok(&s));
        return if op == "did" { any } else { !any };
    }
    let field = o["field"].as_str().unwrap();
    let v = o.get("value");
    match field {
        "plan" => {
            let x = p.plan.as_deref();
            let w = |v: &Value| v.as_str().unwrap().to_string();
            match (op, x) {
                ("exists", _) => x.is_some(),
                ("not_exists", _) => x.is_none(),
                ("neq", None) => true,
                (_, None) => false,
                ("eq", Some(x)) => x == w(v.unwrap()),
                ("neq", Some(x)) => x != w(v.unwrap()),
                ("gt", Some(x)) => x > w(v.unwrap()).as_str(),
                ("lt", Some(x)) => x < w(v.unwrap()).as_str(),
                ("contains", Some(x)) => x.contains(&w(v.unwrap())),
                ("starts_with", Some(x)) => x.starts_with(&w(v.unwrap())),
                ("in", Some(x)) => v.unwrap().as_array().unwrap().iter().any(|i| x == w(i)),
                _ => unreachable!("{op}"),
            }
        }
        "score" | "event_count" => {
            let x = if field == "score" {
                p.score
            } else {
                Some(p.event_count as f64)
            };
            match (op, x) {
                ("exists", _) => x.is_some(),
                ("not_exists", _) => x.is_none(),
                ("neq", None) => true,
                (_, None) => false,
                (op, Some(x)) => cmp_f(op, x, v.unwrap().as_f64().unwrap()),
            }
        }
        "vip" => match (op, p.vip) {
            ("exists", x) => x.is_some(),
            ("not_exists", x) => x.is_none(),
            ("neq", None) => true,
            (_, None) => false,
            ("eq", Some(x)) => x == v.unwrap().as_bool().unwrap(),
            (_, Some(x)) => x != v.unwrap().as_bool().unwrap(),
        },
        "renew" | "last_seen_at" => {
            let x = if field == "renew" {
                p.renew
            } else {
                p.last_seen
            };
            match (op, x) {
                ("exists", _) => x.is_some(),
                ("not_exists", _) => x.is_none(),
                (_, None) => false,
                ("before", Some(x)) => x < time(v.unwrap().as_str().unwrap()),
                ("after", Some(x)) => x > time(v.unwrap().as_str().unwrap()),
                ("within", Some(x)) => x >= time(v.unwrap().as_str().unwrap()) && x <= NOW,
                _ => unreachable!("{op}"),
            }
        }
        "langs" => match (op, &p.langs) {
            ("exists", x) => x.is_some(),
            ("not_exists", x) => x.is_none(),
            (_, None) => false,
            (_, Some(l)) => l.iter().any(|x| x == v.unwrap().as_str().unwrap()),
        },
        "tags" => match op {
            "exists" => !p.tags.is_empty(),
            "not_exists" => p.tags.is_empty(),
            _ => p.tags.iter().any(|t| t == v.unwrap().as_str().unwrap()),
        },
        other => unreachable!("{other}"),
    }
}

async fn members(ctx: &SessionContext, doc: &Value) -> Vec<String> {
    let (_, seg) = def::parse(doc, &registry()).unwrap_or_else(|p| panic!("{doc}: {p:?}"));
    let compiled = compile::compile(&seg, "prod", NOW);
    let (n, ids) = preview(ctx, &compiled, 1000)
        .await
        .unwrap_or_else(|e| panic!("{doc}\n{}\n{e}", compiled.sql));
    assert_eq!(n, ids.len());
    ids
}

#[tokio::test(flavor = "multi_thread")]
async fn compiled_sql_equals_a_direct_evaluation() {
    let mut checked = 0;
    for seed in 0..6u64 {
        let mut rng = StdRng::seed_from_u64(seed);
        let (profiles, stats) = random_data(&mut rng);
        let ctx = session(&profiles, &stats);
        for _ in 0..40 {
            let n = rng.random_range(1..4);
            let doc = json!({"id": "s", "name": "random", "match": if rng.random_bool(0.5) { "any" } else { "all" },
                             "conditions": (0..n).map(|_| random_condition(&mut rng, 0)).collect::<Vec<_>>()});
            let want: Vec<String> = profiles
                .iter()
                .filter(|p| {
                    let conds = doc["conditions"].as_array().unwrap();
                    if doc["match"] == "any" {
                        conds.iter().any(|c| eval(c, p, &stats))
                    } else {
                        conds.iter().all(|c| eval(c, p, &stats))
                    }
                })
                .map(|p| p.user.clone())
                .collect();
            let got = members(&ctx, &doc).await;
            assert_eq!(got, want, "seed {seed}: {doc}");
            checked += 1;
        }
    }
    assert_eq!(checked, 240);
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_values_match_literally_and_bad_names_are_refused() {
    let nasty = "x'); DROP TABLE profiles; -- \\ \" /* é */";
    let p = |user: &str, plan: &str, tags: Vec<&str>| Profile {
        user: user.into(),
        last_seen: None,
        event_count: 0,
        tags: tags.into_iter().map(String::from).collect(),
        plan: Some(plan.into()),
        score: None,
        vip: None,
        renew: None,
        langs: None,
    };
    let profiles = vec![p("a", nasty, vec![nasty]), p("b", "gold", vec!["vip"])];
    let stats = vec![Stat {
        user: "b".into(),
        event: nasty.into(),
        first: NOW,
        last: NOW,
        count: 1,
    }];
    let ctx = session(&profiles, &stats);
    for (cond, want) in [
        (
            json!({"field": "plan", "op": "eq", "value": nasty}),
            vec!["a"],
        ),
        (
            json!({"field": "plan", "op": "contains", "value": "'); DROP"}),
            vec!["a"],
        ),
        (
            json!({"field": "plan", "op": "neq", "value": nasty}),
            vec!["b"],
        ),
        (json!({"tag": nasty, "op": "has"}), vec!["a"]),
        (json!({"event": nasty, "op": "did"}), vec!["b"]),
        (
            json!({"field": "plan", "op": "in", "value": ["' OR 1=1 --", "gold"]}),
            vec!["b"],
        ),
    ] {
        let doc = json!({"id": "h", "name": "'; --", "match": "all", "conditions": [cond]});
        assert_eq!(members(&ctx, &doc).await, want, "{doc}");
        let (_, seg) = def::parse(&doc, &registry()).unwrap();
        let sql = compile::compile(&seg, "prod", NOW).sql;
        assert!(
            !sql.contains("DROP") && !sql.contains("1=1") && !sql.contains("--"),
            "{sql}"
        );
    }
    // the tables are still there
    assert_eq!(members(&ctx, &json!({"id": "all", "name": "all", "match": "all", "conditions": [{"field": "user_id", "op": "exists"}]})).await, ["a", "b"]);
    // names that are not fields, ids and keys that are not allowed: refused with their path
    for (doc, path) in [
        (
            json!({"id": "x", "name": "n", "match": "all", "conditions": [{"field": "plan\"; DROP", "op": "exists"}]}),
            "conditions[0].field",
        ),
        (
            json!({"id": "x'--", "name": "n", "match": "all", "conditions": [{"tag": "t", "op": "has"}]}),
            "id",
        ),
        (
            json!({"id": "x", "name": "n", "match": "all; --", "conditions": [{"tag": "t", "op": "has"}]}),
            "match",
        ),
        (
            json!({"id": "x", "name": "n", "match": "all", "conditions": [{"tag": "t", "op": "has", "sql": "1=1"}]}),
            "conditions[0].sql",
        ),
        (
            json!({"id": "x", "name": "n", "match": "all", "conditions": [{"field": "plan", "op": "eq; --", "value": "a"}]}),
            "conditions[0].op",
        ),
        (
            json!({"id": "x", "name": "n", "match": "all", "conditions": [{"field": "score", "op": "gt", "value": "1 OR 1=1"}]}),
            "conditions[0].value",
        ),
        (
            json!({"id": "x", "name": "n", "match": "all", "conditions": [{"event": "e", "op": "did", "within": "-7d; --"}]}),
            "conditions[0].within",
        ),
        (
            json!({"id": "x", "name": "n", "match": "all", "conditions": []}),
            "conditions",
        ),
        (
            json!({"id": "x", "name": "n", "match": "all", "conditions": [{"event": "a\nb", "op": "did"}]}),
            "conditions[0].event",
        ),
    ] {
        let problems = def::parse(&doc, &registry()).unwrap_err();
        assert!(
            problems.iter().any(|p| p.field.as_deref() == Some(path)),
            "{doc}: {problems:?}"
        );
    }
}

mod api;
