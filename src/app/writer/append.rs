//! The append stage (`ledger-append`): writes each group of batches to the
//! store (visible, not yet durable), so the next group is written while
//! the last one's flush runs. On a shared log it is also where a lost race
//! is noticed and a new epoch starts (see [`super`]).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;

use super::control::{Control, Restart};
use super::drain::drain;
use super::timing::{self, StageTiming};
use super::{refuse, Message, Pending, Staged};
use crate::domain::LedgerState;
use crate::idempotency::Tokens;
use crate::projection::Touched;
use crate::store::{AppendBatch, Chain, Head, Store, StoreError};

pub(super) struct Appender {
    pub(super) store: Arc<dyn Store>,
    pub(super) control: Arc<Control>,
    /// The store's head after the last batch this stage wrote (or the
    /// head an epoch started at), and the state and idempotency records
    /// after the last batch it wrote (the base of the next epoch when the
    /// log moves on without this replica).
    pub(super) applied: Head,
    pub(super) applied_state: Arc<LedgerState>,
    pub(super) applied_tokens: Tokens,
    /// The position of `applied`, for the follower: the log moving past it
    /// means another replica appended.
    pub(super) written: Arc<AtomicU64>,
    /// Batches of older epochs are void.
    pub(super) epoch: u64,
    /// An epoch started and no batch of it arrived yet.
    pub(super) restarting: bool,
    /// This stage holds the log's turn until its next write.
    pub(super) in_turn: bool,
    /// The position up to which the log is known durable where it is
    /// kept: on a shared log, the head of this replica's last
    /// acknowledged commit (records read from the database may be on its
    /// primary only, after a crash or a cancelled synchronous wait); on a
    /// store of its own, everything it wrote or loaded.
    pub(super) confirmed: u64,
    /// What batches handed back changed (they carry what a catch-up
    /// changed, too): the next batch written takes it to the read side.
    pub(super) carried: Touched,
    /// The failure that refused the last batches: batches decided on top
    /// of them are refused with it too.
    pub(super) failure: Option<StoreError>,
    /// A reload passed: the next batch starts from the reloaded head.
    pub(super) restart: bool,
    /// Its writes.
    pub(super) timing: StageTiming,
    pub(super) metrics: Arc<crate::metrics::LedgerMetrics>,
}

impl Appender {
    pub(super) fn run(
        mut self,
        queue: Receiver<Message<Box<Staged>>>,
        next: SyncSender<Message<Box<Staged>>>,
    ) {
        while let Some((group, reload, follow)) = drain(&queue) {
            // Batches of an older epoch go back to be decided again.
            let mut current = Vec::with_capacity(group.len());
            for staged in group {
                if staged.epoch < self.epoch {
                    let staged = *staged;
                    self.carried.extend(staged.touched);
                    self.control.retry(staged.jobs);
                } else {
                    current.push(*staged);
                }
            }
            // Batches decided while the last write ran go to the store as
            // one: each continues the one before it.
            let mut group = current;
            if !group.is_empty() {
                self.restarting = false;
            }
            match self.write(&mut group) {
                Ok(None) => {
                    if let Some(first) = group.first_mut() {
                        first.touched.extend(std::mem::take(&mut self.carried));
                    }
                    if let Some(last) = group.last() {
                        self.applied_state = Arc::clone(&last.state);
                        self.applied_tokens = last.tokens.clone();
                        self.written.store(self.applied.position, Ordering::SeqCst);
                    }
                    for staged in group {
                        if next.send(Message::Work(Box::new(staged))).is_err() {
                            return self.timing.log("append");
                        }
                    }
                }
                Ok(Some(target)) => {
                    // Another replica appended first; this one holds the
                    // turn now. The group was decided on the state at
                    // `applied`: decide its jobs again on the log's.
                    if let Some(first) = group.first() {
                        self.applied_state = Arc::clone(&first.base_state);
                        self.applied_tokens = first.base_tokens.clone();
                    }
                    let mut jobs = Vec::new();
                    for staged in group {
                        self.carried.extend(staged.touched);
                        jobs.extend(staged.jobs);
                    }
                    self.in_turn = true;
                    self.start_epoch(target, jobs);
                }
                Err(err) => {
                    self.control.failed();
                    for staged in group {
                        refuse(staged.jobs, &err);
                    }
                }
            }
            // Until a batch brings the reloaded head, `applied` is stale.
            if follow && !self.restarting && self.failure.is_none() && !self.restart {
                self.follow();
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

    /// Starts an epoch at `target`, handing `jobs` back to be decided again.
    fn start_epoch(&mut self, target: Head, jobs: Vec<super::Job>) {
        self.epoch += 1;
        self.restarting = true;
        self.control.restart(
            Restart {
                epoch: self.epoch,
                state: Arc::clone(&self.applied_state),
                tokens: self.applied_tokens.clone(),
                base: self.applied,
                target,
            },
            jobs,
        );
        self.applied = target;
        self.written.store(target.position, Ordering::SeqCst);
    }

    /// Another replica may have appended: catch up when the log moved.
    fn follow(&mut self) {
        match self.store.head() {
            Ok(head) if head != self.applied => self.start_epoch(head, Vec::new()),
            Ok(_) => {}
            Err(err) => {
                tracing::warn!(err = %Chain(&err), "cannot read the head to follow the log")
            }
        }
    }

    /// Writes a group of consecutive batches as one append. `Some(head)`
    /// when another replica moved the log's head first: nothing was
    /// written and this stage holds the turn.
    fn write(&mut self, group: &mut [Staged]) -> Result<Option<Head>, StoreError> {
        let Some(first) = group.first() else {
            return Ok(None);
        };
        if std::mem::take(&mut self.restart) {
            self.applied = first.batch.expected_head;
            self.applied_state = Arc::clone(&first.base_state);
            self.applied_tokens = first.base_tokens.clone();
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
            combined
                .expired_tokens
                .append(&mut staged.batch.expired_tokens);
        }
        let store = &self.store;
        // A turn is only ever taken on a shared log.
        let shared = store.shared();
        let confirming = group.iter().any(|staged| {
            staged
                .fates
                .iter()
                .any(|f| matches!(f, Pending::Confirmed(_)))
        });
        let fence = shared.is_some() && confirming && self.confirmed < self.applied.position;
        if combined.records.is_empty() && !fence {
            if let Some(shared) = shared {
                if std::mem::take(&mut self.in_turn) {
                    if let Err(err) = shared.end_turn() {
                        tracing::warn!(err = %Chain(&err), "cannot give the log's turn back");
                    }
                } else if group.iter().any(|staged| !staged.jobs.is_empty()) {
                    // Answers without records (refusals, dry runs, retries)
                    // were decided on this replica's state: they stand only
                    // if no other replica appended since, as a write's head
                    // check ensures for the answers that come with records.
                    if store.head()? != self.applied {
                        return shared.take_turn().map(Some);
                    }
                }
            }
        } else {
            // With no records on a shared log this is a fence: an empty
            // commit behind the head check, acknowledged only once the
            // standby holds the log up to it.
            self.in_turn = false;
            let _spans = timing::stage_spans("append", group);
            let started = std::time::Instant::now();
            let written = self.timing.time(|| match shared {
                Some(shared) => shared.write_or_take_turn(&combined),
                None => store.write(&combined).map(|()| None),
            });
            match written {
                Ok(None) => self.metrics.stage("append", started.elapsed()),
                Ok(Some(head)) => return Ok(Some(head)),
                Err(err) => {
                    tracing::error!(err = %Chain(&err), "appending a batch failed; its commands are refused");
                    self.failure = Some(err.clone());
                    return Err(err);
                }
            }
            if let Some(last) = group.last() {
                self.confirmed = last.head.position;
            }
        }
        if let Some(last) = group.last() {
            self.applied = last.head;
        }
        Ok(None)
    }
}
