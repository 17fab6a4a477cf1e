//! Dead letters produced to a Kafka topic: the original key and value bytes
//! with the original headers, plus `bizon.*` headers saying where the message
//! came from and why it is here. Each `send` waits for the broker's ack.
//! With a gate on the brokers (`serve`), they are checked as the kafka
//! source's are (`source/kafka/advertised.rs`).

use std::collections::BTreeMap;
use std::time::Duration;

use std::sync::Mutex;

use rdkafka::client::ClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::message::{DeliveryResult, Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer, ProducerContext};
use rdkafka::statistics::Statistics;

use super::{DeadLetterError, Letter, Sink};
use crate::source::kafka::advertised;
use crate::source::kafka::config::BrokerGate;

const FLUSH_TIMEOUT: Duration = Duration::from_secs(30);
/// How long the brokers are asked for their addresses.
const PROBE_TIMEOUT: Duration = Duration::from_secs(10);

/// Settings of the source's client that a producer to the same cluster needs.
const SHARED_PREFIXES: &[&str] = &["bootstrap.servers", "security.", "sasl.", "ssl."];

pub struct TopicSink {
    producer: BaseProducer<Deliveries>,
    topic: String,
}

/// Remembers the first failed delivery since the last `send`: a flush
/// returns once the queue is empty, whether its messages arrived or not.
/// And the first broker learned outside the gate, which ends the run.
#[derive(Default)]
struct Deliveries {
    failed: Mutex<Option<String>>,
    gate: Option<BrokerGate>,
    outside: Mutex<Option<String>>,
}

impl ClientContext for Deliveries {
    fn stats(&self, statistics: Statistics) {
        let outside = self
            .gate
            .as_ref()
            .and_then(|g| advertised::learned_outside(g, &statistics));
        if let Some(outside) = outside {
            self.outside.lock().expect("broker state").get_or_insert(outside);
        }
    }
}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = result {
            self.failed
                .lock()
                .expect("delivery state")
                .get_or_insert_with(|| e.to_string());
        }
    }
}

impl TopicSink {
    pub fn open(
        topic: &str,
        bootstrap_servers: Option<&str>,
        source: Option<&BTreeMap<String, String>>,
        gate: Option<BrokerGate>,
    ) -> Result<Self, DeadLetterError> {
        let mut config = ClientConfig::new();
        for (k, v) in source.into_iter().flatten() {
            if SHARED_PREFIXES.iter().any(|p| k.starts_with(p)) {
                config.set(k, v);
            }
        }
        if let Some(servers) = bootstrap_servers {
            config.set("bootstrap.servers", servers);
        }
        if config.get("bootstrap.servers").is_none() {
            return Err(DeadLetterError::Kafka {
                topic: topic.into(),
                message: "no brokers: give dead_letter.bootstrap_servers (the source is not kafka)".into(),
            });
        }
        let fail = |message: String| DeadLetterError::Kafka {
            topic: topic.into(),
            message,
        };
        if let Some(gate) = &gate {
            advertised::check_before_connecting(config.config_map(), gate, PROBE_TIMEOUT).map_err(fail)?;
            config.set("statistics.interval.ms", advertised::STATISTICS_EVERY_MS);
        }
        config.set("enable.idempotence", "true").set("acks", "all");
        let deliveries = Deliveries {
            gate,
            ..Deliveries::default()
        };
        let producer = config
            .create_with_context(deliveries)
            .map_err(|e| DeadLetterError::Kafka {
                topic: topic.into(),
                message: e.to_string(),
            })?;
        Ok(Self {
            producer,
            topic: topic.into(),
        })
    }
}

impl TopicSink {
    fn broker_outside(&self) -> Result<(), DeadLetterError> {
        match self.producer.context().outside.lock().expect("broker state").clone() {
            Some(message) => Err(DeadLetterError::Kafka {
                topic: self.topic.clone(),
                message,
            }),
            None => Ok(()),
        }
    }
}

impl Sink for TopicSink {
    fn write(&mut self, letters: &[Letter]) -> Result<(), DeadLetterError> {
        let fail = |message: String| DeadLetterError::Kafka {
            topic: self.topic.clone(),
            message,
        };
        // Statistics are served by polls: what arrived since the last write.
        self.producer.poll(Duration::ZERO);
        self.broker_outside()?;
        for letter in letters {
            let mut headers = OwnedHeaders::new();
            let (key, value): (Option<&[u8]>, Option<&[u8]>) = match letter {
                Letter::Undecodable {
                    topic,
                    partition,
                    offset,
                    key,
                    value,
                    headers: original,
                    error,
                    ..
                } => {
                    for (k, v) in original {
                        headers = headers.insert(Header {
                            key: k,
                            value: v.as_deref(),
                        });
                    }
                    for (k, v) in [
                        ("bizon.kind", "undecodable".to_string()),
                        ("bizon.error", error.clone()),
                        ("bizon.topic", topic.clone()),
                        ("bizon.partition", partition.to_string()),
                        ("bizon.offset", offset.to_string()),
                    ] {
                        headers = headers.insert(Header {
                            key: k,
                            value: Some(&v),
                        });
                    }
                    (key.as_deref(), value.as_deref())
                }
                Letter::Rejected {
                    destination_id,
                    source_record_id,
                    reason,
                    source_data,
                } => {
                    for (k, v) in [
                        ("bizon.kind", "rejected"),
                        ("bizon.reason", reason.as_str()),
                        ("bizon.destination_id", destination_id.as_str()),
                        ("bizon.source_record_id", source_record_id.as_str()),
                    ] {
                        headers = headers.insert(Header { key: k, value: Some(v) });
                    }
                    (None, source_data.as_deref().map(str::as_bytes))
                }
            };
            let mut record = BaseRecord::<[u8], [u8]>::to(&self.topic).headers(headers);
            if let Some(k) = key {
                record = record.key(k);
            }
            if let Some(v) = value {
                record = record.payload(v);
            }
            self.producer.send(record).map_err(|(e, _)| fail(e.to_string()))?;
        }
        self.producer.flush(FLUSH_TIMEOUT).map_err(|e| fail(e.to_string()))?;
        self.broker_outside()?;
        match self.producer.context().failed.lock().expect("delivery state").take() {
            Some(e) => Err(fail(format!("delivery failed: {e}"))),
            None => Ok(()),
        }
    }
}
