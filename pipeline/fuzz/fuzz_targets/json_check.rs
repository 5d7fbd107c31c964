//! The ingest check of `properties` (duplicate keys, numbers past f64, depth) on any
//! valid JSON text, against serde_json as the oracle:
//! - a text serde_json cannot read as a `Value` only because of a number out of range must
//!   be refused (by that number, unless a duplicate key comes first);
//! - a text it passes must read as a `Value` whose depth is the one it measured, and whose
//!   objects lose no key (no duplicate slipped through);
//! - a text nested past the walk's limit is refused with its true depth (serde_json's,
//!   where serde_json can read it), whatever the depth: the walk never recurses past
//!   the limit (the seed `deep` nests 500,000 levels; run with `-max_len` of 1 MiB).
#![no_main]

#[path = "../../src/ingest/json_check.rs"]
#[allow(dead_code)]
mod json_check;

use json_check::{Scan, scan};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

fn depth(v: &Value) -> usize {
    match v {
        Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
        Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
        _ => 0,
    }
}

/// The walk's depth limit in this target (the ingest default).
const LIMIT: usize = 16;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if serde_json::from_str::<&serde_json::value::RawValue>(text).is_err() {
        return; // the ingest path only scans what serde_json accepted as JSON
    }
    match (scan(text, "p", LIMIT), serde_json::from_str::<Value>(text)) {
        (Scan::TooDeep { depth: d }, parsed) => {
            assert!(d > LIMIT, "refused at depth {d} within the limit: {text}");
            assert_eq!(d, json_check::depth_of(text));
            if let Ok(v) = parsed {
                assert_eq!(d, depth(&v), "depth of {text}");
            }
        }
        (Scan::Ok { depth: d }, Ok(v)) => {
            assert!(d <= LIMIT, "passed at depth {d}: {text}");
            assert_eq!(d, depth(&v), "depth of {text}");
            // No key was lost to a duplicate: serde_json's map keeps one per key, so the
            // text re-read from the Value has as many keys as the original.
            let again = v.to_string();
            assert_eq!(
                count_keys(text),
                count_keys(&again),
                "a duplicate key passed in {text}"
            );
        }
        (Scan::Ok { .. }, Err(e)) => panic!("passed, but serde_json refuses {text}: {e}"),
        (Scan::Problem { message, .. }, Err(e)) if e.to_string().contains("out of range") => {
            assert!(
                message.contains("outside the range") || message.contains("more than once"),
                "{text}: {message}"
            );
        }
        (Scan::Problem { .. }, _) => {}
    }
});

/// Object keys in a JSON text: strings followed by `:` outside strings.
fn count_keys(text: &str) -> usize {
    let b = text.as_bytes();
    let (mut i, mut n) = (0, 0);
    while i < b.len() {
        if b[i] == b'"' {
            i += 1;
            while i < b.len() && b[i] != b'"' {
                i += if b[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
            let mut j = i;
            while j < b.len() && b[j].is_ascii_whitespace() {
                j += 1;
            }
            if j < b.len() && b[j] == b':' {
                n += 1;
            }
            continue;
        }
        i += 1;
    }
    n
}
