//! Versioned JSON config documents, written the way the Delta log is: each change is a new
//! numbered object put with `PutMode::Create`; the newest version wins, and a writer that
//! loses the race re-reads and retries. Several nodes can share one store this way.

use std::collections::BTreeMap;
use std::sync::Arc;

use futures::TryStreamExt;
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::paths::{Doc, Paths};
use crate::{Error, Result};

/// Old versions kept behind the newest one (for inspection and slow readers).
const KEEP_VERSIONS: u64 = 20;
const MAX_ATTEMPTS: usize = 50;

/// A document of items per environment, `{"environments": {env: {id: item}}}` (webhook
/// subscriptions, exports).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ByEnvironment<T> {
    pub environments: BTreeMap<String, BTreeMap<String, T>>,
}

impl<T> Default for ByEnvironment<T> {
    fn default() -> Self {
        ByEnvironment {
            environments: BTreeMap::new(),
        }
    }
}

impl<T> ByEnvironment<T> {
    /// The items of `environment` (none if it has none).
    pub fn take(mut self, environment: &str) -> BTreeMap<String, T> {
        self.environments.remove(environment).unwrap_or_default()
    }
}

#[derive(Clone, Debug)]
pub struct Docs {
    store: Arc<dyn ObjectStore>,
    paths: Paths,
}

impl Docs {
    pub fn new(store: Arc<dyn ObjectStore>, paths: Paths) -> Docs {
        Docs { store, paths }
    }

    async fn latest_version(&self, dir: &Path) -> Result<Option<u64>> {
        let metas: Vec<_> = self.store.list(Some(dir)).try_collect().await?;
        Ok(metas
            .iter()
            .filter_map(|m| Paths::parse_doc_version(&m.location))
            .max())
    }

    /// The newest version of a per-environment document (empty if never written).
    pub async fn by_environment<T: DeserializeOwned>(&self, doc: Doc) -> Result<ByEnvironment<T>> {
        Ok(self.latest(doc).await?.map(|(_, d)| d).unwrap_or_default())
    }

    /// The newest version of `doc` and its number, or `None` if it was never written.
    pub async fn latest<T: DeserializeOwned>(&self, doc: Doc) -> Result<Option<(u64, T)>> {
        self.latest_in(&self.paths.doc_dir(doc)).await
    }

    /// [`Docs::latest`] of the document whose versions live in `dir` (a config document's
    /// directory, or a state document's such as [`Paths::export_state`]).
    pub async fn latest_in<T: DeserializeOwned>(&self, dir: &Path) -> Result<Option<(u64, T)>> {
        // A version can vanish between list and get when a writer prunes; list again then.
        for _ in 0..MAX_ATTEMPTS {
            let Some(version) = self.latest_version(dir).await? else {
                return Ok(None);
            };
            match self.store.get(&Paths::version_in(dir, version)).await {
                Ok(got) => {
                    let bytes = got.bytes().await?;
                    let value = serde_json::from_slice(&bytes)?;
                    return Ok(Some((version, value)));
                }
                Err(object_store::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        Err(Error::Unavailable(format!("document {dir} keeps changing")))
    }

    /// Applies `change` to the newest version and writes the result as the next version.
    /// `change` may run several times when other writers race; it must be a pure function
    /// of its input. Returns the version written and the new value.
    pub async fn update<T, F>(&self, doc: Doc, change: F) -> Result<(u64, T)>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Option<T>) -> Result<T>,
    {
        self.update_in(&self.paths.doc_dir(doc), change).await
    }

    /// [`Docs::update`] of the document whose versions live in `dir`.
    pub async fn update_in<T, F>(&self, dir: &Path, mut change: F) -> Result<(u64, T)>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut(Option<T>) -> Result<T>,
    {
        for _ in 0..MAX_ATTEMPTS {
            let current = self.latest_in::<T>(dir).await?;
            let next_version = current.as_ref().map_or(1, |(v, _)| v + 1);
            let value = change(current.map(|(_, v)| v))?;
            if self.create_version(dir, next_version, &value).await? {
                return Ok((next_version, value));
            }
        }
        Err(Error::Unavailable(format!(
            "document {dir}: too many concurrent writers"
        )))
    }

    /// Writes `value` as version `version` of the document in `dir` if no writer has written
    /// that version yet (`PutMode::Create`). Returns whether this call created it; `false`
    /// means another writer won the race and the caller re-reads.
    pub async fn create_version<T: Serialize>(
        &self,
        dir: &Path,
        version: u64,
        value: &T,
    ) -> Result<bool> {
        let body = serde_json::to_vec_pretty(value)?;
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        let key = Paths::version_in(dir, version);
        match self
            .store
            .put_opts(&key, PutPayload::from(body), opts)
            .await
        {
            Ok(_) => {
                self.prune(dir, version).await;
                Ok(true)
            }
            Err(object_store::Error::AlreadyExists { .. }) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes every version of the document in `dir` (a state document whose owner is gone).
    pub async fn delete_in(&self, dir: &Path) -> Result<()> {
        let metas: Vec<_> = self.store.list(Some(dir)).try_collect().await?;
        for m in metas {
            match self.store.delete(&m.location).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }

    /// Deletes versions older than the last [`KEEP_VERSIONS`]; failures are harmless.
    async fn prune(&self, dir: &Path, newest: u64) {
        if newest <= KEEP_VERSIONS {
            return;
        }
        let old = newest - KEEP_VERSIONS;
        // Only the one version that just fell out of the window: each write prunes one.
        let _ = self.store.delete(&Paths::version_in(dir, old)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use url::Url;

    fn docs() -> Docs {
        Docs::new(
            Arc::new(InMemory::new()),
            Paths::new(Url::parse("memory:///t/").unwrap()),
        )
    }

    #[tokio::test]
    async fn updates_create_increasing_versions() {
        let d = docs();
        assert!(d.latest::<Vec<u32>>(Doc::ApiKeys).await.unwrap().is_none());
        let (v1, _) = d
            .update(Doc::ApiKeys, |cur: Option<Vec<u32>>| {
                let mut v = cur.unwrap_or_default();
                v.push(1);
                Ok(v)
            })
            .await
            .unwrap();
        let (v2, val) = d
            .update(Doc::ApiKeys, |cur: Option<Vec<u32>>| {
                let mut v = cur.unwrap_or_default();
                v.push(2);
                Ok(v)
            })
            .await
            .unwrap();
        assert_eq!((v1, v2), (1, 2));
        assert_eq!(val, vec![1, 2]);
        let (v, latest) = d.latest::<Vec<u32>>(Doc::ApiKeys).await.unwrap().unwrap();
        assert_eq!((v, latest), (2, vec![1, 2]));
    }

    #[tokio::test]
    async fn concurrent_writers_lose_no_update() {
        let d = docs();
        let mut tasks = Vec::new();
        for i in 0..8u32 {
            let d = d.clone();
            tasks.push(tokio::spawn(async move {
                d.update(Doc::Environments, move |cur: Option<Vec<u32>>| {
                    let mut v = cur.unwrap_or_default();
                    v.push(i);
                    Ok(v)
                })
                .await
                .unwrap()
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        let (_, mut all) = d
            .latest::<Vec<u32>>(Doc::Environments)
            .await
            .unwrap()
            .unwrap();
        all.sort();
        assert_eq!(all, (0..8).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn old_versions_are_pruned() {
        let d = docs();
        for i in 0..30u32 {
            d.update(Doc::ApiKeys, move |_: Option<u32>| Ok(i))
                .await
                .unwrap();
        }
        let (v, val) = d.latest::<u32>(Doc::ApiKeys).await.unwrap().unwrap();
        assert_eq!((v, val), (30, 29));
        let n: Vec<_> = d
            .store
            .list(Some(&d.paths.doc_dir(Doc::ApiKeys)))
            .try_collect()
            .await
            .unwrap();
        assert_eq!(n.len() as u64, KEEP_VERSIONS);
    }
}
