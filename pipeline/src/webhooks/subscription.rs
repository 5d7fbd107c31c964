//! Webhook subscriptions in the config document `webhooks` (environment -> id ->
//! subscription): validation of what users send, with the path of every problem, and the
//! encrypted signing secrets.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tidemark_sinks::crypto::MasterKey;
use tidemark_sinks::sign::Secret;

use super::checks::{self, Filter};
use crate::problem::Problem;
use crate::storage::paths::Doc;
use crate::storage::registry::{Apply, Kind, Pausable, Registry};
use crate::{Error, Result};

pub const MAX_EVENTS_LIMIT: u32 = 1000;
pub const MAX_WAIT_LIMIT_MS: u64 = 300_000;
pub const MAX_IN_FLIGHT_LIMIT: u32 = 64;
const DEFAULT_IN_FLIGHT: u32 = 8;
/// A signing secret at rest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredSecret {
    /// `base64(nonce || AES-256-GCM(key bytes))` under the master key.
    pub encrypted: String,
    pub created_at: DateTime<Utc>,
    /// Set when a rotation replaced it: it still signs until then.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A request to re-send failed messages (the worker acts on a new `seq`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Recover {
    pub since: DateTime<Utc>,
    pub seq: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Subscription {
    pub id: String,
    pub url: String,
    pub method: String,
    pub headers: BTreeMap<String, String>,
    pub filter: Filter,
    pub max_events: u32,
    pub max_wait_ms: u64,
    pub include_profile: bool,
    /// Attempts per second at most.
    pub rate_limit: Option<u32>,
    pub max_in_flight: u32,
    pub paused: bool,
    pub paused_reason: Option<String>,
    pub description: Option<String>,
    /// Newest first.
    pub secrets: Vec<StoredSecret>,
    /// Events committed after this `events` version are delivered.
    pub start_version: i64,
    pub recover: Option<Recover>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Subscription {
    /// A subscription with every default, before the user's input is applied.
    pub fn new(id: String, start_version: i64, now: DateTime<Utc>) -> Subscription {
        Subscription {
            id,
            url: String::new(),
            method: "POST".into(),
            headers: BTreeMap::new(),
            filter: Filter::default(),
            max_events: 1,
            max_wait_ms: 1000,
            include_profile: false,
            rate_limit: None,
            max_in_flight: DEFAULT_IN_FLIGHT,
            paused: false,
            paused_reason: None,
            description: None,
            secrets: Vec::new(),
            start_version,
            recover: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// The subscription as the API shows it (never a secret).
    pub fn public(&self) -> Value {
        json!({
            "id": self.id,
            "url": self.url,
            "method": self.method,
            "headers": self.headers,
            "filter": self.filter,
            "max_events": self.max_events,
            "max_wait_ms": self.max_wait_ms,
            "include_profile": self.include_profile,
            "rate_limit": self.rate_limit,
            "max_in_flight": self.max_in_flight,
            "enabled": !self.paused,
            "paused_reason": self.paused_reason,
            "description": self.description,
            "secrets": self.secrets.iter().map(|s| json!({
                "created_at": s.created_at, "expires_at": s.expires_at,
            })).collect::<Vec<_>>(),
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        })
    }

    /// The secrets that sign at `now`, newest first.
    pub fn signing_secrets(&self, key: &MasterKey, now: DateTime<Utc>) -> Result<Vec<Secret>> {
        self.secrets
            .iter()
            .filter(|s| s.expires_at.is_none_or(|t| t > now))
            .map(|s| {
                key.decrypt(&s.encrypted)
                    .map(Secret::from_bytes)
                    .map_err(|e| Error::Invalid(format!("webhook {}: secret: {e}", self.id)))
            })
            .collect()
    }
}

pub type WebhooksDoc = crate::storage::docs::ByEnvironment<Subscription>;

use crate::problem::WriteError;

fn problem(field: &str, message: impl Into<String>) -> Problem {
    Problem::field(field, message)
}

/// The settable fields of a subscription (create or update).
const FIELDS: &[&str] = &[
    "url",
    "method",
    "headers",
    "filter",
    "max_events",
    "max_wait_ms",
    "include_profile",
    "rate_limit",
    "max_in_flight",
    "enabled",
    "description",
    "secret",
];

/// `max_events`, `max_wait_ms`, `max_in_flight` and `rate_limit` (null: none).
fn apply_limits(sub: &mut Subscription, obj: &Map<String, Value>, problems: &mut Vec<Problem>) {
    let int = |name: &str, min: u64, max: u64, problems: &mut Vec<Problem>| -> Option<u64> {
        let v = obj.get(name)?;
        match v.as_u64() {
            Some(n) if (min..=max).contains(&n) => Some(n),
            _ => {
                problems.push(problem(
                    name,
                    format!("must be an integer from {min} to {max}"),
                ));
                None
            }
        }
    };
    if let Some(n) = int("max_events", 1, MAX_EVENTS_LIMIT.into(), problems) {
        sub.max_events = n as u32;
    }
    if let Some(n) = int("max_wait_ms", 0, MAX_WAIT_LIMIT_MS, problems) {
        sub.max_wait_ms = n;
    }
    if let Some(n) = int("max_in_flight", 1, MAX_IN_FLIGHT_LIMIT.into(), problems) {
        sub.max_in_flight = n as u32;
    }
    match obj.get("rate_limit") {
        None => {}
        Some(Value::Null) => sub.rate_limit = None,
        Some(_) => {
            if let Some(n) = int("rate_limit", 1, 100_000, problems) {
                sub.rate_limit = Some(n as u32);
            }
        }
    }
}

/// `include_profile` and `enabled` (a disabled subscription is paused by a user).
fn apply_flags(sub: &mut Subscription, obj: &Map<String, Value>, problems: &mut Vec<Problem>) {
    for name in ["include_profile", "enabled"] {
        if let Some(v) = obj.get(name) {
            match v.as_bool() {
                Some(b) if name == "include_profile" => sub.include_profile = b,
                Some(b) => {
                    sub.paused = !b;
                    if b {
                        sub.paused_reason = None;
                    } else if sub.paused_reason.is_none() {
                        sub.paused_reason = Some("paused by a user".into());
                    }
                }
                None => problems.push(problem(name, "must be true or false")),
            }
        }
    }
}

/// Applies the fields present in `input` to `sub`, collecting every problem. `check_url`
/// judges the URL's destination (the address policy of the deployment).
pub fn apply(
    sub: &mut Subscription,
    input: &Value,
    creating: bool,
    check_url: &dyn Fn(&url::Url) -> std::result::Result<(), String>,
) -> std::result::Result<Option<Secret>, Vec<Problem>> {
    let (obj, mut problems) = crate::problem::object_of(input, FIELDS)?;
    if creating && !obj.contains_key("url") {
        problems.push(problem("url", "is required"));
    }
    if let Some(v) = obj.get("url") {
        match checks::check_url(v, check_url) {
            Ok(u) => sub.url = u.to_string(),
            Err(p) => problems.push(p),
        }
    }
    if let Some(v) = obj.get("method") {
        match v.as_str().map(str::to_ascii_uppercase).as_deref() {
            Some(m @ ("POST" | "PUT")) => sub.method = m.to_string(),
            _ => problems.push(problem("method", "must be POST or PUT")),
        }
    }
    if let Some(v) = obj.get("headers") {
        match checks::check_headers(v) {
            Ok(h) => sub.headers = h,
            Err(mut p) => problems.append(&mut p),
        }
    }
    if let Some(v) = obj.get("filter") {
        match checks::parse_filter(v) {
            Ok(f) => sub.filter = f,
            Err(mut p) => problems.append(&mut p),
        }
    }
    apply_limits(sub, obj, &mut problems);
    apply_flags(sub, obj, &mut problems);
    match obj.get("description") {
        None => {}
        Some(Value::Null) => sub.description = None,
        Some(Value::String(s)) if s.len() <= 1024 => sub.description = Some(s.clone()),
        Some(_) => problems.push(problem(
            "description",
            "must be a string of at most 1024 bytes",
        )),
    }
    let mut secret = None;
    if let Some(v) = obj.get("secret") {
        if !creating {
            problems.push(problem(
                "secret",
                "is set on creation or with rotate-secret",
            ));
        } else {
            match v.as_str().map(Secret::parse) {
                Some(Ok(s)) => secret = Some(s),
                Some(Err(e)) => problems.push(problem(
                    "secret",
                    e.to_string().trim_start_matches("secret: ").to_string(),
                )),
                None => problems.push(problem("secret", "must be a string whsec_<base64>")),
            }
        }
    }
    if problems.is_empty() {
        Ok(secret)
    } else {
        Err(problems)
    }
}

impl Kind for Subscription {
    const DOC: Doc = Doc::Webhooks;
    const NOUN: &'static str = "webhook";

    fn touch(&mut self, now: DateTime<Utc>) {
        self.updated_at = now;
    }
}

impl Pausable for Subscription {
    fn set_paused(&mut self, paused: bool, reason: Option<&str>) {
        self.paused = paused;
        self.paused_reason = paused.then(|| reason.unwrap_or("paused by a user").to_string());
    }
}

impl Apply for Subscription {
    /// The deployment's address policy judges the URL.
    type Context = super::Context;
    type Extra = Option<Secret>;

    fn apply(
        &mut self,
        input: &Value,
        creating: bool,
        ctx: &super::Context,
    ) -> std::result::Result<Option<Secret>, Vec<Problem>> {
        apply(self, input, creating, &|u| ctx.check_url(u))
    }
}

/// The subscriptions of a store.
pub type Subscriptions = Registry<Subscription>;

impl Registry<Subscription> {
    /// Creates a subscription from `input`; returns it and its secret (shown once).
    pub async fn create(
        &self,
        environment: &str,
        input: &Value,
        key: &MasterKey,
        start_version: i64,
        check_url: &(dyn Fn(&url::Url) -> std::result::Result<(), String> + Sync),
    ) -> std::result::Result<(Subscription, Secret), WriteError> {
        let now = Utc::now();
        let mut sub = Subscription::new(
            format!("wh_{}", uuid::Uuid::now_v7().simple()),
            start_version,
            now,
        );
        let supplied = apply(&mut sub, input, true, check_url).map_err(WriteError::Invalid)?;
        let secret = supplied.unwrap_or_else(Secret::generate);
        sub.secrets.push(StoredSecret {
            encrypted: key.encrypt(secret.as_bytes()),
            created_at: now,
            expires_at: None,
        });
        self.insert(environment, &sub.id, &sub).await?;
        Ok((sub, secret))
    }

    /// Asks the worker to re-send the messages that failed at or after `since`.
    pub async fn request_recover(
        &self,
        environment: &str,
        id: &str,
        since: DateTime<Utc>,
    ) -> std::result::Result<Subscription, WriteError> {
        self.modify(environment, id, |sub| {
            let seq = sub.recover.as_ref().map_or(1, |r| r.seq + 1);
            sub.recover = Some(Recover { since, seq });
            Ok(())
        })
        .await
    }

    /// Signs with `new` from now on, with the old secrets for `grace` more.
    pub async fn rotate_secret(
        &self,
        environment: &str,
        id: &str,
        key: &MasterKey,
        new: &Secret,
        grace: chrono::Duration,
    ) -> std::result::Result<Subscription, WriteError> {
        self.modify(environment, id, |sub| {
            rotate(sub, key, new, grace);
            Ok(())
        })
        .await
    }
}

/// Rotates the signing secret: the new one signs from now; the old ones keep signing
/// until `now + grace`.
pub fn rotate(sub: &mut Subscription, key: &MasterKey, new: &Secret, grace: chrono::Duration) {
    let now = Utc::now();
    for old in &mut sub.secrets {
        let until = now + grace;
        old.expires_at = Some(old.expires_at.map_or(until, |t| t.min(until)));
    }
    sub.secrets.retain(|s| s.expires_at.is_none_or(|t| t > now));
    sub.secrets.insert(
        0,
        StoredSecret {
            encrypted: key.encrypt(new.as_bytes()),
            created_at: now,
            expires_at: None,
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    fn blank() -> Subscription {
        Subscription::new("wh_1".into(), 0, Utc::now())
    }

    #[test]
    fn every_problem_is_named() {
        let input = json!({
            "url": "ftp://x.example/", "method": "GET", "headers": {"Webhook-Id": "x", "bad header": "v", "ok": 1},
            "filter": {"events": ["", "order-*"], "categories": ["system", "bogus"], "extra": 1},
            "max_events": 0, "max_wait_ms": 999999, "rate_limit": -1, "include_profile": "yes",
            "surprise": true, "secret": "nope"
        });
        let problems = apply(&mut blank(), &input, true, &|_| Ok(())).unwrap_err();
        let fields: Vec<&str> = problems.iter().filter_map(|p| p.field.as_deref()).collect();
        for f in [
            "url",
            "method",
            "headers.Webhook-Id",
            "headers.bad header",
            "headers.ok",
            "filter.events[0]",
            "filter.categories[1]",
            "filter.extra",
            "max_events",
            "max_wait_ms",
            "rate_limit",
            "include_profile",
            "surprise",
            "secret",
        ] {
            assert!(fields.contains(&f), "{f} missing from {fields:?}");
        }
        let refused = apply(
            &mut blank(),
            &json!({"url": "http://10.0.0.1/"}),
            true,
            &|_| Err("10.0.0.1 is a private address".into()),
        )
        .unwrap_err();
        assert_eq!(
            refused[0].message,
            "destination refused: 10.0.0.1 is a private address"
        );
        let missing = apply(&mut blank(), &json!({}), true, &|_| Ok(())).unwrap_err();
        assert_eq!(
            (missing[0].field.as_deref(), missing[0].message.as_str()),
            (Some("url"), "is required")
        );
    }

    #[test]
    fn filters_match_globs_and_categories() {
        let f = Filter {
            events: vec!["segment-*".into(), "signup".into()],
            categories: vec!["system".into(), "custom".into()],
        };
        assert!(f.matches("segment-entered", "system"));
        assert!(f.matches("signup", "custom"));
        assert!(!f.matches("signup", "sdk"));
        assert!(!f.matches("login", "custom"));
        assert!(Filter::default().matches("anything", "platform"));
    }

    #[test]
    fn rotation_keeps_the_old_secret_for_the_grace_period() {
        let key = MasterKey::parse(
            &base64::Engine::encode(&base64::engine::general_purpose::STANDARD, [1u8; 32]),
            "k",
        )
        .unwrap();
        let mut sub = blank();
        let first = Secret::generate();
        sub.secrets.push(StoredSecret {
            encrypted: key.encrypt(first.as_bytes()),
            created_at: Utc::now(),
            expires_at: None,
        });
        let second = Secret::generate();
        rotate(&mut sub, &key, &second, chrono::Duration::hours(24));
        let now = Utc::now();
        assert_eq!(
            sub.signing_secrets(&key, now).unwrap(),
            vec![second.clone(), first]
        );
        assert_eq!(
            sub.signing_secrets(&key, now + chrono::Duration::hours(25))
                .unwrap(),
            vec![second]
        );
    }
}
