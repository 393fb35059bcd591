//! The sled store's read side, saved in steps: the one place that knows
//! how a save that stops part way is recorded.
//!
//! A save first records its target checkpoint under `zp` (after those of
//! earlier saves that stopped part way: entries past this one's progress
//! may still hold their values), then writes its entries one at a time in
//! the order given, then moves the checkpoint and clears `zp` in one
//! batch. Single writes, unlike a batch, do not hold sled's batch lock, so
//! appends never wait behind more than one of them. sled recovers its log
//! in order, so after a crash the writes that survive are a prefix of them.

use ::sled::Batch;

use super::keys::{decode_u64, decode_u64s, encode_u64s, tagged, CHECKPOINT, PENDING, PROJECTION};
use super::{mark, scan_tagged, Handles, SledStore};
use crate::store::{
    Entries, ProjectionOp, ProjectionSave, ProjectionStatus, ProjectionStore, ProjectionStoreExt,
    SaveMode, Saved, StoreError,
};

impl SledStore {
    /// Writes the first `count` of `ops` (all of them but in tests, which
    /// cut a save short that way), then, once all are written, moves the
    /// checkpoint.
    fn save_steps(
        &self,
        ops: &[ProjectionOp],
        checkpoint: u64,
        count: usize,
    ) -> Result<(), StoreError> {
        let handles = self.handles()?;
        if !ops.is_empty() {
            let mut pending = self.projection_pending()?;
            if pending.last() != Some(&checkpoint) {
                pending.push(checkpoint);
            }
            handles.tree.insert(PENDING, encode_u64s(&pending))?;
        }
        for op in ops.iter().take(count) {
            let key = tagged(PROJECTION, &op.key);
            match &op.value {
                Some(value) => handles.tree.insert(key, value.as_slice())?,
                None => handles.tree.remove(key)?,
            };
        }
        if count >= ops.len() {
            let mut last = Batch::default();
            last.insert(CHECKPOINT, &checkpoint.to_be_bytes());
            last.remove(PENDING);
            handles.tree.apply_batch(last)?;
            handles.db.flush()?;
            return self.mark(&handles.tree, checkpoint);
        }
        handles.db.flush()
    }

    /// Marks the log as having reached the checkpoint just saved (the head,
    /// should the checkpoint be past it).
    fn mark(&self, tree: &::sled::Tree, checkpoint: u64) -> Result<(), StoreError> {
        let position = checkpoint.min(super::read_head(tree)?.position);
        mark::write(&self.dir, mark::head_at(tree, position)?)
    }
}

impl ProjectionStore for SledStore {
    fn projection_status(&self) -> Result<ProjectionStatus, StoreError> {
        let handles = self.handles()?;
        let checkpoint = handles
            .tree
            .get(CHECKPOINT)?
            .map(|bytes| decode_u64(&bytes, "projection checkpoint"))
            .transpose()?;
        let pending = match handles.tree.get(PENDING)? {
            None => Vec::new(),
            Some(bytes) if bytes.is_empty() => {
                return Err(StoreError::Corrupt(
                    "the stored pending projection checkpoints are malformed".into(),
                ))
            }
            Some(bytes) => decode_u64s(&bytes, "pending projection checkpoints")?,
        };
        Ok(ProjectionStatus {
            checkpoint,
            pending,
        })
    }

    fn projection_scan(&self, prefix: &[u8]) -> Result<Entries, StoreError> {
        scan_tagged(&self.handles()?.tree, PROJECTION, prefix)
    }

    fn projection_visit(
        &self,
        prefix: &[u8],
        visit: &mut crate::store::VisitEntry<'_>,
    ) -> Result<(), StoreError> {
        for entry in self.handles()?.tree.scan_prefix(tagged(PROJECTION, prefix)) {
            let (key, value) = entry?;
            visit(&key[1..], &value)?;
        }
        Ok(())
    }

    fn save_projections(&self, save: &ProjectionSave<'_>) -> Result<Saved, StoreError> {
        // Only this process appends to the directory: it keeps the
        // projections whatever `from` says.
        match save.mode {
            SaveMode::Update { .. } => self.save_steps(save.ops, save.checkpoint, usize::MAX)?,
            SaveMode::Replace => self.replace(save.ops, save.checkpoint)?,
        }
        Ok(Saved::Done)
    }
}

/// Writes of a replace between two flushes.
const FLUSH_EVERY: usize = 65_536;

impl SledStore {
    fn replace(&self, ops: &[ProjectionOp], checkpoint: u64) -> Result<(), StoreError> {
        let _guard = self.lock()?;
        let Handles { db, tree, .. } = &*self.handles()?;
        // The checkpoint goes first and comes back last: a crash part way
        // leaves none, and a store without one is rebuilt from the log.
        tree.remove(CHECKPOINT)?;
        db.flush()?;
        // One write at a time, with a flush every FLUSH_EVERY: sled keeps
        // every node version a batch makes until the batch ends, and dirty
        // pages in memory until they are flushed (a region's read side
        // written in batches of 4,096 peaked at 9.5 GB; this way 1.8 GB).
        // Without a checkpoint a crash part way leaves nothing a start
        // would use.
        tree.remove(PENDING)?;
        let stored = tree
            .scan_prefix([PROJECTION])
            .keys()
            .collect::<Result<Vec<_>, _>>()?;
        let removals = stored.iter().map(|key| tree.remove(key).map(drop));
        let writes = ops.iter().filter_map(|op| {
            let value = op.value.as_ref()?;
            Some(
                tree.insert(tagged(PROJECTION, &op.key), value.as_slice())
                    .map(drop),
            )
        });
        // Lazily, so the removals are done before the first write.
        for (n, written) in removals.chain(writes).enumerate() {
            written?;
            if (n + 1) % FLUSH_EVERY == 0 {
                db.flush()?;
            }
        }
        db.flush()?;
        tree.insert(CHECKPOINT, &checkpoint.to_be_bytes())?;
        db.flush()?;
        self.mark(tree, checkpoint)
    }
}

/// A save of the projections that stops after `count` of `ops`, as a crash
/// or a disk error part way would.
#[cfg(any(test, feature = "test-hooks"))]
impl crate::store::CutShort for SledStore {
    fn save_cut_short(
        &self,
        ops: &[ProjectionOp],
        checkpoint: u64,
        count: usize,
    ) -> Result<(), StoreError> {
        self.save_steps(ops, checkpoint, count)
    }
}
