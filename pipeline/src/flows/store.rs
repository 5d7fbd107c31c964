//! The flow state of one environment in the store ([`crate::storage::paths::Paths::flow_state`]):
//! published versions, runs, the inbox of starts and commands, idempotency keys, the due
//! index, the index of runs waiting for an event, and entry-rule state. Everything a run
//! needs lives here, not in memory, so a million runs waiting in a delay cost storage.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::Digest;

use super::decide::EntryState;
use super::model::Spec;
use super::run::Run;
use crate::storage::Store;
use crate::storage::paths::Paths;
use crate::{Error, Result};

/// A published version: the document as published and its parsed form.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Version {
    pub version: u32,
    pub document: Value,
    pub spec: Spec,
    pub published_at: DateTime<Utc>,
}

/// One start of runs, as the API (or the console) took it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Start {
    pub flow: String,
    pub version: u32,
    pub at: DateTime<Utc>,
    /// `{"type": "api"|"console", ...}` and the call's `trigger` object.
    pub trigger: Value,
    pub variables: Map<String, Value>,
    /// (run id, user id).
    pub runs: Vec<(String, String)>,
}

/// What the worker is asked to do.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Command {
    Start(Start),
    /// Cancels active runs.
    Cancel {
        flow: String,
        runs: Vec<String>,
    },
    /// Starts failed runs again at the step that failed.
    Retry {
        flow: String,
        runs: Vec<String>,
    },
}

/// An idempotency key's record: the start it made (kept at least 24 h).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct KeyRecord {
    pub inbox: String,
    pub start: Start,
    pub answer: Value,
}

/// A hash of a user id, for storage keys (no user id in a path).
pub fn user_key(user_id: &str) -> String {
    hex::encode(&sha2::Sha256::digest(user_id.as_bytes())[..16])
}

/// The due index's minute of `at` (`YYYYMMDDHHMM`).
pub fn minute(at: DateTime<Utc>) -> String {
    at.format("%Y%m%d%H%M").to_string()
}

#[derive(Clone, Debug)]
pub struct FlowStore {
    os: Arc<dyn ObjectStore>,
    paths: Paths,
    environment: String,
}

impl FlowStore {
    pub fn new(store: &Store, environment: &str) -> FlowStore {
        FlowStore {
            os: store.object_store(),
            paths: store.paths().clone(),
            environment: environment.to_string(),
        }
    }

    pub fn environment(&self) -> &str {
        &self.environment
    }

    async fn get<T: DeserializeOwned>(&self, path: &Path) -> Result<Option<T>> {
        match self.os.get(path).await {
            Ok(got) => Ok(Some(serde_json::from_slice(&got.bytes().await?)?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }

    async fn put<T: Serialize>(&self, path: &Path, value: &T) -> Result<()> {
        self.os
            .put(path, PutPayload::from(serde_json::to_vec(value)?))
            .await?;
        Ok(())
    }

    /// Writes `value` at `path` unless something is there; returns whether it wrote.
    async fn put_new<T: Serialize>(&self, path: &Path, value: &T) -> Result<bool> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .os
            .put_opts(path, PutPayload::from(serde_json::to_vec(value)?), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn delete(&self, path: &Path) -> Result<()> {
        match self.os.delete(path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    async fn names(&self, dir: &Path) -> Result<Vec<String>> {
        let mut names: Vec<String> = self
            .os
            .list(Some(dir))
            .map_ok(|m| m.location.filename().unwrap_or_default().to_string())
            .try_collect()
            .await?;
        names.sort_unstable();
        Ok(names)
    }

    // --- published versions

    /// Writes `document` as the next version of `flow`; returns its number.
    pub async fn publish_version(&self, flow: &str, document: &Value, spec: &Spec) -> Result<u32> {
        let dir = self.paths.flow_versions(&self.environment, flow);
        for _ in 0..50 {
            let newest = self
                .names(&dir)
                .await?
                .iter()
                .filter_map(|n| n.strip_suffix(".json")?.parse::<u32>().ok())
                .max()
                .unwrap_or(0);
            let v = Version {
                version: newest + 1,
                document: document.clone(),
                spec: spec.clone(),
                published_at: Utc::now(),
            };
            if self
                .put_new(&Paths::version_in(&dir, u64::from(v.version)), &v)
                .await?
            {
                return Ok(v.version);
            }
        }
        Err(Error::Unavailable(format!(
            "flow {flow}: too many concurrent publishes"
        )))
    }

    pub async fn version(&self, flow: &str, version: u32) -> Result<Option<Version>> {
        let dir = self.paths.flow_versions(&self.environment, flow);
        self.get(&Paths::version_in(&dir, u64::from(version))).await
    }

    /// Deletes every published version, run and entry state of `flow`.
    pub async fn delete_flow(&self, flow: &str) -> Result<()> {
        for dir in [
            self.paths.flow_versions(&self.environment, flow),
            self.paths.flow_runs(&self.environment, flow),
        ] {
            let metas: Vec<_> = self.os.list(Some(&dir)).try_collect().await?;
            for m in metas {
                self.delete(&m.location).await?;
            }
        }
        Ok(())
    }

    // --- runs

    pub async fn run(&self, flow: &str, run: &str) -> Result<Option<Run>> {
        self.get(&self.paths.flow_run(&self.environment, flow, run))
            .await
    }

    pub async fn put_run(&self, run: &Run) -> Result<()> {
        self.put(
            &self
                .paths
                .flow_run(&self.environment, &run.flow_id, &run.id),
            run,
        )
        .await
    }

    /// Run ids of `flow`, oldest first.
    pub async fn run_ids(&self, flow: &str) -> Result<Vec<String>> {
        Ok(self
            .names(&self.paths.flow_runs(&self.environment, flow))
            .await?
            .into_iter()
            .filter_map(|n| n.strip_suffix(".json").map(str::to_string))
            .collect())
    }

    // --- inbox

    /// Posts a command for the worker; returns its name.
    pub async fn post(&self, name: &str, command: &Command) -> Result<()> {
        let path = self
            .paths
            .flow_inbox(&self.environment)
            .join(format!("{name}.json"));
        self.put_new(&path, command).await?;
        Ok(())
    }

    pub async fn has_posted(&self, name: &str) -> Result<bool> {
        let path = self
            .paths
            .flow_inbox(&self.environment)
            .join(format!("{name}.json"));
        match self.os.head(&path).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Up to `limit` commands, oldest first, with their names.
    pub async fn inbox(&self, limit: usize) -> Result<Vec<(String, Command)>> {
        let mut out = Vec::new();
        for n in self
            .names(&self.paths.flow_inbox(&self.environment))
            .await?
        {
            if out.len() >= limit {
                break;
            }
            let Some(name) = n.strip_suffix(".json") else {
                continue;
            };
            let path = self.paths.flow_inbox(&self.environment).join(n.as_str());
            if let Some(c) = self.get::<Command>(&path).await? {
                out.push((name.to_string(), c));
            }
        }
        Ok(out)
    }

    /// Replaces command `name` with what is left of it.
    pub async fn requeue(&self, name: &str, rest: &Command) -> Result<()> {
        let path = self
            .paths
            .flow_inbox(&self.environment)
            .join(format!("{name}.json"));
        self.put(&path, rest).await
    }

    pub async fn take(&self, name: &str) -> Result<()> {
        self.delete(
            &self
                .paths
                .flow_inbox(&self.environment)
                .join(format!("{name}.json")),
        )
        .await
    }

    // --- idempotency keys

    pub async fn key(&self, hash: &str) -> Result<Option<KeyRecord>> {
        self.get(&self.paths.flow_key(&self.environment, hash))
            .await
    }

    /// Records a key unless another start recorded it first (then `false`).
    pub async fn put_key(&self, hash: &str, record: &KeyRecord) -> Result<bool> {
        self.put_new(&self.paths.flow_key(&self.environment, hash), record)
            .await
    }

    // --- the due index

    fn due_entry(&self, at: DateTime<Utc>, flow: &str, run: &str) -> Path {
        self.paths
            .flow_due(&self.environment)
            .join(minute(at))
            .join(format!("{flow}.{run}"))
    }

    pub async fn due_add(&self, at: DateTime<Utc>, flow: &str, run: &str) -> Result<()> {
        self.os
            .put(&self.due_entry(at, flow, run), PutPayload::new())
            .await?;
        Ok(())
    }

    pub async fn due_del(&self, at: DateTime<Utc>, flow: &str, run: &str) -> Result<()> {
        self.delete(&self.due_entry(at, flow, run)).await
    }

    /// Up to `limit` entries due at or before `now`'s minute: (minute, flow, run).
    pub async fn due(
        &self,
        now: DateTime<Utc>,
        limit: usize,
    ) -> Result<Vec<(String, String, String)>> {
        let base = self.paths.flow_due(&self.environment);
        let listed = self.os.list_with_delimiter(Some(&base)).await?;
        let mut minutes: Vec<String> = listed
            .common_prefixes
            .iter()
            .filter_map(|p| p.filename().map(str::to_string))
            .collect();
        minutes.sort_unstable();
        let upto = minute(now);
        let mut out = Vec::new();
        for m in minutes.into_iter().filter(|m| *m <= upto) {
            // A minute may hold a million entries: read only as many as are wanted.
            let dir = base.clone().join(m.as_str());
            let mut listing = self.os.list(Some(&dir));
            while out.len() < limit {
                let Some(meta) = listing.try_next().await? else {
                    break;
                };
                if let Some((flow, run)) = meta.location.filename().and_then(|n| n.split_once('.'))
                {
                    out.push((m.clone(), flow.to_string(), run.to_string()));
                }
            }
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    /// Removes a due entry by the minute it was listed under.
    pub async fn due_done(&self, minute: &str, flow: &str, run: &str) -> Result<()> {
        self.delete(
            &self
                .paths
                .flow_due(&self.environment)
                .join(minute)
                .join(format!("{flow}.{run}")),
        )
        .await
    }

    // --- runs waiting for an event

    fn wait_entry(&self, user: &str, flow: &str, run: &str) -> Path {
        self.paths
            .flow_waits(&self.environment, &user_key(user))
            .join(format!("{flow}.{run}"))
    }

    pub async fn wait_add(&self, user: &str, flow: &str, run: &str) -> Result<()> {
        self.os
            .put(&self.wait_entry(user, flow, run), PutPayload::new())
            .await?;
        Ok(())
    }

    pub async fn wait_del(&self, user: &str, flow: &str, run: &str) -> Result<()> {
        self.delete(&self.wait_entry(user, flow, run)).await
    }

    /// The runs waiting for an event of `user`: (flow, run).
    pub async fn waits(&self, user: &str) -> Result<Vec<(String, String)>> {
        Ok(self
            .names(&self.paths.flow_waits(&self.environment, &user_key(user)))
            .await?
            .into_iter()
            .filter_map(|n| {
                n.split_once('.')
                    .map(|(f, r)| (f.to_string(), r.to_string()))
            })
            .collect())
    }

    // --- entry rules

    pub async fn entry(&self, flow: &str, user: &str) -> Result<EntryState> {
        Ok(self
            .get(
                &self
                    .paths
                    .flow_entry(&self.environment, flow, &user_key(user)),
            )
            .await?
            .unwrap_or_default())
    }

    pub async fn put_entry(&self, flow: &str, user: &str, state: &EntryState) -> Result<()> {
        self.put(
            &self
                .paths
                .flow_entry(&self.environment, flow, &user_key(user)),
            state,
        )
        .await
    }
}
