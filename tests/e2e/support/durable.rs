//! A Kafka broker that keeps its data when it is SIGKILLed: tansu on
//! `s3://` over moto's S3 server (scripts/install-moto.sh), both from the
//! repo's .venv. One S3 server per test process, a bucket per broker; the
//! broker is a child the test kills and starts again on the same port and
//! bucket, which then holds the topics, messages and committed offsets it
//! held. (The PyPI tansu 0.6 has `memory://` and `s3://` storage, not
//! PostgreSQL or SQLite: S3 is its durable one here.)

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::types::RDKafkaErrorCode;

use super::common::{free_port, require_tool, spawn_watched, venv_tool, wait_for_listener, wait_until};
use super::kafka::{unique, Broker};

/// moto's S3 server, started by the first test that asks; its URL.
fn s3() -> &'static str {
    static S3: OnceLock<String> = OnceLock::new();
    S3.get_or_init(|| {
        let moto = require_tool(
            "moto_server",
            &[venv_tool("moto_server")],
            "bash scripts/install-moto.sh",
        );
        let port = free_port();
        let log = std::env::temp_dir().join(format!("bizon-moto-e2e-{}-{port}.log", std::process::id()));
        spawn_watched(&moto, &["-H", "127.0.0.1", "-p", &port.to_string()], &[], &log);
        let addr = format!("127.0.0.1:{port}");
        wait_for_listener(&addr, "moto_server", &log);
        format!("http://{addr}")
    })
}

/// A tansu broker on `s3://BUCKET/` that [`DurableBroker::kill`] and
/// [`DurableBroker::start`] stop and start again with its data. Killed
/// when dropped.
pub struct DurableBroker {
    pub broker: Broker,
    port: u16,
    bucket: String,
    child: Option<Child>,
    pub log: PathBuf,
}

impl DurableBroker {
    /// A broker of its own on a new bucket.
    pub fn new() -> Self {
        let bucket = unique("tansu").to_lowercase();
        // S3's CreateBucket: a PUT of the bucket's path (moto takes any credentials).
        let url = format!("{}/{bucket}", s3());
        let status = reqwest::blocking::Client::new()
            .put(&url)
            .send()
            .unwrap_or_else(|e| panic!("PUT {url}: {e}"))
            .status();
        assert!(status.is_success(), "PUT {url}: {status}");
        let port = free_port();
        let log = std::env::temp_dir().join(format!("bizon-tansu-s3-{}-{port}.log", std::process::id()));
        let mut broker = DurableBroker {
            broker: Broker {
                servers: format!("127.0.0.1:{port}"),
            },
            port,
            bucket,
            child: None,
            log,
        };
        broker.start();
        broker
    }

    /// Starts the broker (again): same port, same bucket.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "the broker runs already");
        let tansu = require_tool(
            "tansu",
            &[std::env::var_os("TANSU")
                .map(PathBuf::from)
                .unwrap_or_else(|| venv_tool("tansu"))],
            "bash scripts/install-kafka.sh",
        );
        let url = format!("tcp://127.0.0.1:{}", self.port);
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .unwrap();
        let child = Command::new(tansu)
            .args(["broker", "--listener-url", &url, "--advertised-listener-url", &url])
            .arg("--storage-engine")
            .arg(format!("s3://{}/", self.bucket))
            .env("AWS_ENDPOINT", s3())
            .env("AWS_ALLOW_HTTP", "true")
            .env("AWS_ACCESS_KEY_ID", "x")
            .env("AWS_SECRET_ACCESS_KEY", "y")
            .env("AWS_DEFAULT_REGION", "us-east-1")
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap();
        self.child = Some(child);
        wait_for_listener(&self.broker.servers, "tansu on s3", &self.log);
    }

    /// SIGKILL: the broker dies at once, without closing anything; returns
    /// once its port is closed.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        wait_until(&format!("tansu on {} to stop", self.broker.servers), || {
            std::net::TcpStream::connect(&self.broker.servers).is_err()
        });
    }

    /// Creates a topic; tansu on S3 can refuse the first request after it
    /// started, so it is tried 10 times, a second apart.
    pub fn create_topic(&self, name: &str, partitions: i32) {
        let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
            .set("bootstrap.servers", &self.broker.servers)
            .create()
            .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(30)));
        let mut last = String::new();
        for _ in 0..10 {
            let topic = NewTopic::new(name, partitions, TopicReplication::Fixed(1));
            match rt.block_on(admin.create_topics(&[topic], &options)) {
                // A try that went through before its answer was lost.
                Ok(results)
                    if results
                        .iter()
                        .all(|r| matches!(r, Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)))) =>
                {
                    return
                }
                Ok(results) => last = format!("{results:?}"),
                Err(e) => last = e.to_string(),
            }
            std::thread::sleep(Duration::from_secs(1));
        }
        panic!("creating topic {name} on tansu (s3): {last}");
    }
}

impl std::ops::Deref for DurableBroker {
    type Target = Broker;

    fn deref(&self) -> &Broker {
        &self.broker
    }
}

impl Drop for DurableBroker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}
