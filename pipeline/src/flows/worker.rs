//! The flow worker: one process of a store holds its lease. Each pass
//! 1. takes in the inbox (API starts, cancels, retries), applying the entry rule;
//! 2. lists the runs that are due (delays, retries, wait timeouts);
//! 3. reads the new `events` commits: events that match a published flow's starts
//!    start runs (one run per flow and event, whatever happens), and events a waiting run
//!    waits for resume it;
//! 4. advances every run it holds ([`super::exec`]), webhook steps concurrently;
//! 5. commits all of it through the journal ([`super::journal`]).

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::{Map, Value, json};
use tidemark_sinks::client::SafeClient;
use tidemark_sinks::crypto::MasterKey;
use tidemark_sinks::retry::RetryPolicy;
use tidemark_sinks::sign::Secret;
use tokio::sync::watch;

use super::decide::{EntryState, admit, admitted};
use super::def::{Flow, Flows};
use super::exec::{Emit, Exec, masked};
use super::journal::{self, Cursor, Journal};
use super::model::{EventStart, Spec, StepKind};
use super::run::{Run, Status, run_id};
use super::store::{Command, FlowStore, Start, minute};
use super::template::Engine;
use super::vars::{Given, resolve};
use crate::Result;
use crate::config::FlowsConfig;
use crate::storage::Store;
use crate::storage::events_table::SystemEvent;
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
        self.finish(&all, now, held, entries, &mut j).await?;
        let changed = j.runs.len();
        if j.is_empty() && j.events_version == self.cursor.events_version {
            return Ok(0);
        }
        self.unapplied = true;
        self.cursor = journal::commit(&self.store, &j).await?;
        self.unapplied = false;
        Ok(changed)
    }

    /// Takes in one inbox command.
    #[allow(clippy::too_many_arguments)]
    async fn command(
        &mut self,
        fs: &FlowStore,
        flows: &BTreeMap<String, Flow>,
        cmd: Command,
        now: DateTime<Utc>,
        held: &mut BTreeMap<RunKey, Held>,
        entries: &mut HashMap<(String, String, String), EntryState>,
        j: &mut Journal,
    ) -> Result<()> {
        let env = fs.environment().to_string();
        match cmd {
            Command::Start(s) => {
                let Some(spec) = self.spec(&env, &s.flow, s.version).await? else {
                    tracing::warn!(
                        flow = s.flow,
                        version = s.version,
                        "flows: a start names a version that is gone"
                    );
                    return Ok(());
                };
                for (id, user) in &s.runs {
                    let key = (env.clone(), s.flow.clone(), id.clone());
                    if held.contains_key(&key) || fs.run(&s.flow, id).await?.is_some() {
                        continue;
                    }
                    let run = new_run(&env, &s, id, user);
                    self.enter(fs, &spec, run, now, held, entries, j).await?;
                }
            }
            Command::Cancel { flow, runs } | Command::Retry { flow, runs }
                if !flows.contains_key(&flow) =>
            {
                tracing::debug!(flow, n = runs.len(), "flows: command for a deleted flow");
            }
            Command::Cancel { flow, runs } => {
                for id in runs {
                    let Some(h) = self.load(fs, &flow, &id, held).await? else {
                        continue;
                    };
                    if h.run.status.is_active() {
                        h.run
                            .end(Status::Cancelled, now, Some("cancelled by a user".into()));
                        h.run.log(now, None, "cancelled", None);
                        h.emits.push(Emit::Exited {
                            step: h.run.step.clone(),
                            reason: "cancelled".into(),
                        });
                    }
                }
            }
            Command::Retry { flow, runs } => {
                for id in runs {
                    let Some(h) = self.load(fs, &flow, &id, held).await? else {
                        continue;
                    };
                    if h.run.status == Status::Failed {
                        h.run.status = Status::Running;
                        h.run.attempt = 0;
                        h.run.error = None;
                        h.run.ended_at = None;
                        h.run.due_at = None;
                        h.run
                            .log(now, h.run.step.clone().as_deref(), "retried", None);
                        h.advance = true;
                    }
                }
            }
        }
        Ok(())
    }

    async fn load<'a>(
        &self,
        fs: &FlowStore,
        flow: &str,
        id: &str,
        held: &'a mut BTreeMap<RunKey, Held>,
    ) -> Result<Option<&'a mut Held>> {
        let key = (
            fs.environment().to_string(),
            flow.to_string(),
            id.to_string(),
        );
        if !held.contains_key(&key) {
            let Some(r) = fs.run(flow, id).await? else {
                return Ok(None);
            };
            held.insert(key.clone(), hold(r, false));
        }
        Ok(held.get_mut(&key))
    }

    /// A new run enters its flow: the entry rule admits it (it starts) or not (capped).
    #[allow(clippy::too_many_arguments)]
    async fn enter(
        &mut self,
        fs: &FlowStore,
        spec: &Spec,
        mut run: Run,
        now: DateTime<Utc>,
        held: &mut BTreeMap<RunKey, Held>,
        entries: &mut HashMap<(String, String, String), EntryState>,
        j: &mut Journal,
    ) -> Result<()> {
        let env = fs.environment().to_string();
        run.step = spec.steps.first().map(|s| s.id.clone());
        let mut emits = Vec::new();
        let mut admitted_run = true;
        if let Some(rule) = &spec.entry {
            let ek = (env.clone(), run.flow_id.clone(), run.user_id.clone());
            if !entries.contains_key(&ek) {
                entries.insert(ek.clone(), fs.entry(&run.flow_id, &run.user_id).await?);
            }
            let state = entries.entry(ek).or_default();
            match admit(rule, state, now.timestamp_millis()) {
                Ok(()) => admitted(rule, state, &run.id, now.timestamp_millis()),
                Err(reason) => {
                    admitted_run = false;
                    run.end(Status::Capped, now, Some(reason.clone()));
                    run.log(now, None, "capped", Some(json!({"reason": reason})));
                    j.events.push(self.event(
                        spec,
                        &run,
                        "flow-capped",
                        json!({"reason": reason}),
                        now,
                        j.events.len(),
                    ));
                }
            }
        }
        if admitted_run {
            run.log(
                now,
                None,
                "started",
                Some(json!({"variables": masked(spec, &run.variables)})),
            );
            j.events.push(self.event(
                spec,
                &run,
                "flow-started",
                json!({"variables": masked(spec, &run.variables), "trigger_type": run.trigger.get("type")}),
                now,
                j.events.len(),
            ));
            if let Some(err) = run.error.take() {
                // the start itself was refused (a required variable an event lacked)
                run.end(Status::Exited, now, Some(err.clone()));
                emits.push(Emit::Exited {
                    step: None,
                    reason: err,
                });
            }
        }
        let key = (env, run.flow_id.clone(), run.id.clone());
        let advance = run.status.is_active();
        held.insert(
            key,
            Held {
                run,
                listed: None,
                old_due: None,
                old_wait: false,
                advance,
                emits,
            },
        );
        Ok(())
    }

    /// Reads new `events` commits: triggers start runs, awaited events resume runs.
    async fn follow(
        &mut self,
        all: &BTreeMap<String, BTreeMap<String, Flow>>,
        now: DateTime<Utc>,
        held: &mut BTreeMap<RunKey, Held>,
        entries: &mut HashMap<(String, String, String), EntryState>,
        j: &mut Journal,
    ) -> Result<()> {
        if self.cursor.events_version < 0 {
            // first pass on this store: events from before the worker start nothing
            j.events_version = self.follower.head(0).await?;
            return Ok(());
        }
        let envs: HashSet<String> = all.keys().cloned().collect();
        if envs.is_empty() {
            j.events_version = self.follower.head(self.cursor.events_version).await?;
            return Ok(());
        }
        let (last, events) = self
            .follower
            .read(self.cursor.events_version, MAX_COMMITS, &envs)
            .await?;
        j.events_version = last;
        for ev in events {
            if ev.category == "system" && ev.event_name.starts_with("flow-") {
                continue;
            }
            let value: Value = serde_json::from_str(&ev.json).unwrap_or(Value::Null);
            let props = value.get("properties").cloned().unwrap_or(Value::Null);
            let fs = FlowStore::new(&self.store, &ev.environment);
            let flows = all.get(&ev.environment).cloned().unwrap_or_default();
            let mut awaited = false;
            for (id, flow) in &flows {
                let Some(v) = flow.published else { continue };
                let Some(spec) = self.spec(&ev.environment, id, v).await? else {
                    continue;
                };
                awaited |= spec.steps.iter().any(|s| matches!(&s.kind, StepKind::WaitForEvent { event, .. } if *event == ev.event_name));
                if flow.paused || !starts_on(&spec.starts.events, &ev, &props) {
                    continue;
                }
                let at = value
                    .get("received_at")
                    .and_then(Value::as_str)
                    .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                    .map_or(now, |t| t.to_utc());
                let rid = run_id(at.timestamp_millis(), id, &ev.event_id);
                let key = (ev.environment.clone(), id.clone(), rid.clone());
                if held.contains_key(&key) || fs.run(id, &rid).await?.is_some() {
                    continue;
                }
                let given = props.as_object().cloned().unwrap_or_default();
                let (variables, error) = match resolve(&spec.variables, &given, Given::Event) {
                    Ok(r) => (r.values, None),
                    Err(p) => (
                        Map::new(),
                        Some(p.iter().map(|x| x.line()).collect::<Vec<_>>().join("; ")),
                    ),
                };
                let start = Start {
                    flow: id.clone(),
                    version: v,
                    at: now,
                    trigger: json!({"type": "event", "event_id": ev.event_id, "event_name": ev.event_name,
                                    "category": ev.category, "properties": props, "received_at": value.get("received_at")}),
                    variables,
                    runs: Vec::new(),
                };
                let mut run = new_run(&ev.environment, &start, &rid, &ev.user_id);
                run.error = error;
                self.enter(&fs, &spec, run, now, held, entries, j).await?;
            }
            if awaited {
                self.resume(&fs, &ev, &value, now, held).await?;
            }
        }
        Ok(())
    }

    /// Resumes the runs of `ev`'s user that wait for it.
    async fn resume(
        &mut self,
        fs: &FlowStore,
        ev: &NewEvent,
        value: &Value,
        now: DateTime<Utc>,
        held: &mut BTreeMap<RunKey, Held>,
    ) -> Result<()> {
        for (flow, id) in fs.waits(&ev.user_id).await? {
            let Some(h) = self.load(fs, &flow, &id, held).await? else {
                continue;
            };
            let r = &mut h.run;
            let Some(wait) = r.wait.clone() else { continue };
            if r.status != Status::Waiting || wait.event != ev.event_name {
                continue;
            }
            let mut ctx = r.context(Value::Null);
            ctx["event"] = value.clone();
            if let Some(f) = &wait.filter
                && !self.engine.truthy(f, &ctx).unwrap_or(false)
            {
                continue;
            }
            let Some(spec) = self.spec(fs.environment(), &flow, r.version).await? else {
                continue;
            };
            let step = r.step.clone().unwrap_or_default();
            let next = spec
                .step(&step)
                .and_then(|(i, _)| spec.after(i))
                .map(str::to_string);
            r.outputs.insert(step.clone(), json!({"event": value}));
            r.log(
                now,
                Some(&step),
                "completed",
                Some(json!({"event_id": ev.event_id})),
            );
            h.emits.push(Emit::StepCompleted {
                step: step.clone(),
                detail: json!({"event_id": ev.event_id}),
            });
            let r = &mut h.run;
            r.status = Status::Running;
            r.wait = None;
            r.step = next;
            r.attempt = 0;
            r.due_at = None;
            h.advance = true;
        }
        Ok(())
    }

    /// Advances every held run that is due, `max_in_flight` at a time.
    async fn advance(
        &mut self,
        all: &BTreeMap<String, BTreeMap<String, Flow>>,
        now: DateTime<Utc>,
        held: &mut BTreeMap<RunKey, Held>,
    ) {
        let mut jobs = Vec::new();
        for ((env, flow, _), h) in held.iter_mut() {
            if !h.advance || !h.run.status.is_active() {
                continue;
            }
            let Some(f) = all.get(env).and_then(|m| m.get(flow)) else {
                h.run
                    .end(Status::Cancelled, now, Some("the flow was deleted".into()));
                continue;
            };
            let spec = match self.spec(env, flow, h.run.version).await {
                Ok(Some(s)) => s,
                _ => continue,
            };
            let secret = match f.signing_secret(&self.key) {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(flow, error = %e, "flows: cannot read the flow's secret");
                    continue;
                }
            };
            jobs.push((h, spec, secret));
        }
        let (store, client, policy, engine) =
            (&self.store, &self.client, &self.policy, &self.engine);
        futures::stream::iter(jobs)
            .for_each_concurrent(
                self.config.max_in_flight.max(1),
                |(h, spec, secret): (&mut Held, Arc<Spec>, Secret)| async move {
                    let x = Exec {
                        store,
                        client,
                        policy,
                        engine,
                        secret: &secret,
                        spec: &spec,
                    };
                    let emits = x.advance(&mut h.run, now).await;
                    h.emits.extend(emits);
                },
            )
            .await;
    }

    /// Turns what the held runs did into the journal: states, index changes, events,
    /// entry releases and pauses.
    async fn finish(
        &mut self,
        all: &BTreeMap<String, BTreeMap<String, Flow>>,
        now: DateTime<Utc>,
        held: BTreeMap<RunKey, Held>,
        mut entries: HashMap<(String, String, String), EntryState>,
        j: &mut Journal,
    ) -> Result<()> {
        for ((env, flow, id), h) in held {
            let run = h.run;
            let spec = self.spec(&env, &flow, run.version).await?;
            for e in &h.emits {
                let (name, props) = match e {
                    Emit::StepCompleted { step, detail } => (
                        "flow-step-completed",
                        json!({"step_id": step, "detail": detail}),
                    ),
                    Emit::StepFailed { step, error } => {
                        ("flow-step-failed", json!({"step_id": step, "error": error}))
                    }
                    Emit::Completed => ("flow-completed", json!({})),
                    Emit::Exited { step, reason } => {
                        ("flow-exited", json!({"step_id": step, "reason": reason}))
                    }
                };
                if let Some(s) = &spec {
                    j.events
                        .push(self.event(s, &run, name, props, now, j.events.len()));
                }
                self.count(&env, &flow, e, &run, j);
            }
            if let Some(m) = &h.listed
                && run
                    .due_at
                    .is_none_or(|d| minute(d) != *m || !run.status.is_active())
            {
                j.dues_del
                    .push((env.clone(), m.clone(), flow.clone(), id.clone()));
            }
            if let Some(old) = h.old_due
                && (run.due_at != Some(old) || !run.status.is_active())
            {
                j.dues_del
                    .push((env.clone(), minute(old), flow.clone(), id.clone()));
            }
            if run.status.is_active()
                && let Some(d) = run.due_at
                && h.old_due != Some(d)
            {
                j.dues_add.push((env.clone(), d, flow.clone(), id.clone()));
            }
            if run.status.is_active() && run.due_at.is_none() {
                // due now (a start, a resumed wait, a retry): the next pass picks it up
                j.dues_add
                    .push((env.clone(), now, flow.clone(), id.clone()));
            }
            let waiting = run.status == Status::Waiting;
            if waiting && !h.old_wait {
                j.waits_add
                    .push((env.clone(), run.user_id.clone(), flow.clone(), id.clone()));
            }
            if h.old_wait && !waiting {
                j.waits_del
                    .push((env.clone(), run.user_id.clone(), flow.clone(), id.clone()));
            }
            if !run.status.is_active()
                && let Some(s) = &spec
                && s.entry.as_ref().is_some_and(|e| e.one_active_run)
            {
                let ek = (env.clone(), flow.clone(), run.user_id.clone());
                if !entries.contains_key(&ek) {
                    let st = FlowStore::new(&self.store, &env)
                        .entry(&flow, &run.user_id)
                        .await?;
                    entries.insert(ek.clone(), st);
                }
                if let Some(st) = entries.get_mut(&ek)
                    && st.active_run.as_deref() == Some(run.id.as_str())
                {
                    st.active_run = None;
                }
            }
            let _ = all;
            j.runs.push(run);
        }
        for ((env, flow, user), st) in entries {
            j.entries.push((env, flow, user, st));
        }
        Ok(())
    }

    /// Counts failed runs in a row per flow; pauses a flow past the limit.
    fn count(&mut self, env: &str, flow: &str, e: &Emit, run: &Run, j: &mut Journal) {
        let k = (env.to_string(), flow.to_string());
        match e {
            Emit::StepCompleted { .. } | Emit::Completed => {
                self.failures.remove(&k);
            }
            Emit::StepFailed { error, .. } if run.status == Status::Failed => {
                let c = self.failures.entry(k).or_insert((0, String::new()));
                c.0 += 1;
                c.1 = error.clone();
                if c.0 == self.config.pause_after_failures.max(1) {
                    j.pauses.push((
                        env.to_string(),
                        flow.to_string(),
                        format!("{} runs failed in a row; last: {}", c.0, c.1),
                    ));
                }
            }
            _ => {}
        }
    }

    fn event(
        &self,
        spec: &Spec,
        run: &Run,
        name: &str,
        mut props: Value,
        now: DateTime<Utc>,
        n: usize,
    ) -> SystemEvent {
        props["flow_id"] = json!(run.flow_id);
        props["run_id"] = json!(run.id);
        props["version"] = json!(run.version);
        let props = super::run::redacted(&props, &|k| spec.redacts(k), 0);
        SystemEvent {
            environment: run.environment.clone(),
            event_id: format!(
                "fe_{}_{}_{n}",
                self.cursor.pass + 1,
                run.id.trim_start_matches("run_")
            ),
            event_name: name.to_string(),
            user_id: run.user_id.clone(),
            at_us: now.timestamp_micros(),
            properties: props.to_string(),
        }
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
