//! The stored read side's contract: projection entries current at a
//! checkpoint, so a start replays only the log after it.
//!
//! A save may be made in steps (the sled store writes one entry at a time,
//! so appends never wait behind a large write): a crash or a failure part
//! way then leaves the old checkpoint, a key-ordered prefix of the save's
//! changes applied, and the save's target named in
//! [`ProjectionStatus::pending`]. Loading
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

/// What became of a [`ProjectionStore::save_projections`].
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

/// Where the stored projections stand.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ProjectionStatus {
    /// The position up to which the stored projections are current, if any.
    pub checkpoint: Option<u64>,
    /// The targets of saves that stopped part way since the checkpoint last
    /// moved, oldest first: one when a crash cut a save short, more when a
    /// save failed part way and its retries did too, each leaving a prefix
    /// of its changes. Empty when every save finished.
    pub pending: Vec<u64>,
}

/// What a save does with the entries already stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SaveMode {
    /// Applies the changes on top of them. With `from`, the changes were
    /// computed from the projections at that checkpoint: on a store that
    /// several processes share, one of them keeps the projections, and only
    /// while the stored checkpoint is still `from`.
    Update {
        /// The checkpoint the changes were computed from, when it matters.
        from: Option<u64>,
    },
    /// Drops every entry first. A crash part way leaves no checkpoint, so
    /// the next start rebuilds from the log.
    Replace,
}

/// One save of the projections.
#[derive(Debug, Clone, Copy)]
pub struct ProjectionSave<'a> {
    /// The writes, in key order.
    pub ops: &'a [ProjectionOp],
    /// Where the projections are current once it is done.
    pub checkpoint: u64,
    /// What happens to the entries already stored.
    pub mode: SaveMode,
}

/// What [`ProjectionStore::projection_visit`] calls with each entry (key,
/// value); an error stops the visit.
pub type VisitEntry<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), StoreError> + 'a;

/// The persisted projections and their checkpoint: three methods, and a
/// visit of the entries that backends able to stream them override.
pub trait ProjectionStore: Send + Sync + 'static {
    /// The checkpoint and the targets of unfinished saves.
    fn projection_status(&self) -> Result<ProjectionStatus, StoreError>;

    /// Every projection entry whose key starts with `prefix`, in key order.
    fn projection_scan(&self, prefix: &[u8]) -> Result<Entries, StoreError>;

    /// Calls `visit` with every projection entry whose key starts with
    /// `prefix`, in key order, and stops at the first error it returns.
    /// Backends that can read entries one at a time override it, so a
    /// start does not hold every entry at once (870 MB at a million
    /// images, in sled).
    fn projection_visit(
        &self,
        prefix: &[u8],
        visit: &mut VisitEntry<'_>,
    ) -> Result<(), StoreError> {
        for (key, value) in self.projection_scan(prefix)? {
            visit(&key, &value)?;
        }
        Ok(())
    }

    /// Applies `save.ops` (in key order) and moves the checkpoint to
    /// `save.checkpoint`, durably; the checkpoint moves last, and clears
    /// every pending target. A failure or crash part way may leave a prefix
    /// of the ops applied (see the module's documentation). The answer says
    /// whether this process wrote it (see [`SaveMode::Update`]).
    fn save_projections(&self, save: &ProjectionSave<'_>) -> Result<Saved, StoreError>;
}

/// Conveniences over any [`ProjectionStore`].
pub trait ProjectionStoreExt: ProjectionStore {
    /// The position up to which the stored projections are current, if any.
    fn projection_checkpoint(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.projection_status()?.checkpoint)
    }

    /// The targets of unfinished saves (see [`ProjectionStatus::pending`]).
    fn projection_pending(&self) -> Result<Vec<u64>, StoreError> {
        Ok(self.projection_status()?.pending)
    }

    /// Applies `ops` and moves the checkpoint, whatever it was.
    fn update_projections(&self, ops: &[ProjectionOp], checkpoint: u64) -> Result<(), StoreError> {
        let mode = SaveMode::Update { from: None };
        self.save_projections(&ProjectionSave {
            ops,
            checkpoint,
            mode,
        })
        .map(drop)
    }

    /// Applies `ops`, computed from the projections at `from`, when this
    /// process keeps them (see [`SaveMode::Update`]).
    fn save_projections_from(
        &self,
        ops: &[ProjectionOp],
        from: u64,
        checkpoint: u64,
    ) -> Result<Saved, StoreError> {
        let mode = SaveMode::Update { from: Some(from) };
        self.save_projections(&ProjectionSave {
            ops,
            checkpoint,
            mode,
        })
    }

    /// Drops every entry and writes `ops` as current at `checkpoint`.
    fn replace_projections(&self, ops: &[ProjectionOp], checkpoint: u64) -> Result<(), StoreError> {
        let mode = SaveMode::Replace;
        self.save_projections(&ProjectionSave {
            ops,
            checkpoint,
            mode,
        })
        .map(drop)
    }
}

impl<T: ProjectionStore + ?Sized> ProjectionStoreExt for T {}
