//! Checks of the values users give a subscription's fields, each returning the value or
//! the problems with their paths: the URL, custom headers and the event filter (which
//! exports use too).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tidemark_sinks::filter::glob_match;

use crate::problem::Problem;

fn problem(field: &str, message: impl Into<String>) -> Problem {
    Problem::field(field, message)
}

/// Event categories a filter can name.
pub const CATEGORIES: &[&str] = &["platform", "sdk", "custom", "system"];

/// The names ingest accepts (limits.max_string_len defaults to 512).
fn check_event_name(name: &str) -> std::result::Result<(), String> {
    if name.trim().is_empty() || name.len() > 512 || name.chars().any(char::is_control) {
        return Err(
            "must be an event name: 1 to 512 bytes of text without control characters".into(),
        );
    }
    Ok(())
}

pub const MAX_HEADERS: usize = 20;
/// Headers tidemark sets itself.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "content-encoding",
    "transfer-encoding",
    "host",
    "connection",
    "user-agent",
    "webhook-id",
    "webhook-timestamp",
    "webhook-signature",
];

/// Which events a subscription receives. Empty lists mean "all".
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Filter {
    /// Event-name globs (`*` matches anything).
    pub events: Vec<String>,
    /// `platform`, `sdk`, `custom`, `system` (segment entered/exited).
    pub categories: Vec<String>,
}

impl Filter {
    pub fn matches(&self, name: &str, category: &str) -> bool {
        (self.categories.is_empty() || self.categories.iter().any(|c| c == category))
            && (self.events.is_empty() || self.events.iter().any(|p| glob_match(p, name)))
    }
}

/// The `url` of a subscription: http(s), a host, no credentials, at most 2048 characters,
/// and a destination `check_url` (the deployment's address policy) accepts.
pub fn check_url(
    v: &Value,
    check_url: &dyn Fn(&url::Url) -> std::result::Result<(), String>,
) -> std::result::Result<url::Url, Problem> {
    let bad = |m: &str| problem("url", m);
    let u = match v.as_str().map(url::Url::parse) {
        None => return Err(bad("must be a string")),
        Some(Err(e)) => return Err(bad(&format!("not a valid URL: {e}"))),
        Some(Ok(u)) => u,
    };
    if !matches!(u.scheme(), "http" | "https") {
        Err(bad("must be an http:// or https:// URL"))
    } else if u.host().is_none() {
        Err(bad("must name a host"))
    } else if !u.username().is_empty() || u.password().is_some() {
        Err(bad(
            "must not contain credentials; send them in a custom header",
        ))
    } else if v.as_str().is_some_and(|s| s.len() > 2048) {
        Err(bad("must be at most 2048 characters"))
    } else if let Err(reason) = check_url(&u) {
        Err(bad(&format!("destination refused: {reason}")))
    } else {
        Ok(u)
    }
}

/// Custom `headers`: at most [`MAX_HEADERS`], valid names that tidemark does not set
/// itself, visible ASCII values of at most 4096 bytes; names lower-cased.
pub fn check_headers(v: &Value) -> std::result::Result<BTreeMap<String, String>, Vec<Problem>> {
    let h = match v.as_object() {
        None => return Err(vec![problem("headers", "must be an object of name: value")]),
        Some(h) if h.len() > MAX_HEADERS => {
            return Err(vec![problem(
                "headers",
                format!("at most {MAX_HEADERS} headers"),
            )]);
        }
        Some(h) => h,
    };
    let mut headers = BTreeMap::new();
    let mut problems = Vec::new();
    for (name, value) in h {
        let path = format!("headers.{name}");
        let lower = name.to_ascii_lowercase();
        if http::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            problems.push(problem(&path, "is not a valid header name"));
        } else if RESERVED_HEADERS.contains(&lower.as_str()) {
            problems.push(problem(
                &path,
                "is set by tidemark and cannot be overridden",
            ));
        } else {
            match value.as_str() {
                Some(s) if http::header::HeaderValue::from_str(s).is_ok() && s.len() <= 4096 => {
                    headers.insert(lower, s.to_string());
                }
                _ => problems.push(problem(
                    &path,
                    "must be a string of visible ASCII characters, at most 4096",
                )),
            }
        }
    }
    if problems.is_empty() {
        Ok(headers)
    } else {
        Err(problems)
    }
}

pub fn parse_filter(v: &Value) -> std::result::Result<Filter, Vec<Problem>> {
    let mut problems = Vec::new();
    let Some(obj) = v.as_object() else {
        return Err(vec![problem(
            "filter",
            "must be an object {events, categories}",
        )]);
    };
    let mut filter = Filter::default();
    for key in obj.keys() {
        if key != "events" && key != "categories" {
            problems.push(problem(
                &format!("filter.{key}"),
                "unknown field; expected events or categories",
            ));
        }
    }
    let list = |name: &str, problems: &mut Vec<Problem>| -> Vec<String> {
        match obj.get(name) {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(items)) if items.len() <= 100 => items
                .iter()
                .enumerate()
                .filter_map(|(i, item)| match item.as_str() {
                    Some(s) => Some(s.to_string()),
                    None => {
                        problems.push(problem(&format!("filter.{name}[{i}]"), "must be a string"));
                        None
                    }
                })
                .collect(),
            Some(_) => {
                problems.push(problem(
                    &format!("filter.{name}"),
                    "must be a list of at most 100 strings",
                ));
                Vec::new()
            }
        }
    };
    filter.events = list("events", &mut problems);
    filter.categories = list("categories", &mut problems);
    for (i, pattern) in filter.events.iter().enumerate() {
        // A glob is an event name with `*` standing for any run of characters.
        if let Err(msg) = check_event_name(&pattern.replace('*', "x")) {
            problems.push(problem(&format!("filter.events[{i}]"), msg));
        }
    }
    for (i, c) in filter.categories.iter().enumerate() {
        if !CATEGORIES.contains(&c.as_str()) {
            problems.push(problem(
                &format!("filter.categories[{i}]"),
                format!("must be one of {}, not '{c}'", CATEGORIES.join(", ")),
            ));
        }
    }
    if problems.is_empty() {
        Ok(filter)
    } else {
        Err(problems)
    }
}
