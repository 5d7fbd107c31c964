//! Environments and API keys.
//!
//! A key looks like `tm_<id>_<secret>`. The store keeps the id, the environment, the role
//! and the SHA-256 of the secret, never the secret itself; verification looks the record
//! up by id and compares hashes in constant time.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use base64::Engine;
use chrono::{DateTime, Utc};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::storage::docs::Docs;
use crate::storage::paths::Doc;
use crate::{Error, Result};

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Send events and profile writes.
    Ingest,
    /// Read profiles, segments and analytics.
    Read,
    /// Everything in its environment, including configuration.
    Admin,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Ingest => "ingest",
            Role::Read => "read",
            Role::Admin => "admin",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Role {
    type Err = Error;
    fn from_str(s: &str) -> Result<Role> {
        match s {
            "ingest" => Ok(Role::Ingest),
            "read" => Ok(Role::Read),
            "admin" => Ok(Role::Admin),
            other => Err(Error::Invalid(format!(
                "role: '{other}' is not one of ingest, read, admin"
            ))),
        }
    }
}

/// Checks an environment name: `[a-z0-9][a-z0-9_-]{0,62}`.
pub fn validate_environment(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
        && name
            .bytes()
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if ok {
        Ok(())
    } else {
        Err(Error::Invalid(format!(
            "environment: '{name}' must match [a-z0-9][a-z0-9_-]{{0,62}}"
        )))
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Environment {
    pub name: String,
    pub created_at: DateTime<Utc>,
}

/// The `environments` config document.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Environments {
    pub environments: Vec<Environment>,
}

/// One stored key (no secret).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct KeyRecord {
    pub id: String,
    pub environment: String,
    pub role: Role,
    /// Hex SHA-256 of the secret part.
    pub secret_sha256: String,
    pub created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked_at: Option<DateTime<Utc>>,
}

/// The `api_keys` config document.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ApiKeys {
    pub keys: Vec<KeyRecord>,
}

/// A key as handed to its user, exactly once.
#[derive(Debug, Clone)]
pub struct NewKey {
    pub record: KeyRecord,
    pub token: String,
}

fn sha256_hex(s: &str) -> String {
    hex::encode(Sha256::digest(s.as_bytes()))
}

fn random_b64(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    rand::rng().fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

/// Makes a fresh key for `environment` and `role` (not stored yet).
pub fn generate_key(environment: &str, role: Role) -> NewKey {
    let mut id_bytes = [0u8; 6];
    rand::rng().fill_bytes(&mut id_bytes);
    let id = hex::encode(id_bytes);
    // URL-safe base64 may contain '_' and '-'; the id never does, so splitting on the
    // first '_' after the id is unambiguous.
    let secret = random_b64(24);
    NewKey {
        token: format!("tm_{id}_{secret}"),
        record: KeyRecord {
            id,
            environment: environment.to_string(),
            role,
            secret_sha256: sha256_hex(&secret),
            created_at: Utc::now(),
            revoked_at: None,
        },
    }
}

/// Splits a presented token into (id, secret).
fn split_token(token: &str) -> Option<(&str, &str)> {
    let rest = token.strip_prefix("tm_")?;
    let (id, secret) = rest.split_once('_')?;
    if id.len() != 12 || secret.is_empty() {
        return None;
    }
    Some((id, secret))
}

/// Why a key was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// 401: no usable key presented.
    Unauthenticated(String),
    /// 403: a valid key that may not do this.
    Forbidden(String),
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthError::Unauthenticated(m) | AuthError::Forbidden(m) => f.write_str(m),
        }
    }
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub key_id: String,
    pub environment: String,
    pub role: Role,
}

impl ApiKeys {
    /// Verifies `token` (constant-time hash comparison), without checking what it may do.
    pub fn verify(&self, token: &str) -> Option<&KeyRecord> {
        let (id, secret) = split_token(token)?;
        let record = self.keys.iter().find(|k| k.id == id)?;
        let presented = Sha256::digest(secret.as_bytes());
        let stored = hex::decode(&record.secret_sha256).ok()?;
        let equal: bool = presented.as_slice().ct_eq(stored.as_slice()).into();
        (equal && record.revoked_at.is_none()).then_some(record)
    }
}

/// The roles a door admits, as a type: an HTTP handler names it in its signature
/// (`Authorized<Admin>`), and the SDK, Postgres and Flight SQL doors pass it to
/// [`KeyCache::authorize`], the one check every door makes.
pub trait Roles: Send + Sync + 'static {
    const ROLES: &'static [Role];
}

/// Configuration and erasure: `admin` keys.
pub struct Admin;
/// Reads of profiles, segments and analytics (and every SQL door): `read` or `admin` keys.
pub struct Reader;
/// Events and profile writes: `ingest` or `admin` keys.
pub struct Writer;
/// Any valid key (`GET /v1/whoami`).
pub struct Anyone;

impl Roles for Admin {
    const ROLES: &'static [Role] = &[Role::Admin];
}
impl Roles for Reader {
    const ROLES: &'static [Role] = &[Role::Read, Role::Admin];
}
impl Roles for Writer {
    const ROLES: &'static [Role] = &[Role::Ingest, Role::Admin];
}
impl Roles for Anyone {
    const ROLES: &'static [Role] = &[Role::Ingest, Role::Read, Role::Admin];
}

/// How a door presents a key.
#[derive(Debug, Clone, Copy)]
pub enum Credential<'a> {
    /// An `Authorization` header value (`Bearer <key>`), or none.
    Header(Option<&'a str>),
    /// The key itself (HTTP basic auth, a password, a body field of an analytics SDK).
    Token(&'a str),
}

/// Checks that `principal` may act on `environment` with one of `roles`.
pub fn authorize(
    principal: &Principal,
    environment: &str,
    roles: &[Role],
) -> Result<(), AuthError> {
    if principal.environment != environment {
        return Err(AuthError::Forbidden(format!(
            "this key belongs to environment '{}', not '{environment}'",
            principal.environment
        )));
    }
    if !roles.contains(&principal.role) {
        let allowed: Vec<_> = roles.iter().map(|r| r.as_str()).collect();
        return Err(AuthError::Forbidden(format!(
            "a key with role '{}' cannot do this; it needs role {}",
            principal.role,
            allowed.join(" or ")
        )));
    }
    Ok(())
}

/// Reads and writes environments and keys in the config store.
#[derive(Clone, Debug)]
pub struct KeyAdmin {
    docs: Docs,
}

impl KeyAdmin {
    pub fn new(docs: Docs) -> KeyAdmin {
        KeyAdmin { docs }
    }

    pub async fn environments(&self) -> Result<Vec<Environment>> {
        Ok(self
            .docs
            .latest::<Environments>(Doc::Environments)
            .await?
            .map(|(_, e)| e.environments)
            .unwrap_or_default())
    }

    /// Adds `name` if it does not exist; returns whether it was created.
    pub async fn ensure_environment(&self, name: &str) -> Result<bool> {
        validate_environment(name)?;
        let mut created = false;
        self.docs
            .update(Doc::Environments, |cur: Option<Environments>| {
                let mut envs = cur.unwrap_or_default();
                created = !envs.environments.iter().any(|e| e.name == name);
                if created {
                    envs.environments.push(Environment {
                        name: name.to_string(),
                        created_at: Utc::now(),
                    });
                }
                Ok(envs)
            })
            .await?;
        Ok(created)
    }

    pub async fn keys(&self) -> Result<ApiKeys> {
        Ok(self
            .docs
            .latest::<ApiKeys>(Doc::ApiKeys)
            .await?
            .map(|(_, k)| k)
            .unwrap_or_default())
    }

    /// Creates and stores a key; the environment is created if needed.
    pub async fn create_key(&self, environment: &str, role: Role) -> Result<NewKey> {
        self.ensure_environment(environment).await?;
        let new = generate_key(environment, role);
        let record = new.record.clone();
        self.docs
            .update(Doc::ApiKeys, |cur: Option<ApiKeys>| {
                let mut keys = cur.unwrap_or_default();
                keys.keys.push(record.clone());
                Ok(keys)
            })
            .await?;
        Ok(new)
    }

    /// Revokes key `id` (the part after `tm_`); the key is kept for the record.
    pub async fn revoke_key(&self, id: &str) -> Result<KeyRecord> {
        let mut found = None;
        self.docs
            .update(Doc::ApiKeys, |cur: Option<ApiKeys>| {
                let mut keys = cur.unwrap_or_default();
                let Some(k) = keys.keys.iter_mut().find(|k| k.id == id) else {
                    return Err(Error::NotFound(format!("key: no key with id '{id}'")));
                };
                if k.revoked_at.is_none() {
                    k.revoked_at = Some(Utc::now());
                }
                found = Some(k.clone());
                Ok(keys)
            })
            .await?;
        found.ok_or_else(|| Error::NotFound(format!("key: no key with id '{id}'")))
    }
}

/// The server's view of the keys: refreshed in the background and on a miss (rate-limited),
/// so keys created or revoked by the CLI take effect within seconds.
pub struct KeyCache {
    admin: KeyAdmin,
    state: RwLock<(Arc<ApiKeys>, Instant)>,
    min_refresh: Duration,
    /// Verified tokens, so the hash is not recomputed on every request.
    verified: RwLock<HashMap<String, Principal>>,
    /// Serialises refreshes caused by unknown keys, so a flood of them reads the store at
    /// most once per `min_refresh`.
    miss_lock: tokio::sync::Mutex<()>,
}

impl KeyCache {
    pub async fn load(admin: KeyAdmin) -> Result<KeyCache> {
        let keys = admin.keys().await?;
        Ok(KeyCache {
            admin,
            state: RwLock::new((Arc::new(keys), Instant::now())),
            min_refresh: Duration::from_millis(250),
            verified: RwLock::new(HashMap::new()),
            miss_lock: tokio::sync::Mutex::new(()),
        })
    }

    fn snapshot(&self) -> (Arc<ApiKeys>, Instant) {
        match self.state.read() {
            Ok(g) => (g.0.clone(), g.1),
            Err(p) => (p.get_ref().0.clone(), p.get_ref().1),
        }
    }

    /// Re-reads the keys document.
    pub async fn refresh(&self) -> Result<()> {
        let keys = Arc::new(self.admin.keys().await?);
        // Forget cached verifications: a key may have been revoked.
        if let Ok(mut v) = self.verified.write() {
            v.clear();
        }
        if let Ok(mut g) = self.state.write() {
            *g = (keys, Instant::now());
        }
        Ok(())
    }

    fn check(&self, keys: &ApiKeys, token: &str) -> Option<Principal> {
        keys.verify(token).map(|r| Principal {
            key_id: r.id.clone(),
            environment: r.environment.clone(),
            role: r.role,
        })
    }

    /// The one role check of every door: authenticates `credential`, then checks that the
    /// key may act on `environment` (`None`: the key's own) with a role of `R`.
    pub async fn authorize<R: Roles>(
        &self,
        credential: Credential<'_>,
        environment: Option<&str>,
    ) -> Result<Principal, AuthError> {
        let principal = match credential {
            Credential::Header(h) => self.authenticate(h).await?,
            Credential::Token(t) => self.authenticate_token(t).await?,
        };
        let env = environment.unwrap_or(&principal.environment);
        authorize(&principal, env, R::ROLES)?;
        Ok(principal)
    }

    /// Authenticates an `Authorization` header value.
    async fn authenticate(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        let Some(header) = header else {
            return Err(AuthError::Unauthenticated(
                "missing Authorization header; send 'Authorization: Bearer <key>'".into(),
            ));
        };
        let Some(token) = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
        else {
            return Err(AuthError::Unauthenticated(
                "Authorization header must be 'Bearer <key>'".into(),
            ));
        };
        self.authenticate_token(token).await
    }

    /// Authenticates a key however it was sent (a bearer header, HTTP basic auth's user
    /// name, a body field of an analytics SDK).
    async fn authenticate_token(&self, token: &str) -> Result<Principal, AuthError> {
        let unknown = || AuthError::Unauthenticated("unknown or revoked API key".into());
        if split_token(token).is_none() {
            return Err(unknown());
        }
        if let Ok(v) = self.verified.read()
            && let Some(p) = v.get(token)
        {
            return Ok(p.clone());
        }
        let asked_at = Instant::now();
        let mut found = self.check(&self.snapshot().0, token);
        if found.is_none() {
            // Maybe created since the last refresh: wait for one that starts after this
            // request arrived (at most `min_refresh` after the previous one).
            let _guard = self.miss_lock.lock().await;
            let (_, at) = self.snapshot();
            if at < asked_at {
                tokio::time::sleep(self.min_refresh.saturating_sub(at.elapsed())).await;
                if let Err(e) = self.refresh().await {
                    tracing::warn!(error = %e, "cannot refresh API keys");
                }
            }
            found = self.check(&self.snapshot().0, token);
        }
        match found {
            Some(p) => {
                if let Ok(mut v) = self.verified.write() {
                    if v.len() > 10_000 {
                        v.clear();
                    }
                    v.insert(token.to_string(), p.clone());
                }
                Ok(p)
            }
            None => Err(unknown()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_keys_verify_and_others_do_not() {
        let a = generate_key("default", Role::Ingest);
        let b = generate_key("default", Role::Admin);
        let keys = ApiKeys {
            keys: vec![a.record.clone()],
        };
        assert_eq!(keys.verify(&a.token).map(|r| &r.id), Some(&a.record.id));
        assert!(keys.verify(&b.token).is_none());
        // Same id, wrong secret.
        let forged = format!("tm_{}_{}", a.record.id, "x".repeat(32));
        assert!(keys.verify(&forged).is_none());
        assert!(keys.verify("").is_none());
        assert!(keys.verify("tm_").is_none());
        // The stored record never holds the token.
        let json = serde_json::to_string(&keys).unwrap();
        let secret = a.token.rsplit_once('_').map(|x| x.1).unwrap_or("");
        assert!(!json.contains(&a.token));
        assert!(secret.len() < 8 || !json.contains(secret));
    }

    #[test]
    fn revoked_keys_do_not_verify() {
        let mut a = generate_key("default", Role::Read);
        a.record.revoked_at = Some(Utc::now());
        let keys = ApiKeys {
            keys: vec![a.record.clone()],
        };
        assert!(keys.verify(&a.token).is_none());
    }

    #[test]
    fn authorization_names_environment_and_role() {
        let p = Principal {
            key_id: "k".into(),
            environment: "prod".into(),
            role: Role::Read,
        };
        let e = authorize(&p, "staging", &[Role::Read]).unwrap_err();
        assert_eq!(
            e,
            AuthError::Forbidden("this key belongs to environment 'prod', not 'staging'".into())
        );
        let e = authorize(&p, "prod", &[Role::Ingest, Role::Admin]).unwrap_err();
        assert_eq!(
            e,
            AuthError::Forbidden(
                "a key with role 'read' cannot do this; it needs role ingest or admin".into()
            )
        );
        assert!(authorize(&p, "prod", &[Role::Read]).is_ok());
    }

    #[test]
    fn environment_names_are_checked() {
        assert!(validate_environment("default").is_ok());
        assert!(validate_environment("prod-eu_1").is_ok());
        for bad in ["", "Prod", "-x", "a b", "a/b", &"x".repeat(64)] {
            assert!(validate_environment(bad).is_err(), "{bad}");
        }
    }
}
