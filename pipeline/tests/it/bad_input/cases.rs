//! The bad bodies of the sweep: every JSON body each endpoint must refuse, and the events
//! bodies the ingest API must refuse, each with what the answer must name.

use super::*;

/// Bodies every endpoint that reads JSON must refuse.
pub(super) fn bad_json_bodies() -> Vec<BadBody> {
    let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
    let deep_obj = format!("{}1{}", "{\"a\":".repeat(200), "}".repeat(200));
    vec![
        ("invalid UTF-8", JSON, b"{\"a\":\"\xff\xfe\"}".to_vec(), &[]),
        ("lone UTF-8 continuation", JSON, b"\x80".to_vec(), &[]),
        ("truncated object", JSON, b"{\"a\":".to_vec(), &[]),
        (
            "BOM before JSON",
            JSON,
            b"\xef\xbb\xbf{}".to_vec(),
            &["byte order mark"],
        ),
        ("NaN", JSON, b"{\"a\":NaN}".to_vec(), &[]),
        ("Infinity", JSON, b"{\"a\":Infinity}".to_vec(), &[]),
        ("number out of range", JSON, b"{\"a\":1e400}".to_vec(), &[]),
        ("array nested 300 deep", JSON, deep.into_bytes(), &[]),
        ("object nested 200 deep", JSON, deep_obj.into_bytes(), &[]),
        ("trailing garbage", JSON, b"{} x".to_vec(), &[]),
        ("a bare string", JSON, b"\"hello\"".to_vec(), &[]),
        ("null", JSON, b"null".to_vec(), &[]),
        ("a number", JSON, b"42".to_vec(), &[]),
        (
            "form-encoded",
            Some("application/x-www-form-urlencoded"),
            b"a=1&b=2".to_vec(),
            &["Content-Type", "not supported"],
        ),
        (
            "text/plain",
            Some("text/plain"),
            b"{}".to_vec(),
            &["Content-Type", "not supported"],
        ),
        (
            "multipart",
            Some("multipart/form-data; boundary=x"),
            b"--x--".to_vec(),
            &["Content-Type", "not supported"],
        ),
        (
            "xml",
            Some("application/xml"),
            b"<a/>".to_vec(),
            &["Content-Type", "not supported"],
        ),
        (
            "control characters",
            JSON,
            b"{\"a\":\"\x01\"}".to_vec(),
            &[],
        ),
        ("unterminated string", JSON, b"{\"a\":\"abc}".to_vec(), &[]),
        ("single quotes", JSON, b"{'a':1}".to_vec(), &[]),
        ("comment", JSON, b"{/* c */}".to_vec(), &[]),
        ("trailing comma", JSON, b"{\"a\":1,}".to_vec(), &[]),
        (
            "lone surrogate escape",
            JSON,
            b"{\"a\":\"\\ud800\"}".to_vec(),
            &[],
        ),
        ("bad escape", JSON, b"{\"a\":\"\\q\"}".to_vec(), &[]),
    ]
}

/// Events bodies the ingest API must refuse, each naming a field or the problem.
pub(super) fn bad_events() -> Vec<(&'static str, String, &'static [&'static str])> {
    let long = "x".repeat(600);
    let mut out: Vec<(&'static str, String, &'static [&'static str])> = vec![
        (
            "empty array",
            "[]".into(),
            &["empty", "no events", "at least"],
        ),
        (
            "missing event_name",
            r#"[{"user_id":"u"}]"#.into(),
            &["event_name"],
        ),
        (
            "missing user_id",
            r#"[{"event_name":"a"}]"#.into(),
            &["user_id"],
        ),
        (
            "empty event_name",
            r#"[{"event_name":"","user_id":"u"}]"#.into(),
            &["event_name"],
        ),
        (
            "numeric event_name",
            r#"[{"event_name":5,"user_id":"u"}]"#.into(),
            &["event_name"],
        ),
        (
            "null user_id",
            r#"[{"event_name":"a","user_id":null}]"#.into(),
            &["user_id"],
        ),
        (
            "array user_id",
            r#"[{"event_name":"a","user_id":["u"]}]"#.into(),
            &["user_id"],
        ),
        (
            "long event_name",
            format!(r#"[{{"event_name":"{long}","user_id":"u"}}]"#),
            &["event_name"],
        ),
        (
            "long user_id",
            format!(r#"[{{"event_name":"a","user_id":"{long}"}}]"#),
            &["user_id"],
        ),
        (
            "long event_id",
            format!(r#"[{{"event_id":"{long}","event_name":"a","user_id":"u"}}]"#),
            &["event_id"],
        ),
        (
            "NUL in event_name",
            r#"[{"event_name":"a\u0000b","user_id":"u"}]"#.into(),
            &["event_name"],
        ),
        (
            "newline in user_id",
            r#"[{"event_name":"a","user_id":"u\nv"}]"#.into(),
            &["user_id"],
        ),
        (
            "bidi override in user_id",
            "[{\"event_name\":\"a\",\"user_id\":\"u\\u202ev\"}]".into(),
            &["user_id"],
        ),
        (
            "escape in platform",
            r#"[{"event_name":"a","user_id":"u","platform":"\u001b[31m"}]"#.into(),
            &["platform"],
        ),
        (
            "duplicate event_name",
            r#"[{"event_name":"a","event_name":"b","user_id":"u"}]"#.into(),
            &["more than once"],
        ),
        (
            "duplicate user_id",
            r#"[{"user_id":"a","event_name":"b","user_id":"u"}]"#.into(),
            &["more than once"],
        ),
        (
            "duplicate property",
            r#"[{"event_name":"a","user_id":"u","properties":{"x":1,"x":2}}]"#.into(),
            &["properties.x", "more than once"],
        ),
        (
            "nested duplicate property",
            r#"[{"event_name":"a","user_id":"u","properties":{"o":{"k":1,"k":2}}}]"#.into(),
            &["properties.o.k"],
        ),
        (
            "escaped duplicate property",
            r#"[{"event_name":"a","user_id":"u","properties":{"k":1,"\u006b":2}}]"#.into(),
            &["properties.k"],
        ),
        (
            "property 1e400",
            r#"[{"event_name":"a","user_id":"u","properties":{"x":1e400}}]"#.into(),
            &["properties.x", "range"],
        ),
        (
            "property -1e999 in array",
            r#"[{"event_name":"a","user_id":"u","properties":{"a":[1,-1e999]}}]"#.into(),
            &["properties.a[1]"],
        ),
        (
            "properties an array",
            r#"[{"event_name":"a","user_id":"u","properties":[1]}]"#.into(),
            &["properties"],
        ),
        (
            "properties a string",
            r#"[{"event_name":"a","user_id":"u","properties":"{}"}]"#.into(),
            &["properties"],
        ),
        (
            "properties nested deep",
            format!(
                r#"[{{"event_name":"a","user_id":"u","properties":{}1{}}}]"#,
                "{\"a\":".repeat(20),
                "}".repeat(20)
            ),
            &["properties", "nested"],
        ),
        (
            "occurred_at text",
            r#"[{"event_name":"a","user_id":"u","occurred_at":"yesterday"}]"#.into(),
            &["occurred_at"],
        ),
        (
            "occurred_at epoch seconds",
            r#"[{"event_name":"a","user_id":"u","occurred_at":1714564800}]"#.into(),
            &["occurred_at"],
        ),
        (
            "occurred_at year 1900",
            r#"[{"event_name":"a","user_id":"u","occurred_at":"1900-01-01T00:00:00Z"}]"#.into(),
            &["occurred_at"],
        ),
        (
            "occurred_at year 2200",
            r#"[{"event_name":"a","user_id":"u","occurred_at":"2200-01-01T00:00:00Z"}]"#.into(),
            &["occurred_at"],
        ),
        (
            "occurred_at float",
            r#"[{"event_name":"a","user_id":"u","occurred_at":1.5}]"#.into(),
            &["occurred_at"],
        ),
        (
            "occurred_at NaN text",
            r#"[{"event_name":"a","user_id":"u","occurred_at":"NaN"}]"#.into(),
            &["occurred_at"],
        ),
        (
            "category system",
            r#"[{"event_name":"a","user_id":"u","category":"system"}]"#.into(),
            &["category"],
        ),
        (
            "category unknown",
            r#"[{"event_name":"a","user_id":"u","category":"frobnicate"}]"#.into(),
            &["'frobnicate'"],
        ),
        (
            "unknown field",
            r#"[{"event_name":"a","user_id":"u","colour":"red"}]"#.into(),
            &["colour"],
        ),
        ("an event that is a string", r#"["a"]"#.into(), &["object"]),
        ("an event that is null", r#"[null]"#.into(), &["object"]),
        (
            "one bad among good",
            r#"[{"event_name":"a","user_id":"u"},{"event_name":"a"}]"#.into(),
            &["user_id"],
        ),
        (
            "too many events",
            format!(
                "[{}]",
                vec![r#"{"event_name":"a","user_id":"u"}"#; 20].join(",")
            ),
            &["limit", "events", "at most"],
        ),
    ];
    // Unicode edge cases in each string field (escapes as JSON text).
    for (name, user, extra) in [
        ("\\ud83d", "u", ""),
        ("a", "\\udc00", ""),
        ("a", "u", r#","event_id":"\ud800\u0041""#),
        ("a", "u", r#","platform":"\u0000""#),
        ("\\u0007", "u", ""),
        ("a", "\\u200b\\u0000", ""),
    ] {
        out.push((
            "unicode edge case",
            format!(r#"[{{"event_name":"{name}","user_id":"{user}"{extra}}}]"#),
            &[],
        ));
    }
    out
}
