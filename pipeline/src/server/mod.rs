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
//! - [`flows_api`]: flows, their starts, previews and runs, `/v1/{env}/flows`.
//! - [`registry_api`]: delete, pause and resume of every kind of config document.
//! - [`exports_api`]: the batched pull API and scheduled exports, `/v1/{env}/exports`.
//! - [`stream_api`]: the live event stream (SSE), `GET /v1/{env}/events/stream`.
//! - [`keys_api`]: `GET /v1/whoami` and the keys of an environment, `/v1/{env}/keys`.
//! - [`query_api`]: SQL for data teams, `POST /v1/{env}/query`.
//! - [`flight`]: the Arrow Flight SQL door (`query.flight_listen`).
//! - [`pg`]: the Postgres wire protocol door (`query.pg_listen`).
//! - [`console`]: the web console's static files, `/console/`.
//! - [`ops`]: `/healthz`, `/readyz`, `/metrics`.

pub mod auth;
pub mod body;
pub mod compat_api;
pub mod console;
pub mod error;
pub mod exports_api;
pub mod fields_api;
pub mod flight;
pub mod flows_api;
pub mod ingest_api;
pub mod keys_api;
pub mod ops;
pub mod pg;
pub mod query_api;
pub mod registry_api;
pub mod segments_api;
pub mod stream_api;
pub mod users_api;
pub mod webhooks_api;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use tokio::sync::OnceCell;

use crate::auth::KeyCache;
use crate::config::Limits;
use crate::exports::def::Export;
use crate::ingest::Ingestor;
use crate::metrics::Metrics;
use crate::storage::Store;
use crate::webhooks::subscription::Subscription;

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
    /// The ingestor, while the node accepts writes: a 503 while it is starting (replaying
    /// the write-ahead log) or shutting down.
    pub fn accepting(&self) -> Result<&Arc<Ingestor>, error::ApiError> {
        if self
            .shutting_down
            .load(std::sync::atomic::Ordering::Acquire)
        {
            return Err(error::ApiError::unavailable(
                "tidemark is shutting down; retry",
            ));
        }
        self.ingestor.get().ok_or_else(|| {
            error::ApiError::unavailable(
                "tidemark is starting (replaying the write-ahead log); retry shortly",
            )
        })
    }
}

/// What a route reads from its request body (every body may also come gzip-encoded).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Input {
    /// Nothing: the body is not read.
    Nothing,
    /// One JSON document ([`body::JsonBody`]).
    Json,
    /// Events: a JSON array, or NDJSON with `Content-Type: application/x-ndjson`.
    Events,
    /// An analytics SDK's JSON (Segment / RudderStack or PostHog).
    Sdk,
    /// CSV (the profile importer).
    Csv,
}

/// One row of the route table: what [`router`] serves, and what tests walk (every door
/// that reads a body is sent hostile bodies, so a new route cannot be left out).
pub struct Route {
    pub method: http::Method,
    pub path: String,
    pub input: Input,
    handler: axum::routing::MethodRouter<Arc<AppState>>,
}

impl Route {
    fn new<H, T>(method: http::Method, path: impl Into<String>, input: Input, handler: H) -> Route
    where
        H: axum::handler::Handler<T, Arc<AppState>>,
        T: 'static,
    {
        let filter = axum::routing::MethodFilter::try_from(method.clone())
            .unwrap_or(axum::routing::MethodFilter::GET);
        Route {
            method,
            path: path.into(),
            input,
            handler: axum::routing::on(filter, handler),
        }
    }

    fn get<H: axum::handler::Handler<T, Arc<AppState>>, T: 'static>(
        path: impl Into<String>,
        handler: H,
    ) -> Route {
        Route::new(http::Method::GET, path, Input::Nothing, handler)
    }

    fn post<H: axum::handler::Handler<T, Arc<AppState>>, T: 'static>(
        path: impl Into<String>,
        input: Input,
        handler: H,
    ) -> Route {
        Route::new(http::Method::POST, path, input, handler)
    }

    fn delete<H: axum::handler::Handler<T, Arc<AppState>>, T: 'static>(
        path: impl Into<String>,
        handler: H,
    ) -> Route {
        Route::new(http::Method::DELETE, path, Input::Nothing, handler)
    }
}

/// Every route of the HTTP door.
pub fn routes() -> Vec<Route> {
    use Input::*;
    let mut all = vec![
        Route::post("/v1/{env}/events", Events, ingest_api::post_events),
        Route::get("/v1/{env}/events/stream", stream_api::stream),
        Route::post("/v1/{env}/query", Json, query_api::post_query),
        Route::get("/v1/whoami", keys_api::whoami),
        Route::get("/v1/{env}/keys", keys_api::list),
        Route::post("/v1/{env}/keys", Json, keys_api::create),
        Route::delete("/v1/{env}/keys/{id}", keys_api::revoke),
    ];
    all.extend(sdk_routes());
    all.extend(users_routes());
    all.extend(segments_routes());
    all.extend(webhooks_routes());
    all.extend(exports_routes());
    all.extend(flows_routes());
    all.extend([
        Route::get("/healthz", ops::healthz),
        Route::get("/readyz", ops::readyz),
        Route::get("/metrics", ops::metrics),
        Route::get("/", console::to_console),
        Route::get("/console", console::to_console),
        Route::get("/console/", console::index),
        Route::get("/console/{*path}", console::file),
    ]);
    all
}

/// The router of [`routes`]. Bodies are read with our own limit (for a clear 413), so
/// axum's default limit is off. A handler that panics answers 500 (the panic is logged);
/// the connection and the process carry on.
pub fn router(state: Arc<AppState>) -> Router {
    let mut router = Router::new();
    for route in routes() {
        router = router.route(&route.path, route.handler);
    }
    let router = router
        .fallback(error::not_found)
        .method_not_allowed_fallback(error::method_not_allowed)
        .layer(DefaultBodyLimit::disable());
    with_panic_guard(router).with_state(state)
}

/// `router` with every handler's panic answered as a 500 ([`error::panicked`]).
fn with_panic_guard<S: Clone + Send + Sync + 'static>(router: Router<S>) -> Router<S> {
    router.layer(tower_http::catch_panic::CatchPanicLayer::custom(
        error::panicked,
    ))
}

/// The ingest APIs of existing analytics SDKs (the key names the environment).
fn sdk_routes() -> Vec<Route> {
    use compat_api::*;
    let mut r = vec![
        Route::post("/v1/batch", Input::Sdk, segment_batch),
        Route::post("/v1/track", Input::Sdk, segment_track),
        Route::post("/v1/identify", Input::Sdk, segment_identify),
        Route::post("/v1/page", Input::Sdk, segment_page),
        Route::post("/v1/screen", Input::Sdk, segment_screen),
        Route::post("/v1/group", Input::Sdk, segment_group),
        Route::post("/v1/alias", Input::Sdk, segment_alias),
    ];
    for path in ["/batch", "/capture", "/e", "/i/v0/e", "/track"] {
        r.push(Route::post(path, Input::Sdk, posthog_capture));
        r.push(Route::post(format!("{path}/"), Input::Sdk, posthog_capture));
    }
    r
}

/// Users, imports and the field registry.
fn users_routes() -> Vec<Route> {
    use Input::*;
    let one = "/v1/{env}/users/{id}";
    vec![
        Route::get(one, users_api::get_user),
        Route::new(http::Method::PUT, one, Json, users_api::put_user),
        Route::delete(one, users_api::delete_user),
        Route::get("/v1/{env}/users", users_api::list_users),
        Route::post("/v1/{env}/users:batch", Json, users_api::post_batch),
        Route::post("/v1/{env}/imports", Csv, users_api::post_import),
        Route::get("/v1/{env}/fields", fields_api::get_fields),
        Route::post("/v1/{env}/fields", Json, fields_api::post_field),
        Route::delete("/v1/{env}/fields/{name}", fields_api::delete_field),
    ]
}

fn segments_routes() -> Vec<Route> {
    use Input::*;
    let one = "/v1/{env}/segments/{id}";
    vec![
        Route::get("/v1/{env}/segments", segments_api::list),
        Route::post("/v1/{env}/segments", Json, segments_api::create),
        Route::post(
            "/v1/{env}/segments:preview",
            Json,
            segments_api::preview_segment,
        ),
        Route::get(one, segments_api::get_one),
        Route::new(http::Method::PUT, one, Json, segments_api::update),
        Route::delete(one, segments_api::delete),
        Route::get(format!("{one}/members"), segments_api::members),
    ]
}

fn webhooks_routes() -> Vec<Route> {
    use Input::*;
    let one = "/v1/{env}/webhooks/{id}";
    vec![
        Route::get("/v1/{env}/webhooks", webhooks_api::list),
        Route::post("/v1/{env}/webhooks", Json, webhooks_api::create),
        Route::get(one, webhooks_api::get_one),
        Route::new(http::Method::PATCH, one, Json, webhooks_api::update),
        Route::post(format!("{one}/test"), Nothing, webhooks_api::test),
        Route::post(format!("{one}/recover"), Json, webhooks_api::recover),
        Route::post(
            format!("{one}/rotate-secret"),
            Json,
            webhooks_api::rotate_secret,
        ),
        Route::get(format!("{one}/deliveries"), webhooks_api::deliveries),
    ]
    .into_iter()
    .chain(registry_api::routes::<Subscription>(one))
    .collect()
}

fn flows_routes() -> Vec<Route> {
    use Input::*;
    let one = "/v1/{env}/flows/{id}";
    let run = "/v1/{env}/flows/{id}/runs/{run}";
    vec![
        Route::get("/v1/{env}/flows", flows_api::list),
        Route::post("/v1/{env}/flows", Json, flows_api::create),
        Route::get(one, flows_api::get_one),
        Route::new(http::Method::PUT, one, Json, flows_api::replace),
        Route::post(format!("{one}/publish"), Nothing, flows_api::publish),
        Route::post(format!("{one}/start"), Json, flows_api::start_runs),
        Route::post(format!("{one}/preview"), Json, flows_api::preview),
        Route::post(format!("{one}/retry"), Json, flows_api::retry_failed),
        Route::get(format!("{one}/runs"), flows_api::list_runs),
        Route::get(run, flows_api::get_run),
        Route::post(format!("{run}/cancel"), Nothing, flows_api::cancel_run),
        Route::post(format!("{run}/retry"), Nothing, flows_api::retry_run),
    ]
    .into_iter()
    .chain(registry_api::routes::<crate::flows::Flow>(one))
    .collect()
}

/// The batched pull API and scheduled exports.
fn exports_routes() -> Vec<Route> {
    use Input::*;
    let one = "/v1/{env}/exports/{id}";
    vec![
        Route::get("/v1/{env}/analytics/batched", exports_api::batched_list),
        Route::get(
            "/v1/{env}/analytics/batched/{file}",
            exports_api::batched_download,
        ),
        Route::get("/v1/{env}/exports", exports_api::list),
        Route::post("/v1/{env}/exports", Json, exports_api::create),
        Route::get(one, exports_api::get_one),
        Route::get(format!("{one}/status"), exports_api::status),
        Route::post(format!("{one}/run"), Nothing, exports_api::run),
        Route::post(format!("{one}/backfill"), Json, exports_api::backfill),
    ]
    .into_iter()
    .chain(registry_api::routes::<Export>(one))
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A handler that panics answers 500 with the panic's message; the server goes on
    /// answering on the same listener.
    #[tokio::test]
    async fn a_panicking_handler_answers_500_and_the_server_goes_on() {
        async fn boom() -> &'static str {
            panic!("boom at the handler")
        }
        async fn fine() -> &'static str {
            "fine"
        }
        let app: Router = with_panic_guard(
            Router::new()
                .route("/boom", axum::routing::get(boom))
                .route("/fine", axum::routing::get(fine)),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        let http = reqwest::Client::new();
        for _ in 0..3 {
            let r = http
                .get(format!("http://{addr}/boom"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.status().as_u16(), 500);
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["error"], "internal");
            assert_eq!(
                body["message"],
                "internal error (a bug): boom at the handler"
            );
            let r = http
                .get(format!("http://{addr}/fine"))
                .send()
                .await
                .unwrap();
            assert_eq!(r.text().await.unwrap(), "fine");
        }
    }

    /// Every route of the table is served once, with what it reads named.
    #[test]
    fn the_route_table_names_each_route_once() {
        let table = routes();
        let mut seen = std::collections::BTreeSet::new();
        for r in &table {
            assert!(
                seen.insert((r.method.clone().to_string(), r.path.clone())),
                "{} {} twice",
                r.method,
                r.path
            );
            if r.method == http::Method::GET || r.method == http::Method::DELETE {
                assert_eq!(r.input, Input::Nothing, "{} {}", r.method, r.path);
            }
        }
        let events = table.iter().find(|r| r.path == "/v1/{env}/events").unwrap();
        assert_eq!(
            (events.method.as_str(), events.input),
            ("POST", Input::Events)
        );
    }
}
