//! Storage fault injection: an `ObjectStore` wrapper that fails, delays or loses the answer
//! of puts, conditional puts, gets, lists, copies, renames and deletes at configured rates,
//! so a whole `tidemark serve` can run on a misbehaving store (`[storage.faults]`, off by
//! default). Object stores write each object atomically, so a "partial write" here is the
//! realistic one: the write lands but its answer is lost (a timeout after the server
//! applied it), and the caller retries a write that already happened. Lists can fail part
//! way through.
//!
//! The kinds, per operation:
//! - reads (get, head, list): fail before anything is read (lists: after some entries);
//! - writes (put, conditional put, copy, rename, delete): half of the faults fail before
//!   the write, half after it (lost answer);
//! - any operation may first be delayed up to `max_delay`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::config::FaultConfig;
use async_trait::async_trait;
use futures::stream::{BoxStream, StreamExt};
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

/// What was injected so far.
#[derive(Debug, Default)]
pub struct FaultStats {
    pub operations: AtomicU64,
    pub failed_before: AtomicU64,
    pub lost_answers: AtomicU64,
    pub delayed: AtomicU64,
}

impl fmt::Display for FaultStats {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        write!(
            f,
            "{} operations, {} failed, {} answers lost after the write, {} delayed",
            get(&self.operations),
            get(&self.failed_before),
            get(&self.lost_answers),
            get(&self.delayed)
        )
    }
}

#[derive(Debug)]
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    config: FaultConfig,
    /// The Delta log whose first write aborts the process (`crash_on_commit_to`).
    crash_on: Option<Path>,
    pub stats: Arc<FaultStats>,
}

/// What happens to one operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Pass,
    FailBefore,
    /// Writes only: applied, then reported failed.
    FailAfter,
}

impl FaultyStore {
    /// `paths` places `crash_on_commit_to`'s Delta log.
    pub fn new(
        inner: Arc<dyn ObjectStore>,
        config: FaultConfig,
        paths: &super::paths::Paths,
    ) -> FaultyStore {
        let crash_on = (!config.crash_on_commit_to.is_empty())
            .then(|| paths.table_delta_log(&config.crash_on_commit_to));
        FaultyStore {
            inner,
            config,
            crash_on,
            stats: Arc::default(),
        }
    }

    /// Aborts the process before a write into the `crash_on_commit_to` log.
    fn crash_point(&self, location: &Path) {
        if let Some(log) = &self.crash_on
            && location.prefix_matches(log)
        {
            eprintln!("tidemark: crashing before the commit {location} (crash_on_commit_to)");
            std::process::abort();
        }
    }

    async fn fate(&self, write: bool) -> Fate {
        self.stats.operations.fetch_add(1, Ordering::Relaxed);
        if self.config.delay_rate > 0.0 && rand::random::<f64>() < self.config.delay_rate {
            self.stats.delayed.fetch_add(1, Ordering::Relaxed);
            let ms = self.config.max_delay.as_millis() as f64 * rand::random::<f64>();
            tokio::time::sleep(Duration::from_millis(ms as u64)).await;
        }
        if self.config.rate <= 0.0 || rand::random::<f64>() >= self.config.rate {
            return Fate::Pass;
        }
        if write && rand::random::<bool>() {
            self.stats.lost_answers.fetch_add(1, Ordering::Relaxed);
            Fate::FailAfter
        } else {
            self.stats.failed_before.fetch_add(1, Ordering::Relaxed);
            Fate::FailBefore
        }
    }
}

fn injected(what: &str, location: &Path) -> object_store::Error {
    object_store::Error::Generic {
        store: "faults",
        source: format!("injected fault: {what} {location}").into(),
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

/// Runs a write under its fate.
macro_rules! write_op {
    ($self:ident, $what:literal, $loc:expr, $op:expr) => {{
        $self.crash_point($loc);
        match $self.fate(true).await {
            Fate::FailBefore => Err(injected(concat!($what, " (not applied)"), $loc)),
            Fate::FailAfter => {
                $op.await?;
                Err(injected(concat!($what, " (applied, answer lost)"), $loc))
            }
            Fate::Pass => $op.await,
        }
    }};
}

#[async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        write_op!(
            self,
            "put",
            location,
            self.inner.put_opts(location, payload, opts)
        )
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.crash_point(location);
        match self.fate(false).await {
            Fate::Pass => self.inner.put_multipart_opts(location, opts).await,
            _ => Err(injected("multipart upload", location)),
        }
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        match self.fate(false).await {
            Fate::Pass => self.inner.get_opts(location, options).await,
            _ => Err(injected("get", location)),
        }
    }

    async fn get_ranges(
        &self,
        location: &Path,
        ranges: &[std::ops::Range<u64>],
    ) -> Result<Vec<bytes::Bytes>> {
        match self.fate(false).await {
            Fate::Pass => self.inner.get_ranges(location, ranges).await,
            _ => Err(injected("get ranges", location)),
        }
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        // Deletes are applied; some answers are lost.
        let (rate, stats) = (self.config.rate, self.stats.clone());
        self.inner
            .delete_stream(locations)
            .map(move |r| {
                stats.operations.fetch_add(1, Ordering::Relaxed);
                match r {
                    Ok(p) if rate > 0.0 && rand::random::<f64>() < rate / 2.0 => {
                        stats.lost_answers.fetch_add(1, Ordering::Relaxed);
                        Err(injected("delete (applied, answer lost)", &p))
                    }
                    other => other,
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let inner = self.inner.list(prefix);
        self.faulty_list(inner, prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        let inner = self.inner.list_with_offset(prefix, offset);
        self.faulty_list(inner, prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        match self.fate(false).await {
            Fate::Pass => self.inner.list_with_delimiter(prefix).await,
            _ => Err(injected("list", &prefix.cloned().unwrap_or_default())),
        }
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        write_op!(self, "copy", to, self.inner.copy_opts(from, to, options))
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        write_op!(
            self,
            "rename",
            to,
            self.inner.rename_opts(from, to, options)
        )
    }
}

impl FaultyStore {
    /// A listing that fails after a random number of entries, at the fault rate.
    fn faulty_list(
        &self,
        inner: BoxStream<'static, Result<ObjectMeta>>,
        prefix: Option<&Path>,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.stats.operations.fetch_add(1, Ordering::Relaxed);
        if self.config.rate <= 0.0 || rand::random::<f64>() >= self.config.rate {
            return inner;
        }
        self.stats.failed_before.fetch_add(1, Ordering::Relaxed);
        let after = rand::random::<u8>() as usize % 4;
        let err = injected("list (part way)", &prefix.cloned().unwrap_or_default());
        inner
            .take(after)
            .chain(futures::stream::once(async move { Err(err) }))
            .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::ObjectStoreExt;
    use object_store::memory::InMemory;

    fn paths() -> super::super::paths::Paths {
        super::super::paths::Paths::new(url::Url::parse("memory:///t/").unwrap())
    }

    #[tokio::test]
    async fn faults_fail_before_or_after_and_are_counted() {
        let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let store = FaultyStore::new(
            inner.clone(),
            FaultConfig {
                rate: 1.0,
                ..Default::default()
            },
            &paths(),
        );
        let mut landed = 0;
        for i in 0..200 {
            let p = Path::from(format!("o/{i}"));
            let r = store.put(&p, PutPayload::from_static(b"x")).await;
            let e = r.expect_err("every put fails at rate 1").to_string();
            assert!(e.contains("injected fault: put"), "{e}");
            if inner.head(&p).await.is_ok() {
                landed += 1;
                assert!(e.contains("applied, answer lost"), "{e}");
            }
        }
        // Half of the failed writes landed (binomial; 200 draws).
        assert!((60..=140).contains(&landed), "{landed}");
        assert!(store.get(&Path::from("o/0")).await.is_err());
        let stats = &store.stats;
        assert_eq!(stats.operations.load(Ordering::Relaxed), 201);
        assert_eq!(stats.lost_answers.load(Ordering::Relaxed), landed);

        let off = FaultyStore::new(inner, FaultConfig::default(), &paths());
        assert!(!off.config.is_on());
        let listed: Vec<_> = off.list(Some(&Path::from("o"))).collect().await;
        assert_eq!(listed.len() as u64, landed);
        assert!(listed.iter().all(Result::is_ok));
    }
}
