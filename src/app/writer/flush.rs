//! The flush stage (`ledger-flush`): one flush to the operating system for
//! every batch written meanwhile
//! ([`EventLog::flush_to_os`](crate::store::EventLog::flush_to_os)), so the
//! next batches are written out while the last ones' sync to the disk runs.

use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;

use super::control::Control;
use super::drain::drain;
use super::timing::{self, StageTiming};
use super::{refuse, writes_records, Flushed, Message, Staged};
use crate::projection::Touched;
use crate::store::{Chain, Store};

pub(super) struct Flusher {
    pub(super) store: Arc<dyn Store>,
    /// Told when a batch failed, so the decide stage reloads before it
    /// decides more.
    pub(super) control: Arc<Control>,
    /// Its flushes.
    pub(super) timing: StageTiming,
    pub(super) metrics: Arc<crate::metrics::LedgerMetrics>,
}

impl Flusher {
    pub(super) fn run(
        mut self,
        queue: Receiver<Message<Box<Staged>>>,
        next: SyncSender<Message<Flushed>>,
    ) {
        while let Some((group, reload, _)) = drain(&queue) {
            let group = group.into_iter().map(|staged| *staged).collect();
            let sent = self
                .flush(group)
                .is_none_or(|flushed| next.send(Message::Work(flushed)).is_ok())
                && reload.is_none_or(|reply| next.send(Message::Reload(reply)).is_ok());
            if !sent {
                break;
            }
        }
        self.timing.log("flush");
    }

    /// Flushes a group; on failure refuses its callers.
    fn flush(&mut self, group: Vec<Staged>) -> Option<Flushed> {
        if group.is_empty() {
            return None;
        }
        if writes_records(&group) {
            let store = &self.store;
            let _spans = timing::stage_spans("flush", &group);
            let started = std::time::Instant::now();
            let flushed = self.timing.time(|| store.flush_to_os());
            self.metrics.stage("flush", started.elapsed());
            if let Err(err) = flushed {
                tracing::error!(err = %Chain(&err), "flushing failed; the commands of the batches are refused");
                self.control.failed();
                let mut touched = Touched::default();
                for staged in group {
                    touched.extend(staged.touched);
                    refuse(staged.jobs, &err);
                }
                return Some(Flushed::Failed(touched));
            }
        }
        Some(Flushed::Batches(group))
    }
}
