//! The HTTP API.
//!
//! - [`error`]: JSON error bodies and their status codes; the one 400 body for a list of
//!   problems.
//! - [`auth`]: the `Authorized<Role>` extractor (a handler's role is in its signature).
//! - [`body`]: size-limited request bodies and the `JsonBody` extractor.
//! - [`ingest_api`]: `POST /v1/{env}/events`.
//! - [`compat_api`]: the Segment / RudderStack and PostHog ingest APIs (`/v1/batch`, `/batch/`, …).
//! - [`users_api`]: profile reads and writes under `/v1/{env}/users`.
//! - [`fields_api`]: the custom field registry, `/v1/{env}/fields`.
//! - [`segments_api`]: segment definitions and previews, `/v1/{env}/segments`.
//! - [`webhooks_api`]: webhook subscriptions, `/v1/{env}/webhooks`.
//! - [`exports_api`]: the batched pull API and scheduled exports, `/v1/{env}/exports`.
//! - [`stream_api`]: the live event stream (SSE), `GET /v1/{env}/events/stream`.
//! - [`keys_api`]: `GET /v1/whoami` and the keys of an environment, `/v1/{env}/keys`.
//! - [`query_api`]: SQL for data teams, `POST /v1/{env}/query`.
//! - [`flight`]: the Arrow Flight SQL door (`query.flight_listen`).
//! - [`pg`]: the Postgres wire protocol door (`query.pg_listen`).
//! - [`console`]: the web console's static files, `/console/`.
//! - [`ops`]: `/healthz`, `/readyz`, `/metrics`.
//! - [`node`]: starting a node: recovery, background tasks, graceful shutdown.

pub mod auth;
pub mod body;
pub mod compat_api;
pub mod console;
pub mod error;
pub mod exports_api;
pub mod fields_api;
pub mod flight;
pub mod ingest_api;
pub mod keys_api;
pub mod node;
pub mod ops;
pub mod pg;
pub mod query_api;
pub mod segments_api;
pub mod stream_api;
pub mod users_api;
pub mod webhooks_api;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::http::{HeaderMap, header};
use axum::routing::{delete, get, post};
use tokio::sync::OnceCell;

use crate::auth::{KeyCache, Principal, Role, authorize};
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
    /// The job runner's settings (erasure runs the jobs).
    pub job_options: crate::jobs::JobOptions,
    /// Notified after each profile write, so the jobs fold it in soon.
    pub profile_writes: Arc<tokio::sync::Notify>,
    /// Notified after each segment definition write, so the segments are evaluated at
    /// once rather than at the next `segments.interval`.
    pub segment_writes: Arc<tokio::sync::Notify>,
    /// Master key, HTTP client and settings of webhook subscriptions.
    pub webhooks: crate::webhooks::Context,
    pub exports: crate::exports::Context,
    /// Data-team queries (this door and the Postgres and Flight SQL ones).
    pub query: Arc<crate::query::Engine>,
}

impl AppState {
    /// Authenticates the request's key and checks it may act on `env` with one of `roles`.
    pub async fn authorize(
        &self,
        headers: &HeaderMap,
        env: &str,
        roles: &[Role],
    ) -> Result<Principal, error::ApiError> {
        let auth = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let principal = self.keys.authenticate(auth).await?;
        authorize(&principal, env, roles)?;
        Ok(principal)
    }
}

/// Every route. Bodies are read with our own limit (for a clear 413), so axum's default
/// limit is off.
pub fn router(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/{env}/events", post(ingest_api::post_events))
        .route("/v1/{env}/events/stream", get(stream_api::stream))
        .route("/v1/{env}/query", post(query_api::post_query))
        .route("/v1/whoami", get(keys_api::whoami))
        .route("/v1/{env}/keys", get(keys_api::list).post(keys_api::create))
        .route("/v1/{env}/keys/{id}", delete(keys_api::revoke))
        .merge(sdk_routes())
        .merge(users_routes())
        .merge(segments_routes())
        .merge(webhooks_routes())
        .merge(exports_routes())
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
        .route("/", get(console::to_console))
        .route("/console", get(console::to_console))
        .route("/console/", get(console::index))
        .route("/console/{*path}", get(console::file))
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::disable())
        .with_state(state)
}

type Routes = Router<Arc<AppState>>;

/// The ingest APIs of existing analytics SDKs (the key names the environment).
fn sdk_routes() -> Routes {
    use compat_api::*;
    let mut r = Router::new()
        .route("/v1/batch", post(segment_batch))
        .route("/v1/track", post(segment_track))
        .route("/v1/identify", post(segment_identify))
        .route("/v1/page", post(segment_page))
        .route("/v1/screen", post(segment_screen))
        .route("/v1/group", post(segment_group))
        .route("/v1/alias", post(segment_alias));
    for path in ["/batch", "/capture", "/e", "/i/v0/e", "/track"] {
        r = r
            .route(path, post(posthog_capture))
            .route(&format!("{path}/"), post(posthog_capture));
    }
    r
}

/// Users, imports and the field registry.
fn users_routes() -> Routes {
    Router::new()
        .route(
            "/v1/{env}/users/{id}",
            get(users_api::get_user)
                .put(users_api::put_user)
                .delete(users_api::delete_user),
        )
        .route("/v1/{env}/users", get(users_api::list_users))
        .route("/v1/{env}/users:batch", post(users_api::post_batch))
        .route("/v1/{env}/imports", post(users_api::post_import))
        .route(
            "/v1/{env}/fields",
            get(fields_api::get_fields).post(fields_api::post_field),
        )
        .route("/v1/{env}/fields/{name}", delete(fields_api::delete_field))
}

fn segments_routes() -> Routes {
    Router::new()
        .route(
            "/v1/{env}/segments",
            get(segments_api::list).post(segments_api::create),
        )
        .route(
            "/v1/{env}/segments:preview",
            post(segments_api::preview_segment),
        )
        .route(
            "/v1/{env}/segments/{id}",
            get(segments_api::get_one)
                .put(segments_api::update)
                .delete(segments_api::delete),
        )
        .route(
            "/v1/{env}/segments/{id}/members",
            get(segments_api::members),
        )
}

fn webhooks_routes() -> Routes {
    let one = "/v1/{env}/webhooks/{id}";
    Router::new()
        .route(
            "/v1/{env}/webhooks",
            get(webhooks_api::list).post(webhooks_api::create),
        )
        .route(
            one,
            get(webhooks_api::get_one)
                .patch(webhooks_api::update)
                .delete(webhooks_api::delete),
        )
        .route(&format!("{one}/pause"), post(webhooks_api::pause))
        .route(&format!("{one}/resume"), post(webhooks_api::resume))
        .route(&format!("{one}/test"), post(webhooks_api::test))
        .route(&format!("{one}/recover"), post(webhooks_api::recover))
        .route(
            &format!("{one}/rotate-secret"),
            post(webhooks_api::rotate_secret),
        )
        .route(&format!("{one}/deliveries"), get(webhooks_api::deliveries))
}

/// The batched pull API and scheduled exports.
fn exports_routes() -> Routes {
    let one = "/v1/{env}/exports/{id}";
    Router::new()
        .route(
            "/v1/{env}/analytics/batched",
            get(exports_api::batched_list),
        )
        .route(
            "/v1/{env}/analytics/batched/{file}",
            get(exports_api::batched_download),
        )
        .route(
            "/v1/{env}/exports",
            get(exports_api::list).post(exports_api::create),
        )
        .route(one, get(exports_api::get_one).delete(exports_api::delete))
        .route(&format!("{one}/status"), get(exports_api::status))
        .route(&format!("{one}/pause"), post(exports_api::pause))
        .route(&format!("{one}/resume"), post(exports_api::resume))
        .route(&format!("{one}/run"), post(exports_api::run))
        .route(&format!("{one}/backfill"), post(exports_api::backfill))
}
