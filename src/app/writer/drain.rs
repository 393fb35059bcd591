//! How every stage after the first takes its work: all that queued up, in
//! one go, so the slow step it owns runs once for all of it.

use std::sync::mpsc::Receiver;

use super::{Message, ReloadReply};

/// What one drain took: the work, the reload that ended it, and whether a
/// [`Message::Follow`] came with it.
pub(super) type Drained<T> = (Vec<T>, Option<ReloadReply>, bool);

/// Blocks for the next message, then takes every one already queued, up to
/// and including the first reload. `None` once the queue is closed and empty.
pub(super) fn drain<T>(queue: &Receiver<Message<T>>) -> Option<Drained<T>> {
    let mut work = Vec::new();
    let mut follow = false;
    let mut next = Some(queue.recv().ok()?);
    while let Some(message) = next.take() {
        match message {
            Message::Work(item) => work.push(item),
            Message::Reload(reply) => return Some((work, Some(reply), follow)),
            Message::Follow => follow = true,
        }
        next = queue.try_recv().ok();
    }
    Some((work, None, follow))
}
