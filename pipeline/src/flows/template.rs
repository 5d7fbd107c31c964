//! Templates of flow steps, in a sandbox: minijinja with a work budget (fuel), a
//! recursion limit, no loader (so no file or network access), a size cap on every source
//! and on what a render writes.
//!
//! A JSON body is rendered leaf by leaf: each string is its own template, object keys
//! and the JSON shape stay as written, and a string that is exactly one placeholder
//! (`"{{ variables.amount }}"`) takes the value's JSON type. No body is built by pasting
//! text into JSON.
//!
//! Placeholders read the run's context: `profile.*` (live: activity, `tags`, `segments`,
//! `fields.<name>`), `trigger.*` (the starting event or the API call's `trigger`),
//! `variables.*` (resolved once at start), `steps.<id>.*` (a webhook step's `status` and
//! `body`) and `run.*` (`id`, `flow_id`, `started_at`).

use std::collections::BTreeSet;
use std::io::Write;

use minijinja::value::Serde;
use minijinja::{Environment, UndefinedBehavior};
use serde_json::{Map, Value};

use super::model::MAX_TEMPLATE_BYTES;

/// Work budget of one render (minijinja instructions).
pub const FUEL: u64 = 20_000;
/// Deepest nesting of template calls and blocks.
pub const RECURSION_LIMIT: usize = 32;
/// Most bytes one rendered request (all its leaves) may hold.
pub const MAX_RENDERED_BYTES: usize = 256 * 1024;
/// Deepest JSON nesting of a templated body.
pub const MAX_BODY_DEPTH: usize = 32;

/// The roots a placeholder may start with.
pub const ROOTS: [&str; 5] = ["profile", "trigger", "variables", "steps", "run"];

/// Why a template could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateError(pub String);

impl std::fmt::Display for TemplateError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn explain(e: &minijinja::Error) -> TemplateError {
    use minijinja::ErrorKind as K;
    let what = match e.kind() {
        K::OutOfFuel => format!("ran out of its work budget ({FUEL} steps)"),
        _ => {
            let mut text = e.to_string();
            if let Some(d) = e.detail()
                && !text.contains(d)
            {
                text = format!("{text}: {d}");
            }
            text
        }
    };
    TemplateError(what)
}

/// The sandboxed engine (cheap to clone: no templates are kept in it).
#[derive(Clone)]
pub struct Engine {
    env: Environment<'static>,
    /// The same, writing every value percent-encoded (the path and query of a URL).
    url: Environment<'static>,
}

/// What a URL's values are percent-encoded with: everything but the unreserved characters.
const URL_VALUE: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

impl Default for Engine {
    fn default() -> Self {
        Engine::new()
    }
}

impl std::fmt::Debug for Engine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Engine")
    }
}

impl Engine {
    pub fn new() -> Engine {
        let mut env = Environment::new();
        env.set_fuel(Some(FUEL));
        env.set_recursion_limit(RECURSION_LIMIT);
        // A value the user's profile lacks renders empty (a typed leaf: null); names that
        // cannot exist are refused when the flow is saved.
        env.set_undefined_behavior(UndefinedBehavior::Chainable);
        // Text, not HTML: JSON bodies are built leaf by leaf, never by escaping.
        env.set_auto_escape_callback(|_| minijinja::AutoEscape::None);
        let mut url = env.clone();
        url.set_formatter(|out, _state, value| {
            if value.is_undefined() || value.is_none() {
                return Ok(());
            }
            let text = value.to_string();
            let encoded = percent_encoding::utf8_percent_encode(&text, URL_VALUE).to_string();
            out.write_str(&encoded).map_err(|_| {
                minijinja::Error::new(minijinja::ErrorKind::WriteFailure, "output cap")
            })
        });
        Engine { env, url }
    }

    /// Renders a URL template: each value is percent-encoded, the rest stays as written.
    pub fn render_url(
        &self,
        source: &str,
        ctx: &minijinja::Value,
        budget: &mut usize,
    ) -> Result<String, TemplateError> {
        if source.len() > MAX_TEMPLATE_BYTES {
            return Err(TemplateError(format!(
                "is {} bytes; a template holds at most {MAX_TEMPLATE_BYTES}",
                source.len()
            )));
        }
        let t = self
            .url
            .template_from_str(source)
            .map_err(|e| explain(&e))?;
        let mut out = Capped {
            buf: Vec::new(),
            left: *budget,
        };
        match t.render_captured_to(ctx.clone(), &mut out) {
            Ok(_) => {}
            Err(_) if out.left == 0 => return Err(too_large()),
            Err(e) => return Err(explain(&e)),
        }
        *budget = out.left;
        String::from_utf8(out.buf).map_err(|_| TemplateError("rendered text is not UTF-8".into()))
    }

    /// Checks that `source` compiles; returns the placeholders it reads
    /// (`variables.coupon`, `profile.fields.plan`).
    pub fn check(&self, source: &str) -> Result<BTreeSet<String>, TemplateError> {
        if source.len() > MAX_TEMPLATE_BYTES {
            return Err(TemplateError(format!(
                "is {} bytes; a template holds at most {MAX_TEMPLATE_BYTES}",
                source.len()
            )));
        }
        let names = match one_placeholder(source) {
            Some(expr) => self
                .env
                .compile_expression(expr)
                .map_err(|e| explain(&e))?
                .undeclared_variables(true),
            None => self
                .env
                .template_from_str(source)
                .map_err(|e| explain(&e))?
                .undeclared_variables(true),
        };
        Ok(names.into_iter().collect())
    }

    /// Evaluates an expression (a branch's or a wait's filter) to true or false.
    pub fn truthy(&self, expr: &str, ctx: &Value) -> Result<bool, TemplateError> {
        let e = self.env.compile_expression(expr).map_err(|e| explain(&e))?;
        let v = e
            .eval(minijinja::Value::from(Serde(ctx)))
            .map_err(|e| explain(&e))?;
        Ok(v.is_true())
    }

    /// Renders one string: a single placeholder keeps its JSON type, anything else is text.
    pub fn render_leaf(
        &self,
        source: &str,
        ctx: &minijinja::Value,
        budget: &mut usize,
    ) -> Result<Value, TemplateError> {
        if !source.contains("{{") && !source.contains("{%") {
            take(budget, source.len())?;
            return Ok(Value::String(source.to_string()));
        }
        if source.len() > MAX_TEMPLATE_BYTES {
            return Err(TemplateError(format!(
                "is {} bytes; a template holds at most {MAX_TEMPLATE_BYTES}",
                source.len()
            )));
        }
        if let Some(expr) = one_placeholder(source) {
            let e = self.env.compile_expression(expr).map_err(|e| explain(&e))?;
            let v = e.eval(ctx.clone()).map_err(|e| explain(&e))?;
            let json = if v.is_undefined() || v.is_none() {
                Value::Null
            } else {
                serde_json::to_value(&v).map_err(|e| TemplateError(e.to_string()))?
            };
            take(budget, json_len(&json))?;
            return Ok(json);
        }
        let t = self
            .env
            .template_from_str(source)
            .map_err(|e| explain(&e))?;
        let mut out = Capped {
            buf: Vec::new(),
            left: *budget,
        };
        match t.render_captured_to(ctx.clone(), &mut out) {
            Ok(_) => {}
            Err(_) if out.left == 0 => return Err(too_large()),
            Err(e) => return Err(explain(&e)),
        }
        *budget = out.left;
        String::from_utf8(out.buf)
            .map(Value::String)
            .map_err(|_| TemplateError("rendered text is not UTF-8".into()))
    }

    /// Renders every string leaf of `template` (keys and shape kept).
    pub fn render_json(
        &self,
        template: &Value,
        ctx: &minijinja::Value,
        budget: &mut usize,
    ) -> Result<Value, (String, TemplateError)> {
        self.render_at(template, ctx, budget, String::new(), 0)
    }

    fn render_at(
        &self,
        template: &Value,
        ctx: &minijinja::Value,
        budget: &mut usize,
        path: String,
        depth: usize,
    ) -> Result<Value, (String, TemplateError)> {
        if depth > MAX_BODY_DEPTH {
            return Err((
                path,
                TemplateError(format!("nests deeper than {MAX_BODY_DEPTH} levels")),
            ));
        }
        match template {
            Value::String(s) => self.render_leaf(s, ctx, budget).map_err(|e| (path, e)),
            Value::Array(items) => items
                .iter()
                .enumerate()
                .map(|(i, v)| self.render_at(v, ctx, budget, format!("{path}[{i}]"), depth + 1))
                .collect::<Result<Vec<_>, _>>()
                .map(Value::Array),
            Value::Object(o) => {
                let mut out = Map::new();
                for (k, v) in o {
                    take(budget, k.len()).map_err(|e| (path.clone(), e))?;
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    out.insert(k.clone(), self.render_at(v, ctx, budget, p, depth + 1)?);
                }
                Ok(Value::Object(out))
            }
            other => {
                take(budget, json_len(other)).map_err(|e| (path, e))?;
                Ok(other.clone())
            }
        }
    }
}

/// The context value a template reads (built once per step).
pub fn context(ctx: &Value) -> minijinja::Value {
    minijinja::Value::from(Serde(ctx))
}

/// The expression inside `{{ … }}` when `source` is exactly one placeholder.
fn one_placeholder(source: &str) -> Option<&str> {
    let inner = source.trim().strip_prefix("{{")?.strip_suffix("}}")?;
    let inner = inner.trim_start_matches('-').trim_end_matches('-');
    (!inner.contains("{{") && !inner.contains("}}") && !inner.contains("{%")).then_some(inner)
}

fn json_len(v: &Value) -> usize {
    serde_json::to_vec(v).map_or(usize::MAX, |b| b.len())
}

fn too_large() -> TemplateError {
    TemplateError(format!(
        "renders more than {MAX_RENDERED_BYTES} bytes (the cap of one request)"
    ))
}

fn take(budget: &mut usize, n: usize) -> Result<(), TemplateError> {
    *budget = budget.checked_sub(n).ok_or_else(too_large)?;
    Ok(())
}

/// A writer that refuses to grow past its budget.
struct Capped {
    buf: Vec<u8>,
    left: usize,
}

impl Write for Capped {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        if data.len() > self.left {
            self.left = 0;
            return Err(std::io::Error::other("output cap"));
        }
        self.left -= data.len();
        self.buf.extend_from_slice(data);
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ctx() -> minijinja::Value {
        context(&json!({
            "variables": {"amount": 12.5, "coupon": "SAVE\"10", "on": true, "tags": ["a", "b"]},
            "profile": {"user_id": "u1", "fields": {"plan": "gold"}},
            "trigger": {"properties": {"sku": "x-1"}},
        }))
    }

    fn render(t: Value) -> Result<Value, (String, TemplateError)> {
        let mut budget = MAX_RENDERED_BYTES;
        Engine::new().render_json(&t, &ctx(), &mut budget)
    }

    #[test]
    fn a_leaf_that_is_one_placeholder_keeps_its_json_type() {
        let out = render(json!({
            "amount": "{{ variables.amount }}",
            "on": "{{variables.on}}",
            "tags": "{{ variables.tags }}",
            "text": "total {{ variables.amount }}",
            "missing": "{{ profile.fields.nickname }}",
            "n": 3,
        }))
        .unwrap();
        assert_eq!(
            out,
            json!({"amount": 12.5, "on": true, "tags": ["a", "b"], "text": "total 12.5",
                   "missing": null, "n": 3})
        );
    }

    #[test]
    fn quotes_in_values_never_break_the_json() {
        let out =
            render(json!({"c": "code: {{ variables.coupon }}", "raw": "{{ variables.coupon }}"}))
                .unwrap();
        assert_eq!(out["c"], json!("code: SAVE\"10"));
        assert_eq!(out["raw"], json!("SAVE\"10"));
        let text = serde_json::to_string(&out).unwrap();
        assert_eq!(serde_json::from_str::<Value>(&text).unwrap(), out);
    }

    #[test]
    fn keys_and_shape_are_kept() {
        let out = render(json!({"{{ x }}": [{"a": "{{ profile.user_id }}"}]})).unwrap();
        assert_eq!(out, json!({"{{ x }}": [{"a": "u1"}]}));
    }

    #[test]
    fn check_lists_the_placeholders_read() {
        let names = Engine::new()
            .check("hi {{ profile.fields.plan }} {% if variables.on %}{{ trigger.properties.sku }}{% endif %}")
            .unwrap();
        assert_eq!(
            names.into_iter().collect::<Vec<_>>(),
            vec![
                "profile.fields.plan",
                "trigger.properties.sku",
                "variables.on"
            ]
        );
    }

    #[test]
    fn a_template_that_does_not_compile_is_refused_with_the_reason() {
        let e = Engine::new().check("hello {{ name ").unwrap_err();
        assert!(e.0.contains("syntax error"), "{e}");
        let e = Engine::new()
            .check("{% for x in %}{% endfor %}")
            .unwrap_err();
        assert!(e.0.contains("syntax error"), "{e}");
    }

    #[test]
    fn a_template_bomb_runs_out_of_fuel() {
        let bomb = "{% for a in range(1000) %}{% for b in range(1000) %}x{% endfor %}{% endfor %}";
        let (path, e) = render(json!({"b": bomb})).unwrap_err();
        assert_eq!(path, "b");
        assert!(e.0.contains("work budget"), "{e}");
    }

    #[test]
    fn output_past_the_cap_is_refused() {
        let big = "{% for a in range(900) %}{{ 'y' * 1000 }}{% endfor %}";
        let (_, e) = render(json!([big])).unwrap_err();
        assert!(e.0.contains("renders more than"), "{e}");
        // many small leaves add up to the same cap
        let leaves: Vec<Value> = (0..300).map(|_| json!("z".repeat(1000))).collect();
        let (_, e) = render(Value::Array(leaves)).unwrap_err();
        assert!(e.0.contains("renders more than"), "{e}");
    }

    #[test]
    fn deep_recursion_is_refused() {
        let t = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}{{ f(0) }}";
        let (_, e) = render(json!(t)).unwrap_err();
        assert!(
            e.0.contains("recursion") || e.0.contains("work budget"),
            "{e}"
        );
    }

    #[test]
    fn templates_cannot_read_files() {
        let e = render(json!("{% include 'etc/passwd' %}")).unwrap_err().1;
        assert!(e.0.contains("template not found"), "{e}");
    }

    #[test]
    fn values_in_a_url_are_percent_encoded() {
        let mut budget = MAX_RENDERED_BYTES;
        let c = context(&json!({"profile": {"user_id": "a b/c?d"}, "variables": {"q": "x&y=z"}}));
        let url = Engine::new()
            .render_url("https://h.example/u/{{ profile.user_id }}?q={{ variables.q }}&m={{ variables.none }}", &c, &mut budget)
            .unwrap();
        assert_eq!(url, "https://h.example/u/a%20b%2Fc%3Fd?q=x%26y%3Dz&m=");
    }

    #[test]
    fn expressions_decide_branches() {
        let e = Engine::new();
        let c = json!({"variables": {"amount": 12}});
        assert!(e.truthy("variables.amount > 10", &c).unwrap());
        assert!(!e.truthy("variables.amount > 20", &c).unwrap());
        assert!(!e.truthy("variables.missing", &c).unwrap());
    }
}
