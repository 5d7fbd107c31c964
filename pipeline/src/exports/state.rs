//! An export's progress: a versioned document per export
//! (`_tidemark/state/exports/<env>/<id>/<version>.json`, create-only versions as config
//! documents are), changed by the transitions of [`super::schedule`] after every window.
//! A window counts as done only once its manifest is written and a version says so; a
//! crash in between re-runs the window, which replaces the same objects.

use chrono::{DateTime, Utc};
use object_store::ObjectStoreExt;
use serde::{Deserialize, Serialize};

use super::window::Window;
use crate::Result;
use crate::storage::Store;

/// The last window written.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Done {
    pub window: Window,
    pub rows: u64,
    pub files: usize,
    pub finished_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct ExportState {
    /// Every window before this one is exported (`None`: none yet, start at `Export::start`).
    pub next_start: Option<DateTime<Utc>>,
    /// Windows from here up to `next_start` are re-exported first: a commit after
    /// `events_version` added rows received in them.
    pub redo_from: Option<DateTime<Utc>>,
    /// The `events` version the exported windows have seen.
    pub events_version: Option<i64>,
    pub last_good: Option<Done>,
    pub windows_done: u64,
    pub rows_exported: u64,
    /// Consecutive failed runs.
    pub failures: u32,
    pub failing_since: Option<DateTime<Utc>>,
    pub last_error: Option<String>,
    pub last_error_at: Option<DateTime<Utc>>,
    /// No run before this (backoff).
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// The newest version of the export's state (a default one for a new export).
pub async fn load(store: &Store, environment: &str, id: &str) -> Result<ExportState> {
    let dir = store.paths().export_state(environment, id);
    if let Some((_, st)) = store.docs().latest_in(&dir).await? {
        return Ok(st);
    }
    legacy(store, environment, id).await
}

/// Applies `change` (a pure transition, which may run again when another writer raced)
/// to the newest state and writes the result as the next create-only version.
pub async fn update(
    store: &Store,
    environment: &str,
    id: &str,
    mut change: impl FnMut(&mut ExportState),
) -> Result<ExportState> {
    let dir = store.paths().export_state(environment, id);
    // Before the first version, the state written by older releases is the base.
    let base = match store.docs().latest_in::<ExportState>(&dir).await? {
        Some(_) => None,
        None => Some(legacy(store, environment, id).await?),
    };
    let (_, st) = store
        .docs()
        .update_in(&dir, |cur: Option<ExportState>| {
            let mut st = cur.or_else(|| base.clone()).unwrap_or_default();
            change(&mut st);
            Ok(st)
        })
        .await?;
    Ok(st)
}

/// The state of an export made before state was versioned (`<id>.json`), if any.
async fn legacy(store: &Store, environment: &str, id: &str) -> Result<ExportState> {
    let path = store.paths().legacy_export_state(environment, id);
    match store.object_store().get(&path).await {
        Ok(r) => Ok(serde_json::from_slice(&r.bytes().await?)?),
        Err(object_store::Error::NotFound { .. }) => Ok(ExportState::default()),
        Err(e) => Err(e.into()),
    }
}

pub async fn delete(store: &Store, environment: &str, id: &str) -> Result<()> {
    let dir = store.paths().export_state(environment, id);
    store.docs().delete_in(&dir).await?;
    let path = store.paths().legacy_export_state(environment, id);
    match store.object_store().delete(&path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::{ObjectStoreExt, PutPayload};
    use std::collections::BTreeMap;

    #[tokio::test]
    async fn versions_build_on_the_legacy_file_and_race_without_losing_a_change() {
        let store = Store::open("memory://export-state-test", &BTreeMap::new()).expect("store");
        // An export from before versioned state: one overwritten `<id>.json`.
        let old = ExportState {
            windows_done: 7,
            failures: 2,
            ..Default::default()
        };
        let legacy = store.paths().legacy_export_state("prod", "ex_1");
        let body = serde_json::to_vec(&old).expect("json");
        store
            .object_store()
            .put(&legacy, PutPayload::from(body))
            .await
            .expect("put");
        assert_eq!(load(&store, "prod", "ex_1").await.expect("load"), old);
        // The first version starts from it.
        let st = update(&store, "prod", "ex_1", |s| s.windows_done += 1)
            .await
            .expect("update");
        assert_eq!((st.windows_done, st.failures), (8, 2));
        // Two writers (the worker and a resume) both land.
        let (a, b) = tokio::join!(
            update(&store, "prod", "ex_1", |s| s.windows_done += 1),
            update(&store, "prod", "ex_1", |s| s.failures = 0),
        );
        a.expect("worker");
        b.expect("resume");
        let st = load(&store, "prod", "ex_1").await.expect("load");
        assert_eq!((st.windows_done, st.failures), (9, 0));
        delete(&store, "prod", "ex_1").await.expect("delete");
        assert_eq!(
            load(&store, "prod", "ex_1").await.expect("load"),
            ExportState::default()
        );
    }
}
