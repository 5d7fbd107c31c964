//! Bulk export over HTTP.
//!
//! - `GET /v1/{env}/analytics/batched?from&to&format` (read key): hourly batches with
//!   download links; `GET /v1/{env}/analytics/batched/{hour}.{ext}?version&expires&token`
//!   (no key: the token is the authorization) serves one hour.
//! - `POST/GET /v1/{env}/exports`, `GET/DELETE /v1/{env}/exports/{id}`,
//!   `GET …/{id}/status`, `POST …/{id}/pause|resume|run|backfill` (admin key).

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use tidemark_sinks::export::{Format, sha256_hex};

use super::AppState;
use super::auth::{Admin, Authorized, Reader};
use super::body::{BodyKind, JsonBody};
use super::error::{ApiError, rejected};
use crate::exports::batched::{self, Link, LinkError};
use crate::exports::def::Exports;
use crate::exports::worker::{self, Runner};
use crate::problem::Subject;

/// An export definition or a backfill's range; an empty body is `{}`.
pub struct Request;

impl BodyKind for Request {
    const BYTES: Option<usize> = Some(256 * 1024);
    const LIMIT_NAME: &'static str = "256 KiB for an export request";
    const EXPECTED: &'static str = "a JSON object";
    const EMPTY_IS_OBJECT: bool = true;
}

/// Export endpoints are for admin keys; the path is `{env}/exports/{id}`.
type OneExport = (Authorized<Admin>, Path<(String, String)>);

fn exports(state: &AppState) -> Exports {
    Exports::new(state.store.clone())
}

/// `from` / `to` of a query string, named in errors.
fn bound(
    q: &HashMap<String, String>,
    name: &str,
) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
    let text = q
        .get(name)
        .ok_or_else(|| ApiError::bad_request(format!("{name}: is required")))?;
    Ok(batched::parse_bound(text, name)?)
}

/// The scheme and host download links start with.
fn base_url(state: &AppState, headers: &HeaderMap) -> String {
    if let Some(u) = &state.exports.config.public_url {
        return u.trim_end_matches('/').to_string();
    }
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost");
    let proto = headers
        .get("x-forwarded-proto")
        .and_then(|h| h.to_str().ok())
        .filter(|p| *p == "https")
        .unwrap_or("http");
    format!("{proto}://{host}")
}

pub async fn batched_list(
    State(state): State<Arc<AppState>>,
    Authorized { env, .. }: Authorized<Reader>,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    for key in q.keys() {
        if !["from", "to", "format"].contains(&key.as_str()) {
            return Err(ApiError::bad_request(format!(
                "{key}: unknown parameter; expected from, to, format"
            )));
        }
    }
    let range = batched::hour_range(bound(&q, "from")?, bound(&q, "to")?)?;
    let format = match q.get("format") {
        None => Format::Ndjson,
        Some(f) => Format::parse(f, "format").map_err(|e| ApiError::bad_request(e.to_string()))?,
    };
    let base = base_url(&state, &headers);
    Ok(Json(
        batched::list(
            &state.store,
            &state.exports,
            &env,
            range,
            format,
            &base,
            chrono::Utc::now(),
        )
        .await?,
    ))
}

pub async fn batched_download(
    State(state): State<Arc<AppState>>,
    path: Result<Path<(String, String)>, axum::extract::rejection::PathRejection>,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, ApiError> {
    let Path((env, file)) = path.map_err(|e| ApiError::bad_request(e.body_text()))?;
    let bad = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "invalid_token",
            "the download link is not valid (altered or not issued here); list the hours again",
        )
    };
    let (hour, format) = batched::parse_file(&file).ok_or_else(bad)?;
    let number = |name: &str| -> Result<i64, ApiError> {
        q.get(name).and_then(|v| v.parse().ok()).ok_or_else(bad)
    };
    let link = Link {
        environment: env,
        hour,
        format,
        version: number("version")?,
        expires: number("expires")?,
    };
    let token = q.get("token").ok_or_else(bad)?;
    match link.verify(token, state.exports.key()?, chrono::Utc::now()) {
        Ok(()) => {}
        Err(LinkError::Invalid) => return Err(bad()),
        Err(LinkError::Expired) => {
            return Err(ApiError::new(
                StatusCode::GONE,
                "token_expired",
                "the download link has expired; list the hours again for a fresh one",
            ));
        }
    }
    let bytes = batched::render(&state.store, &link).await?;
    let etag = format!("\"{}\"", &sha256_hex(&bytes)[..32]);
    let disposition = format!(
        "attachment; filename=\"{}-{}\"",
        link.environment,
        link.file()
    );
    let mut resp = (StatusCode::OK, bytes).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if let Ok(v) = HeaderValue::from_str(&disposition) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    if let Ok(v) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, v);
    }
    Ok(resp)
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    Authorized { env, .. }: Authorized<Admin>,
    JsonBody(input, _): JsonBody<Value, Request>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let (ex, secret) = exports(&state)
        .create(&env, &input, &state.exports)
        .await
        .map_err(rejected(Subject::Export))?;
    let mut out = ex.public();
    if let Some(s) = secret {
        out["secret"] = Value::String(s.expose());
    }
    Ok((StatusCode::CREATED, Json(out)))
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    auth: Authorized<Admin>,
) -> Result<Json<Value>, ApiError> {
    let all = exports(&state).list(&auth.env).await?;
    Ok(Json(json!({
        "exports": all.values().map(|e| e.public()).collect::<Vec<_>>(),
    })))
}

pub async fn get_one(
    State(state): State<Arc<AppState>>,
    (_, Path((env, id))): OneExport,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(exports(&state).get(&env, &id).await?.public()))
}

pub async fn status(
    State(state): State<Arc<AppState>>,
    (_, Path((env, id))): OneExport,
) -> Result<Json<Value>, ApiError> {
    let ex = exports(&state).get(&env, &id).await?;
    Ok(Json(
        worker::status(&state.store, &state.exports, &env, &ex, chrono::Utc::now()).await?,
    ))
}

/// Runs the export's due windows now (ignoring backoff) and reports them.
pub async fn run(
    State(state): State<Arc<AppState>>,
    (_, Path((env, id))): OneExport,
) -> Result<Json<Value>, ApiError> {
    let ex = exports(&state).get(&env, &id).await?;
    let runner = Runner::new(state.store.clone(), state.exports.clone());
    let report = runner.run_now(&env, &ex, chrono::Utc::now()).await?;
    Ok(Json(report))
}

/// Re-exports the windows of `from..to` in the background (they replace what is there).
pub async fn backfill(
    State(state): State<Arc<AppState>>,
    (_, Path((env, id))): OneExport,
    JsonBody(input, _): JsonBody<Value, Request>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let field = |name: &str| -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
        let text = input
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| ApiError::bad_request(format!("{name}: is required (RFC 3339)")))?;
        Ok(batched::parse_bound(text, name)?)
    };
    let (from, to) = (field("from")?, field("to")?);
    let ex = exports(&state).get(&env, &id).await?;
    let windows = worker::backfill_windows(&ex, from, to)?;
    let count = windows.len();
    let runner = Runner::new(state.store.clone(), state.exports.clone());
    tokio::spawn(async move {
        if let Err(e) = runner.backfill(&env, &ex, &windows, |_| {}).await {
            tracing::warn!(export = %ex.id, error = %e, "exports: backfill failed");
        }
    });
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"id": id, "windows": count, "from": from, "to": to})),
    ))
}
