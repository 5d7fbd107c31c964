//! Tests of the Segment / RudderStack mapping.

use super::*;

const RECEIVED: i64 = 1_780_000_000_000_000;

/// name, user, id, category, platform, properties
type Row<'a> = (
    &'a str,
    &'a str,
    Option<&'a str>,
    Category,
    Option<&'a str>,
    Option<&'a str>,
);

fn run(body: &'static str, envelope: Envelope<'static>) -> Mapped<'static> {
    let raws: Vec<&RawValue> = serde_json::from_str(body).unwrap();
    let raws: &'static [&RawValue] = Box::leak(raws.into_boxed_slice());
    map(raws, &envelope, RECEIVED, &Limits::default())
}

fn problems<'m>(m: &'m Mapped) -> Vec<(usize, Option<&'m str>, &'m str)> {
    m.problems
        .iter()
        .map(|p| (p.index, p.field.as_deref(), p.message.as_str()))
        .collect()
}

#[test]
fn each_type_becomes_its_event() {
    let body = r#"[
      {"type":"track","event":"Order Completed","userId":"u1","anonymousId":"a1","messageId":"m1",
       "timestamp":"2026-01-02T03:04:05.678Z","properties":{"total":3.5},
       "context":{"library":{"name":"analytics-python","version":"2.4.0"}}},
      {"type":"page","name":"Home","anonymousId":"a1","messageId":"m2","properties":{"path":"/"},
       "context":{"library":{"name":"analytics.js"}}},
      {"type":"screen","userId":"u1","messageId":"m3","context":{"os":{"name":"iOS"}}},
      {"type":"identify","userId":"u1","messageId":"m4","traits":{"plan":"pro","email":"a@b.c"}},
      {"type":"group","userId":"u1","groupId":"g1","traits":{"name":"Acme"},"messageId":"m5"},
      {"type":"alias","previousId":"a1","userId":"u1","messageId":"m6"},
      {"type":"identify","userId":"u2","context":{"traits":{"plan":"free"},"library":{"name":"analytics-python"}}}
    ]"#;
    let m = run(body, Envelope::default());
    assert_eq!(problems(&m), vec![]);
    let got: Vec<Row> = m
        .events
        .iter()
        .map(|e| {
            (
                e.event_name.as_ref(),
                e.user_id.as_ref(),
                e.event_id.as_deref(),
                e.category,
                e.platform.as_deref(),
                e.properties.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        got,
        vec![
            (
                "Order Completed",
                "u1",
                Some("m1"),
                Category::Custom,
                Some("server"),
                Some(r#"{"total":3.5}"#)
            ),
            (
                "Home",
                "a1",
                Some("m2"),
                Category::Sdk,
                Some("web"),
                Some(r#"{"path":"/"}"#)
            ),
            ("screen", "u1", Some("m3"), Category::Sdk, Some("ios"), None),
            (
                "identify",
                "u1",
                Some("m4"),
                Category::Sdk,
                None,
                Some(r#"{"plan":"pro","email":"a@b.c"}"#)
            ),
            (
                "group",
                "u1",
                Some("m5"),
                Category::Sdk,
                None,
                Some(r#"{"group_id":"g1","traits":{"name":"Acme"}}"#)
            ),
            (
                "alias",
                "u1",
                Some("m6"),
                Category::Sdk,
                None,
                Some(r#"{"previous_id":"a1"}"#)
            ),
            (
                "identify",
                "u2",
                None,
                Category::Sdk,
                Some("server"),
                Some(r#"{"plan":"free"}"#)
            ),
        ]
    );
    assert_eq!(m.events[0].occurred_at, Some(1_767_323_045_678_000));
    assert_eq!(m.events[1].occurred_at, None, "no time: when received");
    assert_eq!(m.writes.len(), 2);
    assert_eq!((m.writes[0].index, m.writes[0].user_id.as_str()), (3, "u1"));
    assert_eq!(m.writes[0].set["plan"], "pro");
    assert_eq!(
        (m.writes[1].index, m.writes[1].set["plan"].as_str()),
        (6, Some("free"))
    );
    assert_eq!(
        m.aliases,
        vec![Alias {
            previous_id: "a1".into(),
            user_id: "u1".into()
        }]
    );
}

#[test]
fn original_timestamp_is_corrected_by_sent_at() {
    // The device clock is 10 minutes ahead: sent "at" received + 10 min.
    let body = r#"[
      {"type":"track","event":"e","userId":"u","originalTimestamp":"2026-05-28T20:16:40Z"},
      {"type":"track","event":"e","userId":"u","originalTimestamp":"2026-05-28T20:16:40Z","sentAt":"2026-05-28T20:26:41Z"}
    ]"#;
    let envelope_sent: &'static RawValue =
        serde_json::from_str::<&RawValue>(r#""2026-05-28T20:26:50Z""#).unwrap();
    let m = run(
        body,
        Envelope {
            sent_at: Some(envelope_sent),
            ..Default::default()
        },
    );
    assert_eq!(problems(&m), vec![]);
    // received - (sentAt - originalTimestamp): 10 min 10 s and 10 min 1 s before received.
    assert_eq!(m.events[0].occurred_at, Some(RECEIVED - 610_000_000));
    assert_eq!(m.events[1].occurred_at, Some(RECEIVED - 601_000_000));
    let m = run(body, Envelope::default());
    assert_eq!(
        m.events[0].occurred_at,
        Some(1_779_999_400_000_000),
        "no sentAt: as sent"
    );
}

#[test]
fn bad_messages_are_refused_alone_with_the_sdk_field_names() {
    let body = r#"[
      {"type":"track","userId":"u"},
      {"type":"track","event":"ok","userId":"u"},
      {"type":"track","event":"e"},
      {"type":"launch","userId":"u"},
      {"type":"alias","anonymousId":"a"},
      {"type":"track","event":"e","userId":"u","timestamp":"yesterday","properties":[1]},
      "text",
      {"type":"track","event":"e","userId":"u","event":"f"},
      {"type":"group","userId":"u"}
    ]"#;
    let m = run(body, Envelope::default());
    assert_eq!(m.events.len(), 1);
    assert_eq!(m.events[0].event_name, "ok");
    assert_eq!(m.refused, 8);
    let fields: Vec<(usize, Option<&str>)> = problems(&m).iter().map(|p| (p.0, p.1)).collect();
    assert_eq!(
        fields,
        vec![
            (0, Some("event")),
            (2, Some("userId")),
            (3, Some("type")),
            (4, Some("userId")),
            (4, Some("previousId")),
            (5, Some("timestamp")),
            (5, Some("properties")),
            (6, None),
            (7, None),
            (8, Some("groupId")),
        ]
    );
    let p = problems(&m);
    assert_eq!(p[0].2, "is required for a track");
    assert_eq!(p[1].2, "userId or anonymousId is required");
    assert_eq!(
        p[2].2,
        "'launch' is not one of track, identify, page, screen, group, alias"
    );
    assert!(p[5].2.contains("not an RFC 3339 timestamp"), "{}", p[5].2);
    assert_eq!(p[6].2, "must be a JSON object");
    assert_eq!(p[7].2, "message must be a JSON object");
    assert!(p[8].2.contains("duplicate field `event`"), "{}", p[8].2);
}

#[test]
fn single_message_endpoints_imply_the_type_and_limits_hold() {
    let body = r#"[{"event":"e","userId":"u"},{"type":"page","userId":"u"}]"#;
    let m = run(
        body,
        Envelope {
            implied: Some(Kind::Track),
            ..Default::default()
        },
    );
    assert_eq!(m.events.len(), 1);
    assert_eq!(
        problems(&m),
        vec![(
            1,
            Some("type"),
            "'page' does not match the endpoint, which takes 'track' messages"
        )]
    );
    let big = format!(
        r#"[{{"type":"track","event":"e","userId":"u","properties":{{"s":"{}"}}}}]"#,
        "x".repeat(40_000)
    );
    let m = run(Box::leak(big.into_boxed_str()), Envelope::default());
    assert_eq!(m.refused, 1);
    assert!(
        m.problems[0]
            .message
            .contains("limits.max_sdk_message_bytes"),
        "{}",
        m.problems[0].message
    );
}
