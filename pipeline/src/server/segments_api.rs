//! Segments: `POST/GET /v1/{env}/segments`, `GET/PUT/DELETE /v1/{env}/segments/{id}`,
//! `POST /v1/{env}/segments:preview` (admin to write, read or admin to read).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::AppState;
use super::auth::{Admin, Authorized, Reader};
use super::body::{BodyKind, JsonBody};
use super::error::{ApiError, rejected};
use crate::problem::Subject;
use crate::segments::store::{Segments, Stored};
use crate::segments::{compile, def, preview};

/// Sample ids a preview returns.
const SAMPLE: usize = 20;

/// A segment definition.
pub struct Definition;

impl BodyKind for Definition {
    const BYTES: Option<usize> = Some(1024 * 1024);
    const LIMIT_NAME: &'static str = "1 MiB for a segment";
    const EXPECTED: &'static str = "a JSON segment definition";
}

type DefinitionBody = JsonBody<Value, Definition>;

/// The compiled SQL and its bound values, for explain.
fn explain(segment: &def::Segment, env: &str) -> Value {
    let c = compile::compile(segment, env, chrono::Utc::now().timestamp_micros());
    json!({
        "sql": c.sql,
        "params": c.params.iter().map(|p| p.to_string()).collect::<Vec<_>>(),
    })
}

fn stored_json(id: &str, s: &Stored) -> Value {
    json!({
        "id": id,
        "version": s.version,
        "created_at": s.created_at,
        "updated_at": s.updated_at,
        "definition": s.definition,
    })
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    auth: Authorized<Admin>,
    JsonBody(doc, _): DefinitionBody,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let id = doc["id"].as_str().unwrap_or_default().to_string();
    let stored = Segments::new(state.store.clone())
        .put(&auth.env, doc, false)
        .await
        .map_err(rejected(Subject::Segment))?;
    state.segment_writes.notify_one();
    Ok((StatusCode::CREATED, Json(stored_json(&id, &stored))))
}

pub async fn update(
    State(state): State<Arc<AppState>>,
    _: Authorized<Admin>,
    Path((env, id)): Path<(String, String)>,
    JsonBody(mut doc, _): DefinitionBody,
) -> Result<Json<Value>, ApiError> {
    match doc.get("id").and_then(Value::as_str) {
        None => {
            if let Some(o) = doc.as_object_mut() {
                o.insert("id".into(), Value::String(id.clone()));
            }
        }
        Some(other) if other != id => {
            return Err(ApiError::bad_request(format!(
                "id: the body says '{other}' but the path says '{id}'"
            )));
        }
        Some(_) => {}
    }
    let stored = Segments::new(state.store.clone())
        .put(&env, doc, true)
        .await
        .map_err(rejected(Subject::Segment))?;
    state.segment_writes.notify_one();
    Ok(Json(stored_json(&id, &stored)))
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    auth: Authorized<Reader>,
) -> Result<Json<Value>, ApiError> {
    let all = Segments::new(state.store.clone()).list(&auth.env).await?;
    let ctx = crate::query::session(&state.store, Some(&auth.env)).await?;
    let counts = crate::segments::member_counts(&ctx).await?;
    let items: Vec<Value> = all
        .iter()
        .map(|(id, s)| {
            let mut v = stored_json(id, s);
            v["member_count"] = json!(counts.get(id).copied().unwrap_or(0));
            v
        })
        .collect();
    Ok(Json(json!({"segments": items})))
}

pub async fn get_one(
    State(state): State<Arc<AppState>>,
    _: Authorized<Reader>,
    Path((env, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let segments = Segments::new(state.store.clone());
    let stored = segments.get(&env, &id).await?;
    let mut out = stored_json(&id, &stored);
    // the fields may have changed since the definition was stored
    match segments.validate(&env, &stored.definition).await? {
        Ok(seg) => out["explain"] = explain(&seg, &env),
        Err(p) => out["problems"] = json!(p),
    }
    Ok(Json(out))
}

pub async fn delete(
    State(state): State<Arc<AppState>>,
    _: Authorized<Admin>,
    Path((env, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let stored = Segments::new(state.store.clone()).delete(&env, &id).await?;
    state.segment_writes.notify_one();
    Ok(Json(json!({"deleted": stored_json(&id, &stored)})))
}

/// An unsaved definition's member count and first [`SAMPLE`] user ids (by id).
pub async fn preview_segment(
    State(state): State<Arc<AppState>>,
    Authorized { env, .. }: Authorized<Reader>,
    JsonBody(mut doc, _): DefinitionBody,
) -> Result<Json<Value>, ApiError> {
    if let Some(o) = doc.as_object_mut() {
        o.entry("id").or_insert_with(|| json!("preview"));
        o.entry("name").or_insert_with(|| json!("preview"));
    }
    let segment = match Segments::new(state.store.clone())
        .validate(&env, &doc)
        .await?
    {
        Ok(s) => s,
        Err(p) => return Err(ApiError::problems(Subject::Segment, p, 0)),
    };
    let compiled = compile::compile(&segment, &env, chrono::Utc::now().timestamp_micros());
    let ctx = crate::query::session(&state.store, Some(&env)).await?;
    let (count, sample) = preview(&ctx, &compiled, SAMPLE).await?;
    Ok(Json(
        json!({"count": count, "sample": sample, "explain": explain(&segment, &env)}),
    ))
}

/// `GET /v1/{env}/segments/{id}/members?limit=&cursor=` (read or admin key).
pub async fn members(
    State(state): State<Arc<AppState>>,
    _: Authorized<Reader>,
    Path((env, id)): Path<(String, String)>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Json<Value>, ApiError> {
    Segments::new(state.store.clone()).get(&env, &id).await?;
    let (mut limit, mut cursor) = (100usize, None);
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "limit" => {
                limit = v
                    .parse()
                    .ok()
                    .filter(|n| (1..=1000).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "limit: '{v}' must be a whole number from 1 to 1000"
                        ))
                    })?
            }
            "cursor" => cursor = Some(v.into_owned()),
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter '{other}'; known: limit, cursor"
                )));
            }
        }
    }
    let page = crate::segments::members(&state.store, &env, &id, limit, cursor.as_deref()).await?;
    Ok(Json(json!(page)))
}
