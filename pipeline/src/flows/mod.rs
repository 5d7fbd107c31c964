//! Flows: trigger events, segments and API calls start durable, personalised runs that
//! fan out to signed webhooks.
//!
//! - [`model`]: what a flow is (variables, starts, entry rule, steps);
//! - [`parse`]: validating a flow document, every problem at once with its path;
//! - [`placeholders`]: which placeholder names can name something, checked on save;
//! - [`request`]: a webhook step's request rendered from a run's context;
//! - [`template`]: the sandboxed templates (minijinja with fuel), JSON rendered leaf by leaf;
//! - [`vars`]: resolving variables once at start (trigger, default, refused override);
//! - [`decide`]: the pure decisions: a webhook answer's effect, delay ends, entry rules;
//! - [`run`]: a run's state, ids and redaction;
//! - [`def`]: a flow as a registry kind (draft, published versions, signing secret);
//! - [`store`]: the flow state in the store (versions, runs, inbox, keys, due and wait
//!   indexes, entry state);
//! - [`start`]: starts over the API (users, a segment, idempotency keys) and previews;
//! - [`runs`]: reading runs, and asking the worker to cancel or retry them;
//! - [`exec`]: running a run's steps (rendering, sending, branching) against the store;
//! - [`journal`]: how a pass reaches the store (journal first, then applied);
//! - [`worker`]: the leased worker: takes in starts, follows `events` for triggers and
//!   waits, runs what is due, and commits each pass through a journal so that a crash
//!   loses no run and emits no `flow-*` event twice.

pub mod decide;
pub mod def;
pub mod exec;
pub mod journal;
pub mod model;
pub mod parse;
pub mod placeholders;
pub mod request;
pub mod run;
pub mod runs;
pub mod start;
pub mod store;
pub mod template;
pub mod vars;
pub mod worker;

pub use def::{Flow, Flows, Validation};
use std::collections::HashMap;

use serde_json::{Value, json};

use crate::storage::Store;

/// Per flow of `environment`, counts from its `flow-*` events in `events` (so what the
/// console shows is what SQL, exports and webhooks see): `started`, `completed`,
/// `failed` (steps that failed), `capped`, `exited`.
pub async fn stats(store: &Store, environment: &str) -> crate::Result<HashMap<String, Value>> {
    let ctx = crate::query::session(store, Some(environment)).await?;
    if !ctx.table_exist("events")? {
        return Ok(HashMap::new());
    }
    let sql = "SELECT json_get_str(properties, 'flow_id') AS flow_id, \
        sum(CASE WHEN event_name = 'flow-started' THEN 1 ELSE 0 END) AS started, \
        sum(CASE WHEN event_name = 'flow-completed' THEN 1 ELSE 0 END) AS completed, \
        sum(CASE WHEN event_name = 'flow-step-failed' THEN 1 ELSE 0 END) AS failed, \
        sum(CASE WHEN event_name = 'flow-capped' THEN 1 ELSE 0 END) AS capped, \
        sum(CASE WHEN event_name = 'flow-exited' THEN 1 ELSE 0 END) AS exited \
        FROM events WHERE category = 'system' AND event_name LIKE 'flow-%' GROUP BY 1";
    let rows = crate::query::to_json_rows(&ctx.sql(sql).await?.collect().await?)?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let id = r.get("flow_id")?.as_str()?.to_string();
            let n = |k: &str| r.get(k).cloned().unwrap_or(json!(0));
            Some((
                id,
                json!({"started": n("started"), "completed": n("completed"), "failed": n("failed"),
                       "capped": n("capped"), "exited": n("exited")}),
            ))
        })
        .collect())
}
