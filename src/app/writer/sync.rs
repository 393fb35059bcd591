//! The sync stage (`ledger-sync`): one sync to the disk for every batch
//! flushed meanwhile, then the batches' states are published and their
//! callers answered, in order; it also serves the reloads.

use std::sync::mpsc::Receiver;
use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use super::control::Control;
use super::drain::drain;
use super::timing::{self, StageTiming};
use super::{refuse, writes_records, Flushed, Message, Pending, Staged};
use crate::app::AppError;
use crate::domain::LedgerState;
use crate::projection::ProjectionWriter;
use crate::projection::Touched;
use crate::store::{Chain, Head, Store};

pub(super) struct Syncer {
    pub(super) store: Arc<dyn Store>,
    /// Told when a batch failed, so the decide stage reloads before it
    /// decides more.
    pub(super) control: Arc<Control>,
    pub(super) view: Arc<ArcSwap<LedgerState>>,
    /// Tells readers how far the log is durable; dropped when the writer stops.
    pub(super) durable: watch::Sender<Head>,
    /// The read side's writer: gets every durable state. It stops (after
    /// writing what waits) when this stage ends.
    pub(super) read_side: ProjectionWriter,
    /// What refused batches changed: their records may be in the store
    /// all the same, and batches decided on top of them carry their effects,
    /// so the read side's next write must look at these aggregates too.
    pub(super) unflushed: Touched,
    /// Its syncs.
    pub(super) timing: StageTiming,
    pub(super) metrics: Arc<crate::metrics::LedgerMetrics>,
}

impl Syncer {
    pub(super) fn run(mut self, queue: Receiver<Message<Flushed>>) {
        while let Some((work, reload, _)) = drain(&queue) {
            let mut ready = Vec::new();
            for flushed in work {
                match flushed {
                    Flushed::Batches(mut group) => ready.append(&mut group),
                    Flushed::Failed(touched) => self.unflushed.extend(touched),
                }
            }
            self.publish(ready);
            if let Some(reply) = reload {
                let _ = reply.send(self.reload());
            }
        }
        self.timing.log("sync");
    }

    fn publish(&mut self, ready: Vec<Staged>) {
        if writes_records(&ready) {
            let store = &self.store;
            let _spans = timing::stage_spans("sync", &ready);
            let started = std::time::Instant::now();
            let synced = self.timing.time(|| store.sync_to_disk());
            self.metrics.stage("sync", started.elapsed());
            if let Err(err) = synced {
                tracing::error!(err = %Chain(&err), "syncing failed; the commands of the batches are refused");
                self.control.failed();
                for staged in ready {
                    self.unflushed.extend(staged.touched);
                    refuse(staged.jobs, &err);
                }
                return;
            }
        }
        let Some(last) = ready.last() else { return };
        let head = last.head;
        let before = self.durable.borrow().position;
        let state = Arc::clone(&last.state);
        self.view.store(Arc::clone(&state));
        let moved = self.durable.send_if_modified(|durable| {
            let moved = *durable != head;
            *durable = head;
            moved
        });
        // Counted before anyone is answered: a scrape after a reply sees it.
        let committed = ready
            .iter()
            .flat_map(|staged| &staged.fates)
            .filter(|fate| matches!(fate, Pending::Durable(_)))
            .count() as u64;
        if committed > 0 {
            // Caught-up records of other replicas count as events too.
            self.metrics
                .events
                .inc_by(head.position.saturating_sub(before));
            self.metrics.commands.inc_by(committed);
            self.metrics.batch_size.observe(committed as f64);
        }
        let mut touched = std::mem::take(&mut self.unflushed);
        for staged in ready {
            touched.extend(staged.touched);
            for (job, fate) in staged.jobs.into_iter().zip(staged.fates) {
                let answer = match fate {
                    Pending::Answer(answer) => answer,
                    Pending::Durable(reply) | Pending::Confirmed(reply) => Ok(reply),
                };
                // A caller that gave up no longer listens; nothing to do then.
                let _ = job.reply.send(answer);
            }
        }
        if moved {
            self.read_side.durable(state, head.position, touched);
        }
    }

    fn reload(&mut self) -> Result<(Arc<LedgerState>, Head), AppError> {
        // Loading catches the stored read side up, so its writer must have
        // finished with it first, and carry on from the loaded state after.
        self.read_side.sync();
        let (state, head) = crate::projection::load_state(self.store.as_ref())?;
        self.unflushed = Touched::default();
        let published = Arc::new(state);
        self.view.store(Arc::clone(&published));
        self.durable.send_replace(head);
        self.read_side.reset(head.position);
        Ok((published, head))
    }
}
