//! The append stage (`ledger-append`): writes each group of batches to the
//! store (visible, not yet durable), so the next group is written while
//! the last one's flush runs.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;

use super::drain::drain;
use super::timing::StageTiming;
use super::{refuse, Message, Staged};
use crate::store::{AppendBatch, Head, Store, StoreError};

pub(super) struct Appender {
    pub(super) store: Arc<dyn Store>,
    /// Tells the decide stage to reload before it decides more.
    pub(super) failed: Arc<AtomicBool>,
    /// The store's head after the last batch this stage wrote.
    pub(super) applied: Head,
    /// The failure that refused the last batches: batches decided on top
    /// of them are refused with it too.
    pub(super) failure: Option<StoreError>,
    /// A reload passed: the next batch starts from the reloaded head.
    pub(super) restart: bool,
    /// Its writes.
    pub(super) timing: StageTiming,
}

impl Appender {
    pub(super) fn run(
        mut self,
        queue: Receiver<Message<Box<Staged>>>,
        next: SyncSender<Message<Box<Staged>>>,
    ) {
        while let Some((group, reload)) = drain(&queue) {
            // Batches decided while the last write ran go to the store as
            // one: each continues the one before it.
            let mut group: Vec<Staged> = group.into_iter().map(|staged| *staged).collect();
            match self.write(&mut group) {
                Ok(()) => {
                    for staged in group {
                        if next.send(Message::Work(Box::new(staged))).is_err() {
                            return self.timing.log("append");
                        }
                    }
                }
                Err(err) => {
                    self.failed.store(true, Ordering::SeqCst);
                    for staged in group {
                        refuse(staged.jobs, &err);
                    }
                }
            }
            if let Some(reply) = reload {
                self.restart = true;
                if next.send(Message::Reload(reply)).is_err() {
                    break;
                }
            }
        }
        self.timing.log("append");
    }

    /// Writes a group of consecutive batches as one append.
    fn write(&mut self, group: &mut [Staged]) -> Result<(), StoreError> {
        let Some(first) = group.first() else {
            return Ok(());
        };
        if std::mem::take(&mut self.restart) {
            self.applied = first.batch.expected_head;
            self.failure = None;
        }
        if first.batch.expected_head != self.applied {
            // Decided on top of a batch that failed: its answers rest on
            // effects that are not in the store.
            return Err(self
                .failure
                .clone()
                .unwrap_or_else(|| StoreError::failed("an earlier batch failed")));
        }
        // Only the log and the idempotency records: the read side is
        // written behind it.
        let mut combined = AppendBatch {
            expected_head: self.applied,
            ..AppendBatch::default()
        };
        for staged in group.iter_mut() {
            combined.records.append(&mut staged.batch.records);
            combined.tokens.append(&mut staged.batch.tokens);
        }
        if !combined.records.is_empty() {
            let store = &self.store;
            if let Err(err) = self.timing.time(|| store.write(&combined)) {
                tracing::error!(err = %crate::store::Chain(&err), "appending a batch failed; its commands are refused");
                self.failure = Some(err.clone());
                return Err(err);
            }
        }
        if let Some(last) = group.last() {
            self.applied = last.head;
        }
        Ok(())
    }
}
