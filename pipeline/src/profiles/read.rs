//! Reading profiles: one user (`GET /v1/{env}/users/{id}`) and the filtered, paged list
//! (`GET /v1/{env}/users`).

use std::collections::BTreeMap;

use datafusion::prelude::{SessionContext, col, lit};
use serde_json::{Map, Value};

use crate::query::to_json_rows;
use crate::storage::Store;
use crate::users::fields::{FieldDef, FieldType, Registry};
use crate::{Result, query};

/// Most recent events returned with `?events=N`.
pub const MAX_EVENTS: usize = 1000;

/// Turns the `fields` JSON text and `tags` of a `profiles` row into typed JSON:
/// `fields: {name: {type, value}}`, `tags: [..]`.
fn shape(row: &mut Map<String, Value>, defs: &BTreeMap<String, FieldDef>) {
    let values: Map<String, Value> = row
        .get("fields")
        .and_then(Value::as_str)
        .and_then(|t| serde_json::from_str(t).ok())
        .unwrap_or_default();
    let typed: Map<String, Value> = values
        .into_iter()
        .filter_map(|(name, value)| {
            let def = defs.get(&name)?;
            let mut f = Map::new();
            f.insert("type".into(), Value::String(def.field_type.as_str().into()));
            f.insert("value".into(), value);
            if let Some(l) = &def.label {
                f.insert("label".into(), Value::String(l.clone()));
            }
            Some((name, Value::Object(f)))
        })
        .collect();
    row.insert("fields".into(), Value::Object(typed));
    if !row.get("tags").is_some_and(Value::is_array) {
        row.insert("tags".into(), Value::Array(Vec::new()));
    }
    row.remove("environment");
}

/// The profile of `user_id` in `environment` as JSON: activity, `tags`, typed `fields`,
/// `event_stats` (newest first) and, with `events > 0`, the last `events` events.
/// `None` when no event or write has named the user.
pub async fn user(
    store: &Store,
    environment: &str,
    user_id: &str,
    events: usize,
) -> Result<Option<Value>> {
    let ctx = query::session(store, Some(environment)).await?;
    let rows = to_json_rows(
        &ctx.table("profiles")
            .await?
            .filter(col("user_id").eq(lit(user_id)))?
            .collect()
            .await?,
    )?;
    let Some(Value::Object(mut profile)) = rows.into_iter().next() else {
        return Ok(None);
    };
    let defs = Registry::new(store.clone()).list(environment).await?;
    shape(&mut profile, &defs);
    let stats = ctx
        .table("event_stats")
        .await?
        .filter(col("user_id").eq(lit(user_id)))?
        .sort(vec![
            col("last_at").sort(false, true),
            col("event_name").sort(true, true),
        ])?
        .drop_columns(&["environment", "user_id"])?
        .collect()
        .await?;
    profile.insert("event_stats".into(), Value::Array(to_json_rows(&stats)?));
    let memberships = crate::segments::of_user(&ctx, user_id).await?;
    let ids = memberships
        .iter()
        .filter_map(|m| m["segment_id"].as_str())
        .map(|id| Value::String(id.to_string()))
        .collect();
    profile.insert("segments".into(), Value::Array(ids));
    profile.insert("segment_memberships".into(), Value::Array(memberships));
    if events > 0 {
        profile.insert(
            "events".into(),
            Value::Array(last_events(&ctx, user_id, events.min(MAX_EVENTS)).await?),
        );
    }
    Ok(Some(Value::Object(profile)))
}

async fn last_events(ctx: &SessionContext, user_id: &str, n: usize) -> Result<Vec<Value>> {
    if !ctx.table_exist("events")? {
        return Ok(Vec::new());
    }
    let batches = ctx
        .table("events")
        .await?
        .filter(col("user_id").eq(lit(user_id)))?
        .sort(vec![
            col("received_at").sort(false, true),
            col("event_id").sort(false, true),
        ])?
        .limit(0, Some(n))?
        .drop_columns(&["environment", "user_id", "received_date"])?
        .collect()
        .await?;
    let mut rows = to_json_rows(&batches)?;
    for r in &mut rows {
        // properties are stored as JSON text; hand them back as JSON
        if let Some(Value::String(p)) = r.get("properties")
            && let Ok(v) = serde_json::from_str::<Value>(p)
        {
            r["properties"] = v;
        }
    }
    Ok(rows)
}

/// Most profiles in one page of the list.
pub const MAX_LIMIT: usize = 1000;

/// Filters and paging of `GET /v1/{env}/users`.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Every tag must be present.
    pub tags: Vec<String>,
    /// `field.NAME=VALUE`: the field equals the value (a list field contains it).
    pub fields: Vec<(String, String)>,
    /// The user id starts with this.
    pub prefix: Option<String>,
    /// A member of this segment (after its last evaluation).
    pub segment: Option<String>,
    /// Seen (last_seen_at) after this time.
    pub seen_after: Option<chrono::DateTime<chrono::Utc>>,
    /// Seen (last_seen_at) before this time.
    pub seen_before: Option<chrono::DateTime<chrono::Utc>>,
    pub limit: usize,
    /// From [`ListPage::next_cursor`].
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ListPage {
    pub users: Vec<Value>,
    /// Pass as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

fn encode_cursor(user_id: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(user_id.as_bytes())
}

fn decode_cursor(cursor: &str) -> Option<String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// One page of the profiles of `environment` matching `q`, ordered by user id (a stable
/// order: the cursor is the last id of the page).
pub async fn list(store: &Store, environment: &str, q: &ListQuery) -> Result<ListPage> {
    use crate::Error;
    use datafusion::common::ScalarValue;
    use datafusion::execution::FunctionRegistry;
    use datafusion::functions_nested::expr_fn::array_has;

    let defs = Registry::new(store.clone()).list(environment).await?;
    let ctx = query::session(store, Some(environment)).await?;
    let mut df = ctx.table("profiles").await?;
    for tag in &q.tags {
        df = df.filter(array_has(col("tags"), lit(tag.as_str())))?;
    }
    for (name, value) in &q.fields {
        let def = defs
            .get(name)
            .ok_or_else(|| Error::Invalid(format!("field.{name}: unknown field '{name}'")))?;
        let get = ctx
            .udf("json_get")?
            .call(vec![col("fields"), lit(name.as_str())]);
        let cond = if def.field_type == FieldType::List {
            ctx.udf("json_list_contains")?
                .call(vec![get, lit(value.as_str())])
        } else if def.field_type == FieldType::Number {
            // numerically: 3 and 3.0 are the same number
            let n: f64 = value
                .trim()
                .parse()
                .map_err(|_| Error::Invalid(format!("field.{name}: '{value}' is not a number")))?;
            datafusion::prelude::cast(get, arrow::datatypes::DataType::Float64).eq(lit(n))
        } else {
            let canonical = def
                .field_type
                .parse_text(value)
                .map_err(|e| Error::Invalid(format!("field.{name}: {e}")))?;
            get.eq(lit(canonical))
        };
        df = df.filter(cond)?;
    }
    let at = |t: chrono::DateTime<chrono::Utc>| {
        lit(ScalarValue::TimestampMicrosecond(
            Some(t.timestamp_micros()),
            Some("UTC".into()),
        ))
    };
    if let Some(t) = q.seen_after {
        df = df.filter(col("last_seen_at").gt(at(t)))?;
    }
    if let Some(t) = q.seen_before {
        df = df.filter(col("last_seen_at").lt(at(t)))?;
    }
    if let Some(p) = &q.prefix {
        df = df.filter(datafusion::functions::expr_fn::starts_with(
            col("user_id"),
            lit(p.as_str()),
        ))?;
    }
    if let Some(segment) = &q.segment {
        let members = crate::segments::job::MEMBERS;
        if !ctx.table_exist(members)? {
            return Ok(ListPage {
                users: Vec::new(),
                next_cursor: None,
            });
        }
        let ids = ctx
            .table(members)
            .await?
            .filter(col("segment_id").eq(lit(segment.as_str())))?
            .select_columns(&["user_id"])?
            .into_unoptimized_plan();
        df = df.filter(datafusion::prelude::in_subquery(
            col("user_id"),
            std::sync::Arc::new(ids),
        ))?;
    }
    if let Some(c) = &q.cursor {
        let after = decode_cursor(c)
            .ok_or_else(|| Error::Invalid("cursor: not a cursor this API returned".into()))?;
        df = df.filter(col("user_id").gt(lit(after)))?;
    }
    let limit = q.limit.clamp(1, MAX_LIMIT);
    let batches = df
        .sort(vec![col("user_id").sort(true, false)])?
        .limit(0, Some(limit + 1))?
        .collect()
        .await?;
    let mut users = to_json_rows(&batches)?;
    let more = users.len() > limit;
    users.truncate(limit);
    for u in &mut users {
        if let Value::Object(m) = u {
            shape(m, &defs);
        }
    }
    let next_cursor = more
        .then(|| {
            users
                .last()
                .and_then(|u| u["user_id"].as_str())
                .map(encode_cursor)
        })
        .flatten();
    Ok(ListPage { users, next_cursor })
}
