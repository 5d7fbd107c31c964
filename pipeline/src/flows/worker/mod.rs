//! The flow worker: one process of a store holds its lease. Each pass
//! 1. takes in the inbox (API starts, cancels, retries), applying the entry rule;
//! 2. lists the runs that are due (delays, retries, wait timeouts);
//! 3. reads the new `events` commits: events that match a published flow's starts
//!    start runs (one run per flow and event, whatever happens), and events a waiting run
//!    waits for resume it;
//! 4. advances every run it holds ([`super::exec`]), webhook steps concurrently;
//! 5. commits all of it through the journal ([`super::journal`]).
//!
//! [`intake`] takes in commands and events; [`finish`] advances the runs and writes the
//! journal.

mod finish;
mod intake;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use tidemark_sinks::client::SafeClient;
use tidemark_sinks::crypto::MasterKey;
use tidemark_sinks::retry::RetryPolicy;
use tokio::sync::watch;

use super::decide::EntryState;
use super::def::Flows;
use super::exec::Emit;
use super::journal::{self, Cursor, Journal};
use super::model::{EventStart, Spec};
use super::run::{Run, Status};
use super::store::{Command, FlowStore, Start, minute};
use super::template::Engine;
use crate::Result;
use crate::config::FlowsConfig;
use crate::storage::Store;
use crate::webhooks::follow::{Follower, NewEvent};

/// Inbox commands taken per environment and pass.
const MAX_COMMANDS: usize = 200;
/// `events` commits read per pass.
const MAX_COMMITS: i64 = 50;

/// A run held by a pass, with where it was in the indexes when loaded.
struct Held {
    run: Run,
    /// Its due entry as listed (a stale one is deleted).
    listed: Option<String>,
    old_due: Option<DateTime<Utc>>,
    old_wait: bool,
    /// Whether to advance it in this pass.
    advance: bool,
    emits: Vec<Emit>,
}

type RunKey = (String, String, String);

pub struct Worker {
    store: Store,
    config: FlowsConfig,
    key: MasterKey,
    client: SafeClient,
    policy: RetryPolicy,
    engine: Engine,
    follower: Follower,
    cursor: Cursor,
    versions: HashMap<(String, String, u32), Arc<Spec>>,
    /// Runs that failed in a row, per (environment, flow).
    failures: HashMap<(String, String), (u32, String)>,
    /// A journal was written but not wholly applied (a store error): it is applied before
    /// the next pass, whose journal would otherwise replace it.
    unapplied: bool,
}

/// Runs the worker until `stop` turns true.
pub async fn run(
    store: Store,
    config: FlowsConfig,
    key: MasterKey,
    client: SafeClient,
    policy: RetryPolicy,
    mut stop: watch::Receiver<bool>,
) -> Result<()> {
    let mut w = Worker::new(store, config, key, client, policy).await?;
    let mut tick = tokio::time::interval(w.config.poll_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if let Err(e) = w.pass(Utc::now()).await {
                    tracing::warn!(error = %e, "flows: pass failed; retrying");
                }
            }
            _ = stop.changed() => return Ok(()),
        }
    }
}

fn glob(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti, mut star, mut mark) = (0, 0, None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == t[ti]) {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ti;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|c| *c == '*')
}

/// Whether event `ev` (with its parsed properties) matches one of `starts`.
pub fn starts_on(starts: &[EventStart], ev: &NewEvent, props: &Value) -> bool {
    starts.iter().any(|s| {
        (s.names.is_empty() || s.names.iter().any(|n| glob(n, &ev.event_name)))
            && (s.categories.is_empty() || s.categories.contains(&ev.category))
            && s.segment.as_ref().is_none_or(|seg| {
                props.get("segment_id").and_then(Value::as_str) == Some(seg.as_str())
            })
    })
}

impl Worker {
    pub async fn new(
        store: Store,
        config: FlowsConfig,
        key: MasterKey,
        client: SafeClient,
        policy: RetryPolicy,
    ) -> Result<Worker> {
        if let Some(j) = journal::pending(&store).await? {
            tracing::info!(
                pass = j.pass,
                "flows: applying the journal of an unfinished pass"
            );
            journal::apply(&store, &j).await?;
        }
        let cursor = journal::cursor(&store).await?;
        Ok(Worker {
            follower: Follower::new(store.clone())?,
            store,
            config,
            key,
            client,
            policy,
            engine: Engine::new(),
            cursor,
            versions: HashMap::new(),
            failures: HashMap::new(),
            unapplied: false,
        })
    }

    async fn spec(&mut self, env: &str, flow: &str, version: u32) -> Result<Option<Arc<Spec>>> {
        let k = (env.to_string(), flow.to_string(), version);
        if let Some(s) = self.versions.get(&k) {
            return Ok(Some(s.clone()));
        }
        let Some(v) = FlowStore::new(&self.store, env)
            .version(flow, version)
            .await?
        else {
            return Ok(None);
        };
        let s = Arc::new(v.spec);
        self.versions.insert(k, s.clone());
        Ok(Some(s))
    }

    /// One pass; returns how many runs it changed.
    pub async fn pass(&mut self, now: DateTime<Utc>) -> Result<usize> {
        if self.unapplied {
            if let Some(j) = journal::pending(&self.store).await? {
                self.cursor = journal::apply(&self.store, &j).await?;
            }
            self.unapplied = false;
        }
        let all = Flows::new(self.store.clone()).all().await?.environments;
        let mut j = Journal {
            pass: self.cursor.pass + 1,
            events_version: self.cursor.events_version,
            ..Journal::default()
        };
        let mut held: BTreeMap<RunKey, Held> = BTreeMap::new();
        let mut entries: HashMap<(String, String, String), EntryState> = HashMap::new();
        for (env, flows) in &all {
            let fs = FlowStore::new(&self.store, env);
            for (name, mut cmd) in fs.inbox(MAX_COMMANDS).await? {
                let room = self.config.max_runs_per_pass.saturating_sub(held.len());
                if room == 0 {
                    break;
                }
                // A start of many users (a segment's members) is taken in over several
                // passes: the rest of it stays in the inbox, so a pass holds a bounded
                // number of runs.
                let rest = match &mut cmd {
                    Command::Start(s) if s.runs.len() > room => {
                        let later = s.runs.split_off(room);
                        Some(Command::Start(Start {
                            runs: later,
                            ..s.clone()
                        }))
                    }
                    _ => None,
                };
                self.command(&fs, flows, cmd, now, &mut held, &mut entries, &mut j)
                    .await?;
                match rest {
                    Some(r) => j.requeued.push((env.clone(), name, r)),
                    None => j.taken.push((env.clone(), name)),
                }
            }
            let room = self.config.max_runs_per_pass.saturating_sub(held.len());
            for (m, flow, run) in fs.due(now, room).await? {
                let key = (env.clone(), flow.clone(), run.clone());
                if held.contains_key(&key) {
                    continue;
                }
                match fs.run(&flow, &run).await? {
                    Some(r) if r.status.is_active() && r.due_at.is_some_and(|d| d <= now) => {
                        let mut h = hold(r, true);
                        h.listed = Some(m);
                        held.insert(key, h);
                    }
                    Some(r) if r.status.is_active() && r.due_at.is_some_and(|d| minute(d) == m) => {
                    }
                    _ => j.dues_del.push((env.clone(), m, flow, run)),
                }
            }
        }
        self.follow(&all, now, &mut held, &mut entries, &mut j)
            .await?;
        self.advance(&all, now, &mut held).await;
        self.finish(now, held, entries, &mut j).await?;
        let changed = j.runs.len();
        if j.is_empty() && j.events_version == self.cursor.events_version {
            return Ok(0);
        }
        self.unapplied = true;
        self.cursor = journal::commit(&self.store, &j).await?;
        self.unapplied = false;
        Ok(changed)
    }
}

fn hold(run: Run, advance: bool) -> Held {
    Held {
        old_due: run.due_at.filter(|_| run.status.is_active()),
        old_wait: run.status == Status::Waiting,
        listed: None,
        advance,
        emits: Vec::new(),
        run,
    }
}

fn new_run(env: &str, s: &Start, id: &str, user: &str) -> Run {
    Run {
        id: id.to_string(),
        environment: env.to_string(),
        flow_id: s.flow.clone(),
        version: s.version,
        user_id: user.to_string(),
        started_at: s.at,
        trigger: s.trigger.clone(),
        variables: s.variables.clone(),
        status: Status::Running,
        step: None,
        attempt: 0,
        due_at: None,
        wait: None,
        outputs: Map::new(),
        error: None,
        ended_at: None,
        log: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_match_event_names() {
        assert!(glob("checkout-*", "checkout-started"));
        assert!(glob("*", "x"));
        assert!(glob("a?c", "abc"));
        assert!(!glob("a?c", "abbc"));
        assert!(!glob("checkout-*", "check"));
        assert!(glob("segment-entered", "segment-entered"));
    }
}
