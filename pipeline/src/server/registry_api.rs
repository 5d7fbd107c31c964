//! The handlers every kind of config document shares (exports, webhooks; flows next):
//! `DELETE …/{id}`, `POST …/{id}/pause` and `…/resume` (admin key), over
//! [`Registry`](crate::storage::registry::Registry).

use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use serde_json::Value;

use super::auth::{Admin, Authorized};
use super::error::ApiError;
use super::{AppState, Input, Route};
use crate::storage::registry::{Kind, Pausable, Registry};

/// A kind the HTTP API shows.
pub trait Shown: Kind {
    /// The item as the API shows it (secrets never).
    fn public(&self) -> Value;
}

/// One item of the path's environment, by an admin key.
pub type One = (Authorized<Admin>, Path<(String, String)>);

/// The routes of a pausable kind under `one` (`/v1/{env}/<kind>/{id}`): `DELETE`,
/// `POST …/pause` and `POST …/resume`.
pub(super) fn routes<K: Pausable + Shown>(one: &str) -> Vec<Route> {
    vec![
        Route::delete(one, delete::<K>),
        Route::post(format!("{one}/pause"), Input::Nothing, pause::<K>),
        Route::post(format!("{one}/resume"), Input::Nothing, resume::<K>),
    ]
}

/// `DELETE …/{id}`.
pub async fn delete<K: Kind>(
    State(state): State<Arc<AppState>>,
    (_, Path((env, id))): One,
) -> Result<StatusCode, ApiError> {
    Registry::<K>::new(state.store.clone())
        .delete(&env, &id)
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST …/{id}/pause`.
pub async fn pause<K: Pausable + Shown>(
    State(state): State<Arc<AppState>>,
    (_, Path((env, id))): One,
) -> Result<Json<Value>, ApiError> {
    set_paused::<K>(&state, &env, &id, true).await
}

/// `POST …/{id}/resume`.
pub async fn resume<K: Pausable + Shown>(
    State(state): State<Arc<AppState>>,
    (_, Path((env, id))): One,
) -> Result<Json<Value>, ApiError> {
    set_paused::<K>(&state, &env, &id, false).await
}

async fn set_paused<K: Pausable + Shown>(
    state: &AppState,
    env: &str,
    id: &str,
    paused: bool,
) -> Result<Json<Value>, ApiError> {
    let item = Registry::<K>::new(state.store.clone())
        .set_paused(env, id, paused, None)
        .await?;
    Ok(Json(item.public()))
}

impl Shown for crate::exports::def::Export {
    fn public(&self) -> Value {
        self.public()
    }
}

impl Shown for crate::webhooks::subscription::Subscription {
    fn public(&self) -> Value {
        self.public()
    }
}
