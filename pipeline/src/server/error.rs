//! Errors as HTTP responses: a status and a JSON body
//! `{"error": code, "message": text, "problems": [{index, field, message}]?}`.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::auth::AuthError;
use crate::problem::{MAX_PROBLEMS, Problem, Subject, WriteError};

#[derive(Debug, Serialize)]
pub struct ErrorBody {
    pub error: &'static str,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problems: Option<Vec<Problem>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub problems_total: Option<usize>,
}

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub body: ErrorBody,
    pub retry_after: Option<u32>,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: ErrorBody {
                error,
                message: message.into(),
                problems: None,
                problems_total: None,
            },
            retry_after: None,
        }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn too_large(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }

    pub fn unavailable(message: impl Into<String>) -> ApiError {
        let mut e = Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", message);
        e.retry_after = Some(1);
        e
    }

    pub fn internal(message: impl Into<String>) -> ApiError {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", message)
    }

    /// The one 400 body for invalid input: `subject`'s code and summary, the first
    /// [`MAX_PROBLEMS`] problems and how many there were (`total`, which may be more than
    /// `problems` holds when the caller stopped listing).
    pub fn problems(subject: Subject, mut problems: Vec<Problem>, total: usize) -> ApiError {
        let total = total.max(problems.len());
        problems.truncate(MAX_PROBLEMS);
        let mut e = Self::new(
            StatusCode::BAD_REQUEST,
            subject.code(),
            subject.summary(total),
        );
        e.body.problems = Some(problems);
        e.body.problems_total = Some(total);
        e
    }

    /// Says what failed before a server-side error's message (user errors keep theirs).
    pub fn context(mut self, what: &str) -> ApiError {
        if self.status.is_server_error() {
            self.body.message = format!("{what}: {}", self.body.message);
        }
        self
    }
}

/// Maps a refused write of `subject` to its response (`map_err(rejected(Subject::…))`).
pub fn rejected(subject: Subject) -> impl Fn(WriteError) -> ApiError {
    move |e| match e {
        WriteError::Invalid(p) => ApiError::problems(subject, p, 0),
        WriteError::Other(e) => e.into(),
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Unauthenticated(m) => {
                ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", m)
            }
            AuthError::Forbidden(m) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", m),
        }
    }
}

impl From<crate::Error> for ApiError {
    fn from(e: crate::Error) -> Self {
        use crate::Error;
        match e {
            Error::Invalid(m) => ApiError::bad_request(m),
            Error::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m),
            Error::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
            e if e.is_retryable() => {
                tracing::warn!(error = %e, "request failed on storage");
                ApiError::unavailable(e.to_string())
            }
            e => {
                tracing::error!(error = %e, "request failed");
                ApiError::internal(e.to_string())
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (self.status, Json(self.body)).into_response();
        if let Some(s) = self.retry_after {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(s));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        if self.status == StatusCode::REQUEST_TIMEOUT {
            // The rest of the body may still come: the connection cannot be reused.
            resp.headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}

/// The answer of a request whose handler panicked: a 500 with the panic's message, which
/// is also logged. Only that request fails; the connection and the process carry on.
pub fn panicked(panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    let message = panic
        .downcast_ref::<String>()
        .map(String::as_str)
        .or_else(|| panic.downcast_ref::<&str>().copied())
        .unwrap_or("a panic without a message");
    tracing::error!(panic = message, "a request handler panicked");
    ApiError::internal(format!("internal error (a bug): {message}")).into_response()
}

pub async fn not_found(uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {}", uri.path()),
    )
}

pub async fn method_not_allowed(method: axum::http::Method, uri: axum::http::Uri) -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        format!("method {method} is not allowed on {}", uri.path()),
    )
}
