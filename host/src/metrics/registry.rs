//! The one Prometheus registry type: series registered once under a name
//! prefix, rendered as the text exposition a scrape gets.

use std::collections::HashMap;

use prometheus::core::Collector;
use prometheus::{Encoder, HistogramOpts, HistogramVec, IntGauge, IntGaugeVec, Opts, TextEncoder};

/// Series registered under one name prefix (and labels every series has).
pub struct Registry(prometheus::Registry);

impl Registry {
    pub fn new(prefix: &str, labels: HashMap<String, String>) -> Self {
        let labels = (!labels.is_empty()).then_some(labels);
        Self(prometheus::Registry::new_custom(Some(prefix.into()), labels).expect("a valid prefix"))
    }

    /// Registers `series` and hands it back; each is registered once.
    pub fn register<C: Collector + Clone + 'static>(&self, series: C) -> C {
        self.0.register(Box::new(series.clone())).expect("registered once");
        series
    }

    pub fn int_gauge(&self, name: &str, help: &str) -> IntGauge {
        self.register(IntGauge::new(name, help).expect("valid metric"))
    }

    pub fn int_gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> IntGaugeVec {
        self.register(IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric"))
    }

    pub fn histogram_vec(&self, name: &str, help: &str, labels: &[&str], buckets: Vec<f64>) -> HistogramVec {
        let opts = HistogramOpts::new(name, help).buckets(buckets);
        self.register(HistogramVec::new(opts, labels).expect("valid metric"))
    }

    /// The Prometheus text exposition of every series.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        TextEncoder::new()
            .encode(&self.0.gather(), &mut out)
            .expect("text encoding into memory");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}
