//! The one retry loop: every write of every destination (native or wasm) is
//! retried here, with the destination's `retry:` policy
//! ([`crate::config::RetryPolicy`]), exponential backoff with full jitter,
//! a server's `Retry-After` obeyed, and a shutdown ending the waiting at once.

use std::future::Future;
use std::time::Duration;

use tokio::sync::watch;

use super::DestinationError;
use crate::config::RetryPolicy;

/// The longest `Retry-After` obeyed (Bizon's `retry_after_max`, 120 s): a
/// server asking for longer is asked again sooner rather than stalling a run.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(120);

/// Runs `op` until it succeeds, fails with a non-retryable error, the
/// attempts of `policy` run out, or `stop` turns true (a shutdown: the last
/// error is returned rather than waiting out the backoff); `on_retry` hears
/// about each failure that is retried and how long the wait is.
pub async fn run<T, F, Fut>(
    policy: &RetryPolicy,
    mut op: F,
    mut on_retry: impl FnMut(u32, &DestinationError, Duration),
    mut stop: watch::Receiver<bool>,
) -> Result<T, RetryError>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T, DestinationError>>,
{
    let mut attempt = 1;
    // Said once per stretch of blocked writes: one a second would flood the log.
    let mut blocked = false;
    loop {
        match op().await {
            Ok(v) => return Ok(v),
            Err(DestinationError::Blocked { message, every }) if !*stop.borrow() => {
                let error = DestinationError::Blocked { message, every };
                if !blocked {
                    on_retry(attempt, &error, every);
                    blocked = true;
                }
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stopped(&mut stop) => {
                        return Err(RetryError { attempts: attempt, error });
                    }
                }
            }
            Err(e) if e.is_retryable() && attempt < policy.max_attempts && !*stop.borrow() => {
                let wait = match e.retry_after() {
                    // A server that says when to come back is believed (up to a bound).
                    Some(after) => after.min(MAX_RETRY_AFTER),
                    // Full jitter: many writers failing together do not retry together.
                    None => policy.ceiling(attempt).mul_f64(fastrand::f64()),
                };
                on_retry(attempt, &e, wait);
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stopped(&mut stop) => {
                        return Err(RetryError { attempts: attempt, error: e });
                    }
                }
                attempt += 1;
            }
            Err(error) => {
                return Err(RetryError {
                    attempts: attempt,
                    error,
                })
            }
        }
    }
}

/// Resolves when `stop` turns true; never when its sender is gone.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|stop| *stop).await.is_err() {
        std::future::pending::<()>().await;
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{error} (after {attempts} attempt(s))")]
pub struct RetryError {
    pub attempts: u32,
    pub error: DestinationError,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test(start_paused = true)]
    async fn retries_transient_errors_then_succeeds() {
        let calls = AtomicU32::new(0);
        let policy = RetryPolicy {
            max_attempts: 4,
            initial_backoff_ms: 10,
            max_backoff_ms: 100,
        };
        let mut retried = 0;
        let out = run(
            &policy,
            || async {
                if calls.fetch_add(1, Ordering::SeqCst) < 2 {
                    Err(DestinationError::Retryable("503".into()))
                } else {
                    Ok(7)
                }
            },
            |_, _, _| retried += 1,
            watch::channel(false).1,
        )
        .await
        .unwrap();
        assert_eq!(out, 7);
        assert_eq!(retried, 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_blocked_write_waits_past_the_attempts_is_said_once_and_a_stop_ends_it() {
        let policy = RetryPolicy {
            max_attempts: 2,
            initial_backoff_ms: 10,
            max_backoff_ms: 100,
        };
        let blocked = || DestinationError::Blocked {
            message: "disk full".into(),
            every: Duration::from_secs(1),
        };
        // Blocked 10 times (5 times the attempts), then room again.
        let calls = AtomicU32::new(0);
        let mut said = 0;
        let out = run(
            &policy,
            || async {
                match calls.fetch_add(1, Ordering::SeqCst) {
                    0..10 => Err(blocked()),
                    _ => Ok(3),
                }
            },
            |_, _, _| said += 1,
            watch::channel(false).1,
        )
        .await
        .unwrap();
        assert_eq!((out, said, calls.load(Ordering::SeqCst)), (3, 1, 11));

        // Blocked for good: a stop ends the wait with the blocked error.
        let (stop, stopping) = watch::channel(false);
        let waiting =
            tokio::spawn(
                async move { run(&policy, || async { Err::<(), _>(blocked()) }, |_, _, _| {}, stopping).await },
            );
        tokio::time::sleep(Duration::from_secs(3600)).await;
        assert!(!waiting.is_finished());
        stop.send(true).unwrap();
        let err = waiting.await.unwrap().unwrap_err();
        assert!(matches!(err.error, DestinationError::Blocked { .. }), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn gives_up_after_max_attempts_and_never_retries_fatal() {
        let policy = RetryPolicy {
            max_attempts: 3,
            initial_backoff_ms: 10,
            max_backoff_ms: 100,
        };
        let calls = AtomicU32::new(0);
        let err = run(
            &policy,
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(DestinationError::Retryable("timeout".into()))
            },
            |_, _, _| {},
            watch::channel(false).1,
        )
        .await
        .unwrap_err();
        assert_eq!(err.attempts, 3);
        assert_eq!(calls.load(Ordering::SeqCst), 3);

        calls.store(0, Ordering::SeqCst);
        let err = run(
            &policy,
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(DestinationError::Fatal("no such table".into()))
            },
            |_, _, _| {},
            watch::channel(false).1,
        )
        .await
        .unwrap_err();
        assert_eq!(err.attempts, 1);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_stop_ends_the_retries_during_the_backoff() {
        let policy = RetryPolicy {
            max_attempts: 100,
            initial_backoff_ms: 60_000,
            max_backoff_ms: 60_000,
        };
        let (stop, stopped) = watch::channel(false);
        let calls = AtomicU32::new(0);
        let run = run(
            &policy,
            || async {
                calls.fetch_add(1, Ordering::SeqCst);
                Err::<(), _>(DestinationError::Retryable("timeout".into()))
            },
            |_, _, _| {},
            stopped,
        );
        let stopper = async {
            tokio::time::sleep(Duration::from_millis(1)).await;
            stop.send_replace(true);
        };
        let (err, ()) = tokio::join!(run, stopper);
        let err = err.unwrap_err();
        assert!(calls.load(Ordering::SeqCst) < 3, "{}", calls.load(Ordering::SeqCst));
        assert!(err.error.is_retryable());
    }
}
