//! A Kafka broker for the tests: tansu from the repo's .venv
//! (scripts/install-kafka.sh) on a free port with in-memory storage, started
//! once per test binary; or a real cluster named by BIZON_TEST_KAFKA_BROKERS.
//! With an rdkafka admin client, producer and committed-offset reader.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::topic_partition_list::TopicPartitionList;

const TIMEOUT: Duration = Duration::from_secs(30);

pub struct Broker {
    pub servers: String,
}

/// The broker, or None (after a loud message) when tansu is missing outside
/// CI. In CI a missing broker fails the test.
pub fn broker() -> Option<&'static Broker> {
    static BROKER: OnceLock<Option<Broker>> = OnceLock::new();
    BROKER.get_or_init(start).as_ref()
}

fn start() -> Option<Broker> {
    if let Ok(servers) = std::env::var("BIZON_TEST_KAFKA_BROKERS") {
        return Some(Broker { servers });
    }
    launch(None)
}

/// A broker of its own that tells clients to connect to `advertised`
/// (HOST:PORT) rather than where it listens, as a hostile broker would;
/// None where `broker` gives None, or against an outside cluster.
pub fn broker_advertising(advertised: &str) -> Option<Broker> {
    if std::env::var_os("BIZON_TEST_KAFKA_BROKERS").is_some() {
        return None;
    }
    launch(Some(advertised))
}

/// A broker of its own, which [`Broker::restart_advertising`] can make
/// advertise another address mid-run; None as for [`broker_advertising`].
pub fn broker_of_its_own() -> Option<Broker> {
    if std::env::var_os("BIZON_TEST_KAFKA_BROKERS").is_some() {
        return None;
    }
    launch(None)
}

fn launch(advertised: Option<&str>) -> Option<Broker> {
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    launch_on(port, advertised)
}

fn launch_on(port: u16, advertised: Option<&str>) -> Option<Broker> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let tansu = std::env::var_os("TANSU")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join(".venv/bin/tansu"));
    if !tansu.exists() {
        let message = format!("tansu missing ({}): run scripts/install-kafka.sh", tansu.display());
        if std::env::var_os("CI").is_some() {
            panic!("{message}");
        }
        eprintln!("\n!!!!!!!! SKIPPED: {message} !!!!!!!!\n");
        return None;
    }
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
        &log,
    );
    let servers = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(30);
    while std::net::TcpStream::connect(&servers).is_err() {
        if Instant::now() > deadline {
            panic!(
                "tansu did not listen on {servers}; log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Some(Broker { servers })
}

/// Starts `program args` under a watchdog shell that kills it once this test
/// process is gone: statics are never dropped, so nothing else would.
fn spawn_watched(program: &Path, args: &[&str], log: &Path) {
    let quoted: Vec<String> = std::iter::once(program.display().to_string())
        .chain(args.iter().map(|a| a.to_string()))
        .map(|a| format!("'{a}'"))
        .collect();
    let script = format!(
        "{} >'{}' 2>&1 & child=$!; while kill -0 {} 2>/dev/null; do sleep 1; done; kill $child",
        quoted.join(" "),
        log.display(),
        std::process::id()
    );
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawning tansu");
    std::thread::spawn(move || child.wait());
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
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(&self.servers).is_ok() {
            assert!(Instant::now() < deadline, "tansu on {} did not stop", self.servers);
            std::thread::sleep(Duration::from_millis(50));
        }
        let port = self.servers.rsplit_once(':').unwrap().1.parse().unwrap();
        launch_on(port, Some(advertised)).unwrap();
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
    /// fetches from inside a batch skip to the next one: REFERENCE section 5).
    pub fn producer(&self) -> TestProducer {
        let producer = self
            .client()
            .set("linger.ms", "0")
            .set("batch.num.messages", "1")
            .create()
            .unwrap();
        TestProducer { producer }
    }

    /// A producer that batches as a real one does (for volume).
    pub fn bulk_producer(&self) -> TestProducer {
        let producer = self
            .client()
            .set("linger.ms", "20")
            .set("batch.num.messages", "10000")
            .set("queue.buffering.max.messages", "1000000")
            .create()
            .unwrap();
        TestProducer { producer }
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
        self.producer.flush(TIMEOUT).unwrap();
    }
}
