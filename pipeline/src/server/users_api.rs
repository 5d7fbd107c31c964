//! `GET /v1/{env}/users/{id}`: a profile with its event stats (read or admin key).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::Value;

use super::AppState;
use super::error::ApiError;
use crate::auth::{Role, authorize};
use crate::jobs::views;

pub async fn get_user(
    State(state): State<Arc<AppState>>,
    Path((env, id)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let principal = state.keys.authenticate(auth).await?;
    authorize(&principal, &env, &[Role::Read, Role::Admin])?;
    let found = views::read_user(&state.store, &env, &id)
        .await
        .map_err(|e| {
            tracing::error!(error = %e, "profile read failed");
            ApiError::internal(format!("cannot read the profile: {e}"))
        })?;
    match found {
        Some(profile) => Ok(Json(profile)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no user with id '{id}' in environment '{env}' (profiles appear a few seconds after the user's first event)"
            ),
        )),
    }
}
