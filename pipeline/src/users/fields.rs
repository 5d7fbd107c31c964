//! The custom field registry (config document `fields`) and typed value validation.
//!
//! A field is declared per environment with a type; profile writes and imports are
//! validated against it. Deleting a field hides its values from profiles; declaring it
//! again later starts empty (values written before the new declaration stay hidden).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::storage::paths::Doc;
use crate::storage::registry::{self, Kind};
use crate::{Error, Result};

/// The built-in profile columns (and response keys): no custom field may take these names.
pub const RESERVED: [&str; 20] = [
    "environment",
    "user_id",
    "id",
    "created_at",
    "first_seen_at",
    "last_seen_at",
    "last_seen_ios_at",
    "last_seen_android_at",
    "last_seen_web_at",
    "last_seen_server_at",
    "event_count",
    "last_event_name",
    "last_event_at",
    "updated_at",
    "tags",
    "fields",
    "segments",
    "event_stats",
    "events",
    "cursor",
];

/// Longest text value (and list item) accepted, in bytes.
pub const MAX_TEXT_BYTES: usize = 4096;
/// Most items in a list value.
pub const MAX_LIST_ITEMS: usize = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum FieldType {
    Text,
    Number,
    Boolean,
    Datetime,
    List,
}

impl FieldType {
    pub fn as_str(self) -> &'static str {
        match self {
            FieldType::Text => "text",
            FieldType::Number => "number",
            FieldType::Boolean => "boolean",
            FieldType::Datetime => "datetime",
            FieldType::List => "list",
        }
    }

    pub fn parse(s: &str) -> Option<FieldType> {
        [
            FieldType::Text,
            FieldType::Number,
            FieldType::Boolean,
            FieldType::Datetime,
            FieldType::List,
        ]
        .into_iter()
        .find(|t| t.as_str() == s)
    }

    /// Checks `value` against the type and returns its stored JSON text: numbers as
    /// JSON numbers, datetimes normalized to RFC 3339 UTC with microseconds, lists of
    /// text as JSON arrays. `null` is not a value (use `unset`).
    pub fn validate(self, value: &Value) -> std::result::Result<String, String> {
        let text_ok = |s: &str| -> std::result::Result<(), String> {
            if s.len() > MAX_TEXT_BYTES {
                return Err(format!(
                    "text is {} bytes long, more than {MAX_TEXT_BYTES}",
                    s.len()
                ));
            }
            Ok(())
        };
        match (self, value) {
            (_, Value::Null) => Err("null is not a value; use \"unset\" to remove a field".into()),
            (FieldType::Text, Value::String(s)) => {
                text_ok(s)?;
                Ok(Value::String(s.clone()).to_string())
            }
            (FieldType::Number, Value::Number(n)) => Ok(n.to_string()),
            (FieldType::Boolean, Value::Bool(b)) => Ok(b.to_string()),
            (FieldType::Datetime, Value::String(s)) => {
                let t = DateTime::parse_from_rfc3339(s).map_err(|e| {
                    format!("'{s}' is not an RFC 3339 datetime (e.g. 2026-01-31T12:00:00Z): {e}")
                })?;
                Ok(Value::String(
                    t.with_timezone(&Utc)
                        .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                )
                .to_string())
            }
            (FieldType::List, Value::Array(items)) => {
                if items.len() > MAX_LIST_ITEMS {
                    return Err(format!(
                        "list has {} items, more than {MAX_LIST_ITEMS}",
                        items.len()
                    ));
                }
                for (i, item) in items.iter().enumerate() {
                    match item {
                        Value::String(s) => text_ok(s).map_err(|e| format!("item {i}: {e}"))?,
                        other => {
                            return Err(format!(
                                "item {i} is {}, but a list holds text only",
                                kind(other)
                            ));
                        }
                    }
                }
                Ok(value.to_string())
            }
            (t, other) => Err(format!(
                "expected {} for a {} field, got {}",
                match t {
                    FieldType::Text => "a string",
                    FieldType::Number => "a number",
                    FieldType::Boolean => "true or false",
                    FieldType::Datetime => "an RFC 3339 datetime string",
                    FieldType::List => "an array of strings",
                },
                t.as_str(),
                kind(other)
            )),
        }
    }

    /// Parses a CSV cell (text) into a value of this type.
    pub fn parse_text(self, cell: &str) -> std::result::Result<String, String> {
        let value = match self {
            FieldType::Text | FieldType::Datetime => Value::String(cell.to_string()),
            FieldType::Number => {
                let n: serde_json::Number = cell
                    .trim()
                    .parse()
                    .map_err(|_| format!("'{cell}' is not a number"))?;
                Value::Number(n)
            }
            FieldType::Boolean => match cell.trim().to_ascii_lowercase().as_str() {
                "true" | "1" | "yes" => Value::Bool(true),
                "false" | "0" | "no" => Value::Bool(false),
                _ => {
                    return Err(format!(
                        "'{cell}' is not a boolean (true/false, 1/0, yes/no)"
                    ));
                }
            },
            FieldType::List => Value::Array(
                cell.split(';')
                    .map(str::trim)
                    .filter(|s| !s.is_empty())
                    .map(|s| Value::String(s.to_string()))
                    .collect(),
            ),
        };
        self.validate(&value)
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// One declared custom field.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldDef {
    pub name: String,
    #[serde(rename = "type")]
    pub field_type: FieldType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    pub created_at: DateTime<Utc>,
    /// Changes ordered before this id were written to an earlier declaration of the
    /// same name and stay hidden (see `users::changes::change_id`).
    pub since_change_id: String,
}

/// A registry of `fields` as declared once, at the epoch, with no earlier declaration
/// (models and fuzz targets that check definitions without a store).
pub fn declared(fields: &[(&str, FieldType)]) -> BTreeMap<String, FieldDef> {
    fields
        .iter()
        .map(|(name, field_type)| {
            let def = FieldDef {
                name: name.to_string(),
                field_type: *field_type,
                label: None,
                created_at: DateTime::UNIX_EPOCH,
                since_change_id: String::new(),
            };
            (name.to_string(), def)
        })
        .collect()
}

/// The `fields` config document: environment -> name -> definition.
pub type FieldsDoc = crate::storage::docs::ByEnvironment<FieldDef>;

/// `[a-z][a-z0-9_]{0,63}` and not reserved.
pub fn validate_name(name: &str) -> Result<()> {
    let mut chars = name.chars();
    let ok = name.len() <= 64
        && chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
    if !ok {
        return Err(Error::Invalid(format!(
            "name: '{name}' must match [a-z][a-z0-9_]{{0,63}}"
        )));
    }
    if RESERVED.contains(&name) {
        return Err(Error::Invalid(format!(
            "name: '{name}' is a built-in profile field and cannot be a custom field"
        )));
    }
    Ok(())
}

impl Kind for FieldDef {
    const DOC: Doc = Doc::Fields;
    const NOUN: &'static str = "field";

    /// A field is declared and deleted, never changed.
    fn touch(&mut self, _now: DateTime<Utc>) {}
}

/// The field registry of a store (a kind of the one registry of config documents).
pub type Registry = registry::Registry<FieldDef>;

impl registry::Registry<FieldDef> {
    /// Declares a field; an existing name is a conflict (`Error::Conflict` naming it).
    pub async fn add(
        &self,
        environment: &str,
        name: &str,
        field_type: FieldType,
        label: Option<String>,
    ) -> Result<FieldDef> {
        validate_name(name)?;
        if let Some(l) = &label
            && (l.len() > 256 || l.chars().any(char::is_control))
        {
            return Err(Error::Invalid(
                "label: must be at most 256 bytes without control characters".into(),
            ));
        }
        let now = Utc::now();
        let def = FieldDef {
            name: name.to_string(),
            field_type,
            label,
            created_at: now,
            since_change_id: super::change_id::change_id_floor(now),
        };
        self.write(environment, name, |existing| match existing {
            Some(existing) => Err(Error::Conflict(format!(
                "name: field '{name}' already exists (type {})",
                existing.field_type.as_str()
            ))),
            None => Ok(def.clone()),
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Found by the csv_import fuzz target: serde_json's default float parser is not
    /// correctly rounded, so a stored number read back became its neighbour
    /// (1.111111111111111e+83 -> 1.1111111111111109e+83), drifting at every rewrite and
    /// disagreeing with every other reader; the workspace enables `float_roundtrip`.
    #[test]
    fn numbers_are_stored_as_the_nearest_double_and_read_back_unchanged() {
        for text in [
            "1.111111111111111e+83",
            "0.1",
            "2.2250738585072014e-308",
            "9007199254740993",
        ] {
            let stored = FieldType::Number.parse_text(text).unwrap();
            let read: Value = serde_json::from_str(&stored).unwrap();
            assert_eq!(
                FieldType::Number.validate(&read).as_deref(),
                Ok(stored.as_str()),
                "{text}"
            );
            if let Some(f) = read.as_f64().filter(|_| text.contains(['.', 'e'])) {
                assert_eq!(f, text.parse::<f64>().unwrap(), "{text} read as {f:e}");
            }
        }
    }

    #[test]
    fn names() {
        assert!(validate_name("plan").is_ok());
        assert!(validate_name("a1_b").is_ok());
        assert!(validate_name(&"a".repeat(64)).is_ok());
        for bad in ["", "1a", "Plan", "a-b", "a b", "é", &"a".repeat(65)] {
            let e = validate_name(bad).unwrap_err().to_string();
            assert!(e.contains("must match"), "{bad}: {e}");
        }
        let e = validate_name("created_at").unwrap_err().to_string();
        assert!(e.contains("built-in"), "{e}");
    }

    #[test]
    fn values_are_checked_and_normalized() {
        use FieldType::*;
        assert_eq!(Text.validate(&json!("gold")).unwrap(), "\"gold\"");
        assert_eq!(Number.validate(&json!(1.5)).unwrap(), "1.5");
        assert_eq!(Boolean.validate(&json!(false)).unwrap(), "false");
        assert_eq!(
            Datetime
                .validate(&json!("2026-01-31T13:00:00+01:00"))
                .unwrap(),
            "\"2026-01-31T12:00:00.000000Z\""
        );
        assert_eq!(List.validate(&json!(["a", "b"])).unwrap(), "[\"a\",\"b\"]");
        let e = Number.validate(&json!("12")).unwrap_err();
        assert_eq!(e, "expected a number for a number field, got a string");
        assert!(
            Datetime
                .validate(&json!("yesterday"))
                .unwrap_err()
                .contains("RFC 3339")
        );
        assert!(
            List.validate(&json!(["a", 1]))
                .unwrap_err()
                .contains("item 1")
        );
        assert!(Text.validate(&json!(null)).unwrap_err().contains("unset"));
        assert!(Text.validate(&json!("x".repeat(5000))).is_err());
    }

    #[test]
    fn csv_cells() {
        use FieldType::*;
        assert_eq!(Number.parse_text(" 42 ").unwrap(), "42");
        assert_eq!(Boolean.parse_text("Yes").unwrap(), "true");
        assert_eq!(List.parse_text("a; b;;").unwrap(), "[\"a\",\"b\"]");
        assert!(
            Number
                .parse_text("4x")
                .unwrap_err()
                .contains("not a number")
        );
        assert!(Boolean.parse_text("maybe").is_err());
    }
}
