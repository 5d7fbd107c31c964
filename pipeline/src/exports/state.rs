//! An export's progress: one JSON object per export, rewritten after every window (a
//! window counts as done only once its manifest is written and this file says so; a crash
//! in between re-runs the window, which replaces the same objects).

use chrono::{DateTime, Utc};
use object_store::{ObjectStoreExt, PutPayload};
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

pub async fn load(store: &Store, environment: &str, id: &str) -> Result<ExportState> {
    let path = store.paths().export_state(environment, id);
    match store.object_store().get(&path).await {
        Ok(r) => Ok(serde_json::from_slice(&r.bytes().await?)?),
        Err(object_store::Error::NotFound { .. }) => Ok(ExportState::default()),
        Err(e) => Err(e.into()),
    }
}

pub async fn save(store: &Store, environment: &str, id: &str, state: &ExportState) -> Result<()> {
    let path = store.paths().export_state(environment, id);
    let bytes = serde_json::to_vec_pretty(state)?;
    store
        .object_store()
        .put(&path, PutPayload::from(bytes))
        .await?;
    Ok(())
}

pub async fn delete(store: &Store, environment: &str, id: &str) -> Result<()> {
    let path = store.paths().export_state(environment, id);
    match store.object_store().delete(&path).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(e.into()),
    }
}
