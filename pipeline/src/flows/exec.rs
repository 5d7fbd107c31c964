//! Running a run's steps: the I/O around [`super::decide`]. A step reads the profile
//! live (when its templates or condition read it), renders its request leaf by leaf,
//! sends it through the sinks client (address guard, Standard Webhooks signature) under
//! the run's stable `webhook-id` for that step, and decides what comes next. A preview
//! runs the same rendering and branching with nothing sent and nothing stored.

use std::collections::BTreeMap;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use datafusion::prelude::{col, lit};
use serde_json::{Map, Value, json};
use tidemark_sinks::client::SafeClient;
use tidemark_sinks::retry::RetryPolicy;
use tidemark_sinks::sign::Secret;

use super::decide::{After, after_webhook, delay_end};
use super::model::{MAX_WAIT, OnStatus, Spec, Step, StepKind};
use super::run::{MAX_RESPONSE_BYTES, Run, Status, Wait};
use super::template::{Engine, MAX_RENDERED_BYTES, context};
use crate::query::to_json_rows;
use crate::segments::def::Segment;
use crate::storage::Store;
use crate::{Result, query};

/// Steps one run goes through in one pass at most (a loop of branches waits for the next).
pub const MAX_STEPS_PER_PASS: usize = 64;

/// What a run did in one advance, for `flow-*` events.
#[derive(Debug, Clone, PartialEq)]
pub enum Emit {
    StepCompleted {
        step: String,
        detail: Value,
    },
    StepFailed {
        step: String,
        error: String,
    },
    Completed,
    Exited {
        step: Option<String>,
        reason: String,
    },
}

/// What a step leads to: `Some(next)` when it finished (`None` inside: the end of the
/// run), `None` when the run waits or ended.
type Next = Option<Option<String>>;

/// The step being run, when, and the step after it.
struct At<'s> {
    step: &'s Step,
    now: DateTime<Utc>,
    after: Option<String>,
}

pub use super::request::{Request, render};

/// What running steps needs.
pub struct Exec<'a> {
    pub store: &'a Store,
    pub client: &'a SafeClient,
    pub policy: &'a RetryPolicy,
    pub engine: &'a Engine,
    pub secret: &'a Secret,
    pub spec: &'a Spec,
}

/// The profile as templates see it (`fields.<name>` is the value), or `null`.
pub async fn profile(store: &Store, environment: &str, user_id: &str) -> Result<Value> {
    let Some(Value::Object(mut p)) =
        crate::profiles::read::user(store, environment, user_id, 0).await?
    else {
        return Ok(Value::Null);
    };
    if let Some(Value::Object(fields)) = p.get_mut("fields") {
        for v in fields.values_mut() {
            let inner = v.get("value").cloned().unwrap_or(Value::Null);
            *v = inner;
        }
    }
    p.remove("segment_memberships");
    Ok(Value::Object(p))
}

/// Whether `step` reads the profile (so it is read only when needed).
fn reads_profile(step: &Step) -> bool {
    let text = serde_json::to_string(&step.kind).unwrap_or_default();
    reads_more_than_the_id(&text)
        || matches!(
            step.kind,
            StepKind::Branch {
                condition: Some(_),
                ..
            }
        )
}

/// Whether template text reads the profile beyond `profile.user_id` (which the run knows).
fn reads_more_than_the_id(text: &str) -> bool {
    text.replace("profile.user_id", "").contains("profile")
}

/// The profile a step reads: the whole profile when its templates need more than the id.
async fn profile_for(store: &Store, run: &Run, needed: bool) -> Result<Value> {
    if needed {
        profile(store, &run.environment, &run.user_id).await
    } else {
        Ok(json!({"user_id": run.user_id}))
    }
}

/// Whether `user_id`'s live profile matches a branch condition (the segment language).
pub async fn matches(
    store: &Store,
    environment: &str,
    user_id: &str,
    condition: &Value,
) -> Result<bool> {
    let fields = crate::users::fields::Registry::new(store.clone())
        .list(environment)
        .await?;
    let doc = json!({
        "id": "branch", "name": "branch",
        "match": condition.get("match").cloned().unwrap_or(json!("all")),
        "conditions": condition.get("conditions").cloned().unwrap_or(Value::Null),
    });
    let segment: Segment = crate::segments::def::parse(&doc, &fields)
        .map(|(_, s)| s)
        .map_err(|p| {
            crate::Error::Invalid(p.iter().map(|x| x.line()).collect::<Vec<_>>().join("; "))
        })?;
    let compiled =
        crate::segments::compile::compile(&segment, environment, Utc::now().timestamp_micros());
    let (ctx, narrowing) = query::profiles_session(store, environment).await?;
    narrowing
        .apply(&ctx, col("user_id").eq(lit(user_id)))
        .await?;
    let batches = ctx
        .sql(&compiled.sql)
        .await?
        .with_param_values(compiled.params.clone())?
        .filter(col("user_id").eq(lit(user_id)))?
        .collect()
        .await?;
    Ok(!to_json_rows(&batches)?.is_empty())
}

/// The answer body as context: JSON when it parses, else text; capped.
fn answer(body: &[u8]) -> Value {
    let cut = &body[..body.len().min(MAX_RESPONSE_BYTES)];
    serde_json::from_slice(cut)
        .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(cut).into_owned()))
}

impl Exec<'_> {
    /// Runs `run`'s due steps until it waits, ends, or has taken [`MAX_STEPS_PER_PASS`].
    pub async fn advance(&self, run: &mut Run, now: DateTime<Utc>) -> Vec<Emit> {
        let mut out = Vec::new();
        for _ in 0..MAX_STEPS_PER_PASS {
            let Some(step_id) = run.step.clone() else {
                run.end(Status::Completed, now, None);
                run.log(now, None, "completed", None);
                out.push(Emit::Completed);
                return out;
            };
            let Some((i, step)) = self.spec.step(&step_id) else {
                let reason = format!("version {} has no step '{step_id}'", run.version);
                run.end(Status::Failed, now, Some(reason.clone()));
                out.push(Emit::StepFailed {
                    step: step_id,
                    error: reason,
                });
                return out;
            };
            match self.step(run, i, step, now, &mut out).await {
                Some(next) => {
                    run.step = next;
                    run.attempt = 0;
                    run.due_at = None;
                }
                None => return out,
            }
        }
        run.due_at = Some(now);
        out
    }

    /// Runs one step. `Some(next)`: it finished and the run goes to `next` (`None`: the
    /// end); `None`: the run waits or ended.
    async fn step(
        &self,
        run: &mut Run,
        i: usize,
        step: &Step,
        now: DateTime<Utc>,
        out: &mut Vec<Emit>,
    ) -> Next {
        let at = At {
            step,
            now,
            after: self.spec.after(i).map(str::to_string),
        };
        match &step.kind {
            StepKind::Exit {} => {
                run.end(Status::Exited, now, None);
                run.log(now, Some(&step.id), "exited", None);
                out.push(Emit::Exited {
                    step: Some(step.id.clone()),
                    reason: "exit step".into(),
                });
                None
            }
            StepKind::Delay {
                duration,
                until,
                max,
            } => {
                self.delay(run, &at, (*duration, until.as_deref(), *max), out)
                    .await
            }
            StepKind::Branch {
                condition,
                expression,
                then,
                otherwise,
            } => {
                let paths = (then.as_str(), otherwise.as_str());
                self.branch(
                    run,
                    &at,
                    condition.as_ref(),
                    expression.as_deref(),
                    paths,
                    out,
                )
                .await
            }
            StepKind::WaitForEvent {
                event,
                filter,
                timeout,
                on_timeout,
            } => {
                let wait = Wait {
                    event: event.clone(),
                    filter: filter.clone(),
                };
                self.wait(run, &at, wait, *timeout, on_timeout.as_deref(), out)
            }
            StepKind::Webhook {
                on_status,
                on_error,
                ..
            } => {
                self.webhook(run, &at, on_status, on_error.as_deref(), out)
                    .await
            }
        }
    }

    /// A delay: started (its end computed once), or due (it completes).
    async fn delay(
        &self,
        run: &mut Run,
        at: &At<'_>,
        (duration, until, max): (
            Option<std::time::Duration>,
            Option<&str>,
            Option<std::time::Duration>,
        ),
        out: &mut Vec<Emit>,
    ) -> Next {
        let (step, now) = (at.step, at.now);
        if run.attempt > 0 {
            if run.due_at.is_some_and(|d| d > now) {
                return None;
            }
            self.completed(run, step, now, json!({}), out);
            return Some(at.after.clone());
        }
        let until = match until {
            None => None,
            Some(t) => match self.render_text(run, step, t).await {
                Ok(s) => Some(s),
                Err(e) => return self.failed(run, step, None, now, e, out),
            },
        };
        match delay_end(duration, until.as_deref(), max, now) {
            Ok(end) if end <= now => {
                self.completed(run, step, now, json!({}), out);
                Some(at.after.clone())
            }
            Ok(end) => {
                run.attempt = 1;
                run.due_at = Some(end);
                run.status = Status::Running;
                run.log(now, Some(&step.id), "delayed", Some(json!({"until": end})));
                None
            }
            Err(e) => self.failed(run, step, None, now, e, out),
        }
    }

    /// A branch: the live profile against the condition, the context against the
    /// expression; both must hold for `then`.
    async fn branch(
        &self,
        run: &mut Run,
        at: &At<'_>,
        condition: Option<&Value>,
        expression: Option<&str>,
        (then, otherwise): (&str, &str),
        out: &mut Vec<Emit>,
    ) -> Next {
        let (step, now) = (at.step, at.now);
        let mut yes = true;
        if let Some(c) = condition {
            match matches(self.store, &run.environment, &run.user_id, c).await {
                Ok(m) => yes &= m,
                Err(e) if e.is_retryable() => {
                    return self.retry_soon(run, step, now, e.to_string());
                }
                Err(e) => return self.failed(run, step, None, now, e.to_string(), out),
            }
        }
        if let Some(e) = expression {
            match self.engine.truthy(e, &run.context(Value::Null)) {
                Ok(t) => yes &= t,
                Err(err) => {
                    let error = format!("expression: {err}");
                    return self.failed(run, step, None, now, error, out);
                }
            }
        }
        let to = if yes { then } else { otherwise };
        self.completed(run, step, now, json!({"result": yes, "next": to}), out);
        Some(Some(to.to_string()))
    }

    /// A wait for an event: started (the run waits, with its timeout due), or due (the
    /// timeout passed: `on_timeout`, else the next step). The event itself resumes the run
    /// in the worker.
    fn wait(
        &self,
        run: &mut Run,
        at: &At<'_>,
        wait: Wait,
        timeout: std::time::Duration,
        on_timeout: Option<&str>,
        out: &mut Vec<Emit>,
    ) -> Next {
        let (step, now) = (at.step, at.now);
        if run.status == Status::Waiting {
            if run.due_at.is_some_and(|d| d > now) {
                return None;
            }
            run.status = Status::Running;
            run.wait = None;
            self.completed(run, step, now, json!({"timed_out": true}), out);
            return Some(on_timeout.map(str::to_string).or(at.after.clone()));
        }
        let detail = json!({"event": wait.event});
        run.status = Status::Waiting;
        run.attempt = 1;
        run.wait = Some(wait);
        run.due_at =
            Some(now + chrono::Duration::from_std(timeout.min(MAX_WAIT)).unwrap_or_default());
        let mut detail = detail;
        detail["until"] = json!(run.due_at);
        run.log(now, Some(&step.id), "waiting", Some(detail));
        None
    }

    /// A webhook: rendered against the live profile, sent, and judged.
    async fn webhook(
        &self,
        run: &mut Run,
        at: &At<'_>,
        on_status: &BTreeMap<String, OnStatus>,
        on_error: Option<&str>,
        out: &mut Vec<Emit>,
    ) -> Next {
        let (step, now) = (at.step, at.now);
        let on_error = on_error.map(str::to_string);
        if run.due_at.is_some_and(|d| d > now) {
            return None;
        }
        let profile = match profile_for(self.store, run, reads_profile(step)).await {
            Ok(p) => p,
            Err(e) => return self.retry_soon(run, step, now, e.to_string()),
        };
        let req = match render(self.engine, &step.kind, &run.context(profile)) {
            Ok(r) => r,
            Err(e) => return self.failed(run, step, on_error, now, e, out),
        };
        run.attempt += 1;
        let result = self.send(run, &step.id, &req).await;
        if let Ok(r) = &result {
            let got = json!({"status": r.status, "body": answer(&r.body)});
            run.outputs.insert(step.id.clone(), got);
        }
        match after_webhook(on_status, &result, run.attempt, self.policy, now) {
            After::Continue => {
                let status = result.as_ref().ok().map(|r| r.status);
                let detail = json!({"status": status, "attempt": run.attempt});
                self.completed(run, step, now, detail, out);
                Some(at.after.clone())
            }
            After::Retry { after, error } => {
                run.due_at = Some(now + chrono::Duration::from_std(after).unwrap_or_default());
                let detail = json!({"error": error, "attempt": run.attempt, "at": run.due_at});
                run.log(now, Some(&step.id), "retrying", Some(detail));
                None
            }
            After::Error(error) => self.failed(run, step, on_error, now, error, out),
        }
    }

    async fn send(
        &self,
        run: &Run,
        step: &str,
        req: &Request,
    ) -> std::result::Result<tidemark_sinks::client::Response, tidemark_sinks::client::Failure>
    {
        use tidemark_sinks::client::{Failure, FailureKind};
        let fail = |m: String| Failure {
            kind: FailureKind::Blocked,
            message: m,
            latency: std::time::Duration::ZERO,
        };
        let url = url::Url::parse(&req.url).map_err(|e| fail(format!("url {:?}: {e}", req.url)))?;
        let method =
            http::Method::from_bytes(req.method.as_bytes()).map_err(|e| fail(e.to_string()))?;
        let pairs: Vec<(String, String)> = req.headers.clone().into_iter().collect();
        let mut headers =
            tidemark_sinks::client::header_map(&pairs).map_err(|e| fail(e.to_string()))?;
        let body = match &req.body {
            Some(b) => serde_json::to_vec(b).unwrap_or_default(),
            None => Vec::new(),
        };
        if req.body.is_some() {
            headers.insert(
                http::header::CONTENT_TYPE,
                http::header::HeaderValue::from_static("application/json"),
            );
        }
        let id = run.message_id(step);
        tidemark_sinks::sign::set_headers(
            &mut headers,
            std::slice::from_ref(self.secret),
            &id,
            Utc::now().timestamp(),
            &body,
        );
        self.client
            .send(method, &url, headers, Bytes::from(body))
            .await
    }

    async fn render_text(
        &self,
        run: &Run,
        step: &Step,
        source: &str,
    ) -> std::result::Result<String, String> {
        let profile = profile_for(self.store, run, reads_more_than_the_id(source))
            .await
            .map_err(|e| e.to_string())?;
        let mut budget = MAX_RENDERED_BYTES;
        let v = self
            .engine
            .render_leaf(source, &context(&run.context(profile)), &mut budget)
            .map_err(|e| format!("{}: {e}", step.id))?;
        Ok(match v {
            Value::String(s) => s,
            other => other.to_string(),
        })
    }

    fn completed(
        &self,
        run: &mut Run,
        step: &Step,
        now: DateTime<Utc>,
        detail: Value,
        out: &mut Vec<Emit>,
    ) {
        run.log(now, Some(&step.id), "completed", Some(detail.clone()));
        out.push(Emit::StepCompleted {
            step: step.id.clone(),
            detail,
        });
    }

    /// The step failed: its error branch, or the run fails.
    fn failed(
        &self,
        run: &mut Run,
        step: &Step,
        on_error: Option<String>,
        now: DateTime<Utc>,
        error: String,
        out: &mut Vec<Emit>,
    ) -> Next {
        run.log(now, Some(&step.id), "failed", Some(json!({"error": error})));
        out.push(Emit::StepFailed {
            step: step.id.clone(),
            error: error.clone(),
        });
        match on_error {
            Some(next) => Some(Some(next)),
            None => {
                run.end(Status::Failed, now, Some(format!("{}: {error}", step.id)));
                None
            }
        }
    }

    /// A failure of tidemark's own (the store, a query): the step runs again shortly.
    fn retry_soon(&self, run: &mut Run, step: &Step, now: DateTime<Utc>, error: String) -> Next {
        run.due_at = Some(now + chrono::Duration::seconds(5));
        run.log(
            now,
            Some(&step.id),
            "deferred",
            Some(json!({"error": error})),
        );
        None
    }
}

/// A variables map with redacted values masked (for events and logs).
pub fn masked(spec: &Spec, values: &Map<String, Value>) -> Value {
    super::run::redacted(&Value::Object(values.clone()), &|k| spec.redacts(k), 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_profile_is_read_only_for_more_than_the_id() {
        assert!(!reads_more_than_the_id("https://x/{{ profile.user_id }}"));
        assert!(reads_more_than_the_id(
            "{{ profile.user_id }} {{ profile.fields.plan }}"
        ));
        assert!(reads_more_than_the_id("{{ profile.tags }}"));
        assert!(!reads_more_than_the_id("{{ variables.x }}"));
    }
}
