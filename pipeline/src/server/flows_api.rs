//! Flows (admin key): `POST/GET /v1/{env}/flows`, `GET/PUT/DELETE /v1/{env}/flows/{id}`,
//! `POST …/{id}/publish|start|preview|pause|resume|retry`, `GET …/{id}/runs[/{run}]`,
//! `POST …/{id}/runs/{run}/cancel|retry`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use serde_json::{Value, json};

use super::AppState;
use super::auth::{Admin, Authorized};
use super::body::{BodyKind, JsonBody};
use super::error::{ApiError, rejected};
use super::registry_api::Shown;
use crate::flows::def::{Flow, Flows, Validation};
use crate::flows::model::MAX_FLOW_BYTES;
use crate::flows::{runs, start};
use crate::problem::Subject;

/// A flow document.
pub struct Document;

impl BodyKind for Document {
    const BYTES: Option<usize> = Some(MAX_FLOW_BYTES);
    const LIMIT_NAME: &'static str = "256 KiB for a flow";
    const EXPECTED: &'static str = "a JSON object";
}

/// A start, a preview or the options of an action.
pub struct Action;

impl BodyKind for Action {
    const BYTES: Option<usize> = Some(1024 * 1024);
    const LIMIT_NAME: &'static str = "1 MiB for a flow start";
    const EXPECTED: &'static str = "a JSON object";
    const EMPTY_IS_OBJECT: bool = true;
}

type OneFlow = (Authorized<Admin>, Path<(String, String)>);
type OneRun = (Authorized<Admin>, Path<(String, String, String)>);

fn flows(state: &AppState) -> Flows {
    Flows::new(state.store.clone())
}

async fn validation(state: &AppState, env: &str) -> Result<Validation, ApiError> {
    Ok(Validation::load(
        &state.store,
        env,
        state.webhooks.clone(),
        state.limits.max_properties_depth,
    )
    .await?)
}

impl Shown for Flow {
    fn public(&self) -> Value {
        self.public()
    }
}

pub async fn create(
    State(state): State<Arc<AppState>>,
    Authorized { env, .. }: Authorized<Admin>,
    JsonBody(input, _): JsonBody<Value, Document>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let v = validation(&state, &env).await?;
    let key = state.webhooks.key()?;
    let (flow, secret) = flows(&state)
        .create(&env, &input, &v, key)
        .await
        .map_err(rejected(Subject::Flow))?;
    let mut out = flow.public();
    out["secret"] = Value::String(secret.expose());
    Ok((StatusCode::CREATED, Json(out)))
}

pub async fn list(
    State(state): State<Arc<AppState>>,
    auth: Authorized<Admin>,
) -> Result<Json<Value>, ApiError> {
    let all = flows(&state).list(&auth.env).await?;
    let stats = crate::flows::stats(&state.store, &auth.env).await?;
    let items: Vec<Value> = all
        .values()
        .map(|f| {
            let mut v = f.public();
            v["runs"] = stats.get(&f.id).cloned().unwrap_or_else(|| json!({}));
            v
        })
        .collect();
    Ok(Json(json!({ "flows": items })))
}

pub async fn get_one(
    State(state): State<Arc<AppState>>,
    (_, Path((env, id))): OneFlow,
) -> Result<Json<Value>, ApiError> {
    let f = flows(&state).get(&env, &id).await?;
    let mut out = f.public();
    if let Some(v) = f.published {
        let version = crate::flows::store::FlowStore::new(&state.store, &env)
            .version(&id, v)
            .await?;
        out["published"] = version.map_or(Value::Null, |v| v.document);
    }
    Ok(Json(out))
}

pub async fn replace(
    State(state): State<Arc<AppState>>,
    (_, Path((env, id))): OneFlow,
    JsonBody(input, _): JsonBody<Value, Document>,
) -> Result<Json<Value>, ApiError> {
    let v = validation(&state, &env).await?;
    let f = flows(&state)
        .update(&env, &id, &input, &v)
        .await
        .map_err(rejected(Subject::Flow))?;
    Ok(Json(f.public()))
}

pub async fn publish(
    State(state): State<Arc<AppState>>,
    (_, Path((env, id))): OneFlow,
) -> Result<Json<Value>, ApiError> {
    let v = validation(&state, &env).await?;
    let (f, version) = flows(&state)
        .publish(&env, &id, &v)
        .await
        .map_err(rejected(Subject::Flow))?;
    let mut out = f.public();
    out["version"] = json!(version);
    Ok(Json(out))
}

pub async fn start_runs(
    State(state): State<Arc<AppState>>,
    (_, Path((env, id))): OneFlow,
    JsonBody(input, _): JsonBody<Value, Action>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let limit = state.limits.max_properties_depth;
    let out = start::start(&state.store, &env, &id, &input, "api", limit)
        .await
        .map_err(rejected(Subject::Start))?;
    let code = if out["replayed"] == json!(true) {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok((code, Json(out)))
}

pub async fn preview(
    State(state): State<Arc<AppState>>,
    (_, Path((env, id))): OneFlow,
    Query(q): Query<HashMap<String, String>>,
    JsonBody(input, _): JsonBody<Value, Action>,
) -> Result<Json<Value>, ApiError> {
    let f = flows(&state).get(&env, &id).await?;
    let spec = match q.get("version").map(String::as_str) {
        None | Some("draft") => validation(&state, &env)
            .await?
            .check(&f.draft)
            .map_err(|p| ApiError::problems(Subject::Flow, p, 0))?,
        Some("published") => start::published(&state.store, &env, &f).await?.1,
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "version: '{other}' is not draft or published"
            )));
        }
    };
    Ok(Json(
        start::preview(
            &state.store,
            &env,
            &f,
            &spec,
            &input,
            state.limits.max_properties_depth,
        )
        .await
        .map_err(rejected(Subject::Start))?,
    ))
}

fn filter(q: &HashMap<String, String>) -> Result<runs::Filter, ApiError> {
    let limit = match q.get("limit").map(|l| l.parse::<usize>()) {
        None => 100,
        Some(Ok(n)) if (1..=runs::MAX_LIST).contains(&n) => n,
        _ => {
            return Err(ApiError::bad_request(
                "limit: must be an integer from 1 to 1000",
            ));
        }
    };
    let status = match q.get("status") {
        None => None,
        Some(s) => {
            Some(runs::parse_status(s).map_err(|e| ApiError::bad_request(format!("status: {e}")))?)
        }
    };
    let since = match q.get("since") {
        None => None,
        Some(s) => Some(
            crate::webhooks::parse_time(s)
                .map_err(|e| ApiError::bad_request(format!("since: {e}")))?,
        ),
    };
    Ok(runs::Filter {
        status,
        since,
        user_id: q.get("user_id").cloned(),
        limit,
    })
}

pub async fn list_runs(
    State(state): State<Arc<AppState>>,
    (_, Path((env, id))): OneFlow,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    flows(&state).get(&env, &id).await?;
    let f = filter(&q)?;
    let found = runs::list(&state.store, &env, &id, &f).await?;
    let fs = crate::flows::store::FlowStore::new(&state.store, &env);
    let mut items = Vec::with_capacity(found.len());
    let mut specs = HashMap::new();
    for r in &found {
        if let std::collections::hash_map::Entry::Vacant(e) = specs.entry(r.version) {
            e.insert(fs.version(&id, r.version).await?.map(|v| v.spec));
        }
        let mut v = runs::public(r, specs.get(&r.version).and_then(Option::as_ref));
        if let Some(o) = v.as_object_mut() {
            o.remove("log");
            o.remove("outputs");
        }
        items.push(v);
    }
    Ok(Json(json!({ "runs": items })))
}

pub async fn get_run(
    State(state): State<Arc<AppState>>,
    (_, Path((env, id, run))): OneRun,
) -> Result<Json<Value>, ApiError> {
    let r = runs::get(&state.store, &env, &id, &run).await?;
    let spec = crate::flows::store::FlowStore::new(&state.store, &env)
        .version(&id, r.version)
        .await?
        .map(|v| v.spec);
    Ok(Json(runs::public(&r, spec.as_ref())))
}

pub async fn cancel_run(
    State(state): State<Arc<AppState>>,
    (_, Path((env, id, run))): OneRun,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    runs::get(&state.store, &env, &id, &run).await?;
    let out = runs::cancel(&state.store, &env, &id, vec![run]).await?;
    Ok((StatusCode::ACCEPTED, Json(out)))
}

pub async fn retry_run(
    State(state): State<Arc<AppState>>,
    (_, Path((env, id, run))): OneRun,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let r = runs::get(&state.store, &env, &id, &run).await?;
    if r.status != crate::flows::run::Status::Failed {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "conflict",
            format!(
                "run '{run}' is {}, not failed: only failed runs are retried",
                r.status.as_str()
            ),
        ));
    }
    let out = runs::retry(&state.store, &env, &id, vec![run]).await?;
    Ok((StatusCode::ACCEPTED, Json(out)))
}

/// `POST …/{id}/retry` `{"since": "24h"}`: every run that failed since then.
pub async fn retry_failed(
    State(state): State<Arc<AppState>>,
    (_, Path((env, id))): OneFlow,
    JsonBody(input, _): JsonBody<Value, Action>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    flows(&state).get(&env, &id).await?;
    let since = match input.get("since") {
        Some(Value::String(s)) => crate::webhooks::parse_time(s)
            .map_err(|e| ApiError::bad_request(format!("since: {e}")))?,
        None => {
            return Err(ApiError::bad_request(
                "since: is required (24h, 7d or an RFC 3339 time)",
            ));
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "since: {other} is not a time"
            )));
        }
    };
    let out = runs::retry_failed_since(&state.store, &env, &id, since).await?;
    Ok((StatusCode::ACCEPTED, Json(out)))
}
