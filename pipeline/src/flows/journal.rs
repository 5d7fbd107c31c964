//! How a pass of the flow worker reaches the store: everything it changed (run states,
//! index entries, entry-rule state, inbox commands taken, `flow-*` events, the `events`
//! cursor) is first written as one journal document, then applied, then the journal is
//! deleted. The events are appended with a Delta `txn` (app id `tidemark-flows`, version
//! = the pass), so a crash anywhere is repaired by applying the journal again: no run is
//! lost and no event is emitted twice.

use chrono::{DateTime, Utc};
use object_store::{ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};

use super::decide::EntryState;
use super::def::Flows;
use super::run::Run;
use super::store::{Command, FlowStore};
use crate::Result;
use crate::storage::Store;
use crate::storage::events_table::{self, SystemEvent};
use crate::storage::registry::Registry;

/// The Delta `txn` app id of the `flow-*` events.
pub const APP_ID: &str = "tidemark-flows";

/// Where the worker is: the last pass applied and the `events` version read up to.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq)]
pub struct Cursor {
    pub pass: u64,
    /// `-1`: not yet placed (the first pass starts at the head: older events start nothing).
    pub events_version: i64,
}

/// What one pass changed.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Journal {
    pub pass: u64,
    pub events_version: i64,
    pub runs: Vec<Run>,
    /// (environment, due at, flow, run).
    pub dues_add: Vec<(String, DateTime<Utc>, String, String)>,
    /// (environment, minute, flow, run).
    pub dues_del: Vec<(String, String, String, String)>,
    /// (environment, user, flow, run).
    pub waits_add: Vec<(String, String, String, String)>,
    pub waits_del: Vec<(String, String, String, String)>,
    /// (environment, flow, user, state).
    pub entries: Vec<(String, String, String, EntryState)>,
    /// Inbox commands taken: (environment, name).
    pub taken: Vec<(String, String)>,
    /// Inbox commands taken in part: what is left of them, written in their place.
    #[serde(default)]
    pub requeued: Vec<(String, String, Command)>,
    pub events: Vec<SystemEvent>,
    /// Flows to pause: (environment, flow, reason).
    pub pauses: Vec<(String, String, String)>,
}

impl Journal {
    pub fn is_empty(&self) -> bool {
        self.runs.is_empty()
            && self.taken.is_empty()
            && self.requeued.is_empty()
            && self.events.is_empty()
            && self.dues_del.is_empty()
            && self.waits_del.is_empty()
            && self.pauses.is_empty()
    }
}

fn path(store: &Store, name: &str) -> object_store::path::Path {
    store.paths().flow_worker().join(name)
}

pub async fn cursor(store: &Store) -> Result<Cursor> {
    match store.object_store().get(&path(store, "cursor.json")).await {
        Ok(got) => Ok(serde_json::from_slice(&got.bytes().await?)?),
        Err(object_store::Error::NotFound { .. }) => Ok(Cursor {
            pass: 0,
            events_version: -1,
        }),
        Err(e) => Err(e.into()),
    }
}

async fn put_cursor(store: &Store, c: &Cursor) -> Result<()> {
    store
        .object_store()
        .put(
            &path(store, "cursor.json"),
            PutPayload::from(serde_json::to_vec(c)?),
        )
        .await?;
    Ok(())
}

/// A journal left by a pass that did not finish applying.
pub async fn pending(store: &Store) -> Result<Option<Journal>> {
    match store.object_store().get(&path(store, "journal.json")).await {
        Ok(got) => Ok(Some(serde_json::from_slice(&got.bytes().await?)?)),
        Err(object_store::Error::NotFound { .. }) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// Fault injection for crash tests: `TIDEMARK_CRASH_AFTER=flow-journal` aborts right
/// after a pass's journal (one that changes runs) is written, `flow-events` after its
/// events are committed.
fn crash_point(step: &str) {
    if std::env::var("TIDEMARK_CRASH_AFTER").is_ok_and(|v| v == step) {
        eprintln!("tidemark: crashing after {step} (TIDEMARK_CRASH_AFTER)");
        std::process::abort();
    }
}

/// Writes `j` as the journal, then applies it.
pub async fn commit(store: &Store, j: &Journal) -> Result<Cursor> {
    store
        .object_store()
        .put(
            &path(store, "journal.json"),
            PutPayload::from(serde_json::to_vec(j)?),
        )
        .await?;
    if !j.runs.is_empty() {
        crash_point("flow-journal");
    }
    apply(store, j).await
}

/// Store writes of one group made at once.
const PARALLEL: usize = 32;

type Job<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<()>> + Send + 'a>>;

/// Runs `jobs`, [`PARALLEL`] at a time; the first error ends it.
async fn each(jobs: Vec<Job<'_>>) -> Result<()> {
    use futures::{StreamExt, TryStreamExt};
    futures::stream::iter(jobs)
        .buffer_unordered(PARALLEL)
        .try_collect::<()>()
        .await
}

/// Applies a journal (again, after a crash: every step is idempotent) and deletes it.
pub async fn apply(store: &Store, j: &Journal) -> Result<Cursor> {
    if !j.events.is_empty() {
        let table = events_table::open_or_create(store).await?;
        let done = events_table::committed_version(&table, APP_ID)
            .await?
            .unwrap_or(-1);
        if done < j.pass as i64 {
            let batch = events_table::system_batch(&j.events)?;
            events_table::append(table, vec![batch], Some(APP_ID), j.pass as i64).await?;
        }
        crash_point("flow-events");
    }
    write_new(store, j).await?;
    remove_old(store, j).await?;
    let flows: Flows = Registry::new(store.clone());
    for (env, flow, reason) in &j.pauses {
        if let Err(e) = flows.set_paused(env, flow, true, Some(reason)).await {
            tracing::warn!(flow, error = %e, "flows: cannot pause a failing flow");
        }
    }
    let c = Cursor {
        pass: j.pass,
        events_version: j.events_version,
    };
    put_cursor(store, &c).await?;
    match store
        .object_store()
        .delete(&path(store, "journal.json"))
        .await
    {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(e.into()),
    }
    Ok(c)
}

/// The journal's new state: index entries, runs, entry-rule state.
async fn write_new(store: &Store, j: &Journal) -> Result<()> {
    let fs = |env: &str| FlowStore::new(store, env);
    // What a run needs to be found again is written before what it no longer needs is
    // deleted: new index entries, then the run, then old entries. Each group is written
    // `PARALLEL` at a time.
    each(
        j.dues_add
            .iter()
            .map(|(env, at, flow, run)| -> Job<'_> {
                let f = fs(env);
                Box::pin(async move { f.due_add(*at, flow, run).await })
            })
            .collect(),
    )
    .await?;
    each(
        j.waits_add
            .iter()
            .map(|(env, user, flow, run)| -> Job<'_> {
                let f = fs(env);
                Box::pin(async move { f.wait_add(user, flow, run).await })
            })
            .collect(),
    )
    .await?;
    each(
        j.runs
            .iter()
            .map(|run| -> Job<'_> {
                let f = fs(&run.environment);
                Box::pin(async move { f.put_run(run).await })
            })
            .collect(),
    )
    .await?;
    each(
        j.entries
            .iter()
            .map(|(env, flow, user, state)| -> Job<'_> {
                let f = fs(env);
                Box::pin(async move { f.put_entry(flow, user, state).await })
            })
            .collect(),
    )
    .await?;
    Ok(())
}

/// What the journal's runs no longer need: old index entries, inbox commands taken.
async fn remove_old(store: &Store, j: &Journal) -> Result<()> {
    let fs = |env: &str| FlowStore::new(store, env);
    let stale_dues: Vec<_> = j
        .dues_del
        .iter()
        .filter(|(env, minute, flow, run)| {
            !j.dues_add.iter().any(|(e, at, f, r)| {
                e == env && f == flow && r == run && super::store::minute(*at) == *minute
            })
        })
        .collect();
    each(
        stale_dues
            .iter()
            .map(|(env, minute, flow, run)| -> Job<'_> {
                let f = fs(env);
                Box::pin(async move { f.due_done(minute, flow, run).await })
            })
            .collect(),
    )
    .await?;
    let stale_waits: Vec<_> = j
        .waits_del
        .iter()
        .filter(|w| !j.waits_add.contains(w))
        .collect();
    each(
        stale_waits
            .iter()
            .map(|(env, user, flow, run)| -> Job<'_> {
                let f = fs(env);
                Box::pin(async move { f.wait_del(user, flow, run).await })
            })
            .collect(),
    )
    .await?;
    each(
        j.taken
            .iter()
            .map(|(env, name)| -> Job<'_> {
                let f = fs(env);
                Box::pin(async move { f.take(name).await })
            })
            .collect(),
    )
    .await?;
    each(
        j.requeued
            .iter()
            .map(|(env, name, rest)| -> Job<'_> {
                let f = fs(env);
                Box::pin(async move { f.requeue(name, rest).await })
            })
            .collect(),
    )
    .await?;
    Ok(())
}
