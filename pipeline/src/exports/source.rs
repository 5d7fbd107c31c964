//! What an export reads: its source kinds, the SQL of one window of a source (event
//! filters as escaped `LIKE` patterns, window bounds as timestamp literals), and planning
//! that SQL read-only.

use datafusion::execution::context::SQLOptions;
use datafusion::prelude::{DataFrame, SessionContext};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::window::{Window, sql_timestamp};
use crate::Result;

/// What an export reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceKind {
    /// Events received in the window (optionally filtered).
    Events,
    /// Snapshots as of the run.
    Profiles,
    EventStats,
    SegmentMembers,
    /// Segment enter/exit changes made in the window.
    SegmentChanges,
    /// A read-only query; `{window_start}` / `{window_end}` become timestamp literals.
    Sql,
}

impl SourceKind {
    pub const NAMES: &'static str =
        "events, profiles, event_stats, segment_members, segment_changes, sql";

    pub fn parse(text: &str) -> Option<SourceKind> {
        serde_json::from_value(Value::String(text.to_string())).ok()
    }

    pub fn name(self) -> &'static str {
        match self {
            SourceKind::Events => "events",
            SourceKind::Profiles => "profiles",
            SourceKind::EventStats => "event_stats",
            SourceKind::SegmentMembers => "segment_members",
            SourceKind::SegmentChanges => "segment_changes",
            SourceKind::Sql => "sql",
        }
    }

    /// A snapshot source exports the table as it is when the window runs; missed
    /// windows collapse into the newest (an old snapshot cannot be reproduced).
    pub fn is_snapshot(self) -> bool {
        matches!(
            self,
            SourceKind::Profiles | SourceKind::EventStats | SourceKind::SegmentMembers
        )
    }
}

/// The `events` columns exports and batches carry.
pub const EVENT_COLUMNS: &str =
    "event_id, event_name, category, user_id, occurred_at, received_at, platform, properties";

/// `'text'` as a SQL string literal.
fn quote(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}

/// A `*` glob as a LIKE pattern with `\` escaping `%`, `_` and `\`.
fn like_pattern(glob: &str) -> String {
    let mut out = String::new();
    for c in glob.chars() {
        match c {
            '*' => out.push('%'),
            '%' | '_' | '\\' => {
                out.push('\\');
                out.push(c);
            }
            c => out.push(c),
        }
    }
    out
}

/// What an export reads: its kind and, by kind, its filters or query.
#[derive(Debug, Clone, Copy)]
pub struct Query<'a> {
    pub kind: SourceKind,
    /// Event-name globs, for `events`.
    pub events: &'a [String],
    /// Event categories, for `events`.
    pub categories: &'a [String],
    /// The query of a `sql` source.
    pub sql: Option<&'a str>,
}

/// The query of one window of `export` (over the environment's views).
pub fn source_sql(export: &Query<'_>, w: Window) -> String {
    let (start, end) = (sql_timestamp(w.start), sql_timestamp(w.end));
    match export.kind {
        SourceKind::Events => {
            let mut sql = format!(
                "SELECT {EVENT_COLUMNS} FROM events WHERE received_at >= {start} AND received_at < {end}"
            );
            if !export.categories.is_empty() {
                let list: Vec<String> = export.categories.iter().map(|c| quote(c)).collect();
                sql.push_str(&format!(" AND category IN ({})", list.join(", ")));
            }
            if !export.events.is_empty() {
                let likes: Vec<String> = export
                    .events
                    .iter()
                    .map(|g| format!("event_name LIKE {} ESCAPE '\\'", quote(&like_pattern(g))))
                    .collect();
                sql.push_str(&format!(" AND ({})", likes.join(" OR ")));
            }
            sql.push_str(" ORDER BY received_at, event_id");
            sql
        }
        SourceKind::Profiles => "SELECT * FROM profiles ORDER BY user_id".into(),
        SourceKind::EventStats => "SELECT * FROM event_stats ORDER BY user_id, event_name".into(),
        SourceKind::SegmentMembers => {
            "SELECT * FROM segment_members ORDER BY segment_id, user_id".into()
        }
        SourceKind::SegmentChanges => format!(
            "SELECT * FROM segment_changes WHERE at >= {start} AND at < {end} \
             ORDER BY at, segment_id, user_id, change"
        ),
        SourceKind::Sql => export
            .sql
            .unwrap_or_default()
            .replace("{window_start}", &start)
            .replace("{window_end}", &end),
    }
}

/// Plans `sql` read-only.
pub async fn plan(ctx: &SessionContext, sql: &str) -> Result<DataFrame> {
    let options = SQLOptions::new()
        .with_allow_ddl(false)
        .with_allow_dml(false)
        .with_allow_statements(false);
    Ok(ctx.sql_with_options(sql, options).await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_become_escaped_like_patterns() {
        assert_eq!(like_pattern("page_*"), "page\\_%");
        assert_eq!(like_pattern("100%*x\\"), "100\\%%x\\\\");
        assert_eq!(quote("it's"), "'it''s'");
    }
}
