//! The Segment (and RudderStack) HTTP tracking API: one message of `/v1/batch` or of the
//! single-message endpoints, mapped onto an event (and a profile write or an alias).
//!
//! | Segment | tidemark |
//! |---|---|
//! | `type` track | `event_name` = `event`, category `custom`, `properties` |
//! | `type` page / screen | `event_name` = `name` (or `page` / `screen`), category `sdk`, `properties` |
//! | `type` identify | event `identify` (category `sdk`, properties = `traits`) and a profile write of the traits that are declared fields |
//! | `type` group | event `group`, properties `{"group_id", "traits"}` |
//! | `type` alias | event `alias` under `userId`, properties `{"previous_id"}`, and an alias `previousId` -> `userId` |
//! | `userId`, else `anonymousId` | `user_id` |
//! | `messageId` | `event_id` (an SDK's retry is dropped as a duplicate) |
//! | `timestamp` | `occurred_at` as sent |
//! | no `timestamp`: `originalTimestamp` with `sentAt` | `occurred_at` = received − (`sentAt` − `originalTimestamp`), Segment's clock-skew correction |
//! | `context.os.name`, `context.device.type`, `context.library.name` | `platform` ([`super::platform_of`]) |

use std::borrow::Cow;

use serde::Deserialize;
use serde_json::value::RawValue;

use super::lenient::{Context, Lenient};
use super::{
    Mapped, Part, Problems, Write, id_text, members, name_text, object_text, open, present, time_us,
};
use crate::config::Limits;
use crate::ingest::event::{Category, Event};
use crate::ingest::fields::{checked_string, string_value};
use crate::problem::Problem;
use crate::users::aliases::Alias;

/// A message type of the tracking API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Track,
    Page,
    Screen,
    Identify,
    Group,
    Alias,
}

impl Kind {
    pub fn parse(s: &str) -> Option<Kind> {
        Some(match s {
            "track" => Kind::Track,
            "page" => Kind::Page,
            "screen" => Kind::Screen,
            "identify" => Kind::Identify,
            "group" => Kind::Group,
            "alias" => Kind::Alias,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Track => "track",
            Kind::Page => "page",
            Kind::Screen => "screen",
            Kind::Identify => "identify",
            Kind::Group => "group",
            Kind::Alias => "alias",
        }
    }
}

/// The members of a message tidemark reads (others, such as `integrations`, are ignored).
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Message<'a> {
    #[serde(rename = "type", borrow, default)]
    kind: Option<&'a RawValue>,
    #[serde(borrow, default)]
    message_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    user_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    anonymous_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    event: Option<&'a RawValue>,
    #[serde(borrow, default)]
    name: Option<&'a RawValue>,
    #[serde(borrow, default)]
    properties: Option<&'a RawValue>,
    #[serde(borrow, default)]
    traits: Option<&'a RawValue>,
    /// Read in this pass, leniently ([`lenient::Context`]).
    #[serde(borrow, default)]
    context: Option<Lenient<Context<'a>>>,
    #[serde(borrow, default)]
    timestamp: Option<&'a RawValue>,
    #[serde(borrow, default)]
    original_timestamp: Option<&'a RawValue>,
    #[serde(borrow, default)]
    sent_at: Option<&'a RawValue>,
    #[serde(borrow, default)]
    previous_id: Option<&'a RawValue>,
    #[serde(borrow, default)]
    group_id: Option<&'a RawValue>,
}

/// What the request around the messages says (a batch's own `sentAt` and `context`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Envelope<'a> {
    pub sent_at: Option<&'a RawValue>,
    /// The platform the batch's `context` says, for messages without a context.
    pub platform: Option<&'static str>,
    /// The type a single-message endpoint (`/v1/track`, …) implies.
    pub implied: Option<Kind>,
}

/// Maps one message (`index` in the request), received at `received_us`.
fn message<'a>(
    index: usize,
    raw: &'a RawValue,
    envelope: &Envelope<'a>,
    received_us: i64,
    limits: &Limits,
) -> Result<Part<'a>, Vec<Problem>> {
    let mut p = Problems::new(index);
    let Some(m) = open::<Message>(raw, "message", limits, &mut p) else {
        return Err(p.list);
    };
    let kind = kind_of(&m, envelope.implied, &mut p);
    let user = id_text(m.user_id, "userId", limits, &mut p);
    let anonymous = id_text(m.anonymous_id, "anonymousId", limits, &mut p);
    let event_id = id_text(m.message_id, "messageId", limits, &mut p);
    let occurred_at = occurred_at(&m, envelope, received_us, &mut p);
    let Some(kind) = kind else {
        return Err(p.list);
    };
    let user_id = user_of(kind, user, anonymous, &mut p);
    let Body {
        event_name,
        category,
        properties,
        previous_id,
    } = body(kind, &m, limits, &mut p);
    let platform = match &m.context {
        Some(c) => c.0.platform(),
        None => envelope.platform,
    }
    .map(Cow::Borrowed);
    let (Some(user_id), Some(event_name)) = (user_id, event_name) else {
        return Err(p.list);
    };
    let write = (kind == Kind::Identify).then(|| Write {
        index,
        user_id: user_id.to_string(),
        set: properties.as_deref().map(members).unwrap_or_default(),
        set_once: Default::default(),
    });
    let alias = previous_id.map(|previous_id| Alias {
        previous_id,
        user_id: user_id.to_string(),
    });
    p.finish(|| Part {
        event: Event {
            event_id,
            event_name,
            user_id,
            occurred_at,
            category,
            platform,
            properties,
        },
        write,
        alias,
    })
}

/// The message's `type`, or the one its endpoint implies.
fn kind_of(m: &Message, implied: Option<Kind>, p: &mut Problems) -> Option<Kind> {
    match (present(m.kind), implied) {
        (None, Some(k)) => Some(k),
        (None, None) => {
            p.add(
                Some("type"),
                "is required (track, identify, page, screen, group or alias)",
            );
            None
        }
        (Some(raw), implied) => match string_value(raw)
            .ok()
            .as_deref()
            .map(|s| (s, Kind::parse(s)))
        {
            Some((_, Some(k))) if implied.is_none_or(|i| i == k) => Some(k),
            Some((s, Some(_))) => {
                p.add(
                    Some("type"),
                    format!(
                        "'{s}' does not match the endpoint, which takes '{}' messages",
                        implied.map_or("", Kind::as_str)
                    ),
                );
                None
            }
            Some((s, None)) => {
                p.add(
                    Some("type"),
                    format!("'{s}' is not one of track, identify, page, screen, group, alias"),
                );
                None
            }
            None => {
                p.add(Some("type"), "must be a string");
                None
            }
        },
    }
}

/// Who the message is about: `userId`, else `anonymousId` (an alias needs `userId`).
fn user_of<'a>(
    kind: Kind,
    user: Option<Cow<'a, str>>,
    anonymous: Option<Cow<'a, str>>,
    p: &mut Problems,
) -> Option<Cow<'a, str>> {
    match (kind, user, anonymous) {
        (Kind::Alias, None, _) => {
            p.add(Some("userId"), "is required for an alias");
            None
        }
        (_, Some(u), _) => Some(u),
        (_, None, Some(a)) => Some(a),
        (_, None, None) => {
            p.add(Some("userId"), "userId or anonymousId is required");
            None
        }
    }
}

/// What one message type stores: the event's name, category and properties, and an
/// alias's previous id.
struct Body<'a> {
    event_name: Option<Cow<'a, str>>,
    category: Category,
    properties: Option<Cow<'a, str>>,
    previous_id: Option<String>,
}

fn body<'a>(kind: Kind, m: &Message<'a>, limits: &Limits, p: &mut Problems) -> Body<'a> {
    let named = |fallback: &'static str, p: &mut Problems| match present(m.name) {
        None => Some(Cow::Borrowed(fallback)),
        Some(raw) => checked_string(raw, limits)
            .map_err(|e| p.add(Some("name"), e))
            .ok(),
    };
    let mut previous_id = None;
    let (event_name, category, properties): (Option<Cow<str>>, Category, Option<Cow<str>>) =
        match kind {
            Kind::Track => {
                let name = name_text(m.event, "event", "is required for a track", limits, p);
                let props = object_text(m.properties, "properties", limits, p);
                (name, Category::Custom, props.map(Cow::Borrowed))
            }
            Kind::Page | Kind::Screen => {
                let name = named(kind.as_str(), p);
                let props = object_text(m.properties, "properties", limits, p);
                (name, Category::Sdk, props.map(Cow::Borrowed))
            }
            Kind::Identify => {
                // RudderStack's SDKs send identify's traits in `context.traits`.
                let traits = match present(m.traits) {
                    Some(_) => object_text(m.traits, "traits", limits, p),
                    None => {
                        let in_context = m.context.as_ref().and_then(|c| c.0.traits);
                        object_text(in_context, "context.traits", limits, p)
                    }
                };
                (
                    Some(Cow::Borrowed("identify")),
                    Category::Sdk,
                    traits.map(Cow::Borrowed),
                )
            }
            Kind::Group => (
                Some(Cow::Borrowed("group")),
                Category::Sdk,
                group_properties(m, limits, p),
            ),
            Kind::Alias => {
                previous_id = alias_previous_id(m, limits, p);
                let props = previous_id.as_ref().map(|v| {
                    Cow::Owned(format!(
                        "{{\"previous_id\":{}}}",
                        serde_json::Value::String(v.clone())
                    ))
                });
                (Some(Cow::Borrowed("alias")), Category::Sdk, props)
            }
        };
    Body {
        event_name,
        category,
        properties,
        previous_id,
    }
}

/// A group call's properties: `{"group_id": …, "traits": {…}}`.
fn group_properties<'a>(
    m: &Message<'a>,
    limits: &Limits,
    p: &mut Problems,
) -> Option<Cow<'a, str>> {
    let group = id_text(m.group_id, "groupId", limits, p);
    if group.is_none() && p.list.is_empty() {
        p.add(Some("groupId"), "is required for a group");
    }
    let traits = object_text(m.traits, "traits", limits, p).unwrap_or("{}");
    group.map(|g| {
        Cow::Owned(format!(
            "{{\"group_id\":{},\"traits\":{traits}}}",
            serde_json::Value::String(g.into_owned())
        ))
    })
}

/// An alias call's `previousId` (required).
fn alias_previous_id(m: &Message, limits: &Limits, p: &mut Problems) -> Option<String> {
    let previous = id_text(m.previous_id, "previousId", limits, p);
    if previous.is_none()
        && !p
            .list
            .iter()
            .any(|x| x.field.as_deref() == Some("previousId"))
    {
        p.add(Some("previousId"), "is required for an alias");
    }
    previous.map(Cow::into_owned)
}

/// `timestamp` as sent; else `originalTimestamp` corrected by the client's clock error
/// (`sentAt`, the message's or the batch's, against the time received); else none.
fn occurred_at(
    m: &Message,
    envelope: &Envelope,
    received_us: i64,
    p: &mut Problems,
) -> Option<i64> {
    if present(m.timestamp).is_some() {
        return time_us(m.timestamp, "timestamp", p);
    }
    let original = time_us(m.original_timestamp, "originalTimestamp", p)?;
    let sent = match present(m.sent_at) {
        Some(_) => time_us(m.sent_at, "sentAt", p),
        None => time_us(envelope.sent_at, "sentAt", p),
    };
    let Some(sent) = sent else {
        return Some(original);
    };
    let corrected = received_us.saturating_sub(sent.saturating_sub(original));
    crate::ingest::fields::check_occurred_range(corrected, "originalTimestamp corrected by sentAt")
        .map_err(|e| p.add(Some("originalTimestamp"), e))
        .ok()
}

/// Maps the messages of one request.
pub fn map<'a>(
    messages: &[&'a RawValue],
    envelope: &Envelope<'a>,
    received_us: i64,
    limits: &Limits,
) -> Mapped<'a> {
    let mut out = Mapped::default();
    for (i, raw) in messages.iter().enumerate() {
        out.push(message(i, raw, envelope, received_us, limits));
    }
    out
}

#[cfg(test)]
#[path = "segment_tests.rs"]
mod tests;
