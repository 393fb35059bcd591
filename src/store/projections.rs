//! The stored read side's contract: projection entries current at a
//! checkpoint, so a start replays only the log after it.
//!
//! A save may be made in steps (the sled store writes one entry at a time,
//! so appends never wait behind a large write): a crash or a failure part
//! way then leaves the old checkpoint, a key-ordered prefix of the save's
//! changes applied, and the save's target named in
//! [`projection_pending`](ProjectionStore::projection_pending). Loading
//! such a read side and replaying the log from its checkpoint still gives
//! the right state (see [`crate::projection::persist`]). A backend that
//! saves in one transaction never leaves a target pending, and nothing
//! else needs to know which kind it is.

use super::{Entries, StoreError};

/// One write to the persisted projections: a put, or a delete when `value` is `None`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProjectionOp {
    /// Key in the projection keyspace.
    pub key: Vec<u8>,
    /// New value, or `None` to delete.
    pub value: Option<Vec<u8>>,
}

/// What became of a [`ProjectionStore::save_projections_from`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Saved {
    /// Written.
    Done,
    /// Another process keeps the stored read side: nothing was written.
    Skipped,
    /// The stored read side is not at `from` (another process kept it until
    /// now): nothing was written; write it whole.
    Stale,
}

/// The persisted projections and their checkpoint.
pub trait ProjectionStore: Send + Sync + 'static {
    /// The position up to which the persisted projections are current, if any.
    fn projection_checkpoint(&self) -> Result<Option<u64>, StoreError>;

    /// Every projection entry whose key starts with `prefix`, in key order.
    fn projection_scan(&self, prefix: &[u8]) -> Result<Entries, StoreError>;

    /// Applies `ops` (in key order) and moves the checkpoint to
    /// `checkpoint`, durably; the checkpoint moves last, and clears every
    /// pending target. A failure or crash part way may leave a prefix of
    /// `ops` applied (see the module's documentation).
    fn save_projections(&self, ops: &[ProjectionOp], checkpoint: u64) -> Result<(), StoreError>;

    /// [`save_projections`](Self::save_projections) of `ops` computed from
    /// the read side at `from`. On a store that several processes share,
    /// one of them keeps the read side, and only when the stored checkpoint
    /// is still `from`; the answer says what happened.
    fn save_projections_from(
        &self,
        ops: &[ProjectionOp],
        from: u64,
        checkpoint: u64,
    ) -> Result<Saved, StoreError> {
        let _ = from;
        self.save_projections(ops, checkpoint)?;
        Ok(Saved::Done)
    }

    /// The targets of saves that stopped part way since the checkpoint last
    /// moved, oldest first: one when a crash cut a save short, more when a
    /// save failed part way and its retries did too, each leaving a prefix
    /// of its changes. Empty when every save finished.
    fn projection_pending(&self) -> Result<Vec<u64>, StoreError>;

    /// Drops every projection entry and writes `ops` as current at
    /// `checkpoint`, durably. A crash part way leaves no checkpoint, so the
    /// next start rebuilds from the log.
    fn replace_projections(&self, ops: &[ProjectionOp], checkpoint: u64) -> Result<(), StoreError>;
}
