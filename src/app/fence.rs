//! Linearizable reads on a shared log: the fence (`ledger-fence`) reads the
//! head for every query that asks for it, one read for all the queries
//! that arrived while the last read ran, on a connection of its own. Each
//! query gets a head read after it arrived, so waiting until the state
//! reaches it sees every write acknowledged before the query.

use std::sync::mpsc;

use tokio::sync::oneshot;

use super::writer::WriterLink;
use super::AppError;
use crate::store::{Head, SharedLog, StoreError};

type HeadReply = oneshot::Sender<Result<Head, StoreError>>;

/// The fence's handle; the thread stops when the last handle is dropped.
pub(in crate::app) struct Fence {
    requests: mpsc::Sender<HeadReply>,
}

impl Fence {
    /// Starts the fence of a shared log, on a watcher of its own.
    pub(in crate::app) fn start(
        shared: &dyn SharedLog,
        link: WriterLink,
    ) -> Result<Self, AppError> {
        let mut watcher = shared.watcher()?;
        let (requests, queue) = mpsc::channel::<HeadReply>();
        std::thread::Builder::new()
            .name("ledger-fence".into())
            .spawn(move || {
                while let Ok(first) = queue.recv() {
                    let mut waiting = vec![first];
                    waiting.extend(queue.try_iter());
                    let head = watcher.head();
                    link.health.reachable(head.is_ok());
                    if let Ok(head) = &head {
                        link.saw(head.position);
                    }
                    for reply in waiting {
                        let _ = reply.send(head.clone());
                    }
                }
            })
            .map_err(|source| AppError::Start {
                what: "the fence thread",
                source,
            })?;
        Ok(Self { requests })
    }

    /// The log's head, read after this call began.
    pub(in crate::app) async fn head(&self) -> Result<Head, AppError> {
        let (reply, answer) = oneshot::channel();
        self.requests
            .send(reply)
            .map_err(|_| AppError::ShuttingDown)?;
        Ok(answer.await.map_err(|_| AppError::ShuttingDown)??)
    }
}
