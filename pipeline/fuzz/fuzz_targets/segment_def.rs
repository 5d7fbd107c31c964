//! The segment definition parser and compiler (`segments::def::parse`, then
//! `segments::compile::compile`) on any JSON document, against a registry of one field per
//! type:
//! - a refused definition lists its problems, each with a message;
//! - every accepted definition compiles to one SQL query that DataFusion's parser reads,
//!   both with `$n` placeholders (as the segment job runs it) and with the values written
//!   in as literals (`Compiled::inline`, as sqllogictest files and DuckDB get it);
//! - the placeholders are exactly `$1..$n` for the n values bound.
#![no_main]

use std::collections::{BTreeMap, BTreeSet};

use datafusion::sql::parser::{DFParser, Statement};
use datafusion::sql::sqlparser::ast;
use libfuzzer_sys::fuzz_target;
use tidemark::segments::compile::compile;
use tidemark::segments::def::parse;
use tidemark::users::fields::{self, FieldDef, FieldType};

fn registry() -> BTreeMap<String, FieldDef> {
    fields::declared(&[
        ("plan", FieldType::Text),
        ("score", FieldType::Number),
        ("vip", FieldType::Boolean),
        ("signup", FieldType::Datetime),
        ("colors", FieldType::List),
    ])
}

/// The one query `sql` parses to, or why not.
fn one_query(sql: &str) -> Result<(), String> {
    let mut statements = DFParser::parse_sql(sql).map_err(|e| e.to_string())?;
    match (statements.pop_front(), statements.len()) {
        (Some(Statement::Statement(s)), 0) if matches!(*s, ast::Statement::Query(_)) => Ok(()),
        (s, rest) => Err(format!("not one query: {s:?} and {rest} more")),
    }
}

/// The `$n` indexes in `sql` (only compile's own text holds `$`; values are bound).
fn placeholders(sql: &str) -> BTreeSet<usize> {
    let b = sql.as_bytes();
    let mut out = BTreeSet::new();
    for (i, _) in sql.match_indices('$') {
        let digits: String = b[i + 1..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .map(|c| *c as char)
            .collect();
        out.insert(digits.parse().expect("a $ followed by its index"));
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Ok(doc) = serde_json::from_slice::<serde_json::Value>(data) else {
        return;
    };
    let fields = registry();
    match parse(&doc, &fields) {
        Err(problems) => {
            assert!(!problems.is_empty(), "refused without a problem");
            for p in &problems {
                assert!(!p.message.is_empty(), "a problem without a message: {p:?}");
            }
        }
        Ok((_, segment)) => {
            let compiled = compile(&segment, "default", 1_700_000_000_000_000);
            if let Err(e) = one_query(&compiled.sql) {
                panic!("{e}\n{}", compiled.sql);
            }
            let inline = compiled.inline();
            if let Err(e) = one_query(&inline) {
                panic!("{e}\n{inline}");
            }
            let expected: BTreeSet<usize> = (1..=compiled.params.len()).collect();
            assert_eq!(placeholders(&compiled.sql), expected, "{}", compiled.sql);
        }
    }
});
