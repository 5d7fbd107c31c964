//! The HTTP API.
//!
//! - [`error`]: JSON error bodies and their status codes.
//! - [`ingest_api`]: `POST /v1/{env}/events`.
//! - [`users_api`]: `GET /v1/{env}/users/{id}`.
//! - [`ops`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`node`]: starting a node: recovery, background tasks, graceful shutdown.

pub mod error;
pub mod ingest_api;
pub mod node;
pub mod ops;
pub mod users_api;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::routing::{get, post};
use tokio::sync::OnceCell;

use crate::auth::KeyCache;
use crate::config::Limits;
use crate::ingest::Ingestor;
use crate::metrics::Metrics;
use crate::storage::Store;

/// Shared by every request handler.
pub struct AppState {
    pub store: Store,
    pub keys: Arc<KeyCache>,
    /// Set once recovery has finished.
    pub ingestor: OnceCell<Arc<Ingestor>>,
    pub metrics: Arc<Metrics>,
    pub limits: Limits,
    pub shutting_down: AtomicBool,
}

pub fn router(state: Arc<AppState>) -> Router {
    // Bodies are read with our own limit (for a clear 413); disable axum's default.
    Router::new()
        .route("/v1/{env}/events", post(ingest_api::post_events))
        .route("/v1/{env}/users/{id}", get(users_api::get_user))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}
