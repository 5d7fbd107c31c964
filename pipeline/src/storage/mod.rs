//! The storage root: one object store that holds every table, config document and cursor.
//!
//! - [`paths`]: the only place that builds storage keys and table URLs.
//! - [`docs`]: versioned JSON config documents written create-only, newest wins.
//! - [`events_table`]: the `events` Delta table (schema, create, idempotent append, compaction).
//! - [`retention`]: deleting events past their retention, and VACUUM of every table.
//! - [`registry`]: the one registry of config documents (exports, webhook subscriptions,
//!   segments): read, create, change, pause, delete; each kind validates its own input.
//! - [`lease`]: the leases that give each singleton worker one process per store.
//! - [`faults`]: storage fault injection for tests and drills (`[storage.faults]`).

pub mod docs;
pub mod events_table;
pub mod faults;
pub mod lease;
pub mod paths;
pub mod registry;
pub mod retention;

use std::collections::{BTreeMap, HashMap};

use crate::config::StorageConfig;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};

use deltalake::kernel::StructType;
use deltalake::kernel::engine::arrow_conversion::TryFromArrow;
use deltalake::logstore::{
    LogStore, LogStoreFactory, ObjectStoreRef, StorageConfig as DeltaStorageConfig,
    default_logstore, logstore_factories,
};
use deltalake::protocol::SaveMode;
use deltalake::{DeltaTable, DeltaTableBuilder};
use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use url::Url;

pub use paths::Paths;

use crate::{Error, Result};

/// What [`Store::load_or_create_table`] creates.
pub struct TableSpec<'a> {
    pub name: &'a str,
    pub comment: Option<&'a str>,
    pub schema: &'a arrow::datatypes::Schema,
    pub partition_columns: &'a [&'a str],
    /// The columns whose min/max the Delta log keeps (comma-separated).
    pub stats_columns: &'a str,
}

/// An opened storage root.
#[derive(Clone, Debug)]
pub struct Store {
    /// The object store, rooted at the bucket (or filesystem) root.
    root: Arc<dyn ObjectStore>,
    paths: Paths,
    /// The local directory when the root is on the local filesystem.
    local_dir: Option<PathBuf>,
    /// Counts of injected faults, when `[storage.faults]` is on.
    faults: Option<Arc<faults::FaultStats>>,
}

impl Store {
    /// [`Store::open`] with the options of `[storage]`, on a [`faults::FaultyStore`] when
    /// `[storage.faults]` is on (its counts are in [`Store::fault_stats`]).
    pub fn open_config(data: &str, storage: &StorageConfig) -> Result<Store> {
        let mut store = Store::open(data, &storage.options)?;
        if storage.faults.is_on() {
            tracing::warn!(faults = ?storage.faults, "storage fault injection is on");
            let mut stats = None;
            let paths = store.paths.clone();
            store = store.wrapped(|root| {
                let faulty = faults::FaultyStore::new(root, storage.faults.clone(), &paths);
                stats = Some(faulty.stats.clone());
                Arc::new(faulty)
            });
            store.faults = stats;
        }
        Ok(store)
    }

    /// This store with every operation (Delta tables' included) going through `wrap` of
    /// its object store: fault injection, and tests that make one operation misbehave.
    pub fn wrapped(
        mut self,
        wrap: impl FnOnce(Arc<dyn ObjectStore>) -> Arc<dyn ObjectStore>,
    ) -> Store {
        self.root = wrap(self.root.clone());
        self
    }

    /// What fault injection did so far (`None`: it is off).
    pub fn fault_stats(&self) -> Option<&faults::FaultStats> {
        self.faults.as_deref()
    }

    /// Opens `data`: a local directory (created if missing), `file://`, `s3://bucket/prefix`
    /// or `memory://name` (process-local, shared by every open of the same URL).
    pub fn open(data: &str, options: &BTreeMap<String, String>) -> Result<Store> {
        let data = data.trim();
        if data.is_empty() {
            return Err(Error::Invalid("data: must not be empty".into()));
        }
        match data.split_once("://") {
            None => Self::open_local(PathBuf::from(data)),
            Some(("file", _)) => {
                let url = parse_url(data)?;
                let dir = url
                    .to_file_path()
                    .map_err(|_| Error::Invalid(format!("data: {data} is not a valid file URL")))?;
                Self::open_local(dir)
            }
            Some(("memory", _)) => {
                let url = parse_url(data)?;
                let key = format!("{}{}", url.host_str().unwrap_or(""), url.path());
                static STORES: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
                let mut stores = STORES
                    .get_or_init(Default::default)
                    .lock()
                    .map_err(|_| Error::Unavailable("memory store registry poisoned".into()))?;
                let store = stores.entry(key.clone()).or_default().clone();
                let base = Url::parse(&format!("memory:///{}/", key.trim_matches('/')))
                    .map_err(|e| Error::Invalid(format!("data: {e}")))?;
                Ok(Store {
                    root: store,
                    paths: Paths::new(base),
                    local_dir: None,
                    faults: None,
                })
            }
            Some(("s3" | "s3a", _)) => {
                let url = parse_url(data)?;
                let bucket = url
                    .host_str()
                    .filter(|b| !b.is_empty())
                    .ok_or_else(|| Error::Invalid(format!("data: {data} has no bucket")))?;
                let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
                for (k, v) in options {
                    let key: AmazonS3ConfigKey = k
                        .parse()
                        .map_err(|_| Error::Config(format!("storage.{k}: unknown S3 option")))?;
                    builder = builder.with_config(key, v);
                }
                let s3 = builder.build()?;
                register_s3_logstore();
                let mut base = url.clone();
                base.set_scheme("s3")
                    .map_err(|_| Error::Invalid(format!("data: {data}")))?;
                if !base.path().ends_with('/') {
                    let p = format!("{}/", base.path());
                    base.set_path(&p);
                }
                Ok(Store {
                    root: Arc::new(s3),
                    paths: Paths::new(base),
                    local_dir: None,
                    faults: None,
                })
            }
            Some((scheme, _)) => Err(Error::Invalid(format!(
                "data: unsupported storage scheme '{scheme}://' (use a directory, file://, s3:// or memory://)"
            ))),
        }
    }

    fn open_local(dir: PathBuf) -> Result<Store> {
        std::fs::create_dir_all(&dir).map_err(|e| {
            Error::Invalid(format!(
                "data: cannot create directory {}: {e}",
                dir.display()
            ))
        })?;
        let dir = dir.canonicalize()?;
        let base = Url::from_directory_path(&dir)
            .map_err(|_| Error::Invalid(format!("data: {} is not absolute", dir.display())))?;
        Ok(Store {
            root: Arc::new(LocalFileSystem::new()),
            paths: Paths::new(base),
            local_dir: Some(dir),
            faults: None,
        })
    }

    pub fn object_store(&self) -> Arc<dyn ObjectStore> {
        self.root.clone()
    }

    /// The config documents of this store.
    pub fn docs(&self) -> docs::Docs {
        docs::Docs::new(self.root.clone(), self.paths.clone())
    }

    pub fn paths(&self) -> &Paths {
        &self.paths
    }

    /// The local directory of the root, when it is on the local filesystem.
    pub fn local_dir(&self) -> Option<&std::path::Path> {
        self.local_dir.as_deref()
    }

    /// A handle on the Delta table `name` (not loaded; it may not exist yet).
    pub fn delta_table(&self, name: &str) -> Result<DeltaTable> {
        let url = self.paths.table_url(name);
        if let Some(dir) = &self.local_dir {
            // The kernel refuses a local table location that does not exist yet.
            std::fs::create_dir_all(dir.join(name))?;
        }
        let table = DeltaTableBuilder::from_url(url.clone())?
            .with_storage_backend(self.root.clone(), url)
            .build()?;
        Ok(table)
    }

    /// Opens the table `spec` describes, creating it (empty) first if it does not exist.
    /// Column statistics are kept for `spec.stats_columns` only: min/max of user ids or
    /// values in the Delta log would outlive an erasure.
    pub async fn load_or_create_table(&self, spec: &TableSpec<'_>) -> Result<DeltaTable> {
        if let Some(t) = self.load_table(spec.name).await? {
            return Ok(t);
        }
        let columns = StructType::try_from_arrow(spec.schema)?;
        let mut create = self
            .delta_table(spec.name)?
            .create()
            .with_table_name(spec.name)
            .with_columns(columns.fields().cloned())
            .with_partition_columns(spec.partition_columns.iter().copied())
            .with_configuration_property(
                deltalake::TableProperty::DataSkippingStatsColumns,
                Some(spec.stats_columns),
            )
            .with_save_mode(SaveMode::Ignore);
        if let Some(comment) = spec.comment {
            create = create.with_comment(comment);
        }
        create.await?;
        // Reload: with `Ignore`, a racing creator may have won.
        self.load_table(spec.name)
            .await?
            .ok_or_else(|| Error::NotFound(format!("{} vanished after create", spec.name)))
    }

    /// Opens table `name` at its latest version, or `None` when it does not exist yet.
    pub async fn load_table(&self, name: &str) -> Result<Option<DeltaTable>> {
        let log = self.paths.table_delta_log(name);
        let mut listing = self.root.list(Some(&log));
        if futures::StreamExt::next(&mut listing)
            .await
            .transpose()?
            .is_none()
        {
            return Ok(None);
        }
        drop(listing);
        let mut table = self.delta_table(name)?;
        match table.load().await {
            Ok(()) => Ok(Some(table)),
            Err(deltalake::DeltaTableError::NotATable(_)) => Ok(None),
            Err(e) => Err(e.into()),
        }
    }
}

/// deltalake resolves a log store by URL scheme even when we hand it the object store;
/// `s3://` gets the default log store (commits by conditional put, `If-None-Match`), which
/// needs no DynamoDB lock and no AWS SDK.
struct S3LogStoreFactory;

impl LogStoreFactory for S3LogStoreFactory {
    fn with_options(
        &self,
        prefixed_store: ObjectStoreRef,
        root_store: ObjectStoreRef,
        location: &Url,
        options: &DeltaStorageConfig,
    ) -> deltalake::DeltaResult<Arc<dyn LogStore>> {
        Ok(default_logstore(
            prefixed_store,
            root_store,
            location,
            options,
        ))
    }
}

fn register_s3_logstore() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        if let Ok(scheme) = Url::parse("s3://") {
            logstore_factories().insert(scheme, Arc::new(S3LogStoreFactory));
        }
    });
}

fn parse_url(data: &str) -> Result<Url> {
    Url::parse(data).map_err(|e| Error::Invalid(format!("data: '{data}' is not a valid URL: {e}")))
}

/// Top-level directories of the store root that may hold tables (the `load_table` of
/// each tells whether it does).
pub async fn table_dirs(store: &Store) -> Result<Vec<String>> {
    let root = store.paths().root();
    let listing = store
        .object_store()
        .list_with_delimiter(Some(&root))
        .await?;
    let mut names = Vec::new();
    for dir in listing.common_prefixes {
        let Some(name) = dir.filename().map(str::to_string) else {
            continue;
        };
        if !name.starts_with('_') && !name.starts_with('.') {
            names.push(name);
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsupported_schemes_are_named() {
        let err = Store::open("ftp://x/y", &BTreeMap::new()).unwrap_err();
        assert!(err.to_string().contains("'ftp://'"), "{err}");
    }

    #[test]
    fn memory_stores_are_shared_by_url() {
        let a = Store::open("memory://shared-test", &BTreeMap::new()).unwrap();
        let b = Store::open("memory://shared-test", &BTreeMap::new()).unwrap();
        assert!(Arc::ptr_eq(&a.object_store(), &b.object_store()));
        let c = Store::open("memory://other-test", &BTreeMap::new()).unwrap();
        assert!(!Arc::ptr_eq(&a.object_store(), &c.object_store()));
    }

    #[test]
    fn local_dirs_become_file_urls() {
        let dir = tempfile::tempdir().unwrap();
        let s = Store::open(dir.path().to_str().unwrap(), &BTreeMap::new()).unwrap();
        let url = s.paths().table_url("events");
        assert_eq!(url.scheme(), "file");
        assert!(url.path().ends_with("/events/"), "{url}");
    }
}
