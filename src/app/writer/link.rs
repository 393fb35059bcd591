//! What the writer shares with the threads that watch a shared log (the
//! follower and the fence): its control, how far it has written, and the
//! ledger's health.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use super::control::Control;
use crate::app::health::Health;

/// Where the writer's progress and requests meet the follower's and the fence's.
#[derive(Clone)]
pub(in crate::app) struct WriterLink {
    pub(in crate::app) control: Arc<Control>,
    /// The position of the last record this replica wrote or caught up to.
    pub(in crate::app) written: Arc<AtomicU64>,
    pub(in crate::app) health: Arc<Health>,
}

impl WriterLink {
    /// Asks the writer to catch up when `position` is past what it has.
    pub(in crate::app) fn saw(&self, position: u64) {
        if position > self.written.load(Ordering::SeqCst) {
            self.control.follow();
        }
    }
}
