//! One `Subscribe` stream: records fed only as fast as the subscriber
//! takes them. The stream is polled by the HTTP/2 connection only when the
//! subscriber's window has room, so one that never reads holds the few
//! records of its last read and nothing else: no task, no queue, no
//! thread of its own. Behind the tail it reads the store, a few records
//! at a time and taking turns with the other catch-ups; caught up, it takes
//! new records from the shared [`Tail`].

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::sync::watch;
use tonic::Status;

use super::convert::envelope_messages;
use super::pb;
use super::subscriptions::{Permit, Subscriptions};
use super::tail::Tail;
use crate::app::LogReader;

/// Records taken per step, from the store or the tail: what a subscriber
/// that does not read holds at most, besides its HTTP/2 window.
pub const READ_AHEAD: u64 = 8;

/// A subscription's state between the records it yields.
pub struct Feed {
    next: u64,
    ready: VecDeque<pb::EventEnvelope>,
    log: LogReader,
    tail: Arc<Tail>,
    /// How far the tail goes: durable records only.
    reached: watch::Receiver<u64>,
    stopping: watch::Receiver<bool>,
    subscriptions: Arc<Subscriptions>,
    /// Its place under the caps, given back when the stream is dropped.
    _open: Permit,
    /// The stream has answered with an error: it ends.
    done: bool,
}

impl Feed {
    pub fn new(
        from: u64,
        log: LogReader,
        tail: Arc<Tail>,
        stopping: watch::Receiver<bool>,
        subscriptions: Arc<Subscriptions>,
        open: Permit,
    ) -> Self {
        Self {
            next: from.max(1),
            ready: VecDeque::new(),
            log,
            reached: tail.watch(),
            tail,
            stopping,
            subscriptions,
            _open: open,
            done: false,
        }
    }

    /// The stream of records, each yielded when the subscriber has room.
    pub fn into_stream(
        self,
    ) -> impl futures_util::Stream<Item = Result<pb::EventEnvelope, Status>> + Send {
        futures_util::stream::unfold(self, |mut feed| async move {
            let item = feed.next_record().await?;
            Some((item, feed))
        })
    }

    /// The next record, or an error once, or `None` when the stream ends
    /// (the server stopping).
    async fn next_record(&mut self) -> Option<Result<pb::EventEnvelope, Status>> {
        loop {
            if let Some(record) = self.ready.pop_front() {
                return Some(Ok(record));
            }
            if self.done {
                return None;
            }
            let reached = *self.reached.borrow_and_update();
            if self.next <= reached {
                if let Err(status) = self.take(reached).await {
                    self.done = true;
                    return Some(Err(status));
                }
                continue;
            }
            tokio::select! {
                changed = self.reached.changed() => if changed.is_err() { return None },
                _ = self.stopping.wait_for(|stop| *stop) => return None,
            }
        }
    }

    /// Takes the next few records up to `reached`: from the tail when it
    /// holds them, else from the store.
    async fn take(&mut self, reached: u64) -> Result<(), Status> {
        let records = match self.tail.from(self.next, READ_AHEAD as usize) {
            Some(records) => records,
            None => {
                let (log, subscriptions) = (self.log.clone(), Arc::clone(&self.subscriptions));
                let (from, end) = (self.next, reached.min(self.next + READ_AHEAD - 1));
                // A task of its own: the connection stops polling this
                // stream while the subscriber's window is shut, and the
                // read's turn must be given back all the same.
                tokio::spawn(async move {
                    let _turn = subscriptions.read_turn().await;
                    log.read_range(from, end).await.map(envelope_messages)
                })
                .await
                .map_err(|err| super::status::internal("a subscription's read failed", &err))??
            }
        };
        let Some(last) = records.last() else {
            return Err(super::refusal(
                tonic::Code::DataLoss,
                format!("the log has no record at position {}", self.next),
                super::status::DAMAGED_RECORD_REASON,
            ));
        };
        self.next = last.position + 1;
        self.ready.extend(records);
        Ok(())
    }
}
