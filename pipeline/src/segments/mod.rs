//! Dynamic segments: definitions validated against the field registry ([`def`]), compiled
//! to parameterized DataFusion SQL over `profiles` and `event_stats` ([`compile`]), and
//! evaluated for previews ([`preview`]); definitions are stored in the config document
//! `segments` ([`store`]).

pub mod compile;
pub mod def;
pub mod store;

use datafusion::prelude::SessionContext;

use crate::Result;
use crate::jobs::views::to_json_rows;

/// Members of a compiled segment: the count and up to `sample` user ids (sorted).
pub async fn preview(
    ctx: &SessionContext,
    compiled: &compile::Compiled,
    sample: usize,
) -> Result<(usize, Vec<String>)> {
    let df = ctx
        .sql(&compiled.sql)
        .await?
        .with_param_values(compiled.params.clone())?;
    let count = df.clone().count().await?;
    let rows = df
        .sort(vec![datafusion::prelude::col("user_id").sort(true, false)])?
        .limit(0, Some(sample))?
        .collect()
        .await?;
    let ids = to_json_rows(&rows)?
        .into_iter()
        .filter_map(|r| r["user_id"].as_str().map(str::to_string))
        .collect();
    Ok((count, ids))
}
