//! Every storage key and table URL is built here and nowhere else.

use object_store::path::Path;
use url::Url;

/// Builds keys relative to the storage root.
#[derive(Clone, Debug)]
pub struct Paths {
    /// The root as a URL with a trailing slash (`file:///…/`, `s3://bucket/prefix/`, `memory:///name/`).
    base: Url,
}

/// The config documents kept under `_tidemark/config/`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Doc {
    Environments,
    ApiKeys,
    /// Custom field definitions of every environment.
    Fields,
    /// Erasure audit entries (no personal data).
    Erasures,
    /// Segment definitions of every environment.
    Segments,
    /// Webhook subscriptions of every environment (secrets encrypted).
    Webhooks,
    /// Scheduled exports of every environment (credentials encrypted).
    Exports,
    /// Flows of every environment (drafts; published versions are state documents).
    Flows,
}

impl Doc {
    fn dir(self) -> &'static str {
        match self {
            Doc::Environments => "environments",
            Doc::ApiKeys => "api_keys",
            Doc::Fields => "fields",
            Doc::Erasures => "erasures",
            Doc::Segments => "segments",
            Doc::Webhooks => "webhooks",
            Doc::Exports => "exports",
            Doc::Flows => "flows",
        }
    }
}

impl Paths {
    pub fn new(base: Url) -> Paths {
        Paths { base }
    }

    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The URL of Delta table `name`, with a trailing slash.
    pub fn table_url(&self, name: &str) -> Url {
        // `name` is one of our fixed table names; join cannot fail on it.
        self.base
            .join(&format!("{name}/"))
            .unwrap_or_else(|_| self.base.clone())
    }

    /// The root's path inside the object store.
    pub fn root(&self) -> Path {
        Path::from_url_path(self.base.path()).unwrap_or_default()
    }

    /// Directory holding the versions of a config document.
    pub fn doc_dir(&self, doc: Doc) -> Path {
        self.root().join("_tidemark").join("config").join(doc.dir())
    }

    /// One version of a config document.
    pub fn doc_version(&self, doc: Doc, version: u64) -> Path {
        Self::version_in(&self.doc_dir(doc), version)
    }

    /// Version `version` of the versioned document whose directory is `dir`.
    pub fn version_in(dir: &Path, version: u64) -> Path {
        dir.clone().join(format!("{version:020}.json"))
    }

    /// Parses a version back out of a key made by [`Paths::doc_version`].
    pub fn parse_doc_version(path: &Path) -> Option<u64> {
        path.filename()?.strip_suffix(".json")?.parse().ok()
    }

    /// The last run report of job `name` (informational; its cursor is a Delta `txn`).
    pub fn job_state(&self, name: &str) -> Path {
        self.root()
            .join("_tidemark")
            .join("state")
            .join("jobs")
            .join(format!("{name}.json"))
    }

    /// The delivery state of one webhook subscription: `cursor.json`, `chunks/`, `failed/`.
    pub fn webhook_state(&self, environment: &str, subscription: &str) -> Path {
        self.root()
            .join("_tidemark")
            .join("state")
            .join("webhooks")
            .join(environment)
            .join(subscription)
    }

    /// The progress of one scheduled export: a versioned document (create-only numbered
    /// versions in this directory, as config documents are), since the worker and the
    /// API's resume both change it.
    pub fn export_state(&self, environment: &str, export: &str) -> Path {
        self.export_states(environment).join(export)
    }

    /// Where exports before versioned state kept theirs (`<export>.json`, one overwritten
    /// object), read once when no version exists yet.
    pub fn legacy_export_state(&self, environment: &str, export: &str) -> Path {
        self.export_states(environment)
            .join(format!("{export}.json"))
    }

    fn export_states(&self, environment: &str) -> Path {
        self.root()
            .join("_tidemark")
            .join("state")
            .join("exports")
            .join(environment)
    }

    /// The state of one environment's flows: `versions/<flow>/` (published versions,
    /// create-only), `runs/<flow>/<run>.json`, `inbox/` (starts and commands for the
    /// worker), `keys/` (idempotency keys), `due/<minute>/<flow>.<run>` (when runs are
    /// due), `waits/<user>/<flow>.<run>` (runs waiting for a user's event) and
    /// `entry/<flow>/<user>.json` (entry-rule state). `user` is a hash of the user id.
    pub fn flow_state(&self, environment: &str) -> Path {
        self.root()
            .join("_tidemark")
            .join("state")
            .join("flows")
            .join(environment)
    }

    /// The published versions of `flow` (one create-only document per version).
    pub fn flow_versions(&self, environment: &str, flow: &str) -> Path {
        self.flow_state(environment).join("versions").join(flow)
    }

    /// The runs of `flow`.
    pub fn flow_runs(&self, environment: &str, flow: &str) -> Path {
        self.flow_state(environment).join("runs").join(flow)
    }

    /// One run's state.
    pub fn flow_run(&self, environment: &str, flow: &str, run: &str) -> Path {
        self.flow_runs(environment, flow)
            .join(format!("{run}.json"))
    }

    /// Starts and commands not yet taken in by the flow worker.
    pub fn flow_inbox(&self, environment: &str) -> Path {
        self.flow_state(environment).join("inbox")
    }

    /// An idempotency key of a start (`hash`: of the flow and the key).
    pub fn flow_key(&self, environment: &str, hash: &str) -> Path {
        self.flow_state(environment)
            .join("keys")
            .join(format!("{hash}.json"))
    }

    /// The due index; `minute` is `YYYYMMDDHHMM`, entries are named `<flow>.<run>`.
    pub fn flow_due(&self, environment: &str) -> Path {
        self.flow_state(environment).join("due")
    }

    /// Runs waiting for an event of the user whose id hashes to `user`.
    pub fn flow_waits(&self, environment: &str, user: &str) -> Path {
        self.flow_state(environment).join("waits").join(user)
    }

    /// The entry-rule state of one user in `flow`.
    pub fn flow_entry(&self, environment: &str, flow: &str, user: &str) -> Path {
        self.flow_state(environment)
            .join("entry")
            .join(flow)
            .join(format!("{user}.json"))
    }

    /// The flow worker's cursor and pass journal (all environments).
    pub fn flow_worker(&self) -> Path {
        self.root()
            .join("_tidemark")
            .join("state")
            .join("flow_worker")
    }

    /// The versions of lease `name` (one worker per store holds it; see `storage::lease`).
    pub fn lease(&self, name: &str) -> Path {
        self.root().join("_tidemark").join("leases").join(name)
    }

    /// A file of a Delta table, from an `add` action's relative path (a URI path,
    /// percent-encoded).
    pub fn table_file(&self, table: &str, relative: &str) -> Path {
        let full = format!("{}/{table}/{relative}", self.root());
        Path::from_url_path(&full).unwrap_or_else(|_| Path::from(full))
    }

    /// Top-level entries of the root, to discover tables.
    pub fn table_delta_log(&self, name: &str) -> Path {
        // Internal tables live below `_tidemark/` (`_tidemark/pending/profiles`).
        name.split('/')
            .fold(self.root(), |path, part| path.join(part))
            .join("_delta_log")
    }
}

/// Local write-ahead-log file names.
pub mod wal {
    use std::path::{Path, PathBuf};

    /// The local WAL directory when the data root is the local directory `data_dir`.
    pub fn default_dir_in(data_dir: &Path) -> PathBuf {
        data_dir.join("_tidemark").join("wal")
    }

    /// The segment file of sequence number `seq`.
    pub fn segment(dir: &Path, seq: u64) -> PathBuf {
        dir.join(format!("{seq:020}.wal"))
    }

    /// Parses a sequence number out of a segment file name.
    pub fn parse_segment(name: &str) -> Option<u64> {
        name.strip_suffix(".wal")?.parse().ok()
    }

    /// The lock file that keeps a second process out of the directory.
    pub fn lock_file(dir: &Path) -> PathBuf {
        dir.join("LOCK")
    }

    /// The file holding this node's id (the Delta `txn` app id of its flusher).
    pub fn node_id_file(dir: &Path) -> PathBuf {
        dir.join("node-id")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn doc_versions_round_trip() {
        let p = Paths::new(Url::parse("s3://bucket/prefix/").unwrap());
        let key = p.doc_version(Doc::ApiKeys, 42);
        assert_eq!(
            key.as_ref(),
            "prefix/_tidemark/config/api_keys/00000000000000000042.json"
        );
        assert_eq!(Paths::parse_doc_version(&key), Some(42));
        assert_eq!(p.table_url("events").as_str(), "s3://bucket/prefix/events/");
    }

    #[test]
    fn internal_tables_nest_below_tidemark() {
        let p = Paths::new(Url::parse("s3://bucket/prefix/").unwrap());
        let name = "_tidemark/pending/profiles";
        assert_eq!(
            p.table_url(name).as_str(),
            "s3://bucket/prefix/_tidemark/pending/profiles/"
        );
        assert_eq!(
            p.table_delta_log(name).as_ref(),
            "prefix/_tidemark/pending/profiles/_delta_log"
        );
    }

    #[test]
    fn wal_segment_names_round_trip() {
        let f = wal::segment(std::path::Path::new("/w"), 7);
        let name = f.file_name().unwrap().to_str().unwrap();
        assert_eq!(wal::parse_segment(name), Some(7));
        assert_eq!(wal::parse_segment("node-id"), None);
    }
}
