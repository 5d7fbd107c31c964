//! [`Authorized`]: the extractor that authenticates a request's key and checks it may act
//! on the path's `{env}` with a role of `R`, so a handler's role is in its signature. The
//! check itself is [`KeyCache::authorize`](crate::auth::KeyCache::authorize), which the SDK,
//! Postgres and Flight SQL doors call too.

use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::header;
use axum::http::request::Parts;

use super::AppState;
use super::error::ApiError;
pub use crate::auth::{Admin, Anyone, Reader, Roles, Writer};
use crate::auth::{Credential, Principal};

/// A request whose key belongs to the path's environment and has a role of `R`.
pub struct Authorized<R> {
    pub principal: Principal,
    /// The path's `{env}` (on a route without one, the key's own environment).
    pub env: String,
    roles: PhantomData<R>,
}

impl<R: Roles> FromRequestParts<Arc<AppState>> for Authorized<R> {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, ApiError> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|e| ApiError::bad_request(e.body_text()))?;
        let env = params.iter().find(|(k, _)| *k == "env").map(|(_, v)| v);
        // Only a route any key may call goes without an environment to check.
        if env.is_none() && R::ROLES != Anyone::ROLES {
            return Err(ApiError::internal(
                "this route has no {env} to authorize against",
            ));
        }
        let header = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        let principal = state
            .keys
            .authorize::<R>(Credential::Header(header), env)
            .await?;
        Ok(Authorized {
            env: env.map_or_else(|| principal.environment.clone(), str::to_string),
            principal,
            roles: PhantomData,
        })
    }
}
