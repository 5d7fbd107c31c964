//! Prometheus metrics, rendered as text by `GET /metrics`.

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

pub struct Metrics {
    registry: Registry,
    /// Events stored, by environment.
    pub events_accepted: Family<Labels, Counter>,
    /// Events refused (the events of batches refused as invalid).
    pub events_rejected_total: Counter,
    /// Ingest requests refused, by reason (`invalid`, `too_large`, `unauthorized`,
    /// `forbidden`, `unsupported`, `unavailable`).
    pub events_rejected: Family<Labels, Counter>,
    /// Events dropped as retries of events already stored.
    pub events_duplicate: Counter,
    /// Bytes in the WAL not yet committed to Delta.
    pub wal_pending_bytes: Gauge,
    /// Bytes appended to the WAL.
    pub wal_bytes: Counter,
    /// Time from request to acknowledgement, seconds.
    pub ack_latency: Histogram,
    /// Time to commit one segment to Delta, seconds.
    pub flush_latency: Histogram,
    /// Delta commits of `events` by the flusher.
    pub commits: Counter,
    pub commit_failures: Counter,
    /// Files removed by compaction.
    pub optimize_files_removed: Counter,
    /// Open `GET /v1/{env}/events/stream` connections.
    pub stream_connections: Gauge,
    /// Events sent on those streams.
    pub stream_events: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tidemark");
        let m = Metrics {
            events_accepted: Family::default(),
            events_rejected: Family::default(),
            events_rejected_total: Counter::default(),
            events_duplicate: Counter::default(),
            wal_pending_bytes: Gauge::default(),
            wal_bytes: Counter::default(),
            ack_latency: Histogram::new(exponential_buckets(0.0005, 2.0, 16)),
            flush_latency: Histogram::new(exponential_buckets(0.005, 2.0, 14)),
            commits: Counter::default(),
            commit_failures: Counter::default(),
            optimize_files_removed: Counter::default(),
            stream_connections: Gauge::default(),
            stream_events: Counter::default(),
            registry: Registry::default(),
        };
        // The name, the help text and the metric of each, registered in this order.
        macro_rules! register {
            ($($name:literal, $help:literal => $field:ident;)*) => {
                $(registry.register($name, $help, m.$field.clone());)*
            };
        }
        register! {
            "events_accepted", "Events stored" => events_accepted;
            "events_rejected", "Events in batches refused as invalid" => events_rejected_total;
            "requests_rejected", "Ingest requests refused, by reason" => events_rejected;
            "events_duplicate", "Events dropped as retries of stored events" => events_duplicate;
            "wal_pending_bytes", "WAL bytes not yet committed to the events table" => wal_pending_bytes;
            "wal_bytes", "Bytes appended to the WAL" => wal_bytes;
            "ack_latency_seconds", "Time from request to acknowledgement" => ack_latency;
            "flush_latency_seconds", "Time to commit one WAL segment to Delta" => flush_latency;
            "commits", "Delta commits of events" => commits;
            "commit_failures", "Failed Delta commits of events" => commit_failures;
            "optimize_files_removed", "Small files removed by compaction" => optimize_files_removed;
            "stream_connections", "Open event streams (GET /v1/{env}/events/stream)" => stream_connections;
            "stream_events", "Events sent on event streams" => stream_events;
        }
        Metrics { registry, ..m }
    }

    pub fn accepted(&self, environment: &str, n: u64) {
        self.events_accepted
            .get_or_create(&vec![("environment", environment.to_string())])
            .inc_by(n);
    }

    pub fn rejected(&self, reason: &'static str, n: u64) {
        self.events_rejected
            .get_or_create(&vec![("reason", reason.to_string())])
            .inc_by(n);
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_with_labels() {
        let m = Metrics::new();
        m.accepted("default", 3);
        m.rejected("invalid", 2);
        m.commits.inc();
        let text = m.render();
        assert!(
            text.contains("tidemark_events_accepted_total{environment=\"default\"} 3"),
            "{text}"
        );
        assert!(
            text.contains("tidemark_requests_rejected_total{reason=\"invalid\"} 2"),
            "{text}"
        );
        assert!(text.contains("tidemark_commits_total 1"), "{text}");
        assert!(text.contains("tidemark_wal_pending_bytes 0"), "{text}");
    }
}
