//! What a parsed segment definition is: conditions on built-in and custom profile
//! fields, tags and per-event stats, in groups of all / any. [`super::def`] parses these
//! from JSON; [`super::compile`] turns them into SQL.

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use crate::reltime::Time;
use crate::users::fields::FieldType;

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

pub const FIELD_OPS: [(&str, FieldOp); 14] = [
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
pub fn allowed(t: FieldType, op: FieldOp) -> bool {
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
