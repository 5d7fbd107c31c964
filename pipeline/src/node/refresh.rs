//! The refresh loop, above the jobs and the segments it runs in turn: inside
//! `tidemark serve` it runs the jobs after each `events` commit (debounced),
//! and every `poll_interval` to pick up commits of other nodes; `tidemark jobs run` polls.
//! Once caught up, it publishes the pending rows when the last publish is
//! `publish_interval` old (so other Delta readers lag by at most about that much).
//! When a pass changed the profiles, the segments are evaluated right after it (and
//! `serve` also evaluates them every `segments.interval`, for relative time conditions).

use std::time::Duration;

use std::sync::Arc;

use tokio::sync::{Notify, watch};

use crate::jobs::Runner;
use crate::storage::lease::Leases;

/// When the loop runs.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    /// Wait this long after a commit before running, so a burst of commits is one run.
    pub debounce: Duration,
    pub poll_interval: Duration,
}

impl Schedule {
    /// The schedule `[jobs]` sets.
    pub fn of(jobs: &crate::config::JobsConfig) -> Schedule {
        Schedule {
            debounce: jobs.debounce,
            poll_interval: jobs.poll_interval,
        }
    }
}

/// Runs jobs until `stop` turns true. `commits` changes after each local `events`
/// commit; `writes` is notified after each profile write of this node.
pub async fn run_loop(
    runner: Runner,
    schedule: Schedule,
    mut commits: Option<watch::Receiver<u64>>,
    writes: Arc<Notify>,
    mut stop: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    let mut published_at: Option<tokio::time::Instant> = None;
    loop {
        run_until_caught_up(&runner, &mut failures).await;
        if published_at.is_none_or(|t| t.elapsed() >= runner.options().publish_interval) {
            publish(&runner).await;
            published_at = Some(tokio::time::Instant::now());
        }
        let backoff = Duration::from_millis(500 * u64::from(failures.min(6)).pow(2));
        let changed = async {
            match commits.as_mut() {
                Some(rx) => rx.changed().await.is_ok(),
                None => std::future::pending().await,
            }
        };
        let publish_due = async {
            match published_at {
                Some(t) => tokio::time::sleep_until(t + runner.options().publish_interval).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = publish_due => {}
            ok = changed => {
                if !ok {
                    commits = None;
                }
                tokio::time::sleep(schedule.debounce.max(backoff)).await;
            }
            _ = writes.notified() => {
                tokio::time::sleep(schedule.debounce.max(backoff)).await;
            }
            _ = tokio::time::sleep(schedule.poll_interval.max(backoff)) => {}
            _ = stop.changed() => return,
        }
        if *stop.borrow() {
            return;
        }
    }
}

/// Runs until a run has nothing left to do (a long lag takes several bounded runs); then,
/// when profiles changed, evaluates the segments (they read the profiles).
async fn run_until_caught_up(runner: &Runner, failures: &mut u32) {
    let mut changed = false;
    loop {
        match runner.run_once().await {
            Ok(reports) if reports.is_empty() => {
                *failures = 0;
                if changed && runner.options().evaluate_segments {
                    evaluate_segments(runner).await;
                }
                return;
            }
            Ok(reports) => {
                *failures = 0;
                changed = true;
                for r in &reports {
                    tracing::info!(
                        job = %r.job, kind = %r.kind, to_version = r.to_version,
                        events = r.events_read, rows = r.rows_written, seconds = r.seconds,
                        "job run"
                    );
                }
            }
            Err(e) => {
                *failures += 1;
                tracing::warn!(error = %e, failures = *failures, "job run failed; will retry");
                return;
            }
        }
    }
}

/// One publish pass; a failure is logged and the next pass retries.
pub async fn publish(runner: &Runner) {
    match runner.publish().await {
        Ok(reports) => {
            for r in &reports {
                tracing::info!(
                    job = %r.job, to_run = r.to_run, partitions = r.partitions,
                    pending_rows = r.pending_rows, rows = r.rows_written, seconds = r.seconds,
                    "published"
                );
            }
        }
        Err(e) => tracing::warn!(error = %e, "publish failed; the next pass retries"),
    }
}

/// Evaluates every segment after the profile jobs changed the profiles.
async fn evaluate_segments(runner: &Runner) {
    let now = chrono::Utc::now().timestamp_micros();
    let leases = Leases::new(runner.store(), runner.options().lease_ttl);
    match crate::segments::job::run_all(&leases, now).await {
        Ok(runs) => crate::segments::job::log_runs(&runs),
        Err(e) => tracing::warn!(error = %e, "segment evaluation failed; the next run retries"),
    }
}
