//! A Kafka broker for the tests: tansu from the repo's .venv
//! (scripts/install-kafka.sh) on a free port with in-memory storage, started
//! once per test process; or a real cluster named by BIZON_TEST_KAFKA_BROKERS.
//! With an rdkafka admin client, producer and committed-offset reader.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::TopicPartitionList;

use super::common::{free_port, require_tool, spawn_watched, venv_tool, wait_for_listener, wait_until};

const TIMEOUT: Duration = Duration::from_secs(30);

pub struct Broker {
    pub servers: String,
}

/// The broker the tests share, started by the first test that asks (a
/// missing tansu fails the test).
pub fn broker() -> &'static Broker {
    static BROKER: OnceLock<Broker> = OnceLock::new();
    BROKER.get_or_init(|| match std::env::var("BIZON_TEST_KAFKA_BROKERS") {
        Ok(servers) => Broker { servers },
        Err(_) => launch_on(free_port(), None),
    })
}

/// A tansu broker of its own (an outside cluster cannot do this) that tells
/// clients to connect to `advertised` (HOST:PORT) rather than where it
/// listens, as a hostile broker would.
pub fn broker_advertising(advertised: &str) -> Broker {
    launch_on(free_port(), Some(advertised))
}

/// A tansu broker of its own, which [`Broker::restart_advertising`] can make
/// advertise another address mid-run.
pub fn broker_of_its_own() -> Broker {
    launch_on(free_port(), None)
}

fn launch_on(port: u16, advertised: Option<&str>) -> Broker {
    let candidates: Vec<PathBuf> = std::env::var_os("TANSU")
        .map(PathBuf::from)
        .into_iter()
        .chain([venv_tool("tansu")])
        .collect();
    let tansu = require_tool("tansu", &candidates, "bash scripts/install-kafka.sh");
    let url = format!("tcp://127.0.0.1:{port}");
    let advertised = advertised.map_or_else(|| url.clone(), |a| format!("tcp://{a}"));
    let log = std::env::temp_dir().join(format!("bizon-kafka-e2e-{}-{port}.log", std::process::id()));
    spawn_watched(
        &tansu,
        &[
            "broker",
            "--listener-url",
            &url,
            "--advertised-listener-url",
            &advertised,
            "--storage-engine",
            "memory://tansu/",
        ],
        &[],
        &log,
    );
    let servers = format!("127.0.0.1:{port}");
    wait_for_listener(&servers, "tansu", &log);
    Broker { servers }
}

/// A name no other test (or earlier run against a real cluster) uses.
pub fn unique(prefix: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!("{prefix}-{}-{n}-{nanos}", std::process::id())
}

impl Broker {
    /// Stops this broker (one of [`broker_of_its_own`]) and starts another
    /// on its port that advertises `advertised` (HOST:PORT), with empty
    /// storage: to its clients, a broker that changed its address.
    pub fn restart_advertising(&self, advertised: &str) {
        let url = format!("tcp://{}", self.servers);
        for entry in std::fs::read_dir("/proc").unwrap().flatten() {
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
            let tansu = args.first().is_some_and(|a| a.ends_with(b"tansu"));
            if tansu && args.contains(&url.as_bytes()) {
                let pid = entry.file_name().to_string_lossy().into_owned();
                Command::new("kill").args(["-9", &pid]).status().unwrap();
            }
        }
        wait_until(&format!("tansu on {} to stop", self.servers), || {
            std::net::TcpStream::connect(&self.servers).is_err()
        });
        let port = self.servers.rsplit_once(':').unwrap().1.parse().unwrap();
        launch_on(port, Some(advertised));
    }

    fn client(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.servers);
        c
    }

    pub fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = self.client().create().unwrap();
        let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let results = rt
            .block_on(admin.create_topics(&[topic], &AdminOptions::new().operation_timeout(Some(TIMEOUT))))
            .unwrap();
        for r in results {
            r.unwrap_or_else(|(t, e)| panic!("creating topic {t}: {e}"));
        }
    }

    /// A producer that sends each record in a batch of its own (tansu
    /// 0.6.0 answers a fetch from inside a record batch with the next batch).
    pub fn producer(&self) -> TestProducer {
        self.producer_with(&[("linger.ms", "0"), ("batch.num.messages", "1")])
    }

    /// A producer with these librdkafka settings (the benches batch as a
    /// real producer does, for volume).
    pub fn producer_with(&self, settings: &[(&str, &str)]) -> TestProducer {
        let mut config = self.client();
        for (key, value) in settings {
            config.set(*key, *value);
        }
        TestProducer {
            producer: config.create().unwrap(),
        }
    }

    /// The group's committed offset of each partition (-1 for none).
    pub fn committed(&self, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
        let consumer: BaseConsumer = self.client().set("group.id", group).create().unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition(topic, p);
        }
        let committed = consumer.committed_offsets(tpl, TIMEOUT).unwrap();
        (0..partitions)
            .map(|p| match committed.find_partition(topic, p).map(|e| e.offset()) {
                Some(rdkafka::Offset::Offset(o)) => o,
                _ => -1,
            })
            .collect()
    }

    /// High watermarks of each partition.
    pub fn high_watermarks(&self, topic: &str, partitions: i32) -> Vec<i64> {
        let consumer: BaseConsumer = self.client().create().unwrap();
        (0..partitions)
            .map(|p| consumer.fetch_watermarks(topic, p, TIMEOUT).unwrap().1)
            .collect()
    }

    /// The offsets `topic`'s partitions serve below `ends`, read from the
    /// beginning. A broker that lost part of its log in a crash can serve
    /// holes (tansu on s3://), which no consumer can read.
    pub fn served(&self, topic: &str, ends: &[i64]) -> BTreeSet<(i64, i64)> {
        use rdkafka::message::Message;
        let consumer: BaseConsumer = self
            .client()
            .set("group.id", unique("reader"))
            .set("enable.partition.eof", "true")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..ends.len() as i32 {
            tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning).unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let mut served = BTreeSet::new();
        let mut done = vec![false; ends.len()];
        let deadline = Instant::now() + TIMEOUT;
        while done.contains(&false) && Instant::now() < deadline {
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    let (p, o) = (m.partition() as usize, m.offset());
                    if o < ends[p] {
                        served.insert((p as i64, o));
                    }
                    done[p] |= o + 1 >= ends[p];
                }
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => done[p as usize] = true,
                _ => {}
            }
        }
        served
    }

    /// The first `count` messages of `topic` (fewer if they do not come
    /// within the timeout). Counted, not read to the high watermark: tansu's
    /// ListOffsets answers the last batch's base + 1.
    pub fn read_all(&self, topic: &str, partitions: i32, count: usize) -> Vec<Read> {
        use rdkafka::message::{Headers, Message};
        let consumer: BaseConsumer = self
            .client()
            .set("group.id", unique("reader"))
            .set("auto.offset.reset", "earliest")
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning).unwrap();
        }
        consumer.assign(&tpl).unwrap();
        let mut out = Vec::new();
        let deadline = Instant::now() + TIMEOUT;
        while out.len() < count && Instant::now() < deadline {
            if let Some(Ok(m)) = consumer.poll(Duration::from_millis(200)) {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|h| {
                                (
                                    h.key.to_string(),
                                    String::from_utf8_lossy(h.value.unwrap_or_default()).into(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                out.push(Read {
                    headers,
                    value: m.payload().unwrap_or_default().to_vec(),
                });
            }
        }
        out
    }
}

/// A message as [`Broker::read_all`] read it.
pub struct Read {
    pub headers: BTreeMap<String, String>,
    pub value: Vec<u8>,
}

pub struct TestProducer {
    producer: BaseProducer,
}

impl TestProducer {
    pub fn send(
        &self,
        topic: &str,
        partition: i32,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&str, Option<&[u8]>)],
    ) {
        let mut h = OwnedHeaders::new();
        for (k, v) in headers {
            h = h.insert(Header { key: k, value: *v });
        }
        let mut record = BaseRecord::<[u8], [u8]>::to(topic).partition(partition).headers(h);
        if let Some(k) = key {
            record = record.key(k);
        }
        if let Some(v) = value {
            record = record.payload(v);
        }
        let mut record = Some(record);
        while let Some(r) = record.take() {
            match self.producer.send(r) {
                Ok(()) => {}
                Err((e, r)) if e.rdkafka_error_code() == Some(rdkafka::types::RDKafkaErrorCode::QueueFull) => {
                    self.producer.poll(Duration::from_millis(50));
                    record = Some(r);
                }
                Err((e, _)) => panic!("produce: {e}"),
            }
        }
        self.producer.poll(Duration::ZERO);
    }

    pub fn flush(&self) {
        self.flush_within(TIMEOUT);
    }

    /// Waits up to `limit` for every message sent to be delivered.
    pub fn flush_within(&self, limit: Duration) {
        if let Err(e) = self.producer.flush(limit) {
            panic!(
                "{} messages undelivered after {limit:?}: {e}",
                self.producer.in_flight_count()
            );
        }
    }
}
