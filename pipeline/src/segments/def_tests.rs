//! Unit tests of [`super`]: every condition kind, refusals by path, document limits.

use super::*;
use serde_json::json;

const H: i64 = 3_600_000_000;

fn fields() -> BTreeMap<String, FieldDef> {
    crate::users::fields::declared(&[("plan", FieldType::Text), ("score", FieldType::Number)])
}

fn one(condition: Value) -> Result<Condition, Vec<(String, String)>> {
    let doc = json!({"id": "s", "name": "S", "match": "all", "conditions": [condition]});
    match parse(&doc, &fields()) {
        Ok((_, mut seg)) => Ok(seg.conditions.remove(0)),
        Err(p) => Err(p
            .into_iter()
            .map(|p| (p.field.unwrap_or_default(), p.message))
            .collect()),
    }
}

#[test]
fn conditions_parse_into_their_model() {
    let cases: Vec<(Value, Condition)> = vec![
        (
            json!({"field": "plan", "op": "eq", "value": "gold"}),
            Condition::Field {
                field: FieldRef::Custom("plan".into()),
                field_type: FieldType::Text,
                op: FieldOp::Eq,
                value: Operand::Text("gold".into()),
            },
        ),
        (
            json!({"field": "last_seen_at", "op": "within", "value": "-7d"}),
            Condition::Field {
                field: FieldRef::Builtin("last_seen_at"),
                field_type: FieldType::Datetime,
                op: FieldOp::Within,
                value: Operand::Time(Time::Relative(-168 * H)),
            },
        ),
        (
            json!({"field": "score", "op": "in", "value": [1, 2.5]}),
            Condition::Field {
                field: FieldRef::Custom("score".into()),
                field_type: FieldType::Number,
                op: FieldOp::In,
                value: Operand::Many(vec![Operand::Number(1.0), Operand::Number(2.5)]),
            },
        ),
        (
            json!({"field": "plan", "op": "exists"}),
            Condition::Field {
                field: FieldRef::Custom("plan".into()),
                field_type: FieldType::Text,
                op: FieldOp::Exists,
                value: Operand::None,
            },
        ),
        (
            json!({"tag": "vip", "op": "has_not"}),
            Condition::Tag {
                tag: "vip".into(),
                has: false,
            },
        ),
        (
            json!({"event": "open", "op": "did", "count": {"op": "gte", "value": 3}}),
            Condition::Event {
                event: "open".into(),
                did: true,
                count: Some((Cmp::Gte, 3)),
                within: None,
                occurrence: None,
            },
        ),
        (
            json!({"event": "open", "op": "did_not", "within": "-1d"}),
            Condition::Event {
                event: "open".into(),
                did: false,
                count: None,
                within: Some(Time::Relative(-24 * H)),
                occurrence: None,
            },
        ),
        (
            json!({"event": "open", "op": "did", "first": {"op": "before", "value": "-2h"}}),
            Condition::Event {
                event: "open".into(),
                did: true,
                count: None,
                within: None,
                occurrence: Some((Which::First, TimeOp::Before, Time::Relative(-2 * H))),
            },
        ),
        (
            json!({"match": "any", "conditions": [{"tag": "a", "op": "has"}]}),
            Condition::Group {
                any: true,
                conditions: vec![Condition::Tag {
                    tag: "a".into(),
                    has: true,
                }],
            },
        ),
    ];
    for (doc, want) in cases {
        assert_eq!(one(doc.clone()), Ok(want), "{doc}");
    }
}

#[test]
fn every_problem_is_named_by_its_path() {
    let p = |path: &str, m: &str| (path.to_string(), m.to_string());
    let cases: Vec<(Value, Vec<(String, String)>)> = vec![
        (json!("x"), vec![p("conditions[0]", "must be an object")]),
        (
            json!({"tag": "a", "event": "b"}),
            vec![p(
                "conditions[0]",
                "must have exactly one of \"field\", \"tag\", \"event\" or \"conditions\" (a group)",
            )],
        ),
        (
            json!({"tag": "", "op": "is", "extra": 1}),
            vec![
                p(
                    "conditions[0].extra",
                    "unknown key; this condition takes tag, op",
                ),
                p("conditions[0].tag", "must be a non-empty string"),
                p("conditions[0].op", "'is' is not one of has, has_not"),
            ],
        ),
        (
            json!({"field": "nope", "op": "eq", "value": 1}),
            vec![p(
                "conditions[0].field",
                "unknown field 'nope'; a built-in profile field or a declared custom field",
            )],
        ),
        (
            json!({"field": "plan", "op": "before", "value": "-1d"}),
            vec![p(
                "conditions[0].op",
                "'before' does not apply to a text field",
            )],
        ),
        (
            json!({"field": "score", "op": "eq", "value": "high"}),
            vec![p(
                "conditions[0].value",
                "expected a number for a number field",
            )],
        ),
        (
            json!({"field": "score", "op": "exists", "value": 1}),
            vec![p(
                "conditions[0].value",
                "exists / not_exists take no value",
            )],
        ),
        (
            json!({"field": "last_seen_at", "op": "within", "value": "+1d"}),
            vec![p(
                "conditions[0].value",
                "within takes a time in the past relative to now, like -7d",
            )],
        ),
        (
            json!({"event": "open", "op": "did", "within": "-1d", "count": {"op": "eq", "value": 1}}),
            vec![p(
                "conditions[0].count",
                "a count cannot be combined with \"within\": event_stats keep one count per event, not per time window",
            )],
        ),
        (
            json!({"event": "open", "op": "did_not", "count": {"op": "eq", "value": 1}}),
            vec![p(
                "conditions[0].op",
                "did_not takes only \"within\"; use did with a count or an occurrence",
            )],
        ),
        (
            json!({"event": "open", "op": "did", "within": "soon"}),
            vec![p(
                "conditions[0].within",
                "\"soon\" is neither an RFC 3339 time nor a duration such as -7d, 24h or +1d",
            )],
        ),
        (
            json!({"event": "open", "op": "did", "first": {"op": "after", "value": "-1d"}, "last": {"op": "after", "value": "-1d"}}),
            vec![p(
                "conditions[0].last",
                "give \"first\" or \"last\", not both",
            )],
        ),
        (
            json!({"match": "some", "conditions": []}),
            vec![
                p("conditions[0].match", "'some' is not one of all, any"),
                p(
                    "conditions[0].conditions",
                    "must hold at least one condition",
                ),
            ],
        ),
    ];
    for (doc, want) in cases {
        assert_eq!(one(doc.clone()), Err(want), "{doc}");
    }
}

#[test]
fn refusals_name_the_value_given() {
    let op = |c: Value| one(c).expect_err("refused")[0].1.clone();
    let ops = FIELD_OPS.map(|(n, _)| n).join(", ");
    assert_eq!(
        op(json!({"field": "plan", "op": "frobnicate", "value": "x"})),
        format!("'frobnicate' is not one of {ops}")
    );
    assert_eq!(
        op(json!({"field": "plan", "value": "x"})),
        format!("is required: one of {ops}")
    );
    assert_eq!(
        op(json!({"event": "open", "op": 3})),
        "3 is not one of did, did_not"
    );
}

#[test]
fn the_document_itself_is_checked() {
    let doc = json!({"id": "Bad Id", "name": "", "match": "all", "conditions": [], "x": 1});
    let problems: Vec<_> = parse(&doc, &fields())
        .expect_err("invalid")
        .into_iter()
        .map(|p| p.line())
        .collect();
    assert_eq!(
        problems,
        vec![
            "x: unknown key; a segment has id, name, match, conditions",
            "id: must match [a-z0-9][a-z0-9_-]{0,63}",
            "name: must be 1 to 200 bytes of text without control characters",
            "conditions: must hold at least one condition",
        ]
    );
    let deep = (0..MAX_DEPTH).fold(
        json!({"tag": "a", "op": "has"}),
        |c, _| json!({"match": "all", "conditions": [c]}),
    );
    let doc = json!({"id": "d", "name": "D", "match": "all", "conditions": [deep]});
    let problems = parse(&doc, &fields()).expect_err("too deep");
    assert_eq!(problems.len(), 1);
    assert_eq!(
        problems[0].message,
        format!("groups nest deeper than {MAX_DEPTH}")
    );
    let many: Vec<Value> = (0..=MAX_CONDITIONS)
        .map(|_| json!({"tag": "a", "op": "has"}))
        .collect();
    let doc = json!({"id": "m", "name": "M", "match": "any", "conditions": many});
    let problems = parse(&doc, &fields()).expect_err("too many");
    assert_eq!(
        problems[0].line(),
        format!("conditions[200]: more than {MAX_CONDITIONS} conditions")
    );
}

#[test]
fn a_valid_document_keeps_its_json_and_reports_time_dependence() {
    let doc = json!({"id": "s", "name": "S", "match": "any", "conditions": [
        {"event": "open", "op": "did", "within": "-7d"}
    ]});
    let (def, seg) = parse(&doc, &fields()).expect("valid");
    assert_eq!((def.match_mode.as_str(), seg.any), ("any", true));
    assert_eq!(
        def.conditions,
        doc["conditions"].as_array().cloned().unwrap_or_default()
    );
    assert!(seg.is_time_relative());
    let (_, fixed) = parse(
        &json!({"id": "t", "name": "T", "match": "all", "conditions": [{"tag": "a", "op": "has"}]}),
        &fields(),
    )
    .expect("valid");
    assert!(!fixed.is_time_relative());
    assert!(valid_id("a-1_b") && !valid_id("-a") && !valid_id(&"a".repeat(65)));
}
