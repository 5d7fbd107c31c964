//! Event-name patterns: `*` matches any run of characters (including none); every other
//! character matches itself. (A glob crate would also give `?` and `[..]` a meaning,
//! and both are legal in event names.)

/// Whether `name` matches `pattern`.
pub fn glob_match(pattern: &str, name: &str) -> bool {
    let mut parts = pattern.split('*');
    let Some(first) = parts.next() else {
        return name.is_empty();
    };
    let Some(mut rest) = name.strip_prefix(first) else {
        return false;
    };
    let mut parts: Vec<&str> = parts.collect();
    let Some(last) = parts.pop() else {
        // No `*` at all: an exact match.
        return rest.is_empty();
    };
    for part in parts {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    rest.len() >= last.len() && rest.ends_with(last)
}

#[cfg(test)]
mod tests {
    use super::glob_match;

    #[test]
    fn globs() {
        for (p, n, want) in [
            ("signup", "signup", true),
            ("signup", "signups", false),
            ("*", "", true),
            ("*", "anything", true),
            ("segment-*", "segment-entered", true),
            ("segment-*", "segment", false),
            ("*-completed", "order-completed", true),
            ("a*b*c", "aXXbYYc", true),
            ("a*b*c", "aXXcYYb", false),
            ("a*a", "a", false),
            ("a*a", "aa", true),
            ("what?", "whatX", false),
            ("what?", "what?", true),
        ] {
            assert_eq!(glob_match(p, n), want, "{p} vs {n}");
        }
    }
}
