//! Retries with exponential backoff and full jitter.

use std::future::Future;
use std::time::Duration;

use serde::Deserialize;
use tokio::sync::watch;

use super::DestinationError;

/// How failed writes are retried (`retry:` in a destination's config).
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetryPolicy {
    /// Attempts in all, the first one included.
    pub max_attempts: u32,
    pub initial_backoff_ms: u64,
    pub max_backoff_ms: u64,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_attempts: 5,
            initial_backoff_ms: 200,
            max_backoff_ms: 30_000,
        }
    }
}

impl RetryPolicy {
    /// The longest wait before attempt `attempt + 1` (attempt counts from 1).
    fn ceiling(&self, attempt: u32) -> Duration {
        let exp = self
            .initial_backoff_ms
            .saturating_mul(1u64 << attempt.saturating_sub(1).min(30));
        Duration::from_millis(exp.min(self.max_backoff_ms))
    }

    /// Runs `op` until it succeeds, fails with a non-retryable error, the
    /// attempts run out, or `stop` turns true (a shutdown: the last error is
    /// returned rather than waiting out the backoff); `on_retry` hears about
    /// each failure that is retried.
    pub async fn run<T, F, Fut>(
        &self,
        mut op: F,
        mut on_retry: impl FnMut(u32, &DestinationError, Duration),
        mut stop: watch::Receiver<bool>,
    ) -> Result<T, RetryError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, DestinationError>>,
    {
        let mut attempt = 1;
        loop {
            match op().await {
                Ok(v) => return Ok(v),
                Err(e) if e.is_retryable() && attempt < self.max_attempts && !*stop.borrow() => {
                    // Full jitter: many writers failing together do not retry together.
                    let wait = self.ceiling(attempt).mul_f64(fastrand::f64());
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
        let out = policy
            .run(
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
    async fn gives_up_after_max_attempts_and_never_retries_fatal() {
        let policy = RetryPolicy {
            max_attempts: 3,
            initial_backoff_ms: 10,
            max_backoff_ms: 100,
        };
        let calls = AtomicU32::new(0);
        let err = policy
            .run(
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
        let err = policy
            .run(
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
        let run = policy.run(
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

    #[test]
    fn backoff_grows_and_is_capped() {
        let p = RetryPolicy {
            max_attempts: 10,
            initial_backoff_ms: 100,
            max_backoff_ms: 1000,
        };
        assert_eq!(p.ceiling(1), Duration::from_millis(100));
        assert_eq!(p.ceiling(2), Duration::from_millis(200));
        assert_eq!(p.ceiling(9), Duration::from_millis(1000));
    }
}
