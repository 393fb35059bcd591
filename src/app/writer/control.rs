//! What later stages, the follower and the healer ask of the decide
//! stage: decide jobs again after another replica's append, follow the
//! log, reload after a failed batch, take writes again once the store does. The decide
//! stage's queue carries the commands; this carries the rest, and a
//! [`Request::Wake`] on the queue makes the decide stage look at it.

use std::sync::{Arc, Mutex, MutexGuard};

use tokio::sync::mpsc;

use super::super::Job;
use crate::domain::LedgerState;
use crate::idempotency::Tokens;
use crate::store::Head;

/// What the decide stage's queue carries.
// Nearly every request is a command; boxing it to shrink the rare `Wake`
// would cost an allocation per command.
#[allow(clippy::large_enum_variant)]
pub(in crate::app) enum Request {
    /// A command to decide.
    Command(Job),
    /// Look at the [`Control`].
    Wake,
}

/// Start deciding on the log as another replica left it.
pub(super) struct Restart {
    /// The epoch batches decided from now on belong to.
    pub(super) epoch: u64,
    /// The state, idempotency records and head after the last batch this
    /// replica appended (or caught up to).
    pub(super) state: Arc<LedgerState>,
    pub(super) tokens: Tokens,
    pub(super) base: Head,
    /// The head to catch up to (held by this replica's turn when it lost a
    /// race).
    pub(super) target: Head,
}

#[derive(Default)]
struct Asked {
    restart: Option<Restart>,
    retry: Vec<Job>,
    follow: bool,
    failed: bool,
    healed: bool,
}

/// The shared requests, and the way to wake the decide stage.
pub(in crate::app) struct Control {
    asked: Mutex<Asked>,
    /// Weak: the queue closes when the ledger drops its sender.
    wake: mpsc::WeakSender<Request>,
}

/// What the decide stage takes at once.
pub(super) struct Taken {
    pub(super) restart: Option<Restart>,
    pub(super) retry: Vec<Job>,
    pub(super) follow: bool,
    /// A batch failed: the state may hold effects that never reached the
    /// store.
    pub(super) failed: bool,
    /// The store takes writes again after a failure.
    pub(super) healed: bool,
}

impl Control {
    pub(in crate::app) fn new(queue: &mpsc::Sender<Request>) -> Arc<Self> {
        Arc::new(Self {
            asked: Mutex::default(),
            wake: queue.downgrade(),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Asked> {
        self.asked.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Wakes the decide stage. A full queue needs no wake-up: the decide
    /// stage looks here before every batch.
    fn wake(&self) {
        if let Some(queue) = self.wake.upgrade() {
            let _ = queue.try_send(Request::Wake);
        }
    }

    /// Wakes the decide stage, so it expires the idempotency records due
    /// with no command to wait for; false once the queue has closed.
    pub(super) fn tick(&self) -> bool {
        match self.wake.upgrade() {
            Some(queue) => {
                let _ = queue.try_send(Request::Wake);
                true
            }
            None => false,
        }
    }

    /// Starts a new epoch: the last restart asked for is the one that counts.
    pub(super) fn restart(&self, restart: Restart, jobs: Vec<Job>) {
        {
            let mut asked = self.lock();
            asked.restart = Some(restart);
            asked.retry.extend(jobs);
        }
        self.wake();
    }

    /// Jobs of a void batch, to decide again.
    pub(super) fn retry(&self, jobs: Vec<Job>) {
        if jobs.is_empty() {
            return;
        }
        self.lock().retry.extend(jobs);
        self.wake();
    }

    /// Another replica appended: follow it.
    pub(in crate::app) fn follow(&self) {
        let first = !std::mem::replace(&mut self.lock().follow, true);
        if first {
            self.wake();
        }
    }

    /// A batch failed: reload before deciding more.
    pub(super) fn failed(&self) {
        self.lock().failed = true;
        self.wake();
    }

    /// The store takes writes again. `false` once the ledger is closing.
    pub(super) fn healed(&self) -> bool {
        self.lock().healed = true;
        self.wake();
        self.open()
    }

    /// Whether the ledger still takes commands.
    pub(super) fn open(&self) -> bool {
        self.wake.upgrade().is_some()
    }

    /// Whether anything is asked.
    pub(super) fn pending(&self) -> bool {
        let asked = self.lock();
        asked.restart.is_some()
            || !asked.retry.is_empty()
            || asked.follow
            || asked.failed
            || asked.healed
    }

    pub(super) fn take(&self) -> Taken {
        let mut asked = self.lock();
        Taken {
            restart: asked.restart.take(),
            retry: std::mem::take(&mut asked.retry),
            follow: std::mem::take(&mut asked.follow),
            failed: std::mem::take(&mut asked.failed),
            healed: std::mem::take(&mut asked.healed),
        }
    }
}
