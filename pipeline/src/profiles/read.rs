//! Reading profiles: one user (`GET /v1/{env}/users/{id}`) and the filtered, paged list
//! (`GET /v1/{env}/users`).

use std::collections::BTreeMap;

use datafusion::prelude::{SessionContext, col, lit};
use serde_json::{Map, Value};

use crate::query::to_json_rows;
use crate::storage::Store;
use crate::users::fields::{FieldDef, Registry};
use crate::{Result, query};

/// Most recent events returned with `?events=N`.
pub const MAX_EVENTS: usize = 1000;

/// Turns the `fields` JSON text and `tags` of a `profiles` row into typed JSON:
/// `fields: {name: {type, value}}`, `tags: [..]`.
pub(super) fn shape(row: &mut Map<String, Value>, defs: &BTreeMap<String, FieldDef>) {
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
    let (ctx, narrowing) = query::profiles_session(store, environment).await?;
    narrowing
        .apply(&ctx, col("user_id").eq(lit(user_id)))
        .await?;
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
