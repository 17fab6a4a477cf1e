//! bench/soak.sh's producer (not a test: ignored, run by the script): it
//! creates the topics `BIZON_SOAK_TOPICS` (comma-separated, 2 partitions)
//! on `BIZON_SOAK_BROKER` and writes `BIZON_SOAK_RATE` messages a second to
//! each, `{"topic": T, "id": N}`, until the file `stop` appears in
//! `BIZON_SOAK_DIR`; each second it writes how many it has sent (and the
//! broker has acknowledged: it flushes first) to `BIZON_SOAK_DIR/sent`.

use std::time::{Duration, Instant};

use crate::support::kafka::Broker;

fn var(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| panic!("{name} is not set: run bench/soak.sh"))
}

#[test]
#[ignore = "bench/soak.sh's producer"]
fn produce() {
    let broker = Broker {
        servers: var("BIZON_SOAK_BROKER"),
    };
    let topics: Vec<String> = var("BIZON_SOAK_TOPICS").split(',').map(str::to_string).collect();
    let rate: u64 = var("BIZON_SOAK_RATE").parse().unwrap();
    let dir = std::path::PathBuf::from(var("BIZON_SOAK_DIR"));
    for topic in &topics {
        broker.create_topic(topic, 2);
    }
    let producer = broker.producer_with(&[("linger.ms", "5")]);
    let (mut sent, started) = (0u64, Instant::now());
    for second in 1.. {
        for n in 0..rate {
            for topic in &topics {
                let value = format!("{{\"topic\":\"{topic}\",\"id\":{}}}", sent / topics.len() as u64 + n);
                producer.send(topic, (n % 2) as i32, None, Some(value.as_bytes()), &[]);
            }
        }
        producer.flush();
        sent += rate * topics.len() as u64;
        // Written aside and renamed: the script reads it every 10 s, and a
        // read between the truncation and the write saw nothing (a soak's
        // plot showed 0 produced at 34 minutes).
        std::fs::write(dir.join("sent.new"), sent.to_string()).unwrap();
        std::fs::rename(dir.join("sent.new"), dir.join("sent")).unwrap();
        if dir.join("stop").exists() {
            return;
        }
        let next = started + Duration::from_secs(second);
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
    }
}
