//! The single writer. It owns the only mutable copy of the state, so racing
//! commands are decided one after the other. It is a pipeline of four
//! threads, so deciding, writing and waiting for the disk overlap:
//!
//! 1. **decide**: decides the commands that queued up, and those that
//!    arrive meanwhile (up to `max_batch`), against the state including
//!    every batch still in the pipeline, and encodes the records;
//! 2. **append**: writes the batches decided meanwhile to the store as one
//!    append (which its head, written last, commits), checked against the
//!    head they were decided on, without waiting for the disk;
//! 3. **flush**: one flush to the operating system
//!    ([`EventStore::flush_to_os`]) for every batch written meanwhile;
//! 4. **sync**: one sync to the disk ([`EventStore::sync_to_disk`]) for
//!    every batch flushed meanwhile, then publishes the newest state to
//!    readers, answers the callers, in order, and hands the state on to the
//!    read side's writer ([`super::readside`]). The next batches are
//!    flushed while a sync runs.
//!
//! No caller hears anything (not even a refusal decided on state that is not
//! durable yet) before its batch is synced. When a batch fails, every batch
//! decided on top of it fails its head check and is refused too, and the
//! decide stage reloads the state from the store once the pipeline drained.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};

use super::readside::ReadSide;
use super::{AppError, Job};
use crate::domain::{decide, Command, DomainError, ImageId, LedgerState, Policy, Reply};
use crate::projection::Touched;
use crate::store::{AppendBatch, EncodedRecord, EventStore, Head, RecordMeta, StoreError};

/// What the ledger keeps of a command run with a client token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TokenRecord {
    /// SHA-256 of the command's parameters.
    pub fingerprint: String,
    /// The reply the first run got.
    pub reply: Reply,
    /// The log position of the command's last event.
    pub position: u64,
}

/// The key of an idempotency record: the acting account (empty for the
/// system) and the token, separated by a zero byte.
pub fn token_key(actor: Option<&str>, token: &str) -> Vec<u8> {
    let mut key = actor.unwrap_or_default().as_bytes().to_vec();
    key.push(0);
    key.extend_from_slice(token.as_bytes());
    key
}

type Tokens = imbl::HashMap<Vec<u8>, TokenRecord>;

/// The idempotency records of the log up to `head`. Those past it were
/// written by an append that a crash stopped before its head (which
/// commits it): its commands did not happen, so a retry must run them, and
/// the records are removed.
pub(super) fn load_tokens(store: &dyn EventStore, head: u64) -> Result<Tokens, StoreError> {
    let mut tokens = Tokens::new();
    let mut past = Vec::new();
    for (key, value) in store.tokens()? {
        let record: TokenRecord = serde_json::from_slice(&value).map_err(StoreError::decode)?;
        if record.position > head {
            past.push(key);
        } else {
            tokens.insert(key, record);
        }
    }
    if !past.is_empty() {
        store.remove_tokens(&past)?;
        tracing::warn!(
            records = past.len(),
            head,
            "removed idempotency records past the head: an append a crash cut short"
        );
    }
    Ok(tokens)
}

/// The first stage: decides commands in arrival order against the state
/// including every batch still in the pipeline, and hands each batch on.
pub(super) struct Writer {
    store: Arc<dyn EventStore>,
    policy: Arc<Policy>,
    /// The state, head and idempotency records after every command decided
    /// so far, durable or not.
    state: LedgerState,
    head: Head,
    tokens: Tokens,
    max_batch: usize,
    /// Set by a later stage when a batch failed: the state here may hold
    /// effects that never reached the store, so it is reloaded first.
    failed: Arc<AtomicBool>,
    stages: Option<SyncSender<Stage>>,
    threads: Vec<JoinHandle<()>>,
}

/// Decided batches that may wait for the append stage.
const DECIDED_QUEUE: usize = 8;
/// Applied batches that may wait for the flush stage.
const APPLIED_QUEUE: usize = 16;

/// A command's fate within a batch, before the batch is durable.
enum Pending {
    Answer(Result<Reply, AppError>),
    Durable(Reply),
}

/// One decided batch on its way through the pipeline.
struct Staged {
    jobs: Vec<Job>,
    fates: Vec<Pending>,
    batch: AppendBatch,
    /// The state and head after the batch.
    state: Arc<LedgerState>,
    head: Head,
    touched: Touched,
}

enum Stage {
    Batch(Box<Staged>),
    /// Reload the state from the store once every batch before this one is
    /// finished, and send it back.
    Reload(std::sync::mpsc::Sender<Result<(Arc<LedgerState>, Head), AppError>>),
}

impl Writer {
    pub(super) fn new(
        store: Arc<dyn EventStore>,
        policy: Arc<Policy>,
        view: Arc<ArcSwap<LedgerState>>,
        durable: watch::Sender<Head>,
        tokens: Tokens,
        max_batch: usize,
        read_side_delay: Duration,
    ) -> Result<Self, StoreError> {
        let head = *durable.borrow();
        let state = view.load_full();
        let failed = Arc::new(AtomicBool::new(false));
        let (to_apply, applying) = sync_channel::<Stage>(DECIDED_QUEUE);
        let (to_flush, flushing) = sync_channel::<Stage>(APPLIED_QUEUE);
        let (to_sync, syncing) = sync_channel::<Flushed>(APPLIED_QUEUE);
        let spawn = |name: &str, f: Box<dyn FnOnce() + Send>| {
            std::thread::Builder::new()
                .name(name.into())
                .spawn(f)
                .map_err(|e| StoreError::Backend(format!("cannot start the {name} thread: {e}")))
        };
        let applier = Applier {
            store: Arc::clone(&store),
            failed: Arc::clone(&failed),
            applied: head,
            timing: StageTiming::default(),
        };
        let read_side = ReadSide::start(
            Arc::clone(&store),
            Arc::clone(&state),
            head.position,
            read_side_delay,
        )?;
        let flusher = Flusher {
            store: Arc::clone(&store),
            failed: Arc::clone(&failed),
            timing: StageTiming::default(),
        };
        let publisher = Publisher {
            store: Arc::clone(&store),
            failed: Arc::clone(&failed),
            view,
            durable,
            read_side,
            unflushed: Touched::default(),
            timing: StageTiming::default(),
        };
        let threads = vec![
            spawn(
                "ledger-append",
                Box::new(move || applier.run(applying, to_flush)),
            )?,
            spawn(
                "ledger-flush",
                Box::new(move || flusher.run(flushing, to_sync)),
            )?,
            spawn("ledger-sync", Box::new(move || publisher.run(syncing)))?,
        ];
        Ok(Self {
            store,
            policy,
            state: (*state).clone(),
            head,
            tokens,
            max_batch,
            failed,
            stages: Some(to_apply),
            threads,
        })
    }

    pub(super) fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        let (mut batches, mut commands) = (0u64, 0u64);
        while let Some(first) = jobs.blocking_recv() {
            if self.failed.swap(false, Ordering::SeqCst) {
                if let Err(err) = self.reload() {
                    tracing::error!(%err, "cannot reload the state after a failed append");
                    self.failed.store(true, Ordering::SeqCst);
                    let mut refused = vec![first];
                    while refused.len() < self.max_batch {
                        match jobs.try_recv() {
                            Ok(job) => refused.push(job),
                            Err(_) => break,
                        }
                    }
                    refuse(refused, &err.to_string());
                    continue;
                }
            }
            let staged = self.decide_batch(first, &mut jobs);
            batches += 1;
            commands += staged.jobs.len() as u64;
            if !self.hand_on(Stage::Batch(Box::new(staged))) {
                break;
            }
        }
        // Closing the channel lets the later stages finish what they hold.
        self.stages = None;
        for thread in self.threads.drain(..) {
            if thread.join().is_err() {
                tracing::error!("a writer stage panicked");
            }
        }
        tracing::info!(
            batches,
            commands,
            mean_batch = commands as f64 / batches.max(1) as f64,
            "the writer stopped"
        );
    }

    fn hand_on(&self, stage: Stage) -> bool {
        let sent = self
            .stages
            .as_ref()
            .is_some_and(|tx| tx.send(stage).is_ok());
        if !sent {
            tracing::error!("a writer stage stopped; no more commands are taken");
        }
        sent
    }

    /// Decides `first` and every job queued behind it, including those that
    /// arrive while the batch is decided (up to `max_batch`): each batch
    /// ends with a snapshot of the state, whose nodes the next batch copies
    /// before changing them, so fewer, larger batches copy less.
    fn decide_batch(&mut self, first: Job, queue: &mut mpsc::Receiver<Job>) -> Staged {
        let mut batch = AppendBatch {
            expected_head: self.head,
            ..AppendBatch::default()
        };
        let mut touched = Touched::default();
        let mut jobs = Vec::with_capacity(64);
        let mut fates = Vec::with_capacity(64);
        let mut next = Some(first);
        while let Some(job) = next {
            fates.push(self.decide_one(&job, &mut batch, &mut touched));
            jobs.push(job);
            next = if jobs.len() < self.max_batch {
                queue.try_recv().ok()
            } else {
                None
            };
        }
        Staged {
            jobs,
            fates,
            batch,
            // O(1): the state's maps are persistent.
            state: Arc::new(self.state.clone()),
            head: self.head,
            touched,
        }
    }

    /// Waits for the pipeline to drain, then takes the state from the store.
    fn reload(&mut self) -> Result<(), AppError> {
        let (tx, rx) = std::sync::mpsc::channel();
        if !self.hand_on(Stage::Reload(tx)) {
            return Err(StoreError::Backend("the writer is stopping".into()).into());
        }
        let (state, head) = rx
            .recv()
            .map_err(|_| StoreError::Backend("the writer is stopping".into()))??;
        self.tokens = load_tokens(self.store.as_ref(), head.position)?;
        self.state = (*state).clone();
        self.head = head;
        tracing::info!(
            position = head.position,
            "reloaded the state from the store"
        );
        Ok(())
    }

    /// Decides one command on top of everything decided before it, adding
    /// its records and idempotency record to `batch`.
    fn decide_one(&mut self, job: &Job, batch: &mut AppendBatch, touched: &mut Touched) -> Pending {
        let actor = job.command.actor().map(|a| a.as_str().to_owned());
        // The key and the request's fingerprint, only for commands that
        // carry a client token.
        let token = match &job.options.client_token {
            Some(token) => match fingerprint(&job.command) {
                Ok(fp) => Some((token_key(actor.as_deref(), token.as_str()), fp)),
                Err(err) => return Pending::Answer(Err(err.into())),
            },
            None => None,
        };
        if let Some((key, fingerprint)) = &token {
            if let Some(record) = self.tokens.get(key) {
                return Pending::Answer(if record.fingerprint == *fingerprint {
                    Ok(record.reply.clone())
                } else {
                    Err(DomainError::IdempotencyMismatch(
                        "this client_token was already used by this account with other parameters"
                            .into(),
                    )
                    .into())
                });
            }
        }
        let now = now_micros();
        let decision = match decide(
            &self.state,
            &self.policy,
            &job.command,
            now,
            &mut random_image_id,
        ) {
            Ok(decision) => decision,
            Err(err) => return Pending::Answer(Err(err.into())),
        };
        if job.options.dry_run {
            let reply = match decision.reply {
                Reply::ImagesCopied { .. } => Reply::ImagesCopied { images: vec![] },
                Reply::ImageRegistered { .. } | Reply::Done => Reply::Done,
            };
            return Pending::Answer(Ok(reply));
        }
        if decision.events.is_empty() {
            return Pending::Answer(Ok(decision.reply));
        }
        for event in &decision.events {
            let version = self.state.stream_version(event);
            let meta = RecordMeta {
                position: self.head.position + 1,
                aggregate_version: version + 1,
                recorded_at: now,
                actor: actor.as_deref(),
                client_token: job.options.client_token.as_ref().map(|t| t.as_str()),
                request_hash: token.as_ref().map(|(_, fp)| fp.as_str()),
                prev_hash: self.head.hash,
            };
            let record = match EncodedRecord::encode(event, &meta) {
                Ok(record) => record,
                Err(err) => return Pending::Answer(Err(err.into())),
            };
            self.head = Head {
                position: record.position,
                hash: record.hash,
            };
            batch.records.push(record);
            touched.record(event);
            self.state.apply(event);
        }
        if let Some((key, fingerprint)) = token {
            let record = TokenRecord {
                fingerprint,
                reply: decision.reply.clone(),
                position: self.head.position,
            };
            match serde_json::to_vec(&record) {
                Ok(bytes) => batch.tokens.push((key.clone(), bytes)),
                Err(err) => return Pending::Answer(Err(StoreError::encode(err).into())),
            }
            self.tokens.insert(key, record);
        }
        Pending::Durable(decision.reply)
    }
}

/// The second stage: writes each batch to the store (visible, not yet
/// durable), so the next batch is written while the previous one's flush
/// runs.
struct Applier {
    store: Arc<dyn EventStore>,
    failed: Arc<AtomicBool>,
    /// The store's head after the last batch this stage wrote.
    applied: Head,
    /// Its sled writes.
    timing: StageTiming,
}

/// A store call at least this long is logged (at debug level) when it ends.
const SLOW_STORE_CALL: Duration = Duration::from_millis(20);

/// How often a stage ran its store call and how long that took, logged
/// when the writer stops: what tells where a command's time goes.
#[derive(Debug, Default)]
struct StageTiming {
    calls: u64,
    total: Duration,
    longest: Duration,
}

impl StageTiming {
    fn time<T>(&mut self, f: impl FnOnce() -> T) -> T {
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

    fn log(&self, stage: &str) {
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

impl Applier {
    fn run(mut self, stages: Receiver<Stage>, next: SyncSender<Stage>) {
        self.run_batches(&stages, &next);
        self.timing.log("append");
    }

    fn run_batches(&mut self, stages: &Receiver<Stage>, next: &SyncSender<Stage>) {
        // After a reload the next batch starts from the reloaded head.
        let mut restart = false;
        let mut held = None;
        loop {
            let Some(stage) = held.take().or_else(|| stages.recv().ok()) else {
                break;
            };
            let first = match stage {
                Stage::Reload(reply) => {
                    restart = true;
                    if next.send(Stage::Reload(reply)).is_err() {
                        break;
                    }
                    continue;
                }
                Stage::Batch(staged) => *staged,
            };
            if restart {
                self.applied = first.batch.expected_head;
                restart = false;
            }
            // Batches decided while the last write ran go to the store as
            // one: each continues the one before it.
            let mut group = vec![first];
            while let Ok(stage) = stages.try_recv() {
                match stage {
                    Stage::Batch(staged) => group.push(*staged),
                    reload => {
                        held = Some(reload);
                        break;
                    }
                }
            }
            let written = self.write(&mut group);
            match written {
                Ok(()) => {
                    for staged in group {
                        if next.send(Stage::Batch(Box::new(staged))).is_err() {
                            return;
                        }
                    }
                }
                Err(err) => {
                    self.failed.store(true, Ordering::SeqCst);
                    let why = match err {
                        Some(err) => {
                            tracing::error!(%err, "appending a batch failed; its commands are refused");
                            err.to_string()
                        }
                        None => "an earlier batch failed".to_owned(),
                    };
                    for staged in group {
                        refuse(staged.jobs, &why);
                    }
                }
            }
        }
    }

    /// Writes a group of consecutive batches as one append. `None`
    /// means the group was decided on top of a batch that failed, so its
    /// answers rest on effects that are not in the store.
    fn write(&mut self, group: &mut [Staged]) -> Result<(), Option<StoreError>> {
        let Some(first) = group.first() else {
            return Ok(());
        };
        if first.batch.expected_head != self.applied {
            return Err(None);
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
            self.timing
                .time(|| store.append_unflushed(&combined))
                .map_err(Some)?;
        }
        if let Some(last) = group.last() {
            self.applied = last.head;
        }
        Ok(())
    }
}

/// What the flush stage hands to the sync stage.
enum Flushed {
    /// Batches whose records sled has written to its file.
    Batches(Vec<Staged>),
    /// What the batches of a failed flush changed (their callers were
    /// refused): later batches carry their effects, so the read side's next
    /// write must look at these aggregates too.
    Failed(Touched),
    Reload(std::sync::mpsc::Sender<Result<(Arc<LedgerState>, Head), AppError>>),
}

/// Whether any of the batches wrote records. Batches without records only
/// answer from state already durable, or made durable with the others.
fn writes_records(group: &[Staged]) -> bool {
    group
        .iter()
        .any(|staged| staged.head != staged.batch.expected_head)
}

/// The third stage: one flush to the operating system for every batch
/// written meanwhile ([`EventStore::flush_to_os`]), so the next batches are
/// written out while the last ones' sync to the disk runs.
struct Flusher {
    store: Arc<dyn EventStore>,
    failed: Arc<AtomicBool>,
    /// Its flushes.
    timing: StageTiming,
}

impl Flusher {
    fn run(mut self, stages: Receiver<Stage>, next: SyncSender<Flushed>) {
        let mut group = Vec::new();
        while let Ok(first) = stages.recv() {
            let mut reload = None;
            let mut stage = Some(first);
            while let Some(this) = stage.take() {
                match this {
                    Stage::Batch(staged) => group.push(*staged),
                    Stage::Reload(reply) => {
                        reload = Some(reply);
                        break;
                    }
                }
                stage = stages.try_recv().ok();
            }
            let message = self.flush(std::mem::take(&mut group));
            let sent = message.is_none_or(|message| next.send(message).is_ok())
                && reload.is_none_or(|reply| next.send(Flushed::Reload(reply)).is_ok());
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
            if let Err(err) = self.timing.time(|| store.flush_to_os()) {
                tracing::error!(%err, "flushing failed; the commands of the batches are refused");
                self.failed.store(true, Ordering::SeqCst);
                let mut touched = Touched::default();
                for staged in group {
                    touched.extend(staged.touched);
                    refuse(staged.jobs, &err.to_string());
                }
                return Some(Flushed::Failed(touched));
            }
        }
        Some(Flushed::Batches(group))
    }
}

/// The last stage: one sync to the disk for every batch flushed meanwhile,
/// then the batches' states are published and their callers answered, in
/// order.
struct Publisher {
    store: Arc<dyn EventStore>,
    failed: Arc<AtomicBool>,
    view: Arc<ArcSwap<LedgerState>>,
    /// Tells readers how far the log is durable; dropped when the writer stops.
    durable: watch::Sender<Head>,
    /// The read side's writer: gets every durable state. It stops (after
    /// writing what waits) when this stage ends.
    read_side: ReadSide,
    /// What refused batches changed: their records may be in the store
    /// all the same, and batches decided on top of them carry their effects,
    /// so the read side's next write must look at these aggregates too.
    unflushed: Touched,
    /// Its syncs.
    timing: StageTiming,
}

impl Publisher {
    fn run(mut self, stages: Receiver<Flushed>) {
        let mut ready = Vec::new();
        while let Ok(first) = stages.recv() {
            let mut reload = None;
            let mut stage = Some(first);
            while let Some(next) = stage.take() {
                match next {
                    Flushed::Batches(mut group) => ready.append(&mut group),
                    Flushed::Failed(touched) => self.unflushed.extend(touched),
                    Flushed::Reload(reply) => {
                        reload = Some(reply);
                        break;
                    }
                }
                stage = stages.try_recv().ok();
            }
            self.publish(std::mem::take(&mut ready));
            if let Some(reply) = reload {
                let _ = reply.send(self.reload());
            }
        }
        self.timing.log("sync");
    }

    fn publish(&mut self, ready: Vec<Staged>) {
        if writes_records(&ready) {
            let store = &self.store;
            if let Err(err) = self.timing.time(|| store.sync_to_disk()) {
                tracing::error!(%err, "syncing failed; the commands of the batches are refused");
                self.failed.store(true, Ordering::SeqCst);
                for staged in ready {
                    self.unflushed.extend(staged.touched);
                    refuse(staged.jobs, &err.to_string());
                }
                return;
            }
        }
        let Some(last) = ready.last() else { return };
        let head = last.head;
        let state = Arc::clone(&last.state);
        self.view.store(Arc::clone(&state));
        let moved = self.durable.send_if_modified(|durable| {
            let moved = *durable != head;
            *durable = head;
            moved
        });
        let mut touched = std::mem::take(&mut self.unflushed);
        for staged in ready {
            touched.extend(staged.touched);
            for (job, fate) in staged.jobs.into_iter().zip(staged.fates) {
                let answer = match fate {
                    Pending::Answer(answer) => answer,
                    Pending::Durable(reply) => Ok(reply),
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
        let (state, head) = super::load(self.store.as_ref())?;
        self.unflushed = Touched::default();
        let published = Arc::new(state);
        self.view.store(Arc::clone(&published));
        self.durable.send_replace(head);
        self.read_side.reset(Arc::clone(&published), head.position);
        Ok((published, head))
    }
}

/// Answers every job with a storage failure: the outcome is unknown to the caller.
fn refuse(jobs: Vec<Job>, why: &str) {
    for job in jobs {
        let _ = job
            .reply
            .send(Err(AppError::Storage(StoreError::Backend(why.to_owned()))));
    }
}

/// SHA-256 (hex) of a command's parameters: what tells a retry from a new request.
pub fn fingerprint(command: &Command) -> Result<String, StoreError> {
    let bytes = serde_json::to_vec(command).map_err(StoreError::encode)?;
    Ok(hex::encode(Sha256::digest(bytes)))
}

/// The current time, cut to microseconds so it survives RFC 3339 and protobuf round trips.
fn now_micros() -> OffsetDateTime {
    let now = OffsetDateTime::now_utc();
    now.replace_nanosecond(now.nanosecond() / 1_000 * 1_000)
        .unwrap_or(now)
}

fn random_image_id() -> ImageId {
    let mut rng = rand::rng();
    let suffix: String = (0..ImageId::SUFFIX_LEN)
        .map(|_| ImageId::ALPHABET[rng.random_range(0..ImageId::ALPHABET.len())] as char)
        .collect();
    // The suffix is drawn from the id alphabet, so this cannot fail.
    ImageId::from_suffix(&suffix).unwrap_or_else(|_| ImageId::min())
}
