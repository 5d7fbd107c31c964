//! Retention and VACUUM: every `retention.interval` the node deletes events past their
//! environment's retention, then VACUUMs every table (`tidemark retention`, `tidemark
//! vacuum` run the same passes).

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::Utc;
use datafusion::prelude::{col, lit};
use deltalake::DeltaTable;
use deltalake::operations::vacuum::VacuumMode;

use super::Store;
use crate::Result;

/// Deletes the events of each environment older than its retention (whole days by
/// `received_date`, a metadata-only delete of partitions). Returns rows deleted.
pub async fn apply_retention(
    store: &Store,
    config: &crate::config::RetentionConfig,
) -> Result<BTreeMap<String, Option<usize>>> {
    let mut out = BTreeMap::new();
    let Some(events) = store
        .load_table(crate::storage::events_table::TABLE)
        .await?
    else {
        return Ok(out);
    };
    let envs = environments_of(&events).await?;
    let mut table = events;
    for env in envs {
        let days = config.days(&env);
        let cutoff = (Utc::now() - chrono::Duration::days(i64::from(days))).date_naive();
        let predicate = col("environment")
            .eq(lit(env.as_str()))
            .and(
                col("received_date").lt(lit(datafusion::common::ScalarValue::Date32(Some(
                    (cutoff - chrono::NaiveDate::default()).num_days() as i32,
                )))),
            );
        let (t, metrics) = table.delete().with_predicate(predicate).await?;
        table = t;
        if metrics.num_removed_files > 0 {
            out.insert(env, metrics.num_deleted_rows);
        }
    }
    Ok(out)
}

/// The environments with files in `events` (from partition values).
async fn environments_of(events: &DeltaTable) -> Result<Vec<String>> {
    let mut envs: Vec<String> = events
        .get_file_uris()?
        .filter_map(|u| {
            u.split('/')
                .find_map(|seg| seg.strip_prefix("environment=").map(str::to_string))
        })
        .collect();
    envs.sort();
    envs.dedup();
    Ok(envs)
}

/// VACUUM (full: also orphaned files of crashed writers) of every table, deleting files
/// that left their table more than `retention` ago. `hidden` names the tables that live
/// below `_tidemark/`, outside the listed table directories (the jobs' pending tables).
/// Returns files deleted per table.
pub async fn vacuum_all(
    store: &Store,
    retention: Duration,
    hidden: &[String],
) -> Result<BTreeMap<String, usize>> {
    let mut out = BTreeMap::new();
    for name in super::table_dirs(store).await?.iter().chain(hidden) {
        let Some(table) = store.load_table(name).await? else {
            continue;
        };
        let period = chrono::Duration::from_std(retention).unwrap_or(chrono::Duration::MAX);
        let (_, metrics) = table
            .vacuum()
            .with_retention_period(period)
            .with_enforce_retention_duration(false)
            .with_mode(VacuumMode::Full)
            .await?;
        out.insert(name.clone(), metrics.files_deleted.len());
    }
    Ok(out)
}
