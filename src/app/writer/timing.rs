//! How long a stage's store calls take: logged when the writer stops, and
//! each slow call at debug level; what tells where a command's time goes.

use std::time::{Duration, Instant};

/// A store call at least this long is logged (at debug level) when it ends.
const SLOW_STORE_CALL: Duration = Duration::from_millis(20);

/// How often a stage ran its store call and how long that took.
#[derive(Debug, Default)]
pub(super) struct StageTiming {
    calls: u64,
    total: Duration,
    longest: Duration,
}

impl StageTiming {
    /// Runs and times one store call.
    pub(super) fn time<T>(&mut self, f: impl FnOnce() -> T) -> T {
        let started = Instant::now();
        let result = f();
        let took = started.elapsed();
        self.calls += 1;
        self.total += took;
        self.longest = self.longest.max(took);
        if took >= SLOW_STORE_CALL {
            tracing::debug!(took_ms = took.as_millis() as u64, "a slow store call");
        }
        result
    }

    /// Logs the totals under the stage's name.
    pub(super) fn log(&self, stage: &str) {
        let mean = self.total / u32::try_from(self.calls.max(1)).unwrap_or(u32::MAX);
        tracing::info!(
            stage,
            calls = self.calls,
            mean_us = mean.as_micros() as u64,
            longest_us = self.longest.as_micros() as u64,
            "store time of a writer stage"
        );
    }
}
