//! A running pipeline's destination, replaceable between batches. Each
//! write holds the current destination for its whole length; a swap builds
//! and checks the new one first, then waits for the writes under way to
//! finish on the old one (new writes wait behind it: the batch boundary),
//! puts the new one in place and finalizes the old. A batch goes to one
//! version exactly once, so nothing is lost or written twice.

use std::time::Instant;

use async_trait::async_trait;
use tokio::sync::RwLock;

use crate::destination::{Batch, Destination, DestinationError, SharedDestination};
use crate::metrics::serve::PipelineSeries;

pub struct Swappable {
    current: RwLock<(SharedDestination, u32)>,
    series: PipelineSeries,
}

impl Swappable {
    pub fn new(destination: SharedDestination, version: u32, series: PipelineSeries) -> Self {
        Self {
            current: RwLock::new((destination, version)),
            series,
        }
    }

    pub async fn version(&self) -> u32 {
        self.current.read().await.1
    }

    /// Puts `next` (already checked) in place at the next batch boundary.
    pub async fn swap(&self, next: SharedDestination, version: u32) -> Result<(), DestinationError> {
        let old = {
            let mut current = self.current.write().await;
            std::mem::replace(&mut *current, (next, version))
        };
        old.0.finalize().await
    }
}

#[async_trait]
impl Destination for Swappable {
    async fn check_connection(&self) -> Result<(), DestinationError> {
        self.current.read().await.0.check_connection().await
    }

    async fn write(&self, batch: &Batch) -> Result<u64, DestinationError> {
        let current = self.current.read().await;
        let started = Instant::now();
        let result = current.0.write(batch).await;
        self.series.observe_write(started.elapsed(), &result);
        result
    }

    async fn finalize(&self) -> Result<(), DestinationError> {
        self.current.read().await.0.finalize().await
    }

    /// Asked right after a write, which held the read lock: only a swap
    /// under way (a plugin version change, and plugins record no position)
    /// can hold the lock then.
    fn position(&self, destination_id: &str) -> Option<String> {
        self.current.try_read().ok()?.0.position(destination_id)
    }

    async fn resume(&self, positions: &crate::source::Positions) -> Result<(), DestinationError> {
        self.current.read().await.0.resume(positions).await
    }

    fn replayed(&self) -> u64 {
        self.current.try_read().map_or(0, |c| c.0.replayed())
    }
}
