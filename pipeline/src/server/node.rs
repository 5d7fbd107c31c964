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

use crate::supervisor::Supervisor;

use super::{AppState, router};
use crate::auth::{KeyAdmin, KeyCache, Role};
use crate::config::{AckMode, Config};
use crate::ingest::dedup::Dedup;
use crate::ingest::flusher::Flusher;
use crate::ingest::log::{Log, LogOptions};
use crate::ingest::{Ingestor, recovery};
use crate::jobs::Runner;
use crate::metrics::Metrics;
use crate::refresh::{self, Schedule};
use crate::storage::docs::Docs;
use crate::storage::lease::Leases;
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
    let store = Store::open_config(&config.data, &config.storage)?;
    let admin = KeyAdmin::new(Docs::new(store.object_store(), store.paths().clone()));
    with_retries("bootstrap", || bootstrap(&admin, addr)).await?;
    let keys =
        Arc::new(with_retries("loading the API keys", || KeyCache::load(admin.clone())).await?);
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
        segment_writes: Arc::new(Notify::new()),
        job_options: crate::jobs::JobOptions::from_config(&config),
        webhooks: webhooks.clone(),
        exports: exports.clone(),
        query: Arc::new(crate::query::Engine::new(
            store.clone(),
            config.query.clone(),
        )),
    });

    let mut sup = Supervisor::new();
    let http = {
        let state = state.clone();
        let mut stop_rx = sup.stop_signal();
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
    println!("tidemark: console at http://{addr}/console/ (sign in with a read or admin key)");
    tracing::info!(%addr, data = %config.data, "listening");
    let doors = match start_sql_doors(&config, &state, keys.clone()).await {
        Ok(d) => d,
        Err(e) => {
            sup.stop();
            let _ = http.await;
            return Err(e);
        }
    };

    let started = with_retries("recovery", || {
        start_ingest(&config, &store, &state, metrics.clone(), sup.stop_signal())
    })
    .await;
    let flusher = match started {
        Ok(f) => f,
        Err(e) => {
            sup.stop();
            let _ = http.await;
            return Err(e);
        }
    };
    start_background(&mut sup, &config, &store, &state, keys, metrics);
    start_sinks(&mut sup, &config, &store, &webhooks, &exports);
    println!("tidemark: ready");

    let served = http
        .await
        .map_err(|e| Error::Unavailable(format!("http server task: {e}")))?;
    for door in doors {
        door.abort();
    }
    // No request is in flight any more: flush what was acknowledged.
    sup.stop();
    let flushed = flusher
        .await
        .map_err(|e| Error::Unavailable(format!("flusher task: {e}")))?;
    // Then every background task, in the order started (the webhook worker commits the
    // attempts it logged before it stops).
    sup.shutdown(SHUTDOWN_GRACE).await;
    served?;
    flushed?;
    if let Some(stats) = store.fault_stats() {
        println!("tidemark: storage faults: {stats}");
    }
    println!("tidemark: stopped");
    Ok(())
}

/// The Postgres and Flight SQL doors, when `query.pg_listen` / `query.flight_listen`
/// are set: bound now (a port in use fails the start), served until shutdown.
async fn start_sql_doors(
    config: &Config,
    state: &AppState,
    keys: Arc<KeyCache>,
) -> Result<Vec<tokio::task::JoinHandle<()>>> {
    let q = &config.query;
    let mut doors = Vec::new();
    if let Some(pg) = q.pg_listen {
        let tls = match (&q.tls_cert, &q.tls_key) {
            (Some(cert), Some(key)) => Some(super::pg::tls_acceptor(cert, key)?),
            _ => None,
        };
        let listener = TcpListener::bind(pg)
            .await
            .map_err(|e| Error::Config(format!("query.pg_listen: cannot listen on {pg}: {e}")))?;
        let bound = listener.local_addr()?;
        println!(
            "tidemark: postgres protocol on {bound}{} (database = environment, password = a read key)",
            if tls.is_some() { " with TLS" } else { "" }
        );
        doors.push(tokio::spawn(super::pg::serve(
            listener,
            state.query.clone(),
            keys.clone(),
            tls,
        )));
    }
    if let Some(flight) = q.flight_listen {
        let listener = TcpListener::bind(flight).await.map_err(|e| {
            Error::Config(format!(
                "query.flight_listen: cannot listen on {flight}: {e}"
            ))
        })?;
        let bound = listener.local_addr()?;
        println!(
            "tidemark: flight sql on grpc://{bound} (bearer key, or basic auth environment:key)"
        );
        doors.push(tokio::spawn(super::flight::serve(
            listener,
            state.query.clone(),
            keys,
        )));
    }
    Ok(doors)
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

/// The node's background tasks besides the sinks: key refresh, compaction, retention,
/// segment evaluation and the job loop.
fn start_background(
    sup: &mut Supervisor,
    config: &Config,
    store: &Store,
    state: &AppState,
    keys: Arc<KeyCache>,
    metrics: Arc<Metrics>,
) {
    sup.every("key refresh", KEY_REFRESH, move || {
        let keys = keys.clone();
        async move {
            if let Err(e) = keys.refresh().await {
                tracing::warn!(error = %e, "cannot refresh API keys");
            }
        }
    });
    let (s, target) = (store.clone(), config.optimize_target_size);
    sup.every("compaction", config.optimize_interval, move || {
        optimize_pass(s.clone(), metrics.clone(), target)
    });
    let (s, retention) = (store.clone(), config.retention.clone());
    let deliveries = config.webhooks.deliveries_retention;
    sup.every("retention", retention.interval, move || {
        maintenance_pass(s.clone(), retention.clone(), deliveries)
    });
    if config.jobs.enabled {
        let leases = Leases::new(store, config.lease_ttl);
        let writes = state.segment_writes.clone();
        sup.every_or_woken("segments", config.segments.interval, writes, move || {
            segments_pass(leases.clone())
        });
        let commits = state.ingestor.get().map(|i| i.committed.clone());
        let runner = Runner::new(store.clone(), crate::jobs::JobOptions::from_config(config));
        let schedule = Schedule {
            debounce: config.jobs.debounce,
            poll_interval: config.jobs.poll_interval,
        };
        let stop = sup.stop_signal();
        let writes = state.profile_writes.clone();
        sup.spawn(
            "jobs",
            refresh::run_loop(runner, schedule, commits, writes, stop),
        );
    }
}

/// The webhook and export workers, each when enabled and the master key is there
/// (`tidemark serve` and `tidemark sinks run`), each on the one process of the store that
/// holds its lease. Returns how many were started.
pub fn start_sinks(
    sup: &mut Supervisor,
    config: &Config,
    store: &Store,
    webhooks: &crate::webhooks::Context,
    exports: &crate::exports::Context,
) -> usize {
    let mut started = 0;
    let leases = Leases::new(store, config.lease_ttl);
    if let (true, Ok(key)) = (config.webhooks.enabled, webhooks.key.clone()) {
        let (store, config, client) = (
            store.clone(),
            config.webhooks.clone(),
            webhooks.client.clone(),
        );
        sup.leased("webhooks", leases.clone(), move |stop| {
            crate::webhooks::worker::run(
                store.clone(),
                config.clone(),
                key.clone(),
                client.clone(),
                stop,
            )
        });
        started += 1;
    }
    if config.exports.enabled && exports.key.is_ok() {
        let (store, ctx) = (store.clone(), exports.clone());
        sup.leased("exports", leases.clone(), move |stop| {
            crate::exports::worker::run(store.clone(), ctx.clone(), stop)
        });
        started += 1;
    }
    started
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
        verify_next: false,
    };
    let task = tokio::spawn(flusher.run(stop_rx));
    state
        .ingestor
        .set(ingestor)
        .map_err(|_| Error::Unavailable("ingest started twice".into()))?;
    Ok(task)
}

/// How often a node re-reads the API keys (a revoked key stops working within this).
const KEY_REFRESH: Duration = Duration::from_secs(2);

/// Compacts the last day of `events` and the webhook delivery log.
async fn optimize_pass(store: Store, metrics: Arc<Metrics>, target: u64) {
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

/// Deletes events past their environment's retention and delivery attempts past
/// `deliveries`, then VACUUMs every table (files that left it more than
/// `retention.vacuum_after` ago).
async fn maintenance_pass(
    store: Store,
    retention: crate::config::RetentionConfig,
    deliveries: Duration,
) {
    let hidden = crate::jobs::defs::pending_tables();
    match crate::storage::retention::apply_retention(&store, &retention).await {
        Ok(deleted) => {
            for (env, rows) in deleted {
                tracing::info!(environment = %env, ?rows, "retention deleted old events");
            }
        }
        Err(e) => tracing::warn!(error = %e, "retention failed"),
    }
    match crate::webhooks::log::apply_retention(&store, deliveries, chrono::Utc::now()).await {
        Ok(0) => {}
        Ok(rows) => tracing::info!(rows, "retention deleted old delivery attempts"),
        Err(e) => tracing::warn!(error = %e, "retention of deliveries failed"),
    }
    match crate::storage::retention::vacuum_all(&store, retention.vacuum_after, &hidden).await {
        Ok(deleted) => {
            let n: usize = deleted.values().sum();
            if n > 0 {
                tracing::info!(files = n, "vacuum deleted old files");
            }
        }
        Err(e) => tracing::warn!(error = %e, "vacuum failed"),
    }
}

/// Evaluates every segment and records enter/exit changes: every `segments.interval` (for
/// relative time conditions, which change with the clock alone) and at once after a
/// definition is written through the API.
async fn segments_pass(leases: Leases) {
    let now = chrono::Utc::now().timestamp_micros();
    match crate::segments::job::run_all(&leases, now).await {
        Ok(runs) => crate::segments::job::log_runs(&runs),
        Err(e) => tracing::warn!(error = %e, "segment evaluation failed; will retry"),
    }
}
