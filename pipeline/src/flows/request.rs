//! A webhook step's request, rendered from the run's context: the URL (each value
//! percent-encoded), the headers and the JSON body (leaf by leaf).

use std::collections::BTreeMap;

use serde_json::Value;

use super::model::StepKind;
use super::template::{Engine, MAX_RENDERED_BYTES, context};

/// A rendered webhook request.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct Request {
    pub method: String,
    pub url: String,
    pub headers: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub body: Option<Value>,
}

/// Renders a webhook step's request against `ctx` (the run's context).
pub fn render(
    engine: &Engine,
    kind: &StepKind,
    ctx: &Value,
) -> std::result::Result<Request, String> {
    let StepKind::Webhook {
        url,
        method,
        headers,
        body,
        ..
    } = kind
    else {
        return Err("not a webhook step".into());
    };
    let c = context(ctx);
    let mut budget = MAX_RENDERED_BYTES;
    let text = |v: Value| match v {
        Value::String(s) => s,
        Value::Null => String::new(),
        other => other.to_string(),
    };
    let url = engine
        .render_url(url, &c, &mut budget)
        .map_err(|e| format!("url: {e}"))?;
    let mut rendered = BTreeMap::new();
    for (k, v) in headers {
        let v = engine
            .render_leaf(v, &c, &mut budget)
            .map(text)
            .map_err(|e| format!("headers.{k}: {e}"))?;
        rendered.insert(k.clone(), v);
    }
    let body = match body {
        None => None,
        Some(b) => Some(engine.render_json(b, &c, &mut budget).map_err(|(p, e)| {
            if p.is_empty() {
                format!("body: {e}")
            } else {
                format!("body.{p}: {e}")
            }
        })?),
    };
    Ok(Request {
        method: method.clone(),
        url,
        headers: rendered,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_request_renders_each_part() {
        let kind: StepKind = serde_json::from_value(json!({"type": "webhook",
            "url": "https://x.example/u/{{ profile.user_id }}?c={{ variables.c }}",
            "headers": {"x-n": "{{ variables.n }}"},
            "body": {"n": "{{ variables.n }}", "s": "n={{ variables.n }}"}}))
        .unwrap();
        let ctx = json!({"profile": {"user_id": "u 1"}, "variables": {"c": "A&B", "n": 3}});
        let r = render(&Engine::new(), &kind, &ctx).unwrap();
        assert_eq!(r.url, "https://x.example/u/u%201?c=A%26B");
        assert_eq!(r.headers["x-n"], "3");
        assert_eq!(r.body, Some(json!({"n": 3, "s": "n=3"})));
        assert_eq!(r.method, "POST");
    }
}
