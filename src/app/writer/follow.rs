//! Following a log other replicas append to: the follower
//! (`ledger-follow`), with a [`Watcher`](crate::store::Watcher) (a database
//! connection) of its own, waits for an append (a notification with its
//! position, or a poll every [`POLL`]) and, when the log moved past what
//! this replica wrote or caught up to, asks the writer to catch up
//! ([`Control::follow`](super::control::Control::follow)); it also tells
//! the ledger's health whether the store answers.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::link::WriterLink;
use crate::app::AppError;
use crate::store::{Chain, SharedLog};

/// The longest the follower waits without a notification before it reads
/// the head anyway.
pub const POLL: Duration = Duration::from_millis(500);

/// How long the follower waits before trying an unreachable store again.
const RETRY: Duration = Duration::from_millis(200);

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
    /// Starts following a shared log, on a watcher of its own.
    pub(in crate::app) fn start(
        shared: &dyn SharedLog,
        link: WriterLink,
    ) -> Result<Self, AppError> {
        let mut watcher = shared.watcher()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = Arc::clone(&stop);
        std::thread::Builder::new()
            .name("ledger-follow".into())
            .spawn(move || {
                while !stopped.load(Ordering::SeqCst) {
                    match watcher.wait(POLL) {
                        Ok(position) => {
                            link.health.reachable(true);
                            link.saw(position);
                        }
                        Err(err) => {
                            tracing::debug!(err = %Chain(&err), "cannot read the log's head");
                            link.health.reachable(false);
                            std::thread::sleep(RETRY);
                        }
                    }
                }
            })
            .map_err(|source| AppError::Start {
                what: "the follower thread",
                source,
            })?;
        Ok(Self { stop })
    }
}
