//! Reading and steering runs (the API's and the CLI's `runs`, `retry`, `cancel`): runs are
//! read from the store; a cancel or a retry is a command to the worker, the one writer of
//! run state.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use super::model::Spec;
use super::run::{Run, Status, run_time};
use super::store::{Command, FlowStore};
use crate::storage::Store;
use crate::{Error, Result};

/// Runs listed at most per call, and run documents read at most to find them.
pub const MAX_LIST: usize = 1000;
pub const MAX_SCAN: usize = 100_000;

/// Which runs a listing (or a bulk retry) takes.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    pub status: Option<Status>,
    pub since: Option<DateTime<Utc>>,
    pub user_id: Option<String>,
    pub limit: usize,
}

pub fn parse_status(text: &str) -> std::result::Result<Status, String> {
    let all = [
        Status::Running,
        Status::Waiting,
        Status::Completed,
        Status::Exited,
        Status::Failed,
        Status::Cancelled,
        Status::Capped,
    ];
    all.into_iter().find(|s| s.as_str() == text).ok_or_else(|| {
        format!(
            "'{text}' is not a run status: one of {}",
            all.map(Status::as_str).join(", ")
        )
    })
}

/// A run as the API shows it: variables and log details masked as the flow says.
pub fn public(run: &Run, spec: Option<&Spec>) -> Value {
    let mut v = serde_json::to_value(run).unwrap_or(Value::Null);
    if let Some(s) = spec {
        v = super::run::redacted(&v, &|k| s.redacts(k), 0);
    }
    v
}

/// The runs of `flow` that pass `filter`, newest first.
pub async fn list(
    store: &Store,
    environment: &str,
    flow: &str,
    filter: &Filter,
) -> Result<Vec<Run>> {
    let fs = FlowStore::new(store, environment);
    let mut ids = fs.run_ids(flow).await?;
    ids.reverse();
    let mut out = Vec::new();
    let limit = filter.limit.clamp(1, MAX_LIST);
    for id in ids.into_iter().take(MAX_SCAN) {
        if let (Some(since), Some(t)) = (filter.since, run_time(&id))
            && t < since.timestamp_millis()
        {
            break;
        }
        let Some(run) = fs.run(flow, &id).await? else {
            continue;
        };
        if filter.status.is_some_and(|s| s != run.status)
            || filter.user_id.as_ref().is_some_and(|u| *u != run.user_id)
        {
            continue;
        }
        out.push(run);
        if out.len() >= limit {
            break;
        }
    }
    Ok(out)
}

/// One run, or not found (an id that cannot be a run's is not looked up).
pub async fn get(store: &Store, environment: &str, flow: &str, run: &str) -> Result<Run> {
    let found = if super::run::valid_run_id(run) && super::def::valid_flow_id(flow) {
        FlowStore::new(store, environment).run(flow, run).await?
    } else {
        None
    };
    found.ok_or_else(|| {
        Error::NotFound(format!(
            "no run '{run}' of flow '{flow}' in environment '{environment}'"
        ))
    })
}

/// Asks the worker to retry `runs` (failed ones start again at the step that failed).
pub async fn retry(
    store: &Store,
    environment: &str,
    flow: &str,
    runs: Vec<String>,
) -> Result<Value> {
    command(
        store,
        environment,
        Command::Retry {
            flow: flow.to_string(),
            runs: runs.clone(),
        },
    )
    .await?;
    Ok(json!({"flow_id": flow, "retrying": runs.len(), "runs": runs}))
}

/// Retries every run of `flow` that failed and started at or after `since`.
pub async fn retry_failed_since(
    store: &Store,
    environment: &str,
    flow: &str,
    since: DateTime<Utc>,
) -> Result<Value> {
    let filter = Filter {
        status: Some(Status::Failed),
        since: Some(since),
        user_id: None,
        limit: MAX_LIST,
    };
    let mut all = Vec::new();
    // pages of MAX_LIST: a retry takes every failed run since `since`
    let runs = list(store, environment, flow, &filter).await?;
    all.extend(runs.into_iter().map(|r| r.id));
    retry(store, environment, flow, all).await
}

/// Asks the worker to cancel `runs` (active ones end as `cancelled`).
pub async fn cancel(
    store: &Store,
    environment: &str,
    flow: &str,
    runs: Vec<String>,
) -> Result<Value> {
    command(
        store,
        environment,
        Command::Cancel {
            flow: flow.to_string(),
            runs: runs.clone(),
        },
    )
    .await?;
    Ok(json!({"flow_id": flow, "cancelling": runs.len(), "runs": runs}))
}

async fn command(store: &Store, environment: &str, c: Command) -> Result<()> {
    let name = format!(
        "{:013}-{}",
        Utc::now().timestamp_millis(),
        uuid::Uuid::now_v7().simple()
    );
    FlowStore::new(store, environment).post(&name, &c).await
}
