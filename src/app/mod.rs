//! The command path: commands go to the single writer, which decides them
//! against the current state, appends their events in group commits and
//! replies once they are durable; queries read the last durable snapshot.

mod fence;
mod health;
mod limits;
mod log;
mod scrub;
mod start;
mod sweep;
#[cfg(test)]
pub(crate) mod testing;
mod writer;

#[cfg(test)]
mod heal_tests;
#[cfg(test)]
mod retention_tests;
#[cfg(test)]
mod scrub_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod token_tests;

use std::sync::Arc;
use std::thread::JoinHandle;

use arc_swap::ArcSwap;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};

use crate::domain::{ClientToken, Command, DomainError, LedgerState, Policy, Reply};
use crate::store::{Head, Store, StoreError};
use fence::Fence;
use writer::{Control, Follower, Request, WriterLink};

pub use health::Condition;
pub use limits::LIMITS_PRINCIPAL;
pub use log::{LogReader, LogRecord};
pub use sweep::{sweep_ended_shares, SWEEP_PRINCIPAL};

#[cfg(test)]
pub(crate) use crate::projection::state_at;
pub use crate::projection::{rebuild_projections, replay_log};

/// Why a command or query failed.
#[derive(Debug, Error)]
pub enum AppError {
    /// A rule or input check refused it; nothing was changed.
    #[error(transparent)]
    Domain(#[from] DomainError),
    /// The store failed; the outcome of a command is unknown (retry it with
    /// the same client token to learn it without applying it twice).
    #[error(transparent)]
    Storage(#[from] StoreError),
    /// The store does not take writes at the moment (a full disk, an I/O
    /// error): the command was refused before it was decided, nothing was
    /// changed. The writer retries the store meanwhile.
    #[error("the store does not take writes: {0}")]
    Unwritable(StoreError),
    /// A read met a damaged record (named in the text): reading it again
    /// will not help; restore the log from a backup.
    #[error("{0}")]
    Damaged(String),
    /// An audit read failed for a reason other than the store's.
    #[error(transparent)]
    Audit(#[from] crate::audit::AuditError),
    /// The ledger is shutting down; retry on another instance or later.
    #[error("the ledger is shutting down")]
    ShuttingDown,
    /// This replica holds history the database does not (lost in a
    /// failover) and is reloading itself; retry shortly, or on another.
    #[error("this replica is reloading its history from the database")]
    Forked,
    /// A thread or runtime the ledger needs could not be started (the
    /// process is out of threads or memory); nothing was changed.
    #[error("cannot start {what}")]
    Start {
        /// What could not be started.
        what: &'static str,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// Options of a command beyond the command itself.
#[derive(Debug, Clone, Default)]
pub struct CommandOptions {
    /// Idempotency key: a retry with the same key and parameters gets the
    /// first reply and appends nothing.
    pub client_token: Option<ClientToken>,
    /// Check everything, change nothing.
    pub dry_run: bool,
    /// The authenticated caller, recorded with the events.
    pub principal: Option<std::sync::Arc<str>>,
}

/// The ledger's settings an operator sets (`serve`'s flags).
#[derive(clap::Args, Debug, Clone, PartialEq, Eq)]
pub struct LedgerSettings {
    /// Longest a durable change waits before the stored read side is
    /// written, ms: what a start after a crash replays at most (with a cap
    /// of 131,072 events). Lower means more writes, and fewer merged.
    #[arg(long, env = "IMAGE_LEDGER_READ_SIDE_DELAY_MS", default_value_t = 5_000)]
    pub read_side_delay_ms: u64,
    /// Records per second the background scrub reads the log at, checking
    /// every hash and link, pass after pass (0: no scrub). A pass over a
    /// million records takes under two minutes at the default, at a few
    /// percent of a core.
    #[arg(long, env = "IMAGE_LEDGER_SCRUB_RATE", default_value_t = 10_000)]
    pub scrub_rate: u64,
}

impl Default for LedgerSettings {
    fn default() -> Self {
        crate::settings::defaults()
    }
}

impl LedgerSettings {
    /// The read side's delay.
    pub fn read_side_delay(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.read_side_delay_ms)
    }
}

/// Tuning of the writer.
#[derive(Debug, Clone)]
pub struct WriterOptions {
    /// Most commands in one group commit.
    pub max_batch: usize,
    /// Commands waiting for the writer before callers are pushed back on.
    pub queue_depth: usize,
    /// What an operator sets.
    pub settings: LedgerSettings,
    /// What the stages count.
    pub metrics: Arc<crate::metrics::LedgerMetrics>,
    /// Failures tests inject into the pipeline.
    #[cfg(test)]
    pub(crate) failpoints: Arc<testing::Failpoints>,
}

impl Default for WriterOptions {
    fn default() -> Self {
        Self {
            max_batch: 512,
            queue_depth: 4096,
            settings: LedgerSettings::default(),
            metrics: Arc::default(),
            #[cfg(test)]
            failpoints: Arc::default(),
        }
    }
}

/// What a command got: its reply and where its events are in the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Committed {
    /// The reply.
    pub reply: Reply,
    /// The log position of its last event: a consistency token. 0 when it
    /// recorded nothing (a dry run, a command that changed nothing); a retry
    /// with the same client token gets the first run's.
    pub position: u64,
}

impl Committed {
    /// A reply that recorded nothing.
    fn unrecorded(reply: Reply) -> Self {
        Self { reply, position: 0 }
    }
}

pub(crate) struct Job {
    command: Command,
    options: CommandOptions,
    reply: oneshot::Sender<Result<Committed, AppError>>,
    /// The caller's span: the writer's stages record theirs under it.
    span: tracing::Span,
}

/// A handle on a running ledger. Cheap to clone.
#[derive(Clone)]
pub struct Ledger {
    inner: Arc<Inner>,
}

struct Inner {
    jobs: std::sync::Mutex<Option<mpsc::Sender<Request>>>,
    view: Arc<ArcSwap<LedgerState>>,
    store: Arc<dyn Store>,
    durable: watch::Receiver<Head>,
    policy: Arc<Policy>,
    writer: std::sync::Mutex<Option<JoinHandle<()>>>,
    health: Arc<health::Health>,
    metrics: Arc<crate::metrics::LedgerMetrics>,
    /// On a shared store: follows the other replicas' appends, and reads
    /// the head for linearizable queries.
    follower: std::sync::Mutex<Option<Follower>>,
    /// Checks the durable log in the background; dropped at shutdown.
    scrub: std::sync::Mutex<Option<scrub::Scrub>>,
    fence: Option<Fence>,
    /// What the fence tells the writer (a fork).
    link: WriterLink,
}

impl Ledger {
    /// Loads the state from `store` (from the persisted projections when they
    /// are current, else by replaying the log) and starts the writer.
    pub fn open(
        store: Arc<dyn Store>,
        policy: Policy,
        options: WriterOptions,
    ) -> Result<Self, AppError> {
        let (state, head, tokens) = start::load(&store, &policy)?;
        let policy = Arc::new(policy);
        let view = Arc::new(ArcSwap::from_pointee(state));
        let (tx, rx) = mpsc::channel(options.queue_depth.max(1));
        let (durable_tx, durable) = watch::channel(head);
        let link = WriterLink {
            control: Control::new(&tx),
            written: Arc::default(),
            health: Arc::new(health::Health::new()),
            metrics: Arc::clone(&options.metrics),
        };
        let loaded = writer::pipeline::Loaded {
            store: Arc::clone(&store),
            policy: Arc::clone(&policy),
            view: Arc::clone(&view),
            durable: durable_tx,
            tokens,
        };
        let handle = writer::pipeline::start(loaded, link.clone(), &options, rx)?;
        // Replicas sharing the log follow each other's appends and read
        // its head for linearizable queries.
        let (follower, fence) = match store.shared() {
            Some(shared) => (
                Some(Follower::start(shared, link.clone())?),
                Some(Fence::start(shared, link.clone())?),
            ),
            None => (None, None),
        };
        let scrub = match options.settings.scrub_rate {
            0 => None,
            rate => Some(
                scrub::Scrubber {
                    store: Arc::clone(&store),
                    health: Arc::clone(&link.health),
                    metrics: Arc::clone(&options.metrics),
                    durable: durable.clone(),
                    rate,
                }
                .start()
                .map_err(|source| AppError::Start {
                    what: "the scrub thread",
                    source,
                })?,
            ),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                jobs: std::sync::Mutex::new(Some(tx)),
                view,
                store,
                durable,
                policy,
                writer: std::sync::Mutex::new(Some(handle)),
                health: Arc::clone(&link.health),
                metrics: Arc::clone(&options.metrics),
                follower: std::sync::Mutex::new(follower),
                scrub: std::sync::Mutex::new(scrub),
                fence,
                link,
            }),
        })
    }

    /// Runs a command; `Ok` means its events are durable (or, for a dry run,
    /// that it would be accepted now).
    pub async fn execute(
        &self,
        command: Command,
        options: CommandOptions,
    ) -> Result<Reply, AppError> {
        Ok(self.commit(command, options).await?.reply)
    }

    /// [`execute`](Self::execute), with the log position of the command's
    /// last event.
    pub async fn commit(
        &self,
        command: Command,
        options: CommandOptions,
    ) -> Result<Committed, AppError> {
        let sender = self
            .inner
            .jobs
            .lock()
            .map_err(|_| AppError::ShuttingDown)?
            .clone()
            .ok_or(AppError::ShuttingDown)?;
        let (reply, answer) = oneshot::channel();
        sender
            .send(Request::Command(Job {
                command,
                options,
                reply,
                span: tracing::Span::current(),
            }))
            .await
            .map_err(|_| AppError::ShuttingDown)?;
        answer.await.map_err(|_| AppError::ShuttingDown)?
    }

    /// The state as of the last durable batch.
    pub fn state(&self) -> Arc<LedgerState> {
        self.inner.view.load_full()
    }

    /// The rules' limits and regions: those the log last recorded, else
    /// (before the first record of them) the ones the ledger was opened
    /// with.
    pub fn policy(&self) -> Arc<Policy> {
        self.state()
            .limits()
            .cloned()
            .unwrap_or_else(|| Arc::clone(&self.inner.policy))
    }

    /// Checks that `region` is one of the regions the rules accept now,
    /// without taking a reference on the published state (every call on
    /// every thread checks one).
    pub fn check_region(&self, region: &crate::domain::Region) -> Result<(), DomainError> {
        self.inner
            .view
            .load()
            .policy_or(&self.inner.policy)
            .check_region(region)
    }

    /// The limits the ledger was opened with (a server's flags), which
    /// [`record_limits`](Self::record_limits) records.
    pub fn configured_policy(&self) -> &Policy {
        &self.inner.policy
    }

    /// The last record known to be durable. Readers of the log must not go
    /// past it: records after it may still be waiting for their flush.
    pub fn durable_head(&self) -> Head {
        *self.inner.durable.borrow()
    }

    /// A receiver that sees every new durable head; it closes when the writer stops.
    pub fn watch_durable_head(&self) -> watch::Receiver<Head> {
        self.inner.durable.clone()
    }

    /// The log position a linearizable query must see: the head read
    /// after this call began, on a store other replicas append to (every
    /// write any of them acknowledged before is at or below it); the
    /// durable head otherwise.
    pub async fn fence(&self) -> Result<u64, AppError> {
        let Some(fence) = &self.inner.fence else {
            return Ok(self.durable_head().position);
        };
        self.readable()?;
        // Read before the database's head: everything this replica made
        // durable is in the database by then, unless its history forked.
        let ours = self.durable_head();
        let theirs = fence.head().await?;
        let forked = theirs.position < ours.position
            || (theirs.position == ours.position && theirs.hash != ours.hash);
        if forked {
            self.inner.link.forked(ours, theirs);
            return Err(AppError::Forked);
        }
        Ok(theirs.position)
    }

    /// Waits until the published state includes `position`, for at most
    /// `budget`; `false` when it did not in time. (The state is published
    /// before the durable head moves, so a head at the position means the
    /// state includes it.)
    pub async fn reaches(
        &self,
        position: u64,
        budget: std::time::Duration,
    ) -> Result<bool, AppError> {
        let mut heads = self.watch_durable_head();
        let reached = tokio::time::timeout(budget, async {
            loop {
                if heads.borrow_and_update().position >= position {
                    return Ok(());
                }
                if heads.changed().await.is_err() {
                    return Err(AppError::ShuttingDown);
                }
            }
        })
        .await;
        match reached {
            Ok(result) => result.map(|()| true),
            Err(_) => Ok(false),
        }
    }

    /// Refuses a read while this replica's history is forked from the
    /// database's (until it has reloaded itself).
    pub fn readable(&self) -> Result<(), AppError> {
        if self.inner.link.health.is_forked() {
            Err(AppError::Forked)
        } else {
            Ok(())
        }
    }

    /// What keeps the ledger from serving, if anything; changes are seen
    /// as they happen.
    pub fn condition(&self) -> watch::Receiver<Condition> {
        self.inner.health.watch()
    }

    /// Commands waiting for the writer.
    pub fn queue_depth(&self) -> usize {
        self.inner
            .jobs
            .lock()
            .ok()
            .and_then(|jobs| {
                jobs.as_ref()
                    .map(|jobs| jobs.max_capacity() - jobs.capacity())
            })
            .unwrap_or(0)
    }

    /// What the ledger counts.
    pub fn metrics(&self) -> &Arc<crate::metrics::LedgerMetrics> {
        &self.inner.metrics
    }

    /// The durable log, for readers.
    pub fn log(&self) -> LogReader {
        LogReader::new(Arc::clone(&self.inner.store), self.inner.durable.clone())
    }

    /// Stops taking commands, lets the writer finish those already queued
    /// and waits for it. Safe to call more than once.
    pub fn shutdown(&self) {
        if let Ok(mut follower) = self.inner.follower.lock() {
            follower.take();
        }
        if let Ok(mut scrub) = self.inner.scrub.lock() {
            scrub.take();
        }
        if let Ok(mut jobs) = self.inner.jobs.lock() {
            jobs.take();
        }
        let handle = self.inner.writer.lock().ok().and_then(|mut h| h.take());
        if let Some(handle) = handle {
            if handle.join().is_err() {
                tracing::error!("the writer thread panicked");
            }
        }
    }
}
