//! Erasure of a user everywhere and its audit trail.
//!
//! An erasure deletes the user's rows (Delta DELETE) from the source tables (`events`,
//! `profile_changes`), brings the jobs past those deletes, then deletes the user's rows
//! from every derived table. Catching the jobs up first matters: a job run that read the
//! events before the DELETE could otherwise append the user's rows again afterwards. Once
//! a job's cursor is past the DELETE, later runs only read newer files. The derived rows
//! are deleted from the pending and the published tables under the publish lease, so a
//! publish pass that read the pending rows before their DELETE cannot write them back.
//!
//! The DELETE predicate names the user by the SHA-256 of the id, so the Delta log (which
//! records each predicate) never holds the id; tables keep column statistics only for
//! columns without personal data. Old files stay until VACUUM removes them
//! (`retention.vacuum_after`); [`status`] tells whether any file that may hold erased rows
//! is left. The audit entry (config document `erasures`) holds no personal data.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use datafusion::functions::crypto::expr_fn::sha256;
use datafusion::functions::encoding::expr_fn::encode;
use datafusion::prelude::{Expr, col, lit};
use deltalake::DeltaTable;
use futures::TryStreamExt;
use serde::{Deserialize, Serialize};
use sha2::Digest;

use crate::jobs::{Runner, defs};
use crate::storage::Store;
use crate::storage::paths::Doc;
use crate::{Error, Result};

/// Times a DELETE is run again after a commit conflict with concurrent appends.
const MAX_DELETE_ATTEMPTS: u32 = 10;

/// Audit entries kept (oldest dropped beyond this).
const MAX_AUDIT_ENTRIES: usize = 100_000;

/// One erasure, as recorded (no user id, no hash of it).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Erasure {
    pub id: String,
    pub environment: String,
    pub requested_at: DateTime<Utc>,
    pub completed_at: DateTime<Utc>,
    /// The API key (or `cli`) that asked.
    pub requested_by: String,
    /// Rows deleted per table (`null`: deleted, count unknown).
    pub rows_deleted: BTreeMap<String, Option<usize>>,
    /// Per table, the version its DELETE committed (files older than it may hold rows).
    pub versions: BTreeMap<String, u64>,
}

/// The `erasures` config document.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Erasures {
    pub erasures: Vec<Erasure>,
}

/// Whether files holding an erasure's rows are still in the store.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ErasureStatus {
    pub erasure: Erasure,
    /// Files no longer in their table that were written before the erasure: VACUUM
    /// deletes them once they are older than `retention.vacuum_after`.
    pub files_pending: usize,
    /// When the last of them becomes old enough for VACUUM (`None` when none is left).
    pub vacuum_eligible_at: Option<DateTime<Utc>>,
    pub complete: bool,
}

fn user_predicate(environment: &str, user_id: &str) -> Expr {
    let digest = hex::encode(sha2::Sha256::digest(user_id.as_bytes()));
    col("environment")
        .eq(lit(environment))
        .and(encode(sha256(col("user_id")), lit("hex")).eq(lit(digest)))
}

/// Deletes `environment`'s rows of `user_id` from table `name` (if it exists).
async fn delete_from(
    store: &Store,
    name: &str,
    environment: &str,
    user_id: &str,
) -> Result<Option<(Option<usize>, u64)>> {
    // A commit that appended rows while the DELETE ran (the flusher, segment and flow
    // events) conflicts with it: the rows may be the user's, so the DELETE runs again on
    // the table as it is now.
    for attempt in 1..=MAX_DELETE_ATTEMPTS {
        let Some(table) = store.load_table(name).await? else {
            return Ok(None);
        };
        match table
            .delete()
            .with_predicate(user_predicate(environment, user_id))
            .await
        {
            Ok((table, metrics)) => {
                let version = table.version().unwrap_or_default();
                return Ok(Some((metrics.num_deleted_rows, version)));
            }
            Err(deltalake::DeltaTableError::Transaction {
                source: deltalake::kernel::transaction::TransactionError::CommitConflict(e),
            }) if attempt < MAX_DELETE_ATTEMPTS => {
                tracing::debug!(table = name, attempt, error = %e, "erasure: DELETE raced an append; running it again");
                tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt))).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Err(Error::Unavailable(format!(
        "{name}: the DELETE kept conflicting with concurrent appends"
    )))
}

/// Runs the jobs until every cursor is at its source's head (retrying when another
/// runner wins a race on the same cursor).
async fn catch_up(runner: &Runner) -> Result<()> {
    let mut last_err = None;
    for attempt in 0..10u32 {
        match runner.run_once().await {
            Ok(r) if r.is_empty() => return Ok(()),
            Ok(_) => continue,
            Err(e) => {
                tracing::debug!(error = %e, attempt, "erasure: job run failed, retrying");
                last_err = Some(e);
                tokio::time::sleep(Duration::from_millis(200 * u64::from(attempt + 1))).await;
            }
        }
    }
    Err(last_err.unwrap_or_else(|| Error::Unavailable("the jobs did not catch up".into())))
}

/// Erases `user_id` of `environment` from every table and records the audit entry.
pub async fn erase(
    runner: &Runner,
    environment: &str,
    user_id: &str,
    requested_by: &str,
) -> Result<Erasure> {
    let store = runner.store();
    let requested_at = Utc::now();
    let mut rows_deleted = BTreeMap::new();
    let mut versions = BTreeMap::new();
    let sources: Vec<&str> = defs::SOURCES.iter().map(|s| s.table()).collect();
    for name in &sources {
        if let Some((rows, v)) = delete_from(store, name, environment, user_id).await? {
            rows_deleted.insert(name.to_string(), rows);
            versions.insert(name.to_string(), v);
        }
    }
    // The user's aliases, as either side of the link (before the jobs run: a link of an
    // erased previous id must not move anything).
    if let Some(table) = store.load_table(crate::users::aliases::TABLE).await? {
        let digest = hex::encode(sha2::Sha256::digest(user_id.as_bytes()));
        let hashed = |c: &str| encode(sha256(col(c)), lit("hex")).eq(lit(digest.clone()));
        let (table, metrics) = table
            .delete()
            .with_predicate(
                col("environment")
                    .eq(lit(environment))
                    .and(hashed("previous_id").or(hashed("user_id"))),
            )
            .await?;
        let name = crate::users::aliases::TABLE.to_string();
        rows_deleted.insert(name.clone(), metrics.num_deleted_rows);
        versions.insert(name, table.version().unwrap_or_default());
    }
    catch_up(runner).await?;
    let derived: Vec<&str> = defs::ALL
        .iter()
        .flat_map(|j| [j.pending(), j.table()])
        .chain([crate::segments::job::MEMBERS, crate::segments::job::CHANGES])
        .collect();
    let leases = crate::storage::lease::Leases::new(store, runner.options().lease_ttl);
    let poll = Duration::from_millis(100);
    let deleted = leases
        .exclusive(crate::jobs::publish::LEASE, poll, async {
            let mut deleted = Vec::new();
            for name in &derived {
                if let Some(d) = delete_from(store, name, environment, user_id).await? {
                    deleted.push((name.to_string(), d));
                }
            }
            Ok(deleted)
        })
        .await?;
    for (name, (rows, v)) in deleted {
        rows_deleted.insert(name.clone(), rows);
        versions.insert(name, v);
    }
    let erasure = Erasure {
        id: uuid::Uuid::now_v7().to_string(),
        environment: environment.to_string(),
        requested_at,
        completed_at: Utc::now(),
        requested_by: requested_by.to_string(),
        rows_deleted,
        versions,
    };
    let entry = erasure.clone();
    store
        .docs()
        .update(Doc::Erasures, move |doc: Option<Erasures>| {
            let mut doc = doc.unwrap_or_default();
            doc.erasures.push(entry.clone());
            let excess = doc.erasures.len().saturating_sub(MAX_AUDIT_ENTRIES);
            doc.erasures.drain(..excess);
            Ok(doc)
        })
        .await?;
    Ok(erasure)
}

/// The recorded erasures, oldest first (of `environment` when given).
pub async fn list(store: &Store, environment: Option<&str>) -> Result<Vec<Erasure>> {
    let all = store
        .docs()
        .latest::<Erasures>(Doc::Erasures)
        .await?
        .map(|(_, d)| d.erasures)
        .unwrap_or_default();
    Ok(all
        .into_iter()
        .filter(|e| environment.is_none_or(|env| e.environment == env))
        .collect())
}

/// Data files under `table`'s directory that are not live in its current snapshot, with
/// their last-modified times.
async fn dead_files(store: &Store, table: &DeltaTable) -> Result<Vec<DateTime<Utc>>> {
    let live: std::collections::HashSet<String> = table
        .get_file_uris()?
        .map(|u| u.rsplit('/').next().unwrap_or_default().to_string())
        .collect();
    let root = object_store::path::Path::from_url_path(table.table_url().path())
        .map_err(|e| Error::Invalid(e.to_string()))?;
    let listed: Vec<_> = store.object_store().list(Some(&root)).try_collect().await?;
    Ok(listed
        .into_iter()
        .filter(|m| {
            let name = m.location.filename().unwrap_or_default();
            name.ends_with(".parquet")
                && !m.location.as_ref().contains("_delta_log")
                && !live.contains(name)
        })
        .map(|m| m.last_modified)
        .collect())
}

/// Whether files that may hold `erasure`'s rows are left, and when VACUUM may delete them.
pub async fn status(
    store: &Store,
    erasure: &Erasure,
    vacuum_after: Duration,
) -> Result<ErasureStatus> {
    let mut pending = 0;
    let mut newest: Option<DateTime<Utc>> = None;
    for name in erasure.versions.keys() {
        let Some(table) = store.load_table(name).await? else {
            continue;
        };
        for modified in dead_files(store, &table).await? {
            if modified <= erasure.completed_at {
                pending += 1;
                newest = newest.max(Some(modified));
            }
        }
    }
    let after = chrono::Duration::from_std(vacuum_after).unwrap_or(chrono::Duration::MAX);
    Ok(ErasureStatus {
        erasure: erasure.clone(),
        files_pending: pending,
        // a file leaves its table at the erasure at the latest
        vacuum_eligible_at: (pending > 0).then(|| erasure.completed_at + after),
        complete: pending == 0,
    })
}
