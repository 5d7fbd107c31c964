//! Scheduled exports in the config document `exports` (environment -> id -> export):
//! validation of what users send (every problem with its field), credentials and the
//! HTTPS signing secret encrypted under the master key.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tidemark_sinks::crypto::MasterKey;
use tidemark_sinks::export::{Destination, Format, HttpTarget};
use tidemark_sinks::retry::RetryPolicy;
use tidemark_sinks::sign::Secret;
use url::Url;

use super::Context;
use super::source::{self, Query, SourceKind};
use super::window::Interval;
use crate::problem::{Problem, WriteError};
use crate::storage::Store;
use crate::storage::paths::Doc;
use crate::storage::registry::{Apply, Kind, Pausable, Registry};
use crate::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Export {
    pub id: String,
    pub source: SourceKind,
    /// Event-name globs (`*`), for `events`.
    pub events: Vec<String>,
    /// Event categories, for `events`.
    pub categories: Vec<String>,
    pub sql: Option<String>,
    pub interval: Interval,
    pub format: Format,
    /// `s3://bucket/prefix`, `gs://…`, `az://…`, `file:///…` or `https://…`.
    pub destination: String,
    /// Object-store options (credentials, endpoint, region), encrypted as one JSON object.
    pub options: Option<String>,
    /// The names of `options` (shown; the values never are).
    pub option_names: Vec<String>,
    /// The HTTPS signing secret, encrypted (HTTPS destinations only).
    pub secret: Option<String>,
    /// The first window starts here (aligned to the interval).
    pub start: DateTime<Utc>,
    pub paused: bool,
    pub paused_reason: Option<String>,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl Export {
    /// What the export reads, for [`source::source_sql`].
    pub fn query(&self) -> Query<'_> {
        Query {
            kind: self.source,
            events: &self.events,
            categories: &self.categories,
            sql: self.sql.as_deref(),
        }
    }

    /// The export as the API shows it (no credential, no secret).
    pub fn public(&self) -> Value {
        json!({
            "id": self.id,
            "source": self.source.name(),
            "filter": {"events": self.events, "categories": self.categories},
            "sql": self.sql,
            "interval": self.interval.name(),
            "format": self.format.name(),
            "destination": self.destination,
            "options": self.option_names,
            "start": self.start,
            "enabled": !self.paused,
            "paused_reason": self.paused_reason,
            "description": self.description,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
        })
    }

    pub fn is_http(&self) -> bool {
        self.destination.starts_with("https://") || self.destination.starts_with("http://")
    }

    /// Opens the destination (decrypting credentials / the signing secret).
    pub fn destination(&self, ctx: &Context) -> Result<Destination> {
        let url = Url::parse(&self.destination)
            .map_err(|e| Error::Invalid(format!("destination: {e}")))?;
        let key = ctx.key()?;
        let decrypt = |stored: &str, what: &str| {
            key.decrypt(stored)
                .map_err(|e| Error::Invalid(format!("export {}: {what}: {e}", self.id)))
        };
        if self.is_http() {
            let secret = match &self.secret {
                Some(s) => Secret::from_bytes(decrypt(s, "secret")?),
                None => return Err(Error::Invalid(format!("export {}: no secret", self.id))),
            };
            return Ok(Destination::Http(Box::new(HttpTarget {
                url,
                headers: Default::default(),
                secrets: vec![secret],
                client: ctx.client.clone(),
                retry: RetryPolicy {
                    schedule: ctx.config.http_retry_schedule.clone(),
                    jitter: 0.2,
                },
            })));
        }
        let options: BTreeMap<String, String> = match &self.options {
            Some(s) => serde_json::from_slice(&decrypt(s, "options")?)
                .map_err(|e| Error::Invalid(format!("export {}: options: {e}", self.id)))?,
            None => BTreeMap::new(),
        };
        let (store, prefix) =
            tidemark_sinks::export::open_store(&url, &options, "destination", &ctx.rules)
                .map_err(|e| Error::Invalid(e.to_string()))?;
        Ok(Destination::Store { store, prefix })
    }
}

pub type ExportsDoc = crate::storage::docs::ByEnvironment<Export>;

fn problem(field: &str, message: impl Into<String>) -> Problem {
    Problem::field(field, message)
}

const FIELDS: &[&str] = &[
    "source",
    "filter",
    "sql",
    "interval",
    "format",
    "destination",
    "options",
    "start",
    "secret",
    "description",
];

/// The checked values of a create request that are not stored as sent.
pub struct Input {
    secret: Option<Secret>,
    options: BTreeMap<String, String>,
}

/// A string field of `obj` (absent or null: `None`).
fn text(obj: &Map<String, Value>, name: &str, problems: &mut Vec<Problem>) -> Option<String> {
    match obj.get(name) {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => {
            problems.push(problem(name, "must be a string"));
            None
        }
    }
}

/// `source`, `filter` and `sql`, which depend on each other.
fn apply_source(ex: &mut Export, obj: &Map<String, Value>, problems: &mut Vec<Problem>) {
    match text(obj, "source", problems) {
        None if !obj.contains_key("source") => problems.push(problem(
            "source",
            format!("is required: one of {}", SourceKind::NAMES),
        )),
        None => {}
        Some(s) => match SourceKind::parse(&s) {
            Some(k) => ex.source = k,
            None => problems.push(problem(
                "source",
                format!(
                    "unknown source {s:?}; expected one of {}",
                    SourceKind::NAMES
                ),
            )),
        },
    }
    if let Some(f) = obj.get("filter") {
        match crate::webhooks::checks::parse_filter(f) {
            Ok(f) => {
                ex.events = f.events;
                ex.categories = f.categories;
            }
            Err(mut p) => problems.append(&mut p),
        }
        if ex.source != SourceKind::Events {
            problems.push(problem("filter", "applies to the events source only"));
        }
    }
    ex.sql = text(obj, "sql", problems);
    match (&ex.sql, ex.source) {
        (None, SourceKind::Sql) => problems.push(problem("sql", "is required for source sql")),
        (Some(_), s) if s != SourceKind::Sql => {
            problems.push(problem("sql", "applies to source sql only"))
        }
        (Some(q), _) if q.trim().is_empty() || q.len() > 100_000 => {
            problems.push(problem("sql", "must be 1 to 100000 bytes"))
        }
        _ => {}
    }
}

/// `interval`, `format` and `start` (aligned down to the interval).
fn apply_schedule(ex: &mut Export, obj: &Map<String, Value>, problems: &mut Vec<Problem>) {
    match text(obj, "interval", problems) {
        None => {}
        Some(s) => match Interval::parse(&s) {
            Some(i) => ex.interval = i,
            None => problems.push(problem(
                "interval",
                format!(
                    "unknown interval {s:?}; expected one of {}",
                    Interval::NAMES
                ),
            )),
        },
    }
    if let Some(s) = text(obj, "format", problems) {
        match Format::parse(&s, "format") {
            Ok(f) => ex.format = f,
            Err(e) => problems.push(problem(
                "format",
                e.to_string().trim_start_matches("format: ").to_string(),
            )),
        }
    }
    if let Some(s) = text(obj, "start", problems) {
        match DateTime::parse_from_rfc3339(&s) {
            Ok(t) => ex.start = t.to_utc(),
            Err(e) => problems.push(problem(
                "start",
                format!("must be an RFC 3339 time such as 2026-11-01T00:00:00Z: {e}"),
            )),
        }
    }
    ex.start = ex.interval.floor(ex.start);
}

/// The object-store `options` (names lower-cased).
fn options(obj: &Map<String, Value>, problems: &mut Vec<Problem>) -> BTreeMap<String, String> {
    let mut options = BTreeMap::new();
    match obj.get("options") {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) => {
            for (k, v) in m {
                match v.as_str() {
                    Some(s) => {
                        options.insert(k.to_ascii_lowercase(), s.to_string());
                    }
                    None => problems.push(problem(&format!("options.{k}"), "must be a string")),
                }
            }
        }
        Some(_) => problems.push(problem("options", "must be an object of name: value")),
    }
    options
}

/// The `destination` as stored: an https URL the address policy accepts (no options,
/// no credentials), or an object-store URL that opens with `options`.
fn check_destination(
    d: &str,
    options: &BTreeMap<String, String>,
    ctx: &Context,
) -> std::result::Result<String, Vec<Problem>> {
    let u =
        Url::parse(d).map_err(|e| vec![problem("destination", format!("not a valid URL: {e}"))])?;
    if !matches!(u.scheme(), "http" | "https") {
        return match tidemark_sinks::export::open_store(&u, options, "destination", &ctx.rules) {
            Ok(_) => Ok(u.to_string().trim_end_matches('/').to_string()),
            Err(tidemark_sinks::Error::Invalid { field, message }) => {
                Err(vec![problem(&field, message)])
            }
            Err(other) => Err(vec![problem("destination", other.to_string())]),
        };
    }
    let mut problems = Vec::new();
    if !options.is_empty() {
        problems.push(problem(
            "options",
            "apply to object-store destinations only",
        ));
    }
    if !u.username().is_empty() || u.password().is_some() {
        problems.push(problem("destination", "must not contain credentials"));
    } else if let Err(reason) = ctx.client.check_url(&u) {
        problems.push(problem(
            "destination",
            format!("destination refused: {}", reason.message),
        ));
    }
    if problems.is_empty() {
        Ok(u.to_string())
    } else {
        Err(problems)
    }
}

/// Builds an export from `input`, collecting every problem.
fn apply(
    ex: &mut Export,
    input: &Value,
    ctx: &Context,
) -> std::result::Result<Input, Vec<Problem>> {
    let (obj, mut problems) = crate::problem::object_of(input, FIELDS)?;
    let text = |name: &str, problems: &mut Vec<Problem>| text(obj, name, problems);
    apply_source(ex, obj, &mut problems);
    apply_schedule(ex, obj, &mut problems);
    let options = options(obj, &mut problems);
    match text("destination", &mut problems) {
        None => problems.push(problem(
            "destination",
            "is required: s3://bucket/prefix, gs://, az://, file:///dir or https://host/path",
        )),
        Some(d) => match check_destination(&d, &options, ctx) {
            Ok(d) => ex.destination = d,
            Err(mut p) => problems.append(&mut p),
        },
    }
    match obj.get("description") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if s.len() <= 1024 => ex.description = Some(s.clone()),
        Some(_) => problems.push(problem(
            "description",
            "must be a string of at most 1024 bytes",
        )),
    }
    let mut secret = None;
    if let Some(s) = text("secret", &mut problems) {
        match Secret::parse(&s) {
            Ok(s) => secret = Some(s),
            Err(e) => problems.push(problem(
                "secret",
                e.to_string().trim_start_matches("secret: ").to_string(),
            )),
        }
    }
    if secret.is_some() && !ex.is_http() && problems.is_empty() {
        problems.push(problem("secret", "applies to https:// destinations only"));
    }
    if problems.is_empty() {
        Ok(Input { secret, options })
    } else {
        Err(problems)
    }
}

impl Kind for Export {
    const DOC: Doc = Doc::Exports;
    const NOUN: &'static str = "export";

    fn not_found(environment: &str, id: &str) -> Error {
        Error::NotFound(format!(
            "export {id:?} does not exist in environment {environment:?}"
        ))
    }

    fn touch(&mut self, now: DateTime<Utc>) {
        self.updated_at = now;
    }

    /// The export's run state goes with it.
    async fn deleted(store: &Store, environment: &str, id: &str) {
        let _ = super::state::delete(store, environment, id).await;
    }
}

impl Pausable for Export {
    fn set_paused(&mut self, paused: bool, reason: Option<&str>) {
        self.paused = paused;
        self.paused_reason = paused.then(|| reason.unwrap_or("paused by a user").to_string());
    }

    /// A resumed export runs at once instead of waiting out its backoff.
    async fn resumed(store: &Store, environment: &str, id: &str) -> Result<()> {
        super::state::update(store, environment, id, super::schedule::resumed).await?;
        Ok(())
    }
}

impl Apply for Export {
    type Context = Context;
    type Extra = Input;

    fn apply(
        &mut self,
        input: &Value,
        _creating: bool,
        ctx: &Context,
    ) -> std::result::Result<Input, Vec<Problem>> {
        apply(self, input, ctx)
    }
}

/// The exports of a store.
pub type Exports = Registry<Export>;

impl Registry<Export> {
    /// Validates `input` (and, for SQL, plans the query) and stores the export; returns it
    /// and, for an HTTPS destination, its signing secret (shown once).
    pub async fn create(
        &self,
        environment: &str,
        input: &Value,
        ctx: &Context,
    ) -> std::result::Result<(Export, Option<Secret>), WriteError> {
        let now = Utc::now();
        let mut ex = Export {
            id: format!("ex_{}", uuid::Uuid::now_v7().simple()),
            source: SourceKind::Events,
            events: Vec::new(),
            categories: Vec::new(),
            sql: None,
            interval: Interval::Hour,
            format: Format::Parquet,
            destination: String::new(),
            options: None,
            option_names: Vec::new(),
            secret: None,
            start: now,
            paused: false,
            paused_reason: None,
            description: None,
            created_at: now,
            updated_at: now,
        };
        let input = ex.apply(input, true, ctx).map_err(WriteError::Invalid)?;
        if ex.sql.is_some() {
            let window = ex.interval.window(ex.start);
            let session = crate::query::session(self.store(), Some(environment)).await?;
            let q = source::source_sql(&ex.query(), window);
            if let Err(e) = source::plan(&session, &q).await {
                return Err(WriteError::Invalid(vec![problem("sql", e.to_string())]));
            }
        }
        let key: &MasterKey = ctx.key()?;
        let mut secret = None;
        if ex.is_http() {
            let s = input.secret.unwrap_or_else(Secret::generate);
            ex.secret = Some(key.encrypt(s.as_bytes()));
            secret = Some(s);
        }
        if !input.options.is_empty() {
            ex.option_names = input.options.keys().cloned().collect();
            let json =
                serde_json::to_vec(&input.options).map_err(|e| Error::Invalid(e.to_string()))?;
            ex.options = Some(key.encrypt(&json));
        }
        self.insert(environment, &ex.id, &ex).await?;
        Ok((ex, secret))
    }
}
