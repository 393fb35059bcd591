//! How long a stage's store calls take: logged when the writer stops, and
//! each slow call at debug level; and the spans each call's trace gets for
//! the stages its command went through (`crate::traces`). What tells where
//! a command's time goes.

use std::time::{Duration, Instant};

use super::{Job, Staged};

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

/// The span of deciding `job`, under its caller's. A disabled span (no
/// exporter, no debug logs) costs one check.
pub(super) fn decide_span(job: &Job) -> tracing::Span {
    if job.span.is_disabled() {
        return tracing::Span::none();
    }
    tracing::debug_span!(parent: &job.span, "decide")
}

/// One span a caller for a store call of `stage` (append, flush, sync)
/// that the batches of `group` rode in together: a span under each of
/// their callers' spans, open while the spans returned live. Empty when
/// no caller's span is recorded.
pub(super) fn stage_spans(stage: &'static str, group: &[Staged]) -> Vec<tracing::Span> {
    let recorded = |job: &&Job| !job.span.is_disabled();
    // The common case, traces off: nothing to count for a batch.
    if !group
        .iter()
        .flat_map(|staged| &staged.jobs)
        .any(|job| recorded(&job))
    {
        return Vec::new();
    }
    let commands: usize = group.iter().map(|staged| staged.jobs.len()).sum();
    // Counted from the heads: the append stage moves the records out.
    let records: u64 = group
        .iter()
        .map(|staged| staged.head.position - staged.batch.expected_head.position)
        .sum();
    group
        .iter()
        .flat_map(|staged| &staged.jobs)
        .filter(recorded)
        .map(|job| {
            tracing::debug_span!(
                parent: &job.span,
                "stage",
                otel.name = stage,
                batch.commands = commands,
                batch.records = records
            )
        })
        .collect()
}
