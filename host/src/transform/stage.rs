//! The transform stage: a source whose pages pass through the transforms
//! before the pipeline sees them.
//!
//! The wrapped source runs on its own thread as usual; this one takes its
//! pages and hands each to a free worker (one set of instances per worker),
//! as a task on the pipeline's async runtime, so pages are transformed in
//! parallel with each other, with reading and with writing. Pages leave in
//! the order they came, with their sequence unchanged: the pipeline
//! acknowledges pages, and a page whose records were all dropped or
//! dead-lettered is simply done. The source's acknowledgements go straight
//! to it.
//!
//! A record a transform failed on goes to the dead letter when the pipeline
//! has one (and counts as delivered); otherwise the run stops naming the
//! record, the transform and the cause. A trap (a limit hit) stops the run.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::runtime::Handle;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::chain::{Chain, Failed, TransformError, Worker};
use crate::config::ConfigError;
use crate::record::Letter;
use crate::source::{Page, SourceError, SourceEvent, SourceLink, SourceTask};

/// A source with transforms applied to its pages.
pub struct Transformed {
    inner: Box<dyn SourceTask>,
    chain: Arc<Chain>,
    workers: Vec<Worker>,
    /// Records a transform failed on become the page's letters rather than
    /// stopping the run.
    dead_letter: bool,
    /// Where a dead letter says a record was going when it had no destination_id.
    default_destination_id: Arc<str>,
    runtime: Handle,
}

impl Transformed {
    /// Opens `workers` instances of every transform now, so that code that
    /// does not compile or a config a transform refuses stops the run before
    /// any record is read.
    pub async fn new(
        inner: Box<dyn SourceTask>,
        chain: Arc<Chain>,
        workers: usize,
        dead_letter: bool,
        default_destination_id: Arc<str>,
    ) -> Result<Self, ConfigError> {
        let mut opened = Vec::with_capacity(workers.max(1));
        for _ in 0..workers.max(1) {
            opened.push(chain.worker().await?);
        }
        Ok(Self {
            inner,
            chain,
            workers: opened,
            dead_letter,
            default_destination_id,
            runtime: Handle::current(),
        })
    }
}

/// One worker per core: transforms are CPU work, and each call yields to the
/// runtime at every epoch tick, so more would only take turns.
pub fn default_workers() -> usize {
    std::thread::available_parallelism().map_or(2, |n| n.get())
}

impl SourceTask for Transformed {
    fn run(self: Box<Self>, link: SourceLink) {
        let Transformed {
            inner,
            chain,
            workers,
            dead_letter,
            default_destination_id,
            runtime,
        } = *self;
        let SourceLink {
            events,
            acks,
            stop,
            stats,
            published,
        } = link;
        let (tx, rx) = mpsc::channel(workers.len());
        let closes = inner.closes();
        let inner_link = SourceLink {
            events: tx,
            acks,
            stop: stop.clone(),
            stats: stats.clone(),
            published,
        };
        let source = std::thread::Builder::new()
            .name("bizon-source".into())
            .spawn(move || inner.run(inner_link))
            .expect("spawning the source thread");
        let context = Arc::new(Context {
            chain,
            dead_letter,
            default_destination_id,
        });
        let started = std::time::Instant::now();
        runtime.block_on(drive(rx, events, context.clone(), workers));
        tracing::debug!(
            "transforms: {:.2} s in the stage; {}",
            started.elapsed().as_secs_f64(),
            context.chain.spent().summary()
        );
        stop.store(true, Ordering::Relaxed);
        if closes {
            // The source's last commit happens before the run reports.
            let _ = source.join();
        }
    }

    fn closes(&self) -> bool {
        self.inner.closes()
    }
}

struct Context {
    chain: Arc<Chain>,
    dead_letter: bool,
    default_destination_id: Arc<str>,
}

type Task = JoinHandle<(Worker, Result<Page, SourceError>)>;

/// Pages from `rx` through the workers to `events`, in order, until the
/// source ends, the pipeline goes away or a transform fails.
async fn drive(
    mut rx: mpsc::Receiver<SourceEvent>,
    events: mpsc::Sender<SourceEvent>,
    context: Arc<Context>,
    mut idle: Vec<Worker>,
) {
    let mut in_flight: VecDeque<Task> = VecDeque::new();
    loop {
        tokio::select! {
            biased;
            // The pipeline is gone (the run ended): nothing more to pass on.
            () = events.closed() => return,
            done = oldest(&mut in_flight) => {
                in_flight.pop_front();
                if !forward(done, &mut idle, &events).await {
                    return;
                }
            }
            event = rx.recv(), if !idle.is_empty() => match event {
                Some(SourceEvent::Page(page)) => {
                    let worker = idle.pop().expect("a worker is idle");
                    in_flight.push_back(tokio::spawn(transform(context.clone(), worker, page)));
                }
                Some(other) => {
                    // Drain, end or failure: after the pages read before it.
                    while let Some(task) = in_flight.pop_front() {
                        if !forward(task.await, &mut idle, &events).await {
                            return;
                        }
                    }
                    let last = !matches!(other, SourceEvent::Drain | SourceEvent::Resume(_));
                    if events.send(other).await.is_err() || last {
                        return;
                    }
                }
                None => {
                    while let Some(task) = in_flight.pop_front() {
                        if !forward(task.await, &mut idle, &events).await {
                            return;
                        }
                    }
                    return;
                }
            },
        }
    }
}

/// The oldest page's task; never resolves when there is none.
async fn oldest(in_flight: &mut VecDeque<Task>) -> Result<(Worker, Result<Page, SourceError>), tokio::task::JoinError> {
    match in_flight.front_mut() {
        Some(task) => task.await,
        None => std::future::pending().await,
    }
}

/// Passes a transformed page (or the failure) on; `false` ends the stage.
async fn forward(
    done: Result<(Worker, Result<Page, SourceError>), tokio::task::JoinError>,
    idle: &mut Vec<Worker>,
    events: &mpsc::Sender<SourceEvent>,
) -> bool {
    let (worker, result) = done.expect("transform tasks do not panic");
    idle.push(worker);
    match result {
        Ok(page) => events.send(SourceEvent::Page(page)).await.is_ok(),
        Err(e) => {
            let _ = events.send(SourceEvent::Failed(e)).await;
            false
        }
    }
}

async fn transform(context: Arc<Context>, mut worker: Worker, page: Page) -> (Worker, Result<Page, SourceError>) {
    let Page {
        sequence,
        extracted_at_us,
        records,
        mut letters,
        spans,
    } = page;
    let result = match context.chain.run(&mut worker, records).await {
        Ok((records, failed)) => settle(&context, failed, &mut letters).map(|()| Page {
            sequence,
            extracted_at_us,
            records,
            letters,
            spans,
        }),
        Err(e) => Err(e),
    };
    (worker, result.map_err(|e| SourceError::Transform(Box::new(e))))
}

/// Records a transform failed on: the page's letters, or the error that
/// stops the run.
fn settle(context: &Context, failed: Vec<Failed>, letters: &mut Vec<Letter>) -> Result<(), TransformError> {
    let Some(first) = failed.first() else { return Ok(()) };
    if !context.dead_letter {
        return Err(TransformError::Record {
            source_record_id: first.record.id.clone(),
            reason: first.reason.clone(),
        });
    }
    letters.extend(failed.into_iter().map(|f| {
        Letter::Rejected {
            destination_id: f
                .record
                .destination_id
                .as_deref()
                .unwrap_or(&context.default_destination_id)
                .to_string(),
            source_record_id: f.record.id,
            reason: f.reason,
            source_data: Some(f.record.data),
        }
    }));
    Ok(())
}
