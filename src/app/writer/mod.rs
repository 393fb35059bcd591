//! The single writer. It owns the only mutable copy of the state, so racing
//! commands are decided one after the other. It is a pipeline of four
//! stages, each a thread named after it, so deciding, writing and waiting
//! for the disk overlap; [`pipeline`] builds, starts and joins them:
//!
//! 1. [`decide`] (`ledger-decide`): decides the commands that queued up, and
//!    those that arrive meanwhile (up to `max_batch`), against the state
//!    including every batch still in the pipeline, and encodes the records;
//! 2. [`append`] (`ledger-append`): writes the batches decided meanwhile to
//!    the store as one append (which its head, written last, commits),
//!    checked against the head they were decided on, without waiting for
//!    the disk ([`EventLog::write`](crate::store::EventLog::write));
//! 3. [`flush`] (`ledger-flush`): one flush to the operating system for
//!    every batch written meanwhile;
//! 4. [`sync`] (`ledger-sync`): one sync to the disk for every batch flushed
//!    meanwhile, then publishes the newest state to readers, answers the
//!    callers, in order, and hands the state on to the read side's writer
//!    ([`crate::projection::ProjectionWriter`]). The next batches are flushed while a sync runs.
//!
//! No caller hears anything (not even a refusal decided on state that is not
//! durable yet) before its batch is synced. When a batch fails, every batch
//! decided on top of it fails its head check and is refused with the same
//! error, and the decide stage reloads the state from the store once the
//! pipeline drained (a [`Message::Reload`] passed down every stage). When
//! the store keeps failing (a full disk), commands are refused at once
//! while [`heal`] retries it with backoff; writes resume by themselves.
//!
//! On a log other replicas append to, a batch can meet a head another
//! replica moved. That is no failure: the append stage takes its turn (the
//! head's lock, so it cannot lose the next race too), starts a new *epoch*
//! and hands the batch's jobs back ([`Control`]); the decide stage catches
//! its state up with the records after the batch's base, checking that
//! they continue its chain, and decides the jobs again. Batches of an older
//! epoch that reach the append stage later are handed back the same way,
//! so callers only ever hear the rules' answer. The same catch-up follows
//! other replicas' appends when this one writes nothing ([`follow`]).

mod append;
mod control;
mod decide;
mod drain;
mod flush;
mod follow;
mod heal;
mod link;
pub(super) mod pipeline;
mod sync;
mod timing;

use std::sync::Arc;

use super::{AppError, Committed, Job};
use crate::domain::LedgerState;
use crate::idempotency::Tokens;
use crate::projection::Touched;
use crate::store::{AppendBatch, Head, StoreError};

pub(super) use control::{Control, Request};
pub(super) use decide::{spawn_scan, StartTokens};
pub(super) use follow::Follower;
pub(super) use link::WriterLink;

/// A command's fate within a batch, before the batch is durable.
enum Pending {
    /// Known without writing anything (a refusal, a dry run).
    Answer(Result<Committed, AppError>),
    /// Accepted, once the batch's records are durable.
    Durable(Committed),
    /// Accepted on the strength of records already in the log (a retry
    /// with a client token, a command that changes nothing): said once
    /// the log up to them is known to be durable — on a shared log, once
    /// a commit of this replica after them was acknowledged, since the
    /// synchronous standby receives the log in order.
    Confirmed(Committed),
}

/// One decided batch on its way through the pipeline.
struct Staged {
    jobs: Vec<Job>,
    fates: Vec<Pending>,
    batch: AppendBatch,
    /// The state and idempotency records it was decided on.
    base_state: Arc<LedgerState>,
    base_tokens: Tokens,
    /// The state, idempotency records and head after the batch.
    state: Arc<LedgerState>,
    tokens: Tokens,
    head: Head,
    touched: Touched,
    /// The epoch it was decided in: one older than the append stage's is
    /// void (decided on records another replica's beat).
    epoch: u64,
}

/// Where the state reloaded from the store goes back to the decide stage.
type ReloadReply = std::sync::mpsc::Sender<Result<(Arc<LedgerState>, Head), AppError>>;

/// What one stage hands the next.
enum Message<T> {
    /// Work: a batch, or what became of some.
    Work(T),
    /// Reload the state from the store once everything before this is
    /// finished, and send it back.
    Reload(ReloadReply),
    /// Another replica appended: the append stage starts an epoch from
    /// the records after its last write (unless one is starting).
    Follow,
}

/// What the flush stage hands to the sync stage.
enum Flushed {
    /// Batches whose records the store has handed to the operating system.
    Batches(Vec<Staged>),
    /// What the batches of a failed flush changed (their callers were
    /// refused): later batches carry their effects, so the read side's next
    /// write must look at these aggregates too.
    Failed(Touched),
}

/// Whether any of the batches wrote records. Batches without records only
/// answer from state already durable, or made durable with the others.
fn writes_records(group: &[Staged]) -> bool {
    group
        .iter()
        .any(|staged| staged.head != staged.batch.expected_head)
}

/// Answers every job with `err`, kind and cause kept: the outcome is
/// unknown to the caller, who may retry with the same client token.
fn refuse(jobs: Vec<Job>, err: &StoreError) {
    for job in jobs {
        let _ = job.reply.send(Err(AppError::Storage(err.clone())));
    }
}

/// Starts a stage's thread.
fn spawn(
    name: &'static str,
    run: impl FnOnce() + Send + 'static,
) -> Result<std::thread::JoinHandle<()>, AppError> {
    std::thread::Builder::new()
        .name(name.into())
        .spawn(run)
        .map_err(|source| AppError::Start { what: name, source })
}
