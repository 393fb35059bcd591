//! The event store: an append-only, hash-chained log with stream indexes,
//! idempotency records and the persisted projections, behind a small trait
//! so a second backend can sit beside the embedded sled one.

mod durable;
mod envelope;
mod memory;
mod sled_store;
mod stream_index;

use thiserror::Error;

pub use envelope::{EncodedRecord, Envelope, RecordMeta, GENESIS_HASH};
pub use memory::MemoryStore;
pub use sled_store::SledStore;

/// Key/value pairs read from a side table, in key order.
pub type Entries = Vec<(Vec<u8>, Vec<u8>)>;

/// The last record of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// Its position; 0 for an empty log.
    pub position: u64,
    /// Its hash; [`GENESIS_HASH`] for an empty log.
    pub hash: [u8; 32],
}

impl Default for Head {
    fn default() -> Self {
        Self {
            position: 0,
            hash: GENESIS_HASH,
        }
    }
}

/// One write to the persisted projections: a put, or a delete when `value` is `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionOp {
    /// Key in the projection keyspace.
    pub key: Vec<u8>,
    /// New value, or `None` to delete.
    pub value: Option<Vec<u8>>,
}

/// Everything one group commit writes, atomically and durably.
#[derive(Debug, Clone, Default)]
pub struct AppendBatch {
    /// The head the batch was built on; the append fails if the log moved.
    /// This also pins every stream's version: the writer derived the
    /// records' stream versions from the state at this head, and an
    /// unchanged head means no record was appended since.
    pub expected_head: Head,
    /// The records, in position order, continuing `expected_head`.
    pub records: Vec<EncodedRecord>,
    /// Idempotency records: (key, value).
    pub tokens: Vec<(Vec<u8>, Vec<u8>)>,
    /// Projection writes that bring the read side to `projection_checkpoint`.
    pub projection: Vec<ProjectionOp>,
    /// When set, the projections are current at this position after the
    /// batch (it is the batch's last position); when not, the batch leaves
    /// the read side and its checkpoint as they were.
    pub projection_checkpoint: Option<u64>,
}

/// A failure of the storage layer. None of these is the caller's fault.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The log moved under the writer: another writer is active. Retry after
    /// reloading.
    #[error("append conflict: {0}")]
    Conflict(String),
    /// The underlying database failed (I/O, full disk). Retry later.
    #[error("storage failure: {0}")]
    Backend(String),
    /// Stored data does not decode or does not match its hash: the store was
    /// damaged or tampered with. Do not write; run an audit.
    #[error("corrupt store: {0}")]
    Corrupt(String),
}

impl StoreError {
    pub(crate) fn encode(err: serde_json::Error) -> Self {
        StoreError::Backend(format!("cannot encode a record: {err}"))
    }

    pub(crate) fn decode(err: serde_json::Error) -> Self {
        StoreError::Corrupt(format!("cannot decode a record: {err}"))
    }
}

impl From<sled::Error> for StoreError {
    fn from(err: sled::Error) -> Self {
        StoreError::Backend(err.to_string())
    }
}

/// An append-only event log with the side tables the ledger keeps next to it.
pub trait EventStore: Send + Sync + 'static {
    /// The last record of the log.
    fn head(&self) -> Result<Head, StoreError>;

    /// Appends a batch atomically (all or nothing: after a crash or a
    /// failure part way, readers of the log and of the idempotency records
    /// up to the head see none of it) and returns only once it is durable
    /// on disk. Fails with [`StoreError::Conflict`] when the head is not
    /// what the batch expects.
    fn append(&self, batch: &AppendBatch) -> Result<(), StoreError>;

    /// Writes a batch atomically, with the same checks as
    /// [`append`](Self::append), but may return before it is durable: it is
    /// visible to reads and to the next batch's head check at once, and
    /// durable after the next [`flush`](Self::flush). Lets one thread write
    /// the next batch while another waits for the disk.
    fn append_unflushed(&self, batch: &AppendBatch) -> Result<(), StoreError> {
        self.append(batch)
    }

    /// Makes everything appended so far durable.
    fn flush(&self) -> Result<(), StoreError> {
        self.flush_to_os()?;
        self.sync_to_disk()
    }

    /// The first half of [`EventStore::flush`]: everything appended so far
    /// is in the operating system's hands (a process crash no longer loses
    /// it), and [`EventStore::sync_to_disk`] called after this returns makes
    /// it durable. A writer can run this for the next batch while the sync
    /// of the last one runs.
    fn flush_to_os(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// The second half of [`EventStore::flush`]: makes durable everything
    /// [`EventStore::flush_to_os`] handed over before this call.
    fn sync_to_disk(&self) -> Result<(), StoreError> {
        Ok(())
    }

    /// Calls `visit` with each stored record from position `from` on, in order,
    /// until the end of the log or until `visit` returns `false`.
    fn scan(&self, from: u64, visit: &mut dyn FnMut(u64, &[u8]) -> bool) -> Result<(), StoreError>;

    /// The stored record at `position`, if the log reaches it.
    fn read_at(&self, position: u64) -> Result<Option<Vec<u8>>, StoreError>;

    /// The version of the last record of one aggregate's stream at or before
    /// log position `as_of`; 0 when there is none.
    fn stream_version(&self, aggregate_id: &str, as_of: u64) -> Result<u64, StoreError>;

    /// Calls `visit` with the position and record of each event of one
    /// aggregate's stream, in version order, until `visit` returns `false`.
    fn scan_stream(
        &self,
        aggregate_id: &str,
        visit: &mut dyn FnMut(u64, &[u8]) -> bool,
    ) -> Result<(), StoreError>;

    /// The position up to which the persisted projections are current, if any.
    fn projection_checkpoint(&self) -> Result<Option<u64>, StoreError>;

    /// Every projection entry whose key starts with `prefix`, in key order.
    fn projection_scan(&self, prefix: &[u8]) -> Result<Entries, StoreError>;

    /// Applies `ops` to the projections and sets their checkpoint, atomically and durably.
    fn write_projections(&self, ops: &[ProjectionOp], checkpoint: u64) -> Result<(), StoreError>;

    /// Like [`write_projections`](Self::write_projections), durably, but in
    /// short steps (the sled store writes one entry at a time), so appends
    /// are not held up behind one large write. `ops` are written in the
    /// order given (callers give them in key order) and the checkpoint moves
    /// last. A crash or an error part way leaves the old checkpoint, a
    /// prefix of `ops` applied and [`projection_pending`](Self::projection_pending)
    /// ending with `checkpoint`; loading such a read side and replaying the
    /// log from its checkpoint still gives the right state (see
    /// [`crate::projection::persist`]).
    fn write_projections_in_steps(
        &self,
        ops: &[ProjectionOp],
        checkpoint: u64,
    ) -> Result<(), StoreError> {
        self.write_projections(ops, checkpoint)
    }

    /// The checkpoints that [stepwise writes](Self::write_projections_in_steps)
    /// started since the checkpoint last moved were moving the projections
    /// to, oldest first: one when a crash cut a write short, more when a
    /// write failed part way and its retries did too, each leaving a prefix
    /// of its changes. Empty when every such write finished. The next write
    /// that moves the checkpoint clears them.
    fn projection_pending(&self) -> Result<Vec<u64>, StoreError> {
        Ok(Vec::new())
    }

    /// Drops every projection entry and writes `ops` as current at `checkpoint`, durably.
    fn replace_projections(&self, ops: &[ProjectionOp], checkpoint: u64) -> Result<(), StoreError>;

    /// Every idempotency record. One whose position is past the head was
    /// left by an append that a crash cut short (see
    /// [`remove_tokens`](Self::remove_tokens)).
    fn tokens(&self) -> Result<Entries, StoreError>;

    /// Removes idempotency records, durably: those an append wrote before a
    /// crash stopped it short of its head, which the ledger removes when it
    /// loads.
    fn remove_tokens(&self, keys: &[Vec<u8>]) -> Result<(), StoreError>;
}

/// Visits records from `from` on with a step that can fail; stops at the end
/// of the log, when `step` returns `Ok(false)`, or at its first error.
pub fn try_scan<E: From<StoreError>>(
    store: &dyn EventStore,
    from: u64,
    mut step: impl FnMut(u64, &[u8]) -> Result<bool, E>,
) -> Result<(), E> {
    let mut failure = None;
    store.scan(from, &mut |position, bytes| match step(position, bytes) {
        Ok(more) => more,
        Err(err) => {
            failure = Some(err);
            false
        }
    })?;
    failure.map_or(Ok(()), Err)
}

/// [`try_scan`] over one aggregate's stream.
pub fn try_scan_stream<E: From<StoreError>>(
    store: &dyn EventStore,
    aggregate_id: &str,
    mut step: impl FnMut(u64, &[u8]) -> Result<bool, E>,
) -> Result<(), E> {
    let mut failure = None;
    store.scan_stream(
        aggregate_id,
        &mut |position, bytes| match step(position, bytes) {
            Ok(more) => more,
            Err(err) => {
                failure = Some(err);
                false
            }
        },
    )?;
    failure.map_or(Ok(()), Err)
}

#[cfg(test)]
mod tests;
