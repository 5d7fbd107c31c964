//! Which statements a data team's query may be: a pure check of the parsed statement,
//! the same for every door (`tidemark sql`, `POST /v1/{env}/query`, Postgres, Flight SQL).
//!
//! Allowed: `SELECT`, `WITH`, `VALUES`, `EXPLAIN` (of an allowed statement),
//! `SHOW` and `DESCRIBE`. Refused, each with a message that names it: anything that
//! writes, creates, drops or copies (`INSERT`, `CREATE EXTERNAL TABLE`, `COPY`, …), `SET`
//! (a session's settings are the server's), and table functions other than
//! [`TABLE_FUNCTIONS`] (no way to read a file or URL). Tables themselves are only the
//! environment's views (see [`super::session`]): an unknown name fails at planning.

use std::ops::ControlFlow;

use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::{Statement, TableFactor, visit_relations};
use datafusion::sql::sqlparser::ast::{Visit, Visitor};

/// Table functions a query may call: they generate rows and read nothing.
pub const TABLE_FUNCTIONS: [&str; 2] = ["generate_series", "range"];

/// Why a statement is refused: the message a door shows as is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused(pub String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

const ALLOWED: &str = "only SELECT, WITH, VALUES, EXPLAIN, SHOW and DESCRIBE are allowed";

/// Checks one parsed statement.
pub fn check(statement: &DfStatement) -> Result<(), Refused> {
    match statement {
        DfStatement::Statement(s) => check_sql(s),
        DfStatement::Explain(e) => check(&e.statement),
        DfStatement::CreateExternalTable(_) => Err(refused("CREATE EXTERNAL TABLE")),
        DfStatement::CopyTo(_) => Err(refused("COPY")),
        DfStatement::Reset(_) => Err(refused("RESET")),
    }
}

fn check_sql(statement: &Statement) -> Result<(), Refused> {
    match statement {
        Statement::Query(_) => table_functions(statement),
        Statement::Explain { statement, .. } => check_sql(statement),
        Statement::ExplainTable { .. }
        | Statement::ShowTables { .. }
        | Statement::ShowColumns { .. }
        | Statement::ShowVariable { .. }
        | Statement::ShowFunctions { .. } => Ok(()),
        other => Err(refused(&leading_keywords(other))),
    }
}

/// Every table factor with arguments must be an allowed table function.
fn table_functions(statement: &Statement) -> Result<(), Refused> {
    struct Functions(Option<String>);
    impl Visitor for Functions {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
            let name = match factor {
                TableFactor::Table {
                    name,
                    args: Some(_),
                    ..
                } => Some(name.to_string()),
                TableFactor::Function { name, .. } => Some(name.to_string()),
                _ => None,
            };
            match name {
                Some(n) if !TABLE_FUNCTIONS.contains(&n.to_lowercase().as_str()) => {
                    self.0 = Some(n);
                    ControlFlow::Break(())
                }
                _ => ControlFlow::Continue(()),
            }
        }
    }
    let mut found = Functions(None);
    let _ = statement.visit(&mut found);
    // A path or URL in place of a table name (`FROM '/etc/passwd'`).
    let mut path = None;
    let _ = visit_relations(statement, |name| {
        let text = name.to_string();
        if text.contains('/') || text.contains("://") {
            path = Some(text);
            return ControlFlow::Break(());
        }
        ControlFlow::<()>::Continue(())
    });
    if let Some(name) = found.0 {
        return Err(Refused(format!(
            "table function '{name}' is not available: queries read only this environment's \
             tables (allowed table functions: {})",
            TABLE_FUNCTIONS.join(", ")
        )));
    }
    if let Some(name) = path {
        return Err(Refused(format!(
            "{name} is not a table: queries read only this environment's tables, never files \
             or URLs"
        )));
    }
    Ok(())
}

fn refused(what: &str) -> Refused {
    Refused(format!(
        "{what} is not allowed: queries are read-only ({ALLOWED})"
    ))
}

/// `INSERT`, `CREATE TABLE`, `CREATE OR REPLACE VIEW`, …: the statement's leading
/// keywords, up to the kind of object for `CREATE`, `DROP` and `ALTER`.
fn leading_keywords(statement: &Statement) -> String {
    const OBJECT_VERBS: [&str; 3] = ["CREATE", "DROP", "ALTER"];
    const MODIFIERS: [&str; 6] = ["OR", "REPLACE", "TEMPORARY", "TEMP", "EXTERNAL", "UNIQUE"];
    let text = statement.to_string().to_uppercase();
    let mut words = text.split_whitespace();
    let first = words.next().unwrap_or("STATEMENT").to_string();
    if !OBJECT_VERBS.contains(&first.as_str()) {
        return first;
    }
    let mut out = vec![first];
    for word in words {
        out.push(word.to_string());
        if !MODIFIERS.contains(&word) {
            break;
        }
    }
    out.join(" ")
}

#[cfg(test)]
mod tests {
    use datafusion::sql::parser::DFParser;

    use super::*;

    fn verdict(sql: &str) -> Result<(), String> {
        let mut statements = DFParser::parse_sql(sql).expect("parses");
        assert_eq!(statements.len(), 1, "{sql}");
        check(&statements.pop_front().unwrap()).map_err(|r| r.0)
    }

    /// Every statement class a door can be sent, and what it answers.
    #[test]
    fn allowed_statements() {
        for sql in [
            "SELECT 1",
            "select * from events where user_id = 'a'",
            "WITH x AS (SELECT 1 AS a) SELECT a FROM x",
            "VALUES (1), (2)",
            "SELECT * FROM events UNION ALL SELECT * FROM events",
            "SELECT * FROM (SELECT user_id FROM profiles) p JOIN event_stats s USING (user_id)",
            "EXPLAIN SELECT 1",
            "EXPLAIN ANALYZE SELECT count(*) FROM events",
            "SHOW TABLES",
            "SHOW COLUMNS FROM events",
            "DESCRIBE events",
            "SELECT * FROM generate_series(1, 3)",
            "SELECT * FROM range(3)",
            "SELECT * FROM information_schema.tables",
        ] {
            assert_eq!(verdict(sql), Ok(()), "{sql}");
        }
    }

    #[test]
    fn refused_statements_are_named() {
        for (sql, named) in [
            ("INSERT INTO events VALUES (1)", "INSERT is not allowed"),
            ("UPDATE events SET user_id = 'x'", "UPDATE is not allowed"),
            ("DELETE FROM events", "DELETE is not allowed"),
            ("CREATE TABLE t AS SELECT 1", "CREATE TABLE is not allowed"),
            ("CREATE VIEW v AS SELECT 1", "CREATE VIEW is not allowed"),
            (
                "CREATE OR REPLACE VIEW v AS SELECT 1",
                "CREATE OR REPLACE VIEW is not allowed",
            ),
            (
                "CREATE EXTERNAL TABLE t STORED AS PARQUET LOCATION '/etc'",
                "CREATE EXTERNAL TABLE is not allowed",
            ),
            ("DROP TABLE events", "DROP TABLE is not allowed"),
            ("COPY events TO '/tmp/x.parquet'", "COPY is not allowed"),
            (
                "SET datafusion.execution.batch_size = 1",
                "SET is not allowed",
            ),
            (
                "EXPLAIN INSERT INTO events VALUES (1)",
                "INSERT is not allowed",
            ),
            (
                "EXPLAIN ANALYZE COPY events TO '/tmp/x'",
                "COPY is not allowed",
            ),
        ] {
            let err = verdict(sql).unwrap_err();
            assert!(err.starts_with(named), "{sql}: {err}");
            assert!(err.contains("read-only"), "{sql}: {err}");
        }
    }

    #[test]
    fn file_reading_table_functions_and_paths_are_refused() {
        for (sql, named) in [
            (
                "SELECT * FROM read_parquet('/etc/passwd')",
                "table function 'read_parquet'",
            ),
            (
                "SELECT * FROM events e JOIN read_csv('x.csv') c ON true",
                "table function 'read_csv'",
            ),
            (
                "WITH a AS (SELECT * FROM parquet_metadata('x')) SELECT * FROM a",
                "table function 'parquet_metadata'",
            ),
            (
                "SELECT * FROM (SELECT * FROM read_json('x')) q",
                "table function 'read_json'",
            ),
            (
                "SELECT * FROM '/etc/passwd'",
                "'/etc/passwd' is not a table",
            ),
            (
                "SELECT * FROM \"s3://bucket/events\"",
                "\"s3://bucket/events\" is not a table",
            ),
        ] {
            let err = verdict(sql).unwrap_err();
            assert!(err.starts_with(named), "{sql}: {err}");
        }
    }
}
