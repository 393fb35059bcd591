//! An in-memory event store with the same contract as the sled one, for
//! tests of the command path, including storage failures on demand.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::{AppendBatch, Entries, EventStore, Head, ProjectionOp, StoreError};

#[derive(Default)]
struct Tables {
    head: Head,
    log: BTreeMap<u64, Vec<u8>>,
    stream_positions: BTreeMap<(String, u64), u64>,
    tokens: BTreeMap<Vec<u8>, Vec<u8>>,
    projections: BTreeMap<Vec<u8>, Vec<u8>>,
    checkpoint: Option<u64>,
    /// Targets of stepwise projection writes that failed part way.
    pending: Vec<u64>,
}

/// A store that keeps everything in memory (nothing survives the process).
#[derive(Default)]
pub struct MemoryStore {
    tables: Mutex<Tables>,
    failing_appends: AtomicUsize,
    failing_flushes: AtomicUsize,
    failing_syncs: AtomicUsize,
    append_delay_micros: AtomicUsize,
    /// The next stepwise projection write fails after this many writes.
    failing_projection_write: Mutex<Option<usize>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes the next `count` appends fail with a backend error, writing nothing.
    pub fn fail_next_appends(&self, count: usize) {
        self.failing_appends.store(count, Ordering::SeqCst);
    }

    /// Makes the next `count` flushes fail. What was appended stays (as
    /// after a disk error, nobody knows whether it reached the disk).
    pub fn fail_next_flushes(&self, count: usize) {
        self.failing_flushes.store(count, Ordering::SeqCst);
    }

    /// Makes the next `count` syncs to the disk ([`EventStore::sync_to_disk`]) fail.
    pub fn fail_next_syncs(&self, count: usize) {
        self.failing_syncs.store(count, Ordering::SeqCst);
    }

    /// Makes the next [stepwise projection write](EventStore::write_projections_in_steps)
    /// fail after its first `written` writes, leaving those in place and
    /// the checkpoint as it was, as a disk error part way would.
    pub fn fail_next_projection_write_after(&self, written: usize) {
        if let Ok(mut failing) = self.failing_projection_write.lock() {
            *failing = Some(written);
        }
    }

    /// Whether a failure set by [`fail_next_projection_write_after`](Self::fail_next_projection_write_after)
    /// is still to happen.
    pub fn projection_write_failure_pending(&self) -> bool {
        self.failing_projection_write
            .lock()
            .is_ok_and(|failing| failing.is_some())
    }

    /// Makes every append take at least `delay`, as a slow disk would, so
    /// tests can have batches queue up behind it.
    pub fn slow_appends(&self, delay: std::time::Duration) {
        self.append_delay_micros
            .store(delay.as_micros() as usize, Ordering::SeqCst);
    }

    fn tables(&self) -> Result<MutexGuard<'_, Tables>, StoreError> {
        self.tables
            .lock()
            .map_err(|_| StoreError::Backend("the memory store lock is poisoned".into()))
    }
}

impl EventStore for MemoryStore {
    fn head(&self) -> Result<Head, StoreError> {
        Ok(self.tables()?.head)
    }

    fn append(&self, batch: &AppendBatch) -> Result<(), StoreError> {
        let Some(last) = batch.records.last() else {
            return Ok(());
        };
        let delay = self.append_delay_micros.load(Ordering::SeqCst);
        if delay > 0 {
            std::thread::sleep(std::time::Duration::from_micros(delay as u64));
        }
        injected(&self.failing_appends, "append")?;
        let mut t = self.tables()?;
        if t.head != batch.expected_head {
            return Err(StoreError::Conflict(format!(
                "the log head is at position {}, the batch expected {}",
                t.head.position, batch.expected_head.position
            )));
        }
        for record in &batch.records {
            t.log.insert(record.position, record.bytes.clone());
            t.stream_positions.insert(
                (record.aggregate_id.clone(), record.aggregate_version),
                record.position,
            );
        }
        for (key, value) in &batch.tokens {
            t.tokens.insert(key.clone(), value.clone());
        }
        apply_ops(&mut t.projections, &batch.projection);
        t.head = Head {
            position: last.position,
            hash: last.hash,
        };
        if let Some(checkpoint) = batch.projection_checkpoint {
            t.checkpoint = Some(checkpoint);
        }
        Ok(())
    }

    fn scan(&self, from: u64, visit: &mut dyn FnMut(u64, &[u8]) -> bool) -> Result<(), StoreError> {
        let t = self.tables()?;
        for (position, bytes) in t.log.range(from..) {
            if !visit(*position, bytes) {
                break;
            }
        }
        Ok(())
    }

    fn read_at(&self, position: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tables()?.log.get(&position).cloned())
    }

    fn flush_to_os(&self) -> Result<(), StoreError> {
        injected(&self.failing_flushes, "flush")
    }

    fn sync_to_disk(&self) -> Result<(), StoreError> {
        injected(&self.failing_syncs, "sync")
    }

    fn stream_version(&self, aggregate_id: &str, as_of: u64) -> Result<u64, StoreError> {
        let t = self.tables()?;
        let range = (aggregate_id.to_owned(), 0)..=(aggregate_id.to_owned(), u64::MAX);
        Ok(t.stream_positions
            .range(range)
            .rev()
            .find(|(_, position)| **position <= as_of)
            .map_or(0, |((_, version), _)| *version))
    }

    fn scan_stream(
        &self,
        aggregate_id: &str,
        visit: &mut dyn FnMut(u64, &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let t = self.tables()?;
        let start = (aggregate_id.to_owned(), 0);
        for ((id, _), position) in t.stream_positions.range(start..) {
            if id != aggregate_id {
                break;
            }
            let Some(record) = t.log.get(position) else {
                return Err(StoreError::Corrupt(format!(
                    "stream {aggregate_id} points at position {position}, which is not in the log"
                )));
            };
            if !visit(*position, record) {
                break;
            }
        }
        Ok(())
    }

    fn projection_checkpoint(&self) -> Result<Option<u64>, StoreError> {
        Ok(self.tables()?.checkpoint)
    }

    fn projection_pending(&self) -> Result<Vec<u64>, StoreError> {
        Ok(self.tables()?.pending.clone())
    }

    fn projection_scan(&self, prefix: &[u8]) -> Result<Entries, StoreError> {
        let t = self.tables()?;
        Ok(t.projections
            .range(prefix.to_vec()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn write_projections(&self, ops: &[ProjectionOp], checkpoint: u64) -> Result<(), StoreError> {
        let mut t = self.tables()?;
        apply_ops(&mut t.projections, ops);
        t.checkpoint = Some(checkpoint);
        t.pending.clear();
        Ok(())
    }

    fn write_projections_in_steps(
        &self,
        ops: &[ProjectionOp],
        checkpoint: u64,
    ) -> Result<(), StoreError> {
        let failing = self
            .failing_projection_write
            .lock()
            .map_err(|_| StoreError::Backend("the memory store lock is poisoned".into()))?
            .take();
        match failing {
            Some(written) => {
                let mut t = self.tables()?;
                if !ops.is_empty() && t.pending.last() != Some(&checkpoint) {
                    t.pending.push(checkpoint);
                }
                apply_ops(&mut t.projections, &ops[..written.min(ops.len())]);
                Err(StoreError::Backend(
                    "injected failure part way through a projection write".into(),
                ))
            }
            None => self.write_projections(ops, checkpoint),
        }
    }

    fn replace_projections(&self, ops: &[ProjectionOp], checkpoint: u64) -> Result<(), StoreError> {
        let mut t = self.tables()?;
        t.projections.clear();
        apply_ops(&mut t.projections, ops);
        t.checkpoint = Some(checkpoint);
        t.pending.clear();
        Ok(())
    }

    fn remove_tokens(&self, keys: &[Vec<u8>]) -> Result<(), StoreError> {
        let mut t = self.tables()?;
        for key in keys {
            t.tokens.remove(key);
        }
        Ok(())
    }

    fn tokens(&self) -> Result<Entries, StoreError> {
        let t = self.tables()?;
        Ok(t.tokens
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

fn apply_ops(table: &mut BTreeMap<Vec<u8>, Vec<u8>>, ops: &[ProjectionOp]) {
    for op in ops {
        match &op.value {
            Some(value) => table.insert(op.key.clone(), value.clone()),
            None => table.remove(&op.key),
        };
    }
}

/// Fails, once, when `count` (the failures still to inject) is above zero.
fn injected(count: &AtomicUsize, what: &str) -> Result<(), StoreError> {
    let failing = count.load(Ordering::SeqCst);
    if failing > 0 {
        count.store(failing - 1, Ordering::SeqCst);
        return Err(StoreError::Backend(format!("injected {what} failure")));
    }
    Ok(())
}
