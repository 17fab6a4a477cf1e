//! The `kafka` source section, as Bizon 0.6.4 writes it
//! (`bizon/connectors/sources/kafka/src/config.py`), and the librdkafka
//! settings it becomes.
//!
//! Unlike Bizon, `consumer_config` is merged over the defaults rather than
//! replacing them, and a setting that would let librdkafka commit offsets of
//! records not yet written is refused.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::config::{IgnoredAny2, SyncMode};

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct KafkaSourceConfig {
    pub name: String,
    #[serde(default)]
    pub stream: Option<String>,
    #[serde(default)]
    pub sync_mode: SyncMode,
    pub bootstrap_servers: String,
    #[serde(default = "default_group_id")]
    pub group_id: String,
    /// Topics and the destination_id their records go to; filled from
    /// `streams:` when empty.
    #[serde(default)]
    pub topics: Vec<TopicConfig>,
    /// A single topic, as Bizon's own example files write it (Bizon itself
    /// ignores the key); used as `topics: [{name, destination_id: name}]`
    /// when `topics` is empty.
    #[serde(default)]
    pub topic: Option<String>,
    /// Most messages in one page handed to the pipeline.
    #[serde(default = "default_batch_size")]
    pub batch_size: usize,
    /// Seconds to wait for the broker's metadata and watermarks.
    #[serde(default = "default_consumer_timeout")]
    pub consumer_timeout: u64,
    /// librdkafka settings, merged over [`default_consumer_config`].
    #[serde(default)]
    pub consumer_config: BTreeMap<String, ConfigValue>,
    #[serde(default)]
    pub message_encoding: MessageEncoding,
    #[serde(default)]
    pub authentication: Option<KafkaAuthentication>,
    #[serde(default = "yes")]
    pub skip_message_empty_value: bool,
    #[serde(default)]
    pub skip_message_invalid_keys: bool,
    #[serde(default)]
    pub skip_message_on_decode_error: bool,
    /// Bizon's base source keys, accepted so its files run unchanged.
    #[serde(default)]
    pub force_ignore_checkpoint: Option<IgnoredAny2>,
    #[serde(default)]
    pub max_iterations: Option<IgnoredAny2>,
    /// The addresses the brokers may advertise, when something narrower
    /// than any applies (`serve`: the tenant's egress ceiling). Set by the
    /// host, never read from a file.
    #[serde(skip)]
    pub advertised_within: Option<BrokerGate>,
}

/// Which `host:port` a broker may advertise: a client connects to what the
/// brokers advertise, not only to `bootstrap_servers`, so a broker a tenant
/// controls could otherwise point the host at any address.
#[derive(Clone)]
pub struct BrokerGate(std::sync::Arc<Gate>);

/// Whether a broker may be reached at `host:port`.
type Allows = dyn Fn(&str, u16) -> bool + Send + Sync;

struct Gate {
    allows: Box<Allows>,
    /// The allowed addresses as the operator wrote them, for errors.
    ceiling: String,
}

impl BrokerGate {
    pub fn new(ceiling: String, allows: impl Fn(&str, u16) -> bool + Send + Sync + 'static) -> Self {
        Self(std::sync::Arc::new(Gate {
            allows: Box::new(allows),
            ceiling,
        }))
    }

    pub fn allows(&self, host: &str, port: u16) -> bool {
        (self.0.allows)(host, port)
    }

    pub fn ceiling(&self) -> &str {
        &self.0.ceiling
    }
}

impl std::fmt::Debug for BrokerGate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "BrokerGate({})", self.0.ceiling)
    }
}

impl PartialEq for BrokerGate {
    fn eq(&self, other: &Self) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }
}

pub const KAFKA_KEYS: &[&str] = &[
    "bootstrap_servers",
    "group_id",
    "topics",
    "topic",
    "batch_size",
    "consumer_timeout",
    "consumer_config",
    "message_encoding",
    "skip_message_empty_value",
    "skip_message_invalid_keys",
    "skip_message_on_decode_error",
];

/// Keys in Bizon's example files that Bizon 0.6.4 no longer reads.
pub const KAFKA_IGNORED_KEYS: &[&str] = &["nb_bytes_schema_id", "timestamp_ms_name"];

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TopicConfig {
    pub name: String,
    pub destination_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
pub enum MessageEncoding {
    /// Bizon's default: Confluent/Apicurio framed Avro, schemas from the registry.
    #[default]
    #[serde(rename = "avro")]
    Avro,
    /// JSON text (Bizon calls it `utf-8`).
    #[serde(rename = "utf-8", alias = "json")]
    Utf8,
}

/// A YAML scalar of `consumer_config`, as librdkafka wants it: text.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(untagged)]
pub enum ConfigValue {
    Bool(bool),
    Int(i64),
    Float(f64),
    Text(String),
}

impl ConfigValue {
    pub fn as_text(&self) -> String {
        match self {
            ConfigValue::Bool(b) => b.to_string(),
            ConfigValue::Int(i) => i.to_string(),
            ConfigValue::Float(f) => f.to_string(),
            ConfigValue::Text(t) => t.clone(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct KafkaAuthentication {
    /// Only `basic` (SASL with a user name and password), as in Bizon.
    #[serde(rename = "type", default = "basic")]
    pub kind: String,
    #[serde(default)]
    pub params: Option<BasicParams>,
    #[serde(default)]
    pub schema_registry_type: Option<String>,
    #[serde(default)]
    pub schema_registry_url: String,
    #[serde(default)]
    pub schema_registry_username: String,
    #[serde(default)]
    pub schema_registry_password: String,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BasicParams {
    pub username: String,
    pub password: String,
}

fn default_group_id() -> String {
    "bizon".into()
}
fn default_batch_size() -> usize {
    100
}
fn default_consumer_timeout() -> u64 {
    10
}
fn yes() -> bool {
    true
}
fn basic() -> String {
    "basic".into()
}

/// Settings that would break "acknowledged only after the write", with the
/// value that is refused.
const UNSAFE: &[(&str, &str, &str)] = &[(
    "enable.auto.offset.store",
    "true",
    "librdkafka would then commit the offsets of records as soon as they are read, before they are written",
)];

/// Keys bizon-host sets itself from the source's own fields.
const OWNED: &[(&str, &str)] = &[("group.id", "group_id"), ("bootstrap.servers", "bootstrap_servers")];

impl KafkaSourceConfig {
    /// The topics to read, from `topics`, else `topic`.
    pub fn topic_map(&self) -> Vec<TopicConfig> {
        match (&self.topics[..], &self.topic) {
            ([], Some(topic)) => vec![TopicConfig {
                name: topic.clone(),
                destination_id: topic.clone(),
            }],
            (topics, _) => topics.to_vec(),
        }
    }

    /// Our defaults, then the authentication, then `consumer_config` over
    /// them; `Err` names a refused key.
    pub fn client_settings(&self) -> Result<BTreeMap<String, String>, String> {
        let mut settings: BTreeMap<String, String> = [
            ("auto.offset.reset", "earliest"),
            ("enable.auto.commit", "false"),
            ("enable.auto.offset.store", "false"),
            ("session.timeout.ms", "45000"),
            ("max.poll.interval.ms", "600000"),
            // Eager rebalancing: a revoke hands back every partition at
            // once, which the drain-then-commit step relies on being simple.
            ("partition.assignment.strategy", "range,roundrobin"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        if let Some(auth) = &self.authentication {
            if auth.kind != "basic" {
                return Err(format!(
                    "authentication.type: `{}` is not supported; expected `basic` (SASL; \
                     set consumer_config `sasl.mechanisms` to SCRAM-SHA-256 or SCRAM-SHA-512 for SCRAM)",
                    auth.kind
                ));
            }
            if let Some(p) = &auth.params {
                settings.insert("security.protocol".into(), "SASL_SSL".into());
                settings.insert("sasl.mechanisms".into(), "PLAIN".into());
                settings.insert("sasl.username".into(), p.username.clone());
                settings.insert("sasl.password".into(), p.password.clone());
            }
        }
        for (key, value) in &self.consumer_config {
            let text = value.as_text();
            if let Some((_, bad, why)) = UNSAFE.iter().find(|(k, v, _)| k == key && text.eq_ignore_ascii_case(v)) {
                return Err(format!("consumer_config.{key}: `{bad}` is refused: {why}"));
            }
            if let Some((_, field)) = OWNED.iter().find(|(k, _)| k == key) {
                return Err(format!(
                    "consumer_config.{key}: set it with the source's `{field}` field"
                ));
            }
            settings.insert(key.clone(), text);
        }
        settings.insert("group.id".into(), self.group_id.clone());
        settings.insert("bootstrap.servers".into(), self.bootstrap_servers.clone());
        Ok(settings)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(extra: &str) -> KafkaSourceConfig {
        serde_saphyr::from_str(&format!("name: kafka\nbootstrap_servers: b:9092\n{extra}")).unwrap()
    }

    #[test]
    fn bizon_defaults() {
        let c = config("");
        assert_eq!(c.group_id, "bizon");
        assert_eq!((c.batch_size, c.consumer_timeout), (100, 10));
        assert_eq!(c.message_encoding, MessageEncoding::Avro);
        assert_eq!(c.sync_mode, SyncMode::FullRefresh);
        assert!(c.skip_message_empty_value && !c.skip_message_invalid_keys && !c.skip_message_on_decode_error);
        assert_eq!(
            config("message_encoding: utf-8").message_encoding,
            MessageEncoding::Utf8
        );
    }

    #[test]
    fn consumer_config_merges_over_the_defaults() {
        let c = config("consumer_config:\n  session.timeout.ms: 6000\n  fetch.min.bytes: 1\n");
        let s = c.client_settings().unwrap();
        assert_eq!(s["session.timeout.ms"], "6000");
        assert_eq!(s["fetch.min.bytes"], "1");
        // Still there, unlike Bizon where a consumer_config replaces them all.
        assert_eq!(s["enable.auto.commit"], "false");
        assert_eq!(s["auto.offset.reset"], "earliest");
        assert_eq!(s["group.id"], "bizon");
    }

    #[test]
    fn an_unsafe_setting_is_refused_naming_the_key() {
        let c = config("consumer_config:\n  enable.auto.offset.store: true\n");
        let e = c.client_settings().unwrap_err();
        assert!(
            e.starts_with("consumer_config.enable.auto.offset.store: `true` is refused"),
            "{e}"
        );
        let c = config("consumer_config:\n  group.id: x\n");
        assert!(c.client_settings().unwrap_err().contains("group_id"));
    }

    #[test]
    fn basic_authentication_is_sasl_plain_and_scram_is_a_consumer_config_away() {
        let auth = "authentication:\n  type: basic\n  params:\n    username: u\n    password: p\n";
        let s = config(auth).client_settings().unwrap();
        assert_eq!(
            (&*s["security.protocol"], &*s["sasl.mechanisms"], &*s["sasl.username"]),
            ("SASL_SSL", "PLAIN", "u")
        );
        let s = config(&format!("{auth}consumer_config:\n  sasl.mechanisms: SCRAM-SHA-512\n"))
            .client_settings()
            .unwrap();
        assert_eq!(s["sasl.mechanisms"], "SCRAM-SHA-512");
    }

    #[test]
    fn a_single_topic_key_is_read_as_bizons_examples_write_it() {
        let c = config("topic: t1");
        assert_eq!(
            c.topic_map(),
            vec![TopicConfig {
                name: "t1".into(),
                destination_id: "t1".into()
            }]
        );
    }
}
