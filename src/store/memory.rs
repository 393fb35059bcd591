//! An in-memory store with the same contract as the sled one: the
//! reference the sled store is tested against, and, in tests, a store that
//! fails on demand.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard};

use super::{
    AppendBatch, Entries, EventLog, Head, ProjectionOp, ProjectionSave, ProjectionStatus,
    ProjectionStore, SaveMode, Saved, StoreError,
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
    #[cfg(test)]
    faults: faults::Faults,
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

    /// A failure a test asked `what` to fail with, if any.
    #[cfg(test)]
    fn injected(&self, what: faults::Call) -> Result<(), StoreError> {
        self.faults.check(what)
    }

    #[cfg(not(test))]
    fn injected(&self, _: faults::Call) -> Result<(), StoreError> {
        Ok(())
    }
}

impl EventLog for MemoryStore {
    fn head(&self) -> Result<Head, StoreError> {
        Ok(self.tables()?.head)
    }

    fn write(&self, batch: &AppendBatch) -> Result<(), StoreError> {
        if !batch.records.is_empty() {
            self.injected(faults::Call::Append)?;
        }
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
        self.injected(faults::Call::Flush)
    }

    fn sync_to_disk(&self) -> Result<(), StoreError> {
        // No disk: nothing survives the process anyway.
        self.injected(faults::Call::Sync)
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
        #[cfg(test)]
        if mode != SaveMode::Replace {
            if let Some(written) = self.faults.take_projection_failure() {
                // As a disk error part way through a stepwise save leaves it.
                let mut t = self.tables()?;
                if !ops.is_empty() && t.pending.last() != Some(&checkpoint) {
                    t.pending.push(checkpoint);
                }
                apply_ops(&mut t.projections, &ops[..written.min(ops.len())]);
                return Err(StoreError::failed(
                    "injected failure part way through a projection save",
                ));
            }
        }
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

/// Failures tests ask for, and the slow disk they simulate.
mod faults {
    /// A call that can be made to fail.
    #[derive(Debug, Clone, Copy)]
    pub(super) enum Call {
        Append,
        Flush,
        Sync,
    }

    #[cfg(test)]
    pub(super) use imp::Faults;

    #[cfg(test)]
    mod imp {
        use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
        use std::sync::Mutex;

        use super::super::MemoryStore;
        use super::Call;
        use crate::store::StoreError;

        #[derive(Default)]
        pub(in crate::store::memory) struct Faults {
            appends: AtomicUsize,
            corrupt_appends: AtomicBool,
            flushes: AtomicUsize,
            syncs: AtomicUsize,
            append_delay_micros: AtomicUsize,
            /// Every append, flush and sync fails, as on a full disk.
            full: AtomicBool,
            /// Calls that failed because of `full`.
            refused_full: AtomicUsize,
            /// The next projection save fails after this many writes.
            projection_save: Mutex<Option<usize>>,
        }

        impl Faults {
            pub(in crate::store::memory) fn check(&self, call: Call) -> Result<(), StoreError> {
                if self.full.load(Ordering::SeqCst) {
                    self.refused_full.fetch_add(1, Ordering::SeqCst);
                    return Err(StoreError::backend(
                        format!("injected {call:?} failure"),
                        std::io::Error::from_raw_os_error(28),
                    ));
                }
                let count = match call {
                    Call::Append => {
                        let delay = self.append_delay_micros.load(Ordering::SeqCst);
                        if delay > 0 {
                            std::thread::sleep(std::time::Duration::from_micros(delay as u64));
                        }
                        if self.corrupt_appends.swap(false, Ordering::SeqCst) {
                            return Err(StoreError::Corrupt(
                                "injected: the stored head does not decode".into(),
                            ));
                        }
                        &self.appends
                    }
                    Call::Flush => &self.flushes,
                    Call::Sync => &self.syncs,
                };
                let failing = count.load(Ordering::SeqCst);
                if failing > 0 {
                    count.store(failing - 1, Ordering::SeqCst);
                    return Err(StoreError::backend(
                        format!("injected {call:?} failure"),
                        std::io::Error::other("No space left on device at /srv/ledger"),
                    ));
                }
                Ok(())
            }

            pub(in crate::store::memory) fn take_projection_failure(&self) -> Option<usize> {
                self.projection_save.lock().ok()?.take()
            }
        }

        impl MemoryStore {
            /// Makes the next `count` appends fail with a backend error, writing nothing.
            pub fn fail_next_appends(&self, count: usize) {
                self.faults.appends.store(count, Ordering::SeqCst);
            }

            /// Makes every append, flush and sync fail from now on (`true`)
            /// as on a full disk, or work again (`false`).
            pub fn fill_disk(&self, full: bool) {
                self.faults.full.store(full, Ordering::SeqCst);
            }

            /// How many calls failed because the disk was full.
            pub fn refused_on_full_disk(&self) -> usize {
                self.faults.refused_full.load(Ordering::SeqCst)
            }

            /// Makes the next append find the store corrupt, writing nothing.
            pub fn corrupt_next_append(&self) {
                self.faults.corrupt_appends.store(true, Ordering::SeqCst);
            }

            /// Makes the next `count` flushes fail. What was appended stays (as
            /// after a disk error, nobody knows whether it reached the disk).
            pub fn fail_next_flushes(&self, count: usize) {
                self.faults.flushes.store(count, Ordering::SeqCst);
            }

            /// Makes the next `count` syncs to the disk fail.
            pub fn fail_next_syncs(&self, count: usize) {
                self.faults.syncs.store(count, Ordering::SeqCst);
            }

            /// Makes the next projection save fail after its first
            /// `written` writes, leaving those in place and the checkpoint
            /// as it was, as a disk error part way through a stepwise save
            /// would.
            pub fn fail_next_projection_save_after(&self, written: usize) {
                if let Ok(mut failing) = self.faults.projection_save.lock() {
                    *failing = Some(written);
                }
            }

            /// Whether a failure set by
            /// [`fail_next_projection_save_after`](Self::fail_next_projection_save_after)
            /// is still to happen.
            pub fn projection_save_failure_pending(&self) -> bool {
                self.faults
                    .projection_save
                    .lock()
                    .is_ok_and(|failing| failing.is_some())
            }

            /// Makes every append take at least `delay`, as a slow disk would, so
            /// tests can have batches queue up behind it.
            pub fn slow_appends(&self, delay: std::time::Duration) {
                self.faults
                    .append_delay_micros
                    .store(delay.as_micros() as usize, Ordering::SeqCst);
            }
        }
    }
}
