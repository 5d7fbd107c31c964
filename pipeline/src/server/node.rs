//! Running a node: open the store, bootstrap the first environment, serve HTTP at once
//! (`/readyz` says when recovery is done), replay the WAL, then run the log, the flusher,
//! compaction and key refresh until shutdown. Shutdown stops accepting requests, lets
//! in-flight ones finish, then flushes every acknowledged event to the table.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::{Notify, OnceCell, watch};

use super::{AppState, router};
use crate::auth::{KeyAdmin, KeyCache, Role};
use crate::config::{AckMode, Config};
use crate::ingest::dedup::Dedup;
use crate::ingest::flusher::Flusher;
use crate::ingest::log::{Log, LogOptions};
use crate::ingest::{Ingestor, recovery};
use crate::jobs::Runner;
use crate::jobs::service::{self, Schedule};
use crate::metrics::Metrics;
use crate::storage::docs::Docs;
use crate::storage::paths::wal as wal_paths;
use crate::storage::{Store, events_table};
use crate::{Error, Result};

/// The WAL directory `config` asks for.
pub fn wal_dir(config: &Config, store: &Store) -> PathBuf {
    match (&config.wal_dir, store.local_dir()) {
        (Some(dir), _) => dir.clone(),
        (None, Some(data)) => wal_paths::default_dir_in(data),
        (None, None) => PathBuf::from("./tidemark-wal"),
    }
}

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
    let store = Store::open(&config.data, &config.storage)?;
    let admin = KeyAdmin::new(Docs::new(store.object_store(), store.paths().clone()));
    bootstrap(&admin, addr).await?;
    let keys = Arc::new(KeyCache::load(admin).await?);
    let metrics = Arc::new(Metrics::new());
    let webhooks = crate::webhooks::Context::new(&config, &store)?;
    if let Err(e) = &webhooks.key {
        tracing::warn!(error = %e, "webhooks are unavailable");
    }
    let exports = crate::exports::Context::new(&config, &store)?;
    let state = Arc::new(AppState {
        store: store.clone(),
        keys: keys.clone(),
        ingestor: OnceCell::new(),
        metrics: metrics.clone(),
        limits: config.limits.clone(),
        shutting_down: AtomicBool::new(false),
        profile_writes: Arc::new(Notify::new()),
        job_options: config.job_options(),
        webhooks: webhooks.clone(),
        exports: exports.clone(),
    });

    let (stop_tx, stop_rx) = watch::channel(false);
    let http = {
        let state = state.clone();
        let mut stop_rx = stop_rx.clone();
        let app = router(state.clone());
        tokio::spawn(async move {
            let signal = async move {
                tokio::select! {
                    _ = shutdown => {}
                    _ = stop_rx.changed() => {}
                }
                state.shutting_down.store(true, Ordering::Release);
            };
            axum::serve(listener, app)
                .with_graceful_shutdown(signal)
                .await
        })
    };
    println!("tidemark: listening on http://{addr}");
    tracing::info!(%addr, data = %config.data, "listening");

    let started = start_ingest(&config, &store, &state, metrics.clone(), stop_rx.clone()).await;
    let flusher = match started {
        Ok(f) => f,
        Err(e) => {
            let _ = stop_tx.send(true);
            let _ = http.await;
            return Err(e);
        }
    };
    spawn_key_refresh(keys, stop_rx.clone());
    spawn_optimize(&config, store.clone(), metrics, stop_rx.clone());
    spawn_maintenance(&config, store.clone(), stop_rx.clone());
    spawn_segments(&config, store.clone(), stop_rx.clone());
    let webhooks_task = match (config.webhooks.enabled, webhooks.key.clone()) {
        (true, Ok(key)) => Some(spawn_webhooks(
            &config,
            store.clone(),
            key,
            webhooks.client.clone(),
            stop_rx.clone(),
        )),
        _ => None,
    };
    let exports_task = (config.exports.enabled && exports.key.is_ok())
        .then(|| spawn_exports(store.clone(), exports.clone(), stop_rx.clone()));
    if config.jobs.enabled {
        let commits = state.ingestor.get().map(|i| i.committed.clone());
        let runner = Runner::new(store.clone(), config.job_options());
        let schedule = Schedule {
            debounce: config.jobs.debounce,
            poll_interval: config.jobs.poll_interval,
        };
        tokio::spawn(service::run_loop(
            runner,
            schedule,
            commits,
            state.profile_writes.clone(),
            stop_rx.clone(),
        ));
    }
    println!("tidemark: ready");

    let served = http
        .await
        .map_err(|e| Error::Unavailable(format!("http server task: {e}")))?;
    // No request is in flight any more: flush what was acknowledged.
    let _ = stop_tx.send(true);
    let flushed = flusher
        .await
        .map_err(|e| Error::Unavailable(format!("flusher task: {e}")))?;
    // The webhook worker commits the attempts it logged before it stops.
    if let Some(task) = webhooks_task
        && tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .is_err()
    {
        tracing::warn!("webhooks: the worker did not stop within 10 s");
    }
    if let Some(task) = exports_task
        && tokio::time::timeout(Duration::from_secs(10), task)
            .await
            .is_err()
    {
        tracing::warn!("exports: the worker did not stop within 10 s");
    }
    served?;
    flushed?;
    println!("tidemark: stopped");
    Ok(())
}

/// Recovery, then the log and the flusher. Returns the flusher's task.
async fn start_ingest(
    config: &Config,
    store: &Store,
    state: &AppState,
    metrics: Arc<Metrics>,
    stop_rx: watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<Result<()>>> {
    let dir = wal_dir(config, store);
    let (table, app_id, next_seq, wal_lock) = if config.ack == AckMode::Wal || dir.exists() {
        let r = recovery::replay_wal(store, &dir).await?;
        if r.replayed_segments > 0 {
            println!(
                "tidemark: replayed {} WAL segment(s), {} event(s)",
                r.replayed_segments, r.replayed_rows
            );
        }
        (r.table, Some(r.app_id), r.next_seq, Some(r.lock))
    } else {
        (events_table::open_or_create(store).await?, None, 1, None)
    };
    let app_id = if config.ack == AckMode::Wal {
        app_id
    } else {
        None
    };

    let dedup = Arc::new(Dedup::new(config.dedup_window, config.dedup_max_entries));
    let now = chrono::Utc::now().timestamp_micros();
    let remembered = recovery::load_dedup(&table, &dedup, config.dedup_window, now).await?;
    tracing::info!(remembered, "dedup index loaded");

    let flush_now = Arc::new(Notify::new());
    let log = Log::start(LogOptions {
        mode: config.ack,
        dir,
        next_seq,
        flush_rows: config.flush_rows,
        flush_now: flush_now.clone(),
    })?;
    let (committed_tx, committed_rx) = watch::channel(next_seq - 1);
    let ingestor = Arc::new(Ingestor {
        limits: config.limits.clone(),
        mode: config.ack,
        log: log.clone(),
        dedup,
        committed: committed_rx,
        commit_timeout: config.commit_timeout,
        max_pending_bytes: config.max_pending_bytes,
        metrics: metrics.clone(),
    });
    let flusher = Flusher {
        table,
        app_id,
        log,
        committed: committed_tx,
        metrics,
        interval: config.flush_interval,
        flush_now,
        queue: VecDeque::new(),
        wal_lock,
    };
    let task = tokio::spawn(flusher.run(stop_rx));
    state
        .ingestor
        .set(ingestor)
        .map_err(|_| Error::Unavailable("ingest started twice".into()))?;
    Ok(task)
}

/// The webhook delivery worker; restarted after an error.
pub fn spawn_webhooks(
    config: &Config,
    store: Store,
    key: tidemark_sinks::crypto::MasterKey,
    client: tidemark_sinks::client::SafeClient,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    let config = config.webhooks.clone();
    tokio::spawn(async move {
        loop {
            let run = crate::webhooks::worker::run(
                store.clone(),
                config.clone(),
                key.clone(),
                client.clone(),
                stop.clone(),
            );
            match run.await {
                Ok(()) => return,
                Err(_) if *stop.borrow() => return,
                Err(e) => tracing::error!(error = %e, "webhooks: worker stopped; restarting"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

/// The export worker; restarted after an error.
pub fn spawn_exports(
    store: Store,
    ctx: crate::exports::Context,
    stop: watch::Receiver<bool>,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match crate::exports::worker::run(store.clone(), ctx.clone(), stop.clone()).await {
                Ok(()) => return,
                Err(_) if *stop.borrow() => return,
                Err(e) => tracing::error!(error = %e, "exports: worker stopped; restarting"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    })
}

fn spawn_key_refresh(keys: Arc<KeyCache>, mut stop: watch::Receiver<bool>) {
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_secs(2)) => {}
                _ = stop.changed() => return,
            }
            if let Err(e) = keys.refresh().await {
                tracing::warn!(error = %e, "cannot refresh API keys");
            }
        }
    });
}

fn spawn_optimize(
    config: &Config,
    store: Store,
    metrics: Arc<Metrics>,
    mut stop: watch::Receiver<bool>,
) {
    let (interval, target) = (config.optimize_interval, config.optimize_target_size);
    if interval.is_zero() {
        return;
    }
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => return,
            }
            let since = (chrono::Utc::now() - chrono::Duration::days(1))
                .format("%Y-%m-%d")
                .to_string();
            let result = match store.load_table(events_table::TABLE).await {
                Ok(Some(t)) => events_table::optimize_since(t, &since, target)
                    .await
                    .map(|(_, n)| n),
                Ok(None) => Ok(0),
                Err(e) => Err(e),
            };
            match result {
                Ok(n) => {
                    metrics.optimize_files_removed.inc_by(n);
                    if n > 0 {
                        tracing::info!(files_removed = n, "compacted events");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "compaction of events failed"),
            }
            // The webhook delivery log gets a small file per log commit.
            let log = crate::webhooks::log::TABLE;
            match store.load_table(log).await {
                Ok(Some(t)) => match crate::webhooks::log::optimize(t, target).await {
                    Ok((_, n)) => {
                        metrics.optimize_files_removed.inc_by(n);
                        if n > 0 {
                            tracing::info!(files_removed = n, "compacted {log}");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "compaction of {log} failed"),
                },
                Ok(None) => {}
                Err(e) => tracing::warn!(error = %e, "compaction of {log} failed"),
            }
        }
    });
}

/// Every `retention.interval`: deletes events past their environment's retention, then
/// VACUUMs every table (files that left it more than `retention.vacuum_after` ago).
fn spawn_maintenance(config: &Config, store: Store, mut stop: watch::Receiver<bool>) {
    let retention = config.retention.clone();
    if retention.interval.is_zero() {
        return;
    }
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(retention.interval) => {}
                _ = stop.changed() => return,
            }
            match crate::users::erase::apply_retention(&store, &retention).await {
                Ok(deleted) => {
                    for (env, rows) in deleted {
                        tracing::info!(environment = %env, ?rows, "retention deleted old events");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "retention failed"),
            }
            match crate::users::erase::vacuum_all(&store, retention.vacuum_after).await {
                Ok(deleted) => {
                    let n: usize = deleted.values().sum();
                    if n > 0 {
                        tracing::info!(files = n, "vacuum deleted old files");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "vacuum failed"),
            }
        }
    });
}

/// Every `segments.interval`: evaluates every segment and records enter/exit changes.
fn spawn_segments(config: &Config, store: Store, mut stop: watch::Receiver<bool>) {
    let interval = config.segments.interval;
    if interval.is_zero() || !config.jobs.enabled {
        return;
    }
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(interval) => {}
                _ = stop.changed() => return,
            }
            let now = chrono::Utc::now().timestamp_micros();
            match crate::segments::job::run_all(&store, now).await {
                Ok(runs) => {
                    for r in runs
                        .iter()
                        .filter(|r| r.entered + r.exited + r.repaired > 0)
                    {
                        tracing::info!(environment = %r.environment, run = r.run, entered = r.entered,
                            exited = r.exited, repaired = r.repaired, "segments evaluated");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "segment evaluation failed; will retry"),
            }
        }
    });
}
