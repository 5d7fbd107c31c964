//! Validating a flow document, every problem at once with its path: the shape of each
//! variable, start and step, defaults of the declared type, step ids and the steps they
//! name, steps no other step reaches, templates that do not compile, placeholders naming a
//! variable, field or step that does not exist, branch conditions (the segment language,
//! against the field registry), webhook URLs (the address guard) and segments.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use super::model::{
    Entry, MAX_FLOW_BYTES, MAX_STEPS, MAX_VARIABLES, MAX_WAIT, Spec, Starts, Step, StepKind,
    Variable, depth,
};
use super::template::Engine;
use super::vars::typed;
use crate::problem::Problem;
use crate::segments::def::valid_id;
use crate::users::fields::FieldDef;

/// What validation reads besides the document.
pub struct Checks<'a> {
    /// The environment's custom fields.
    pub fields: &'a BTreeMap<String, FieldDef>,
    /// The environment's segment ids.
    pub segments: &'a BTreeSet<String>,
    /// The address guard's verdict on a webhook URL.
    pub check_url: &'a (dyn Fn(&url::Url) -> Result<(), String> + Sync),
    /// The deepest a webhook body or a variable's default may nest.
    pub max_depth: usize,
}

const TOP: [&str; 7] = [
    "name",
    "description",
    "variables",
    "starts",
    "entry",
    "redact",
    "steps",
];

struct Ctx<'a> {
    checks: &'a Checks<'a>,
    engine: Engine,
    problems: Vec<Problem>,
}

impl Ctx<'_> {
    fn problem(&mut self, path: &str, message: impl Into<String>) {
        self.problems.push(Problem::field(path, message));
    }

    /// `v` as a `T`, or a problem at `path` with serde's reason.
    fn typed<T: DeserializeOwned>(&mut self, v: &Value, path: &str) -> Option<T> {
        match serde_json::from_value(v.clone()) {
            Ok(t) => Some(t),
            Err(e) => {
                self.problem(path, e.to_string());
                None
            }
        }
    }
}

/// Parses and validates `doc`.
pub fn parse(doc: &Value, checks: &Checks) -> Result<Spec, Vec<Problem>> {
    let mut ctx = Ctx {
        checks,
        engine: Engine::new(),
        problems: Vec::new(),
    };
    let Some(o) = doc.as_object() else {
        ctx.problem("(body)", "a flow must be a JSON object");
        return Err(ctx.problems);
    };
    let size = serde_json::to_vec(doc).map_or(usize::MAX, |b| b.len());
    if size > MAX_FLOW_BYTES {
        ctx.problem(
            "(body)",
            format!("is {size} bytes of JSON; a flow holds at most {MAX_FLOW_BYTES}"),
        );
        return Err(ctx.problems);
    }
    for k in o
        .keys()
        .filter(|k| !TOP.contains(&k.as_str()) && *k != "id")
    {
        ctx.problem(k, format!("unknown key; a flow has {}", TOP.join(", ")));
    }
    let name = o.get("name").and_then(Value::as_str).unwrap_or_default();
    if name.trim().is_empty() || name.len() > 200 || name.chars().any(char::is_control) {
        ctx.problem(
            "name",
            "must be 1 to 200 bytes of text without control characters",
        );
    }
    let variables = parse_variables(&mut ctx, o.get("variables"));
    let starts = match o.get("starts") {
        None => Starts::default(),
        Some(v) => ctx.typed::<Starts>(v, "starts").unwrap_or_default(),
    };
    check_starts(&mut ctx, &starts);
    let entry = o
        .get("entry")
        .filter(|v| !v.is_null())
        .and_then(|v| ctx.typed::<Entry>(v, "entry"));
    if let Some(e) = &entry
        && e.max_starts.is_some() != e.per.is_some()
    {
        ctx.problem(
            "entry",
            "max_starts and per go together (\"at most N starts per window\")",
        );
    }
    let redact = match o.get("redact") {
        None => Vec::new(),
        Some(v) => ctx.typed::<Vec<String>>(v, "redact").unwrap_or_default(),
    };
    let steps = parse_steps(&mut ctx, o.get("steps"));
    let spec = Spec {
        name: name.to_string(),
        variables,
        starts,
        entry,
        redact,
        steps,
    };
    check_graph(&mut ctx, &spec);
    check_templates(&mut ctx, &spec);
    if ctx.problems.is_empty() {
        Ok(spec)
    } else {
        Err(ctx.problems)
    }
}

fn parse_variables(ctx: &mut Ctx, v: Option<&Value>) -> BTreeMap<String, Variable> {
    let mut out = BTreeMap::new();
    let Some(v) = v else { return out };
    let Some(o) = v.as_object() else {
        ctx.problem(
            "variables",
            "must be an object of name: {type, default, ...}",
        );
        return out;
    };
    if o.len() > MAX_VARIABLES {
        ctx.problem("variables", format!("more than {MAX_VARIABLES} variables"));
    }
    for (name, def) in o {
        let path = format!("variables.{name}");
        if !valid_name(name) {
            ctx.problem(
                &path,
                "a variable name is a letter then letters, digits or _ (at most 64)",
            );
        }
        let Some(var) = ctx.typed::<Variable>(def, &path) else {
            continue;
        };
        if let Some(d) = &var.default
            && !d.is_null()
            && let Err(e) = typed(var.ty, d)
        {
            ctx.problem(&format!("{path}.default"), e);
        }
        if var
            .default
            .as_ref()
            .is_some_and(|d| depth(d) > ctx.checks.max_depth)
        {
            let max = ctx.checks.max_depth;
            ctx.problem(
                &format!("{path}.default"),
                format!("nests deeper than {max} levels (limits.max_properties_depth)"),
            );
        }
        if var.required && var.default.is_some() {
            ctx.problem(
                &format!("{path}.default"),
                "a required variable has no default",
            );
        }
        out.insert(name.clone(), var);
    }
    out
}

fn valid_name(name: &str) -> bool {
    let mut c = name.chars();
    c.next().is_some_and(|f| f.is_ascii_alphabetic())
        && c.all(|ch| ch.is_ascii_alphanumeric() || ch == '_')
        && name.len() <= 64
}

fn check_starts(ctx: &mut Ctx, starts: &Starts) {
    for (i, s) in starts.events.iter().enumerate() {
        let path = format!("starts.events[{i}]");
        if s.names.is_empty() && s.categories.is_empty() && s.segment.is_none() {
            ctx.problem(&path, "names no event: give names, categories or a segment");
        }
        for (j, n) in s.names.iter().enumerate() {
            if n.is_empty() || n.len() > 200 {
                ctx.problem(&format!("{path}.names[{j}]"), "must be 1 to 200 bytes");
            } else if n.starts_with("flow-") {
                ctx.problem(
                    &format!("{path}.names[{j}]"),
                    format!("'{n}': flow-* events never start flows (a flow could start itself)"),
                );
            }
        }
        for (j, c) in s.categories.iter().enumerate() {
            if !["platform", "sdk", "custom", "system"].contains(&c.as_str()) {
                ctx.problem(
                    &format!("{path}.categories[{j}]"),
                    format!("'{c}' is not one of platform, sdk, custom, system"),
                );
            }
        }
        if let Some(seg) = &s.segment
            && !ctx.checks.segments.contains(seg)
        {
            ctx.problem(
                &format!("{path}.segment"),
                format!("no segment '{seg}' in this environment"),
            );
        }
    }
}

fn parse_steps(ctx: &mut Ctx, v: Option<&Value>) -> Vec<Step> {
    let Some(items) = v.and_then(Value::as_array) else {
        ctx.problem("steps", "must be an array of steps");
        return Vec::new();
    };
    if items.is_empty() {
        ctx.problem("steps", "must hold at least one step");
    }
    if items.len() > MAX_STEPS {
        ctx.problem("steps", format!("more than {MAX_STEPS} steps"));
        return Vec::new();
    }
    let mut steps = Vec::new();
    let mut seen = BTreeSet::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("steps[{i}]");
        let Some(o) = item.as_object() else {
            ctx.problem(&path, "must be an object");
            continue;
        };
        let id = o.get("id").and_then(Value::as_str).unwrap_or_default();
        if !valid_id(id) || id.contains('-') {
            ctx.problem(&format!("{path}.id"), "must match [a-z0-9][a-z0-9_]{0,63}");
        } else if !seen.insert(id.to_string()) {
            ctx.problem(&format!("{path}.id"), format!("'{id}' names two steps"));
        }
        let next = match o.get("next") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.clone()),
            Some(_) => {
                ctx.problem(&format!("{path}.next"), "must be a step id");
                None
            }
        };
        let rest: Map<String, Value> = o
            .iter()
            .filter(|(k, _)| *k != "id" && *k != "next")
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let Some(kind) = ctx.typed::<StepKind>(&Value::Object(rest), &path) else {
            continue;
        };
        check_step(ctx, &path, &kind);
        steps.push(Step {
            id: id.to_string(),
            kind,
            next,
        });
    }
    steps
}

fn check_step(ctx: &mut Ctx, path: &str, kind: &StepKind) {
    match kind {
        StepKind::Webhook {
            url,
            method,
            on_status,
            body,
            ..
        } => {
            check_url(ctx, &format!("{path}.url"), url);
            if body
                .as_ref()
                .is_some_and(|b| depth(b) > ctx.checks.max_depth)
            {
                let max = ctx.checks.max_depth;
                ctx.problem(
                    &format!("{path}.body"),
                    format!("nests deeper than {max} levels (limits.max_properties_depth)"),
                );
            }
            if !["GET", "POST", "PUT", "PATCH", "DELETE"].contains(&method.as_str()) {
                ctx.problem(
                    &format!("{path}.method"),
                    format!("'{method}' is not one of GET, POST, PUT, PATCH, DELETE"),
                );
            }
            for code in on_status.keys() {
                if !valid_status_key(code) {
                    ctx.problem(
                        &format!("{path}.on_status.{code}"),
                        "a key is a status code (404) or a class (4xx)",
                    );
                }
            }
        }
        StepKind::Delay {
            duration,
            until,
            max,
        } => {
            if duration.is_some() == until.is_some() {
                ctx.problem(path, "a delay has either duration or until");
            }
            for (name, d) in [("duration", duration), ("max", max)] {
                if d.is_some_and(|d| d > MAX_WAIT) {
                    ctx.problem(&format!("{path}.{name}"), "is longer than 366 days");
                }
            }
        }
        StepKind::Branch {
            condition,
            expression,
            ..
        } => {
            if condition.is_none() && expression.is_none() {
                ctx.problem(path, "a branch has a condition, an expression or both");
            }
            if let Some(c) = condition {
                check_condition(ctx, &format!("{path}.condition"), c);
            }
        }
        StepKind::WaitForEvent { event, timeout, .. } => {
            if event.is_empty() || event.len() > 200 {
                ctx.problem(&format!("{path}.event"), "must be 1 to 200 bytes");
            }
            if *timeout > MAX_WAIT || timeout.is_zero() {
                ctx.problem(
                    &format!("{path}.timeout"),
                    "must be more than 0 and at most 366 days",
                );
            }
        }
        StepKind::Exit {} => {}
    }
}

fn valid_status_key(code: &str) -> bool {
    let b = code.as_bytes();
    b.len() == 3
        && (b'1'..=b'5').contains(&b[0])
        && (b[1..].iter().all(u8::is_ascii_digit) || &b[1..] == b"xx")
}

/// The URL's scheme and host are literal (a template may fill its path and query only),
/// and the address guard accepts them.
fn check_url(ctx: &mut Ctx, path: &str, url: &str) {
    let head_end = url
        .find("://")
        .map(|i| i + 3)
        .and_then(|s| url[s..].find(['/', '?']).map(|j| s + j))
        .unwrap_or(url.len());
    if url[..head_end].contains("{{") || url[..head_end].contains("{%") {
        ctx.problem(
            path,
            "the scheme and host must be written out; templates may fill the path and query",
        );
        return;
    }
    match url::Url::parse(&url[..head_end]) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {
            if let Err(e) = (ctx.checks.check_url)(&u) {
                ctx.problem(path, format!("'{url}': {e}"));
            }
        }
        Ok(u) => ctx.problem(path, format!("'{}' is not http or https", u.scheme())),
        Err(e) => ctx.problem(path, format!("'{url}' is not a URL: {e}")),
    }
}

fn check_condition(ctx: &mut Ctx, path: &str, c: &Value) {
    let Some(o) = c.as_object() else {
        ctx.problem(
            path,
            "must be {\"match\": \"all\"|\"any\", \"conditions\": [...]}",
        );
        return;
    };
    let doc = serde_json::json!({
        "id": "branch",
        "name": "branch",
        "match": o.get("match").cloned().unwrap_or(Value::String("all".into())),
        "conditions": o.get("conditions").cloned().unwrap_or(Value::Null),
    });
    for k in o.keys().filter(|k| *k != "match" && *k != "conditions") {
        ctx.problem(
            &format!("{path}.{k}"),
            "unknown key; a condition has match, conditions",
        );
    }
    if let Err(problems) = crate::segments::def::parse(&doc, ctx.checks.fields) {
        for p in problems {
            let field = p.field.unwrap_or_default();
            ctx.problem(&format!("{path}.{field}"), p.message);
        }
    }
}

fn check_graph(ctx: &mut Ctx, spec: &Spec) {
    let ids: BTreeSet<&str> = spec.steps.iter().map(|s| s.id.as_str()).collect();
    for (i, step) in spec.steps.iter().enumerate() {
        let named: Vec<(&str, &str)> = match &step.kind {
            StepKind::Branch {
                then, otherwise, ..
            } => vec![("then", then.as_str()), ("else", otherwise.as_str())],
            StepKind::Webhook { on_error, .. } => {
                on_error.iter().map(|s| ("on_error", s.as_str())).collect()
            }
            StepKind::WaitForEvent { on_timeout, .. } => on_timeout
                .iter()
                .map(|s| ("on_timeout", s.as_str()))
                .collect(),
            _ => Vec::new(),
        };
        let next = step.next.iter().map(|n| ("next", n.as_str()));
        for (key, target) in named.into_iter().chain(next) {
            if !ids.contains(target) {
                ctx.problem(
                    &format!("steps[{i}].{key}"),
                    format!(
                        "no step '{target}'; steps are {}",
                        ids.iter().copied().collect::<Vec<_>>().join(", ")
                    ),
                );
            } else if target == step.id {
                ctx.problem(&format!("steps[{i}].{key}"), "a step cannot go to itself");
            }
        }
    }
    // Reachability from the first step.
    let mut reached = BTreeSet::new();
    let mut todo: Vec<usize> = if spec.steps.is_empty() {
        vec![]
    } else {
        vec![0]
    };
    while let Some(i) = todo.pop() {
        if !reached.insert(i) {
            continue;
        }
        for s in spec.successors(i) {
            if let Some((j, _)) = spec.step(s) {
                todo.push(j);
            }
        }
    }
    for (i, step) in spec.steps.iter().enumerate() {
        if !reached.contains(&i) {
            ctx.problem(
                &format!("steps[{i}]"),
                format!(
                    "no step reaches '{}' (a run starts at the first step)",
                    step.id
                ),
            );
        }
    }
}

/// Every template source of a step, with its path.
fn sources(step: &Step, path: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    match &step.kind {
        StepKind::Webhook {
            url, headers, body, ..
        } => {
            out.push((format!("{path}.url"), url.clone()));
            for (k, v) in headers {
                out.push((format!("{path}.headers.{k}"), v.clone()));
            }
            if let Some(b) = body {
                leaves(b, &format!("{path}.body"), &mut out, 0);
            }
        }
        StepKind::Delay { until: Some(u), .. } => out.push((format!("{path}.until"), u.clone())),
        _ => {}
    }
    out
}

fn leaves(v: &Value, path: &str, out: &mut Vec<(String, String)>, depth: usize) {
    if depth > super::template::MAX_BODY_DEPTH {
        return;
    }
    match v {
        Value::String(s) => out.push((path.to_string(), s.clone())),
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                leaves(x, &format!("{path}[{i}]"), out, depth + 1);
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                leaves(x, &format!("{path}.{k}"), out, depth + 1);
            }
        }
        _ => {}
    }
}

fn check_templates(ctx: &mut Ctx, spec: &Spec) {
    for (i, step) in spec.steps.iter().enumerate() {
        let path = format!("steps[{i}]");
        let mut found: Vec<(String, String)> = sources(step, &path);
        let exprs: Vec<(String, String)> = match &step.kind {
            StepKind::Branch {
                expression: Some(e),
                ..
            } => vec![(format!("{path}.expression"), format!("{{{{ {e} }}}}"))],
            _ => Vec::new(),
        };
        found.extend(exprs);
        for (p, source) in found {
            match ctx.engine.check(&source) {
                Err(e) => ctx.problem(&p, format!("does not compile: {e}")),
                Ok(names) => {
                    for name in names {
                        if let Err(e) = super::placeholders::known(spec, ctx.checks.fields, &name) {
                            ctx.problem(&p, e);
                        }
                    }
                }
            }
        }
        if let StepKind::WaitForEvent {
            filter: Some(f), ..
        } = &step.kind
            && let Err(e) = ctx.engine.check(&format!("{{{{ {f} }}}}"))
        {
            ctx.problem(&format!("{path}.filter"), format!("does not compile: {e}"));
        }
    }
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
