//! Faults a broker cannot produce on demand, from librdkafka's mock cluster
//! (`rdkafka::mocking::MockCluster`, in this test process, on 127.0.0.1):
//! commits that fail, and the broker going down and coming back. The
//! `bizon-host` binary connects to it like to any broker. Each test asserts
//! that no offset is missing and counts the duplicates.

use std::time::Duration;

use rdkafka::mocking::MockCluster;
use rdkafka::types::{RDKafkaApiKey, RDKafkaRespErr};

use super::{
    assert_all_present, interrupt, log_of, positions, positions_in, produce_json, rows, start_streaming,
    wait_for_commits,
};
use crate::support::kafka::{unique, Broker};
use crate::support::{poll, wait_until};

const PARTITIONS: i32 = 3;

type Mock = MockCluster<'static, rdkafka::producer::DefaultProducerContext>;

/// A one-broker mock cluster with a fresh topic of `PARTITIONS` partitions
/// holding `messages` JSON messages.
fn cluster(messages: usize) -> (Mock, Broker, String) {
    let mock = MockCluster::new(1).unwrap();
    let topic = unique("t");
    mock.create_topic(&topic, PARTITIONS, 1).unwrap();
    let b = Broker {
        servers: mock.bootstrap_servers(),
    };
    produce_json(&b, &topic, PARTITIONS, messages, 0);
    (mock, b, topic)
}

/// Commits every 300 ms, so a test sees several in a few seconds.
const QUICK_COMMITS: &str = "    auto.commit.interval.ms: 300\n";

#[test]
fn commit_errors_are_retried_at_the_next_commit_and_nothing_is_lost() {
    let (mock, b, topic) = cluster(150);
    // The coordinator refuses the next commits; later ones go through.
    mock.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED; 4],
    );
    let dir = tempfile::tempdir().unwrap();
    let (group, out) = (unique("g"), dir.path().join("out"));
    let mut child = start_streaming(&b, &group, &topic, &out, QUICK_COMMITS, &[]);
    poll(
        || format!("150 rows: {}", log_of(&out)),
        || (rows(&out).len() >= 150).then_some(()),
    );
    let highs = wait_for_commits(&b, &group, &topic, PARTITIONS, &out);
    interrupt(&mut child, &out);
    let log = log_of(&out);
    assert!(log.contains("commit failed, retried at the next one"), "{log}");
    assert_eq!(assert_all_present(&positions(&rows(&out)), &topic, &highs), 0);
}

#[test]
fn commits_refused_until_the_end_leave_the_offsets_to_be_read_again_and_nothing_is_lost() {
    let (mock, b, topic) = cluster(150);
    mock.request_errors(
        RDKafkaApiKey::OffsetCommit,
        &[RDKafkaRespErr::RD_KAFKA_RESP_ERR_GROUP_AUTHORIZATION_FAILED; 1000],
    );
    let dir = tempfile::tempdir().unwrap();
    let group = unique("g");
    let first = dir.path().join("first");
    let mut child = start_streaming(&b, &group, &topic, &first, QUICK_COMMITS, &[]);
    wait_until("150 rows", || rows(&first).len() >= 150);
    // Time for commits to be tried (and refused) after the last write.
    std::thread::sleep(Duration::from_secs(1));
    interrupt(&mut child, &first);
    assert_eq!(b.committed(&group, &topic, PARTITIONS), vec![-1; PARTITIONS as usize]);

    // The coordinator takes commits again: the next run reads it all again.
    mock.clear_request_errors(RDKafkaApiKey::OffsetCommit);
    let second = dir.path().join("second");
    let mut child = start_streaming(&b, &group, &topic, &second, QUICK_COMMITS, &[]);
    wait_until("150 rows again", || rows(&second).len() >= 150);
    let highs = wait_for_commits(&b, &group, &topic, PARTITIONS, &second);
    interrupt(&mut child, &second);
    assert_eq!(
        assert_all_present(&positions_in(&[&first, &second]), &topic, &highs),
        150,
        "everything of the first run is read again, once"
    );
}

#[test]
fn broker_down_and_up_mid_run_loses_nothing() {
    let (mock, b, topic) = cluster(90);
    let dir = tempfile::tempdir().unwrap();
    let (group, out) = (unique("g"), dir.path().join("out"));
    let mut child = start_streaming(&b, &group, &topic, &out, QUICK_COMMITS, &[]);
    wait_until("90 rows", || rows(&out).len() >= 90);
    let committed = wait_for_commits(&b, &group, &topic, PARTITIONS, &out);
    // Down for 4 s (fetches, heartbeats and commits fail), then back; what
    // was produced meanwhile waits in the producer.
    mock.broker_down(1).unwrap();
    let producer = b.producer();
    std::thread::sleep(Duration::from_secs(4));
    mock.broker_up(1).unwrap();
    for i in 90..180usize {
        let value = format!("{{\"id\":{i},\"name\":\"user-{i}\",\"tags\":[\"a\",\"b\"]}}");
        let key = format!("{{\"id\":{i}}}");
        producer.send(
            &topic,
            (i % PARTITIONS as usize) as i32,
            Some(key.as_bytes()),
            Some(value.as_bytes()),
            &[],
        );
    }
    producer.flush();
    wait_until("180 rows", || rows(&out).len() >= 180);
    let highs = wait_for_commits(&b, &group, &topic, PARTITIONS, &out);
    interrupt(&mut child, &out);
    let found = positions(&rows(&out));
    let duplicates = assert_all_present(&found, &topic, &highs);
    eprintln!("broker down/up: {duplicates} duplicates");
    // What was committed before the outage is never read again; if the
    // outage cost the membership, what came after may be (at least once).
    let before: Vec<_> = found.iter().filter(|(_, p, o)| *o < committed[*p as usize]).collect();
    assert_eq!(before.len(), 90, "committed offsets read again\n{}", log_of(&out));
}
