//! `serve`'s series (its `GET /metrics`): `bizon_serve_*` per tenant and
//! pipeline. Counts come from each run's published progress when scraped;
//! write latency and traps are observed by the pipeline's destination
//! wrapper; compile time by the plugin store.

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Duration;

use prometheus::{CounterVec, GaugeVec, HistogramVec, IntCounterVec, IntGaugeVec, Opts};

use super::registry::Registry;
use crate::destination::DestinationError;
use crate::pipeline::Progress;

struct Series {
    registry: Registry,
    records_read: IntGaugeVec,
    records_written: IntGaugeVec,
    dead_letters: IntGaugeVec,
    lag: IntGaugeVec,
    broker_down: IntGaugeVec,
    running: IntGaugeVec,
    write_seconds: HistogramVec,
    traps: IntCounterVec,
    destination_rows: IntCounterVec,
    destination_errors: IntCounterVec,
    memory: IntGaugeVec,
    read_ahead: IntGaugeVec,
    compile_seconds: HistogramVec,
    compile_cpu: CounterVec,
    cpu: GaugeVec,
}

fn series() -> &'static Series {
    static SERIES: OnceLock<Series> = OnceLock::new();
    SERIES.get_or_init(|| {
        let registry = Registry::new("bizon_serve", HashMap::new());
        let gauge = |name: &str, help: &str, labels: &[&str]| registry.int_gauge_vec(name, help, labels);
        let tp = &["tenant", "pipeline"];
        let traps = registry.register(
            IntCounterVec::new(
                Opts::new("plugin_traps_total", "Plugin calls that trapped, by cause"),
                &["tenant", "pipeline", "cause"],
            )
            .expect("valid metric"),
        );
        let compile_cpu = registry.register(
            CounterVec::new(
                Opts::new(
                    "plugin_compile_cpu_seconds_total",
                    "CPU time the tenant's upload compiles used, charged to its CPU share",
                ),
                &["tenant"],
            )
            .expect("valid metric"),
        );
        // Read from the tenant's share at every scrape, like the counts
        // (and from zero again after a restart, as a counter may).
        let cpu = registry.register(
            GaugeVec::new(
                Opts::new(
                    "cpu_seconds_total",
                    "CPU time charged to the tenant's share, by work: plugin (calls, instantiations) or pipeline (its own work on the host)",
                ),
                &["tenant", "work"],
            )
            .expect("valid metric"),
        );
        let tpd = &["tenant", "pipeline", "destination"];
        let counter = |name: &str, help: &str| {
            registry.register(IntCounterVec::new(Opts::new(name, help), tpd).expect("valid metric"))
        };
        let destination_rows = counter(
            "destination_rows_written_total",
            "Rows the pipeline's destination wrote, by destination (wasm, logger, file, bigquery*)",
        );
        let destination_errors = counter(
            "destination_write_errors_total",
            "Writes of the pipeline's destination that failed (each attempt), by destination",
        );
        Series {
            destination_rows,
            destination_errors,
            records_read: gauge("records_read_total", "Records read from the source", tp),
            records_written: gauge("records_written_total", "Records written by the destination", tp),
            dead_letters: gauge("dead_letters_total", "Messages and rows sent to the dead letter", tp),
            lag: gauge(
                "kafka_lag",
                "Records between the committed offsets and the high watermarks",
                tp,
            ),
            broker_down: gauge(
                "kafka_broker_down",
                "1 while every broker of the pipeline's source is unreachable and it waits for one",
                tp,
            ),
            running: gauge("pipeline_running", "1 while the pipeline runs", tp),
            write_seconds: registry.histogram_vec(
                "write_seconds",
                "Time of one batch write (for wasm: encoding and the plugin call)",
                tp,
                // 0.1 ms to 4 s in steps of 25%: a p99 read from the buckets is within 25%.
                prometheus::exponential_buckets(0.0001, 1.25, 48).expect("valid buckets"),
            ),
            memory: gauge(
                "plugin_memory_bytes",
                "Memory reserved by the tenant's live plugin instances",
                &["tenant"],
            ),
            read_ahead: gauge(
                "read_ahead_bytes",
                "Records the tenant's pipelines read and have not yet written",
                &["tenant"],
            ),
            compile_seconds: registry.histogram_vec(
                "plugin_compile_seconds",
                "Time to check and compile an uploaded plugin",
                &["tenant"],
                prometheus::exponential_buckets(0.01, 2.0, 14).expect("valid buckets"),
            ),
            traps,
            compile_cpu,
            cpu,
            registry,
        }
    })
}

/// The series of one pipeline its destination wrapper writes to.
#[derive(Clone)]
pub struct PipelineSeries {
    tenant: String,
    pipeline: String,
    write_seconds: prometheus::Histogram,
    rows: prometheus::IntCounter,
    errors: prometheus::IntCounter,
}

impl PipelineSeries {
    /// `destination`: its name (`wasm`, `bigquery_streaming_v2`, ...).
    pub fn new(tenant: &str, pipeline: &str, destination: &str) -> Self {
        let labels = &[tenant, pipeline, destination];
        Self {
            tenant: tenant.to_string(),
            pipeline: pipeline.to_string(),
            write_seconds: series().write_seconds.with_label_values(&[tenant, pipeline]),
            rows: series().destination_rows.with_label_values(labels),
            errors: series().destination_errors.with_label_values(labels),
        }
    }

    pub fn observe_write(&self, took: Duration, result: &Result<u64, DestinationError>) {
        self.write_seconds.observe(took.as_secs_f64());
        match result {
            Ok(rows) => self.rows.inc_by(*rows),
            Err(_) => self.errors.inc(),
        }
        if let Err(e) = result {
            if let Some(cause) = trap_cause(&e.to_string()) {
                series()
                    .traps
                    .with_label_values(&[&self.tenant, &self.pipeline, cause])
                    .inc();
            }
        }
    }
}

/// The cause of a trap, from the message [`crate::plugin::TrapCause`] writes.
fn trap_cause(message: &str) -> Option<&'static str> {
    [
        ("exceeded its memory limit", "memory"),
        ("exceeded its call timeout", "timeout"),
        ("overflowed its stack", "stack_overflow"),
        ("panicked:", "panic"),
        ("called exit(", "exit"),
        ("trapped:", "other"),
    ]
    .into_iter()
    .find(|(text, _)| message.contains(text))
    .map(|(_, cause)| cause)
}

pub fn compile_time(tenant: &str, took: Duration) {
    series()
        .compile_seconds
        .with_label_values(&[tenant])
        .observe(took.as_secs_f64());
}

pub fn compile_cpu(tenant: &str, used: Duration) {
    series()
        .compile_cpu
        .with_label_values(&[tenant])
        .inc_by(used.as_secs_f64());
}

pub fn set_progress(tenant: &str, pipeline: &str, progress: &Progress, running: bool) {
    let s = series();
    let labels = &[tenant, pipeline];
    s.records_read
        .with_label_values(labels)
        .set(progress.records_read as i64);
    s.records_written
        .with_label_values(labels)
        .set(progress.records_written as i64);
    let source = progress.source.clone().unwrap_or_default();
    s.dead_letters.with_label_values(labels).set(source.dead_letters as i64);
    s.lag
        .with_label_values(labels)
        .set(source.lag.values().map(|l| l.lag.max(0)).sum());
    s.broker_down.with_label_values(labels).set(source.broker_down as i64);
    s.running.with_label_values(labels).set(running as i64);
}

pub fn set_memory(tenant: &str, plugins: u64, read_ahead: usize) {
    let s = series();
    s.memory.with_label_values(&[tenant]).set(plugins as i64);
    s.read_ahead.with_label_values(&[tenant]).set(read_ahead as i64);
}

pub fn set_cpu(tenant: &str, plugin: Duration, pipeline: Duration) {
    let s = series();
    s.cpu.with_label_values(&[tenant, "plugin"]).set(plugin.as_secs_f64());
    s.cpu
        .with_label_values(&[tenant, "pipeline"])
        .set(pipeline.as_secs_f64());
}

/// Gauges are set again from the live state at every scrape: a pipeline
/// or tenant gone is gone from them.
pub fn reset_gauges() {
    let s = series();
    for g in [
        &s.records_read,
        &s.records_written,
        &s.dead_letters,
        &s.lag,
        &s.broker_down,
        &s.running,
        &s.memory,
        &s.read_ahead,
    ] {
        g.reset();
    }
    s.cpu.reset();
}

/// Failed writes of a pipeline's destination in this server's life.
pub fn write_errors(tenant: &str, pipeline: &str, destination: &str) -> u64 {
    series()
        .destination_errors
        .get_metric_with_label_values(&[tenant, pipeline, destination])
        .map_or(0, |c| c.get())
}

/// Every destination name a pipeline's series may carry.
const DESTINATIONS: [&str; 6] = [
    "wasm",
    "logger",
    "file",
    "bigquery",
    "bigquery_streaming",
    "bigquery_streaming_v2",
];

/// Drops the histograms and counters of a deleted pipeline.
pub fn forget_pipeline(tenant: &str, pipeline: &str) {
    let s = series();
    let _ = s.write_seconds.remove_label_values(&[tenant, pipeline]);
    for destination in DESTINATIONS {
        let _ = s.destination_rows.remove_label_values(&[tenant, pipeline, destination]);
        let _ = s
            .destination_errors
            .remove_label_values(&[tenant, pipeline, destination]);
    }
    for cause in ["memory", "timeout", "stack_overflow", "panic", "exit", "other"] {
        let _ = s.traps.remove_label_values(&[tenant, pipeline, cause]);
    }
}

pub fn forget_tenant(tenant: &str) {
    let _ = series().compile_seconds.remove_label_values(&[tenant]);
    let _ = series().compile_cpu.remove_label_values(&[tenant]);
}

/// The text exposition of every serve series.
pub fn render() -> String {
    series().registry.render()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trap_causes_are_read_from_the_plugin_error() {
        let e = crate::plugin::PluginError::Trap {
            plugin: "p".into(),
            function: "write-records",
            cause: crate::plugin::TrapCause::Memory { limit_mb: 8 },
        };
        assert_eq!(trap_cause(&e.to_string()), Some("memory"));
        assert_eq!(trap_cause("plugin p: the table is missing"), None);
    }
}
