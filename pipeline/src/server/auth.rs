//! [`Authorized`]: the extractor that authenticates a request's key and checks it may act
//! on the path's `{env}` with a role of `R`, so a handler's role is in its signature.

use std::marker::PhantomData;
use std::sync::Arc;

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;

use super::AppState;
use super::error::ApiError;
use crate::auth::{Principal, Role};

/// The roles an endpoint admits.
pub trait Roles: Send + Sync + 'static {
    const ROLES: &'static [Role];
}

/// Configuration and erasure: `admin` keys.
pub struct Admin;
/// Reads of profiles, segments and analytics: `read` or `admin` keys.
pub struct Reader;
/// Events and profile writes: `ingest` or `admin` keys.
pub struct Writer;

impl Roles for Admin {
    const ROLES: &'static [Role] = &[Role::Admin];
}
impl Roles for Reader {
    const ROLES: &'static [Role] = &[Role::Read, Role::Admin];
}
impl Roles for Writer {
    const ROLES: &'static [Role] = &[Role::Ingest, Role::Admin];
}

/// A request whose key belongs to the path's environment and has a role of `R`.
pub struct Authorized<R> {
    pub principal: Principal,
    /// The path's `{env}`.
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
        let Some(env) = params.iter().find(|(k, _)| *k == "env").map(|(_, v)| v) else {
            return Err(ApiError::internal(
                "this route has no {env} to authorize against",
            ));
        };
        let principal = state.authorize(&parts.headers, env, R::ROLES).await?;
        Ok(Authorized {
            principal,
            env: env.to_string(),
            roles: PhantomData,
        })
    }
}
