//! Webhook subscriptions (admin key): `POST/GET /v1/{env}/webhooks`,
//! `GET/PATCH/DELETE /v1/{env}/webhooks/{id}`, `POST …/{id}/pause|resume|test|recover|
//! rotate-secret`, `GET …/{id}/deliveries`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::AppState;
use super::auth::{Admin, Authorized};
use super::body::{BodyKind, JsonBody};
use super::error::{ApiError, rejected};
use crate::problem::Subject;
use crate::webhooks::subscription::Subscriptions;
use crate::webhooks::{self, follow::Follower};

/// A subscription or the options of an action on one.
pub struct Request;

impl BodyKind for Request {
    const BYTES: Option<usize> = Some(64 * 1024);
    const LIMIT_NAME: &'static str = "64 KiB for a webhook request";
    const EXPECTED: &'static str = "a JSON object";
}

/// The options of `rotate-secret`, which may be left out.
pub struct Options;

impl BodyKind for Options {
    const BYTES: Option<usize> = Request::BYTES;
    const LIMIT_NAME: &'static str = Request::LIMIT_NAME;
    const EXPECTED: &'static str = Request::EXPECTED;
    const EMPTY_IS_OBJECT: bool = true;
}

/// Every webhook endpoint is for admin keys; the path is `{env}/webhooks/{id}`.
type OneWebhook = (Authorized<Admin>, Path<(String, String)>);

fn subs(state: &AppState) -> Subscriptions {
    Subscriptions::new(state.store.clone())
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    Authorized { env, .. }: Authorized<Admin>,
    JsonBody(input, _): JsonBody<Value, Request>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let ctx = &state.webhooks;
    let key = ctx.key()?;
    let start = Follower::new(state.store.clone())?.head(-1).await?;
    let (sub, secret) = subs(&state)
        .create(&env, &input, key, start, &|u| ctx.check_url(u))
        .await
        .map_err(rejected(Subject::Webhook))?;
    let mut out = sub.public();
    out["secret"] = Value::String(secret.expose());
    Ok((StatusCode::CREATED, Json(out)))
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    auth: Authorized<Admin>,
) -> Result<Json<Value>, ApiError> {
    let all = subs(&state).list(&auth.env).await?;
    let mut items = Vec::with_capacity(all.len());
    for sub in all.values() {
        items.push(with_status(&state, &auth.env, sub).await?);
    }
    Ok(Json(json!({ "webhooks": items })))
}

pub async fn get_one(
    State(state): State<Arc<AppState>>,
    (_, Path((env, id))): OneWebhook,
) -> Result<Json<Value>, ApiError> {
    let sub = subs(&state).get(&env, &id).await?;
    Ok(Json(with_status(&state, &env, &sub).await?))
}

/// The public subscription with its delivery `status` ([`webhooks::status`]).
async fn with_status(
    state: &AppState,
    env: &str,
    sub: &crate::webhooks::subscription::Subscription,
) -> Result<Value, ApiError> {
    let mut out = sub.public();
    out["status"] = webhooks::status(&state.store, env, sub).await?;
    Ok(out)
}

pub async fn update(
    State(state): State<Arc<AppState>>,
    (_, Path((env, id))): OneWebhook,
    JsonBody(input, _): JsonBody<Value, Request>,
) -> Result<Json<Value>, ApiError> {
    let sub = subs(&state)
        .update(&env, &id, &input, &state.webhooks)
        .await
        .map_err(rejected(Subject::Webhook))?;
    Ok(Json(sub.public()))
}

pub async fn test(
    State(state): State<Arc<AppState>>,
    (_, Path((env, id))): OneWebhook,
) -> Result<Json<Value>, ApiError> {
    let sub = subs(&state).get(&env, &id).await?;
    Ok(Json(
        webhooks::send_test(&state.webhooks, &env, &sub).await?,
    ))
}

pub async fn recover(
    State(state): State<Arc<AppState>>,
    (_, Path((env, id))): OneWebhook,
    JsonBody(input, _): JsonBody<Value, Request>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let since = parse_since(input.get("since"))?;
    let sub = subs(&state)
        .request_recover(&env, &id, since)
        .await
        .map_err(rejected(Subject::Webhook))?;
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
    (_, Path((env, id))): OneWebhook,
    JsonBody(input, _): JsonBody<Value, Options>,
) -> Result<Json<Value>, ApiError> {
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
        .await
        .map_err(rejected(Subject::Webhook))?;
    let mut out = sub.public();
    out["secret"] = Value::String(new.expose());
    Ok(Json(out))
}

pub async fn deliveries(
    State(state): State<Arc<AppState>>,
    (_, Path((env, id))): OneWebhook,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
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
        return Err(ApiError::bad_request(format!(
            "status: '{s}' is not one of delivered, retrying, failed, gone"
        )));
    }
    let rows = webhooks::log::recent(&state.store, &env, &id, status, limit).await?;
    Ok(Json(json!({ "deliveries": rows })))
}
