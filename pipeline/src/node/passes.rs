//! The background passes of a node, each under the [`Supervisor`]: key refresh,
//! compaction, retention and VACUUM, segment evaluation, the job loop
//! ([`super::refresh`]), and the sink workers (webhooks, flows, exports) that also run alone in
//! `tidemark sinks run`.

use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, RetentionConfig};
use crate::jobs::Runner;
use crate::metrics::Metrics;
use crate::server::AppState;
use crate::storage::lease::Leases;
use crate::storage::{Store, events_table};
use crate::supervisor::Supervisor;

use super::refresh::Schedule;

/// Starts the node's background passes besides the sinks: key refresh, compaction,
/// retention and VACUUM, and (with `jobs.enabled`) segment evaluation and the job loop.
pub fn start(sup: &mut Supervisor, config: &Config, state: &AppState) {
    let (store, keys, metrics) = (&state.store, state.keys.clone(), state.metrics.clone());
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
        let runner = Runner::new(store.clone(), state.job_options.clone());
        let schedule = Schedule::of(&config.jobs);
        let stop = sup.stop_signal();
        let writes = state.profile_writes.clone();
        sup.spawn(
            "jobs",
            super::refresh::run_loop(runner, schedule, commits, writes, stop),
        );
    }
}

/// The webhook, flow and export workers, each when enabled and the master key is there
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
    if let (true, Ok(key)) = (config.flows.enabled, webhooks.key.clone()) {
        let (store, flows, client) = (store.clone(), config.flows.clone(), webhooks.client.clone());
        let policy = crate::webhooks::retry_policy(&config.webhooks);
        sup.leased("flows", leases.clone(), move |stop| {
            crate::flows::worker::run(
                store.clone(),
                flows.clone(),
                key.clone(),
                client.clone(),
                policy.clone(),
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
async fn maintenance_pass(store: Store, retention: RetentionConfig, deliveries: Duration) {
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
