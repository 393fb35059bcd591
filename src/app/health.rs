//! Whether the ledger can serve: its store reachable and taking writes,
//! and the log still continuing its chain. The server's health service
//! reports it.

use tokio::sync::watch;

/// What keeps a ledger from serving.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Condition {
    /// The store cannot be reached (it is retried meanwhile).
    pub unreachable: bool,
    /// The log no longer continues this replica's chain (for good: restart
    /// it once the cause is known).
    pub broken: bool,
    /// The database's history is not this replica's (it holds records the
    /// database lost in a failover): not serving until it has reloaded
    /// itself from the database.
    pub forked: bool,
    /// Writing to the store fails (a full disk, an I/O error): commands are
    /// refused while the writer retries in the background.
    pub failing: bool,
    /// The first damaged record the scrub found: the log's readers
    /// (`AuditLog`) do not serve until a restart after a restore.
    pub damaged: Option<u64>,
}

impl Condition {
    /// Whether the ledger serves commands and queries.
    pub fn serving(&self) -> bool {
        !self.unreachable && !self.broken && !self.failing && !self.forked
    }

    /// Whether the log's readers serve: the ledger does and no damaged
    /// record was found.
    pub fn audit_serving(&self) -> bool {
        self.serving() && self.damaged.is_none()
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

    /// Records whether writes fail, and why; logs each change once.
    pub(crate) fn failing(&self, why: Option<&crate::store::StoreError>) {
        let changed = self.condition.send_if_modified(|condition| {
            let changed = condition.failing != why.is_some();
            condition.failing = why.is_some();
            changed
        });
        match why {
            Some(err) if changed => tracing::error!(
                err = %crate::store::Chain(err),
                "the store does not take writes: not serving; commands are refused \
                 while the writer retries"
            ),
            None if changed => tracing::info!("the store takes writes again: serving"),
            _ => {}
        }
    }

    /// The scrub found a damaged record at `position`.
    pub(crate) fn damaged(&self, position: u64) {
        self.condition.send_if_modified(|condition| {
            let first = condition.damaged.is_none_or(|at| position < at);
            if first {
                condition.damaged = Some(position);
            }
            first
        });
    }

    /// The replica found (`true`) or left (`false`) a forked history.
    pub(crate) fn forked(&self, forked: bool) {
        self.condition.send_if_modified(|condition| {
            std::mem::replace(&mut condition.forked, forked) != forked
        });
    }

    /// Whether it is forked now.
    pub(crate) fn is_forked(&self) -> bool {
        self.condition.borrow().forked
    }

    /// The chain is broken.
    pub(crate) fn broken(&self) {
        self.condition
            .send_modify(|condition| condition.broken = true);
    }
}
