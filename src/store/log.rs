//! The log's contract: an append-only, gap-free sequence of records with the
//! idempotency records written beside them, appended in batches whose
//! durability each backend provides in two steps of its own.

use super::{EncodedRecord, Entries, Head, StoreError};

/// Everything one group commit writes to the log.
#[derive(Debug, Clone, Default)]
pub struct AppendBatch {
    /// The head the batch was built on; the append fails if the log moved.
    /// This also pins every stream's version: the writer derived the
    /// records' stream versions from the state at this head, and an
    /// unchanged head means no record was appended since.
    pub expected_head: Head,
    /// The records, in position order, continuing `expected_head`.
    pub records: Vec<EncodedRecord>,
    /// Idempotency records: (key, value), see [`crate::idempotency`].
    pub tokens: Vec<(Vec<u8>, Vec<u8>)>,
    /// Keys of expired idempotency records to remove, before `tokens` are
    /// written (one of which may take an expired record's key anew).
    pub expired_tokens: Vec<Vec<u8>>,
}

/// What [`EventLog::visit_tokens`] calls with each idempotency record's
/// key and value.
pub type TokenVisitor<'a> = dyn FnMut(&[u8], &[u8]) -> Result<(), StoreError> + 'a;

/// What [`EventLog::sweep_tokens`] calls with each idempotency record's
/// key and value: whether to remove it.
pub type TokenSweeper<'a> = dyn FnMut(&[u8], &[u8]) -> Result<bool, StoreError> + 'a;

/// An append-only event log: nine methods every backend implements, three
/// capabilities with defaults (healing after a failure, replicas, saying
/// an append was cut short), three reads a backend may do faster than
/// their defaults, and removing expired idempotency records outside an
/// append.
///
/// An append is committed in three calls, so a writer can overlap them
/// across batches: [`write`](Self::write) makes the batch visible,
/// [`flush_to_os`](Self::flush_to_os) hands it to the operating system,
/// [`sync_to_disk`](Self::sync_to_disk) makes it survive a power cut. A
/// backend whose commit is durable in one step does it in `write` and says
/// so in the other two; none may skip a step it needs.
pub trait EventLog: Send + Sync + 'static {
    /// The last record of the log.
    fn head(&self) -> Result<Head, StoreError>;

    /// Writes a batch atomically (after a crash or a failure part way,
    /// readers of the log and of the idempotency records up to the head see
    /// none of it). It is visible to reads and to the next batch's head
    /// check at once, and durable once [`flush_to_os`](Self::flush_to_os)
    /// then [`sync_to_disk`](Self::sync_to_disk) have returned after it.
    /// Fails with [`StoreError::Conflict`] when the head is not what the
    /// batch expects. A batch of no records only removes its
    /// `expired_tokens`, checked against the head all the same.
    fn write(&self, batch: &AppendBatch) -> Result<(), StoreError>;

    /// Everything written so far is in the operating system's hands (a
    /// process crash no longer loses it).
    fn flush_to_os(&self) -> Result<(), StoreError>;

    /// Makes durable against power loss everything that
    /// [`flush_to_os`](Self::flush_to_os) handed over before this call.
    fn sync_to_disk(&self) -> Result<(), StoreError>;

    /// After a failed write, flush or sync: returns once the store takes
    /// writes again, or the reason it does not. The writer calls it with
    /// backoff until it succeeds, then reloads its state from the store. A
    /// backend whose handle a failure leaves unusable opens it afresh here.
    fn recover(&self) -> Result<(), StoreError> {
        self.flush()
    }

    /// The log's replica coordination, when other processes append to it
    /// too (replicas sharing a database); `None` for a log only this
    /// process appends to.
    fn shared(&self) -> Option<&dyn SharedLog> {
        None
    }

    /// Calls `visit` with each stored record from position `from` on, in order,
    /// until the end of the log or until `visit` returns `false`.
    fn scan(&self, from: u64, visit: &mut dyn FnMut(u64, &[u8]) -> bool) -> Result<(), StoreError>;

    /// The stored record at `position`, if the log reaches it.
    fn read_at(&self, position: u64) -> Result<Option<Vec<u8>>, StoreError>;

    /// The version of the last record of each of `aggregate_ids`' streams
    /// at or before log position `as_of`, in order; 0 for a stream with
    /// none. Loading the read side asks it for every aggregate at once, so
    /// a backend whose every call is a round trip answers it in one.
    fn stream_versions(&self, aggregate_ids: &[&str], as_of: u64) -> Result<Vec<u64>, StoreError>;

    /// Calls `visit` with the position and record of each event of one
    /// aggregate's stream, in version order, until `visit` returns `false`.
    fn scan_stream(
        &self,
        aggregate_id: &str,
        visit: &mut dyn FnMut(u64, &[u8]) -> bool,
    ) -> Result<(), StoreError>;

    /// Every idempotency record, in key order. One whose position is past
    /// the head was left by an append that a crash cut short; the ledger
    /// removes those when it loads, with an append of no records whose
    /// `expired_tokens` name them.
    fn tokens(&self) -> Result<Entries, StoreError>;

    /// Calls `visit` with each idempotency record's key and value, in key
    /// order, stopping at its first error. A backend that can stream them
    /// does, so a start does not hold them all at once.
    fn visit_tokens(&self, visit: &mut TokenVisitor<'_>) -> Result<(), StoreError> {
        for (key, value) in self.tokens()? {
            visit(&key, &value)?;
        }
        Ok(())
    }

    /// Visits the idempotency records as [`visit_tokens`](Self::visit_tokens)
    /// does, removing each one `sweep` picks unless it changed since it was
    /// read (a command took its key anew), and says how many it removed;
    /// `None` when the backend removes none this way (the default), which
    /// leaves them to later appends. Not part of any append: for a log only
    /// this process appends to, whose records need no head check.
    fn sweep_tokens(&self, sweep: &mut TokenSweeper<'_>) -> Result<Option<usize>, StoreError> {
        self.visit_tokens(&mut |key, value| sweep(key, value).map(drop))?;
        Ok(None)
    }

    /// The idempotency record stored under `key`, whatever its position.
    /// The default visits them all: a backend that can look one up does.
    fn token(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let mut found = None;
        self.visit_tokens(&mut |stored, value| {
            if stored == key {
                found = Some(value.to_vec());
            }
            Ok(())
        })?;
        Ok(found)
    }

    /// Whether opening the store found writes past the head (an append a
    /// crash cut short): idempotency records past it may be stored too,
    /// and a start removes them before anything is written.
    fn cut_short(&self) -> bool {
        false
    }

    /// The stored records at `positions` that the log reaches, with their
    /// positions. A backend whose every call is a round trip answers it in
    /// one.
    fn read_many(&self, positions: &[u64]) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut records = Vec::with_capacity(positions.len());
        for position in positions {
            if let Some(bytes) = self.read_at(*position)? {
                records.push((*position, bytes));
            }
        }
        Ok(records)
    }
}

/// What the writer does with a log that several processes append to: take
/// turns with them, so a writer that lost a race cannot lose the next one,
/// and follow their appends.
pub trait SharedLog: Send + Sync {
    /// Waits until no other process can append before this one's next
    /// [`EventLog::write`], and returns the head then. The turn lasts until
    /// that write or [`end_turn`](Self::end_turn).
    fn take_turn(&self) -> Result<Head, StoreError>;

    /// [`EventLog::write`], except that a head other than the expected one
    /// is no error: the turn is taken (as by [`take_turn`](Self::take_turn))
    /// and the head returned, nothing written. One step for a backend that
    /// can lock the head where it found it moved.
    fn write_or_take_turn(&self, batch: &AppendBatch) -> Result<Option<Head>, StoreError>;

    /// Gives a turn back without writing.
    fn end_turn(&self) -> Result<(), StoreError>;

    /// A connection of its own that tells when anyone appended.
    fn watcher(&self) -> Result<Box<dyn Watcher>, StoreError>;

    /// Whether this process is the one replica that records the end of
    /// shares (see `app::sweep`): it holds that claim until its connection
    /// ends, and another replica takes it over then.
    fn claim_sweep(&self) -> Result<bool, StoreError>;
}

/// Conveniences over any [`EventLog`], so backends and wrappers implement
/// only the contract.
pub trait EventLogExt: EventLog {
    /// Writes a batch and returns once it is durable.
    fn append(&self, batch: &AppendBatch) -> Result<(), StoreError> {
        self.write(batch)?;
        self.flush()
    }

    /// Makes everything written so far durable.
    fn flush(&self) -> Result<(), StoreError> {
        self.flush_to_os()?;
        self.sync_to_disk()
    }

    /// [`EventLog::stream_versions`] of one stream.
    fn stream_version(&self, aggregate_id: &str, as_of: u64) -> Result<u64, StoreError> {
        Ok(self
            .stream_versions(&[aggregate_id], as_of)?
            .first()
            .copied()
            .unwrap_or(0))
    }
}

impl<T: EventLog + ?Sized> EventLogExt for T {}

/// Sees the appends of every process to a shared log.
pub trait Watcher: Send {
    /// The head now, read afresh.
    fn head(&mut self) -> Result<Head, StoreError>;

    /// Waits up to `timeout` for appends by anyone and returns the newest
    /// position they announced, or, when none did, the head's position
    /// read afresh. An announcement is only a wake-up: whoever acts on it
    /// reads the log.
    fn wait(&mut self, timeout: std::time::Duration) -> Result<u64, StoreError>;
}

/// Visits records from `from` on with a step that can fail; stops at the end
/// of the log, when `step` returns `Ok(false)`, or at its first error.
pub fn try_scan<E: From<StoreError>>(
    log: &dyn EventLog,
    from: u64,
    mut step: impl FnMut(u64, &[u8]) -> Result<bool, E>,
) -> Result<(), E> {
    let mut failure = None;
    log.scan(from, &mut |position, bytes| match step(position, bytes) {
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
    log: &dyn EventLog,
    aggregate_id: &str,
    mut step: impl FnMut(u64, &[u8]) -> Result<bool, E>,
) -> Result<(), E> {
    let mut failure = None;
    log.scan_stream(
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
