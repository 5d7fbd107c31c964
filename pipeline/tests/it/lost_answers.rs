//! Deterministic storage faults at one place each, for the paths the random fault run
//! (`chaos`) found: a write that lands but whose answer is lost.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};
use serde_json::json;

use crate::harness::{Backend, TestStore, post_json};
use crate::webhooks::{Receiver, node_without_worker};

/// What [`LoseFirstAnswer`] did and may do, shared with the test.
#[derive(Debug, Default)]
struct Switch {
    /// Answers lost so far (at most one).
    lost: AtomicU64,
    /// While set, puts after the lost one fail before writing.
    held: AtomicBool,
}

/// Puts to paths containing `pattern`: the first lands but answers an error (its answer
/// was lost); the next ones fail before writing while the switch is held.
#[derive(Debug)]
struct LoseFirstAnswer {
    inner: Arc<dyn ObjectStore>,
    pattern: &'static str,
    switch: Arc<Switch>,
}

impl fmt::Display for LoseFirstAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "LoseFirstAnswer({})", self.inner)
    }
}

fn injected(path: &Path) -> object_store::Error {
    object_store::Error::Generic {
        store: "test",
        source: format!("injected: {path}").into(),
    }
}

#[async_trait]
impl ObjectStore for LoseFirstAnswer {
    async fn put_opts(
        &self,
        path: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        if !path.as_ref().contains(self.pattern) {
            return self.inner.put_opts(path, payload, opts).await;
        }
        if self.switch.lost.load(Ordering::SeqCst) == 0 {
            self.inner.put_opts(path, payload, opts).await?;
            self.switch.lost.fetch_add(1, Ordering::SeqCst);
            return Err(injected(path));
        }
        if self.switch.held.load(Ordering::SeqCst) {
            return Err(injected(path));
        }
        self.inner.put_opts(path, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        path: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.inner.put_multipart_opts(path, opts).await
    }

    async fn get_opts(&self, path: &Path, options: GetOptions) -> Result<GetResult> {
        self.inner.get_opts(path, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

/// A webhook chunk whose write landed but answered an error, while more events arrived:
/// the worker writes that same chunk again (same webhook-ids) instead of cutting its
/// events again with the later ones into a chunk of another version, which left the
/// first one stored, to be sent after a restart under other ids (seen in the fault run:
/// 1,460 of 38,020 events delivered under a second webhook-id).
#[tokio::test(flavor = "multi_thread")]
async fn a_chunk_whose_write_answer_was_lost_is_sent_under_its_own_ids_only() {
    use tidemark::storage::Store;
    use tidemark::webhooks::subscription::Subscriptions;
    use tidemark::webhooks::{self, worker::Worker};

    let rx = Receiver::start(1).await;
    let ts = TestStore::new(Backend::Local);
    let (node, config) = node_without_worker(&ts);
    let plain = Store::open(&config.data, &config.storage.options).unwrap();
    let key = webhooks::master_key(&config, &plain).unwrap();
    Subscriptions::new(plain.clone())
        .create(
            "default",
            &json!({"url": rx.url("ok"), "max_events": 1000, "max_wait_ms": 0}),
            &key,
            -1,
            &|_| Ok(()),
        )
        .await
        .unwrap();
    let post = |prefix: &'static str| {
        let body = json!((0..5)
            .map(|i| json!({"event_id": format!("{prefix}-{i}"), "event_name": "signup", "user_id": "u"}))
            .collect::<Vec<_>>());
        let (url, ingest) = (node.events_url("default"), node.ingest_key().to_string());
        async move {
            let (s, _) = post_json(&url, Some(&ingest), &body.to_string()).await;
            assert_eq!(s, 202);
        }
    };
    post("a").await;

    let switch = Arc::new(Switch::default());
    switch.held.store(true, Ordering::SeqCst);
    let store = plain.clone().wrapped(|root| {
        Arc::new(LoseFirstAnswer {
            inner: root,
            pattern: "/chunks/",
            switch: switch.clone(),
        })
    });
    let run = |store: Store| {
        let worker = Worker::new(
            store,
            config.webhooks.clone(),
            webhooks::master_key(&config, &plain).unwrap(),
            webhooks::client(&config.webhooks).unwrap(),
            Arc::new(tidemark_sinks::clock::SystemClock),
        )
        .unwrap();
        let (stop, stop_rx) = tokio::sync::watch::channel(false);
        (stop, tokio::spawn(worker.run(stop_rx)))
    };
    let wait = |what: &str, done: &dyn Fn() -> bool| {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !done() {
            assert!(Instant::now() < deadline, "{what} did not happen");
            std::thread::sleep(Duration::from_millis(20));
        }
    };

    // The first chunk (the "a" events) lands, its answer lost; more events arrive while
    // the chunk cannot be written; then the store recovers.
    let (stop, running) = run(store);
    wait("the lost answer", &|| {
        switch.lost.load(Ordering::SeqCst) == 1
    });
    post("b").await;
    tokio::time::sleep(Duration::from_millis(800)).await;
    switch.held.store(false, Ordering::SeqCst);
    assert!(
        rx.wait("ok", 30, |r| r.iter().flat_map(|x| x.event_ids()).count()
            >= 10)
            .await
    );
    stop.send(true).unwrap();
    running.await.unwrap().unwrap();

    // A restart sends whatever chunks are still stored.
    let (stop, running) = run(plain.clone());
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.send(true).unwrap();
    running.await.unwrap().unwrap();

    let mut ids: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for r in rx.at("ok") {
        for e in r.event_ids() {
            ids.entry(e).or_default().insert(r.id.clone());
        }
    }
    assert_eq!(ids.len(), 10, "every event delivered: {ids:?}");
    let twice: Vec<_> = ids.iter().filter(|(_, w)| w.len() > 1).collect();
    assert!(
        twice.is_empty(),
        "events delivered under a second webhook-id: {twice:?}"
    );
    drop(node);
}
