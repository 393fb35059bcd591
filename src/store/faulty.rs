//! A store that fails on demand, around any backend: what tests make a
//! disk do (appends, flushes and syncs that fail, a disk that stays full,
//! a head that does not decode, a slow disk, a projection save cut short),
//! with none of it inside the backends. It forwards everything else, the
//! replicas' [`SharedLog`] included.
//!
//! Only the save cut short needs a backend's help ([`CutShort`]): how much
//! of a save survives a failure part way is the backend's own affair.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use super::{
    AppendBatch, Entries, EventLog, Head, ProjectionOp, ProjectionSave, ProjectionStatus,
    ProjectionStore, SaveMode, Saved, SharedLog, StoreError, TokenSweeper, TokenVisitor,
};

/// What a backend leaves of a projection save that fails after `count` of
/// its `ops`, as a disk error part way would.
pub trait CutShort {
    /// Applies the first `count` of `ops` and leaves `checkpoint` pending,
    /// as a stepwise save stopped there; a backend that saves in one
    /// transaction applies nothing.
    fn save_cut_short(
        &self,
        ops: &[ProjectionOp],
        checkpoint: u64,
        count: usize,
    ) -> Result<(), StoreError>;
}

/// A call that can be made to fail.
#[derive(Debug, Clone, Copy)]
enum Call {
    Append,
    Flush,
    Sync,
}

/// `S`, failing when a test asks.
pub struct Faulty<S> {
    inner: S,
    appends: AtomicUsize,
    corrupt_appends: AtomicBool,
    flushes: AtomicUsize,
    syncs: AtomicUsize,
    append_delay_micros: AtomicUsize,
    token_read_delay_micros: AtomicUsize,
    /// Says an append was cut short, whatever `inner` says.
    cut_short: AtomicBool,
    /// The next this many reads of every idempotency record fail.
    token_reads: AtomicUsize,
    /// Every append, flush and sync fails, as on a full disk.
    full: AtomicBool,
    /// Calls that failed because of `full`.
    refused_full: AtomicUsize,
    /// The next projection save fails after this many writes.
    projection_save: Mutex<Option<usize>>,
}

impl<S> Faulty<S> {
    /// `inner`, failing nothing until asked.
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            appends: AtomicUsize::new(0),
            corrupt_appends: AtomicBool::new(false),
            flushes: AtomicUsize::new(0),
            syncs: AtomicUsize::new(0),
            append_delay_micros: AtomicUsize::new(0),
            token_read_delay_micros: AtomicUsize::new(0),
            cut_short: AtomicBool::new(false),
            token_reads: AtomicUsize::new(0),
            full: AtomicBool::new(false),
            refused_full: AtomicUsize::new(0),
            projection_save: Mutex::new(None),
        }
    }

    /// Makes the next `count` appends fail with a backend error, writing nothing.
    pub fn fail_next_appends(&self, count: usize) {
        self.appends.store(count, Ordering::SeqCst);
    }

    /// Makes the next `count` flushes fail. What was appended stays (as
    /// after a disk error, nobody knows whether it reached the disk).
    pub fn fail_next_flushes(&self, count: usize) {
        self.flushes.store(count, Ordering::SeqCst);
    }

    /// Makes the next `count` syncs to the disk fail.
    pub fn fail_next_syncs(&self, count: usize) {
        self.syncs.store(count, Ordering::SeqCst);
    }

    /// Makes every append, flush and sync fail from now on (`true`) as on
    /// a full disk, or work again (`false`).
    pub fn fill_disk(&self, full: bool) {
        self.full.store(full, Ordering::SeqCst);
    }

    /// How many calls failed because the disk was full.
    pub fn refused_on_full_disk(&self) -> usize {
        self.refused_full.load(Ordering::SeqCst)
    }

    /// Makes the next append find the store corrupt, writing nothing.
    pub fn corrupt_next_append(&self) {
        self.corrupt_appends.store(true, Ordering::SeqCst);
    }

    /// Makes every append take at least `delay`, as a slow disk would, so
    /// tests can have batches queue up behind it.
    pub fn slow_appends(&self, delay: Duration) {
        self.append_delay_micros
            .store(delay.as_micros() as usize, Ordering::SeqCst);
    }

    /// Makes every read of the idempotency records take at least `delay`,
    /// as a large store would.
    pub fn slow_token_reads(&self, delay: Duration) {
        self.token_read_delay_micros
            .store(delay.as_micros() as usize, Ordering::SeqCst);
    }

    /// Makes the next `count` reads of every idempotency record (a
    /// visit or a sweep) fail.
    pub fn fail_next_token_reads(&self, count: usize) {
        self.token_reads.store(count, Ordering::SeqCst);
    }

    /// Delays a read of every idempotency record, then fails it if asked.
    fn token_read(&self) -> Result<(), StoreError> {
        let delay = self.token_read_delay_micros.load(Ordering::SeqCst);
        std::thread::sleep(Duration::from_micros(delay as u64));
        let failing = self.token_reads.load(Ordering::SeqCst);
        if failing > 0 {
            self.token_reads.store(failing - 1, Ordering::SeqCst);
            return Err(StoreError::failed(
                "injected failure reading the idempotency records",
            ));
        }
        Ok(())
    }

    /// Makes [`EventLog::cut_short`] say an append was cut short.
    pub fn say_cut_short(&self, cut_short: bool) {
        self.cut_short.store(cut_short, Ordering::SeqCst);
    }

    /// Makes the next projection save fail after its first `written`
    /// writes, leaving what the backend leaves of such a save
    /// ([`CutShort`]) and the checkpoint as it was.
    pub fn fail_next_projection_save_after(&self, written: usize) {
        if let Ok(mut failing) = self.projection_save.lock() {
            *failing = Some(written);
        }
    }

    /// Whether a failure set by
    /// [`fail_next_projection_save_after`](Self::fail_next_projection_save_after)
    /// is still to happen.
    pub fn projection_save_failure_pending(&self) -> bool {
        self.projection_save
            .lock()
            .is_ok_and(|failing| failing.is_some())
    }

    /// The failure a test asked `call` to meet, if any.
    fn check(&self, call: Call) -> Result<(), StoreError> {
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
                    std::thread::sleep(Duration::from_micros(delay as u64));
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
}

impl<S: EventLog> EventLog for Faulty<S> {
    fn head(&self) -> Result<Head, StoreError> {
        self.inner.head()
    }

    fn write(&self, batch: &AppendBatch) -> Result<(), StoreError> {
        // A batch of no records only removes idempotency records: no disk
        // failure a test asks for is meant for it.
        if !batch.records.is_empty() {
            self.check(Call::Append)?;
        }
        self.inner.write(batch)
    }

    fn flush_to_os(&self) -> Result<(), StoreError> {
        self.check(Call::Flush)?;
        self.inner.flush_to_os()
    }

    fn sync_to_disk(&self) -> Result<(), StoreError> {
        self.check(Call::Sync)?;
        self.inner.sync_to_disk()
    }

    fn recover(&self) -> Result<(), StoreError> {
        // Recovering proves the disk takes a flush and a sync again.
        self.check(Call::Flush)?;
        self.check(Call::Sync)?;
        self.inner.recover()
    }

    fn shared(&self) -> Option<&dyn SharedLog> {
        self.inner.shared()
    }

    fn scan(&self, from: u64, visit: &mut dyn FnMut(u64, &[u8]) -> bool) -> Result<(), StoreError> {
        self.inner.scan(from, visit)
    }

    fn read_at(&self, position: u64) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.read_at(position)
    }

    fn stream_versions(&self, aggregate_ids: &[&str], as_of: u64) -> Result<Vec<u64>, StoreError> {
        self.inner.stream_versions(aggregate_ids, as_of)
    }

    fn scan_stream(
        &self,
        aggregate_id: &str,
        visit: &mut dyn FnMut(u64, &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        self.inner.scan_stream(aggregate_id, visit)
    }

    fn tokens(&self) -> Result<Entries, StoreError> {
        self.inner.tokens()
    }

    fn token(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        self.inner.token(key)
    }

    fn cut_short(&self) -> bool {
        self.cut_short.load(Ordering::SeqCst) || self.inner.cut_short()
    }

    fn sweep_tokens(&self, sweep: &mut TokenSweeper<'_>) -> Result<Option<usize>, StoreError> {
        self.token_read()?;
        self.inner.sweep_tokens(sweep)
    }

    fn visit_tokens(&self, visit: &mut TokenVisitor<'_>) -> Result<(), StoreError> {
        self.token_read()?;
        self.inner.visit_tokens(visit)
    }

    fn read_many(&self, positions: &[u64]) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        self.inner.read_many(positions)
    }
}

impl<S: ProjectionStore + CutShort> ProjectionStore for Faulty<S> {
    fn projection_status(&self) -> Result<ProjectionStatus, StoreError> {
        self.inner.projection_status()
    }

    fn projection_scan(&self, prefix: &[u8]) -> Result<Entries, StoreError> {
        self.inner.projection_scan(prefix)
    }

    fn save_projections(&self, save: &ProjectionSave<'_>) -> Result<Saved, StoreError> {
        if save.mode != SaveMode::Replace {
            let failing = self.projection_save.lock().ok().and_then(|mut f| f.take());
            if let Some(written) = failing {
                self.inner
                    .save_cut_short(save.ops, save.checkpoint, written)?;
                return Err(StoreError::failed(
                    "injected failure part way through a projection save",
                ));
            }
        }
        self.inner.save_projections(save)
    }
}
