//! The field registry: `POST/GET /v1/{env}/fields`, `DELETE /v1/{env}/fields/{name}`
//! (admin key).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use super::ingest_api::read_body;
use crate::auth::Role;
use crate::users::fields::{FieldType, Registry};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NewField {
    name: String,
    #[serde(rename = "type")]
    field_type: String,
    #[serde(default)]
    label: Option<String>,
}

pub async fn post_field(
    State(state): State<Arc<AppState>>,
    Path(env): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    state.authorize(&headers, &env, &[Role::Admin]).await?;
    let body = read_body(&headers, body, 64 * 1024, "64 KiB for a field").await?;
    let new: NewField = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "body must be {{\"name\": .., \"type\": .., \"label\"?: ..}}: {e}"
        ))
    })?;
    let Some(field_type) = FieldType::parse(&new.field_type) else {
        return Err(ApiError::bad_request(format!(
            "type: '{}' is not one of text, number, boolean, datetime, list",
            new.field_type
        )));
    };
    let def = Registry::new(state.store.clone())
        .add(&env, &new.name, field_type, new.label)
        .await?;
    Ok((StatusCode::CREATED, Json(json!(def))))
}

pub async fn get_fields(
    State(state): State<Arc<AppState>>,
    Path(env): Path<String>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state
        .authorize(&headers, &env, &[Role::Admin, Role::Read])
        .await?;
    let fields = Registry::new(state.store.clone()).list(&env).await?;
    Ok(Json(
        json!({"fields": fields.into_values().collect::<Vec<_>>()}),
    ))
}

pub async fn delete_field(
    State(state): State<Arc<AppState>>,
    Path((env, name)): Path<(String, String)>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    state.authorize(&headers, &env, &[Role::Admin]).await?;
    let def = Registry::new(state.store.clone())
        .delete(&env, &name)
        .await?;
    Ok(Json(json!({"deleted": def})))
}
