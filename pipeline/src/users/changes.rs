//! Profile writes: the `profile_changes` Delta table, the update document of
//! `PUT /v1/{env}/users/{id}` (and of each item of `users:batch` and each CSV row), its
//! validation against the field registry, and the appends.
//!
//! Each operation on one field or tag is one row. The ops of one update (a PUT, one item
//! of a batch, one CSV row) share a change id ([`super::change_id`]). Within one update a
//! `set` beats a `set_once` of the same field.

use std::collections::BTreeMap;
use std::sync::{Arc, LazyLock};

use arrow::array::{RecordBatch, StringBuilder, TimestampMicrosecondBuilder};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use deltalake::DeltaTable;
use deltalake::protocol::SaveMode;
use serde::Deserialize;
use serde_json::Value;

use super::change_id::next_change_id;
use super::fields::FieldDef;
use crate::Result;
use crate::problem::Problem;
use crate::storage::events_table::{timestamp_type, writer_properties};
use crate::storage::{Store, TableSpec};

pub const TABLE: &str = "profile_changes";
pub const PARTITION_COLUMNS: [&str; 1] = ["environment"];
/// Most updates in one `users:batch` request.
pub const MAX_BATCH: usize = 1000;
/// Longest tag, in bytes.
pub const MAX_TAG_BYTES: usize = 256;

/// The operations a change row records.
pub mod op {
    pub const SET: &str = "set";
    pub const SET_ONCE: &str = "set_once";
    pub const UNSET: &str = "unset";
    pub const TAG: &str = "tag";
    pub const UNTAG: &str = "untag";
}

static SCHEMA: LazyLock<SchemaRef> = LazyLock::new(|| {
    Arc::new(Schema::new(vec![
        Field::new("environment", DataType::Utf8, false),
        Field::new("user_id", DataType::Utf8, false),
        Field::new("change_id", DataType::Utf8, false),
        Field::new("at", timestamp_type(), false),
        Field::new("op", DataType::Utf8, false),
        // the custom field or the tag
        Field::new("name", DataType::Utf8, false),
        // JSON text of the value (`set`, `set_once`); null otherwise
        Field::new("value", DataType::Utf8, true),
        // `api` or `import`
        Field::new("source", DataType::Utf8, false),
    ]))
});

pub fn schema() -> SchemaRef {
    SCHEMA.clone()
}

/// The body of `PUT /v1/{env}/users/{id}`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Update {
    #[serde(default)]
    pub set: BTreeMap<String, Value>,
    #[serde(default)]
    pub set_once: BTreeMap<String, Value>,
    #[serde(default)]
    pub unset: Vec<String>,
    #[serde(default)]
    pub tags: Tags,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tags {
    #[serde(default)]
    pub add: Vec<String>,
    #[serde(default)]
    pub remove: Vec<String>,
}

/// One item of `users:batch`: the user id and its update.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchItem {
    pub id: String,
    #[serde(flatten)]
    pub update: Update,
}

/// One validated operation, before it gets its change id.
#[derive(Debug, Clone, PartialEq)]
pub struct Op {
    pub user_id: String,
    pub op: &'static str,
    pub name: String,
    pub value: Option<String>,
}

/// Checks a user id the way ingest does: non-empty, at most `max_len` bytes, no control
/// characters.
pub fn validate_user_id(id: &str, max_len: usize) -> std::result::Result<(), String> {
    if id.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if id.len() > max_len {
        return Err(format!(
            "is {} bytes long, more than the limit of {max_len}",
            id.len()
        ));
    }
    if id.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    Ok(())
}

/// The message for a field that is not declared.
fn unknown_field(name: &str, fields: &BTreeMap<String, FieldDef>) -> String {
    let known = if fields.is_empty() {
        String::new()
    } else {
        let names: Vec<&str> = fields.keys().map(String::as_str).collect();
        format!("; known fields: {}", names.join(", "))
    };
    format!(
        "unknown field '{name}'; declare it first (POST /v1/{{env}}/fields or `tidemark fields add`){known}"
    )
}

/// The `tags.add` and `tags.remove` of an update: non-empty, short, no control
/// characters, not both added and removed.
fn validate_tags(
    user_id: &str,
    tags: &Tags,
    ops: &mut Vec<Op>,
    problem: &mut impl FnMut(String, String),
) {
    for (section, list, kind) in [
        ("tags.add", &tags.add, op::TAG),
        ("tags.remove", &tags.remove, op::UNTAG),
    ] {
        for (i, tag) in list.iter().enumerate() {
            let path = format!("{section}[{i}]");
            if tag.trim().is_empty() {
                problem(path, "tag must not be empty".into());
            } else if tag.len() > MAX_TAG_BYTES {
                problem(path, format!("tag is longer than {MAX_TAG_BYTES} bytes"));
            } else if tag.chars().any(char::is_control) {
                problem(path, "tag must not contain control characters".into());
            } else if kind == op::UNTAG && tags.add.contains(tag) {
                problem(path, format!("tag '{tag}' is both added and removed"));
            } else {
                ops.push(Op {
                    user_id: user_id.into(),
                    op: kind,
                    name: tag.clone(),
                    value: None,
                });
            }
        }
    }
}

/// Validates `update` of `user_id` against `fields`; problems carry `index` and the
/// field path (e.g. `set.plan`, `tags.add[2]`).
pub fn validate(
    index: usize,
    user_id: &str,
    update: &Update,
    fields: &BTreeMap<String, FieldDef>,
    max_id_len: usize,
    problems: &mut Vec<Problem>,
) -> Vec<Op> {
    let start = problems.len();
    let mut problem = |field: String, message: String| {
        problems.push(Problem {
            index,
            field: Some(field),
            message,
        })
    };
    let mut ops = Vec::new();
    if let Err(e) = validate_user_id(user_id, max_id_len) {
        problem("id".into(), format!("user id {e}"));
        return ops;
    }
    let unknown = |name: &str| unknown_field(name, fields);
    for (section, map, kind) in [
        ("set", &update.set, op::SET),
        ("set_once", &update.set_once, op::SET_ONCE),
    ] {
        for (name, value) in map {
            let path = format!("{section}.{name}");
            let Some(def) = fields.get(name) else {
                problem(path, unknown(name));
                continue;
            };
            match def.field_type.validate(value) {
                Ok(v) => ops.push(Op {
                    user_id: user_id.into(),
                    op: kind,
                    name: name.clone(),
                    value: Some(v),
                }),
                Err(e) => problem(path, e),
            }
        }
    }
    for (i, name) in update.unset.iter().enumerate() {
        if !fields.contains_key(name) {
            problem(format!("unset[{i}]"), unknown(name));
        } else if update.set.contains_key(name) || update.set_once.contains_key(name) {
            problem(
                format!("unset[{i}]"),
                format!("field '{name}' is both set and unset in one update"),
            );
        } else {
            ops.push(Op {
                user_id: user_id.into(),
                op: op::UNSET,
                name: name.clone(),
                value: None,
            });
        }
    }
    validate_tags(user_id, &update.tags, &mut ops, &mut problem);
    if ops.is_empty() && problems.len() == start {
        problems.push(Problem {
            index,
            field: None,
            message: "the update changes nothing: give set, set_once, unset or tags".into(),
        });
    }
    ops
}

/// Builds `profile_changes` rows: [`ChangeBuilder::begin`] starts one change (one
/// update: every op of it shares a change id), [`ChangeBuilder::push`] adds its ops.
pub struct ChangeBuilder {
    environment: String,
    source: String,
    change_id: String,
    at: i64,
    env: StringBuilder,
    user: StringBuilder,
    id: StringBuilder,
    time: TimestampMicrosecondBuilder,
    kind: StringBuilder,
    name: StringBuilder,
    value: StringBuilder,
    src: StringBuilder,
    rows: usize,
}

impl ChangeBuilder {
    pub fn new(environment: &str, source: &str) -> ChangeBuilder {
        ChangeBuilder {
            environment: environment.to_string(),
            source: source.to_string(),
            change_id: String::new(),
            at: 0,
            env: StringBuilder::new(),
            user: StringBuilder::new(),
            id: StringBuilder::new(),
            time: TimestampMicrosecondBuilder::new().with_timezone("UTC"),
            kind: StringBuilder::new(),
            name: StringBuilder::new(),
            value: StringBuilder::new(),
            src: StringBuilder::new(),
            rows: 0,
        }
    }

    /// Starts a new change: the ops pushed next share its id and time.
    pub fn begin(&mut self) {
        let (id, at) = next_change_id();
        self.change_id = id;
        self.at = at;
    }

    pub fn push(&mut self, user_id: &str, op: &str, name: &str, value: Option<&str>) {
        self.env.append_value(&self.environment);
        self.user.append_value(user_id);
        self.id.append_value(&self.change_id);
        self.time.append_value(self.at);
        self.kind.append_value(op);
        self.name.append_value(name);
        self.value.append_option(value);
        self.src.append_value(&self.source);
        self.rows += 1;
    }

    /// Ops pushed since the last [`ChangeBuilder::finish`].
    pub fn len(&self) -> usize {
        self.rows
    }

    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The rows pushed so far as one batch; the builder starts empty again.
    pub fn finish(&mut self) -> Result<RecordBatch> {
        self.rows = 0;
        Ok(RecordBatch::try_new(
            schema(),
            vec![
                Arc::new(self.env.finish()),
                Arc::new(self.user.finish()),
                Arc::new(self.id.finish()),
                Arc::new(self.time.finish()),
                Arc::new(self.kind.finish()),
                Arc::new(self.name.finish()),
                Arc::new(self.value.finish()),
                Arc::new(self.src.finish()),
            ],
        )?)
    }
}

/// The rows of validated updates (each inner list is one update, one change id).
pub fn rows(environment: &str, updates: &[Vec<Op>], source: &str) -> Result<RecordBatch> {
    let mut b = ChangeBuilder::new(environment, source);
    for ops in updates {
        b.begin();
        for o in ops {
            b.push(&o.user_id, o.op, &o.name, o.value.as_deref());
        }
    }
    b.finish()
}

/// Loads `profile_changes`, creating it (empty) first if needed. Column statistics are
/// kept for `at` only: min/max of user ids or values in the Delta log would outlive an
/// erasure.
pub async fn open_or_create(store: &Store) -> Result<DeltaTable> {
    store
        .load_or_create_table(&TableSpec {
            name: TABLE,
            comment: Some("tidemark profile writes (users API, importer)"),
            schema: &schema(),
            partition_columns: &PARTITION_COLUMNS,
            stats_columns: "at",
        })
        .await
}

/// Appends `batches` to `profile_changes` in one Delta commit (all or nothing).
pub async fn append(store: &Store, batches: Vec<RecordBatch>) -> Result<DeltaTable> {
    let table = open_or_create(store).await?;
    Ok(table
        .write(batches)
        .with_save_mode(SaveMode::Append)
        .with_partition_columns(PARTITION_COLUMNS)
        .with_writer_properties(writer_properties(1))
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::users::change_id::change_id_floor;
    use crate::users::fields::FieldType;
    use chrono::Utc;
    use serde_json::json;

    fn fields() -> BTreeMap<String, FieldDef> {
        let mut m = BTreeMap::new();
        for (n, t) in [("plan", FieldType::Text), ("score", FieldType::Number)] {
            m.insert(
                n.to_string(),
                FieldDef {
                    name: n.into(),
                    field_type: t,
                    label: None,
                    created_at: Utc::now(),
                    since_change_id: change_id_floor(Utc::now()),
                },
            );
        }
        m
    }

    fn check(body: serde_json::Value) -> (Vec<Op>, Vec<(Option<String>, String)>) {
        let u: Update = serde_json::from_value(body).unwrap();
        let mut problems = Vec::new();
        let ops = validate(3, "ann", &u, &fields(), 512, &mut problems);
        (
            ops,
            problems
                .into_iter()
                .map(|p| {
                    assert_eq!(p.index, 3);
                    (p.field, p.message)
                })
                .collect(),
        )
    }

    #[test]
    fn a_valid_update_becomes_ops() {
        let (ops, problems) = check(json!({
            "set": {"plan": "gold"}, "set_once": {"score": 3},
            "unset": [], "tags": {"add": ["vip"], "remove": ["trial"]}
        }));
        assert!(problems.is_empty(), "{problems:?}");
        let got: Vec<_> = ops
            .iter()
            .map(|o| (o.op, o.name.as_str(), o.value.as_deref()))
            .collect();
        assert_eq!(
            got,
            vec![
                ("set", "plan", Some("\"gold\"")),
                ("set_once", "score", Some("3")),
                ("tag", "vip", None),
                ("untag", "trial", None),
            ]
        );
    }

    #[test]
    fn every_problem_names_its_field() {
        let (_, problems) = check(json!({
            "set": {"plan": 5, "nope": 1}, "unset": ["plan", "zzz"],
            "tags": {"add": ["", "x"], "remove": ["x"]}
        }));
        let fields: Vec<_> = problems.iter().map(|(f, _)| f.clone().unwrap()).collect();
        assert_eq!(
            fields,
            vec![
                "set.nope",
                "set.plan",
                "unset[0]",
                "unset[1]",
                "tags.add[0]",
                "tags.remove[0]"
            ]
        );
        assert!(problems[0].1.contains("unknown field 'nope'"));
        assert!(problems[1].1.contains("expected a string"));
        let (_, empty) = check(json!({}));
        assert!(empty[0].1.contains("changes nothing"));
    }

    #[test]
    fn change_ids_increase() {
        let ids: Vec<_> = (0..1000).map(|_| next_change_id().0).collect();
        assert!(ids.windows(2).all(|w| w[0] < w[1]));
        assert!(ids.iter().all(|i| i.len() == 32));
        assert!(change_id_floor(Utc::now()) < next_change_id().0);
    }
}
