//! The field registry: `POST/GET /v1/{env}/fields`, `DELETE /v1/{env}/fields/{name}`
//! (admin key).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde::Deserialize;
use serde_json::{Value, json};

use super::AppState;
use super::auth::{Admin, Authorized, Reader};
use super::body::{BodyKind, JsonBody};
use super::error::ApiError;
use crate::users::fields::{FieldType, Registry};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewField {
    name: String,
    #[serde(rename = "type")]
    field_type: String,
    #[serde(default)]
    label: Option<String>,
}

impl BodyKind for NewField {
    const BYTES: Option<usize> = Some(64 * 1024);
    const LIMIT_NAME: &'static str = "64 KiB for a field";
    const EXPECTED: &'static str = "{\"name\": .., \"type\": .., \"label\"?: ..}";
}

pub async fn post_field(
    State(state): State<Arc<AppState>>,
    Authorized { env, .. }: Authorized<Admin>,
    JsonBody(new, _): JsonBody<NewField, NewField>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
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
    auth: Authorized<Reader>,
) -> Result<Json<Value>, ApiError> {
    let fields = Registry::new(state.store.clone()).list(&auth.env).await?;
    Ok(Json(
        json!({"fields": fields.into_values().collect::<Vec<_>>()}),
    ))
}

pub async fn delete_field(
    State(state): State<Arc<AppState>>,
    _: Authorized<Admin>,
    Path((env, name)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    let def = Registry::new(state.store.clone())
        .delete(&env, &name)
        .await?;
    Ok(Json(json!({"deleted": def})))
}
