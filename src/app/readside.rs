//! The stored read side, written behind the log.
//!
//! The flush stage hands every durable state here. This thread writes what
//! changed since its last write to the store's projections once
//! [`MAX_AGE`] has passed or [`MAX_EVENTS`] events came in, and at close,
//! in key order and in short steps ([`EventStore::write_projections_in_steps`]).
//! Appends therefore write only the log; many changes to one entry (a share
//! and its cancellation, say) become one write or none.
//!
//! After a crash the stored read side is behind the log (and may be part of
//! the way to a later position); the next start replays the records after
//! its checkpoint, at most about [`MAX_EVENTS`] plus what [`MAX_AGE`]
//! brings, and catches it up (see [`crate::projection::persist`]).

use std::collections::BTreeMap;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::domain::LedgerState;
use crate::projection::{persist, Touched};
use crate::store::{EventStore, ProjectionOp, StoreError};

/// The longest a durable change waits before it is written.
pub const MAX_AGE: Duration = Duration::from_secs(5);
/// A write starts once this many events are waiting, whatever their age.
/// It bounds the replay at a start after a crash. It is twice the stream
/// index's bound, so the two background writes seldom run together.
pub const MAX_EVENTS: u64 = 131_072;

/// What the flush stage tells this thread.
pub(super) enum Update {
    /// The state after the durable record at `position`, and the aggregates
    /// changed since the last update.
    Durable {
        state: Arc<LedgerState>,
        position: u64,
        touched: Touched,
    },
    /// Write everything waiting now, then answer.
    Sync(Sender<()>),
    /// The stored read side was brought to `state` at `position` by someone
    /// else (a reload after a failure): carry on from there.
    Reset {
        state: Arc<LedgerState>,
        position: u64,
    },
}

pub(super) struct ReadSide {
    store: Arc<dyn EventStore>,
    /// The states the stored entries may hold, entry by entry: the last one
    /// written whole, then the target of each write since that failed part
    /// way.
    stored: Vec<Arc<LedgerState>>,
    /// The position `stored[0]` is at.
    position: u64,
    /// The newest durable state and its position, once newer than `position`.
    latest: Option<(Arc<LedgerState>, u64)>,
    /// The aggregates changed since `stored[0]`.
    touched: Touched,
    /// When the oldest waiting change came in.
    since: Option<Instant>,
}

impl ReadSide {
    /// A writer for a store whose read side holds `state` at `position`.
    pub(super) fn new(store: Arc<dyn EventStore>, state: Arc<LedgerState>, position: u64) -> Self {
        Self {
            store,
            stored: vec![state],
            position,
            latest: None,
            touched: Touched::default(),
            since: None,
        }
    }

    /// Runs until the sender is dropped, then writes what is waiting.
    pub(super) fn run(mut self, updates: Receiver<Update>) {
        loop {
            let update = match self.since {
                None => updates.recv().map_err(|_| RecvTimeoutError::Disconnected),
                Some(since) => updates.recv_timeout(MAX_AGE.saturating_sub(since.elapsed())),
            };
            match update {
                Ok(Update::Durable {
                    state,
                    position,
                    touched,
                }) => {
                    self.touched.extend(&touched);
                    self.latest = Some((state, position));
                    let since = *self.since.get_or_insert_with(Instant::now);
                    if position.saturating_sub(self.position) >= MAX_EVENTS
                        || since.elapsed() >= MAX_AGE
                    {
                        self.write();
                    }
                }
                Ok(Update::Sync(done)) => {
                    self.write();
                    let _ = done.send(());
                }
                Ok(Update::Reset { state, position }) => {
                    self = Self::new(Arc::clone(&self.store), state, position);
                }
                Err(RecvTimeoutError::Timeout) => self.write(),
                Err(RecvTimeoutError::Disconnected) => {
                    self.write();
                    return;
                }
            }
        }
    }

    /// Writes the newest state's changes; on failure, keeps them for the
    /// next try.
    fn write(&mut self) {
        let Some((latest, position)) = self.latest.take() else {
            return;
        };
        let started = Instant::now();
        let written = changes(&self.stored, &latest, &self.touched).and_then(|ops| {
            self.store
                .write_projections_in_steps(&ops, position)
                .map(|()| ops.len())
        });
        match written {
            Ok(ops) => {
                tracing::debug!(
                    ops,
                    events = position - self.position,
                    took_ms = started.elapsed().as_millis() as u64,
                    "stored the read side"
                );
                self.stored = vec![latest];
                self.position = position;
                self.touched = Touched::default();
                self.since = None;
            }
            Err(err) => {
                // Reads are served from memory, so nothing waits on this; a
                // restart would catch the stored read side up from the log.
                tracing::error!(%err, "writing the read side failed; retrying later");
                self.stored.push(Arc::clone(&latest));
                self.latest = Some((latest, position));
                self.since = Some(Instant::now());
            }
        }
    }
}

/// The writes that bring entries holding any mix of the `stored` states to
/// `target`, in key order. After a write that failed part way an entry may
/// hold either state, so the changes from each are taken; they agree on
/// every key, since each says what `target` holds there.
fn changes(
    stored: &[Arc<LedgerState>],
    target: &LedgerState,
    touched: &Touched,
) -> Result<Vec<ProjectionOp>, StoreError> {
    let mut ops = BTreeMap::new();
    for state in stored {
        for op in persist::diff(state, target, touched)? {
            ops.insert(op.key, op.value);
        }
    }
    Ok(ops
        .into_iter()
        .map(|(key, value)| ProjectionOp { key, value })
        .collect())
}
