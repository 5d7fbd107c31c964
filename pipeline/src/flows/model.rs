//! What a flow is: the parsed form of a flow document ([`Spec`]), as [`super::parse`]
//! validates it and the worker runs it.
//!
//! ```json
//! {"name": "Win back", "variables": {"coupon": {"type": "text", "default": "WELCOME"}},
//!  "starts": {"events": [{"names": ["segment-entered"], "segment": "lapsed"}]},
//!  "entry": {"one_active_run": true, "max_starts": 1, "per": "30d"},
//!  "steps": [
//!    {"id": "wait", "type": "delay", "duration": "1h"},
//!    {"id": "bought", "type": "branch", "condition": {"match": "all", "conditions":
//!      [{"event": "purchase", "op": "did", "within": "-1h"}]}, "then": "done", "else": "post"},
//!    {"id": "post", "type": "webhook", "url": "https://crm.example/offers",
//!     "body": {"user": "{{ profile.user_id }}", "coupon": "{{ variables.coupon }}"}},
//!    {"id": "done", "type": "exit"}]}
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Most steps in one flow.
pub const MAX_STEPS: usize = 100;
/// Most variables in one flow.
pub const MAX_VARIABLES: usize = 100;
/// The largest template source (one string of a step), in bytes.
pub const MAX_TEMPLATE_BYTES: usize = 16 * 1024;
/// The largest flow document, in bytes of JSON.
pub const MAX_FLOW_BYTES: usize = 256 * 1024;
/// The largest value of one variable at a start, in bytes of JSON.
pub const MAX_VARIABLE_BYTES: usize = 16 * 1024;
/// The largest set of variables at a start, in bytes of JSON.
pub const MAX_VARIABLES_BYTES: usize = 64 * 1024;
/// The longest delay or wait a step may ask for.
pub const MAX_WAIT: Duration = Duration::from_secs(366 * 86_400);

/// How deep a JSON value nests (a scalar is 0; serde_json's own limit bounds the walk).
pub fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// A variable's type.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VarType {
    Text,
    Number,
    Boolean,
    /// An RFC 3339 time (kept as the text given, normalised to UTC).
    Datetime,
    /// Any JSON value.
    Json,
}

impl VarType {
    pub fn as_str(self) -> &'static str {
        match self {
            VarType::Text => "text",
            VarType::Number => "number",
            VarType::Boolean => "boolean",
            VarType::Datetime => "datetime",
            VarType::Json => "json",
        }
    }
}

/// A typed variable of a flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Variable {
    #[serde(rename = "type")]
    pub ty: VarType,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// A start must give a value (and may: `allow_override` is then implied).
    #[serde(default)]
    pub required: bool,
    /// A start's value replaces the default; when false, the default applies and the
    /// start's answer lists the value it ignored.
    #[serde(default = "yes")]
    pub allow_override: bool,
    /// Masked in every stored event and log.
    #[serde(default)]
    pub redact: bool,
}

fn yes() -> bool {
    true
}

/// Events that start a flow: names (globs, `*` and `?`), categories, and for
/// `segment-entered` / `segment-exited` the segment.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventStart {
    #[serde(default)]
    pub names: Vec<String>,
    #[serde(default)]
    pub categories: Vec<String>,
    /// Only events whose `properties.segment_id` is this segment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<String>,
}

/// How a flow starts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Starts {
    #[serde(default)]
    pub events: Vec<EventStart>,
    /// `POST …/start` and the console's "start flow" (on unless turned off).
    #[serde(default = "yes")]
    pub api: bool,
}

impl Default for Starts {
    fn default() -> Self {
        Starts {
            events: Vec::new(),
            api: true,
        }
    }
}

/// Who may enter: at most one active run per user, at most `max_starts` per user per `per`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Entry {
    #[serde(default)]
    pub one_active_run: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_starts: Option<u32>,
    #[serde(
        default,
        with = "humantime_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub per: Option<Duration>,
}

/// What a webhook step's answer does to the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OnStatus {
    /// Go on to the next step.
    Continue,
    /// Try again on the retry schedule.
    Retry,
    /// Take the error branch (or fail the run).
    Error,
}

/// One kind of step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum StepKind {
    /// A signed HTTP request; each string leaf of `url`, `headers` and `body` is a template.
    Webhook {
        url: String,
        #[serde(default = "post")]
        method: String,
        #[serde(default)]
        headers: BTreeMap<String, String>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        body: Option<Value>,
        /// Per status code (`"404"`) or class (`"4xx"`): continue, retry or error.
        #[serde(default)]
        on_status: BTreeMap<String, OnStatus>,
        /// The step taken on error (after the retry schedule); none: the run fails.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        on_error: Option<String>,
    },
    /// Waits `duration`, or until the time `until` renders to, at most `max`.
    Delay {
        #[serde(
            default,
            with = "humantime_serde",
            skip_serializing_if = "Option::is_none"
        )]
        duration: Option<Duration>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        until: Option<String>,
        #[serde(
            default,
            with = "humantime_serde",
            skip_serializing_if = "Option::is_none"
        )]
        max: Option<Duration>,
    },
    /// Goes to `then` when the profile matches `condition` (segment language) and
    /// `expression` (over the run's context) is true, else to `else`.
    Branch {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        condition: Option<Value>,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        expression: Option<String>,
        then: String,
        #[serde(rename = "else")]
        otherwise: String,
    },
    /// Waits for the user's next event named `event` (matching `filter`, an expression
    /// over `event`), at most `timeout`; then goes on, or to `on_timeout`.
    WaitForEvent {
        event: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        filter: Option<String>,
        #[serde(with = "humantime_serde")]
        timeout: Duration,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        on_timeout: Option<String>,
    },
    /// Ends the run.
    Exit {},
}

fn post() -> String {
    "POST".into()
}

impl StepKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            StepKind::Webhook { .. } => "webhook",
            StepKind::Delay { .. } => "delay",
            StepKind::Branch { .. } => "branch",
            StepKind::WaitForEvent { .. } => "wait_for_event",
            StepKind::Exit {} => "exit",
        }
    }
}

/// A step: its id, what it does, and the step after it (`next`; the following one if
/// absent, the end of the run after the last).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "serde_json::Map<String, Value>")]
pub struct Step {
    pub id: String,
    #[serde(flatten)]
    pub kind: StepKind,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

impl TryFrom<serde_json::Map<String, Value>> for Step {
    type Error = String;

    fn try_from(mut o: serde_json::Map<String, Value>) -> Result<Step, String> {
        let id = match o.remove("id") {
            Some(Value::String(s)) => s,
            _ => return Err("a step has an id".into()),
        };
        let next = match o.remove("next") {
            Some(Value::String(s)) => Some(s),
            None | Some(Value::Null) => None,
            Some(_) => return Err("next is a step id".into()),
        };
        let kind = serde_json::from_value(Value::Object(o)).map_err(|e| e.to_string())?;
        Ok(Step { id, kind, next })
    }
}

/// A validated flow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Spec {
    pub name: String,
    pub variables: BTreeMap<String, Variable>,
    pub starts: Starts,
    pub entry: Option<Entry>,
    /// Property keys (of the trigger and of variables) masked in stored events and logs.
    pub redact: Vec<String>,
    pub steps: Vec<Step>,
}

impl Spec {
    pub fn step(&self, id: &str) -> Option<(usize, &Step)> {
        self.steps.iter().enumerate().find(|(_, s)| s.id == id)
    }

    /// The step after step `i` when it goes on normally (`None`: the run is complete).
    pub fn after(&self, i: usize) -> Option<&str> {
        let step = self.steps.get(i)?;
        match (&step.next, &step.kind) {
            (_, StepKind::Exit {}) => None,
            (Some(n), _) => Some(n.as_str()),
            (None, _) => self.steps.get(i + 1).map(|s| s.id.as_str()),
        }
    }

    /// Every step step `i` can go to.
    pub fn successors(&self, i: usize) -> Vec<&str> {
        let Some(step) = self.steps.get(i) else {
            return Vec::new();
        };
        let mut out: Vec<&str> = Vec::new();
        match &step.kind {
            StepKind::Branch {
                then, otherwise, ..
            } => {
                out.push(then);
                out.push(otherwise);
            }
            StepKind::Webhook { on_error, .. } => {
                out.extend(on_error.as_deref());
                out.extend(self.after(i));
            }
            StepKind::WaitForEvent { on_timeout, .. } => {
                out.extend(on_timeout.as_deref());
                out.extend(self.after(i));
            }
            _ => out.extend(self.after(i)),
        }
        out
    }

    /// Whether a variable or a trigger property named `key` is masked.
    pub fn redacts(&self, key: &str) -> bool {
        self.redact.iter().any(|k| k == key) || self.variables.get(key).is_some_and(|v| v.redact)
    }
}
