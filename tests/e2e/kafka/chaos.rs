//! Exactly-once through crashes: a producer keeps writing while a
//! stream-mode run is SIGKILLed at random moments and restarted, each time
//! only after it made progress (a run that reads nothing fails the test,
//! so a stalled group cannot pass for exactly-once); then a last run drains
//! the topic. Every message must be in the output once.
//!
//! `BIZON_CHAOS_KILLS` (default 6) sets the kills; `bench/chaos.sh` runs it
//! with 20 and prints the counts.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{interrupt, positions, rows, start_streaming};
use crate::support::kafka::{broker, unique, Broker};
use crate::support::{poll, signal};

const PARTITIONS: i32 = 3;

/// What a chaos run counted.
#[derive(Debug)]
pub struct Counts {
    pub produced: usize,
    pub published: usize,
    pub duplicates: usize,
    pub lost: usize,
    pub replayed: u64,
}

/// Produces `per_round` JSON messages every 100 ms until `stop`, from id
/// `first` on; the count so far in `sent`.
fn keep_producing(
    b: &Broker,
    topic: &str,
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicUsize>,
) -> std::thread::JoinHandle<()> {
    let (servers, topic) = (b.servers.clone(), topic.to_string());
    std::thread::spawn(move || {
        let b = Broker { servers };
        let mut next = 0;
        while !stop.load(Ordering::Relaxed) {
            super::produce_json(&b, &topic, PARTITIONS, 100, next);
            next += 100;
            sent.store(next, Ordering::Relaxed);
            std::thread::sleep(Duration::from_millis(100));
        }
    })
}

/// Lines in the output now.
fn written(out: &Path) -> usize {
    rows(out).len()
}

/// The chaos run itself; `extra` goes into the source section.
pub fn kafka_to_file(kills: usize, extra: &str) -> Counts {
    let b = broker();
    let topic = unique("chaos");
    b.create_topic(&topic, PARTITIONS);
    let dir = tempfile::tempdir().unwrap();
    let (group, out) = (unique("g"), dir.path().join("out"));
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicUsize::new(0));
    let producer = keep_producing(b, &topic, stop.clone(), sent.clone());
    let mut seed = 0x9e37_79b9_7f4a_7c15_u64 ^ std::process::id() as u64;
    let mut random = |range: std::ops::Range<u64>| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        range.start + seed % (range.end - range.start)
    };
    for kill in 0..kills {
        let before = written(&out);
        let mut child = start_streaming(b, &group, &topic, &out, extra, &[]);
        let started = Instant::now();
        // Progress first: a run that cannot get its partitions fails here.
        poll(
            || {
                format!(
                    "run {kill} wrote nothing new (had {before} lines): {}",
                    super::log_of(&out)
                )
            },
            || (written(&out) > before).then_some(()),
        );
        std::thread::sleep(Duration::from_millis(random(200..1500)));
        signal(child.id(), libc::SIGKILL);
        child.wait().unwrap();
        eprintln!(
            "chaos: kill {}/{kills} after {:.1} s, {} lines",
            kill + 1,
            started.elapsed().as_secs_f64(),
            written(&out)
        );
    }
    stop.store(true, Ordering::Relaxed);
    producer.join().unwrap();
    let produced = sent.load(Ordering::Relaxed);
    // The drain: a run to the end of what was produced, stopped by SIGTERM.
    let result = out.with_extension("result.json");
    let mut child = start_streaming(
        b,
        &group,
        &topic,
        &out,
        extra,
        &["--result-json", result.to_str().unwrap()],
    );
    let highs = b.high_watermarks(&topic, PARTITIONS);
    let total: i64 = highs.iter().sum();
    assert_eq!(total as usize, produced, "the broker holds what was produced");
    poll(
        || {
            format!(
                "the drain read {} of {produced}: {}",
                written(&out),
                super::log_of(&out)
            )
        },
        || {
            let found = positions(&rows(&out));
            let distinct: std::collections::BTreeSet<_> = found.iter().collect();
            (distinct.len() >= produced).then_some(())
        },
    );
    interrupt(&mut child, &out);
    let found = positions(&rows(&out));
    let mut seen = std::collections::BTreeSet::new();
    let duplicates = found.iter().filter(|p| !seen.insert((*p).clone())).count();
    let lost = (0..PARTITIONS)
        .flat_map(|p| (0..highs[p as usize]).map(move |o| (p as i64, o)))
        .filter(|(p, o)| !seen.contains(&(topic.clone(), *p, *o)))
        .count();
    let report: serde_json::Value = serde_json::from_slice(&std::fs::read(&result).unwrap()).unwrap();
    let counts = Counts {
        produced,
        published: found.len(),
        duplicates,
        lost,
        replayed: report["records_replayed"].as_u64().unwrap_or(0),
    };
    eprintln!(
        "chaos: Kafka -> file, {kills} kills: produced {}, published {}, duplicates {}, lost {}, replays recognised \
         by the last run {}",
        counts.produced, counts.published, counts.duplicates, counts.lost, counts.replayed
    );
    counts
}

fn kills() -> usize {
    std::env::var("BIZON_CHAOS_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(6)
}

#[test]
fn sigkills_at_random_moments_leave_every_message_in_the_file_exactly_once() {
    let counts = kafka_to_file(kills(), "");
    assert_eq!((counts.lost, counts.duplicates), (0, 0), "{counts:?}");
    assert_eq!(counts.published, counts.produced, "{counts:?}");
}
