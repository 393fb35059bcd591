//! Saves the persisted projections off the command path: the writer hands
//! over durable snapshots (cheap: the state is persistent), and this thread
//! writes what changed since the last save, with its checkpoint, in one
//! atomic write. A slow save never delays a command.

use std::sync::mpsc::{sync_channel, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;

use crate::domain::LedgerState;
use crate::projection::{persist, Touched};
use crate::store::EventStore;

/// A durable state to save and the aggregates changed since the last one handed over.
pub(super) struct Snapshot {
    pub(super) state: Arc<LedgerState>,
    pub(super) position: u64,
    pub(super) touched: Touched,
}

/// The handle on the saving thread.
pub(super) struct Projector {
    snapshots: Option<SyncSender<Snapshot>>,
    thread: Option<JoinHandle<()>>,
}

impl Projector {
    /// Starts saving on top of `base`, the state the stored projections describe now.
    pub(super) fn start(store: Arc<dyn EventStore>, base: Arc<LedgerState>) -> Self {
        let (tx, rx) = sync_channel::<Snapshot>(1);
        let thread = std::thread::Builder::new()
            .name("ledger-projector".into())
            .spawn(move || {
                let mut base = base;
                // What changed since `base`, including saves that failed.
                let mut unsaved = Touched::default();
                while let Ok(mut snapshot) = rx.recv() {
                    // Fold in anything queued meanwhile: only the newest state matters.
                    while let Ok(next) = rx.try_recv() {
                        unsaved.extend(&snapshot.touched);
                        snapshot = next;
                    }
                    unsaved.extend(&snapshot.touched);
                    let saved = persist::diff(&base, &snapshot.state, &unsaved)
                        .and_then(|ops| store.write_projections(&ops, snapshot.position));
                    match saved {
                        Ok(()) => {
                            base = snapshot.state;
                            unsaved = Touched::default();
                        }
                        // Kept for the next save; a restart catches up from the log anyway.
                        Err(err) => tracing::error!(%err, "saving the projections failed"),
                    }
                }
            })
            .ok();
        if thread.is_none() {
            tracing::error!(
                "cannot start the projector thread; projections are saved at start only"
            );
        }
        Self {
            snapshots: thread.as_ref().map(|_| tx),
            thread,
        }
    }

    /// Hands over a snapshot unless a save is already waiting; `false` means
    /// "busy, offer the changes again later".
    pub(super) fn offer(&self, snapshot: Snapshot) -> bool {
        match &self.snapshots {
            Some(tx) => !matches!(tx.try_send(snapshot), Err(TrySendError::Full(_))),
            None => true,
        }
    }

    /// Saves `last` (waiting for room), then waits until every save is done.
    pub(super) fn finish(&mut self, last: Option<Snapshot>) {
        if let (Some(tx), Some(snapshot)) = (&self.snapshots, last) {
            let _ = tx.send(snapshot);
        }
        self.snapshots = None;
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the projector thread panicked");
            }
        }
    }
}

impl Drop for Projector {
    fn drop(&mut self) {
        self.finish(None);
    }
}
