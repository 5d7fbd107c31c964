//! Advancing the held runs (webhook steps concurrently) and turning what they did into the
//! pass's journal: states, index changes, `flow-*` events, entry releases and pauses.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};

use futures::StreamExt;
use tidemark_sinks::sign::Secret;

use super::{Held, RunKey, Worker};
use crate::Result;
use crate::flows::decide::EntryState;
use crate::flows::def::Flow;
use crate::flows::exec::{Emit, Exec};
use crate::flows::journal::Journal;
use crate::flows::model::Spec;
use crate::flows::run::{Run, Status};
use crate::flows::store::{FlowStore, minute};
use crate::storage::events_table::SystemEvent;

impl Worker {
    /// Advances every held run that is due, `max_in_flight` at a time.
    pub(super) async fn advance(
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
    pub(super) async fn finish(
        &mut self,
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
            index(
                &(env.clone(), flow.clone(), id.clone()),
                &h.listed,
                h.old_due,
                h.old_wait,
                &run,
                now,
                j,
            );
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
            j.runs.push(run);
        }
        for ((env, flow, user), st) in entries {
            j.entries.push((env, flow, user, st));
        }
        Ok(())
    }

    /// Counts failed runs in a row per flow; pauses a flow past the limit.
    pub(super) fn count(&mut self, env: &str, flow: &str, e: &Emit, run: &Run, j: &mut Journal) {
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

    pub(super) fn event(
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
        let props = crate::flows::run::redacted(&props, &|k| spec.redacts(k), 0);
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

/// The due and wait index changes of one run: its old entries go, its new ones come.
fn index(
    (env, flow, id): &RunKey,
    listed: &Option<String>,
    old_due: Option<DateTime<Utc>>,
    old_wait: bool,
    run: &Run,
    now: DateTime<Utc>,
    j: &mut Journal,
) {
    let active = run.status.is_active();
    let key = |m: String| (env.clone(), m, flow.clone(), id.clone());
    if let Some(m) = listed
        && run.due_at.is_none_or(|d| minute(d) != *m || !active)
    {
        j.dues_del.push(key(m.clone()));
    }
    if let Some(old) = old_due
        && (run.due_at != Some(old) || !active)
    {
        j.dues_del.push(key(minute(old)));
    }
    match run.due_at {
        Some(d) if active && old_due != Some(d) => {
            j.dues_add.push((env.clone(), d, flow.clone(), id.clone()));
        }
        // due now (a start, a resumed wait, a retry): the next pass picks it up
        None if active => j
            .dues_add
            .push((env.clone(), now, flow.clone(), id.clone())),
        _ => {}
    }
    let waiting = run.status == Status::Waiting;
    let entry = (env.clone(), run.user_id.clone(), flow.clone(), id.clone());
    if waiting && !old_wait {
        j.waits_add.push(entry);
    } else if old_wait && !waiting {
        j.waits_del.push(entry);
    }
}
