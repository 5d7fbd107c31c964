//! `tidemark jobs status`: each job's cursor and how far behind its source table it is.

use deltalake::kernel::Action;
use serde::Serialize;

use super::defs;
use super::inputs;
use super::publish;
use super::runner::{RunReport, Runner};
use crate::Result;

/// Lag beyond this many versions is reported without counting its rows.
const MAX_COUNTED_VERSIONS: i64 = 1000;

#[derive(Debug, Clone, Serialize)]
pub struct JobStatus {
    pub job: String,
    /// The table the job follows (`events` or `profile_changes`).
    pub source: String,
    /// The last source version the job covers (`None`: never ran).
    pub cursor: Option<i64>,
    /// The newest source version.
    pub head: i64,
    pub lag_versions: i64,
    /// Rows appended to `events` after the cursor (`None` when the lag is too long to count).
    pub lag_rows: Option<i64>,
    /// Age of the oldest commit the job has not covered (0 when caught up).
    pub lag_seconds: f64,
    pub last_run: Option<RunReport>,
    /// The last run the published table holds (what other Delta readers see).
    pub published_through: Option<i64>,
    /// Runs written to the pending table and not yet published.
    pub unpublished_runs: usize,
}

impl Runner {
    pub async fn status(&self) -> Result<Vec<JobStatus>> {
        let mut out = Vec::new();
        for job in defs::ALL {
            let events = self.store().load_table(job.source().table()).await?;
            let head = events.as_ref().map_or(-1, inputs::head_version);
            let cursor = self.cursor(job).await?;
            let from = cursor.unwrap_or(-1) + 1;
            let (mut lag_rows, mut lag_seconds) = (Some(0), 0.0);
            if let Some(events) = &events
                && from <= head
            {
                if head - from < MAX_COUNTED_VERSIONS {
                    let commits = inputs::read_commits(events, from, head).await?;
                    lag_rows = Some(
                        commits
                            .iter()
                            .flat_map(|c| &c.actions)
                            .filter_map(|a| match a {
                                Action::Add(add) if add.data_change => {
                                    add.get_stats().ok().flatten()
                                }
                                _ => None,
                            })
                            .map(|s| s.num_records)
                            .sum(),
                    );
                    let oldest = commits.first().and_then(|c| {
                        c.actions.iter().find_map(|a| match a {
                            Action::CommitInfo(ci) => ci.timestamp,
                            _ => None,
                        })
                    });
                    if let Some(ms) = oldest {
                        let age = chrono::Utc::now().timestamp_millis() - ms;
                        lag_seconds = age.max(0) as f64 / 1000.0;
                    }
                } else {
                    lag_rows = None;
                }
            }
            let pending = self.store().load_table(job.pending()).await?;
            let published = self.store().load_table(job.table()).await?;
            let published_through = match publish::published_state(published.as_ref(), job).await? {
                publish::Published::Current { through } => through,
                _ => None,
            };
            let unpublished_runs = publish::pending_runs(pending.as_ref())?
                .into_iter()
                .filter(|r| published_through.is_none_or(|p| *r > p))
                .count();
            out.push(JobStatus {
                job: job.table().into(),
                source: job.source().table().into(),
                cursor,
                head,
                lag_versions: (head - cursor.unwrap_or(-1)).max(0),
                lag_rows,
                lag_seconds,
                last_run: self.last_report(job).await?,
                published_through,
                unpublished_runs,
            });
        }
        Ok(out)
    }
}

/// The text form of one job's status (`tidemark jobs status`).
pub fn describe(status: &JobStatus) -> String {
    let cursor = status
        .cursor
        .map_or_else(|| "never ran".to_string(), |c| format!("version {c}"));
    let rows = status
        .lag_rows
        .map_or_else(|| "many".to_string(), |r| r.to_string());
    let mut line = format!(
        "{:<18} cursor {cursor:<14} {} head {:<6} lag {} version(s), {rows} row(s), {:.1} s",
        status.job, status.source, status.head, status.lag_versions, status.lag_seconds
    );
    line.push_str(&format!(
        "\n{:<18} published through {}, {} run(s) pending",
        "",
        status
            .published_through
            .map_or_else(|| "nothing yet".to_string(), |p| format!("version {p}")),
        status.unpublished_runs
    ));
    if let Some(r) = &status.last_run {
        line.push_str(&format!("\n{:<18} last run: {}", "", r.summary()));
    }
    line
}
