//! How deep a statement's expressions can nest, bounded from its tokens before anything
//! parses it, so no door's walk over the parsed statement (the parser, the read-only
//! check's visitor, the planner, dropping the tree) can run out of stack.
//!
//! The parser refuses nested parentheses and prefix operators by its own recursion limit,
//! but it reads a chain of infix operators (`1+1+1…`, `a OR b OR c…`) in a loop into a
//! tree as deep as the chain is long. So the bound counts, at each parenthesis level, the
//! operators since the last separator (a comma, or a keyword that starts a clause), and
//! adds the levels up: a tree can be no deeper than that. It overestimates (`a+b*c` counts
//! 2 where the tree is 2 deep, `a=1 AND b=2` counts 3 where it is 2), never
//! underestimates. DuckDB's `max_expression_depth` is 1000 by default; so is this.

use datafusion::sql::sqlparser::dialect::GenericDialect;
use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};

/// The deepest expression a query may nest.
pub const MAX_EXPRESSION_DEPTH: usize = 1000;

/// `Err` with the message when `sql`'s expressions may nest deeper than `max`. Text that
/// does not tokenize passes, for the parser to report.
pub fn check(sql: &str, max: usize) -> Result<(), String> {
    let Ok(tokens) = Tokenizer::new(&GenericDialect {}, sql).tokenize() else {
        return Ok(());
    };
    let depth = bound(&tokens);
    if depth > max {
        return Err(format!(
            "the statement nests expressions up to {depth} levels deep (operators chained \
             or parentheses), more than the limit of {max}; use IN (…) for a long list of \
             alternatives"
        ));
    }
    Ok(())
}

/// The bound on the expression depth of `tokens` (see the module's notes).
fn bound(tokens: &[Token]) -> usize {
    // Operators since the last separator, one entry per open parenthesis level.
    let mut levels: Vec<usize> = vec![0];
    let mut sum = 0usize;
    let mut max = 0usize;
    for token in tokens {
        match token {
            Token::LParen | Token::LBracket | Token::LBrace => {
                levels.push(0);
                sum += 1;
            }
            Token::RParen | Token::RBracket | Token::RBrace if levels.len() > 1 => {
                let ops = levels.pop().unwrap_or(0);
                sum = sum.saturating_sub(ops + 1);
            }
            t if is_separator(t) => {
                if let Some(ops) = levels.last_mut() {
                    sum -= *ops;
                    *ops = 0;
                }
            }
            t if is_operator(t) => {
                if let Some(ops) = levels.last_mut() {
                    *ops += 1;
                    sum += 1;
                }
            }
            _ => {}
        }
        max = max.max(sum);
    }
    max + 1
}

fn is_separator(t: &Token) -> bool {
    match t {
        Token::Comma | Token::SemiColon => true,
        Token::Word(w) => matches!(
            w.keyword,
            Keyword::SELECT
                | Keyword::FROM
                | Keyword::WHERE
                | Keyword::GROUP
                | Keyword::HAVING
                | Keyword::ORDER
                | Keyword::BY
                | Keyword::LIMIT
                | Keyword::OFFSET
                | Keyword::UNION
                | Keyword::INTERSECT
                | Keyword::EXCEPT
                | Keyword::JOIN
                | Keyword::ON
                | Keyword::USING
                | Keyword::CASE
                | Keyword::WHEN
                | Keyword::THEN
                | Keyword::ELSE
                | Keyword::END
                | Keyword::AS
                | Keyword::WITH
                | Keyword::QUALIFY
                | Keyword::WINDOW
        ),
        _ => false,
    }
}

/// A token that can join two expressions into a deeper one (or prefix one).
fn is_operator(t: &Token) -> bool {
    match t {
        Token::Word(w) => matches!(
            w.keyword,
            Keyword::AND
                | Keyword::OR
                | Keyword::NOT
                | Keyword::IS
                | Keyword::IN
                | Keyword::LIKE
                | Keyword::ILIKE
                | Keyword::SIMILAR
                | Keyword::BETWEEN
                | Keyword::COLLATE
                | Keyword::AT
                | Keyword::XOR
                | Keyword::DIV
        ),
        Token::Whitespace(_)
        | Token::Number(..)
        | Token::Char(_)
        | Token::Period
        | Token::Colon
        | Token::Placeholder(_)
        | Token::EOF => false,
        t => !is_literal(t),
    }
}

/// String literals of every quoting style.
fn is_literal(t: &Token) -> bool {
    matches!(
        t,
        Token::SingleQuotedString(_)
            | Token::DoubleQuotedString(_)
            | Token::TripleSingleQuotedString(_)
            | Token::TripleDoubleQuotedString(_)
            | Token::DollarQuotedString(_)
            | Token::SingleQuotedByteStringLiteral(_)
            | Token::DoubleQuotedByteStringLiteral(_)
            | Token::TripleSingleQuotedByteStringLiteral(_)
            | Token::TripleDoubleQuotedByteStringLiteral(_)
            | Token::SingleQuotedRawStringLiteral(_)
            | Token::DoubleQuotedRawStringLiteral(_)
            | Token::TripleSingleQuotedRawStringLiteral(_)
            | Token::TripleDoubleQuotedRawStringLiteral(_)
            | Token::NationalStringLiteral(_)
            | Token::EscapedStringLiteral(_)
            | Token::UnicodeStringLiteral(_)
            | Token::HexStringLiteral(_)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn depth(sql: &str) -> usize {
        bound(&Tokenizer::new(&GenericDialect {}, sql).tokenize().unwrap())
    }

    #[test]
    fn ordinary_queries_stay_shallow() {
        for (sql, most) in [
            ("SELECT 1", 1),
            ("SELECT a, b, c FROM events WHERE a = 1 AND b = 2", 4),
            (
                "SELECT count(*) FROM events GROUP BY user_id ORDER BY 1 DESC LIMIT 5",
                3,
            ),
            (
                "SELECT x FROM t WHERE y IN (1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13)",
                4,
            ),
            ("SELECT '+++---***' || 'a' FROM t", 2),
            (
                "SELECT CASE WHEN a > 1 THEN 'x' ELSE 'y' END, b + 1 FROM t",
                3,
            ),
        ] {
            let d = depth(sql);
            assert!(d <= most, "{sql}: {d} > {most}");
        }
    }

    #[test]
    fn chains_and_nesting_count_at_their_length() {
        let n = 5_000;
        assert!(depth(&format!("SELECT 1{}", "+1".repeat(n))) > n);
        assert!(depth(&format!("SELECT {}1{}", "(".repeat(n), ")".repeat(n))) > n);
        assert!(depth(&format!("SELECT {}true", "NOT ".repeat(n))) > n);
        assert!(
            depth(&format!(
                "SELECT * FROM t WHERE {}",
                vec!["a = 1"; n].join(" OR ")
            )) > n
        );
        // Separate items do not add up.
        let items = vec!["a + b + c"; n].join(", ");
        assert_eq!(depth(&format!("SELECT {items} FROM t")), 3);
        // Closing a level takes its operators away.
        assert_eq!(depth("SELECT (1+1+1) + (2+2)"), 4);
    }

    #[test]
    fn the_refusal_names_the_depth_and_the_limit() {
        let sql = format!("SELECT 1{}", "+1".repeat(2000));
        let e = check(&sql, MAX_EXPRESSION_DEPTH).unwrap_err();
        assert!(
            e.contains("2001 levels deep") && e.contains("limit of 1000"),
            "{e}"
        );
        assert_eq!(check("SELECT 1 + 2", MAX_EXPRESSION_DEPTH), Ok(()));
        // A million levels: one loop, no stack.
        let deep = format!("SELECT {}1{}", "(".repeat(1_000_000), ")".repeat(1_000_000));
        assert!(check(&deep, MAX_EXPRESSION_DEPTH).is_err());
    }
}
