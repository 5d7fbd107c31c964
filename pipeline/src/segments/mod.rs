//! Dynamic segments.
//!
//! - [`def`]: definitions parsed from JSON and validated against the field registry;
//! - [`compile`]: a definition as parameterized DataFusion SQL over `profiles` and
//!   `event_stats` (quoted identifiers, bound literals);
//! - [`model`]: what a parsed definition is (conditions, operands, time);
//! - [`membership`]: the pure enter / exit / stay decision of a run;
//! - [`job`]: runs every segment of an environment and commits changes, events, members;
//! - [`store`]: the config document `segments`;
//! - here: previews and member pages.

pub mod compile;
pub mod def;
pub mod job;
pub mod membership;
pub mod model;
pub mod store;

use datafusion::prelude::SessionContext;

use crate::Result;
use crate::query::to_json_rows;

/// Replaces `profiles` and `event_stats` in `ctx` by in-memory copies, so evaluating many
/// segments reads (and, for the Delta views, merges) them once instead of once per segment.
pub async fn materialize_inputs(ctx: &SessionContext) -> Result<()> {
    for name in ["profiles", "event_stats"] {
        if !ctx.table_exist(name)? {
            continue;
        }
        let (table, _) = crate::jobs::inputs::in_memory(ctx, ctx.table(name).await?).await?;
        ctx.deregister_table(name)?;
        ctx.register_table(name, table)?;
    }
    Ok(())
}

/// Members of a compiled segment: the count and up to `sample` user ids (sorted).
pub async fn preview(
    ctx: &SessionContext,
    compiled: &compile::Compiled,
    sample: usize,
) -> Result<(usize, Vec<String>)> {
    // one evaluation: every member's id, counted here, the first `sample` picked here
    let batches = ctx
        .sql(&compiled.sql)
        .await?
        .with_param_values(compiled.params.clone())?
        .select_columns(&["user_id"])?
        .collect()
        .await?;
    let mut ids: Vec<String> = Vec::new();
    for b in &batches {
        let c = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8)?;
        ids.extend(
            arrow::array::AsArray::as_string::<i32>(&c)
                .iter()
                .flatten()
                .map(str::to_string),
        );
    }
    let count = ids.len();
    if ids.len() > sample {
        ids.select_nth_unstable(sample);
        ids.truncate(sample);
    }
    ids.sort_unstable();
    Ok((count, ids))
}

/// One page of a segment's members.
#[derive(Debug, Clone, serde::Serialize)]
pub struct MembersPage {
    /// `{user_id, entered_at}`, ordered by user id.
    pub members: Vec<serde_json::Value>,
    pub next_cursor: Option<String>,
}

/// Members of `segment_id` after the last evaluation, ordered by user id, after `cursor`
/// (the last user id of the previous page).
pub async fn members(
    store: &crate::storage::Store,
    environment: &str,
    segment_id: &str,
    limit: usize,
    cursor: Option<&str>,
) -> Result<MembersPage> {
    use datafusion::prelude::{col, lit};
    let ctx = crate::query::session(store, Some(environment)).await?;
    if !ctx.table_exist(job::MEMBERS)? {
        return Ok(MembersPage {
            members: Vec::new(),
            next_cursor: None,
        });
    }
    let mut df = ctx
        .table(job::MEMBERS)
        .await?
        .filter(col("segment_id").eq(lit(segment_id)))?;
    if let Some(c) = cursor {
        df = df.filter(col("user_id").gt(lit(c)))?;
    }
    let batches = df
        .select_columns(&["user_id", "entered_at"])?
        .sort(vec![col("user_id").sort(true, false)])?
        .limit(0, Some(limit + 1))?
        .collect()
        .await?;
    let mut members = to_json_rows(&batches)?;
    let more = members.len() > limit;
    members.truncate(limit);
    let next_cursor = more
        .then(|| {
            members
                .last()
                .and_then(|m| m["user_id"].as_str().map(str::to_string))
        })
        .flatten();
    Ok(MembersPage {
        members,
        next_cursor,
    })
}

/// The segments `user_id` is a member of (after the last evaluation), by segment id:
/// `{segment_id, entered_at}`.
pub async fn of_user(ctx: &SessionContext, user_id: &str) -> Result<Vec<serde_json::Value>> {
    use datafusion::prelude::{col, lit};
    if !ctx.table_exist(job::MEMBERS)? {
        return Ok(Vec::new());
    }
    let batches = ctx
        .table(job::MEMBERS)
        .await?
        .filter(col("user_id").eq(lit(user_id)))?
        .select_columns(&["segment_id", "entered_at"])?
        .sort(vec![col("segment_id").sort(true, false)])?
        .collect()
        .await?;
    to_json_rows(&batches)
}

/// Member counts of every segment of the session's environment (after the last
/// evaluation); segments without members are absent.
pub async fn member_counts(
    ctx: &SessionContext,
) -> Result<std::collections::BTreeMap<String, u64>> {
    use datafusion::functions_aggregate::expr_fn::count;
    use datafusion::prelude::{col, lit};
    if !ctx.table_exist(job::MEMBERS)? {
        return Ok(Default::default());
    }
    let batches = ctx
        .table(job::MEMBERS)
        .await?
        .aggregate(vec![col("segment_id")], vec![count(lit(1)).alias("n")])?
        .collect()
        .await?;
    Ok(to_json_rows(&batches)?
        .into_iter()
        .filter_map(|r| Some((r["segment_id"].as_str()?.to_string(), r["n"].as_u64()?)))
        .collect())
}
