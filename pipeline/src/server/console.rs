//! The web console: the static files of `pipeline/console/` embedded in the binary
//! (rust-embed; nothing is fetched at run time, no build step), served under `/console/`.
//! The console is a client of the public API like any other: it has no endpoint of its
//! own, and its key stays in the browser (sent as a header, never in a URL).

use axum::body::Body;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};

use super::error::ApiError;

#[derive(rust_embed::Embed)]
#[folder = "console/"]
struct Assets;

/// Only our own scripts, styles and API: no inline code, no other origin, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                   connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// `GET /` and `GET /console`: to the console.
pub async fn to_console() -> Redirect {
    Redirect::permanent("/console/")
}

pub async fn index(headers: HeaderMap) -> Response {
    asset("index.html", &headers)
}

pub async fn file(Path(path): Path<String>, headers: HeaderMap) -> Response {
    asset(&path, &headers)
}

fn asset(path: &str, headers: &HeaderMap) -> Response {
    let Some(file) = Assets::get(path) else {
        return ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("the console has no file '{path}'"),
        )
        .into_response();
    };
    // Revalidated on every load (no stale console after an upgrade), 304 when unchanged.
    let etag = format!("\"{}\"", hex::encode(file.metadata.sha256_hash()));
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == etag));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        Response::new(Body::from(file.data.into_owned()))
    };
    let h = resp.headers_mut();
    if let Ok(ct) = HeaderValue::from_str(file.metadata.mimetype()) {
        h.insert(header::CONTENT_TYPE, ct);
    }
    if let Ok(tag) = HeaderValue::from_str(&etag) {
        h.insert(header::ETAG, tag);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_page_module_the_router_names_is_embedded() {
        let app = String::from_utf8(Assets::get("app.js").unwrap().data.into_owned()).unwrap();
        let named: Vec<&str> = app
            .split("import(\"./")
            .skip(1)
            .map(|s| &s[..s.find('"').unwrap()])
            .collect();
        assert!(named.len() >= 10, "{named:?}");
        for n in named {
            assert!(
                Assets::get(n).is_some(),
                "app.js imports {n}, which is not embedded"
            );
        }
    }

    #[test]
    fn assets_carry_their_types_and_the_policy() {
        let r = asset("app.js", &HeaderMap::new());
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(r.headers()[header::CONTENT_TYPE], "text/javascript");
        assert!(
            r.headers()[header::CONTENT_SECURITY_POLICY]
                .to_str()
                .unwrap()
                .contains("script-src 'self'")
        );
        let tag = r.headers()[header::ETAG].clone();
        let mut h = HeaderMap::new();
        h.insert(header::IF_NONE_MATCH, tag);
        assert_eq!(asset("app.js", &h).status(), StatusCode::NOT_MODIFIED);
        assert_eq!(asset("nope.js", &h).status(), StatusCode::NOT_FOUND);
        assert_eq!(
            asset("index.html", &HeaderMap::new()).headers()[header::CONTENT_TYPE],
            "text/html"
        );
    }
}
