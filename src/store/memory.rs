//! An in-memory store with the same contract as the sled one: the
//! reference the sled store is tested against (wrapped in
//! [`super::Faulty`], the store tests make fail on demand).

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use super::{
    AppendBatch, Entries, EventLog, Head, ProjectionOp, ProjectionSave, ProjectionStatus,
    ProjectionStore, SaveMode, Saved, StoreError, TokenSweeper,
};

#[derive(Default)]
struct Tables {
    head: Head,
    log: BTreeMap<u64, Vec<u8>>,
    stream_positions: BTreeMap<(String, u64), u64>,
    tokens: BTreeMap<Vec<u8>, Vec<u8>>,
    projections: BTreeMap<Vec<u8>, Vec<u8>>,
    checkpoint: Option<u64>,
    /// Targets of projection saves that failed part way.
    pending: Vec<u64>,
}

/// A store that keeps everything in memory (nothing survives the process).
#[derive(Default)]
pub struct MemoryStore {
    tables: Mutex<Tables>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn tables(&self) -> Result<MutexGuard<'_, Tables>, StoreError> {
        self.tables
            .lock()
            .map_err(|_| StoreError::failed("the memory store lock is poisoned"))
    }
}

impl EventLog for MemoryStore {
    fn head(&self) -> Result<Head, StoreError> {
        Ok(self.tables()?.head)
    }

    fn write(&self, batch: &AppendBatch) -> Result<(), StoreError> {
        let mut t = self.tables()?;
        if t.head != batch.expected_head {
            return Err(StoreError::Conflict {
                expected: batch.expected_head.position,
                found: t.head.position,
            });
        }
        let Some(last) = batch.records.last() else {
            for key in &batch.expired_tokens {
                t.tokens.remove(key);
            }
            return Ok(());
        };
        for record in &batch.records {
            t.log.insert(record.position, record.bytes.clone());
            t.stream_positions.insert(
                (record.aggregate_id.clone(), record.aggregate_version),
                record.position,
            );
        }
        for key in &batch.expired_tokens {
            t.tokens.remove(key);
        }
        for (key, value) in &batch.tokens {
            t.tokens.insert(key.clone(), value.clone());
        }
        t.head = Head {
            position: last.position,
            hash: last.hash,
        };
        Ok(())
    }

    fn flush_to_os(&self) -> Result<(), StoreError> {
        // Nothing to hand over: the tables are all there is.
        Ok(())
    }

    fn sync_to_disk(&self) -> Result<(), StoreError> {
        // No disk: nothing survives the process anyway.
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

    fn stream_versions(&self, aggregate_ids: &[&str], as_of: u64) -> Result<Vec<u64>, StoreError> {
        let t = self.tables()?;
        let version = |aggregate_id: &str| {
            let range = (aggregate_id.to_owned(), 0)..=(aggregate_id.to_owned(), u64::MAX);
            t.stream_positions
                .range(range)
                .rev()
                .find(|(_, position)| **position <= as_of)
                .map_or(0, |((_, version), _)| *version)
        };
        Ok(aggregate_ids.iter().map(|id| version(id)).collect())
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

    fn sweep_tokens(&self, sweep: &mut TokenSweeper<'_>) -> Result<Option<usize>, StoreError> {
        let mut t = self.tables()?;
        let before = t.tokens.len();
        let mut failed = None;
        t.tokens.retain(|key, value| match sweep(key, value) {
            Ok(remove) => !remove,
            Err(err) => {
                failed.get_or_insert(err);
                true
            }
        });
        match failed {
            Some(err) => Err(err),
            None => Ok(Some(before - t.tokens.len())),
        }
    }

    fn token(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.tables()?.tokens.get(key).cloned())
    }

    fn tokens(&self) -> Result<Entries, StoreError> {
        let t = self.tables()?;
        Ok(t.tokens
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }
}

impl ProjectionStore for MemoryStore {
    fn projection_status(&self) -> Result<ProjectionStatus, StoreError> {
        let t = self.tables()?;
        Ok(ProjectionStatus {
            checkpoint: t.checkpoint,
            pending: t.pending.clone(),
        })
    }

    fn projection_scan(&self, prefix: &[u8]) -> Result<Entries, StoreError> {
        let t = self.tables()?;
        Ok(t.projections
            .range(prefix.to_vec()..)
            .take_while(|(key, _)| key.starts_with(prefix))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect())
    }

    fn save_projections(&self, save: &ProjectionSave<'_>) -> Result<Saved, StoreError> {
        let ProjectionSave {
            ops,
            checkpoint,
            mode,
        } = *save;
        let mut t = self.tables()?;
        if mode == SaveMode::Replace {
            t.projections.clear();
        }
        apply_ops(&mut t.projections, ops);
        t.checkpoint = Some(checkpoint);
        t.pending.clear();
        Ok(Saved::Done)
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

#[cfg(any(test, feature = "test-hooks"))]
impl super::faulty::CutShort for MemoryStore {
    fn save_cut_short(
        &self,
        ops: &[ProjectionOp],
        checkpoint: u64,
        count: usize,
    ) -> Result<(), StoreError> {
        // As a disk error part way through a stepwise save leaves it.
        let mut t = self.tables()?;
        if !ops.is_empty() && t.pending.last() != Some(&checkpoint) {
            t.pending.push(checkpoint);
        }
        apply_ops(&mut t.projections, &ops[..count.min(ops.len())]);
        Ok(())
    }
}
