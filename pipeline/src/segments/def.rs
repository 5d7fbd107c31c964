//! Segment definitions: parsing from JSON (or YAML, converted to JSON by the CLI) with
//! every problem named by its path, and validation against the field registry. The parsed
//! form is [`super::model`]'s.
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

use serde_json::{Map, Value};

pub use super::model::{
    BUILTIN, Cmp, Condition, Definition, FieldOp, FieldRef, MAX_CONDITIONS, MAX_DEPTH, Operand,
    Segment, Time, TimeOp, Which, valid_id,
};
use super::model::{FIELD_OPS, allowed};
use crate::problem::Problem;
pub use crate::reltime::parse_time;
use crate::users::fields::{FieldDef, FieldType};

struct Ctx<'a> {
    fields: &'a BTreeMap<String, FieldDef>,
    problems: Vec<Problem>,
    count: usize,
}

impl Ctx<'_> {
    fn problem(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem::field(path, message));
    }
}

fn text<'a>(o: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    o.get(key).and_then(Value::as_str)
}

/// The refusal of a value that is not one of `allowed`, naming the value given.
fn not_one_of(v: Option<&Value>, allowed: &str) -> String {
    match v {
        None => format!("is required: one of {allowed}"),
        Some(Value::String(s)) => format!("'{s}' is not one of {allowed}"),
        Some(other) => format!("{other} is not one of {allowed}"),
    }
}

fn parse_match(ctx: &mut Ctx, v: Option<&Value>, path: &str) -> bool {
    match v.and_then(Value::as_str) {
        Some("all") => false,
        Some("any") => true,
        _ => {
            ctx.problem(path, not_one_of(v, "all, any"));
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
        "tag" => parse_tag(ctx, o, path),
        "event" => parse_event(ctx, o, path),
        _ => parse_field(ctx, o, path),
    }
}

fn parse_tag(ctx: &mut Ctx, o: &Map<String, Value>, path: &str) -> Option<Condition> {
    let tag = text(o, "tag").filter(|t| !t.trim().is_empty());
    let has = match text(o, "op") {
        Some("has") => Some(true),
        Some("has_not") => Some(false),
        _ => None,
    };
    if tag.is_none() {
        ctx.problem(&format!("{path}.tag"), "must be a non-empty string");
    }
    if has.is_none() {
        ctx.problem(
            &format!("{path}.op"),
            not_one_of(o.get("op"), "has, has_not"),
        );
    }
    Some(Condition::Tag {
        tag: tag?.to_string(),
        has: has?,
    })
}

fn parse_event(ctx: &mut Ctx, o: &Map<String, Value>, path: &str) -> Option<Condition> {
    // the names ingest accepts (limits.max_string_len defaults to 512)
    let event = text(o, "event")
        .filter(|t| !t.trim().is_empty() && t.len() <= 512 && !t.chars().any(char::is_control));
    if event.is_none() {
        ctx.problem(
            &format!("{path}.event"),
            "must be an event name: 1 to 512 bytes of text without control characters",
        );
    }
    let did = match text(o, "op") {
        Some("did") => Some(true),
        Some("did_not") => Some(false),
        _ => {
            ctx.problem(
                &format!("{path}.op"),
                not_one_of(o.get("op"), "did, did_not"),
            );
            None
        }
    };
    let count = o.get("count").and_then(|c| parse_count(ctx, c, path));
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
    let occurrence = parse_occurrence(ctx, o, path);
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

/// `"count": {"op": .., "value": n}` of an event condition.
fn parse_count(ctx: &mut Ctx, c: &Value, path: &str) -> Option<(Cmp, i64)> {
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

/// `"first"` or `"last"`: `{"op": before|after|within, "value": time}` of an event condition.
fn parse_occurrence(
    ctx: &mut Ctx,
    o: &Map<String, Value>,
    path: &str,
) -> Option<(Which, TimeOp, Time)> {
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
    occurrence
}

fn parse_field(ctx: &mut Ctx, o: &Map<String, Value>, path: &str) -> Option<Condition> {
    let name = text(o, "field").unwrap_or_default();
    let (field, field_type) = if let Some((col, t)) = BUILTIN.iter().find(|(c, _)| *c == name) {
        (FieldRef::Builtin(col), *t)
    } else if let Some(def) = ctx.fields.get(name) {
        (FieldRef::Custom(name.to_string()), def.field_type)
    } else {
        ctx.problem(
            &format!("{path}.field"),
            format!("unknown field '{name}'; a built-in profile field or a declared custom field"),
        );
        return None;
    };
    let op_name = |op: FieldOp| {
        FIELD_OPS
            .iter()
            .find(|(_, o)| *o == op)
            .map_or("", |(n, _)| n)
    };
    let Some(op) = text(o, "op")
        .and_then(|s| FIELD_OPS.iter().find(|(n, _)| *n == s))
        .map(|(_, o)| *o)
    else {
        ctx.problem(
            &format!("{path}.op"),
            not_one_of(o.get("op"), &FIELD_OPS.map(|(n, _)| n).join(", ")),
        );
        return None;
    };
    if !allowed(field_type, op) {
        ctx.problem(
            &format!("{path}.op"),
            format!(
                "'{}' does not apply to a {} field",
                op_name(op),
                field_type.as_str()
            ),
        );
        return None;
    }
    let value = field_value(
        ctx,
        field_type,
        op,
        o.get("value"),
        &format!("{path}.value"),
    )?;
    Some(Condition::Field {
        field,
        field_type,
        op,
        value,
    })
}

/// The `value` of a field condition with `op` on a field of type `t`.
fn field_value(
    ctx: &mut Ctx,
    t: FieldType,
    op: FieldOp,
    v: Option<&Value>,
    vp: &str,
) -> Option<Operand> {
    let value = match (op, v) {
        (FieldOp::Exists | FieldOp::NotExists, None) => Operand::None,
        (FieldOp::Exists | FieldOp::NotExists, Some(_)) => {
            ctx.problem(vp, "exists / not_exists take no value");
            return None;
        }
        (_, None) => {
            ctx.problem(vp, "is required");
            return None;
        }
        (FieldOp::In, Some(Value::Array(items))) if !items.is_empty() && items.len() <= 1000 => {
            let mut out = Vec::new();
            for (i, item) in items.iter().enumerate() {
                out.push(operand(ctx, t, item, &format!("{vp}[{i}]"))?);
            }
            Operand::Many(out)
        }
        (FieldOp::In, Some(_)) => {
            ctx.problem(vp, "in takes an array of 1 to 1000 values");
            return None;
        }
        (FieldOp::Within, Some(Value::String(s))) => match parse_time(s) {
            Ok(Time::Relative(d)) if d < 0 => Operand::Time(Time::Relative(d)),
            _ => {
                ctx.problem(
                    vp,
                    "within takes a time in the past relative to now, like -7d",
                );
                return None;
            }
        },
        (_, Some(v)) => operand(ctx, t, v, vp)?,
    };
    Some(value)
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

#[cfg(test)]
#[path = "def_tests.rs"]
mod tests;
