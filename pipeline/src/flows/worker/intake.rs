//! Taking in: inbox commands (starts, cancels, retries) with the entry rule, and the new
//! `events` commits (trigger events start runs, awaited events resume them).

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use serde_json::{Map, Value, json};

use super::{Held, RunKey, Worker, hold, new_run, starts_on};
use crate::Result;
use crate::flows::decide::{EntryState, admit, admitted};
use crate::flows::def::Flow;
use crate::flows::exec::{Emit, masked};
use crate::flows::journal::Journal;
use crate::flows::model::{Spec, StepKind};
use crate::flows::run::{Run, Status, run_id};
use crate::flows::store::{Command, FlowStore, Start};
use crate::flows::vars::{Given, resolve};
use crate::webhooks::follow::NewEvent;

impl Worker {
    /// Takes in one inbox command.
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn command(
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

    pub(super) async fn load<'a>(
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
    pub(super) async fn enter(
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
    pub(super) async fn follow(
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
            .read(self.cursor.events_version, super::MAX_COMMITS, &envs)
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
                let (variables, error) = match resolve(
                    &spec.variables,
                    &given,
                    Given::Event,
                    crate::config::ingest::MAX_PROPERTIES_DEPTH,
                ) {
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
    pub(super) async fn resume(
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
}
