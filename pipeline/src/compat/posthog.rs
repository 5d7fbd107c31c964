//! PostHog's capture API: one event of `/batch/`, `/capture/` or `/e/`, mapped onto a
//! tidemark event (and profile writes and aliases).
//!
//! | PostHog | tidemark |
//! |---|---|
//! | `event` | `event_name`; category `sdk` for PostHog's own `$` events, else `custom` |
//! | `distinct_id` (or `properties.distinct_id`) | `user_id` |
//! | `uuid` | `event_id` (a retry is dropped as a duplicate) |
//! | `timestamp`; else `offset` (ms before sending) | `occurred_at` |
//! | `properties` | `properties`, as sent |
//! | `$set`, `$set_once` (top level or in `properties`) | a profile write of the declared fields |
//! | `$identify` with `properties.$anon_distinct_id` | an alias `$anon_distinct_id` -> `distinct_id` |
//! | `$create_alias` with `properties.alias` | an alias `alias` -> `distinct_id` (PostHog merges the alias into `distinct_id`'s person) |
//! | `properties.$os`, `properties.$lib` | `platform` ([`super::platform_of`]) |

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::{
    Mapped, Part, Problems, Write, id_text, members, name_text, object_text, open, present, time_us,
};
use crate::config::Limits;
use crate::ingest::event::{Category, Event};
use crate::problem::Problem;
use crate::users::aliases::Alias;

#[derive(Default, Deserialize)]
struct Capture<'a> {
    #[serde(borrow, default)]
    event: Option<&'a RawValue>,
    #[serde(borrow, default)]
    distinct_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    uuid: Option<&'a RawValue>,
    #[serde(borrow, default)]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow, default)]
    offset: Option<&'a RawValue>,
    #[serde(borrow, default)]
    properties: Option<&'a RawValue>,
    #[serde(rename = "$set", borrow, default)]
    set: Option<&'a RawValue>,
    #[serde(rename = "$set_once", borrow, default)]
    set_once: Option<&'a RawValue>,
}

/// The properties tidemark reads.
#[derive(Default, Deserialize)]
struct Props<'a> {
    #[serde(borrow, default)]
    distinct_id: Option<&'a RawValue>,
    #[serde(rename = "$set", borrow, default)]
    set: Option<&'a RawValue>,
    #[serde(rename = "$set_once", borrow, default)]
    set_once: Option<&'a RawValue>,
    #[serde(rename = "$anon_distinct_id", borrow, default)]
    anon_distinct_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    alias: Option<&'a RawValue>,
    #[serde(rename = "$os", default)]
    os: Option<String>,
    #[serde(rename = "$lib", default)]
    lib: Option<String>,
}

fn event<'a>(
    index: usize,
    raw: &'a RawValue,
    received_us: i64,
    limits: &Limits,
) -> Result<Part<'a>, Vec<Problem>> {
    let mut p = Problems::new(index);
    let Some(c) = open::<Capture>(raw, "event", limits, &mut p) else {
        return Err(p.list);
    };
    let properties = object_text(c.properties, "properties", limits, &mut p);
    let props: Props = properties
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default();
    let name = name_text(c.event, "event", "is required", limits, &mut p);
    let user_id = match present(c.distinct_id) {
        Some(_) => id_text(c.distinct_id, "distinct_id", limits, &mut p),
        None => match present(props.distinct_id) {
            Some(_) => id_text(props.distinct_id, "properties.distinct_id", limits, &mut p),
            None => {
                p.add(Some("distinct_id"), "is required");
                None
            }
        },
    };
    let event_id = id_text(c.uuid, "uuid", limits, &mut p);
    let occurred_at = occurred_at(&c, received_us, &mut p);
    let set = object_text(c.set.or(props.set), "$set", limits, &mut p);
    let set_once = object_text(c.set_once.or(props.set_once), "$set_once", limits, &mut p);
    let previous_id = previous_id(name.as_deref(), &props, limits, &mut p);
    let (Some(event_name), Some(user_id)) = (name, user_id) else {
        return Err(p.list);
    };
    let write = (set.is_some() || set_once.is_some()).then(|| Write {
        index,
        user_id: user_id.to_string(),
        set: set.map(members).unwrap_or_default(),
        set_once: set_once.map(members).unwrap_or_default(),
    });
    let alias = previous_id.map(|previous_id| Alias {
        previous_id,
        user_id: user_id.to_string(),
    });
    let category = if event_name.starts_with('$') {
        Category::Sdk
    } else {
        Category::Custom
    };
    let platform =
        super::platform_of(props.os.as_deref(), None, props.lib.as_deref()).map(Cow::Borrowed);
    p.finish(|| Part {
        event: Event {
            event_id,
            event_name,
            user_id,
            occurred_at,
            category,
            platform,
            properties: properties.map(Cow::Borrowed),
        },
        write,
        alias,
    })
}

/// `timestamp` as sent; else the time received less `offset` (milliseconds ago); else none.
fn occurred_at(c: &Capture, received_us: i64, p: &mut Problems) -> Option<i64> {
    if present(c.timestamp).is_some() {
        time_us(c.timestamp, "timestamp", p)
    } else {
        match present(c.offset).map(|r| r.get().parse::<i64>()) {
            None => None,
            Some(Ok(ms)) if ms >= 0 => Some(received_us.saturating_sub(ms.saturating_mul(1000))),
            Some(_) => {
                p.add(
                    Some("offset"),
                    "must be a whole number of milliseconds, at least 0",
                );
                None
            }
        }
    }
}

/// The id an `$identify` (`$anon_distinct_id`) or `$create_alias` (`alias`) makes an alias
/// of the event's user.
fn previous_id(
    name: Option<&str>,
    props: &Props,
    limits: &Limits,
    p: &mut Problems,
) -> Option<String> {
    let alias_of = match name {
        Some("$identify") => Some(("properties.$anon_distinct_id", props.anon_distinct_id)),
        Some("$create_alias") => Some(("properties.alias", props.alias)),
        _ => None,
    };
    match alias_of {
        Some((field, raw)) => {
            let v = id_text(raw, field, limits, p);
            if v.is_none() && name == Some("$create_alias") && present(raw).is_none() {
                p.add(Some(field), "is required for $create_alias");
            }
            v.map(Cow::into_owned)
        }
        None => None,
    }
}

/// Maps the events of one request, received at `received_us`.
pub fn map<'a>(events: &[&'a RawValue], received_us: i64, limits: &Limits) -> Mapped<'a> {
    let mut out = Mapped::default();
    for (i, raw) in events.iter().enumerate() {
        out.push(event(i, raw, received_us, limits));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const RECEIVED: i64 = 1_780_000_000_000_000;

    fn run(body: &'static str) -> Mapped<'static> {
        let raws: Vec<&RawValue> = serde_json::from_str(body).unwrap();
        let raws: &'static [&RawValue] = Box::leak(raws.into_boxed_slice());
        map(raws, RECEIVED, &Limits::default())
    }

    #[test]
    fn captures_sets_identify_and_alias() {
        let m = run(r#"[
          {"event":"signed up","distinct_id":"u1","uuid":"0190c2a4-0000-7000-8000-000000000001",
           "timestamp":"2026-01-02T03:04:05+00:00","properties":{"$lib":"posthog-python","plan":"pro"}},
          {"event":"$set","distinct_id":"u1","$set":{"plan":"pro"},"properties":{}},
          {"event":"$pageview","properties":{"distinct_id":"a1","$os":"Android","$set_once":{"plan":"free"}},"offset":1500},
          {"event":"$identify","distinct_id":"u1","properties":{"$anon_distinct_id":"a1","$set":{"plan":"team"}}},
          {"event":"$create_alias","distinct_id":"u1","properties":{"distinct_id":"u1","alias":"b1"}}
        ]"#);
        assert!(m.problems.is_empty(), "{:?}", m.problems);
        let got: Vec<(&str, &str, Category, Option<&str>)> = m
            .events
            .iter()
            .map(|e| {
                (
                    e.event_name.as_ref(),
                    e.user_id.as_ref(),
                    e.category,
                    e.platform.as_deref(),
                )
            })
            .collect();
        assert_eq!(
            got,
            vec![
                ("signed up", "u1", Category::Custom, Some("server")),
                ("$set", "u1", Category::Sdk, None),
                ("$pageview", "a1", Category::Sdk, Some("android")),
                ("$identify", "u1", Category::Sdk, None),
                ("$create_alias", "u1", Category::Sdk, None),
            ]
        );
        assert_eq!(
            m.events[0].event_id.as_deref(),
            Some("0190c2a4-0000-7000-8000-000000000001")
        );
        assert_eq!(m.events[0].occurred_at, Some(1_767_323_045_000_000));
        assert_eq!(
            m.events[2].occurred_at,
            Some(RECEIVED - 1_500_000),
            "offset"
        );
        assert_eq!(
            m.events[0].properties.as_deref(),
            Some(r#"{"$lib":"posthog-python","plan":"pro"}"#)
        );
        let writes: Vec<(usize, &str, String, String)> = m
            .writes
            .iter()
            .map(|w| {
                (
                    w.index,
                    w.user_id.as_str(),
                    serde_json::to_string(&w.set).unwrap(),
                    serde_json::to_string(&w.set_once).unwrap(),
                )
            })
            .collect();
        assert_eq!(
            writes,
            vec![
                (1, "u1", r#"{"plan":"pro"}"#.into(), "{}".into()),
                (2, "a1", "{}".into(), r#"{"plan":"free"}"#.into()),
                (3, "u1", r#"{"plan":"team"}"#.into(), "{}".into()),
            ]
        );
        assert_eq!(
            m.aliases,
            vec![
                Alias {
                    previous_id: "a1".into(),
                    user_id: "u1".into()
                },
                Alias {
                    previous_id: "b1".into(),
                    user_id: "u1".into()
                },
            ]
        );
    }

    #[test]
    fn bad_events_are_refused_alone() {
        let m = run(r#"[
          {"distinct_id":"u"},
          {"event":"e"},
          {"event":"ok","distinct_id":"u"},
          {"event":"e","distinct_id":"u","timestamp":"soon","offset":-1},
          {"event":"$create_alias","distinct_id":"u","properties":{}},
          {"event":"e","distinct_id":"u","$set":[1]},
          7
        ]"#);
        assert_eq!(m.events.len(), 1);
        assert_eq!(m.refused, 6);
        let got: Vec<(usize, Option<&str>)> = m
            .problems
            .iter()
            .map(|p| (p.index, p.field.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                (0, Some("event")),
                (1, Some("distinct_id")),
                (3, Some("timestamp")),
                (4, Some("properties.alias")),
                (5, Some("$set")),
                (6, None),
            ]
        );
    }
}
