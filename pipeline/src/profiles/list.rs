//! The filtered, paged list of profiles (`GET /v1/{env}/users`), ordered by user id.
//!
//! Merging every profile to cut one page off the top costs seconds over a million users,
//! so a page is found in windows of user ids:
//!
//! 1. **Candidates**: from each id source of the query (below), the first `want` rows after
//!    the cursor in id order (a top-k over the user id column, rows not merged). The
//!    window ends at the smallest "last id" of a source that filled its `want`
//!    ([`window`]): below that bound every source's ids are known, so the candidates are
//!    exactly the ids in the window.
//! 2. **Profiles**: the views narrowed to the candidates ([`Narrowing`]) merge only their
//!    rows; the query's filters keep the matching profiles.
//! 3. Not yet `limit + 1` matches and not the end: the next window starts after this one,
//!    twice as wide.
//!
//! The first window holds `limit + 1` ids per source, or [`WIDER`] times that when the
//! query has conditions its sources do not imply ([`first_want`]): a window costs about
//! the same at 51 or 204 ids, so a page of a field's value takes one window, not three.
//!
//! The id sources are the narrowest superset of the matches the query allows: the
//! segment's members; the users with an attribute row of the first tag or field; the
//! users seen (some activity row) in the time range; else every user with activity or
//! attributes.

use datafusion::common::ScalarValue;
use datafusion::dataframe::DataFrame;
use datafusion::execution::FunctionRegistry;
use datafusion::prelude::{Expr, SessionContext, col, lit};
use serde_json::Value;

use super::read::shape;
use crate::jobs::Job;
use crate::query::to_json_rows;
use crate::storage::Store;
use crate::users::fields::{FieldDef, FieldType, Registry};
use crate::{Error, Result, query};

/// Most profiles in one page of the list.
pub const MAX_LIMIT: usize = 1000;

/// The widest window of candidate ids (rows per source) one step reads.
const MAX_WANT: usize = 1 << 16;

/// How much wider the first window is when the sources do not imply every condition.
const WIDER: usize = 4;

/// Filters and paging of `GET /v1/{env}/users`.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Every tag must be present.
    pub tags: Vec<String>,
    /// `field.NAME=VALUE`: the field equals the value (a list field contains it).
    pub fields: Vec<(String, String)>,
    /// The user id starts with this.
    pub prefix: Option<String>,
    /// A member of this segment (after its last evaluation).
    pub segment: Option<String>,
    /// Seen (last_seen_at) after this time.
    pub seen_after: Option<chrono::DateTime<chrono::Utc>>,
    /// Seen (last_seen_at) before this time.
    pub seen_before: Option<chrono::DateTime<chrono::Utc>>,
    pub limit: usize,
    /// From [`ListPage::next_cursor`].
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct ListPage {
    pub users: Vec<Value>,
    /// Pass as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

fn encode_cursor(user_id: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(user_id.as_bytes())
}

fn decode_cursor(cursor: &str) -> Option<String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    String::from_utf8(bytes).ok()
}

/// One window of candidate ids.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// The distinct ids in the window, in order.
    pub ids: Vec<String>,
    /// The window's last id; `None`: it reaches the end of every source.
    pub through: Option<String>,
}

/// The window that `firsts` (per source, its first `want` ids after the cursor, in order,
/// duplicates allowed) determine exactly.
///
/// Cases:
/// - every source returned fewer than `want` ids: each is exhausted, the window is all
///   their ids and reaches the end;
/// - some returned `want`: a source's ids past its last returned one are unknown, so the
///   window ends at the smallest last id of the full sources, and holds every source's
///   ids up to it (a source that is not full is known whole, a full one up to its last).
pub fn window(firsts: &[Vec<String>], want: usize) -> Window {
    let through = firsts
        .iter()
        .filter(|ids| ids.len() >= want)
        .filter_map(|ids| ids.last())
        .min()
        .cloned();
    let mut ids: Vec<String> = firsts
        .iter()
        .flatten()
        .filter(|id| through.as_ref().is_none_or(|t| *id <= t))
        .cloned()
        .collect();
    ids.sort();
    ids.dedup();
    Window { ids, through }
}

/// One page of the profiles of `environment` matching `q`, ordered by user id (a stable
/// order: the cursor is the last id of the page).
pub async fn list(store: &Store, environment: &str, q: &ListQuery) -> Result<ListPage> {
    let defs = Registry::new(store.clone()).list(environment).await?;
    let (ctx, narrowing) = query::profiles_session(store, environment).await?;
    let members = crate::segments::job::MEMBERS;
    if q.segment.is_some() && !ctx.table_exist(members)? {
        return Ok(ListPage {
            users: Vec::new(),
            next_cursor: None,
        });
    }
    let mut after = match &q.cursor {
        Some(c) => Some(
            decode_cursor(c)
                .ok_or_else(|| Error::Invalid("cursor: not a cursor this API returned".into()))?,
        ),
        None => None,
    };
    let filters = filters(&ctx, q, &defs).await?;
    let sources = sources(&ctx, q).await?;
    let limit = q.limit.clamp(1, MAX_LIMIT);
    let mut want = first_want(q, limit);
    let mut users = Vec::new();
    loop {
        let mut firsts = Vec::with_capacity(sources.len());
        for source in &sources {
            firsts.push(first_ids(source.clone(), q, after.as_deref(), want).await?);
        }
        let w = window(&firsts, want);
        if !w.ids.is_empty() {
            // the range lets the scans skip pages of their sorted files; the list is exact
            let (first, last) = (&w.ids[0], &w.ids[w.ids.len() - 1]);
            let ids: Vec<Expr> = w.ids.iter().map(|id| lit(id.as_str())).collect();
            let window = col("user_id")
                .gt_eq(lit(first.as_str()))
                .and(col("user_id").lt_eq(lit(last.as_str())))
                .and(col("user_id").in_list(ids, false));
            narrowing.apply(&ctx, window).await?;
            let mut df = ctx.table("profiles").await?;
            for f in &filters {
                df = df.filter(f.clone())?;
            }
            let batches = df
                .sort(vec![col("user_id").sort(true, false)])?
                .limit(0, Some(limit + 1 - users.len()))?
                .collect()
                .await?;
            users.extend(to_json_rows(&batches)?);
        }
        match w.through {
            Some(t) if users.len() <= limit => {
                after = Some(t);
                want = (want * 2).min(MAX_WANT);
            }
            _ => break,
        }
    }
    let more = users.len() > limit;
    users.truncate(limit);
    for u in &mut users {
        if let Value::Object(m) = u {
            shape(m, &defs);
        }
    }
    let next_cursor = more
        .then(|| {
            users
                .last()
                .and_then(|u| u["user_id"].as_str())
                .map(encode_cursor)
        })
        .flatten();
    Ok(ListPage { users, next_cursor })
}

/// How many ids per source the first window reads: `limit + 1`, or [`WIDER`] times that
/// when some condition of `q` is not implied by its id sources ([`sources`]): a field's
/// value, a tag beyond the first, a time range or tag beside a segment or a tag.
fn first_want(q: &ListQuery, limit: usize) -> usize {
    let seen = usize::from(q.seen_after.is_some() || q.seen_before.is_some());
    let beyond_sources = if q.segment.is_some() {
        q.tags.len() + q.fields.len() + seen
    } else if !q.tags.is_empty() {
        q.tags.len() - 1 + q.fields.len() + seen
    } else {
        // a field source has the users with the field, not with its value
        q.fields.len() + if q.fields.is_empty() { 0 } else { seen }
    };
    let one = limit + 1;
    if beyond_sources > 0 {
        (one * WIDER).min(MAX_WANT)
    } else {
        one
    }
}

/// The query's conditions on a `profiles` row (the cursor and window are applied to the
/// candidates).
async fn filters(
    ctx: &SessionContext,
    q: &ListQuery,
    defs: &std::collections::BTreeMap<String, FieldDef>,
) -> Result<Vec<Expr>> {
    use datafusion::functions_nested::expr_fn::array_has;
    let mut out = Vec::new();
    for tag in &q.tags {
        out.push(array_has(col("tags"), lit(tag.as_str())));
    }
    for (name, value) in &q.fields {
        let def = defs
            .get(name)
            .ok_or_else(|| Error::Invalid(format!("field.{name}: unknown field '{name}'")))?;
        let get = ctx
            .udf("json_get")?
            .call(vec![col("fields"), lit(name.as_str())]);
        out.push(if def.field_type == FieldType::List {
            ctx.udf("json_list_contains")?
                .call(vec![get, lit(value.as_str())])
        } else if def.field_type == FieldType::Number {
            // numerically: 3 and 3.0 are the same number
            let n: f64 = value
                .trim()
                .parse()
                .map_err(|_| Error::Invalid(format!("field.{name}: '{value}' is not a number")))?;
            datafusion::prelude::cast(get, arrow::datatypes::DataType::Float64).eq(lit(n))
        } else {
            let canonical = def
                .field_type
                .parse_text(value)
                .map_err(|e| Error::Invalid(format!("field.{name}: {e}")))?;
            get.eq(lit(canonical))
        });
    }
    out.extend(seen(q));
    if let Some(segment) = &q.segment {
        let ids = ctx
            .table(crate::segments::job::MEMBERS)
            .await?
            .filter(col("segment_id").eq(lit(segment.as_str())))?
            .select_columns(&["user_id"])?
            .into_unoptimized_plan();
        out.push(datafusion::prelude::in_subquery(
            col("user_id"),
            std::sync::Arc::new(ids),
        ));
    }
    Ok(out)
}

/// The `seen_after` / `seen_before` conditions on `last_seen_at` (of a profile, or of
/// an activity part: a profile's last seen is the latest of its parts').
fn seen(q: &ListQuery) -> Vec<Expr> {
    let at = |t: chrono::DateTime<chrono::Utc>| {
        lit(ScalarValue::TimestampMicrosecond(
            Some(t.timestamp_micros()),
            Some("UTC".into()),
        ))
    };
    let mut out = Vec::new();
    if let Some(t) = q.seen_after {
        out.push(col("last_seen_at").gt(at(t)));
    }
    if let Some(t) = q.seen_before {
        out.push(col("last_seen_at").lt(at(t)));
    }
    out
}

/// The id sources of `q` (see the module doc): rows with a `user_id` column whose ids
/// include every profile the query can match.
async fn sources(ctx: &SessionContext, q: &ListQuery) -> Result<Vec<DataFrame>> {
    let attributes = || ctx.table(Job::Attributes.parts());
    if let Some(segment) = &q.segment {
        let members = ctx
            .table(crate::segments::job::MEMBERS)
            .await?
            .filter(col("segment_id").eq(lit(segment.as_str())))?;
        return Ok(vec![members]);
    }
    if let Some(tag) = q.tags.first() {
        let tagged = attributes().await?.filter(
            col("kind")
                .eq(lit("tag"))
                .and(col("name").eq(lit(tag.as_str()))),
        )?;
        return Ok(vec![tagged]);
    }
    if let Some((name, _)) = q.fields.first() {
        let with_field = attributes().await?.filter(
            col("kind")
                .eq(lit("field"))
                .and(col("name").eq(lit(name.as_str()))),
        )?;
        return Ok(vec![with_field]);
    }
    let seen = seen(q);
    let mut all = Vec::new();
    for job in [Job::Profiles, Job::Attributes] {
        let mut df = ctx.table(job.parts()).await?;
        if !seen.is_empty() {
            if job != Job::Profiles {
                continue;
            }
            for s in &seen {
                df = df.filter(s.clone())?;
            }
        }
        all.push(df);
    }
    Ok(all)
}

/// The first `want` user ids of `source` after `after` that start with `q.prefix`, in
/// order (duplicates kept).
async fn first_ids(
    source: DataFrame,
    q: &ListQuery,
    after: Option<&str>,
    want: usize,
) -> Result<Vec<String>> {
    let mut df = source;
    if let Some(a) = after {
        df = df.filter(col("user_id").gt(lit(a)))?;
    }
    if let Some(p) = &q.prefix {
        // the lower bound lets the scans skip row groups; starts_with is the condition
        df = df.filter(col("user_id").gt_eq(lit(p.as_str())).and(
            datafusion::functions::expr_fn::starts_with(col("user_id"), lit(p.as_str())),
        ))?;
    }
    let batches = df
        .select_columns(&["user_id"])?
        .sort(vec![col("user_id").sort(true, false)])?
        .limit(0, Some(want))?
        .collect()
        .await?;
    let mut ids = Vec::with_capacity(want);
    for b in &batches {
        let c = arrow::compute::cast(b.column(0), &arrow::datatypes::DataType::Utf8)?;
        let c = arrow::array::AsArray::as_string::<i32>(&c);
        ids.extend(c.iter().flatten().map(str::to_string));
    }
    Ok(ids)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn sources_short_of_want_are_exhausted_and_the_window_reaches_the_end() {
        let w = window(&[ids(&["a", "c"]), ids(&["b", "c"])], 3);
        assert_eq!(w.ids, ids(&["a", "b", "c"]));
        assert_eq!(w.through, None);
    }

    #[test]
    fn a_full_source_ends_the_window_at_its_last_id() {
        // the first source may hold more ids after "c"; the second is known whole
        let w = window(&[ids(&["a", "b", "c"]), ids(&["b", "d"])], 3);
        assert_eq!(w.ids, ids(&["a", "b", "c"]));
        assert_eq!(w.through.as_deref(), Some("c"));
    }

    #[test]
    fn the_smallest_last_id_of_the_full_sources_wins() {
        let w = window(&[ids(&["a", "e", "f"]), ids(&["b", "c", "d"])], 3);
        assert_eq!(w.ids, ids(&["a", "b", "c", "d"]));
        assert_eq!(w.through.as_deref(), Some("d"));
    }

    #[test]
    fn duplicate_rows_of_one_user_fill_a_source_without_adding_ids() {
        // attribute rows: one per tag or field of a user
        let w = window(&[ids(&["a", "a", "a"])], 3);
        assert_eq!(w.ids, ids(&["a"]));
        assert_eq!(w.through.as_deref(), Some("a"));
    }

    #[test]
    fn the_first_window_is_wider_only_for_conditions_the_sources_do_not_imply() {
        let q = |f: fn(&mut ListQuery)| {
            let mut q = ListQuery::default();
            f(&mut q);
            first_want(&q, 50)
        };
        // implied: every user, a prefix, a time range alone, one tag, a segment alone
        assert_eq!(q(|_| {}), 51);
        assert_eq!(q(|q| q.prefix = Some("u0".into())), 51);
        assert_eq!(q(|q| q.seen_after = Some(chrono::Utc::now())), 51);
        assert_eq!(q(|q| q.tags = vec!["vip".into()]), 51);
        assert_eq!(q(|q| q.segment = Some("s".into())), 51);
        // not implied: a field's value, a second tag, a tag beside a segment, a time
        // range beside a tag
        assert_eq!(q(|q| q.fields = vec![("plan".into(), "gold".into())]), 204);
        assert_eq!(q(|q| q.tags = vec!["a".into(), "b".into()]), 204);
        assert_eq!(
            q(|q| {
                q.segment = Some("s".into());
                q.tags = vec!["a".into()];
            }),
            204
        );
        assert_eq!(
            q(|q| {
                q.tags = vec!["a".into()];
                q.seen_before = Some(chrono::Utc::now());
            }),
            204
        );
        let mut wide = ListQuery::default();
        wide.fields.push(("plan".into(), "gold".into()));
        assert_eq!(first_want(&wide, MAX_WANT), MAX_WANT, "at most MAX_WANT");
    }

    #[test]
    fn no_rows_is_an_empty_window_at_the_end() {
        let w = window(&[vec![], vec![]], 3);
        assert!(w.ids.is_empty());
        assert_eq!(w.through, None);
    }
}
