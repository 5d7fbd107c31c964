//! One pass over an event's `properties` JSON text (already known to be valid JSON, as
//! serde_json's `RawValue` checked it), for what JSON itself allows but readers of the
//! stored text cannot use:
//!
//! - a key given twice in one object (parsers keep the last, or the first, or both);
//!   keys are compared after unescaping, so `"a"` and `"\u0061"` are the same key;
//! - a number outside the range of a 64-bit float (`1e400`), which Spark, DuckDB and
//!   serde_json itself refuse to read back.
//!
//! It also measures the nesting depth (an object is 1). Each problem names its path
//! (`properties.cart.items[2].price`).
//!
//! The walk recurses once per level, so it is bounded before it recurses: past
//! `max_depth` it stops and measures the text's true depth with a loop instead
//! ([`depth_of`]), which needs no stack however deep the text is (10^6 levels included).

use std::borrow::Cow;

/// What [`scan`] found: the nesting depth, or the first problem and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scan {
    Ok {
        depth: usize,
    },
    Problem {
        path: String,
        message: String,
    },
    /// Nested deeper than the walk's `max_depth`: the text's whole depth (keys past the
    /// limit were not checked).
    TooDeep {
        depth: usize,
    },
}

/// The deepest walk [`scan`] makes whatever `max_depth` it is given: serde_json's own
/// recursion limit, so a value deeper than this could not be read back as a `Value`.
pub const MAX_WALK_DEPTH: usize = crate::config::ingest::MAX_PROPERTIES_DEPTH;

enum Seg<'a> {
    Key(Cow<'a, str>),
    Index(usize),
}

struct Scanner<'a> {
    text: &'a str,
    i: usize,
    path: Vec<Seg<'a>>,
    /// The keys of the objects being read, innermost last (one allocation for all).
    keys: Vec<Cow<'a, str>>,
    max_depth: usize,
    /// The deepest level the walk enters; one level deeper is [`Stop::TooDeep`].
    limit: usize,
}

/// Why the walk stopped early.
enum Stop {
    Problem(String, String),
    TooDeep,
}

type Found = Stop;

/// Scans `text` (valid JSON) whose path is `root` (e.g. `properties`), entering at most
/// `max_depth` levels (and never more than [`MAX_WALK_DEPTH`]).
pub fn scan(text: &str, root: &str, max_depth: usize) -> Scan {
    let mut s = Scanner {
        text,
        i: 0,
        path: Vec::with_capacity(8),
        keys: Vec::with_capacity(32),
        max_depth: 0,
        limit: max_depth.min(MAX_WALK_DEPTH),
    };
    match s.value(1) {
        Ok(()) => Scan::Ok { depth: s.max_depth },
        Err(Stop::Problem(path, message)) => Scan::Problem {
            path: format!("{root}{path}"),
            message,
        },
        Err(Stop::TooDeep) => Scan::TooDeep {
            depth: depth_of(text),
        },
    }
}

/// The nesting depth of a JSON text (an object or array is 1), in one loop over its bytes
/// with no stack: brackets inside strings do not count.
pub fn depth_of(text: &str) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in text.as_bytes() {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'{' | b'[' => {
                depth += 1;
                max = max.max(depth);
            }
            b'}' | b']' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

impl<'a> Scanner<'a> {
    fn bytes(&self) -> &'a [u8] {
        self.text.as_bytes()
    }

    fn ws(&mut self) {
        while self
            .bytes()
            .get(self.i)
            .is_some_and(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\r'))
        {
            self.i += 1;
        }
    }

    fn path(&self) -> String {
        let mut out = String::new();
        for seg in &self.path {
            match seg {
                Seg::Key(k) => {
                    out.push('.');
                    out.push_str(k);
                }
                Seg::Index(i) => out.push_str(&format!("[{i}]")),
            }
        }
        out
    }

    fn value(&mut self, depth: usize) -> Result<(), Found> {
        self.ws();
        match self.bytes().get(self.i) {
            Some(b'{') => self.object(depth),
            Some(b'[') => self.array(depth),
            Some(b'"') => self.string().map(|_| ()),
            Some(b't' | b'f' | b'n') => {
                while self
                    .bytes()
                    .get(self.i)
                    .is_some_and(u8::is_ascii_alphabetic)
                {
                    self.i += 1;
                }
                Ok(())
            }
            Some(_) => self.number(),
            None => Ok(()),
        }
    }

    /// Enters a level: refused past the limit, before anything recurses.
    fn enter(&mut self, depth: usize) -> Result<(), Found> {
        if depth > self.limit {
            return Err(Stop::TooDeep);
        }
        self.max_depth = self.max_depth.max(depth);
        Ok(())
    }

    fn object(&mut self, depth: usize) -> Result<(), Found> {
        self.enter(depth)?;
        self.i += 1; // {
        // This object's keys are `keys[base..]`; past 16 of them a set keeps a wide object
        // linear.
        let base = self.keys.len();
        let mut set: Option<std::collections::HashSet<Cow<'a, str>>> = None;
        let result = loop {
            self.ws();
            match self.bytes().get(self.i) {
                Some(b'}') | None => {
                    self.i += 1;
                    break Ok(());
                }
                Some(b',') => {
                    self.i += 1;
                    continue;
                }
                _ => {}
            }
            let key = self.string()?;
            let seen = match &mut set {
                Some(set) => !set.insert(key.clone()),
                None => self.keys[base..].contains(&key),
            };
            if seen {
                break Err(Stop::Problem(
                    format!("{}.{key}", self.path()),
                    "is given more than once; give each key once".into(),
                ));
            }
            if set.is_none() && self.keys.len() - base == 16 {
                let mut all: std::collections::HashSet<_> = self.keys.drain(base..).collect();
                all.insert(key.clone());
                set = Some(all);
            } else if set.is_none() {
                self.keys.push(key.clone());
            }
            self.ws();
            self.i += 1; // :
            self.path.push(Seg::Key(key));
            let v = self.value(depth + 1);
            self.path.pop();
            v?;
        };
        self.keys.truncate(base);
        result
    }

    fn array(&mut self, depth: usize) -> Result<(), Found> {
        self.enter(depth)?;
        self.i += 1; // [
        let mut index = 0;
        loop {
            self.ws();
            match self.bytes().get(self.i) {
                Some(b']') | None => {
                    self.i += 1;
                    return Ok(());
                }
                Some(b',') => {
                    self.i += 1;
                    index += 1;
                    continue;
                }
                _ => {}
            }
            self.path.push(Seg::Index(index));
            self.value(depth + 1)?;
            self.path.pop();
        }
    }

    /// A string at `i`, unescaped only when it has escapes.
    fn string(&mut self) -> Result<Cow<'a, str>, Found> {
        let start = self.i;
        self.i += 1; // "
        let mut escaped = false;
        while let Some(at) = self
            .bytes()
            .get(self.i..)
            .and_then(|rest| rest.iter().position(|b| matches!(b, b'"' | b'\\')))
        {
            self.i += at + 1;
            if self.bytes()[self.i - 1] == b'"' {
                break;
            }
            escaped = true;
            self.i += 1; // the escaped byte (a \uXXXX's digits are plain bytes)
        }
        let text: &'a str = self.text.get(start..self.i).unwrap_or_default();
        if text.len() < 2 {
            return Ok(Cow::Borrowed(""));
        }
        if !escaped {
            return Ok(Cow::Borrowed(&text[1..text.len() - 1]));
        }
        serde_json::from_str::<String>(text)
            .map(Cow::Owned)
            .map_err(|e| {
                Stop::Problem(
                    self.path(),
                    format!("has a string that cannot be read: {e}"),
                )
            })
    }

    fn number(&mut self) -> Result<(), Found> {
        let start = self.i;
        while self
            .bytes()
            .get(self.i)
            .is_some_and(|b| matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E'))
        {
            self.i += 1;
        }
        let text = &self.text[start..self.i];
        // Only an exponent or more than 308 digits can leave the f64 range (integers of any
        // length read as floats past i64/u64); the rest need no parse.
        if text.len() < 300 && !text.bytes().any(|b| b == b'e' || b == b'E') {
            return Ok(());
        }
        match text.parse::<f64>() {
            Ok(f) if f.is_finite() => Ok(()),
            _ => Err(Stop::Problem(
                self.path(),
                format!("{text} is outside the range of a 64-bit float"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(text: &str) -> (String, String) {
        match scan(text, "properties", 64) {
            Scan::Problem { path, message } => (path, message),
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn depth_duplicates_and_ranges() {
        let ok = [
            (r#"{}"#, 1),
            (r#"{"a":"{[{[\"{"}"#, 1),
            (r#"{"a":[{"b":[]}]}"#, 4),
            (r#"{"a":1,"b":{"a":2},"c":[{"a":1},{"a":2}]}"#, 3),
            (
                r#"{"big":123456789012345678901234567890,"x":-1.5e300,"t":true,"n":null}"#,
                1,
            ),
            (r#"{ "a" : [ 1 , 2 ] , "b" : "\"quoted\"" }"#, 2),
            (r#"{"é":1,"e":2,"a\"b":3}"#, 1),
        ];
        let wide = format!(
            "{{{}}}",
            (0..5000)
                .map(|i| format!("\"k{i}\":{i}"))
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(scan(&wide, "properties", 64), Scan::Ok { depth: 1 });
        let wide_dup = wide.replace("}", ",\"k4321\":0}");
        assert_eq!(
            scan(&wide_dup, "properties", 64),
            Scan::Problem {
                path: "properties.k4321".into(),
                message: "is given more than once; give each key once".into()
            }
        );
        for (text, depth) in ok {
            assert_eq!(scan(text, "properties", 64), Scan::Ok { depth }, "{text}");
        }
        let refused = [
            (
                r#"{"a":1,"a":2}"#,
                "properties.a",
                "is given more than once",
            ),
            (
                r#"{"a":1,"\u0061":2}"#,
                "properties.a",
                "is given more than once",
            ),
            (
                r#"{"cart":{"items":[{"p":1},{"p":2,"p":3}]}}"#,
                "properties.cart.items[1].p",
                "is given more than once",
            ),
            (
                r#"{"x":1e400}"#,
                "properties.x",
                "1e400 is outside the range",
            ),
            (
                r#"{"a":[0,-2E999]}"#,
                "properties.a[1]",
                "-2E999 is outside the range",
            ),
        ];
        for (text, path, message) in refused {
            let (p, m) = problem(text);
            assert_eq!(p, path, "{text}");
            assert!(m.contains(message), "{text}: {m}");
        }
    }

    /// Nesting far past any stack's reach stops at the limit and still reports the whole
    /// depth, as arrays, objects and both mixed; brackets in strings do not count.
    #[test]
    fn deep_nesting_stops_at_the_limit_with_its_true_depth() {
        for n in [18usize, 1_000, 100_000, 1_000_000] {
            let arrays = format!("{{\"a\":{}{}}}", "[".repeat(n), "]".repeat(n));
            let objects = format!("{}1{}", "{\"k\":".repeat(n), "}".repeat(n));
            let mixed = format!("{}0{}", "{\"k\":[".repeat(n / 2), "]}".repeat(n / 2));
            for (text, depth) in [(arrays, n + 1), (objects, n), (mixed, n / 2 * 2)] {
                assert_eq!(scan(&text, "properties", 16), Scan::TooDeep { depth });
            }
        }
        assert_eq!(
            scan(r#"{"a":{"b":"[[[[{{"}}"#, "properties", 2),
            Scan::Ok { depth: 2 }
        );
        assert_eq!(
            scan(r#"{"a":{"b":{"c":"\"[[["}}}"#, "properties", 2),
            Scan::TooDeep { depth: 3 }
        );
        // A limit above the walk's own is held to the walk's own.
        let deep = format!("{}{}", "[".repeat(200), "]".repeat(200));
        assert_eq!(scan(&deep, "p", usize::MAX), Scan::TooDeep { depth: 200 });
    }

    use proptest::prelude::*;

    /// Any JSON value (keys unique, as serde_json's map makes them).
    fn json() -> impl Strategy<Value = serde_json::Value> {
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::from),
            any::<i64>().prop_map(serde_json::Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(serde_json::Value::from),
            "\\PC{0,8}".prop_map(serde_json::Value::from),
        ];
        leaf.prop_recursive(5, 48, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
                prop::collection::btree_map("[a-z\"\\\\é]{0,4}", inner, 0..6)
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn depth(v: &serde_json::Value) -> usize {
        match v {
            serde_json::Value::Array(a) => 1 + a.iter().map(depth).max().unwrap_or(0),
            serde_json::Value::Object(o) => 1 + o.values().map(depth).max().unwrap_or(0),
            _ => 0,
        }
    }

    proptest! {
        /// Every object serde_json writes passes with its true depth; the same object
        /// with one of its keys written again is refused at that key's path.
        #[test]
        fn valid_objects_pass_and_a_repeated_key_is_found(
            m in prop::collection::btree_map("[a-z]{1,3}", json(), 1..6),
            pick in any::<prop::sample::Index>(),
        ) {
            let obj = serde_json::Value::Object(m.clone().into_iter().collect());
            let text = obj.to_string();
            prop_assert_eq!(scan(&text, "p", 64), Scan::Ok { depth: depth(&obj) });
            let key = pick.get(&m.keys().collect::<Vec<_>>()).to_string();
            let again = format!("{},{}:0}}", &text[..text.len() - 1], serde_json::Value::from(key.clone()));
            prop_assert_eq!(
                scan(&again, "p", 64),
                Scan::Problem {
                    path: format!("p.{key}"),
                    message: "is given more than once; give each key once".into()
                }
            );
        }
    }
}
