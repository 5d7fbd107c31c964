//! Existing analytics SDKs, unchanged: the Segment / RudderStack HTTP tracking API
//! (`POST /v1/batch`, `/v1/track`, `/v1/identify`, `/v1/page`, `/v1/screen`, `/v1/group`,
//! `/v1/alias`) and PostHog's capture API (`POST /batch/`, `/capture/`, `/e/`).
//!
//! The write key is an ingest (or admin) key, sent as HTTP basic auth's user name (both
//! Segment SDKs), `writeKey` / `api_key` / `token` in the body, or a bearer header; the
//! environment is the key's. Bodies may be gzip-encoded. The mapping is
//! [`crate::compat`]; here the request is read, stored and answered as the SDKs
//! expect: 200 with a JSON body (RudderStack's SDK takes anything else as a failure), 400
//! when no message is valid, 413 past `limits.max_sdk_batch_bytes`, 503 with Retry-After
//! under backpressure. Error bodies carry `code` and `message` (what the Segment SDKs
//! read) and `detail` (PostHog's).
//!
//! Stored in this order, so an SDK's retry of a failed request repeats nothing: the events
//! (a retry's `messageId` / `uuid` are dropped as duplicates), then profile writes (a
//! repeated `set` writes the same value) and aliases (the earliest link of an id wins).

use std::sync::Arc;
use std::time::Instant;

use axum::Json;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::AppState;
use super::body::{gunzip, header_str, read_body};
use super::error::ApiError;
use crate::auth::{Credential, Writer};
use crate::compat::lenient::{Context, Lenient};
use crate::compat::segment::{Envelope, Kind};
use crate::compat::{self, Mapped, posthog, segment};
use crate::ingest::IngestError;
use crate::problem::Subject;
use crate::users::fields::Registry;

/// Which API a request speaks.
#[derive(Debug, Clone, Copy)]
enum Api {
    /// `/v1/batch` (`None`) or a single-message endpoint.
    Segment(Option<Kind>),
    PostHog,
}

macro_rules! handlers {
    ($($name:ident => $api:expr),* $(,)?) => {
        $(
            pub async fn $name(
                State(state): State<Arc<AppState>>,
                headers: HeaderMap,
                body: Body,
            ) -> Response {
                answer(&state, &headers, body, $api).await
            }
        )*
    };
}

handlers! {
    segment_batch => Api::Segment(None),
    segment_track => Api::Segment(Some(Kind::Track)),
    segment_identify => Api::Segment(Some(Kind::Identify)),
    segment_page => Api::Segment(Some(Kind::Page)),
    segment_screen => Api::Segment(Some(Kind::Screen)),
    segment_group => Api::Segment(Some(Kind::Group)),
    segment_alias => Api::Segment(Some(Kind::Alias)),
    posthog_capture => Api::PostHog,
}

async fn answer(state: &AppState, headers: &HeaderMap, body: Body, api: Api) -> Response {
    match handle(state, headers, body, api).await {
        Ok(v) => (StatusCode::OK, Json(v)).into_response(),
        Err(e) => {
            let reason = match e.status {
                StatusCode::UNAUTHORIZED => "unauthorized",
                StatusCode::FORBIDDEN => "forbidden",
                StatusCode::PAYLOAD_TOO_LARGE => "too_large",
                StatusCode::SERVICE_UNAVAILABLE => "unavailable",
                s if s.is_server_error() => "internal",
                _ => "invalid",
            };
            state.metrics.rejected(reason, 1);
            sdk_error(e)
        }
    }
}

/// tidemark's error body plus `code` (Segment's SDKs) and `detail` (PostHog's).
fn sdk_error(e: ApiError) -> Response {
    let mut body = serde_json::to_value(&e.body).unwrap_or_else(|_| json!({}));
    body["code"] = json!(e.body.error);
    body["detail"] = json!(e.body.message);
    let mut resp = (e.status, Json(body)).into_response();
    if let Some(s) = e.retry_after {
        resp.headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from(s));
    }
    if e.status == StatusCode::UNAUTHORIZED {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"tidemark\""),
        );
    }
    resp
}

/// The key of the `Authorization` header: basic auth's user name (or, when that is
/// empty, the password), or a bearer token.
fn header_key(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(auth) = header_str(headers, header::AUTHORIZATION) else {
        return Ok(None);
    };
    let auth = auth.trim();
    if let Some(b64) = auth
        .strip_prefix("Basic ")
        .or_else(|| auth.strip_prefix("basic "))
    {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .ok_or_else(|| {
                ApiError::new(
                    StatusCode::UNAUTHORIZED,
                    "unauthorized",
                    "Authorization: Basic must be base64 of '<write key>:'",
                )
            })?;
        let (user, password) = decoded.split_once(':').unwrap_or((&decoded, ""));
        let key = if user.is_empty() { password } else { user };
        return Ok(Some(key.to_string()));
    }
    if let Some(token) = auth
        .strip_prefix("Bearer ")
        .or_else(|| auth.strip_prefix("bearer "))
    {
        return Ok(Some(token.trim().to_string()));
    }
    Err(ApiError::new(
        StatusCode::UNAUTHORIZED,
        "unauthorized",
        "Authorization must be 'Basic <base64 of write key:>' or 'Bearer <key>'",
    ))
}

/// `/v1/batch`'s body.
#[derive(Deserialize)]
struct SegmentBatch<'a> {
    #[serde(borrow)]
    batch: Vec<&'a RawValue>,
    #[serde(rename = "sentAt", borrow, default)]
    sent_at: Option<&'a RawValue>,
    #[serde(borrow, default)]
    context: Option<Lenient<Context<'a>>>,
}

/// The key members of a single message, a PostHog body or one of its events.
#[derive(Default, Deserialize)]
struct BodyKey {
    #[serde(rename = "writeKey", default)]
    write_key: Option<String>,
    #[serde(default)]
    api_key: Option<String>,
    #[serde(default)]
    token: Option<String>,
    #[serde(default)]
    properties: Option<TokenProps>,
}

#[derive(Default, Deserialize)]
struct TokenProps {
    #[serde(default)]
    token: Option<String>,
}

impl BodyKey {
    fn of(raw: &RawValue) -> Option<String> {
        let k: BodyKey = serde_json::from_str(raw.get()).ok()?;
        k.write_key
            .or(k.api_key)
            .or(k.token)
            .or(k.properties.and_then(|p| p.token))
    }
}

/// PostHog's `/batch/` body.
#[derive(Deserialize)]
struct PostHogBatch<'a> {
    #[serde(borrow)]
    batch: Vec<&'a RawValue>,
}

/// The key a body carries: its own `writeKey` / `api_key` / `token`, or its first
/// message's (PostHog's single events carry `properties.token`).
fn body_key(body: &str) -> Option<String> {
    let raw: &RawValue = serde_json::from_str(body).ok()?;
    BodyKey::of(raw).or_else(|| {
        let first = match raw.get().as_bytes().first() {
            Some(b'[') => serde_json::from_str::<Vec<&RawValue>>(raw.get()).ok()?,
            _ => serde_json::from_str::<PostHogBatch>(raw.get()).ok()?.batch,
        };
        first.first().and_then(|m| BodyKey::of(m))
    })
}

/// The messages of a request and what the request around them says. The body is parsed
/// once into its messages (raw, each mapped on its own); a body of the wrong shape is
/// parsed again only to say whether it is JSON at all.
fn messages(body: &str, api: Api) -> Result<(Vec<&RawValue>, Envelope<'_>), ApiError> {
    let not_json = |e: serde_json::Error| match serde_json::from_str::<serde::de::IgnoredAny>(body)
    {
        Err(e) => ApiError::bad_request(format!("body is not valid JSON: {e}")),
        Ok(_) => ApiError::bad_request(e.to_string()),
    };
    let text = body.trim_start();
    match api {
        Api::Segment(None) => {
            let b: SegmentBatch = serde_json::from_str(body).map_err(|e| {
                match serde_json::from_str::<serde::de::IgnoredAny>(body) {
                    Err(e) => ApiError::bad_request(format!("body is not valid JSON: {e}")),
                    Ok(_) => ApiError::bad_request(format!(
                        "body must be an object with a 'batch' array of messages (Segment's /v1/batch): {e}"
                    )),
                }
            })?;
            let envelope = Envelope {
                sent_at: b.sent_at,
                platform: b.context.and_then(|c| c.0.platform()),
                implied: None,
            };
            Ok((b.batch, envelope))
        }
        Api::Segment(Some(kind)) => {
            let raw: &RawValue = serde_json::from_str(body).map_err(not_json)?;
            if !raw.get().starts_with('{') {
                return Err(ApiError::bad_request(format!(
                    "body must be one {} message (a JSON object)",
                    kind.as_str()
                )));
            }
            let envelope = Envelope {
                implied: Some(kind),
                ..Envelope::default()
            };
            Ok((vec![raw], envelope))
        }
        Api::PostHog => {
            let events = if text.starts_with('[') {
                serde_json::from_str::<Vec<&RawValue>>(body).map_err(not_json)?
            } else if !text.starts_with('{') {
                let _: &RawValue = serde_json::from_str(body).map_err(not_json)?;
                return Err(ApiError::bad_request(
                    "body must be an event, an array of events or {\"batch\": [...]}",
                ));
            } else if let Ok(b) = serde_json::from_str::<PostHogBatch>(body) {
                b.batch
            } else {
                vec![serde_json::from_str::<&RawValue>(body).map_err(not_json)?]
            };
            Ok((events, Envelope::default()))
        }
    }
}

/// The request's body, gzip-decoded (posthog-js sends gzip without Content-Encoding,
/// `?compression=gzip-js`), within `limits.max_sdk_batch_bytes`.
async fn read_sdk_body(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<u8>, ApiError> {
    let limit = (
        state.limits.max_sdk_batch_bytes,
        "limits.max_sdk_batch_bytes",
    );
    let bytes = read_body(headers, body, limit, state.limits.body_timeout).await?;
    if bytes.starts_with(&[0x1f, 0x8b]) {
        return gunzip(&bytes, limit);
    }
    Ok(bytes)
}

/// Stores the profile writes (declared custom fields; returns the traits ignored) and the
/// aliases of the accepted messages.
async fn write_profiles(
    state: &AppState,
    env: &str,
    mapped: &Mapped<'_>,
) -> Result<Vec<compat::Ignored>, ApiError> {
    let mut ignored = Vec::new();
    if !mapped.writes.is_empty() {
        let fields = Registry::new(state.store.clone())
            .list(env)
            .await
            .map_err(|e| ApiError::from(e).context("cannot read the field registry"))?;
        let (updates, skipped) =
            compat::declared_updates(&mapped.writes, &fields, state.limits.max_string_len);
        ignored = skipped;
        if !updates.is_empty() {
            super::users_api::write_updates(state, env, updates).await?;
        }
    }
    if !mapped.aliases.is_empty() {
        crate::users::aliases::append(&state.store, env, &mapped.aliases)
            .await
            .map_err(|e| ApiError::from(e).context("cannot store the aliases"))?;
        state.profile_writes.notify_one();
    }
    Ok(ignored)
}

async fn handle(
    state: &AppState,
    headers: &HeaderMap,
    body: Body,
    api: Api,
) -> Result<Value, ApiError> {
    let started = Instant::now();
    let bytes = read_sdk_body(state, headers, body).await?;
    let body = std::str::from_utf8(&bytes).map_err(|e| {
        ApiError::bad_request(format!(
            "body is not valid UTF-8 (at byte {})",
            e.valid_up_to()
        ))
    })?;
    let key = header_key(headers)?.or_else(|| body_key(body)).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "no write key: send an ingest key as basic auth's user name (Segment, RudderStack), \
             as writeKey or api_key in the body (PostHog), or as 'Authorization: Bearer <key>'",
        )
    })?;
    let principal = state
        .keys
        .authorize::<Writer>(Credential::Token(&key), None)
        .await?;
    let env = principal.environment.clone();
    let (raws, envelope) = messages(body, api)?;
    let ingestor = state.accepting()?;
    if raws.is_empty() {
        return Err(ApiError::bad_request("the request has no messages"));
    }
    let received_us = chrono::Utc::now().timestamp_micros();
    let mapped: Mapped = match api {
        Api::Segment(_) => segment::map(&raws, &envelope, received_us, &state.limits),
        Api::PostHog => posthog::map(&raws, received_us, &state.limits),
    };
    if mapped.refused > 0 {
        state
            .metrics
            .events_rejected_total
            .inc_by(mapped.refused as u64);
    }
    if mapped.events.is_empty() {
        let total = mapped.problems.len();
        return Err(ApiError::problems(Subject::Events, mapped.problems, total));
    }
    let outcome = ingestor
        .ingest_events(&env, &mapped.events, started)
        .await
        .map_err(|e| match e {
            IngestError::Batch(e) => ApiError::bad_request(e.to_string()),
            IngestError::Unavailable(m) => ApiError::unavailable(m),
            IngestError::Internal(m) => {
                tracing::error!(error = %m, "ingest failed");
                ApiError::internal(m)
            }
        })?;
    let ignored = write_profiles(state, &env, &mapped).await?;
    let mut problems = mapped.problems;
    problems.truncate(crate::problem::MAX_PROBLEMS);
    let mut answer = json!({
        "accepted": outcome.accepted,
        "duplicates": outcome.duplicates,
        "refused": mapped.refused,
        "problems": problems,
        "ignored_traits": ignored,
    });
    match api {
        Api::Segment(_) => answer["success"] = json!(true),
        Api::PostHog => answer["status"] = json!(1),
    }
    Ok(answer)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(auth: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::AUTHORIZATION, HeaderValue::from_str(auth).unwrap());
        h
    }

    #[test]
    fn keys_from_basic_auth_and_bearer() {
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        assert_eq!(header_key(&HeaderMap::new()).unwrap(), None);
        assert_eq!(
            header_key(&headers(&format!("Basic {}", b64("tm_a_b:"))))
                .unwrap()
                .as_deref(),
            Some("tm_a_b")
        );
        assert_eq!(
            header_key(&headers(&format!("Basic {}", b64(":tm_a_b"))))
                .unwrap()
                .as_deref(),
            Some("tm_a_b")
        );
        assert_eq!(
            header_key(&headers("Bearer tm_x_y")).unwrap().as_deref(),
            Some("tm_x_y")
        );
        let e = header_key(&headers("Basic !!")).unwrap_err();
        assert_eq!(e.status, StatusCode::UNAUTHORIZED);
        let e = header_key(&headers("Token abc")).unwrap_err();
        assert!(e.body.message.contains("'Basic"), "{}", e.body.message);
    }

    #[test]
    fn bodies_of_each_api() {
        let body = r#"{"batch":[{"type":"track"},{"type":"page"}],"writeKey":"k","sentAt":"2026-01-01T00:00:00Z"}"#;
        let (m, env) = messages(body, Api::Segment(None)).unwrap();
        assert_eq!((m.len(), body_key(body).as_deref()), (2, Some("k")));
        assert_eq!(
            env.sent_at.map(RawValue::get),
            Some(r#""2026-01-01T00:00:00Z""#)
        );
        let body = r#"{"event":"e","userId":"u","writeKey":"k1"}"#;
        let (m, env) = messages(body, Api::Segment(Some(Kind::Track))).unwrap();
        assert_eq!(
            (m.len(), body_key(body).as_deref(), env.implied),
            (1, Some("k1"), Some(Kind::Track))
        );
        assert!(
            messages(r#"[{"event":"e"}]"#, Api::Segment(None))
                .unwrap_err()
                .body
                .message
                .contains("'batch' array")
        );
        let body = r#"{"api_key":"p","batch":[{"event":"a"},{"event":"b"}]}"#;
        let (m, _) = messages(body, Api::PostHog).unwrap();
        assert_eq!((m.len(), body_key(body).as_deref()), (2, Some("p")));
        let body = r#"{"event":"a","distinct_id":"u","properties":{"token":"t"}}"#;
        let (m, _) = messages(body, Api::PostHog).unwrap();
        assert_eq!((m.len(), body_key(body).as_deref()), (1, Some("t")));
        let body = r#"[{"event":"a","api_key":"q"},{"event":"b"}]"#;
        let (m, _) = messages(body, Api::PostHog).unwrap();
        assert_eq!((m.len(), body_key(body).as_deref()), (2, Some("q")));
        assert_eq!(body_key(r#"{"batch":[{"event":"a"}]}"#), None);
        assert!(
            messages("nope", Api::PostHog)
                .unwrap_err()
                .body
                .message
                .contains("not valid JSON")
        );
    }
}
