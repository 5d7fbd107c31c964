//! The composition of a node, above the doors: assemble the configuration's parts, open
//! the store, bootstrap the first environment, serve HTTP at once (`/readyz` says when
//! recovery is done), start the Postgres and Flight SQL doors, replay the WAL, then run
//! every background pass until shutdown. Shutdown stops accepting requests, lets in-flight
//! ones finish, then flushes every acknowledged event to the table.
//!
//! - [`doors`]: the HTTP API and the SQL doors.
//! - [`ingest`]: WAL replay, the dedup index, the log and the flusher.
//! - [`passes`]: where every background pass of a node is started (key refresh,
//!   compaction, retention and VACUUM, segments, the job loop, the sink workers).
//! - [`refresh`]: the job loop (jobs after commits, then the segments).

pub mod doors;
pub mod ingest;
pub mod passes;
pub mod refresh;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Notify, OnceCell};
use tokio::task::JoinHandle;

use crate::auth::{KeyAdmin, KeyCache, Role};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::server::AppState;
use crate::storage::Store;
use crate::storage::docs::Docs;
use crate::supervisor::Supervisor;
use crate::{Error, Result};

pub use ingest::wal_dir;

/// On an empty store: creates environment `default` with an admin and an ingest key, and
/// prints them once with a curl example.
async fn bootstrap(admin: &KeyAdmin, addr: SocketAddr) -> Result<()> {
    if !admin.environments().await?.is_empty() {
        return Ok(());
    }
    if !admin.ensure_environment("default").await? {
        return Ok(()); // another node won the race and printed the keys
    }
    let admin_key = admin.create_key("default", Role::Admin).await?;
    let ingest_key = admin.create_key("default", Role::Ingest).await?;
    println!("tidemark: created environment 'default'");
    println!("  admin key:  {}", admin_key.token);
    println!("  ingest key: {}", ingest_key.token);
    println!("These keys are shown only now; keep them (more with `tidemark keys create`).");
    println!();
    println!("Send an event:");
    println!(
        "  curl -X POST http://{addr}/v1/default/events \\\n    -H 'Authorization: Bearer {}' -H 'Content-Type: application/json' \\\n    -d '[{{\"event_name\":\"app-opened\",\"user_id\":\"user-1\",\"platform\":\"ios\"}}]'",
        ingest_key.token
    );
    println!("Then query it:");
    println!("  tidemark sql \"select event_name, user_id, received_at from events\"");
    println!();
    Ok(())
}

/// Serves on `listener` until `shutdown` completes, then flushes and returns.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let addr = listener.local_addr()?;
    let store = Store::open_config(&config.data, &config.storage)?;
    let keys = open_keys(&store, addr).await?;
    let state = Arc::new(app_state(&config, &store, keys)?);

    let mut sup = Supervisor::new();
    let http = doors::serve_http(&sup, listener, state.clone(), shutdown);
    println!("tidemark: listening on http://{addr}");
    println!("tidemark: console at http://{addr}/console/ (sign in with a read or admin key)");
    tracing::info!(%addr, data = %config.data, "listening");
    let started = async {
        let sql_doors = doors::start_sql(&config, &state).await?;
        let flusher = with_retries("recovery", || {
            ingest::start(&config, &state, sup.stop_signal())
        })
        .await;
        match flusher {
            Ok(f) => Ok((sql_doors, f)),
            Err(e) => {
                sql_doors.iter().for_each(JoinHandle::abort);
                Err(e)
            }
        }
    }
    .await;
    let (sql_doors, flusher) = match started {
        Ok(s) => s,
        Err(e) => {
            sup.stop();
            let _ = http.await;
            return Err(e);
        }
    };
    passes::start(&mut sup, &config, &state);
    passes::start_sinks(&mut sup, &config, &store, &state.webhooks, &state.exports);
    println!("tidemark: ready");
    stop(http, sql_doors, flusher, sup, &store).await
}

/// Bootstraps an empty store, then loads the API keys.
async fn open_keys(store: &Store, addr: SocketAddr) -> Result<Arc<KeyCache>> {
    let admin = KeyAdmin::new(Docs::new(store.object_store(), store.paths().clone()));
    with_retries("bootstrap", || bootstrap(&admin, addr)).await?;
    let keys = with_retries("loading the API keys", || KeyCache::load(admin.clone())).await?;
    Ok(Arc::new(keys))
}

/// What the doors' handlers share, assembled from the configuration.
fn app_state(config: &Config, store: &Store, keys: Arc<KeyCache>) -> Result<AppState> {
    let webhooks = crate::webhooks::Context::new(config, store)?;
    if let Err(e) = &webhooks.key {
        tracing::warn!(error = %e, "webhooks are unavailable");
    }
    Ok(AppState {
        store: store.clone(),
        keys,
        ingestor: OnceCell::new(),
        metrics: Arc::new(Metrics::new()),
        limits: config.limits.clone(),
        shutting_down: AtomicBool::new(false),
        profile_writes: Arc::new(Notify::new()),
        segment_writes: Arc::new(Notify::new()),
        job_options: crate::jobs::JobOptions::from_config(config),
        webhooks,
        exports: crate::exports::Context::new(config, store)?,
        query: Arc::new(crate::query::Engine::new(
            store.clone(),
            config.query.clone(),
        )),
    })
}

/// After the HTTP door has stopped: stops the SQL doors, flushes what was acknowledged,
/// then stops every background task in the order started (the webhook worker commits the
/// attempts it logged before it stops).
async fn stop(
    http: JoinHandle<std::io::Result<()>>,
    sql_doors: Vec<JoinHandle<()>>,
    flusher: JoinHandle<Result<()>>,
    sup: Supervisor,
    store: &Store,
) -> Result<()> {
    let served = http
        .await
        .map_err(|e| Error::Unavailable(format!("http server task: {e}")))?;
    for door in sql_doors {
        door.abort();
    }
    // No request is in flight any more: flush what was acknowledged.
    sup.stop();
    let flushed = flusher
        .await
        .map_err(|e| Error::Unavailable(format!("flusher task: {e}")))?;
    sup.shutdown(SHUTDOWN_GRACE).await;
    served?;
    flushed?;
    if let Some(stats) = store.fault_stats() {
        println!("tidemark: storage faults: {stats}");
    }
    println!("tidemark: stopped");
    Ok(())
}

/// Runs a startup step that reads the store again after a failure of the store (a store
/// that fails one request in a while must not keep a node down), up to 8 times with
/// backoff; a refusal of the configuration or of the data is returned at once.
async fn with_retries<T, F, Fut>(what: &str, mut step: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let mut delay = Duration::from_millis(100);
    let mut attempt = 1;
    loop {
        match step().await {
            Ok(v) => return Ok(v),
            Err(e @ (Error::Config(_) | Error::Invalid(_) | Error::Wal { .. })) => return Err(e),
            Err(e) if attempt >= 8 => return Err(e),
            Err(e) => {
                tracing::warn!(step = what, attempt, error = %e, "startup step failed; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
                attempt += 1;
            }
        }
    }
}

/// How long shutdown waits for each background task.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
