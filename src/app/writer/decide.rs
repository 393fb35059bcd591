//! The decide stage (`ledger-decide`): decides commands in arrival order
//! against the state including every batch still in the pipeline, and
//! hands each batch on. [`super::pipeline`] builds and starts it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use time::OffsetDateTime;
use tokio::sync::mpsc;

mod command;
mod restart;
mod start;

use start::PendingTokens;
pub(in crate::app) use start::{spawn_scan, StartTokens};

use super::control::{Control, Request};
use super::{refuse, timing, Message, Staged};
use crate::app::health::Health;
use crate::app::{AppError, Job};
use crate::domain::{LedgerState, Policy};
use crate::idempotency::{self, Tokens};
use crate::projection::Touched;
use crate::store::{AppendBatch, Head, Store, StoreError};

/// How many expired records' keys are read from the log at once (sooner
/// after a second).
const EXPIRED_READ_AT: usize = 1024;

/// At most this many expired records leave the store with one append, so
/// a start after many expired (taken in by the decide stage, see
/// `Decider::take_scan`) does not hold one append up removing them all.
const EXPIRED_PER_APPEND: usize = 4 * EXPIRED_READ_AT;

/// The decide stage.
pub(super) struct Decider {
    store: Arc<dyn Store>,
    policy: Arc<Policy>,
    /// The state, head and idempotency records after every command decided
    /// so far, durable or not.
    state: LedgerState,
    head: Head,
    tokens: Tokens,
    /// The idempotency records still being read at start: `tokens` holds
    /// those made since, and the store answers for the others (see
    /// [`Self::take_scan`]).
    pending: Option<PendingTokens>,
    /// `state` as the last batch handed on holds it: the next one's base.
    published: Arc<LedgerState>,
    max_batch: usize,
    /// What the append stage and the follower ask for.
    control: Arc<Control>,
    /// The epoch the batches decided now belong to.
    epoch: u64,
    /// An epoch started: the next batch is handed on even with no job, to
    /// publish the state caught up to.
    restarted: bool,
    /// What the records caught up to changed: the next batch carries it to
    /// the read side.
    caught_up: Touched,
    /// The log no longer continues this replica's chain: every command is
    /// refused with this.
    broken: Option<StoreError>,
    health: Arc<Health>,
    metrics: Arc<crate::metrics::LedgerMetrics>,
    /// Positions of idempotency records expired in memory, whose keys go
    /// to the store with a later batch that writes records.
    expired: Vec<u64>,
    /// When the keys of expired records were last read from the log.
    expired_read: std::time::Instant,
    /// The position of the last record this replica wrote or caught up
    /// to (the append stage's): records up to it are read from the log.
    written: Arc<AtomicU64>,
    /// Writes fail: commands are refused with this until the healer finds
    /// the store taking them again.
    healing: Option<StoreError>,
    /// The healer thread runs.
    healer: bool,
    stages: Option<SyncSender<Message<Box<Staged>>>>,
    #[cfg(test)]
    failpoints: Arc<crate::app::testing::Failpoints>,
}

/// What the decide stage starts from.
pub(super) struct DecideStart {
    pub(super) store: Arc<dyn Store>,
    pub(super) policy: Arc<Policy>,
    /// The state the ledger loaded, its head and idempotency records.
    pub(super) state: Arc<LedgerState>,
    pub(super) head: Head,
    pub(super) tokens: StartTokens,
    pub(super) control: Arc<Control>,
    pub(super) health: Arc<Health>,
    pub(super) written: Arc<AtomicU64>,
    /// Where decided batches go: the append stage.
    pub(super) stages: SyncSender<Message<Box<Staged>>>,
}

impl Decider {
    /// The decide stage on the state the ledger loaded.
    pub(super) fn new(start: DecideStart, options: &crate::app::WriterOptions) -> Self {
        let (tokens, pending) = match start.tokens {
            StartTokens::Loaded(tokens) => (tokens, None),
            StartTokens::Reading(scan, tokens, head) => {
                (tokens, Some(PendingTokens::Reading(scan, head)))
            }
        };
        Self {
            store: start.store,
            policy: start.policy,
            state: (*start.state).clone(),
            head: start.head,
            tokens,
            pending,
            published: start.state,
            max_batch: options.max_batch.max(1),
            control: start.control,
            epoch: 0,
            restarted: false,
            caught_up: Touched::default(),
            broken: None,
            health: start.health,
            metrics: Arc::clone(&options.metrics),
            expired: Vec::new(),
            expired_read: std::time::Instant::now(),
            written: start.written,
            healing: None,
            healer: false,
            stages: Some(start.stages),
            #[cfg(test)]
            failpoints: Arc::clone(&options.failpoints),
        }
    }

    /// Decides commands until the queue closes; returns how many batches
    /// and commands it decided. Dropping it closes the append stage's
    /// channel, so the later stages finish what they hold and stop.
    pub(super) fn run(mut self, mut queue: mpsc::Receiver<Request>) -> (u64, u64) {
        let (mut batches, mut commands) = (0u64, 0u64);
        loop {
            let mut jobs = Vec::new();
            if !self.control.pending() {
                match queue.blocking_recv() {
                    Some(Request::Command(job)) => jobs.push(job),
                    Some(Request::Wake) => {}
                    None => break,
                }
            }
            let taken = self.control.take();
            if let Some(restart) = taken.restart {
                self.restart(restart);
            }
            // Jobs handed back came first.
            let mut retried = taken.retry;
            retried.append(&mut jobs);
            let mut jobs = retried;
            // A batch with jobs checks the head anyway (its write, or a
            // read when it has no records): following now would only void
            // it. Without jobs, the append stage looks at the log.
            if taken.follow && jobs.is_empty() && !self.hand_on(Message::Follow) {
                break;
            }
            if let Some(err) = &self.broken {
                refuse(jobs, err);
                if !std::mem::take(&mut self.restarted) {
                    continue;
                }
                jobs = Vec::new();
            }
            if taken.healed {
                self.healer = false;
            }
            // A later stage's batch failed (the state here may hold effects
            // that never reached the store), the healer found the store
            // well, or it could not be started.
            if taken.failed || taken.healed || (self.healing.is_some() && !self.healer) {
                self.heal(taken.healed);
            }
            if let Some(err) = &self.healing {
                // Refused at once while the store does not take writes:
                // the healer retries in the background.
                while jobs.len() < self.max_batch {
                    match queue.try_recv() {
                        Ok(Request::Command(job)) => jobs.push(job),
                        Ok(Request::Wake) => {}
                        Err(_) => break,
                    }
                }
                for job in jobs {
                    let _ = job.reply.send(Err(AppError::Unwritable(err.clone())));
                }
                continue;
            }
            self.take_scan();
            // An empty batch when records expired: its state (and the
            // later stages' copies of it) no longer holds them.
            if jobs.is_empty() && !std::mem::take(&mut self.restarted) && !self.tokens_due() {
                continue;
            }
            self.restarted = false;
            let staged = self.decide_batch(jobs, &mut queue);
            self.metrics
                .tokens
                .set(i64::try_from(self.tokens.len()).unwrap_or(i64::MAX));
            batches += 1;
            commands += staged.jobs.len() as u64;
            if !self.hand_on(Message::Work(Box::new(staged))) {
                break;
            }
        }
        (batches, commands)
    }

    /// The keys of the records expired since the last batch that took
    /// some, read from the log once there are many or a second has
    /// passed (one read each: a round trip on a database). Those it cannot
    /// read stay in the store until the ledger next loads.
    fn expired_keys(&mut self) -> Vec<Vec<u8>> {
        if self.expired.is_empty()
            || (self.expired.len() < EXPIRED_READ_AT
                && self.expired_read.elapsed() < std::time::Duration::from_secs(1))
        {
            return Vec::new();
        }
        self.expired_read = std::time::Instant::now();
        let rest = self
            .expired
            .split_off(self.expired.len().min(EXPIRED_PER_APPEND));
        let positions = std::mem::replace(&mut self.expired, rest);
        match self.tokens.keys_at(self.store.as_ref(), &positions) {
            Ok(keys) => keys,
            Err(err) => {
                tracing::warn!(%err, records = positions.len(), "cannot read the keys of expired idempotency records; the store keeps them until the ledger loads");
                Vec::new()
            }
        }
    }

    /// Whether an idempotency record has expired by now.
    fn tokens_due(&self) -> bool {
        self.tokens.any_expired(
            idempotency::micros(OffsetDateTime::now_utc()),
            self.state.policy_or(&self.policy).token_retention_micros(),
        )
    }

    fn hand_on(&self, message: Message<Box<Staged>>) -> bool {
        let sent = self
            .stages
            .as_ref()
            .is_some_and(|tx| tx.send(message).is_ok());
        if !sent {
            tracing::error!("a writer stage stopped; no more commands are taken");
        }
        sent
    }

    /// Decides `first` and every job queued behind it, including those that
    /// arrive while the batch is decided (up to `max_batch`): each batch
    /// ends with a snapshot of the state, whose nodes the next batch copies
    /// before changing them, so fewer, larger batches copy less.
    fn decide_batch(&mut self, first: Vec<Job>, queue: &mut mpsc::Receiver<Request>) -> Staged {
        let mut batch = AppendBatch {
            expected_head: self.head,
            ..AppendBatch::default()
        };
        // Records expired meanwhile leave memory now and the store with a
        // later append.
        self.tokens.written(self.written.load(Ordering::SeqCst));
        let expired = self.tokens.expire(
            idempotency::micros(OffsetDateTime::now_utc()),
            self.state.policy_or(&self.policy).token_retention_micros(),
        );
        self.expired.extend(expired);
        let base_tokens = self.tokens.clone();
        let mut touched = std::mem::take(&mut self.caught_up);
        let mut jobs = Vec::with_capacity(first.len().max(64));
        let mut fates = Vec::with_capacity(first.len().max(64));
        let mut first = first.into_iter();
        loop {
            let job = match first.next() {
                Some(job) => job,
                None if jobs.len() < self.max_batch => match queue.try_recv() {
                    Ok(Request::Command(job)) => job,
                    Ok(Request::Wake) => continue,
                    Err(_) => break,
                },
                None => break,
            };
            let span = timing::decide_span(&job);
            fates.push(span.in_scope(|| self.decide_one(&job, &mut batch, &mut touched)));
            jobs.push(job);
        }
        if !batch.records.is_empty() {
            batch.expired_tokens = self.expired_keys();
        }
        // O(1): the state's maps are persistent.
        let state = Arc::new(self.state.clone());
        Staged {
            jobs,
            fates,
            batch,
            base_state: std::mem::replace(&mut self.published, Arc::clone(&state)),
            base_tokens,
            state,
            tokens: self.tokens.clone(),
            head: self.head,
            touched,
            epoch: self.epoch,
        }
    }

    /// After a failed write, or once the healer found the store taking
    /// writes again (`healed`): asks the store whether it takes writes
    /// (unless the healer just did), then reloads the state from it. When
    /// either fails, commands are refused until the healer finds the store
    /// well again; health says so meanwhile.
    pub(super) fn heal(&mut self, healed: bool) {
        let recovered = if healed {
            Ok(())
        } else {
            self.store.recover().map_err(AppError::Storage)
        };
        match recovered.and_then(|()| self.reload()) {
            Ok(()) => {
                self.healing = None;
                self.health.failing(None);
                if self.health.is_forked() {
                    tracing::info!(
                        position = self.head.position,
                        "reloaded the database's history after a fork: serving"
                    );
                    self.health.forked(false);
                }
                // A batch, even with no job, takes the reloaded head to
                // the append stage, which follows the log from there.
                self.restarted = true;
            }
            Err(err) => {
                let err = match err {
                    AppError::Storage(err) => err,
                    other => StoreError::backend("cannot reload the state", other),
                };
                self.health.failing(Some(&err));
                self.healing = Some(err);
                if !self.healer {
                    match super::heal::start(Arc::clone(&self.store), Arc::clone(&self.control)) {
                        Ok(()) => self.healer = true,
                        // The next command tries again.
                        Err(err) => tracing::error!(%err, "cannot start the healer thread"),
                    }
                }
            }
        }
    }

    /// Waits for the pipeline to drain, then takes the state from the store.
    fn reload(&mut self) -> Result<(), AppError> {
        let (tx, rx) = std::sync::mpsc::channel();
        if !self.hand_on(Message::Reload(tx)) {
            return Err(AppError::ShuttingDown);
        }
        let (state, head) = rx.recv().map_err(|_| AppError::ShuttingDown)??;
        self.tokens = idempotency::load(
            self.store.as_ref(),
            head,
            idempotency::micros(OffsetDateTime::now_utc()),
            state.policy_or(&self.policy).token_retention_micros(),
        )?;
        self.expired.clear();
        self.pending = None;
        // Nothing is in flight: what the log holds is all there is.
        self.written.store(head.position, Ordering::SeqCst);
        self.state = (*state).clone();
        self.published = state;
        self.head = head;
        tracing::info!(
            position = head.position,
            "reloaded the state from the store"
        );
        Ok(())
    }
}
