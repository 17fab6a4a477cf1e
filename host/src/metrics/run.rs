//! One run's series (`run --metrics-addr HOST:PORT`): `bizon_*`, each
//! with the pipeline's name as its `pipeline` label, set from the run's
//! published progress.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus::{IntGauge, IntGaugeVec};
use tokio::sync::watch;

use super::registry::Registry;
use crate::pipeline::Progress;

/// How often the gauges follow the progress when nothing is published
/// (the lag changes while no record moves).
const REFRESH: Duration = Duration::from_secs(1);

pub struct Metrics {
    registry: Registry,
    records_read: IntGauge,
    records_written: IntGaugeVec,
    records_skipped: IntGauge,
    records_replayed: IntGauge,
    dead_letters: IntGauge,
    commits: IntGauge,
    rebalances: IntGauge,
    broker_down: IntGauge,
    lag: IntGaugeVec,
    high_watermark: IntGaugeVec,
    committed: IntGaugeVec,
    buffered_bytes: IntGauge,
}

impl Metrics {
    pub fn new(pipeline: &str) -> Self {
        let registry = Registry::new("bizon", [("pipeline".to_string(), pipeline.to_string())].into());
        let gauge = |name: &str, help: &str| registry.int_gauge(name, help);
        let vec = |name: &str, help: &str, labels: &[&str]| registry.int_gauge_vec(name, help, labels);
        Self {
            records_read: gauge("records_read_total", "Records read from the source"),
            records_written: vec(
                "records_written_total",
                "Records written, by destination_id",
                &["destination_id"],
            ),
            records_skipped: gauge("records_skipped_total", "Records the source dropped on purpose"),
            records_replayed: gauge(
                "records_replayed_total",
                "Records written after the last commit by a crashed run, recognised and written once",
            ),
            dead_letters: gauge("dead_letters_total", "Messages and rows sent to the dead letter"),
            commits: gauge("source_commits_total", "Offset commits of the source (Kafka)"),
            rebalances: gauge("source_rebalances_total", "Consumer group rebalances seen (Kafka)"),
            broker_down: gauge(
                "kafka_broker_down",
                "1 while every broker is unreachable and the run waits for one",
            ),
            lag: vec(
                "kafka_lag",
                "Records between the committed offset and the high watermark",
                &["topic", "partition"],
            ),
            high_watermark: vec(
                "kafka_high_watermark",
                "High watermark from the last fetch",
                &["topic", "partition"],
            ),
            committed: vec(
                "kafka_committed_offset",
                "Last committed offset",
                &["topic", "partition"],
            ),
            buffered_bytes: gauge("peak_buffered_bytes", "Most bytes held in buffers and batches at once"),
            registry,
        }
    }

    /// Sets every value from a progress snapshot. Counts are gauges set to
    /// the run's totals (Prometheus `rate()` works on them as on counters).
    pub fn observe(&self, p: &Progress) {
        self.records_read.set(p.records_read as i64);
        self.records_skipped.set(p.records_skipped as i64);
        self.records_replayed.set(p.records_replayed as i64);
        self.buffered_bytes.set(p.peak_buffered_bytes as i64);
        for (id, n) in &p.by_destination_id {
            self.records_written.with_label_values(&[id]).set(*n as i64);
        }
        if let Some(s) = &p.source {
            self.dead_letters.set(s.dead_letters as i64);
            self.commits.set(s.commits as i64);
            self.rebalances.set(s.rebalances as i64);
            self.broker_down.set(s.broker_down as i64);
            for (at, lag) in &s.lag {
                let (topic, partition) = at.rsplit_once('/').unwrap_or((at, ""));
                let labels = [topic, partition];
                self.lag.with_label_values(&labels).set(lag.lag);
                self.high_watermark.with_label_values(&labels).set(lag.high_watermark);
                self.committed.with_label_values(&labels).set(lag.committed);
            }
        }
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        self.registry.render()
    }

    /// Keeps the values following `progress` until it closes.
    pub fn follow(self: Arc<Self>, mut progress: watch::Receiver<Progress>) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                self.observe(&progress.borrow_and_update());
                // Err(Elapsed): refresh anyway; Ok(Err): the run is over.
                if let Ok(Err(_)) = tokio::time::timeout(REFRESH, progress.changed()).await {
                    return;
                }
            }
        })
    }

    /// Serves the metrics on `addr` (any path).
    pub async fn serve(self: Arc<Self>, addr: SocketAddr) -> std::io::Result<tokio::task::JoinHandle<()>> {
        super::http::serve(addr, move || self.render()).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::{PartitionLag, SourceReport};

    #[test]
    fn progress_becomes_prometheus_text() {
        let m = Metrics::new("p");
        let mut p = Progress {
            records_read: 10,
            records_written: 7,
            ..Default::default()
        };
        p.by_destination_id.insert("users".into(), 7);
        let mut source = SourceReport {
            commits: 3,
            broker_down: true,
            ..Default::default()
        };
        source.lag.insert(
            "orders/2".into(),
            PartitionLag {
                high_watermark: 50,
                committed: 40,
                lag: 10,
            },
        );
        p.source = Some(source);
        m.observe(&p);
        let text = m.render();
        assert!(text.contains("bizon_records_read_total{pipeline=\"p\"} 10"), "{text}");
        assert!(
            text.contains("bizon_records_written_total{destination_id=\"users\",pipeline=\"p\"} 7"),
            "{text}"
        );
        assert!(
            text.contains("bizon_kafka_lag{partition=\"2\",topic=\"orders\",pipeline=\"p\"} 10"),
            "{text}"
        );
        assert!(text.contains("bizon_source_commits_total{pipeline=\"p\"} 3"), "{text}");
        assert!(text.contains("bizon_kafka_broker_down{pipeline=\"p\"} 1"), "{text}");
    }
}
