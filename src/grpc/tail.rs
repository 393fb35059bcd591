//! The log's tail, read once for every live subscriber: one task reads
//! each newly durable record from the store and keeps the last
//! [`KEPT`] in memory, so subscribers that are caught up take new records
//! from here (a copy of the message each) instead of each reading the
//! store. Subscribers further behind catch up from the store, then join.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use super::convert::envelope_messages;
use super::pb;
use crate::app::Ledger;

/// Records kept: what a live subscriber may lag by and still be fed from
/// here (about a megabyte per thousand records).
const KEPT: usize = 4_096;
/// Records read from the store per step of the tail's own reads.
const STEP: u64 = 512;

/// The last durable records, and how far they go.
pub struct Tail {
    records: RwLock<VecDeque<pb::EventEnvelope>>,
    /// The position of the last record kept (or, before any, the head the
    /// tail started at).
    last: watch::Sender<u64>,
}

impl Tail {
    /// Starts following `ledger`'s durable head from where it is now; the
    /// task ends when the ledger's writer stops or `stopping` turns true.
    pub fn start(ledger: &Ledger, mut stopping: watch::Receiver<bool>) -> Arc<Self> {
        let mut heads = ledger.watch_durable_head();
        let start = heads.borrow_and_update().position;
        let tail = Arc::new(Self {
            records: RwLock::new(VecDeque::with_capacity(KEPT)),
            last: watch::Sender::new(start),
        });
        let log = ledger.log();
        let follower = Arc::clone(&tail);
        tokio::spawn(async move {
            let mut next = start + 1;
            loop {
                let head = heads.borrow_and_update().position;
                if follower.last.receiver_count() == 0 {
                    // Nobody subscribed: nothing is read for nobody.
                    follower.skip(head);
                    next = head + 1;
                }
                while next <= head {
                    let end = head.min(next + STEP - 1);
                    match log.read_range(next, end).await {
                        Ok(records) => follower.keep(envelope_messages(records), end),
                        Err(err) => {
                            // Subscribers meet the same record through the
                            // store and get the answer there.
                            tracing::warn!(%err, position = next, "the tail cannot read the log");
                            follower.skip(end);
                        }
                    }
                    next = end + 1;
                }
                tokio::select! {
                    changed = heads.changed() => if changed.is_err() { return },
                    _ = stopping.wait_for(|stop| *stop) => return,
                }
            }
        });
        tail
    }

    /// Adds the records up to `last`.
    fn keep(&self, records: Vec<pb::EventEnvelope>, last: u64) {
        {
            let mut kept = self.records.write().unwrap_or_else(|p| p.into_inner());
            kept.extend(records);
            let over = kept.len().saturating_sub(KEPT);
            kept.drain(..over);
        }
        self.last.send_replace(last);
    }

    /// Moves past records it could not read: what it keeps no longer
    /// continues them, so it starts afresh after `last`.
    fn skip(&self, last: u64) {
        self.records
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
        self.last.send_replace(last);
    }

    /// Tells how far the tail goes, as it moves.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.last.subscribe()
    }

    /// Up to `count` records from `from` on, if the tail still holds
    /// `from`; `None` when it does not (read the store then).
    pub fn from(&self, from: u64, count: usize) -> Option<Vec<pb::EventEnvelope>> {
        let kept = self.records.read().unwrap_or_else(|p| p.into_inner());
        let first = kept.front()?.position;
        if from < first || from > kept.back()?.position {
            return None;
        }
        let at = usize::try_from(from - first).ok()?;
        // Kept records are consecutive; checked all the same.
        (kept.get(at)?.position == from).then(|| kept.range(at..).take(count).cloned().collect())
    }
}
