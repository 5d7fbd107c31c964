//! Ingest in the formats of existing analytics SDKs, mapped onto tidemark's own model:
//!
//! - [`segment`]: the Segment / RudderStack HTTP tracking API (`/v1/batch`, `/v1/track`, …).
//! - [`posthog`]: PostHog's capture API (`/batch/`, `/capture/`, `/e/`).
//! - [`lenient`]: reading the parts of a message tidemark only looks into (`context`)
//!   without failing the message.
//!
//! Both are pure: a message becomes a [`Mapped`] part (an event, maybe a profile write and
//! an alias) or a list of problems named by the SDK's own field names. The HTTP layer
//! (`server::compat_api`) authenticates, stores and answers.
//!
//! A message with a problem is refused alone: the SDKs drop a whole batch that is answered
//! 400 (and retry nothing), so the good messages of a batch are stored and the answer
//! (200) lists the refused ones. A request none of whose messages is valid is answered 400.

pub mod lenient;
pub mod posthog;
pub mod segment;

use std::borrow::Cow;
use std::collections::BTreeMap;

use serde_json::value::RawValue;
use serde_json::{Map, Value};

use crate::config::Limits;
use crate::ingest::event::Event;
use crate::ingest::fields;
use crate::problem::Problem;
use crate::users::aliases::Alias;
use crate::users::changes::{self, Update};
use crate::users::fields::FieldDef;

/// The traits or `$set` of one message: a profile write of declared custom fields.
#[derive(Debug, Clone, PartialEq)]
pub struct Write {
    /// The message's index in the request.
    pub index: usize,
    pub user_id: String,
    pub set: Map<String, Value>,
    pub set_once: Map<String, Value>,
}

/// What one request's messages became.
#[derive(Debug, Default)]
pub struct Mapped<'a> {
    pub events: Vec<Event<'a>>,
    pub writes: Vec<Write>,
    pub aliases: Vec<Alias>,
    /// The problems of the refused messages.
    pub problems: Vec<Problem>,
    /// How many messages were refused.
    pub refused: usize,
}

/// One valid message.
struct Part<'a> {
    event: Event<'a>,
    write: Option<Write>,
    alias: Option<Alias>,
}

impl<'a> Mapped<'a> {
    /// Adds message `index`'s outcome.
    fn push(&mut self, part: Result<Part<'a>, Vec<Problem>>) {
        match part {
            Ok(p) => {
                self.events.push(p.event);
                self.writes.extend(p.write);
                self.aliases.extend(p.alias);
            }
            Err(problems) => {
                self.refused += 1;
                self.problems.extend(problems);
            }
        }
    }
}

/// Collects the problems of one message.
struct Problems {
    index: usize,
    list: Vec<Problem>,
}

impl Problems {
    fn new(index: usize) -> Problems {
        Problems {
            index,
            list: Vec::new(),
        }
    }

    fn add(&mut self, field: Option<&str>, message: impl Into<String>) {
        self.list.push(Problem {
            index: self.index,
            field: field.map(str::to_string),
            message: message.into(),
        });
    }

    /// `Ok(v)` when nothing was added since the start.
    fn finish<T>(self, v: impl FnOnce() -> T) -> Result<T, Vec<Problem>> {
        if self.list.is_empty() {
            Ok(v())
        } else {
            Err(self.list)
        }
    }
}

/// Opens one message of a request as `T` (its members, raw): it must be a JSON object
/// within `limits.max_sdk_message_bytes` and of `T`'s shape; `what` names it in the
/// problem ("message", "event").
fn open<'a, T: serde::Deserialize<'a>>(
    raw: &'a RawValue,
    what: &str,
    limits: &Limits,
    problems: &mut Problems,
) -> Option<T> {
    let text = raw.get();
    if !text.starts_with('{') {
        problems.add(None, format!("{what} must be a JSON object"));
        return None;
    }
    if text.len() > limits.max_sdk_message_bytes {
        problems.add(
            None,
            format!(
                "{what} is {} bytes, more than the limit of {} (limits.max_sdk_message_bytes)",
                text.len(),
                limits.max_sdk_message_bytes
            ),
        );
        return None;
    }
    serde_json::from_str(text)
        .map_err(|e| problems.add(None, format!("{what} is not valid: {e}")))
        .ok()
}

fn present(raw: Option<&RawValue>) -> Option<&RawValue> {
    raw.filter(|r| !fields::is_null(r))
}

/// An optional name-like string (an id or a name); numbers are taken as their text, as
/// the SDKs send numeric user ids.
fn id_text<'a>(
    raw: Option<&'a RawValue>,
    field: &str,
    limits: &Limits,
    problems: &mut Problems,
) -> Option<Cow<'a, str>> {
    let raw = present(raw)?;
    let text = raw.get();
    if text
        .bytes()
        .next()
        .is_some_and(|b| b.is_ascii_digit() || b == b'-')
    {
        return Some(Cow::Borrowed(text));
    }
    checked(raw, field, limits, problems)
}

/// A JSON string within the limits, or its problem recorded under `field`.
fn checked<'a>(
    raw: &'a RawValue,
    field: &str,
    limits: &Limits,
    problems: &mut Problems,
) -> Option<Cow<'a, str>> {
    fields::checked_string(raw, limits)
        .map_err(|m| problems.add(Some(field), m))
        .ok()
}

/// A name string (an event's name): `missing` is the problem when it is absent.
fn name_text<'a>(
    raw: Option<&'a RawValue>,
    field: &str,
    missing: &str,
    limits: &Limits,
    problems: &mut Problems,
) -> Option<Cow<'a, str>> {
    let Some(raw) = present(raw) else {
        problems.add(Some(field), missing);
        return None;
    };
    checked(raw, field, limits, problems)
}

/// A time as RFC 3339 text or epoch milliseconds, in microseconds.
fn time_us(raw: Option<&RawValue>, field: &str, problems: &mut Problems) -> Option<i64> {
    fields::parse_occurred_at(present(raw)?)
        .map_err(|m| problems.add(Some(field), m))
        .ok()
}

/// The JSON text of an object stored as an event's properties, checked under `field`.
fn object_text<'a>(
    raw: Option<&'a RawValue>,
    field: &str,
    limits: &Limits,
    problems: &mut Problems,
) -> Option<&'a str> {
    let raw = present(raw)?;
    if !raw.get().starts_with('{') {
        problems.add(Some(field), "must be a JSON object");
        return None;
    }
    fields::check_object(raw.get(), field, limits)
        .map_err(|(path, m)| problems.add(Some(&path), m))
        .ok()
}

/// An object's members (for traits and `$set`).
fn members(text: &str) -> Map<String, Value> {
    serde_json::from_str(text).unwrap_or_default()
}

/// The platform tidemark records for an SDK message, from the operating system, the
/// device type and the library that sent it. `None` when none of them says.
pub fn platform_of(
    os: Option<&str>,
    device: Option<&str>,
    library: Option<&str>,
) -> Option<&'static str> {
    for s in [os, device].into_iter().flatten() {
        let s = s.to_ascii_lowercase();
        if [
            "ios", "ipados", "iphone", "ipad", "tvos", "watchos", "visionos",
        ]
        .iter()
        .any(|p| s.starts_with(p))
        {
            return Some("ios");
        }
        if s.contains("android") {
            return Some("android");
        }
    }
    let lib = library?.to_ascii_lowercase();
    let has = |words: &[&str]| words.iter().any(|w| lib.contains(w));
    if has(&["android", "kotlin"]) {
        Some("android")
    } else if has(&["ios", "swift"]) {
        Some("ios")
    } else if has(&[
        "node", "python", "go", "java", "ruby", "php", ".net", "dotnet", "rust", "elixir",
        "clojure", "server",
    ]) {
        Some("server")
    } else if lib == "web" || has(&[".js", "javascript", "browser", "analytics-next", "web"]) {
        Some("web")
    } else {
        None
    }
}

/// A trait (or `$set` property) that was not written to the profile, and why.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Ignored {
    pub index: usize,
    #[serde(rename = "trait")]
    pub name: String,
    pub reason: String,
}

/// The profile updates of `writes`: the traits that are declared custom fields with a
/// valid value. The others are listed as ignored (they stay in the event's properties).
pub fn declared_updates(
    writes: &[Write],
    fields: &BTreeMap<String, FieldDef>,
    max_id_len: usize,
) -> (Vec<(String, Update)>, Vec<Ignored>) {
    let mut updates = Vec::new();
    let mut ignored = Vec::new();
    for w in writes {
        let mut update = Update::default();
        for (section, map) in [("set", &w.set), ("set_once", &w.set_once)] {
            for (name, value) in map {
                if !fields.contains_key(name) {
                    ignored.push(Ignored {
                        index: w.index,
                        name: name.clone(),
                        reason: "not a declared custom field (POST /v1/{env}/fields declares one)"
                            .into(),
                    });
                    continue;
                }
                let mut one = Update::default();
                let target = if section == "set" {
                    &mut one.set
                } else {
                    &mut one.set_once
                };
                target.insert(name.clone(), value.clone());
                let mut problems = Vec::new();
                changes::validate(0, &w.user_id, &one, fields, max_id_len, &mut problems);
                if let Some(p) = problems.into_iter().next() {
                    ignored.push(Ignored {
                        index: w.index,
                        name: name.clone(),
                        reason: p.message,
                    });
                    continue;
                }
                if section == "set" {
                    update.set.insert(name.clone(), value.clone());
                } else if !update.set.contains_key(name) {
                    update.set_once.insert(name.clone(), value.clone());
                }
            }
        }
        if !update.set.is_empty() || !update.set_once.is_empty() {
            updates.push((w.user_id.clone(), update));
        }
    }
    (updates, ignored)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::change_id::change_id_floor;
    use crate::users::fields::FieldType;
    use serde_json::json;

    #[test]
    fn platforms_from_os_device_and_library() {
        let cases = [
            (Some("iOS"), None, Some("analytics-swift"), Some("ios")),
            (Some("iPadOS"), None, None, Some("ios")),
            (
                Some("Android"),
                None,
                Some("analytics-react-native"),
                Some("android"),
            ),
            (None, Some("android"), None, Some("android")),
            (Some("Mac OS X"), None, Some("analytics.js"), Some("web")),
            (None, None, Some("@segment/analytics-next"), Some("web")),
            (None, None, Some("web"), Some("web")),
            (None, None, Some("analytics-python"), Some("server")),
            (None, None, Some("analytics-node"), Some("server")),
            (None, None, Some("posthog-python"), Some("server")),
            (None, None, Some("posthog-android"), Some("android")),
            (None, None, Some("posthog-ios"), Some("ios")),
            (None, None, Some("something-else"), None),
            (None, None, None, None),
        ];
        for (os, device, lib, want) in cases {
            assert_eq!(
                platform_of(os, device, lib),
                want,
                "{os:?} {device:?} {lib:?}"
            );
        }
    }

    #[test]
    fn only_declared_traits_with_valid_values_are_written() {
        let mut fields = BTreeMap::new();
        for (n, t) in [("plan", FieldType::Text), ("seats", FieldType::Number)] {
            fields.insert(
                n.to_string(),
                FieldDef {
                    name: n.into(),
                    field_type: t,
                    label: None,
                    created_at: chrono::Utc::now(),
                    since_change_id: change_id_floor(chrono::Utc::now()),
                },
            );
        }
        let writes = vec![Write {
            index: 3,
            user_id: "u1".into(),
            set: members(r#"{"plan":"pro","seats":"many","email":"a@b.c"}"#),
            set_once: members(r#"{"plan":"free"}"#),
        }];
        let (updates, ignored) = declared_updates(&writes, &fields, 512);
        assert_eq!(updates.len(), 1);
        assert_eq!(updates[0].0, "u1");
        assert_eq!(updates[0].1.set.get("plan"), Some(&json!("pro")));
        assert!(updates[0].1.set_once.is_empty(), "set beats set_once");
        let names: Vec<(&str, usize)> =
            ignored.iter().map(|i| (i.name.as_str(), i.index)).collect();
        assert_eq!(names, vec![("email", 3), ("seats", 3)]);
        assert!(ignored[0].reason.contains("not a declared custom field"));
        assert!(
            ignored[1].reason.contains("number"),
            "{}",
            ignored[1].reason
        );
    }
}
