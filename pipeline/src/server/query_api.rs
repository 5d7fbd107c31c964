//! `POST /v1/{env}/query` (read or admin key): `{"sql": "…", "params": [...]}`, answered
//! in the format the `Accept` header names: JSON (column names and types, rows, count;
//! capped by `query.max_json_rows` / `max_json_bytes`), or streamed as CSV, NDJSON, an
//! Arrow IPC stream or Parquet. Errors found before the first row are a 4xx with the
//! usual JSON body; a limit hit mid-stream ends the response early (an aborted body, so
//! no client mistakes it for a complete answer).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use datafusion::common::ScalarValue;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::Value;

use super::AppState;
use super::auth::{Authorized, Reader};
use super::body::{BodyKind, JsonBody, header_str};
use super::error::ApiError;
use crate::query::{Encoder, Format, QueryError};

pub struct QueryBody;

impl BodyKind for QueryBody {
    const BYTES: Option<usize> = Some(1024 * 1024);
    const LIMIT_NAME: &'static str = "1 MiB for a query";
    const EXPECTED: &'static str =
        r#"a JSON object {"sql": "SELECT …", "params": [values for $1, $2, …]}"#;
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    pub sql: String,
    #[serde(default)]
    pub params: Vec<Value>,
}

/// A query's failure as an HTTP answer.
impl From<QueryError> for ApiError {
    fn from(e: QueryError) -> Self {
        let status = match &e {
            QueryError::Refused(_) => StatusCode::FORBIDDEN,
            QueryError::Invalid(_) => StatusCode::BAD_REQUEST,
            QueryError::Timeout(_) => StatusCode::REQUEST_TIMEOUT,
            QueryError::Memory { .. } | QueryError::TooLarge(_) => StatusCode::UNPROCESSABLE_ENTITY,
            QueryError::TooMany { .. } => StatusCode::TOO_MANY_REQUESTS,
            QueryError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let code = e.code();
        let mut api = match e {
            QueryError::Internal(inner) => return ApiError::from(inner).context("query"),
            other => ApiError::new(status, code, other.to_string()),
        };
        if status == StatusCode::TOO_MANY_REQUESTS {
            api.retry_after = Some(1);
        }
        api
    }
}

/// `$1`, `$2`, … from JSON values: numbers (whole → Int64, else Float64), strings,
/// booleans, null. `Err` names the parameter.
pub fn params(values: &[Value]) -> Result<Vec<ScalarValue>, String> {
    values
        .iter()
        .enumerate()
        .map(|(i, v)| match v {
            Value::Null => Ok(ScalarValue::Null),
            Value::Bool(b) => Ok(ScalarValue::Boolean(Some(*b))),
            Value::String(s) => Ok(ScalarValue::Utf8(Some(s.clone()))),
            Value::Number(n) => match (n.as_i64(), n.as_f64()) {
                (Some(i), _) => Ok(ScalarValue::Int64(Some(i))),
                (None, Some(f)) => Ok(ScalarValue::Float64(Some(f))),
                _ => Err(format!("params[{i}]: {n} is out of range")),
            },
            other => Err(format!(
                "params[{i}]: {other} is not a scalar (use a number, string, boolean or null)"
            )),
        })
        .collect()
}

pub async fn post_query(
    State(state): State<Arc<AppState>>,
    Authorized { env, .. }: Authorized<Reader>,
    headers: HeaderMap,
    JsonBody(request, _): JsonBody<QueryRequest, QueryBody>,
) -> Result<Response, ApiError> {
    let format = Format::from_accept(header_str(&headers, header::ACCEPT))
        .map_err(|m| ApiError::new(StatusCode::NOT_ACCEPTABLE, "not_acceptable", m))?;
    if format == Format::Table {
        return Err(ApiError::new(
            StatusCode::NOT_ACCEPTABLE,
            "not_acceptable",
            "aligned text is the CLI's format",
        ));
    }
    let params = params(&request.params).map_err(ApiError::bad_request)?;
    let engine = state.query.clone();
    let rows = engine.query(Some(&env), &request.sql, params).await?;
    let limits = engine.config();
    let (mut encoder, head) = Encoder::new(format, &rows.schema)?;
    let mut stream = rows.stream;
    if format == Format::Json {
        // One document, within the caps: built before the status is sent.
        let (max_rows, max_bytes) = (limits.max_json_rows, limits.max_json_bytes);
        let mut body = head.to_vec();
        while let Some(batch) = stream.next().await {
            let batch = batch?;
            body.extend_from_slice(&encoder.batch(&batch)?);
            if encoder.rows() > max_rows || body.len() > max_bytes {
                return Err(QueryError::TooLarge(format!(
                    "the answer has more than {max_rows} rows or {max_bytes} bytes \
                     (query.max_json_rows, query.max_json_bytes); add a LIMIT or ask for \
                     text/csv, application/x-ndjson or application/vnd.apache.arrow.stream, \
                     which stream without a cap"
                ))
                .into());
            }
        }
        body.extend_from_slice(&encoder.finish()?);
        return Ok(answer(format, Body::from(body)));
    }
    // Streamed: the first batch decides the status, later errors abort the body.
    let first = match stream.next().await {
        Some(Ok(b)) => Some(b),
        Some(Err(e)) => return Err(e.into()),
        None => None,
    };
    let first_bytes = match &first {
        Some(b) => encoder.batch(b)?,
        None => bytes::Bytes::new(),
    };
    let body = futures::stream::once(async move { Ok::<_, QueryError>(head) })
        .chain(futures::stream::once(async move { Ok(first_bytes) }))
        .chain(futures::stream::unfold(
            (stream, Some(encoder)),
            |(mut stream, mut encoder)| async move {
                let enc = encoder.as_mut()?;
                match stream.next().await {
                    Some(Ok(batch)) => {
                        let bytes = enc.batch(&batch).map_err(QueryError::from);
                        Some((bytes, (stream, encoder)))
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, "query stream ended early");
                        Some((Err(e), (stream, None)))
                    }
                    None => {
                        let last = encoder.take()?.finish().map_err(QueryError::from);
                        Some((last, (stream, None)))
                    }
                }
            },
        ));
    Ok(answer(format, Body::from_stream(body)))
}

fn answer(format: Format, body: Body) -> Response {
    let mut resp = (StatusCode::OK, body).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_params_become_scalars_or_a_named_error() {
        let got =
            params(&serde_json::from_str::<Vec<Value>>(r#"[1, 2.5, "a", true, null]"#).unwrap())
                .unwrap();
        assert_eq!(
            got,
            vec![
                ScalarValue::Int64(Some(1)),
                ScalarValue::Float64(Some(2.5)),
                ScalarValue::Utf8(Some("a".into())),
                ScalarValue::Boolean(Some(true)),
                ScalarValue::Null,
            ]
        );
        let err = params(&[Value::from(1), serde_json::json!({"a": 1})]).unwrap_err();
        assert!(err.starts_with("params[1]:"), "{err}");
    }
}
