//! A subscription's durable delivery state under `_tidemark/state/webhooks/<env>/<id>/`:
//!
//! - `chunks/<to>.json`: messages cut from the events up to `events` version `to`,
//!   written (one atomic put) before any of them is sent, so a message keeps its
//!   `webhook-id` and body across retries and restarts;
//! - `cursor.json`: the last `events` version fully turned into chunks (a chunk newer
//!   than the cursor also counts: a crash can fall between the two puts);
//! - `failed/<to>.json`: messages that failed every attempt, kept for `recover`.
//!
//! One worker owns a subscription's state at a time.

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::storage::Store;
use crate::{Error, Result};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct StoredMessage {
    pub id: String,
    pub event_ids: Vec<String>,
    /// The exact body sent and signed.
    pub body: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failed_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Chunk {
    pub to_version: i64,
    pub written_at: DateTime<Utc>,
    pub messages: Vec<StoredMessage>,
}

/// `cursor.json`: how far the subscription has read, and what else must survive a restart.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
pub struct Progress {
    /// The last `events` version fully turned into chunks.
    pub version: i64,
    /// The last `recover` request acted on.
    #[serde(default)]
    pub recover_seq: u64,
    /// When the current run of failed attempts began (auto-pause counts from here).
    #[serde(default)]
    pub failing_since: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone)]
pub struct SubState {
    store: Arc<dyn ObjectStore>,
    base: Path,
}

fn chunk_name(to: i64) -> String {
    format!("{to:020}.json")
}

impl SubState {
    pub fn new(store: &Store, environment: &str, id: &str) -> SubState {
        SubState {
            store: store.object_store(),
            base: store.paths().webhook_state(environment, id),
        }
    }

    async fn get_json<T: for<'de> Deserialize<'de>>(&self, path: &Path) -> Result<Option<T>> {
        match self.store.get(path).await {
            Ok(got) => Ok(Some(serde_json::from_slice(&got.bytes().await?)?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn put_json<T: Serialize>(&self, path: &Path, value: &T) -> Result<()> {
        let body = serde_json::to_vec(value)?;
        self.store.put(path, PutPayload::from(body)).await?;
        Ok(())
    }

    async fn list_dir(&self, dir: &str) -> Result<Vec<Chunk>> {
        let prefix = self.base.clone().join(dir);
        let metas: Vec<_> = self.store.list(Some(&prefix)).try_collect().await?;
        let mut chunks = Vec::new();
        for m in metas {
            if let Some(c) = self.get_json::<Chunk>(&m.location).await? {
                chunks.push(c);
            }
        }
        chunks.sort_by_key(|c| c.to_version);
        Ok(chunks)
    }

    /// The stored progress, its version raised to the newest chunk's (a crash can fall
    /// between writing a chunk and the cursor); `None` for a new subscription.
    pub async fn progress(&self, chunks: &[Chunk]) -> Result<Option<Progress>> {
        let stored = self
            .get_json::<Progress>(&self.base.clone().join("cursor.json"))
            .await?;
        let newest = chunks.iter().map(|c| c.to_version).max();
        Ok(match (stored, newest) {
            (Some(mut p), n) => {
                p.version = p.version.max(n.unwrap_or(i64::MIN));
                Some(p)
            }
            (None, Some(v)) => Some(Progress {
                version: v,
                ..Default::default()
            }),
            (None, None) => None,
        })
    }

    pub async fn write_progress(&self, progress: &Progress) -> Result<()> {
        self.put_json(&self.base.clone().join("cursor.json"), progress)
            .await
    }

    pub async fn chunks(&self) -> Result<Vec<Chunk>> {
        self.list_dir("chunks").await
    }

    pub async fn write_chunk(&self, chunk: &Chunk) -> Result<()> {
        let path = self
            .base
            .clone()
            .join("chunks")
            .join(chunk_name(chunk.to_version));
        self.put_json(&path, chunk).await
    }

    pub async fn delete_chunk(&self, to: i64) -> Result<()> {
        let path = self.base.clone().join("chunks").join(chunk_name(to));
        match self.store.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    pub async fn failed(&self) -> Result<Vec<Chunk>> {
        self.list_dir("failed").await
    }

    /// Adds `messages` (all failed) to `failed/<to>.json`.
    pub async fn add_failed(&self, to: i64, messages: Vec<StoredMessage>) -> Result<()> {
        let path = self.base.clone().join("failed").join(chunk_name(to));
        let mut chunk = self.get_json::<Chunk>(&path).await?.unwrap_or(Chunk {
            to_version: to,
            written_at: Utc::now(),
            messages: Vec::new(),
        });
        for m in messages {
            chunk.messages.retain(|old| old.id != m.id);
            chunk.messages.push(m);
        }
        self.put_json(&path, &chunk).await
    }

    /// Replaces `failed/<to>.json` with `keep` (deleted when empty).
    pub async fn set_failed(&self, to: i64, keep: Vec<StoredMessage>) -> Result<()> {
        let path = self.base.clone().join("failed").join(chunk_name(to));
        if keep.is_empty() {
            return match self.store.delete(&path).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(e.into()),
            };
        }
        self.put_json(
            &path,
            &Chunk {
                to_version: to,
                written_at: Utc::now(),
                messages: keep,
            },
        )
        .await
    }

    /// Deletes everything (the subscription was deleted).
    pub async fn delete_all(&self) -> Result<()> {
        let metas: Vec<_> = self.store.list(Some(&self.base)).try_collect().await?;
        for m in metas {
            match self.store.delete(&m.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(Error::from(e)),
            }
        }
        Ok(())
    }
}
