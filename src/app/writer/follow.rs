//! Following a log other replicas append to, and reading its head for
//! linearizable queries. Each has a thread and a [`Watcher`] (a database
//! connection) of its own:
//!
//! - the follower (`ledger-follow`) waits for an append (a notification
//!   with its position, or a poll every [`POLL`]) and, when the log moved
//!   past what this replica wrote or caught up to, asks the writer to catch up
//!   ([`Control::follow`]); it also tells [`Health`] whether the store
//!   answers;
//! - the fence (`ledger-fence`) reads the head for every query that asks
//!   for it, one read for all the queries that arrived while the last read
//!   ran: each gets a head read after it arrived, so waiting until the
//!   state reaches it sees every write acknowledged before the query.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::oneshot;

use super::control::Control;
use crate::app::health::Health;
use crate::app::AppError;
use crate::store::{Chain, Store, StoreError};

/// The longest the follower waits without a notification before it reads
/// the head anyway.
pub const POLL: Duration = Duration::from_millis(500);

/// How long the follower waits before trying an unreachable store again.
const RETRY: Duration = Duration::from_millis(200);

/// Where the writer's progress and requests meet the follower's.
#[derive(Clone)]
pub(in crate::app) struct Progress {
    pub(in crate::app) control: Arc<Control>,
    /// The position of the last record this replica wrote or caught up to.
    pub(in crate::app) written: Arc<AtomicU64>,
    pub(in crate::app) health: Arc<Health>,
}

impl Progress {
    /// Asks the writer to catch up when `position` is past what it has.
    fn saw(&self, position: u64) {
        if position > self.written.load(Ordering::SeqCst) {
            self.control.follow();
        }
    }
}

/// The follower's handle: dropping it stops the thread (within [`POLL`]).
pub(in crate::app) struct Follower {
    stop: Arc<AtomicBool>,
}

impl Drop for Follower {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

impl Follower {
    /// Starts following `store`, if other processes append to it.
    pub(in crate::app) fn start(
        store: &dyn Store,
        progress: Progress,
    ) -> Result<Option<Self>, AppError> {
        let Some(shared) = store.shared() else {
            return Ok(None);
        };
        let mut watcher = shared.watcher()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("ledger-follow".into())
            .spawn(move || {
                while !stopped.load(Ordering::SeqCst) {
                    match watcher.wait(POLL) {
                        Ok(position) => {
                            progress.health.reachable(true);
                            progress.saw(position);
                        }
                        Err(err) => {
                            tracing::debug!(err = %Chain(&err), "cannot read the log's head");
                            progress.health.reachable(false);
                            std::thread::sleep(RETRY);
                        }
                    }
                }
            })
            .map_err(|source| AppError::Start {
                what: "the follower thread",
                source,
            })?;
        Ok(Some(Self { stop }))
    }
}

type HeadReply = oneshot::Sender<Result<u64, StoreError>>;

/// The fence's handle; the thread stops when the last handle is dropped.
pub(in crate::app) struct Fence {
    requests: mpsc::Sender<HeadReply>,
}

impl Fence {
    /// Starts the fence of `store`, if other processes append to it.
    pub(in crate::app) fn start(
        store: &dyn Store,
        progress: Progress,
    ) -> Result<Option<Self>, AppError> {
        let Some(shared) = store.shared() else {
            return Ok(None);
        };
        let mut watcher = shared.watcher()?;
        let (requests, queue) = mpsc::channel::<HeadReply>();
        std::thread::Builder::new()
            .name("ledger-fence".into())
            .spawn(move || {
                while let Ok(first) = queue.recv() {
                    let mut waiting = vec![first];
                    waiting.extend(queue.try_iter());
                    let head = watcher.head();
                    progress.health.reachable(head.is_ok());
                    if let Ok(head) = &head {
                        progress.saw(head.position);
                    }
                    for reply in waiting {
                        let _ = reply.send(head.clone().map(|head| head.position));
                    }
                }
            })
            .map_err(|source| AppError::Start {
                what: "the fence thread",
                source,
            })?;
        Ok(Some(Self { requests }))
    }

    /// The log's head position, read after this call began.
    pub(in crate::app) async fn head(&self) -> Result<u64, AppError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(reply)
            .map_err(|_| AppError::ShuttingDown)?;
        Ok(answer.await.map_err(|_| AppError::ShuttingDown)??)
    }
}
