//! The ingest body parser and validator (`ingest::event::parse_batch`) and the Arrow batch
//! built from what it accepts (`ingest::batch::build_batch`), on any bytes, as JSON array
//! and as NDJSON:
//! - an accepted batch was valid JSON of its format, with as many events as it holds;
//! - every accepted event keeps within the limits: string lengths, `occurred_at` range,
//!   `properties` an object of at most the size and depth allowed, with no duplicate key
//!   and every number inside f64 (serde_json reads it back as the same object);
//! - the Arrow batch has one row per event, with the event's own name and user id;
//! - a refusal says why: a message, each problem naming its event and field, the count
//!   of problems at least the number listed, never more than `MAX_PROBLEMS` listed.
#![no_main]

use libfuzzer_sys::fuzz_target;
use serde_json::Value;
use tidemark::config::Limits;
use tidemark::ingest::batch::build_batch;
use tidemark::ingest::event::{BatchError, BodyFormat, Event, parse_batch};
use tidemark::problem::MAX_PROBLEMS;

use arrow::array::{Array, AsArray};

/// 2000-01-01 and 2100-01-01 in microseconds (the documented `occurred_at` range).
const RANGE_US: std::ops::Range<i64> = 946_684_800_000_000..4_102_444_800_000_000;

fn limits() -> Limits {
    Limits {
        max_events_per_batch: 64,
        // Large enough that a deep `properties` (the seed `deep` nests 75,000 levels)
        // reaches the walk instead of the size check.
        max_properties_bytes: 1 << 20,
        max_properties_depth: 6,
        max_string_len: 64,
        ..Limits::default()
    }
}

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// Keys of every object in `v`, counted with repeats (a lost duplicate shows as fewer).
fn keys(v: &Value) -> usize {
    match v {
        Value::Array(a) => a.iter().map(keys).sum(),
        Value::Object(o) => o.len() + o.values().map(keys).sum::<usize>(),
        _ => 0,
    }
}

/// Object keys in a JSON text, counted by a scan of its strings: a string followed by `:`.
fn keys_in_text(text: &str) -> usize {
    let (mut n, mut in_str, mut esc, mut after_str) = (0, false, false, false);
    for c in text.chars() {
        if in_str {
            match (esc, c) {
                (true, _) => esc = false,
                (false, '\\') => esc = true,
                (false, '"') => {
                    in_str = false;
                    after_str = true;
                }
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_str = true,
            ':' if after_str => n += 1,
            c if c.is_whitespace() => continue,
            _ => {}
        }
        after_str = false;
    }
    n
}

fn check_event(e: &Event<'_>, l: &Limits) {
    for (name, s) in [
        ("event_name", Some(&e.event_name)),
        ("user_id", Some(&e.user_id)),
        ("event_id", e.event_id.as_ref()),
        ("platform", e.platform.as_ref()),
    ] {
        if let Some(s) = s {
            assert!(s.len() <= l.max_string_len, "{name} too long: {s:?}");
            assert!(
                !s.chars().any(char::is_control),
                "{name} with a control char: {s:?}"
            );
        }
    }
    assert!(!e.event_name.trim().is_empty(), "empty event_name");
    assert!(!e.user_id.trim().is_empty(), "empty user_id");
    if let Some(t) = e.occurred_at {
        assert!(RANGE_US.contains(&t), "occurred_at {t} out of range");
    }
    if let Some(p) = e.properties.as_deref() {
        assert!(p.len() <= l.max_properties_bytes, "properties too large");
        let v: Value = serde_json::from_str(p).expect("accepted properties must parse");
        assert!(v.is_object(), "properties not an object: {p}");
        assert!(
            depth(&v) <= l.max_properties_depth,
            "properties too deep: {p}"
        );
        assert_eq!(
            keys(&v),
            keys_in_text(p),
            "a duplicate key was accepted: {p}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let l = limits();
    for format in [BodyFormat::JsonArray, BodyFormat::Ndjson] {
        match parse_batch(data, format, &l) {
            Ok(events) => {
                let text = std::str::from_utf8(data).expect("accepted body is UTF-8");
                let count = match format {
                    BodyFormat::JsonArray => serde_json::from_str::<Vec<Value>>(text)
                        .expect("accepted array is JSON")
                        .len(),
                    BodyFormat::Ndjson => text
                        .lines()
                        .filter(|l| !l.trim().is_empty())
                        .inspect(|l| {
                            serde_json::from_str::<Value>(l.trim()).expect("accepted line is JSON");
                        })
                        .count(),
                };
                assert_eq!(events.len(), count, "events kept");
                assert!(!events.is_empty() && events.len() <= l.max_events_per_batch);
                for e in &events {
                    check_event(e, &l);
                }
                let keep = vec![true; events.len()];
                let now = 1_700_000_000_000_000;
                let batch = build_batch("default", now, &events, &keep).expect("batch builds");
                assert_eq!(batch.num_rows(), events.len());
                let names = batch
                    .column_by_name("event_name")
                    .expect("event_name column")
                    .as_string::<i32>();
                let users = batch
                    .column_by_name("user_id")
                    .expect("user_id column")
                    .as_string::<i32>();
                assert_eq!(names.null_count(), 0);
                for (i, e) in events.iter().enumerate() {
                    assert_eq!(names.value(i), e.event_name);
                    assert_eq!(users.value(i), e.user_id);
                }
            }
            Err(BatchError::Malformed(m)) => assert!(!m.is_empty()),
            Err(BatchError::TooManyEvents { count, max }) => assert!(count > max),
            Err(BatchError::Invalid {
                problems,
                total,
                events,
            }) => {
                assert!(!problems.is_empty() && problems.len() <= MAX_PROBLEMS);
                assert!(total >= problems.len());
                for p in &problems {
                    assert!(
                        p.index < events,
                        "problem names event {} of {events}",
                        p.index
                    );
                    assert!(!p.message.is_empty(), "problem without a message");
                }
            }
        }
    }
});
