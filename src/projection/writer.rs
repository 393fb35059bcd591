//! The stored projections, written behind the log.
//!
//! The sync stage hands every durable state here ([`ProjectionWriter::durable`]),
//! which only notes it: the newest state, and which aggregates changed. A
//! worker thread writes what changed since its last write to the store's
//! projections once the oldest change waited the writer's
//! `read_side_delay` (5 s by default) or [`MAX_EVENTS`] events came in,
//! and at close, in key order and in short steps
//! ([`ProjectionStore::save_projections`](crate::store::ProjectionStore::save_projections)). Appends therefore write
//! only the log, and many changes to one entry (a share and its
//! cancellation, say) become one write. However slow the disk,
//! what waits is one state and one set of changed aggregates.
//!
//! After a crash the stored read side is behind the log (and may be part of
//! the way to a later position); the next start replays the records after
//! its checkpoint, at most about [`MAX_EVENTS`] plus what that delay
//! brings, and catches it up (see [`crate::projection::persist`]).

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{persist, Touched};
use crate::deferred::{Deferred, Shared};
use crate::domain::LedgerState;
use crate::store::{ProjectionStoreExt, Saved, Store, StoreError};

/// A write starts once this many events are waiting, whatever their age.
/// It bounds the replay at a start after a crash. It is twice the stream
/// index's bound, so the two background writes seldom run together.
pub const MAX_EVENTS: u64 = 131_072;

/// The sync stage's handle on the read side's writer. Dropping it writes
/// what is waiting and stops the worker.
pub struct ProjectionWriter {
    deferred: Deferred<Waiting>,
}

/// What the worker has not written yet.
#[derive(Default)]
struct Waiting {
    /// The newest durable state and its position.
    latest: Option<(Arc<LedgerState>, u64)>,
    /// The aggregates changed since the stored state.
    touched: Touched,
    /// When the oldest unwritten change came in.
    since: Option<Instant>,
    /// The position the stored read side is at (or being written to).
    stored_at: u64,
    /// Someone else brought the stored read side to this position (a
    /// reload after a failure): carry on from it.
    reset: Option<u64>,
    /// Writes requested by [`ProjectionWriter::sync`] and not yet done.
    syncs_asked: u64,
    syncs_done: u64,
    stop: bool,
}

impl crate::deferred::Waiting for Waiting {
    fn since(&self) -> Option<Instant> {
        self.since.filter(|_| self.latest.is_some())
    }

    fn due_now(&self) -> bool {
        self.stop
            || self.syncs_asked > self.syncs_done
            || self.reset.is_some()
            || self
                .latest
                .as_ref()
                .is_some_and(|(_, position)| position.saturating_sub(self.stored_at) >= MAX_EVENTS)
    }

    fn stop(&mut self) {
        self.stop = true;
    }
}

impl ProjectionWriter {
    /// Starts the writer for a store whose read side is at `position`,
    /// writing changes at most `max_age` after they came in.
    pub fn start(
        store: Arc<dyn Store>,
        position: u64,
        max_age: Duration,
        metrics: Arc<crate::metrics::LedgerMetrics>,
    ) -> std::io::Result<Self> {
        metrics
            .read_side_position
            .set(i64::try_from(position).unwrap_or(i64::MAX));
        let waiting = Waiting {
            stored_at: position,
            ..Waiting::default()
        };
        let worker = Worker {
            store,
            position,
            metrics,
        };
        let deferred = Deferred::start("ledger-readside", waiting, max_age, move |shared| {
            worker.run(shared)
        })?;
        Ok(Self { deferred })
    }

    /// Notes that `state`, after the record at `position`, is durable, and
    /// that `touched` changed since the last call.
    pub fn durable(&self, state: Arc<LedgerState>, position: u64, touched: Touched) {
        let shared = self.deferred.shared();
        let replaced = {
            let mut waiting = shared.lock();
            waiting.touched.extend(touched);
            // The worker sleeps while nothing waits: the first change starts
            // its clock.
            let first = waiting.since.is_none();
            waiting.since.get_or_insert_with(Instant::now);
            if first || position.saturating_sub(waiting.stored_at) >= MAX_EVENTS {
                shared.notify();
            }
            waiting.latest.replace((state, position))
        };
        // The state it replaces is dropped on the caller's thread, unlocked.
        drop(replaced);
    }

    /// Writes what is waiting now, and returns once it is written (or the
    /// write failed).
    pub fn sync(&self) {
        let shared = self.deferred.shared();
        let mut waiting = shared.lock();
        waiting.syncs_asked += 1;
        let asked = waiting.syncs_asked;
        shared.notify();
        drop(shared.wait_while(waiting, |waiting| {
            waiting.syncs_done < asked && !waiting.stop
        }));
    }

    /// The stored read side is now at `position`, written by someone else
    /// after a [`sync`](Self::sync): forget what was waiting and carry on
    /// from there.
    pub fn reset(&self, position: u64) {
        let shared = self.deferred.shared();
        let mut waiting = shared.lock();
        waiting.latest = None;
        waiting.touched = Touched::default();
        waiting.since = None;
        waiting.stored_at = position;
        waiting.reset = Some(position);
        shared.notify();
    }
}

struct Worker {
    store: Arc<dyn Store>,
    /// The position the stored read side is at: where its last write that
    /// finished left it (one that failed part way left a prefix of its
    /// entries, which the next write, of whole entries, covers).
    position: u64,
    metrics: Arc<crate::metrics::LedgerMetrics>,
}

impl Worker {
    fn run(mut self, shared: &Shared<Waiting>) {
        loop {
            let (taken, syncs, stop) = {
                let mut waiting = shared.wait_due();
                if let Some(position) = waiting.reset.take() {
                    self.position = position;
                }
                let taken = waiting
                    .latest
                    .take()
                    .map(|latest| (latest, std::mem::take(&mut waiting.touched)));
                waiting.since = None;
                if let Some(((_, position), _)) = &taken {
                    waiting.stored_at = *position;
                }
                (taken, waiting.syncs_asked, waiting.stop)
            };
            if let Some(((state, position), touched)) = taken {
                if let Err(err) = self.write(&state, position, &touched) {
                    // Reads are served from memory, so nothing waits on
                    // this; a restart would catch the stored read side up
                    // from the log.
                    tracing::error!(%err, "writing the read side failed; retrying later");
                    let mut waiting = shared.lock();
                    waiting.touched.extend(touched);
                    waiting.latest.get_or_insert((state, position));
                    waiting.since = Some(Instant::now());
                    waiting.stored_at = self.position;
                }
            }
            let mut waiting = shared.lock();
            waiting.syncs_done = syncs;
            shared.notify();
            if stop {
                return;
            }
        }
    }

    /// Writes the changes that bring the stored read side to `target`.
    fn write(
        &mut self,
        target: &Arc<LedgerState>,
        position: u64,
        touched: &Touched,
    ) -> Result<(), StoreError> {
        let started = Instant::now();
        let ops = persist::changes(target, touched)?;
        match self
            .store
            .save_projections_from(&ops, self.position, position)?
        {
            Saved::Done | Saved::Skipped => {}
            Saved::Stale => {
                // Another replica kept the stored read side until now: this
                // one's changes do not apply to it, so it is written whole.
                tracing::info!(
                    position,
                    "keeping the stored read side from now; writing it whole"
                );
                self.store
                    .replace_projections(&persist::full(target)?, position)?;
            }
        }
        tracing::debug!(
            ops = ops.len(),
            events = position - self.position,
            took_ms = started.elapsed().as_millis() as u64,
            "stored the read side"
        );
        self.position = position;
        self.metrics
            .read_side_position
            .set(i64::try_from(position).unwrap_or(i64::MAX));
        Ok(())
    }
}
