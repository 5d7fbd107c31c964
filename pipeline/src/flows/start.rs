//! Starting runs over the API (`POST /v1/{env}/flows/{id}/start`) and previewing a flow
//! for one user (`…/preview`, nothing sent, nothing stored).
//!
//! A start resolves the variables once, names its runs, and posts one command to the
//! worker's inbox: it is acknowledged when that command is stored. With an
//! `idempotency_key`, the key's record (create-only, written first) holds the whole
//! start, so the same key answers the same run ids and starts nothing new, and a start
//! whose inbox command was lost to a crash is posted again from the record.

use std::collections::BTreeSet;

use arrow::array::AsArray;
use chrono::Utc;
use datafusion::prelude::{col, lit};
use serde_json::{Map, Value, json};
use sha2::Digest;

use super::def::{Flow, Flows};
use super::exec::{self, masked};
use super::model::{Spec, StepKind};
use super::run::run_id;
use super::store::{Command, FlowStore, KeyRecord, Start};
use super::template::Engine;
use super::vars::{Given, Resolved, resolve};
use crate::problem::{Problem, WriteError, object_of};
use crate::storage::Store;
use crate::{Error, Result, query};

/// Users one API start may name (`user_ids`).
pub const MAX_USERS: usize = 1000;
/// Members of a segment one start may reach.
pub const MAX_SEGMENT_USERS: usize = 1_000_000;
/// The longest idempotency key.
pub const MAX_KEY_BYTES: usize = 200;

const FIELDS: [&str; 6] = [
    "user_id",
    "user_ids",
    "segment",
    "variables",
    "idempotency_key",
    "trigger",
];

/// The published version a start uses, or why there is none.
pub async fn published(store: &Store, environment: &str, flow: &Flow) -> Result<(u32, Spec)> {
    let Some(v) = flow.published else {
        return Err(Error::Conflict(format!(
            "flow '{}' has no published version: publish it first (POST /v1/{environment}/flows/{}/publish)",
            flow.id, flow.id
        )));
    };
    let version = FlowStore::new(store, environment)
        .version(&flow.id, v)
        .await?
        .ok_or_else(|| Error::Unavailable(format!("flow '{}': version {v} is missing", flow.id)))?;
    Ok((v, version.spec))
}

fn invalid(field: &str, message: impl Into<String>) -> WriteError {
    WriteError::Invalid(vec![Problem::field(field, message)])
}

/// Of `ids`, those with a profile (an erased user has none).
async fn existing(store: &Store, environment: &str, ids: &[String]) -> Result<BTreeSet<String>> {
    let (ctx, narrowing) = query::profiles_session(store, environment).await?;
    let list: Vec<_> = ids.iter().map(|u| lit(u.as_str())).collect();
    narrowing
        .apply(&ctx, col("user_id").in_list(list.clone(), false))
        .await?;
    if !ctx.table_exist("profiles")? {
        return Ok(BTreeSet::new());
    }
    let batches = ctx
        .table("profiles")
        .await?
        .filter(col("user_id").in_list(list, false))?
        .select_columns(&["user_id"])?
        .collect()
        .await?;
    let mut out = BTreeSet::new();
    for b in &batches {
        let c = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8)?;
        out.extend(c.as_string::<i32>().iter().flatten().map(str::to_string));
    }
    Ok(out)
}

/// The users a start names: `user_id`, `user_ids` or a segment's members.
async fn users(
    store: &Store,
    environment: &str,
    o: &Map<String, Value>,
) -> std::result::Result<Vec<String>, WriteError> {
    let given: Vec<&str> = ["user_id", "user_ids", "segment"]
        .into_iter()
        .filter(|k| o.contains_key(*k))
        .collect();
    let ids = match given.as_slice() {
        ["user_id"] => match o.get("user_id") {
            Some(Value::String(s)) if !s.is_empty() => vec![s.clone()],
            other => {
                let shown = other.cloned().unwrap_or_default();
                return Err(invalid(
                    "user_id",
                    format!("{shown} is not a user id (a non-empty string)"),
                ));
            }
        },
        ["user_ids"] => user_list(o.get("user_ids"))?,
        ["segment"] => return members(store, environment, o.get("segment")).await,
        _ => {
            return Err(invalid(
                "user_id",
                "give exactly one of user_id, user_ids or segment",
            ));
        }
    };
    let found = existing(store, environment, &ids).await?;
    let field = given[0];
    let missing: Vec<Problem> = ids
        .iter()
        .filter(|u| !found.contains(*u))
        .map(|u| {
            Problem::field(
                if field == "user_id" {
                    "user_id"
                } else {
                    "user_ids"
                },
                format!("no user '{u}' in environment '{environment}' (never seen, or erased)"),
            )
        })
        .collect();
    if !missing.is_empty() {
        return Err(WriteError::Invalid(missing));
    }
    Ok(ids)
}

/// `user_ids`: 1 to [`MAX_USERS`] non-empty strings, each once.
fn user_list(v: Option<&Value>) -> std::result::Result<Vec<String>, WriteError> {
    let Some(list) = v.and_then(Value::as_array) else {
        return Err(invalid("user_ids", "must be an array of user ids"));
    };
    if list.is_empty() || list.len() > MAX_USERS {
        return Err(invalid(
            "user_ids",
            format!("holds {} ids; give 1 to {MAX_USERS}", list.len()),
        ));
    }
    let mut ids = Vec::new();
    let mut problems = Vec::new();
    for (i, v) in list.iter().enumerate() {
        match v.as_str() {
            Some(s) if !s.is_empty() => ids.push(s.to_string()),
            _ => problems.push(Problem::field(
                &format!("user_ids[{i}]"),
                format!("{v} is not a user id"),
            )),
        }
    }
    if !problems.is_empty() {
        return Err(WriteError::Invalid(problems));
    }
    ids.sort();
    ids.dedup();
    Ok(ids)
}

/// The members of the segment `v` names (after its last evaluation).
async fn members(
    store: &Store,
    environment: &str,
    v: Option<&Value>,
) -> std::result::Result<Vec<String>, WriteError> {
    let Some(seg) = v.and_then(Value::as_str) else {
        return Err(invalid("segment", "must be a segment id"));
    };
    crate::segments::store::Segments::new(store.clone())
        .get(environment, seg)
        .await
        .map_err(|_| {
            invalid(
                "segment",
                format!("no segment '{seg}' in environment '{environment}'"),
            )
        })?;
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let page =
            crate::segments::members(store, environment, seg, 10_000, cursor.as_deref()).await?;
        ids.extend(
            page.members
                .iter()
                .filter_map(|m| m["user_id"].as_str().map(str::to_string)),
        );
        if ids.len() > MAX_SEGMENT_USERS {
            return Err(invalid(
                "segment",
                format!("'{seg}' has more than {MAX_SEGMENT_USERS} members"),
            ));
        }
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(ids),
        }
    }
}

/// The variables as an answer shows them: value (masked when redacted) and source.
fn shown(spec: &Spec, r: &Resolved) -> Value {
    let values = masked(spec, &r.values);
    let vars: Map<String, Value> = r
        .sources
        .iter()
        .map(|(k, s)| (k.clone(), json!({"value": values.get(k), "source": s})))
        .collect();
    let ignored: Map<String, Value> = r
        .ignored
        .iter()
        .map(|(k, i)| {
            let v = if spec.redacts(k) {
                json!("[redacted]")
            } else {
                i.value.clone()
            };
            (k.clone(), json!({"value": v, "reason": i.reason}))
        })
        .collect();
    json!({"variables": vars, "ignored": ignored})
}

/// Starts runs of flow `id` from an API call (`via`: `api` or `cli`).
pub async fn start(
    store: &Store,
    environment: &str,
    id: &str,
    input: &Value,
    via: &str,
    max_depth: usize,
) -> std::result::Result<Value, WriteError> {
    let (o, problems) = object_of(input, &FIELDS).map_err(WriteError::Invalid)?;
    if !problems.is_empty() {
        return Err(WriteError::Invalid(problems));
    }
    let (version, spec) = startable(store, environment, id).await?;
    let key = match o.get("idempotency_key") {
        None | Some(Value::Null) => None,
        Some(Value::String(k)) if !k.is_empty() && k.len() <= MAX_KEY_BYTES => Some(k.clone()),
        Some(other) => {
            let shown = exec_short(other);
            let problem = format!("{shown} is not 1 to {MAX_KEY_BYTES} bytes of text");
            return Err(invalid("idempotency_key", problem));
        }
    };
    let fs = FlowStore::new(store, environment);
    let key_hash = key
        .as_ref()
        .map(|k| hex::encode(&sha2::Sha256::digest(format!("{id}\0{k}").as_bytes())[..16]));
    if let Some(h) = &key_hash
        && let Some(record) = fs.key(h).await?
    {
        return replay(&fs, record).await;
    }
    let given = object(o, "variables", "an object of name: value")?;
    let mut trigger = object(o, "trigger", "an object")?;
    let resolved =
        resolve(&spec.variables, &given, Given::Api, max_depth).map_err(WriteError::Invalid)?;
    let users = users(store, environment, o).await?;
    let now = Utc::now();
    let nonce = uuid::Uuid::now_v7().simple().to_string();
    let runs: Vec<(String, String)> = users
        .into_iter()
        .map(|u| {
            let k = format!("{}\0{u}", key.as_deref().unwrap_or(&nonce));
            (run_id(now.timestamp_millis(), id, &k), u)
        })
        .collect();
    trigger.insert("type".into(), json!(via));
    let start = Start {
        flow: id.to_string(),
        version,
        at: now,
        trigger: Value::Object(trigger),
        variables: resolved.values.clone(),
        runs,
    };
    let answer = answer(&spec, &resolved, &start, key.as_deref());
    let inbox = format!("{:013}-{nonce}", now.timestamp_millis());
    if let Some(h) = &key_hash {
        let record = KeyRecord {
            inbox: inbox.clone(),
            start: start.clone(),
            answer: answer.clone(),
        };
        if !fs.put_key(h, &record).await?
            && let Some(r) = fs.key(h).await?
        {
            // another start with this key won the race: its answer is the answer
            return replay(&fs, r).await;
        }
    }
    fs.post(&inbox, &Command::Start(start)).await?;
    Ok(answer)
}

/// The published version of flow `id`, if the flow takes API starts now.
async fn startable(
    store: &Store,
    environment: &str,
    id: &str,
) -> std::result::Result<(u32, Spec), WriteError> {
    let flow = Flows::new(store.clone()).get(environment, id).await?;
    if flow.paused {
        return Err(WriteError::Other(Error::Conflict(format!(
            "flow '{id}' is paused ({}); resume it first",
            flow.paused_reason.as_deref().unwrap_or("paused")
        ))));
    }
    let (version, spec) = published(store, environment, &flow).await?;
    if !spec.starts.api {
        return Err(invalid(
            "flow",
            format!("flow '{id}' does not allow API starts (starts.api is false)"),
        ));
    }
    Ok((version, spec))
}

/// Field `key` of the start as an object (empty when absent).
fn object(
    o: &Map<String, Value>,
    key: &str,
    what: &str,
) -> std::result::Result<Map<String, Value>, WriteError> {
    match o.get(key) {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(m)) => Ok(m.clone()),
        Some(other) => Err(invalid(key, format!("{} is not {what}", exec_short(other)))),
    }
}

/// A start's answer: its runs (the first [`MAX_USERS`]), the variables and what was ignored.
fn answer(spec: &Spec, resolved: &Resolved, start: &Start, key: Option<&str>) -> Value {
    let mut answer = shown(spec, resolved);
    answer["flow_id"] = json!(start.flow);
    answer["version"] = json!(start.version);
    answer["started"] = json!(start.runs.len());
    answer["runs"] = start
        .runs
        .iter()
        .take(MAX_USERS)
        .map(|(r, u)| json!({"run_id": r, "user_id": u}))
        .collect();
    answer["idempotency_key"] = json!(key);
    answer["replayed"] = json!(false);
    answer
}

/// What one step would do for the user now: its rendered request, or its branch.
async fn preview_step(
    store: &Store,
    environment: &str,
    user: &str,
    engine: &Engine,
    ctx: &Value,
    step: &super::model::Step,
) -> Result<Value> {
    let mut s = json!({"id": step.id, "type": step.kind.type_name()});
    match &step.kind {
        StepKind::Webhook { .. } => match exec::render(engine, &step.kind, ctx) {
            Ok(r) => s["request"] = json!(r),
            Err(e) => s["error"] = json!(e),
        },
        StepKind::Branch {
            condition,
            expression,
            then,
            otherwise,
        } => {
            let mut yes = true;
            if let Some(c) = condition {
                let m = exec::matches(store, environment, user, c).await?;
                s["condition"] = json!(m);
                yes &= m;
            }
            if let Some(e) = expression {
                match engine.truthy(e, ctx) {
                    Ok(t) => {
                        s["expression"] = json!(t);
                        yes &= t;
                    }
                    Err(err) => s["error"] = json!(err.to_string()),
                }
            }
            s["result"] = json!(yes);
            s["next"] = json!(if yes { then } else { otherwise });
        }
        _ => {}
    }
    Ok(s)
}

fn exec_short(v: &Value) -> String {
    super::vars::shown(v)
}

/// The answer of a start made before with the same key; its command is posted again if
/// it was lost (a crash between the key's record and the inbox).
async fn replay(fs: &FlowStore, record: KeyRecord) -> std::result::Result<Value, WriteError> {
    let first = record.start.runs.first().map(|(r, _)| r.clone());
    let started = match &first {
        Some(r) => fs.run(&record.start.flow, r).await?.is_some(),
        None => true,
    };
    if !started && !fs.has_posted(&record.inbox).await? {
        fs.post(&record.inbox, &Command::Start(record.start.clone()))
            .await?;
    }
    let mut answer = record.answer;
    answer["replayed"] = json!(true);
    Ok(answer)
}

/// Renders flow `id` for one user: the resolved variables, every webhook request, and
/// the branch each condition takes for the user now. Sends nothing, stores nothing.
pub async fn preview(
    store: &Store,
    environment: &str,
    flow: &Flow,
    spec: &Spec,
    input: &Value,
    max_depth: usize,
) -> std::result::Result<Value, WriteError> {
    let (o, problems) =
        object_of(input, &["user_id", "variables", "trigger"]).map_err(WriteError::Invalid)?;
    if !problems.is_empty() {
        return Err(WriteError::Invalid(problems));
    }
    let Some(user) = o.get("user_id").and_then(Value::as_str) else {
        return Err(invalid("user_id", "is required: the user to preview for"));
    };
    let given = o
        .get("variables")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    let resolved =
        resolve(&spec.variables, &given, Given::Api, max_depth).map_err(WriteError::Invalid)?;
    let profile = exec::profile(store, environment, user).await?;
    if profile.is_null() {
        return Err(invalid(
            "user_id",
            format!("no user '{user}' in environment '{environment}'"),
        ));
    }
    let mut trigger = o
        .get("trigger")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    trigger.insert("type".into(), json!("preview"));
    let run = super::run::Run {
        id: "run_preview".into(),
        environment: environment.to_string(),
        flow_id: flow.id.clone(),
        version: flow.published.unwrap_or(0),
        user_id: user.to_string(),
        started_at: Utc::now(),
        trigger: Value::Object(trigger),
        variables: resolved.values.clone(),
        status: super::run::Status::Running,
        step: None,
        attempt: 0,
        due_at: None,
        wait: None,
        outputs: Map::new(),
        error: None,
        ended_at: None,
        log: Vec::new(),
    };
    let ctx = run.context(profile);
    let engine = Engine::new();
    let mut steps = Vec::new();
    for step in &spec.steps {
        steps.push(preview_step(store, environment, user, &engine, &ctx, step).await?);
    }
    let mut answer = shown(spec, &resolved);
    answer["user_id"] = json!(user);
    answer["steps"] = Value::Array(steps);
    answer["sent"] = json!(false);
    Ok(answer)
}
