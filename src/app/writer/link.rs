//! What the writer shares with the threads that watch a shared log (the
//! follower and the fence): its control, how far it has written, and the
//! ledger's health.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::control::Control;
use crate::app::health::Health;
use crate::store::Head;

/// Where the writer's progress and requests meet the follower's and the fence's.
#[derive(Clone)]
pub(in crate::app) struct WriterLink {
    pub(in crate::app) control: Arc<Control>,
    /// The position of the last record this replica wrote or caught up to.
    pub(in crate::app) written: Arc<AtomicU64>,
    pub(in crate::app) health: Arc<Health>,
    pub(in crate::app) metrics: Arc<crate::metrics::LedgerMetrics>,
}

impl WriterLink {
    /// This replica's history (`ours`) is not the database's (`theirs`):
    /// says so and has the writer reload itself from the database.
    pub(in crate::app) fn forked(&self, ours: Head, theirs: Head) {
        report_fork(&self.health, &self.metrics, ours, theirs);
        self.control.failed();
    }

    /// Asks the writer to catch up when `position` is past what it has.
    pub(in crate::app) fn saw(&self, position: u64) {
        if position > self.written.load(Ordering::SeqCst) {
            self.control.follow();
        }
    }
}

/// Says, once per fork, that this replica's history is not the database's:
/// an ERROR with both heads, the counter, and health NOT_SERVING until the
/// reload that follows.
pub(in crate::app) fn report_fork(
    health: &Health,
    metrics: &crate::metrics::LedgerMetrics,
    ours: Head,
    theirs: Head,
) {
    if health.is_forked() {
        return;
    }
    health.forked(true);
    metrics.chain_forks.inc();
    tracing::error!(
        our_position = ours.position,
        our_hash = hex::encode(ours.hash),
        database_position = theirs.position,
        database_hash = hex::encode(theirs.hash),
        "this replica holds history the database does not (records lost in a failover); \
         not serving until it has reloaded itself from the database"
    );
}
