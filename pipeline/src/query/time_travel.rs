//! Time travel: `FROM events VERSION AS OF 42` and `FROM events TIMESTAMP AS OF
//! '2026-11-25T00:00:00Z'` (Delta's and Databricks' spelling), through every door.
//!
//! The dialects the doors parse with (DataFusion's generic one, Postgres') do not accept
//! the clause, so [`rewrite`] takes it out of the text before parsing: each
//! `name VERSION AS OF n` becomes one quoted table name (`"events@v42"`) and an [`AsOf`]
//! the session registers under that name (the Delta table at that version, filtered to
//! the environment like every other table). Pure, so its cases are listed below.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer, Word};

/// Which snapshot of a table a query names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum At {
    Version(u64),
    /// As written; the session parses it (RFC 3339, or a date and time).
    Timestamp(String),
}

/// One versioned table reference: register `table` at `at` as `name`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AsOf {
    pub name: String,
    pub table: String,
    pub at: At,
}

/// The query with each versioned reference replaced by its registered name, and the
/// references (each distinct table and snapshot once). Text that does not tokenize is
/// returned unchanged, for the parser to report.
pub fn rewrite(sql: &str) -> Result<(String, Vec<AsOf>), String> {
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        return Ok((sql.to_string(), Vec::new()));
    };
    let mut out: Vec<Token> = Vec::with_capacity(tokens.len());
    let mut refs: Vec<AsOf> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let Some((kind, next)) = clause_at(&tokens, i) else {
            out.push(tokens[i].clone());
            i += 1;
            continue;
        };
        // The table name is the last words of `out`: `events`, `public.events`.
        let Some((table, start)) = table_before(&out) else {
            out.push(tokens[i].clone());
            i += 1;
            continue;
        };
        let literal = &tokens[next];
        let at = match (kind, literal) {
            (Keyword::VERSION, Token::Number(n, _)) => At::Version(n.parse().map_err(|_| {
                format!("VERSION AS OF {n}: a version is a whole number of at least 0")
            })?),
            (Keyword::VERSION, other) => {
                return Err(format!(
                    "VERSION AS OF {other}: a version is a whole number (`VERSION AS OF 42`)"
                ));
            }
            (_, Token::SingleQuotedString(s)) => At::Timestamp(s.clone()),
            (_, other) => {
                return Err(format!(
                    "TIMESTAMP AS OF {other}: the time is a quoted timestamp \
                     (`TIMESTAMP AS OF '2026-11-25T00:00:00Z'`)"
                ));
            }
        };
        let name = match &at {
            At::Version(v) => format!("{table}@v{v}"),
            At::Timestamp(_) => {
                let n = refs
                    .iter()
                    .filter(|r| matches!(r.at, At::Timestamp(_)))
                    .count();
                format!("{table}@t{n}")
            }
        };
        let name = match refs.iter().find(|r| r.table == table && r.at == at) {
            Some(existing) => existing.name.clone(),
            None => {
                refs.push(AsOf {
                    name: name.clone(),
                    table: table.clone(),
                    at,
                });
                name
            }
        };
        out.truncate(start);
        out.push(Token::Word(Word {
            value: name,
            quote_style: Some('"'),
            keyword: Keyword::NoKeyword,
        }));
        i = next + 1;
    }
    Ok((out.iter().map(ToString::to_string).collect(), refs))
}

/// At `tokens[i]`: `VERSION AS OF <literal>` or `TIMESTAMP AS OF <literal>`; the kind and
/// the index of the literal.
fn clause_at(tokens: &[Token], i: usize) -> Option<(Keyword, usize)> {
    let kind = match &tokens[i] {
        Token::Word(w) if w.quote_style.is_none() => w.keyword,
        _ => return None,
    };
    if kind != Keyword::VERSION && kind != Keyword::TIMESTAMP {
        return None;
    }
    let mut j = i + 1;
    for expected in [Keyword::AS, Keyword::OF] {
        j = skip_space(tokens, j)?;
        match &tokens[j] {
            Token::Word(w) if w.quote_style.is_none() && w.keyword == expected => j += 1,
            _ => return None,
        }
    }
    Some((kind, skip_space(tokens, j)?))
}

fn skip_space(tokens: &[Token], mut j: usize) -> Option<usize> {
    while matches!(tokens.get(j), Some(Token::Whitespace(_))) {
        j += 1;
    }
    (j < tokens.len()).then_some(j)
}

/// The table name ending `out` (before any whitespace): its last part, and where the
/// whole (possibly qualified) name starts. `None` when the word before is a keyword
/// (`SELECT timestamp AS of`), not a table name.
fn table_before(out: &[Token]) -> Option<(String, usize)> {
    let mut end = out.len();
    while end > 0 && matches!(out[end - 1], Token::Whitespace(_)) {
        end -= 1;
    }
    let word = |t: &Token| match t {
        Token::Word(w) if w.quote_style.is_some() || w.keyword == Keyword::NoKeyword => {
            Some(w.value.clone())
        }
        _ => None,
    };
    let table = word(out.get(end.checked_sub(1)?)?)?;
    let mut start = end - 1;
    // Qualifiers may be keywords (`public`).
    while start >= 2 && out[start - 1] == Token::Period && matches!(out[start - 2], Token::Word(_))
    {
        start -= 2;
    }
    Some((table, start))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(table: &str, v: u64) -> AsOf {
        AsOf {
            name: format!("{table}@v{v}"),
            table: table.into(),
            at: At::Version(v),
        }
    }

    #[test]
    fn versions_and_timestamps_become_registered_names() {
        for (sql, want_sql, want_refs) in [
            ("SELECT 1", "SELECT 1", vec![]),
            (
                "SELECT count(*) FROM events VERSION AS OF 42",
                "SELECT count(*) FROM \"events@v42\"",
                vec![version("events", 42)],
            ),
            (
                "select * from public.events version as of 3 e where e.user_id = 'a'",
                "select * from \"events@v3\" e where e.user_id = 'a'",
                vec![version("events", 3)],
            ),
            (
                "SELECT * FROM \"profiles\" VERSION AS OF 0",
                "SELECT * FROM \"profiles@v0\"",
                vec![version("profiles", 0)],
            ),
            (
                "SELECT * FROM events VERSION AS OF 2 UNION ALL SELECT * FROM events VERSION AS OF 2",
                "SELECT * FROM \"events@v2\" UNION ALL SELECT * FROM \"events@v2\"",
                vec![version("events", 2)],
            ),
            (
                "SELECT * FROM events TIMESTAMP AS OF '2026-11-25T00:00:00Z' JOIN \
                 profiles VERSION AS OF 7 USING (user_id)",
                "SELECT * FROM \"events@t0\" JOIN \"profiles@v7\" USING (user_id)",
                vec![
                    AsOf {
                        name: "events@t0".into(),
                        table: "events".into(),
                        at: At::Timestamp("2026-11-25T00:00:00Z".into()),
                    },
                    version("profiles", 7),
                ],
            ),
            // Not a table reference: left alone.
            (
                "SELECT CAST(x AS TIMESTAMP) AS t FROM events",
                "SELECT CAST(x AS TIMESTAMP) AS t FROM events",
                vec![],
            ),
            (
                "SELECT 'VERSION AS OF 3' FROM events",
                "SELECT 'VERSION AS OF 3' FROM events",
                vec![],
            ),
        ] {
            let (got_sql, got_refs) = rewrite(sql).unwrap();
            assert_eq!(got_sql, want_sql, "{sql}");
            assert_eq!(got_refs, want_refs, "{sql}");
        }
    }

    #[test]
    fn malformed_clauses_say_what_is_expected() {
        for (sql, says) in [
            ("SELECT * FROM events VERSION AS OF 1.5", "whole number"),
            ("SELECT * FROM events VERSION AS OF 'x'", "whole number"),
            ("SELECT * FROM events TIMESTAMP AS OF 5", "quoted timestamp"),
        ] {
            let err = rewrite(sql).unwrap_err();
            assert!(err.contains(says), "{sql}: {err}");
        }
    }
}
