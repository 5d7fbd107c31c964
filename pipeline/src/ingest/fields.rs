//! Checks of single JSON values, shared by the native event format ([`super::event`])
//! and the SDK formats (`compat`): strings, ids, `occurred_at`, and objects
//! stored as `properties`. Each returns the problem's wording; the caller names the field.

use std::borrow::Cow;

use serde_json::value::RawValue;

use super::json_check::{self, Scan};
use crate::config::Limits;

/// 2000-01-01T00:00:00Z and 2100-01-01T00:00:00Z in microseconds: the accepted range of
/// `occurred_at`. Epoch *seconds* sent where milliseconds are expected land before it.
const MIN_OCCURRED_US: i64 = 946_684_800_000_000;
const MAX_OCCURRED_US: i64 = 4_102_444_800_000_000;

pub(crate) fn is_null(raw: &RawValue) -> bool {
    raw.get() == "null"
}

/// A JSON string's content, borrowed when it has no escapes.
pub(crate) fn string_value(raw: &RawValue) -> Result<Cow<'_, str>, String> {
    let s = raw.get();
    if !s.starts_with('"') {
        return Err("must be a string".into());
    }
    let inner = &s[1..s.len() - 1];
    if !inner.contains('\\') {
        return Ok(Cow::Borrowed(inner));
    }
    serde_json::from_str::<String>(s)
        .map(Cow::Owned)
        .map_err(|e| format!("is not a valid string: {e}"))
}

/// `us` (microseconds since the epoch) if it is in the accepted range of `occurred_at`.
pub(crate) fn check_occurred_range(us: i64, shown: &str) -> Result<i64, String> {
    if us < MIN_OCCURRED_US {
        return Err(format!(
            "{shown} is before 2000-01-01T00:00:00Z (epoch milliseconds are expected; were seconds sent?)"
        ));
    }
    if us >= MAX_OCCURRED_US {
        return Err(format!("{shown} is after 2100-01-01T00:00:00Z"));
    }
    Ok(us)
}

/// Checks a name-like string: present, not blank, not too long, no control characters.
pub(crate) fn checked_string<'a>(
    raw: &'a RawValue,
    limits: &Limits,
) -> Result<Cow<'a, str>, String> {
    let s = string_value(raw)?;
    if s.trim().is_empty() {
        return Err("must not be empty".into());
    }
    if s.len() > limits.max_string_len {
        return Err(format!(
            "is {} bytes long, more than the limit of {} (limits.max_string_len)",
            s.len(),
            limits.max_string_len
        ));
    }
    if s.chars().any(char::is_control) {
        return Err("must not contain control characters".into());
    }
    if let Some(c) = s.chars().find(|c| is_bidi_control(*c)) {
        return Err(format!(
            "must not contain bidirectional control characters (U+{:04X}): they make an id \
             display as another",
            c as u32
        ));
    }
    Ok(s)
}

/// The Unicode bidirectional embedding, override and isolate controls (and the marks).
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

pub(crate) fn parse_occurred_at(raw: &RawValue) -> Result<i64, String> {
    let s = raw.get();
    let us = if s.starts_with('"') {
        let text = string_value(raw)?;
        let t = chrono::DateTime::parse_from_rfc3339(&text).map_err(|e| {
            format!("'{text}' is not an RFC 3339 timestamp ({e}); send e.g. 2024-05-01T12:00:00Z or epoch milliseconds")
        })?;
        t.timestamp_micros()
    } else if s.bytes().all(|b| b.is_ascii_digit() || b == b'-') {
        let ms: i64 = s
            .parse()
            .map_err(|_| format!("{s} is not a valid number of epoch milliseconds"))?;
        ms.checked_mul(1000)
            .ok_or_else(|| format!("{s} is out of range"))?
    } else {
        return Err("must be an RFC 3339 string or an integer of epoch milliseconds".into());
    };
    check_occurred_range(us, s)
}

/// Checks the JSON text of an object stored as `properties` (size, depth, duplicate keys,
/// numbers); problems are at paths under `root`.
pub(crate) fn check_object<'a>(
    text: &'a str,
    root: &str,
    limits: &Limits,
) -> Result<&'a str, (String, String)> {
    let at_root = |m: String| (root.to_string(), m);
    if !text.starts_with('{') {
        return Err(at_root("must be a JSON object".into()));
    }
    if text.len() > limits.max_properties_bytes {
        return Err(at_root(format!(
            "is {} bytes, more than the limit of {} (limits.max_properties_bytes)",
            text.len(),
            limits.max_properties_bytes
        )));
    }
    match json_check::scan(text, root, limits.max_properties_depth) {
        Scan::Problem { path, message } => Err((path, message)),
        Scan::TooDeep { depth } => Err(at_root(format!(
            "is nested {depth} levels deep, more than the limit of {} (limits.max_properties_depth)",
            limits.max_properties_depth
        ))),
        Scan::Ok { .. } => Ok(text),
    }
}
