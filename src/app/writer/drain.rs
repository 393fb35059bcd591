//! How every stage after the first takes its work: all that queued up, in
//! one go, so the slow step it owns runs once for all of it.

use std::sync::mpsc::Receiver;

use super::{Message, ReloadReply};

/// Blocks for the next message, then takes every one already queued, up to
/// and including the first reload. `None` once the queue is closed and empty.
pub(super) fn drain<T>(queue: &Receiver<Message<T>>) -> Option<(Vec<T>, Option<ReloadReply>)> {
    let mut work = Vec::new();
    let mut next = Some(queue.recv().ok()?);
    while let Some(message) = next.take() {
        match message {
            Message::Work(item) => work.push(item),
            Message::Reload(reply) => return Some((work, Some(reply))),
        }
        next = queue.try_recv().ok();
    }
    Some((work, None))
}
