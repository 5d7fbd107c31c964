//! `POST /v1/{env}/events`: a JSON array or NDJSON body, optionally gzip-encoded.

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use serde_json::{Value, json};

use super::AppState;
use super::auth::{Authorized, Writer};
use super::body::{media_type, read_body};
use super::error::ApiError;
use crate::ingest::IngestError;
use crate::ingest::event::{BatchError, BodyFormat};
use crate::problem::Subject;

fn body_format(headers: &HeaderMap) -> Result<BodyFormat, ApiError> {
    match media_type(headers).as_str() {
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

/// `POST /v1/{env}/events`. The key is checked by the extractor; a refused one is counted
/// in the rejection metrics too, so the handler takes the extractor's result.
pub async fn post_events(
    State(state): State<Arc<AppState>>,
    auth: Result<Authorized<Writer>, ApiError>,
    headers: HeaderMap,
    body: Body,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let result = match auth {
        Ok(Authorized { env, .. }) => handle(&state, &env, &headers, body).await,
        Err(e) => Err(e),
    };
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
    let ingestor = state.accepting()?;
    let format = body_format(headers)?;
    let body = read_body(
        headers,
        body,
        (state.limits.max_body_bytes, "limits.max_body_bytes"),
        state.limits.body_timeout,
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
            BatchError::Invalid {
                problems,
                total,
                events,
            } => {
                state.metrics.events_rejected_total.inc_by(events as u64);
                ApiError::problems(Subject::Events, problems, total)
            }
        }),
        Err(IngestError::Unavailable(m)) => Err(ApiError::unavailable(m)),
        Err(IngestError::Internal(m)) => {
            tracing::error!(error = %m, "ingest failed");
            Err(ApiError::internal(m))
        }
    }
}
