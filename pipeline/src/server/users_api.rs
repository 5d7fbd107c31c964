//! The users API: `GET/PUT/DELETE /v1/{env}/users/{id}`, `POST /v1/{env}/users:batch`,
//! `GET /v1/{env}/users` (filters, paging).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{Value, json};

use super::AppState;
use super::auth::{Admin, Authorized, Reader, Writer};
use super::body::{BodyKind, JsonBody, read_body};
use super::error::ApiError;
use crate::problem::{Problem, Subject};
use crate::profiles::{list, read};
use crate::segments::store::Segments;
use crate::users::changes::{self, BatchItem, Update};
use crate::users::fields::Registry;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserQuery {
    /// The last N events of the user (at most 1000).
    #[serde(default)]
    events: Option<String>,
}

/// One profile update (`PUT /v1/{env}/users/{id}`).
pub struct OneUpdate;

impl BodyKind for OneUpdate {
    const BYTES: Option<usize> = None;
    const LIMIT_NAME: &'static str = "limits.max_body_bytes";
    const EXPECTED: &'static str = "an object with set, set_once, unset and tags";
}

/// A batch of updates (`POST /v1/{env}/users:batch`).
pub struct Updates;

impl BodyKind for Updates {
    const BYTES: Option<usize> = None;
    const LIMIT_NAME: &'static str = "limits.max_body_bytes";
    const EXPECTED: &'static str = "a JSON array of updates ({\"id\": .., \"set\": ..})";
}

pub async fn get_user(
    State(state): State<Arc<AppState>>,
    _: Authorized<Reader>,
    Path((env, id)): Path<(String, String)>,
    Query(q): Query<UserQuery>,
) -> Result<Json<Value>, ApiError> {
    let events = match q.events.as_deref() {
        None => 0,
        Some(n) => match n.parse::<usize>() {
            Ok(n) if n <= read::MAX_EVENTS => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "events: '{n}' must be a whole number from 0 to {}",
                    read::MAX_EVENTS
                )));
            }
        },
    };
    let found = read::user(&state.store, &env, &id, events)
        .await
        .map_err(|e| ApiError::from(e).context("cannot read the profile"))?;
    match found {
        Some(profile) => Ok(Json(profile)),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!(
                "no user with id '{id}' in environment '{env}' (profiles appear a few seconds after the user's first event or write)"
            ),
        )),
    }
}

/// Validates `items` (index, user id, update) and appends them in one commit.
pub(super) async fn write_updates(
    state: &AppState,
    env: &str,
    items: Vec<(String, Update)>,
) -> Result<usize, ApiError> {
    let fields = Registry::new(state.store.clone())
        .list(env)
        .await
        .map_err(|e| ApiError::from(e).context("cannot read the field registry"))?;
    let mut problems = Vec::new();
    let mut ops = Vec::new();
    for (i, (id, update)) in items.iter().enumerate() {
        ops.push(changes::validate(
            i,
            id,
            update,
            &fields,
            state.limits.max_string_len,
            &mut problems,
        ));
    }
    if !problems.is_empty() {
        return Err(ApiError::problems(Subject::Update, problems, 0));
    }
    let batch = changes::rows(env, &ops, "api")
        .map_err(|e| ApiError::from(e).context("cannot build rows"))?;
    changes::append(&state.store, vec![batch])
        .await
        .map_err(|e| ApiError::from(e).context("cannot store the update"))?;
    state.profile_writes.notify_one();
    Ok(ops.iter().map(Vec::len).sum())
}

pub async fn put_user(
    State(state): State<Arc<AppState>>,
    _: Authorized<Writer>,
    Path((env, id)): Path<(String, String)>,
    JsonBody(update, _): JsonBody<Update, OneUpdate>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let n = write_updates(&state, &env, vec![(id.clone(), update)]).await?;
    Ok((StatusCode::ACCEPTED, Json(json!({"id": id, "changes": n}))))
}

pub async fn post_batch(
    State(state): State<Arc<AppState>>,
    Authorized { env, .. }: Authorized<Writer>,
    JsonBody(raw, _): JsonBody<Vec<Box<RawValue>>, Updates>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    if raw.is_empty() {
        return Err(ApiError::bad_request("the batch is empty"));
    }
    if raw.len() > changes::MAX_BATCH {
        return Err(ApiError::too_large(format!(
            "the batch has {} updates, more than {}",
            raw.len(),
            changes::MAX_BATCH
        )));
    }
    let mut items = Vec::new();
    let mut problems = Vec::new();
    for (index, r) in raw.iter().enumerate() {
        match serde_json::from_str::<BatchItem>(r.get()) {
            Ok(item) => items.push((item.id, item.update)),
            Err(e) => problems.push(Problem {
                index,
                field: None,
                message: format!("not a valid update: {e}"),
            }),
        }
    }
    if !problems.is_empty() {
        return Err(ApiError::problems(Subject::Update, problems, 0));
    }
    let users = items.len();
    let n = write_updates(&state, &env, items).await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"users": users, "changes": n})),
    ))
}

/// Erases the user everywhere (admin key): profile, changes, events, event stats.
pub async fn delete_user(
    State(state): State<Arc<AppState>>,
    Authorized { principal, .. }: Authorized<Admin>,
    Path((env, id)): Path<(String, String)>,
) -> Result<Json<Value>, ApiError> {
    if let Err(e) = changes::validate_user_id(&id, state.limits.max_string_len) {
        return Err(ApiError::bad_request(format!("id: user id {e}")));
    }
    let runner = crate::jobs::Runner::new(state.store.clone(), state.job_options.clone());
    let erasure = crate::profiles::erase::erase(&runner, &env, &id, &principal.key_id)
        .await
        .map_err(|e| {
            ApiError::from(e).context("the erasure failed; retry it (it is idempotent)")
        })?;
    Ok(Json(json!({
        "erasure": erasure,
        "note": "old files that held the rows are deleted by VACUUM after retention.vacuum_after; `tidemark users erasures` shows when none is left"
    })))
}

/// `POST /v1/{env}/imports?dry_run=true&map=column=field`: a CSV body (ingest or admin
/// key). 200 with the report; `failed` counts the rows that were skipped.
pub async fn post_import(
    State(state): State<Arc<AppState>>,
    Authorized { env, .. }: Authorized<Writer>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Result<Json<Value>, ApiError> {
    let mut opts = crate::users::import::ImportOptions {
        max_id_len: state.limits.max_string_len,
        ..Default::default()
    };
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "dry_run" => {
                opts.dry_run = match v.as_ref() {
                    "true" | "1" => true,
                    "false" | "0" => false,
                    other => {
                        return Err(ApiError::bad_request(format!(
                            "dry_run: '{other}' is not true or false"
                        )));
                    }
                }
            }
            "map" => match v.split_once('=') {
                Some((c, f)) if !c.is_empty() && !f.is_empty() => {
                    opts.map.insert(c.to_string(), f.to_string());
                }
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "map: '{v}' is not column=field"
                    )));
                }
            },
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown query parameter '{other}'; known: dry_run, map"
                )));
            }
        }
    }
    let limit = crate::users::import::MAX_BYTES as usize;
    let body = read_body(
        &headers,
        body,
        (limit, "the importer's 128 MB"),
        state.limits.body_timeout,
    )
    .await?;
    let reader: Box<dyn std::io::Read + Send> = Box::new(std::io::Cursor::new(body));
    let report = crate::users::import::import(&state.store, &env, reader, opts).await?;
    if report.commits > 0 {
        state.profile_writes.notify_one();
    }
    Ok(Json(json!(report)))
}

fn rfc3339(name: &str, v: &str) -> Result<chrono::DateTime<chrono::Utc>, ApiError> {
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| t.with_timezone(&chrono::Utc))
        .map_err(|e| ApiError::bad_request(format!("{name}: '{v}' is not an RFC 3339 time: {e}")))
}

/// `GET /v1/{env}/users?prefix=..&tag=..&field.NAME=..&segment=..&seen_after=..&seen_before=..
/// &limit=..&cursor=..` (read or admin key): profiles matching every filter, ordered by
/// id, one page at a time.
pub async fn list_users(
    State(state): State<Arc<AppState>>,
    Authorized { env, .. }: Authorized<Reader>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
) -> Result<Json<Value>, ApiError> {
    let mut q = list::ListQuery {
        limit: 100,
        ..Default::default()
    };
    for (k, v) in url::form_urlencoded::parse(query.unwrap_or_default().as_bytes()) {
        match k.as_ref() {
            "tag" => q.tags.push(v.into_owned()),
            "seen_after" => q.seen_after = Some(rfc3339("seen_after", &v)?),
            "seen_before" => q.seen_before = Some(rfc3339("seen_before", &v)?),
            "prefix" => q.prefix = Some(v.into_owned()),
            "segment" => {
                Segments::new(state.store.clone())
                    .get(&env, &v)
                    .await
                    .map_err(|e| match e {
                        crate::Error::NotFound(_) => ApiError::bad_request(format!(
                            "segment: no segment with id '{v}' in environment '{env}'"
                        )),
                        other => ApiError::from(other),
                    })?;
                q.segment = Some(v.into_owned());
            }
            "limit" => {
                q.limit = match v.parse::<usize>() {
                    Ok(n) if (1..=list::MAX_LIMIT).contains(&n) => n,
                    _ => {
                        return Err(ApiError::bad_request(format!(
                            "limit: '{v}' must be a whole number from 1 to {}",
                            list::MAX_LIMIT
                        )));
                    }
                }
            }
            "cursor" => q.cursor = Some(v.into_owned()),
            other => match other.strip_prefix("field.") {
                Some(name) if !name.is_empty() => {
                    q.fields.push((name.to_string(), v.into_owned()));
                }
                _ => {
                    return Err(ApiError::bad_request(format!(
                        "unknown query parameter '{other}'; known: prefix, tag, field.NAME, segment, seen_after, seen_before, limit, cursor"
                    )));
                }
            },
        }
    }
    let page = list::list(&state.store, &env, &q).await?;
    Ok(Json(json!(page)))
}
