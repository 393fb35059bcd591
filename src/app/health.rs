//! Whether the ledger can serve: its store reachable and the log still
//! continuing its chain. The server's health service reports it.

use tokio::sync::watch;

/// What keeps a ledger from serving.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Condition {
    /// The store cannot be reached (it is retried meanwhile).
    pub unreachable: bool,
    /// The log no longer continues this replica's chain (for good: restart
    /// it once the cause is known).
    pub broken: bool,
}

impl Condition {
    /// Whether the ledger serves.
    pub fn serving(&self) -> bool {
        !self.unreachable && !self.broken
    }
}

/// The ledger's condition, which its stages update.
#[derive(Debug)]
pub(crate) struct Health {
    condition: watch::Sender<Condition>,
}

impl Health {
    pub(crate) fn new() -> Self {
        Self {
            condition: watch::Sender::new(Condition::default()),
        }
    }

    pub(crate) fn watch(&self) -> watch::Receiver<Condition> {
        self.condition.subscribe()
    }

    /// Records whether the store answers; logs each change once.
    pub(crate) fn reachable(&self, reachable: bool) {
        let changed = self.condition.send_if_modified(|condition| {
            let changed = condition.unreachable == reachable;
            condition.unreachable = !reachable;
            changed
        });
        if changed && reachable {
            tracing::info!("the store answers again: serving");
        } else if changed {
            tracing::warn!("the store does not answer: not serving until it does");
        }
    }

    /// The chain is broken.
    pub(crate) fn broken(&self) {
        self.condition
            .send_modify(|condition| condition.broken = true);
    }
}
