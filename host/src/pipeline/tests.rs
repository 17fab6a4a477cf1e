use std::sync::atomic::Ordering;
use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use arrow_array::cast::AsArray;
use arrow_array::Array;
use async_trait::async_trait;

use super::*;
use crate::destination::{Batch, Destination, DestinationError};
use crate::record::SourceRecord;
use crate::source::{Source, SourceError, SourceTask};

/// Keeps what it is given; can fail the first `fail` writes, and tracks
/// how many writes overlap.
#[derive(Default)]
struct Memory {
    batches: Mutex<Vec<(String, u64, Vec<String>)>>,
    fail: Mutex<Vec<DestinationError>>,
    in_flight: std::sync::atomic::AtomicUsize,
    max_in_flight: std::sync::atomic::AtomicUsize,
    finalized: std::sync::atomic::AtomicBool,
    write_delay: Option<Duration>,
}

#[async_trait]
impl Destination for Memory {
    async fn check_connection(&self) -> Result<(), DestinationError> {
        Ok(())
    }

    async fn write(&self, batch: &Batch) -> Result<u64, DestinationError> {
        if let Some(e) = self.fail.lock().unwrap().pop() {
            return Err(e);
        }
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.max_in_flight.fetch_max(now, Ordering::SeqCst);
        if let Some(d) = self.write_delay {
            tokio::time::sleep(d).await;
        }
        let ids = batch.records.column_by_name("source_record_id").map(|c| {
            let c = c.as_string::<i32>();
            (0..c.len()).map(|i| c.value(i).to_string()).collect()
        });
        self.batches.lock().unwrap().push((
            batch.destination_id.to_string(),
            batch.sequence,
            ids.unwrap_or_default(),
        ));
        self.in_flight.fetch_sub(1, Ordering::SeqCst);
        Ok(batch.records.num_rows() as u64)
    }

    async fn finalize(&self) -> Result<(), DestinationError> {
        self.finalized.store(true, Ordering::SeqCst);
        Ok(())
    }
}

/// Serves the pages it is given over a channel, so a test decides when the
/// source has more and when it ends.
struct Scripted(std::sync::mpsc::Receiver<Option<Vec<SourceRecord>>>);

impl Source for Scripted {
    fn next_page(&mut self) -> Result<Option<Vec<SourceRecord>>, SourceError> {
        Ok(self.0.recv().ok().flatten())
    }
}

fn records(range: std::ops::Range<u64>, id: Option<&str>) -> Vec<SourceRecord> {
    range
        .map(|i| SourceRecord {
            id: i.to_string(),
            timestamp_us: 0,
            data: format!("{{\"id\":{i}}}"),
            destination_id: id.map(Arc::from),
        })
        .collect()
}

fn pipeline(destination_config: &str) -> Pipeline {
    let text = format!(
        "name: t\nsource:\n  name: dummy\n  stream: s\ndestination:\n  name: logger\n  config:\n{destination_config}"
    );
    parse(&text, "t.yml", |_| None).unwrap()
}

/// A run of `source` into `destination`, as `assemble` would build it.
fn assembled(
    source: Box<dyn Source>,
    destination: SharedDestination,
    dead_letters: Option<Arc<DeadLetters>>,
) -> Assembled {
    Assembled {
        destination,
        dead_letters,
        source: Box::new(source) as Box<dyn SourceTask>,
    }
}

async fn run_with(p: &Pipeline, source: Box<dyn Source>, dest: Arc<Memory>) -> RunReport {
    let (tx, _rx) = watch::channel(Progress::default());
    run(
        p,
        assembled(source, dest, None),
        std::future::pending(),
        tx,
        Bounds::none(),
    )
    .await
}

fn all_ids(dest: &Memory, destination_id: &str) -> Vec<String> {
    dest.batches
        .lock()
        .unwrap()
        .iter()
        .filter(|(d, _, _)| d == destination_id)
        .flat_map(|(_, _, ids)| ids.clone())
        .collect()
}

#[tokio::test]
async fn end_of_source_flushes_routes_and_finalizes() {
    let p = pipeline("    destination_id: fallback\n");
    let (tx, rx) = std::sync::mpsc::channel();
    tx.send(Some(records(0..3, Some("a")))).unwrap();
    tx.send(Some(records(3..5, None))).unwrap();
    tx.send(None).unwrap();
    let dest = Arc::new(Memory::default());
    let report = run_with(&p, Box::new(Scripted(rx)), dest.clone()).await;
    assert_eq!(report.status, RunStatus::Success, "{:?}", report.error);
    assert_eq!((report.records_read, report.records_written), (5, 5));
    assert_eq!(all_ids(&dest, "a"), ["0", "1", "2"]);
    assert_eq!(all_ids(&dest, "fallback"), ["3", "4"]);
    assert_eq!(report.by_destination_id["a"], 3);
    assert!(dest.finalized.load(Ordering::SeqCst));
}

#[tokio::test(start_paused = true)]
async fn an_idle_source_still_gets_its_records_flushed_by_age() {
    let p = pipeline("    buffer_flush_timeout: 30\n");
    let (tx, rx) = std::sync::mpsc::channel();
    tx.send(Some(records(0..2, None))).unwrap();
    let dest = Arc::new(Memory::default());
    let (progress, mut seen) = watch::channel(Progress::default());
    let task = tokio::spawn({
        let dest = dest.clone();
        async move {
            run(
                &p,
                assembled(Box::new(Scripted(rx)), dest, None),
                std::future::pending(),
                progress,
                Bounds::none(),
            )
            .await
        }
    });
    // The page comes from a real thread; start the clock once it was read.
    seen.wait_for(|p| p.records_read == 2).await.unwrap();
    // The source now says nothing; only the age timer can flush.
    let started = Instant::now();
    while dest.batches.lock().unwrap().is_empty() {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(started.elapsed() < Duration::from_secs(120), "no flush by age");
    }
    assert!(
        started.elapsed() >= Duration::from_secs(29),
        "flushed before the timeout"
    );
    assert!(!dest.finalized.load(Ordering::SeqCst));
    tx.send(None).unwrap();
    let report = task.await.unwrap();
    assert_eq!(report.records_written, 2);
}

#[tokio::test]
async fn zero_buffer_size_writes_each_page_as_its_own_batch_in_order() {
    let p = pipeline("    buffer_size: 0\n");
    let (tx, rx) = std::sync::mpsc::channel();
    for k in 0..5 {
        tx.send(Some(records(k * 10..k * 10 + 10, Some("x")))).unwrap();
    }
    tx.send(None).unwrap();
    let dest = Arc::new(Memory::default());
    run_with(&p, Box::new(Scripted(rx)), dest.clone()).await;
    let batches = dest.batches.lock().unwrap().clone();
    assert_eq!(batches.len(), 5);
    assert_eq!(batches.iter().map(|b| b.1).collect::<Vec<_>>(), [0, 1, 2, 3, 4]);
    assert_eq!(batches[3].2[0], "30");
}

#[tokio::test]
async fn writes_overlap_across_destination_ids_up_to_max_concurrent_threads() {
    let p = pipeline("    buffer_size: 0\n    max_concurrent_threads: 2\n");
    let (tx, rx) = std::sync::mpsc::channel();
    for k in 0..12 {
        let id = ["a", "b", "c", "d"][k % 4];
        tx.send(Some(records(k as u64..k as u64 + 1, Some(id)))).unwrap();
    }
    tx.send(None).unwrap();
    let dest = Arc::new(Memory {
        write_delay: Some(Duration::from_millis(20)),
        ..Default::default()
    });
    let report = run_with(&p, Box::new(Scripted(rx)), dest.clone()).await;
    assert_eq!(report.records_written, 12);
    assert_eq!(dest.max_in_flight.load(Ordering::SeqCst), 2);
    // In order within one destination_id.
    assert_eq!(all_ids(&dest, "a"), ["0", "4", "8"]);
}

#[tokio::test(start_paused = true)]
async fn transient_errors_are_retried_and_permanent_ones_fail_the_run() {
    let p = pipeline("    retry: {max_attempts: 3, initial_backoff_ms: 1, max_backoff_ms: 2}\n");
    let (tx, rx) = std::sync::mpsc::channel();
    tx.send(Some(records(0..4, None))).unwrap();
    tx.send(None).unwrap();
    let dest = Arc::new(Memory::default());
    dest.fail.lock().unwrap().extend([
        DestinationError::Retryable("503".into()),
        DestinationError::Retryable("503".into()),
    ]);
    let report = run_with(&p, Box::new(Scripted(rx)), dest.clone()).await;
    assert_eq!(report.status, RunStatus::Success);
    assert_eq!(report.records_written, 4);

    let (tx, rx) = std::sync::mpsc::channel();
    tx.send(Some(records(0..4, None))).unwrap();
    tx.send(None).unwrap();
    let dest = Arc::new(Memory::default());
    dest.fail
        .lock()
        .unwrap()
        .push(DestinationError::Fatal("table not found".into()));
    let report = run_with(&p, Box::new(Scripted(rx)), dest.clone()).await;
    assert_eq!(report.status, RunStatus::Failed);
    assert_eq!((report.records_written, report.records_unwritten), (0, 4));
    let error = report.error.unwrap();
    assert!(
        error.contains("dummy_s") && error.contains("table not found"),
        "{error}"
    );
    assert!(!dest.finalized.load(Ordering::SeqCst), "a failed run must not publish");
}

/// `pages` pages of one record of about `bytes` each, spread over `ids`
/// destination_ids, then the end.
fn padded_pages(pages: u64, ids: u64, bytes: usize) -> std::sync::mpsc::Receiver<Option<Vec<SourceRecord>>> {
    let (tx, rx) = std::sync::mpsc::channel();
    let pad = "x".repeat(bytes);
    for k in 0..pages {
        let id = format!("d{}", k % ids);
        let mut page = records(k..k + 1, Some(&id));
        page[0].data = format!("{{\"pad\":\"{pad}\"}}");
        tx.send(Some(page)).unwrap();
    }
    tx.send(None).unwrap();
    rx
}

#[tokio::test]
async fn memory_stays_under_budget_by_flushing_the_largest_buffer_early() {
    // 100 destination_ids of 0.9 MB each: no buffer reaches its 1 MB size, but
    // together they pass the 64 MB budget, which must force early writes.
    let p = pipeline("    buffer_size: 1\n    buffer_flush_timeout: 0\n");
    let rx = padded_pages(900, 100, 100_000);
    let dest = Arc::new(Memory::default());
    let report = run_with(&p, Box::new(Scripted(rx)), dest.clone()).await;
    assert_eq!(report.records_written, 900);
    let peak = report.peak_buffered_bytes;
    assert!(peak <= MIN_MEMORY_BUDGET + 200_000, "peak {peak} over the budget");
    assert!(
        peak > MIN_MEMORY_BUDGET / 2,
        "peak {peak}: the test did not load the buffers"
    );
}

#[tokio::test]
async fn runs_sharing_a_read_ahead_pool_hold_no_more_than_it_together() {
    // Alone, each run would hold all its 27 MB (under its 64 MB budget, and
    // no buffer reaching its 1 MB size); sharing a 4 MiB pool, they must
    // write early and each stay near it.
    let p = pipeline("    buffer_size: 1\n    buffer_flush_timeout: 0\n");
    let pool = ReadAheadPool::new(4);
    let page_bytes = 100_000;
    let one = |pool: Arc<ReadAheadPool>| {
        let p = p.clone();
        async move {
            let rx = padded_pages(270, 30, page_bytes);
            let dest = Arc::new(Memory {
                write_delay: Some(Duration::from_millis(2)),
                ..Memory::default()
            });
            let (progress, _rx) = watch::channel(Progress::default());
            let bounds = Bounds {
                abandon: std::future::pending(),
                read_ahead: Some(pool),
            };
            let run_ = assembled(Box::new(Scripted(rx)), dest, None);
            run(&p, run_, std::future::pending(), progress, bounds).await
        }
    };
    let (a, b) = tokio::join!(one(pool.clone()), one(pool.clone()));
    for report in [&a, &b] {
        assert_eq!(report.records_written, 270);
        let peak = report.peak_buffered_bytes;
        assert!(peak <= (4 << 20) + 3 * page_bytes, "peak {peak} over the pool");
    }
    assert_eq!(pool.in_use(), 0, "the runs gave back what they held");
}

/// Refuses the rows whose source_record_id is odd, writes the others.
struct RejectsOdd;

#[async_trait]
impl Destination for RejectsOdd {
    async fn check_connection(&self) -> Result<(), DestinationError> {
        Ok(())
    }

    async fn write(&self, batch: &Batch) -> Result<u64, DestinationError> {
        let ids = batch
            .records
            .column_by_name("source_record_id")
            .unwrap()
            .as_string::<i32>();
        let rows: Vec<crate::destination::RejectedRow> = (0..ids.len())
            .filter(|&i| ids.value(i).parse::<u64>().unwrap() % 2 == 1)
            .map(|i| crate::destination::RejectedRow {
                row: i as u64,
                reason: "odd".into(),
            })
            .collect();
        match rows.is_empty() {
            true => Ok(batch.records.num_rows() as u64),
            false => Err(DestinationError::Rejected(rows)),
        }
    }

    async fn finalize(&self) -> Result<(), DestinationError> {
        Ok(())
    }
}

#[tokio::test]
async fn rejected_rows_go_to_the_dead_letter_with_their_data_and_the_run_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dl.jsonl");
    let config = crate::dead_letter::DeadLetterConfig {
        path: Some(path.clone()),
        ..Default::default()
    };
    let dead_letters = Arc::new(DeadLetters::open(&config, None).unwrap());
    let p = pipeline("    buffer_size: 0\n");
    let (tx, rx) = std::sync::mpsc::channel();
    tx.send(Some(records(0..6, None))).unwrap();
    tx.send(None).unwrap();
    let (progress, _rx) = watch::channel(Progress::default());
    let report = run(
        &p,
        assembled(Box::new(Scripted(rx)), Arc::new(RejectsOdd), Some(dead_letters)),
        std::future::pending(),
        progress,
        Bounds::none(),
    )
    .await;
    assert_eq!(report.status, RunStatus::Success, "{:?}", report.error);
    assert_eq!((report.records_written, report.records_rejected), (3, 3));
    let letters = std::fs::read_to_string(&path).unwrap();
    assert_eq!(letters.lines().count(), 3, "{letters}");
    assert!(
        letters.contains(r#""source_record_id":"1""#) && letters.contains(r#""source_data":"{\"id\":1}""#),
        "{letters}"
    );
}
