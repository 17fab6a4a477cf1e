//! The `dummy` source.
//!
//! With `total_records`, deterministic records for trying pipelines out and
//! for benchmarks: `{"id": i, "name": "bizon-<i>", "age": i % 97, "active":
//! <i is even>, "score": i * 0.5, "tags": ["a","b"]}`. Without it, the five
//! records of Bizon's own dummy source for its `creatures` or `plants`
//! stream, in its three pages, so Bizon's example pipelines run unchanged.

use std::sync::Arc;

use super::{Source, SourceError};
use serde::Deserialize;

use crate::config::IgnoredAny2;
use crate::record::{now_us, SourceRecord};

/// Deterministic records for trying pipelines out and for benchmarks.
///
/// Source sections accept unknown keys with a warning, as Bizon does.
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct DummySourceConfig {
    pub name: String,
    /// Records to generate; without it, Bizon's five fixed dummy records.
    #[serde(default)]
    pub total_records: Option<u64>,
    #[serde(default = "crate::config::default_page_size")]
    pub page_size: usize,
    /// Spreads records round-robin over these destination_ids.
    #[serde(default)]
    pub destination_ids: Vec<String>,
    /// Fields of Bizon's own source config, accepted so its files run unchanged.
    #[serde(default)]
    pub stream: Option<String>,
    #[serde(default)]
    pub sync_mode: Option<String>,
    #[serde(default)]
    pub force_ignore_checkpoint: Option<bool>,
    #[serde(default)]
    pub max_iterations: Option<u64>,
    #[serde(default)]
    pub authentication: Option<IgnoredAny2>,
    #[serde(default)]
    pub sleep: Option<f64>,
}

/// Keys of the `dummy` section besides Bizon's base source keys.
pub const DUMMY_KEYS: &[&str] = &["total_records", "page_size", "destination_ids", "sleep"];

pub struct DummySource {
    next: u64,
    total: u64,
    page_size: usize,
    destination_ids: Vec<Arc<str>>,
    /// Bizon's fixed pages, served in order when `total_records` is absent.
    fixed: Option<std::vec::IntoIter<Vec<FixedRecord>>>,
}

impl DummySource {
    pub fn new(config: &DummySourceConfig) -> Self {
        let fixed = match config.total_records {
            Some(_) => None,
            None => Some(bizon_pages(config.stream.as_deref()).into_iter()),
        };
        Self {
            next: 0,
            total: config.total_records.unwrap_or(0),
            page_size: config.page_size,
            destination_ids: config.destination_ids.iter().map(|d| Arc::from(d.as_str())).collect(),
            fixed,
        }
    }

    fn destination_for(&self, i: u64) -> Option<Arc<str>> {
        match self.destination_ids.len() {
            0 => None,
            n => Some(self.destination_ids[(i % n as u64) as usize].clone()),
        }
    }
}

/// `(id, name, age)` of one of Bizon's dummy records.
type FixedRecord = (u64, &'static str, u32);

/// What Bizon's dummy source serves (bizon/connectors/sources/dummy/src/fake_api.py).
fn bizon_pages(stream: Option<&str>) -> Vec<Vec<FixedRecord>> {
    let names = match stream {
        Some("plants") => ["tree", "flower", "cactus", "bamboo", "rose"],
        _ => ["bizon", "croco", "froggy", "turtle", "poulpo"],
    };
    vec![
        vec![(9898, names[0], 26), (88787, names[1], 23)],
        vec![(98, names[2], 26), (3333, names[3], 23)],
        vec![(56565, names[4], 26)],
    ]
}

impl Source for DummySource {
    fn next_page(&mut self) -> Result<Option<Vec<SourceRecord>>, SourceError> {
        let now = now_us();
        if let Some(pages) = &mut self.fixed {
            let Some(page) = pages.next() else { return Ok(None) };
            let records = page
                .into_iter()
                .enumerate()
                .map(|(k, (id, name, age))| SourceRecord {
                    id: id.to_string(),
                    timestamp_us: now,
                    data: format!(r#"{{"id":{id},"name":"{name}","age":{age}}}"#),
                    destination_id: self.destination_for(self.next + k as u64),
                })
                .collect::<Vec<_>>();
            self.next += records.len() as u64;
            return Ok(Some(records));
        }
        if self.next >= self.total {
            return Ok(None);
        }
        let end = (self.next + self.page_size as u64).min(self.total);
        let mut records = Vec::with_capacity((end - self.next) as usize);
        let mut num = itoa::Buffer::new();
        for i in self.next..end {
            // Hand-assembled with itoa: core's integer formatting was a tenth
            // of the whole run's time.
            let mut data = String::with_capacity(96);
            data.push_str(r#"{"id":"#);
            data.push_str(num.format(i));
            data.push_str(r#","name":"bizon-"#);
            data.push_str(num.format(i));
            data.push_str(r#"","age":"#);
            data.push_str(num.format(i % 97));
            data.push_str(if i % 2 == 0 {
                r#","active":true,"score":"#
            } else {
                r#","active":false,"score":"#
            });
            data.push_str(num.format(i / 2));
            // Python's repr of i * 0.5: "0.0", "0.5", "1.0", ...
            data.push_str(if i % 2 == 0 { ".0" } else { ".5" });
            data.push_str(r#","tags":["a","b"]}"#);
            records.push(SourceRecord {
                id: num.format(i).to_string(),
                timestamp_us: now,
                data,
                destination_id: self.destination_for(i),
            });
        }
        self.next = end;
        Ok(Some(records))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(total: Option<u64>, page_size: usize, ids: &[&str]) -> DummySourceConfig {
        let yaml = format!(
            "name: dummy\nstream: creatures\npage_size: {page_size}\ndestination_ids: [{}]\n{}",
            ids.join(", "),
            total.map(|t| format!("total_records: {t}\n")).unwrap_or_default()
        );
        serde_saphyr::from_str(&yaml).unwrap()
    }

    fn drain(mut s: DummySource) -> Vec<Vec<SourceRecord>> {
        std::iter::from_fn(|| s.next_page().unwrap()).collect()
    }

    #[test]
    fn generates_the_documented_records_in_pages() {
        let pages = drain(DummySource::new(&config(Some(5), 2, &[])));
        assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
        let r = &pages[1][1];
        assert_eq!(r.id, "3");
        assert_eq!(
            r.data,
            r#"{"id":3,"name":"bizon-3","age":3,"active":false,"score":1.5,"tags":["a","b"]}"#
        );
        let v: serde_json::Value = serde_json::from_str(&pages[0][0].data).unwrap();
        assert_eq!(v["score"], 0.0);
        assert_eq!(v["active"], true);
    }

    #[test]
    fn spreads_records_round_robin_over_destination_ids() {
        let pages = drain(DummySource::new(&config(Some(4), 10, &["a", "b"])));
        let ids: Vec<_> = pages[0]
            .iter()
            .map(|r| r.destination_id.as_deref().unwrap().to_string())
            .collect();
        assert_eq!(ids, ["a", "b", "a", "b"]);
    }

    #[test]
    fn without_total_records_serves_bizons_creatures() {
        let pages = drain(DummySource::new(&config(None, 10, &[])));
        assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
        assert_eq!(pages[0][0].data, r#"{"id":9898,"name":"bizon","age":26}"#);
        assert_eq!(pages[0][0].id, "9898");
    }
}
