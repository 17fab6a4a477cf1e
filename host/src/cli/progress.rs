//! Progress: a live line on a terminal, a log line every few seconds otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::pipeline::Progress;

const LOG_EVERY: Duration = Duration::from_secs(10);

pub struct Display {
    task: JoinHandle<()>,
    stop: tokio::sync::oneshot::Sender<()>,
}

impl Display {
    pub async fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

pub fn spawn(mut progress: watch::Receiver<Progress>, allow_bar: bool) -> Display {
    let (stop, mut stopped) = tokio::sync::oneshot::channel();
    let bar = (allow_bar && std::io::stderr().is_terminal()).then(|| {
        let bar = ProgressBar::new_spinner();
        bar.set_style(ProgressStyle::with_template("{spinner} {elapsed_precise} {msg}").expect("a valid template"));
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let task = tokio::spawn(async move {
        let started = Instant::now();
        let mut last_log = Instant::now();
        loop {
            tokio::select! {
                _ = &mut stopped => break,
                changed = progress.changed() => if changed.is_err() { break },
            }
            let p = progress.borrow_and_update().clone();
            let rate = p.records_written as f64 / started.elapsed().as_secs_f64().max(1e-9);
            // Kafka: total lag and dead letters.
            let (lag, dead_letters) = p.source.as_ref().map_or((None, 0), |s| {
                (
                    (!s.lag.is_empty()).then(|| s.lag.values().map(|l| l.lag).sum::<i64>()),
                    s.dead_letters,
                )
            });
            match &bar {
                Some(bar) => {
                    let ids = p
                        .by_destination_id
                        .iter()
                        .map(|(id, n)| format!("{id}={n}"))
                        .collect::<Vec<_>>()
                        .join(" ");
                    let source = match lag {
                        Some(lag) => format!(" lag {lag} dead letters {dead_letters}"),
                        None => String::new(),
                    };
                    bar.set_message(format!(
                        "read {} written {} ({:.0} records/s){source} {ids}",
                        p.records_read, p.records_written, rate
                    ));
                }
                None if last_log.elapsed() >= LOG_EVERY => {
                    last_log = Instant::now();
                    tracing::info!(
                        records_read = p.records_read,
                        records_written = p.records_written,
                        records_per_s = rate as u64,
                        lag,
                        dead_letters,
                        "progress"
                    );
                }
                None => {}
            }
            // A display need not redraw more than a few times a second; the
            // end of the run must not wait for the pause.
            tokio::select! {
                _ = &mut stopped => break,
                _ = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
        if let Some(bar) = bar {
            bar.finish_and_clear();
        }
    });
    Display { task, stop }
}
