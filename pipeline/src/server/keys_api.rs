//! Keys: `GET /v1/whoami` (any valid key: who am I), and the keys of one environment,
//! `GET/POST /v1/{env}/keys`, `DELETE /v1/{env}/keys/{id}` (admin key). A secret is
//! shown once, in the answer that creates it; lists never carry it (nor its hash).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::auth::{Admin, Anyone, Authorized};
use super::body::{BodyKind, JsonBody};
use super::error::ApiError;
use crate::auth::{KeyRecord, Role};

/// `GET /v1/whoami`: the key's id, environment and role, so a client (the console) that
/// was handed only a key knows where it may go.
pub async fn whoami(
    Authorized { principal: p, .. }: Authorized<Anyone>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(json!({
        "key_id": p.key_id,
        "environment": p.environment,
        "role": p.role,
    })))
}

/// A key as the API shows it: never the secret or its hash.
fn public(k: &KeyRecord) -> Value {
    json!({
        "id": k.id,
        "environment": k.environment,
        "role": k.role,
        "created_at": k.created_at,
        "revoked_at": k.revoked_at,
    })
}

/// `GET /v1/{env}/keys`: the environment's keys, revoked ones included, oldest first.
pub async fn list(
    State(state): State<Arc<AppState>>,
    Authorized { env, principal, .. }: Authorized<Admin>,
) -> Result<Json<Value>, ApiError> {
    let keys = crate::auth::KeyAdmin::new(state.store.docs())
        .keys()
        .await?;
    let items: Vec<Value> = keys
        .keys
        .iter()
        .filter(|k| k.environment == env)
        .map(|k| {
            let mut v = public(k);
            v["current"] = json!(k.id == principal.key_id);
            v
        })
        .collect();
    Ok(Json(json!({ "keys": items })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewKey {
    role: String,
}

impl BodyKind for NewKey {
    const BYTES: Option<usize> = Some(4 * 1024);
    const LIMIT_NAME: &'static str = "4 KiB for a key request";
    const EXPECTED: &'static str = "{\"role\": \"ingest\" | \"read\" | \"admin\"}";
}

/// `POST /v1/{env}/keys {"role": ..}`: 201 with the key (`key`, shown this once).
pub async fn create(
    State(state): State<Arc<AppState>>,
    Authorized { env, .. }: Authorized<Admin>,
    JsonBody(new, _): JsonBody<NewKey, NewKey>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let role: Role = new.role.parse().map_err(ApiError::from)?;
    let created = crate::auth::KeyAdmin::new(state.store.docs())
        .create_key(&env, role)
        .await?;
    // so the new key works at once on this node (others refresh within seconds)
    if let Err(e) = state.keys.refresh().await {
        tracing::warn!(error = %e, "cannot refresh API keys");
    }
    let mut out = public(&created.record);
    out["key"] = Value::String(created.token);
    Ok((StatusCode::CREATED, Json(out)))
}

/// `DELETE /v1/{env}/keys/{id}`: revokes the key (kept for the record); 404 for a key of
/// another environment, as for one that does not exist.
pub async fn revoke(
    State(state): State<Arc<AppState>>,
    _: Authorized<Admin>,
    Path((env, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let admin = crate::auth::KeyAdmin::new(state.store.docs());
    let not_found = || {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("id: no key with id '{id}' in environment '{env}'"),
        )
    };
    let keys = admin.keys().await?;
    if !keys.keys.iter().any(|k| k.id == id && k.environment == env) {
        return Err(not_found());
    }
    let record = admin.revoke_key(&id).await?;
    if let Err(e) = state.keys.refresh().await {
        tracing::warn!(error = %e, "cannot refresh API keys");
    }
    Ok(Json(json!({ "revoked": public(&record) })))
}
