//! The single writer. It owns the only mutable copy of the state, so racing
//! commands are decided one after the other, and it commits everything that
//! queued up while the previous flush ran in one atomic write and one flush.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use rand::Rng;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use time::OffsetDateTime;
use tokio::sync::{mpsc, watch};

use super::projector::{Projector, Snapshot};
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

pub(super) fn load_tokens(store: &dyn EventStore) -> Result<Tokens, StoreError> {
    store
        .tokens()?
        .into_iter()
        .map(|(key, value)| {
            let record = serde_json::from_slice(&value).map_err(StoreError::decode)?;
            Ok((key, record))
        })
        .collect()
}

pub(super) struct Writer {
    store: Arc<dyn EventStore>,
    policy: Arc<Policy>,
    view: Arc<ArcSwap<LedgerState>>,
    head: Head,
    /// Tells readers how far the log is durable; dropped when the writer stops.
    durable: watch::Sender<Head>,
    tokens: Tokens,
    max_batch: usize,
    /// Set after a failed append: the store may hold more than the state
    /// knows, so it is reloaded before the next batch.
    stale: bool,
    /// Saves the projections: every [`PROJECT_EVERY_EVENTS`] events or
    /// [`PROJECT_EVERY`] of writes, and at shutdown; a start after a crash
    /// catches them up from the log.
    projector: Projector,
    /// When the last snapshot was handed over, at which position, and what
    /// changed since.
    offered_at: u64,
    offered_when: Instant,
    unoffered: Touched,
}

/// Events between two saves of the projections.
const PROJECT_EVERY_EVENTS: u64 = 1024;
/// Longest time between two saves of the projections while writes come in.
const PROJECT_EVERY: Duration = Duration::from_secs(1);

/// A command's fate within a batch, before the batch is durable.
enum Pending {
    Answer(Result<Reply, AppError>),
    Durable(Reply),
}

impl Writer {
    pub(super) fn new(
        store: Arc<dyn EventStore>,
        policy: Arc<Policy>,
        view: Arc<ArcSwap<LedgerState>>,
        durable: watch::Sender<Head>,
        tokens: Tokens,
        max_batch: usize,
    ) -> Self {
        let head = *durable.borrow();
        let projector = Projector::start(Arc::clone(&store), view.load_full());
        Self {
            store,
            policy,
            view,
            head,
            durable,
            tokens,
            max_batch,
            stale: false,
            projector,
            offered_at: head.position,
            offered_when: Instant::now(),
            unoffered: Touched::default(),
        }
    }

    pub(super) fn run(mut self, mut jobs: mpsc::Receiver<Job>) {
        let mut batch = Vec::with_capacity(self.max_batch);
        let (mut batches, mut commands) = (0u64, 0u64);
        while let Some(first) = jobs.blocking_recv() {
            batch.push(first);
            while batch.len() < self.max_batch {
                match jobs.try_recv() {
                    Ok(job) => batch.push(job),
                    Err(_) => break,
                }
            }
            batches += 1;
            commands += batch.len() as u64;
            self.commit(std::mem::take(&mut batch));
        }
        let last = self.final_snapshot();
        self.projector.finish(last);
        tracing::info!(
            batches,
            commands,
            mean_batch = commands as f64 / batches.max(1) as f64,
            "the writer stopped"
        );
    }

    /// The snapshot that brings the stored projections up to the durable head.
    fn final_snapshot(&mut self) -> Option<Snapshot> {
        if self.stale || self.unoffered.is_empty() {
            return None;
        }
        Some(Snapshot {
            state: self.view.load_full(),
            position: self.head.position,
            touched: std::mem::take(&mut self.unoffered),
        })
    }

    /// Hands the durable state to the projector when a save is due.
    fn maybe_project(&mut self, published: &Arc<LedgerState>, touched: &Touched) {
        self.unoffered.extend(touched);
        let due = self.head.position - self.offered_at >= PROJECT_EVERY_EVENTS
            || self.offered_when.elapsed() >= PROJECT_EVERY;
        if !due || self.unoffered.is_empty() {
            return;
        }
        let snapshot = Snapshot {
            state: Arc::clone(published),
            position: self.head.position,
            touched: self.unoffered.clone(),
        };
        if self.projector.offer(snapshot) {
            self.offered_at = self.head.position;
            self.offered_when = Instant::now();
            self.unoffered = Touched::default();
        }
    }

    fn commit(&mut self, jobs: Vec<Job>) {
        if self.stale {
            if let Err(err) = self.reload() {
                tracing::error!(%err, "cannot reload the state after a failed append");
                for job in jobs {
                    let _ = job
                        .reply
                        .send(Err(AppError::Storage(StoreError::Backend(err.to_string()))));
                }
                return;
            }
        }
        let before = self.view.load_full();
        let mut state = (*before).clone();
        let mut tokens = self.tokens.clone();
        let mut head = self.head;
        let mut batch = AppendBatch {
            expected_head: head,
            ..AppendBatch::default()
        };
        let mut touched = Touched::default();
        let mut fates = Vec::with_capacity(jobs.len());
        for job in &jobs {
            let fate = self.decide_one(
                job,
                &mut state,
                &mut tokens,
                &mut head,
                &mut batch,
                &mut touched,
            );
            fates.push(fate);
        }
        let fates = match self.persist(batch) {
            Ok(()) => {
                self.head = head;
                self.tokens = tokens;
                let published = Arc::new(state);
                self.view.store(Arc::clone(&published));
                self.maybe_project(&published, &touched);
                self.durable.send_if_modified(|durable| {
                    let moved = *durable != head;
                    *durable = head;
                    moved
                });
                fates
                    .into_iter()
                    .map(|fate| match fate {
                        Pending::Answer(answer) => answer,
                        Pending::Durable(reply) => Ok(reply),
                    })
                    .collect::<Vec<_>>()
            }
            Err(err) => {
                tracing::error!(%err, "appending a batch failed; its commands are refused");
                self.stale = true;
                // Every answer of the batch may rest on effects that did not
                // become durable, so none of them stands.
                fates
                    .iter()
                    .map(|_| Err(AppError::Storage(StoreError::Backend(err.to_string()))))
                    .collect()
            }
        };
        for (job, answer) in jobs.into_iter().zip(fates) {
            // A caller that gave up no longer listens; nothing to do then.
            let _ = job.reply.send(answer);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn decide_one(
        &self,
        job: &Job,
        state: &mut LedgerState,
        tokens: &mut Tokens,
        head: &mut Head,
        batch: &mut AppendBatch,
        touched: &mut Touched,
    ) -> Pending {
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
            if let Some(record) = tokens.get(key) {
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
        let decision = match decide(state, &self.policy, &job.command, now, &mut random_image_id) {
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
            let version = state.stream_version(event);
            let meta = RecordMeta {
                position: head.position + 1,
                aggregate_version: version + 1,
                recorded_at: now,
                actor: actor.as_deref(),
                client_token: job.options.client_token.as_ref().map(|t| t.as_str()),
                request_hash: token.as_ref().map(|(_, fp)| fp.as_str()),
                prev_hash: head.hash,
            };
            let record = match EncodedRecord::encode(event, &meta) {
                Ok(record) => record,
                Err(err) => return Pending::Answer(Err(err.into())),
            };
            *head = Head {
                position: record.position,
                hash: record.hash,
            };
            batch.records.push(record);
            touched.record(event);
            state.apply(event);
        }
        if let Some((key, fingerprint)) = token {
            let record = TokenRecord {
                fingerprint,
                reply: decision.reply.clone(),
                position: head.position,
            };
            match serde_json::to_vec(&record) {
                Ok(bytes) => batch.tokens.push((key.clone(), bytes)),
                Err(err) => return Pending::Answer(Err(StoreError::encode(err).into())),
            }
            tokens.insert(key, record);
        }
        Pending::Durable(decision.reply)
    }

    fn persist(&self, batch: AppendBatch) -> Result<(), StoreError> {
        if batch.records.is_empty() {
            return Ok(());
        }
        self.store.append(&batch)
    }

    fn reload(&mut self) -> Result<(), AppError> {
        // The projector must be idle while loading rewrites the projections.
        self.projector.finish(None);
        let (state, head) = super::load(self.store.as_ref())?;
        self.tokens = load_tokens(self.store.as_ref())?;
        self.head = head;
        let published = Arc::new(state);
        self.view.store(Arc::clone(&published));
        self.projector = Projector::start(Arc::clone(&self.store), published);
        self.offered_at = head.position;
        self.offered_when = Instant::now();
        self.unoffered = Touched::default();
        self.durable.send_replace(head);
        self.stale = false;
        tracing::info!(
            position = head.position,
            "reloaded the state from the store"
        );
        Ok(())
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
