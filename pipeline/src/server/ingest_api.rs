//! `POST /v1/{env}/events`: a JSON array or NDJSON body, optionally gzip-encoded.

use std::io::Read;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use serde_json::{Value, json};

use super::AppState;
use super::error::ApiError;
use crate::auth::{Role, authorize};
use crate::ingest::IngestError;
use crate::ingest::event::{BatchError, BodyFormat};

/// A client that sends its body slower than this is cut off (408).
const BODY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

fn body_format(headers: &HeaderMap) -> Result<BodyFormat, ApiError> {
    let Some(ct) = header_str(headers, header::CONTENT_TYPE) else {
        return Ok(BodyFormat::JsonArray);
    };
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "" | "application/json" => Ok(BodyFormat::JsonArray),
        "application/x-ndjson"
        | "application/ndjson"
        | "application/jsonl"
        | "application/x-jsonlines" => Ok(BodyFormat::Ndjson),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "Content-Type '{other}' is not supported; use application/json (an array of events) or application/x-ndjson"
            ),
        )),
    }
}

/// The request body (gzip decoded), at most `limit` bytes; `limit_name` says where the
/// limit comes from in the 413 message (e.g. `limits.max_body_bytes`).
pub(super) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    limit: usize,
    limit_name: &str,
) -> Result<Vec<u8>, ApiError> {
    let too_large = || {
        ApiError::too_large(format!(
            "request body is larger than the limit of {limit} bytes ({limit_name})"
        ))
    };
    if let Some(len) =
        header_str(headers, header::CONTENT_LENGTH).and_then(|v| v.parse::<u64>().ok())
        && len > limit as u64
    {
        return Err(too_large());
    }
    let read = tokio::time::timeout(BODY_TIMEOUT, axum::body::to_bytes(body, limit));
    let Ok(read) = read.await else {
        return Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!(
                "the request body did not arrive within {} s",
                BODY_TIMEOUT.as_secs()
            ),
        ));
    };
    let bytes = read.map_err(|e| {
        let is_limit = std::error::Error::source(&e)
            .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
        if is_limit {
            too_large()
        } else {
            ApiError::bad_request(format!("could not read the request body: {e}"))
        }
    })?;
    let encoding = header_str(headers, header::CONTENT_ENCODING)
        .map(|s| s.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match encoding.as_str() {
        "" | "identity" => Ok(bytes.to_vec()),
        "gzip" | "x-gzip" => {
            let mut out = Vec::with_capacity(bytes.len() * 4);
            let mut dec = flate2::read::MultiGzDecoder::new(&bytes[..]).take(limit as u64 + 1);
            dec.read_to_end(&mut out)
                .map_err(|e| ApiError::bad_request(format!("body is not valid gzip: {e}")))?;
            if out.len() > limit {
                return Err(ApiError::too_large(format!(
                    "decompressed request body is larger than the limit of {limit} bytes ({limit_name})"
                )));
            }
            Ok(out)
        }
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("Content-Encoding '{other}' is not supported; use gzip or none"),
        )),
    }
}

pub async fn post_events(
    State(state): State<Arc<AppState>>,
    Path(env): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let result = handle(&state, &env, &headers, body).await;
    if let Err(e) = &result {
        let reason = match e.status {
            StatusCode::UNAUTHORIZED => "unauthorized",
            StatusCode::FORBIDDEN => "forbidden",
            StatusCode::PAYLOAD_TOO_LARGE => "too_large",
            StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported",
            StatusCode::SERVICE_UNAVAILABLE => "unavailable",
            s if s.is_server_error() => "internal",
            _ => "invalid",
        };
        state.metrics.rejected(reason, 1);
    }
    result
}

async fn handle(
    state: &AppState,
    env: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let principal = state
        .keys
        .authenticate(header_str(headers, header::AUTHORIZATION))
        .await?;
    authorize(&principal, env, &[Role::Ingest, Role::Admin])?;
    if state.shutting_down.load(Ordering::Acquire) {
        return Err(ApiError::unavailable("tidemark is shutting down; retry"));
    }
    let Some(ingestor) = state.ingestor.get() else {
        return Err(ApiError::unavailable(
            "tidemark is starting (replaying the write-ahead log); retry shortly",
        ));
    };
    let format = body_format(headers)?;
    let body = read_body(
        headers,
        body,
        state.limits.max_body_bytes,
        "limits.max_body_bytes",
    )
    .await?;
    match ingestor.ingest(env, &body, format).await {
        Ok(o) => Ok((
            StatusCode::ACCEPTED,
            Json(json!({"accepted": o.accepted, "duplicates": o.duplicates})),
        )),
        Err(IngestError::Batch(e)) => Err(match e {
            BatchError::Malformed(m) => ApiError::bad_request(m),
            e @ BatchError::TooManyEvents { .. } => ApiError::too_large(e.to_string()),
            ref e @ BatchError::Invalid {
                ref problems,
                total,
                events,
            } => {
                state.metrics.events_rejected_total.inc_by(events as u64);
                ApiError::invalid(e.to_string(), problems.clone(), total)
            }
        }),
        Err(IngestError::Unavailable(m)) => Err(ApiError::unavailable(m)),
        Err(IngestError::Internal(m)) => {
            tracing::error!(error = %m, "ingest failed");
            Err(ApiError::internal(m))
        }
    }
}
