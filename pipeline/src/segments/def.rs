//! Segment definitions: parsing from JSON (or YAML, converted to JSON by the CLI) with
//! every problem named by its path, and validation against the field registry.
//!
//! ```json
//! {"id": "active-gold", "name": "Active gold customers", "match": "all", "conditions": [
//!   {"field": "plan", "op": "eq", "value": "gold"},
//!   {"tag": "vip", "op": "has"},
//!   {"event": "card-opened", "op": "did", "within": "-7d"},
//!   {"event": "card-opened", "op": "did_not", "within": "-1d"},
//!   {"match": "any", "conditions": [{"field": "last_seen_ios_at", "op": "within", "value": "-7d"}]}
//! ]}
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ingest::event::Problem;
use crate::users::fields::{FieldDef, FieldType};

/// The built-in profile columns a condition may use, with their types.
pub const BUILTIN: [(&str, FieldType); 13] = [
    ("user_id", FieldType::Text),
    ("created_at", FieldType::Datetime),
    ("first_seen_at", FieldType::Datetime),
    ("last_seen_at", FieldType::Datetime),
    ("last_seen_ios_at", FieldType::Datetime),
    ("last_seen_android_at", FieldType::Datetime),
    ("last_seen_web_at", FieldType::Datetime),
    ("last_seen_server_at", FieldType::Datetime),
    ("event_count", FieldType::Number),
    ("last_event_name", FieldType::Text),
    ("last_event_at", FieldType::Datetime),
    ("updated_at", FieldType::Datetime),
    ("tags", FieldType::List),
];

/// Most conditions in one definition (nested ones included), and nesting depth.
pub const MAX_CONDITIONS: usize = 200;
pub const MAX_DEPTH: usize = 5;

/// A stored definition (the JSON users send, plus timestamps).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Definition {
    pub id: String,
    pub name: String,
    #[serde(rename = "match")]
    pub match_mode: String,
    pub conditions: Vec<Value>,
}

/// A point in time: relative to the evaluation time (`-7d` = 7 days before), or absolute.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Time {
    /// Microseconds added to "now" (negative: in the past).
    Relative(i64),
    /// Microseconds since the epoch.
    Absolute(i64),
}

impl Time {
    pub fn at(self, now_us: i64) -> i64 {
        match self {
            Time::Relative(d) => now_us.saturating_add(d),
            Time::Absolute(t) => t,
        }
    }
}

/// A value a field condition compares with.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    None,
    Text(String),
    Number(f64),
    Bool(bool),
    Time(Time),
    /// `in`: any of these.
    Many(Vec<Operand>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldOp {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
    In,
    Contains,
    StartsWith,
    Exists,
    NotExists,
    Before,
    After,
    Within,
}

const FIELD_OPS: [(&str, FieldOp); 14] = [
    ("eq", FieldOp::Eq),
    ("neq", FieldOp::Neq),
    ("gt", FieldOp::Gt),
    ("gte", FieldOp::Gte),
    ("lt", FieldOp::Lt),
    ("lte", FieldOp::Lte),
    ("in", FieldOp::In),
    ("contains", FieldOp::Contains),
    ("starts_with", FieldOp::StartsWith),
    ("exists", FieldOp::Exists),
    ("not_exists", FieldOp::NotExists),
    ("before", FieldOp::Before),
    ("after", FieldOp::After),
    ("within", FieldOp::Within),
];

/// Which ops each type allows.
fn allowed(t: FieldType, op: FieldOp) -> bool {
    use FieldOp::*;
    match op {
        Exists | NotExists => true,
        Eq | Neq | In => t != FieldType::List,
        Gt | Gte | Lt | Lte => matches!(t, FieldType::Number | FieldType::Text),
        Contains => matches!(t, FieldType::Text | FieldType::List),
        StartsWith => t == FieldType::Text,
        Before | After | Within => t == FieldType::Datetime,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Neq,
    Gt,
    Gte,
    Lt,
    Lte,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Which {
    First,
    Last,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeOp {
    Before,
    After,
    Within,
}

/// A field a condition reads.
#[derive(Debug, Clone, PartialEq)]
pub enum FieldRef {
    /// A column of `profiles`.
    Builtin(&'static str),
    /// A custom field (in `profiles.fields`).
    Custom(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Condition {
    Field {
        field: FieldRef,
        field_type: FieldType,
        op: FieldOp,
        value: Operand,
    },
    Tag {
        tag: String,
        has: bool,
    },
    Event {
        event: String,
        did: bool,
        count: Option<(Cmp, i64)>,
        /// Did (not) happen since this time (`last_at >= t`).
        within: Option<Time>,
        /// The first or last occurrence before / after / within a time.
        occurrence: Option<(Which, TimeOp, Time)>,
    },
    Group {
        any: bool,
        conditions: Vec<Condition>,
    },
}

/// A parsed, validated segment.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub id: String,
    pub name: String,
    pub any: bool,
    pub conditions: Vec<Condition>,
}

impl Segment {
    /// Whether some condition depends on the evaluation time (so it is re-evaluated on a
    /// schedule).
    pub fn is_time_relative(&self) -> bool {
        fn rel(c: &Condition) -> bool {
            let t = |t: &Time| matches!(t, Time::Relative(_));
            match c {
                Condition::Field { value, .. } => match value {
                    Operand::Time(x) => t(x),
                    Operand::Many(v) => v.iter().any(|o| matches!(o, Operand::Time(x) if t(x))),
                    _ => false,
                },
                Condition::Tag { .. } => false,
                Condition::Event {
                    within, occurrence, ..
                } => within.as_ref().is_some_and(t) || occurrence.as_ref().is_some_and(|o| t(&o.2)),
                Condition::Group { conditions, .. } => conditions.iter().any(rel),
            }
        }
        self.conditions.iter().any(rel)
    }
}

/// `[a-z0-9][a-z0-9_-]{0,63}`.
pub fn valid_id(id: &str) -> bool {
    let mut c = id.chars();
    id.len() <= 64
        && c.next()
            .is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        && c.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == '-')
}

/// Parses `-7d`, `-12h`, `-30m`, `-90s`, `+1d` (relative) or an RFC 3339 time.
pub fn parse_time(s: &str) -> Result<Time, String> {
    let s = s.trim();
    if let Some(rest) = s.strip_prefix('-').or_else(|| s.strip_prefix('+')) {
        let sign = if s.starts_with('-') { -1 } else { 1 };
        let (num, unit) = rest.split_at(rest.len().saturating_sub(1));
        let unit_us: i64 = match unit {
            "s" => 1_000_000,
            "m" => 60_000_000,
            "h" => 3_600_000_000,
            "d" => 86_400_000_000,
            "w" => 7 * 86_400_000_000,
            _ => {
                return Err(format!(
                    "'{s}' must be like -7d, -12h, -30m, -90s or an RFC 3339 time"
                ));
            }
        };
        let n: i64 = num
            .parse()
            .ok()
            .filter(|n| (0..=36_500 * 86_400).contains(n))
            .ok_or_else(|| {
                format!("'{s}' must be like -7d, -12h, -30m, -90s or an RFC 3339 time")
            })?;
        return Ok(Time::Relative(sign * n * unit_us));
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .map(|t| Time::Absolute(t.timestamp_micros()))
        .map_err(|_| format!("'{s}' must be like -7d, -12h, -30m, -90s or an RFC 3339 time"))
}

struct Ctx<'a> {
    fields: &'a BTreeMap<String, FieldDef>,
    problems: Vec<Problem>,
    count: usize,
}

impl Ctx<'_> {
    fn problem(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem {
            index: 0,
            field: Some(path.to_string()),
            message: message.into(),
        });
    }
}

fn text<'a>(o: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    o.get(key).and_then(Value::as_str)
}

fn parse_match(ctx: &mut Ctx, v: Option<&Value>, path: &str) -> bool {
    match v.and_then(Value::as_str) {
        Some("all") => false,
        Some("any") => true,
        _ => {
            ctx.problem(path, "must be \"all\" or \"any\"");
            false
        }
    }
}

fn parse_list(ctx: &mut Ctx, v: Option<&Value>, path: &str, depth: usize) -> Vec<Condition> {
    let Some(items) = v.and_then(Value::as_array) else {
        ctx.problem(path, "must be an array of conditions");
        return Vec::new();
    };
    if items.is_empty() {
        ctx.problem(path, "must hold at least one condition");
    }
    if depth > MAX_DEPTH {
        ctx.problem(path, format!("groups nest deeper than {MAX_DEPTH}"));
        return Vec::new();
    }
    items
        .iter()
        .enumerate()
        .filter_map(|(i, c)| parse_condition(ctx, c, &format!("{path}[{i}]"), depth))
        .collect()
}

fn operand(ctx: &mut Ctx, t: FieldType, v: &Value, path: &str) -> Option<Operand> {
    let bad = |want: &str| format!("expected {want} for a {} field", t.as_str());
    let o = match (t, v) {
        (FieldType::Text | FieldType::List, Value::String(s)) => Operand::Text(s.clone()),
        (FieldType::Number, Value::Number(n)) => Operand::Number(n.as_f64()?),
        (FieldType::Boolean, Value::Bool(b)) => Operand::Bool(*b),
        (FieldType::Datetime, Value::String(s)) => match parse_time(s) {
            Ok(t) => Operand::Time(t),
            Err(e) => {
                ctx.problem(path, e);
                return None;
            }
        },
        (FieldType::Text | FieldType::List, _) => {
            ctx.problem(path, bad("a string"));
            return None;
        }
        (FieldType::Number, _) => {
            ctx.problem(path, bad("a number"));
            return None;
        }
        (FieldType::Boolean, _) => {
            ctx.problem(path, bad("true or false"));
            return None;
        }
        (FieldType::Datetime, _) => {
            ctx.problem(path, bad("a time (-7d or RFC 3339)"));
            return None;
        }
    };
    Some(o)
}

fn parse_condition(ctx: &mut Ctx, v: &Value, path: &str, depth: usize) -> Option<Condition> {
    ctx.count += 1;
    if ctx.count == MAX_CONDITIONS + 1 {
        ctx.problem(path, format!("more than {MAX_CONDITIONS} conditions"));
    }
    let Some(o) = v.as_object() else {
        ctx.problem(path, "must be an object");
        return None;
    };
    let kinds: Vec<&str> = ["field", "tag", "event", "conditions"]
        .into_iter()
        .filter(|k| o.contains_key(*k))
        .collect();
    let known: &[&str] = match kinds.as_slice() {
        ["field"] => &["field", "op", "value"],
        ["tag"] => &["tag", "op"],
        ["event"] => &["event", "op", "count", "within", "first", "last"],
        ["conditions"] => &["match", "conditions"],
        _ => {
            ctx.problem(
                path,
                "must have exactly one of \"field\", \"tag\", \"event\" or \"conditions\" (a group)",
            );
            return None;
        }
    };
    for k in o.keys() {
        if !known.contains(&k.as_str()) {
            ctx.problem(
                &format!("{path}.{k}"),
                format!("unknown key; this condition takes {}", known.join(", ")),
            );
        }
    }
    let op = text(o, "op");
    match kinds[0] {
        "conditions" => {
            let any = parse_match(ctx, o.get("match"), &format!("{path}.match"));
            let conditions = parse_list(
                ctx,
                o.get("conditions"),
                &format!("{path}.conditions"),
                depth + 1,
            );
            Some(Condition::Group { any, conditions })
        }
        "tag" => {
            let tag = text(o, "tag").filter(|t| !t.trim().is_empty());
            let has = match op {
                Some("has") => Some(true),
                Some("has_not") => Some(false),
                _ => None,
            };
            if tag.is_none() {
                ctx.problem(&format!("{path}.tag"), "must be a non-empty string");
            }
            if has.is_none() {
                ctx.problem(&format!("{path}.op"), "must be \"has\" or \"has_not\"");
            }
            Some(Condition::Tag {
                tag: tag?.to_string(),
                has: has?,
            })
        }
        "event" => {
            // the names ingest accepts (limits.max_string_len defaults to 512)
            let event = text(o, "event").filter(|t| {
                !t.trim().is_empty() && t.len() <= 512 && !t.chars().any(char::is_control)
            });
            if event.is_none() {
                ctx.problem(
                    &format!("{path}.event"),
                    "must be an event name: 1 to 512 bytes of text without control characters",
                );
            }
            let did = match op {
                Some("did") => Some(true),
                Some("did_not") => Some(false),
                _ => {
                    ctx.problem(&format!("{path}.op"), "must be \"did\" or \"did_not\"");
                    None
                }
            };
            let count = match o.get("count") {
                None => None,
                Some(c) => {
                    let cmp = c.get("op").and_then(Value::as_str).and_then(|s| match s {
                        "eq" => Some(Cmp::Eq),
                        "neq" => Some(Cmp::Neq),
                        "gt" => Some(Cmp::Gt),
                        "gte" => Some(Cmp::Gte),
                        "lt" => Some(Cmp::Lt),
                        "lte" => Some(Cmp::Lte),
                        _ => None,
                    });
                    let n = c.get("value").and_then(Value::as_i64).filter(|n| *n >= 0);
                    if cmp.is_none() || n.is_none() {
                        ctx.problem(
                            &format!("{path}.count"),
                            "must be {\"op\": eq|neq|gt|gte|lt|lte, \"value\": a whole number >= 0}",
                        );
                    }
                    cmp.zip(n)
                }
            };
            let within = match o.get("within") {
                None => None,
                Some(w) => match w.as_str().map(parse_time) {
                    Some(Ok(t)) => Some(t),
                    Some(Err(e)) => {
                        ctx.problem(&format!("{path}.within"), e);
                        None
                    }
                    None => {
                        ctx.problem(&format!("{path}.within"), "must be a time like -7d");
                        None
                    }
                },
            };
            if within.is_some() && count.is_some() {
                ctx.problem(
                    &format!("{path}.count"),
                    "a count cannot be combined with \"within\": event_stats keep one count per event, not per time window",
                );
            }
            let mut occurrence = None;
            for (key, which) in [("first", Which::First), ("last", Which::Last)] {
                let Some(x) = o.get(key) else { continue };
                let p = format!("{path}.{key}");
                if occurrence.is_some() {
                    ctx.problem(&p, "give \"first\" or \"last\", not both");
                    continue;
                }
                let top = x.get("op").and_then(Value::as_str).and_then(|s| match s {
                    "before" => Some(TimeOp::Before),
                    "after" => Some(TimeOp::After),
                    "within" => Some(TimeOp::Within),
                    _ => None,
                });
                let t = x.get("value").and_then(Value::as_str).map(parse_time);
                match (top, t) {
                    (Some(op), Some(Ok(t))) => occurrence = Some((which, op, t)),
                    (_, Some(Err(e))) => ctx.problem(&p, e),
                    _ => ctx.problem(
                        &p,
                        "must be {\"op\": before|after|within, \"value\": a time like -7d or RFC 3339}",
                    ),
                }
            }
            if did == Some(false) && (count.is_some() || occurrence.is_some()) {
                ctx.problem(
                    &format!("{path}.op"),
                    "did_not takes only \"within\"; use did with a count or an occurrence",
                );
            }
            Some(Condition::Event {
                event: event?.to_string(),
                did: did?,
                count,
                within,
                occurrence,
            })
        }
        _ => {
            let name = text(o, "field").unwrap_or_default();
            let p = format!("{path}.field");
            let (field, field_type) = if let Some((col, t)) =
                BUILTIN.iter().find(|(c, _)| *c == name)
            {
                (FieldRef::Builtin(col), *t)
            } else if let Some(def) = ctx.fields.get(name) {
                (FieldRef::Custom(name.to_string()), def.field_type)
            } else {
                ctx.problem(&p, format!("unknown field '{name}'; a built-in profile field or a declared custom field"));
                return None;
            };
            let Some(op) = op
                .and_then(|s| FIELD_OPS.iter().find(|(n, _)| *n == s))
                .map(|(_, o)| *o)
            else {
                ctx.problem(
                    &format!("{path}.op"),
                    format!("must be one of {}", FIELD_OPS.map(|(n, _)| n).join(", ")),
                );
                return None;
            };
            if !allowed(field_type, op) {
                ctx.problem(
                    &format!("{path}.op"),
                    format!(
                        "'{}' does not apply to a {} field",
                        FIELD_OPS
                            .iter()
                            .find(|(_, o)| *o == op)
                            .map_or("", |(n, _)| n),
                        field_type.as_str()
                    ),
                );
                return None;
            }
            let vp = format!("{path}.value");
            let value = match (op, o.get("value")) {
                (FieldOp::Exists | FieldOp::NotExists, None) => Operand::None,
                (FieldOp::Exists | FieldOp::NotExists, Some(_)) => {
                    ctx.problem(&vp, "exists / not_exists take no value");
                    return None;
                }
                (_, None) => {
                    ctx.problem(&vp, "is required");
                    return None;
                }
                (FieldOp::In, Some(Value::Array(items)))
                    if !items.is_empty() && items.len() <= 1000 =>
                {
                    let mut out = Vec::new();
                    for (i, item) in items.iter().enumerate() {
                        out.push(operand(ctx, field_type, item, &format!("{vp}[{i}]"))?);
                    }
                    Operand::Many(out)
                }
                (FieldOp::In, Some(_)) => {
                    ctx.problem(&vp, "in takes an array of 1 to 1000 values");
                    return None;
                }
                (FieldOp::Within, Some(Value::String(s))) => match parse_time(s) {
                    Ok(Time::Relative(d)) if d < 0 => Operand::Time(Time::Relative(d)),
                    _ => {
                        ctx.problem(
                            &vp,
                            "within takes a time in the past relative to now, like -7d",
                        );
                        return None;
                    }
                },
                (_, Some(v)) => operand(ctx, field_type, v, &vp)?,
            };
            Some(Condition::Field {
                field,
                field_type,
                op,
                value,
            })
        }
    }
}

/// Parses and validates a definition document against `fields`. Problems name their
/// path (`conditions[2].op`).
pub fn parse(
    doc: &Value,
    fields: &BTreeMap<String, FieldDef>,
) -> Result<(Definition, Segment), Vec<Problem>> {
    let mut ctx = Ctx {
        fields,
        problems: Vec::new(),
        count: 0,
    };
    let Some(o) = doc.as_object() else {
        ctx.problem("", "a segment must be a JSON object");
        return Err(ctx.problems);
    };
    for k in o.keys() {
        if !["id", "name", "match", "conditions"].contains(&k.as_str()) {
            ctx.problem(k, "unknown key; a segment has id, name, match, conditions");
        }
    }
    let id = text(o, "id").unwrap_or_default().to_string();
    if !valid_id(&id) {
        ctx.problem("id", "must match [a-z0-9][a-z0-9_-]{0,63}");
    }
    let name = text(o, "name").unwrap_or_default().to_string();
    if name.trim().is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
        ctx.problem(
            "name",
            "must be 1 to 200 bytes of text without control characters",
        );
    }
    let any = parse_match(&mut ctx, o.get("match"), "match");
    let conditions = parse_list(&mut ctx, o.get("conditions"), "conditions", 1);
    if !ctx.problems.is_empty() {
        return Err(ctx.problems);
    }
    let def = Definition {
        id: id.clone(),
        name: name.clone(),
        match_mode: if any { "any" } else { "all" }.into(),
        conditions: o
            .get("conditions")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default(),
    };
    Ok((
        def,
        Segment {
            id,
            name,
            any,
            conditions,
        },
    ))
}
