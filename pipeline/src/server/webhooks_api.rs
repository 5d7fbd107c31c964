//! Webhook subscriptions (admin key): `POST/GET /v1/{env}/webhooks`,
//! `GET/PATCH/DELETE /v1/{env}/webhooks/{id}`, `POST …/{id}/pause|resume|test|recover|
//! rotate-secret`, `GET …/{id}/deliveries`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::ingest_api::read_body;
use crate::auth::Role;
use crate::ingest::event::Problem;
use crate::webhooks::subscription::{self, Subscriptions, WriteError};
use crate::webhooks::{self, follow::Follower};

fn invalid(problems: Vec<Problem>) -> ApiError {
    let total = problems.len();
    let mut e = ApiError::invalid(
        format!("the webhook subscription has {total} problem(s)"),
        problems,
        total,
    );
    e.body.error = "invalid_webhook";
    e
}

impl From<WriteError> for ApiError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Invalid(p) => invalid(p),
            WriteError::Other(e) => e.into(),
        }
    }
}

async fn json_body(headers: &HeaderMap, body: Body, empty_ok: bool) -> Result<Value, ApiError> {
    let bytes = read_body(headers, body, 64 * 1024, "64 KiB for a webhook request").await?;
    if empty_ok && bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(json!({}));
    }
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::bad_request(format!("body must be a JSON object: {e}")))
}

fn subs(state: &AppState) -> Subscriptions {
    Subscriptions::new(state.store.clone())
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    Path(env): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    state.authorize(&headers, &env, &[Role::Admin]).await?;
    let input = json_body(&headers, body, false).await?;
    let ctx = &state.webhooks;
    let key = ctx.key()?;
    let start = Follower::new(state.store.clone())?.head(-1).await?;
    let (sub, secret) = subs(&state)
        .create(&env, &input, key, start, &|u| ctx.check_url(u))
        .await?;
    let mut out = sub.public();
    out["secret"] = Value::String(secret.expose());
    Ok((StatusCode::CREATED, Json(out)))
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    Path(env): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.authorize(&headers, &env, &[Role::Admin]).await?;
    let all = subs(&state).list(&env).await?;
    Ok(Json(json!({
        "webhooks": all.values().map(|s| s.public()).collect::<Vec<_>>()
    })))
}

pub async fn get_one(
    State(state): State<Arc<AppState>>,
    Path((env, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.authorize(&headers, &env, &[Role::Admin]).await?;
    Ok(Json(subs(&state).get(&env, &id).await?.public()))
}

pub async fn update(
    State(state): State<Arc<AppState>>,
    Path((env, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    state.authorize(&headers, &env, &[Role::Admin]).await?;
    let input = json_body(&headers, body, false).await?;
    let ctx = &state.webhooks;
    let sub = subs(&state)
        .modify(&env, &id, |sub| {
            subscription::apply(sub, &input, false, &|u| ctx.check_url(u))
                .map(|_| ())
                .map_err(WriteError::Invalid)
        })
        .await?;
    Ok(Json(sub.public()))
}

pub async fn delete(
    State(state): State<Arc<AppState>>,
    Path((env, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<StatusCode, ApiError> {
    state.authorize(&headers, &env, &[Role::Admin]).await?;
    subs(&state).delete(&env, &id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST …/{id}/pause` and `…/resume`.
pub async fn set_paused(
    state: Arc<AppState>,
    env: String,
    id: String,
    headers: HeaderMap,
    paused: bool,
) -> Result<Json<Value>, ApiError> {
    state.authorize(&headers, &env, &[Role::Admin]).await?;
    let sub = subs(&state).set_paused(&env, &id, paused).await?;
    Ok(Json(sub.public()))
}

pub async fn pause(
    State(state): State<Arc<AppState>>,
    Path((env, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    set_paused(state, env, id, headers, true).await
}

pub async fn resume(
    State(state): State<Arc<AppState>>,
    Path((env, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    set_paused(state, env, id, headers, false).await
}

pub async fn test(
    State(state): State<Arc<AppState>>,
    Path((env, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.authorize(&headers, &env, &[Role::Admin]).await?;
    let sub = subs(&state).get(&env, &id).await?;
    Ok(Json(
        webhooks::send_test(&state.webhooks, &env, &sub).await?,
    ))
}

pub async fn recover(
    State(state): State<Arc<AppState>>,
    Path((env, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    state.authorize(&headers, &env, &[Role::Admin]).await?;
    let input = json_body(&headers, body, false).await?;
    let since = parse_since(input.get("since"))?;
    let sub = subs(&state).request_recover(&env, &id, since).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": sub.id, "recover_since": since})),
    ))
}

/// `since`: RFC 3339, or a duration ago (`2h`, `3d`).
pub fn parse_since(v: Option<&Value>) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
    let Some(text) = v.and_then(Value::as_str) else {
        return Err(ApiError::bad_request(
            "since: is required (RFC 3339 time, or a duration ago such as 24h)",
        ));
    };
    crate::webhooks::parse_time(text).map_err(|m| ApiError::bad_request(format!("since: {m}")))
}

pub async fn rotate_secret(
    State(state): State<Arc<AppState>>,
    Path((env, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    state.authorize(&headers, &env, &[Role::Admin]).await?;
    let input = json_body(&headers, body, true).await?;
    let ctx = &state.webhooks;
    let key = ctx.key()?;
    let new = match input.get("secret").and_then(Value::as_str) {
        Some(s) => tidemark_sinks::sign::Secret::parse(s)
            .map_err(|e| ApiError::bad_request(e.to_string()))?,
        None if input.get("secret").is_some() => {
            return Err(ApiError::bad_request(
                "secret: must be a string whsec_<base64>",
            ));
        }
        None => tidemark_sinks::sign::Secret::generate(),
    };
    let grace = match input
        .get("grace")
        .map(|g| g.as_str().map(humantime::parse_duration))
    {
        None => ctx.config.rotation_grace,
        Some(Some(Ok(d))) => d,
        _ => {
            return Err(ApiError::bad_request(
                "grace: must be a duration such as 24h or 0s",
            ));
        }
    };
    let grace =
        chrono::Duration::from_std(grace).map_err(|_| ApiError::bad_request("grace: too long"))?;
    let sub = subs(&state)
        .rotate_secret(&env, &id, key, &new, grace)
        .await?;
    let mut out = sub.public();
    out["secret"] = Value::String(new.expose());
    Ok(Json(out))
}

pub async fn deliveries(
    State(state): State<Arc<AppState>>,
    Path((env, id)): Path<(String, String)>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.authorize(&headers, &env, &[Role::Admin]).await?;
    subs(&state).get(&env, &id).await?;
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => 100,
        Some(Ok(n)) if (1..=1000).contains(&n) => n,
        _ => {
            return Err(ApiError::bad_request(
                "limit: must be an integer from 1 to 1000",
            ));
        }
    };
    let status = q.get("status").map(String::as_str);
    if let Some(s) = status
        && !["delivered", "retrying", "failed", "gone"].contains(&s)
    {
        return Err(ApiError::bad_request(
            "status: must be one of delivered, retrying, failed, gone",
        ));
    }
    let rows = webhooks::log::recent(&state.store, &env, &id, status, limit).await?;
    Ok(Json(json!({ "deliveries": rows })))
}
