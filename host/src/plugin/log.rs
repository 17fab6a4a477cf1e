//! The plugin's log: what `host.log` and the guest's stdout/stderr turn into.
//! A plugin shares the host's log, so it must not be able to flood it or
//! forge it: lines are capped in size and in rate, control characters are
//! escaped (see [`super::text`]), and what is dropped is counted and said.

use std::time::Instant;

use parking_lot::Mutex;

use super::bindings::bizon::destination::types::LogLevel;
use super::text::sanitize;

/// Longest message kept, in bytes; the rest is replaced by a note.
pub const MAX_LINE_BYTES: usize = 4096;
/// Sustained lines per second across all instances of one plugin.
pub const LINES_PER_SECOND: f64 = 100.0;
/// Lines a quiet plugin may write at once.
pub const BURST_LINES: f64 = 1000.0;

/// Rate limiter and tagger for one plugin's log lines, shared by its instances.
pub struct PluginLog {
    plugin: String,
    bucket: Mutex<Bucket>,
}

struct Bucket {
    tokens: f64,
    refilled: Instant,
    dropped: u64,
}

impl PluginLog {
    pub fn new(plugin: &str) -> Self {
        Self {
            plugin: sanitize(plugin, MAX_LINE_BYTES),
            bucket: Mutex::new(Bucket {
                tokens: BURST_LINES,
                refilled: Instant::now(),
                dropped: 0,
            }),
        }
    }

    pub fn log(&self, level: LogLevel, message: &str) {
        let dropped = {
            let mut bucket = self.bucket.lock();
            let now = Instant::now();
            let earned = now.duration_since(bucket.refilled).as_secs_f64() * LINES_PER_SECOND;
            bucket.tokens = (bucket.tokens + earned).min(BURST_LINES);
            bucket.refilled = now;
            if bucket.tokens < 1.0 {
                bucket.dropped += 1;
                return;
            }
            bucket.tokens -= 1.0;
            std::mem::take(&mut bucket.dropped)
        };
        if dropped > 0 {
            self.note_dropped(dropped);
        }
        emit(&self.plugin, level, &sanitize(message, MAX_LINE_BYTES));
    }

    /// Reports lines dropped since the last line that got through; called
    /// when the plugin finishes so a flood's tail is not silently lost.
    pub fn flush_dropped(&self) {
        let dropped = std::mem::take(&mut self.bucket.lock().dropped);
        if dropped > 0 {
            self.note_dropped(dropped);
        }
    }

    fn note_dropped(&self, dropped: u64) {
        tracing::warn!(
            plugin = %self.plugin,
            "{dropped} plugin log line(s) dropped (limit: {LINES_PER_SECOND} lines/s, bursts of {BURST_LINES})"
        );
    }
}

fn emit(plugin: &str, level: LogLevel, message: &str) {
    match level {
        LogLevel::Trace => tracing::trace!(plugin, "{message}"),
        LogLevel::Debug => tracing::debug!(plugin, "{message}"),
        LogLevel::Info => tracing::info!(plugin, "{message}"),
        LogLevel::Warn => tracing::warn!(plugin, "{message}"),
        LogLevel::Error => tracing::error!(plugin, "{message}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_cut_to_the_burst_and_counted() {
        let log = PluginLog::new("test");
        for _ in 0..(BURST_LINES as usize + 500) {
            log.log(LogLevel::Trace, "x");
        }
        let bucket = log.bucket.lock();
        // A few tokens come back while the loop runs; most of the 500 do not.
        assert!(bucket.dropped > 400, "dropped {}", bucket.dropped);
    }
}
