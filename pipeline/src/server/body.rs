//! Request bodies: [`read_body`] (size limit before and after gzip, a timeout for slow
//! senders) and the [`JsonBody`] extractor every JSON endpoint takes its input with.

use std::io::Read;
use std::marker::PhantomData;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

use super::AppState;
use super::error::ApiError;

/// A UTF-8 byte order mark, which JSON texts must not start with (RFC 8259 8.1).
pub const BOM: &[u8] = b"\xef\xbb\xbf";
pub const BOM_MESSAGE: &str =
    "body starts with a byte order mark (U+FEFF); send the JSON without one";

pub(super) fn header_str(headers: &HeaderMap, name: header::HeaderName) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The request body (gzip decoded), at most `limit` bytes; `limit_name` says where the
/// limit comes from in the 413 message (e.g. `limits.max_body_bytes`). A body that has not
/// arrived within `timeout` is answered 408 (and the connection closed).
pub(super) async fn read_body(
    headers: &HeaderMap,
    body: Body,
    (limit, limit_name): (usize, &str),
    timeout: std::time::Duration,
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
    let read = tokio::time::timeout(timeout, axum::body::to_bytes(body, limit));
    let Ok(read) = read.await else {
        return Err(ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "timeout",
            format!(
                "the request body did not arrive within {} (limits.body_timeout)",
                humantime::format_duration(timeout)
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
        "gzip" | "x-gzip" => gunzip(&bytes, (limit, limit_name)),
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!("Content-Encoding '{other}' is not supported; use gzip or none"),
        )),
    }
}

/// `bytes` gzip-decoded, at most `limit` bytes.
pub(super) fn gunzip(
    bytes: &[u8],
    (limit, limit_name): (usize, &str),
) -> Result<Vec<u8>, ApiError> {
    let mut out = Vec::with_capacity(bytes.len() * 4);
    let mut dec = flate2::read::MultiGzDecoder::new(bytes).take(limit as u64 + 1);
    dec.read_to_end(&mut out)
        .map_err(|e| ApiError::bad_request(format!("body is not valid gzip: {e}")))?;
    if out.len() > limit {
        return Err(ApiError::too_large(format!(
            "decompressed request body is larger than the limit of {limit} bytes ({limit_name})"
        )));
    }
    Ok(out)
}

/// The request's media type, lower-cased and without parameters (`""` when absent).
pub(super) fn media_type(headers: &HeaderMap) -> String {
    header_str(headers, header::CONTENT_TYPE)
        .and_then(|ct| ct.split(';').next())
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase()
}

/// The one content-type rule of the JSON endpoints (events have their own, which adds
/// NDJSON): none, `application/json` or a `+json` type; anything else (a form-encoded
/// body from `curl -d`, say) is a 415 that names it.
pub(super) fn check_json_type(headers: &HeaderMap) -> Result<(), ApiError> {
    let mime = media_type(headers);
    if mime.is_empty() || mime == "application/json" || mime.ends_with("+json") {
        return Ok(());
    }
    Err(ApiError::new(
        StatusCode::UNSUPPORTED_MEDIA_TYPE,
        "unsupported_media_type",
        format!("Content-Type '{mime}' is not supported; send application/json"),
    ))
}

/// What one kind of JSON body may be: its size limit and what a 400 says it must be.
pub trait BodyKind: Send + Sync + 'static {
    /// The limit in bytes; `None`: `limits.max_body_bytes`.
    const BYTES: Option<usize>;
    /// Where the limit comes from, for the 413 message.
    const LIMIT_NAME: &'static str;
    /// Completes "body must be …" in the 400 message.
    const EXPECTED: &'static str;
    /// An empty (or all-blank) body reads as `{}`.
    const EMPTY_IS_OBJECT: bool = false;
}

/// A JSON body of kind `K`, parsed into `T`: `413` over the limit, `400` naming what the
/// body must be.
pub struct JsonBody<T, K>(pub T, pub PhantomData<K>);

impl<T, K> FromRequest<Arc<AppState>> for JsonBody<T, K>
where
    T: DeserializeOwned,
    K: BodyKind,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let (parts, body) = req.into_parts();
        check_json_type(&parts.headers)?;
        let (limit, name) = match K::BYTES {
            Some(n) => (n, K::LIMIT_NAME),
            None => (state.limits.max_body_bytes, "limits.max_body_bytes"),
        };
        let bytes = read_body(
            &parts.headers,
            body,
            (limit, name),
            state.limits.body_timeout,
        )
        .await?;
        let bytes: &[u8] = if K::EMPTY_IS_OBJECT && bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        if bytes.starts_with(BOM) {
            return Err(ApiError::bad_request(BOM_MESSAGE));
        }
        serde_json::from_slice(bytes)
            .map(|v| JsonBody(v, PhantomData))
            .map_err(|e| ApiError::bad_request(format!("body must be {}: {e}", K::EXPECTED)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn json_endpoints_share_one_content_type_rule() {
        let with = |ct: Option<&'static str>| {
            let mut h = HeaderMap::new();
            if let Some(ct) = ct {
                h.insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
            }
            check_json_type(&h)
        };
        for ok in [
            None,
            Some("application/json"),
            Some("Application/JSON; charset=utf-8"),
            Some("application/merge-patch+json"),
        ] {
            assert!(with(ok).is_ok(), "{ok:?}");
        }
        let e = with(Some("application/x-www-form-urlencoded")).expect_err("refused");
        assert_eq!(e.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
        assert_eq!(
            e.body.message,
            "Content-Type 'application/x-www-form-urlencoded' is not supported; send application/json"
        );
        assert!(with(Some("text/plain")).is_err());
    }
}
