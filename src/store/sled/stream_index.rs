//! The sled store's stream index: where each aggregate's events are in the
//! log, so one image's history is read without scanning the log.
//!
//! It is derived from the log, so it is not written with each append:
//! appends queue their entries here, and a worker thread writes them in bulk
//! (after [`MAX_AGE`] or once [`MAX_QUEUED`] are queued, and when the store
//! closes). Each bulk write stores the positions of the runs of versions it
//! covers, on the end of each aggregate's last key while that stays short
//! ([`MAX_KEY_POSITIONS`]), else under a key of their own:
//!
//! `v` aggregate id `\0` first version → the positions of that version and
//! the ones after it, consecutively (see [`super::keys`])
//!
//! one key at a time (a sled batch would hold every append up while it
//! applies), and last `zv`: the position up to which the index is
//! complete. The worker then flushes: left to the next append's flush, the
//! megabyte or so of a bulk write held that flush up by 50 to 230 ms.
//!
//! At start sled replays its log in order and stops at the first torn or
//! corrupt message (sled 0.34's `LogIter`), and the worker only writes
//! entries whose records were written before, so after a crash the index is
//! complete up to `zv`, and the records after it are indexed again when the
//! store opens ([`StreamIndex::open`]: read, queued, and written by the
//! worker like any). Indexing a record twice stores the
//! same position for its version again (in the same key, or in a later one
//! whose versions overlap the key before); readers skip versions they have
//! seen.
//!
//! Until the worker has written them, queued entries answer from memory, so
//! readers see every appended record at once.
//!
//! Why: a key per event is a new key in sled's B-tree, and sled splits its
//! 16-entry leaves every few inserts; skipping those inserts cut the
//! server's CPU per share by about a fifth. Packed per aggregate and
//! written off the append path and gathered into the aggregate's last key,
//! the same index costs about one key per aggregate.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ::sled::Tree;

use super::durable::DurableDb;
use super::keys::{decode_u64, stream_first_version, stream_key, stream_prefix, INDEXED};
use crate::deferred::{Deferred, Shared};
use crate::store::StoreError;

/// Queued entries are written after at most this long.
pub const MAX_AGE: Duration = Duration::from_secs(10);
/// Queued entries are written once this many are queued.
pub const MAX_QUEUED: usize = 262_144;

/// Where a stored record belongs (the rest of it is not read).
#[derive(serde::Deserialize)]
struct Located {
    aggregate_id: String,
    aggregate_version: u64,
}

/// One stream's entries: (version, position), in order.
type Stream = Vec<(u64, u64)>;

/// Entries of one bulk write, by aggregate.
#[derive(Debug, Default, Clone)]
struct Entries {
    /// With a fast hasher: every appended record is looked up here.
    streams: HashMap<String, Stream, foldhash::fast::RandomState>,
    count: usize,
    /// The last position they cover.
    last: u64,
}

impl Entries {
    fn push(&mut self, aggregate_id: &str, version: u64, position: u64) {
        match self.streams.get_mut(aggregate_id) {
            Some(stream) => stream.push((version, position)),
            None => {
                self.streams
                    .insert(aggregate_id.to_owned(), vec![(version, position)]);
            }
        }
        self.count += 1;
        self.last = self.last.max(position);
    }
}

#[derive(Debug, Default)]
struct Pending {
    /// Appended, not yet being written.
    queued: Entries,
    /// When the oldest queued entry came.
    since: Option<Instant>,
    /// Being written by the worker.
    writing: Arc<Entries>,
    /// The store is closing: write everything and stop.
    stop: bool,
}

impl crate::deferred::Waiting for Pending {
    fn since(&self) -> Option<Instant> {
        self.since
    }

    fn due_now(&self) -> bool {
        self.stop || self.queued.count >= MAX_QUEUED
    }

    fn stop(&mut self) {
        self.stop = true;
    }
}

/// The stream index of one sled store.
pub struct StreamIndex {
    tree: Tree,
    deferred: Deferred<Pending>,
}

impl StreamIndex {
    /// Brings the index up to `head` (queueing the records after `zv` for
    /// the worker) and starts the worker. `scan` visits the stored
    /// records from a position on.
    pub fn open(
        db: &DurableDb,
        tree: &Tree,
        head: u64,
        scan: impl FnOnce(
            u64,
            &mut dyn FnMut(u64, &[u8]) -> Result<(), StoreError>,
        ) -> Result<(), StoreError>,
    ) -> Result<Self, StoreError> {
        let stored = tree.get(INDEXED)?;
        let complete = match &stored {
            Some(bytes) => decode_u64(bytes, "stream index position")?,
            None => 0,
        };
        let started = Instant::now();
        let mut missing = Entries::default();
        if complete < head {
            scan(complete + 1, &mut |position, bytes| {
                // Only where the record belongs is read: a damaged record
                // is for `audit verify` to report, not a reason to refuse
                // to open the store, so it is left out of the index.
                match serde_json::from_slice::<Located>(bytes) {
                    Ok(at) => missing.push(&at.aggregate_id, at.aggregate_version, position),
                    Err(err) => tracing::warn!(
                        position,
                        %err,
                        "a record does not say its stream; it is left out of the stream index"
                    ),
                }
                Ok(())
            })?;
            tracing::info!(
                from = complete + 1,
                records = missing.count,
                "indexing the records the stream index lacks"
            );
        }
        let mut pending = Pending::default();
        if missing.count > 0 {
            // Queued, not written here: the worker stores them as it does
            // any, and readers find them in the queue meanwhile. Gathered
            // into their streams' keys, the 74,247 records a SIGKILL left
            // unindexed took a second to write, and a start waited for it.
            missing.last = missing.last.max(head);
            tracing::debug!(
                records = missing.count,
                read_ms = started.elapsed().as_millis() as u64,
                "queued the records the stream index lacked"
            );
            pending.queued = missing;
            pending.since = Some(Instant::now());
        } else if stored.is_none() {
            tree.insert(INDEXED, &head.to_be_bytes())?;
            db.flush()?;
        }
        let (worker_tree, worker_db) = (tree.clone(), db.clone());
        let deferred = Deferred::start("ledger-index", pending, MAX_AGE, move |shared| {
            run(shared, &worker_tree, &worker_db)
        })
        .map_err(|e| StoreError::backend("cannot start the index thread", e))?;
        Ok(Self {
            tree: tree.clone(),
            deferred,
        })
    }

    /// Queues the entries of records just written to the tree.
    pub fn queue<'a>(&self, records: impl Iterator<Item = (&'a str, u64, u64)>) {
        let shared = self.deferred.shared();
        let mut pending = shared.lock();
        for (aggregate_id, version, position) in records {
            pending.queued.push(aggregate_id, version, position);
        }
        let first = pending.queued.count > 0 && pending.since.is_none();
        if first {
            // The worker sleeps while nothing waits: this starts its clock.
            pending.since = Some(Instant::now());
        }
        if first || pending.queued.count >= MAX_QUEUED {
            shared.notify();
        }
    }

    /// Calls `visit` with the position of each event of one stream, in
    /// version order, until it returns `false`.
    pub fn positions(
        &self,
        aggregate_id: &str,
        visit: &mut dyn FnMut(u64) -> Result<bool, StoreError>,
    ) -> Result<(), StoreError> {
        // Taken first, so an entry the worker stores meanwhile is in the
        // tree when the tree is read.
        let (writing, queued) = self.in_memory(aggregate_id);
        let mut next = 1u64;
        for entry in self.tree.scan_prefix(stream_prefix(aggregate_id)) {
            let (key, positions) = entry?;
            let first = stream_first_version(&key, aggregate_id)?;
            for (i, position) in positions.chunks(8).enumerate() {
                let version = first + i as u64;
                if version < next {
                    continue;
                }
                next = version + 1;
                if !visit(decode_u64(position, "stream index position")?)? {
                    return Ok(());
                }
            }
        }
        for (version, position) in writing.into_iter().chain(queued) {
            if version < next {
                continue;
            }
            next = version + 1;
            if !visit(position)? {
                return Ok(());
            }
        }
        Ok(())
    }

    /// The version of the last event of one stream at or before `as_of`.
    pub fn version_at(&self, aggregate_id: &str, as_of: u64) -> Result<u64, StoreError> {
        let (writing, queued) = self.in_memory(aggregate_id);
        let newest_in_memory = queued
            .iter()
            .rev()
            .chain(writing.iter().rev())
            .find(|(_, position)| *position <= as_of);
        if let Some((version, _)) = newest_in_memory {
            return Ok(*version);
        }
        for entry in self.tree.scan_prefix(stream_prefix(aggregate_id)).rev() {
            let (key, positions) = entry?;
            let first = stream_first_version(&key, aggregate_id)?;
            let mut found = None;
            for (i, position) in positions.chunks(8).enumerate() {
                if decode_u64(position, "stream index position")? <= as_of {
                    found = Some(first + i as u64);
                }
            }
            if let Some(version) = found {
                return Ok(version);
            }
        }
        Ok(0)
    }

    /// Forgets the queued entries, as a crash would.
    #[cfg(test)]
    pub fn lose_queued(&self) {
        let mut pending = self.deferred.shared().lock();
        pending.queued = Entries::default();
        pending.since = None;
    }

    /// The in-memory entries of one stream: those being written, then the
    /// queued ones.
    fn in_memory(&self, aggregate_id: &str) -> (Stream, Stream) {
        let pending = self.deferred.shared().lock();
        let of = |entries: &Entries| {
            entries
                .streams
                .get(aggregate_id)
                .cloned()
                .unwrap_or_default()
        };
        (of(&pending.writing), of(&pending.queued))
    }
}

/// The worker: writes the queued entries when they are old or many enough,
/// and everything when the store closes.
fn run(shared: &Shared<Pending>, tree: &Tree, db: &DurableDb) {
    loop {
        let (writing, stop) = {
            let mut pending = shared.wait_due();
            let writing = Arc::new(std::mem::take(&mut pending.queued));
            pending.since = None;
            pending.writing = Arc::clone(&writing);
            (writing, pending.stop)
        };
        let written = if writing.count == 0 {
            Ok(())
        } else {
            let started = Instant::now();
            let written = write(tree, &writing).and_then(|()| db.flush());
            tracing::debug!(
                entries = writing.count,
                streams = writing.streams.len(),
                took_ms = started.elapsed().as_millis() as u64,
                "stored stream index entries"
            );
            written
        };
        let mut pending = shared.lock();
        match written {
            Ok(()) => pending.writing = Arc::default(),
            Err(err) => {
                // The entries stay readable and are written again later; a
                // restart would index their records from the log anyway.
                tracing::error!(%err, "writing the stream index failed; retrying later");
                pending.writing = Arc::default();
                let mut retry = Arc::try_unwrap(writing).unwrap_or_else(|shared| (*shared).clone());
                let queued = std::mem::take(&mut pending.queued);
                for (id, stream) in queued.streams {
                    for (version, position) in stream {
                        retry.push(&id, version, position);
                    }
                }
                pending.queued = retry;
                pending.since = Some(Instant::now());
            }
        }
        if stop {
            drop(pending);
            if let Err(err) = db.flush() {
                tracing::error!(%err, "flushing the stream index at close failed");
            }
            return;
        }
    }
}

/// The most positions a stored key gathers from several bulk writes (a
/// run longer than this in one bulk write is still stored whole).
pub const MAX_KEY_POSITIONS: usize = 64;

/// Writes `entries`, one key at a time, then records that the index is
/// complete up to `entries.last`. Each run of consecutive versions of one
/// stream goes onto the end of the stream's last key when it continues
/// that key and the key stays within [`MAX_KEY_POSITIONS`], else into a
/// key of its own. Single writes, unlike a sled batch, do not hold sled's
/// batch lock, so appends never wait behind more than one of them.
///
/// Why gather: a bulk write touches most streams once, so a key per run
/// made about one key per event in a long log, and sled spent some 240
/// bytes of disk on each of those 30-byte entries.
fn write(tree: &Tree, entries: &Entries) -> Result<(), StoreError> {
    let mut runs: Vec<(&str, u64, Vec<u8>)> = Vec::with_capacity(entries.streams.len());
    for (aggregate_id, stream) in &entries.streams {
        let mut run: Option<(u64, Vec<u8>)> = None;
        let mut expected = 0u64;
        for &(version, position) in stream {
            match &mut run {
                Some((_, positions)) if version == expected => {
                    positions.extend_from_slice(&position.to_be_bytes());
                }
                _ => {
                    if let Some((first, positions)) = run.take() {
                        runs.push((aggregate_id, first, positions));
                    }
                    run = Some((version, position.to_be_bytes().to_vec()));
                }
            }
            expected = version + 1;
        }
        if let Some((first, positions)) = run {
            runs.push((aggregate_id, first, positions));
        }
    }
    runs.sort_unstable();
    for (aggregate_id, first, positions) in runs {
        let (key, value) = gathered(tree, aggregate_id, first, positions)?;
        tree.insert(key, value)?;
    }
    tree.insert(INDEXED, &entries.last.to_be_bytes())?;
    Ok(())
}

/// The key and value that store `run`, the positions of one stream's
/// versions from `first` on: its last stored key with `run` in place of
/// what that key holds from `first` on, when the run starts inside the key
/// or just after it (inside: the records a crash left unindexed past `zv`
/// are indexed again, with the same positions) and the key stays short
/// enough; else a key of its own.
fn gathered(
    tree: &Tree,
    aggregate_id: &str,
    first: u64,
    run: Vec<u8>,
) -> Result<(Vec<u8>, Vec<u8>), StoreError> {
    if let Some(last) = tree.scan_prefix(stream_prefix(aggregate_id)).next_back() {
        let (key, stored) = last?;
        let start = stream_first_version(&key, aggregate_id)?;
        let held = (stored.len() / 8) as u64;
        if (start..=start + held).contains(&first) {
            let kept = (first - start) as usize * 8;
            if kept + run.len() <= MAX_KEY_POSITIONS * 8 {
                let mut value = Vec::with_capacity(kept + run.len());
                value.extend_from_slice(&stored[..kept]);
                value.extend_from_slice(&run);
                return Ok((key.to_vec(), value));
            }
        }
    }
    Ok((stream_key(aggregate_id, first), run))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entries(stream: &str, versions: std::ops::RangeInclusive<u64>) -> Entries {
        let mut entries = Entries::default();
        for version in versions {
            entries.push(stream, version, version * 10);
        }
        entries
    }

    /// Each key of one stream: its first version and how many positions it holds.
    fn keys(tree: &Tree, stream: &str) -> Vec<(u64, usize)> {
        tree.scan_prefix(stream_prefix(stream))
            .map(|entry| {
                let (key, value) = entry.expect("a stored entry");
                let first = stream_first_version(&key, stream).expect("a stream key");
                (first, value.len() / 8)
            })
            .collect()
    }

    fn tree() -> Tree {
        let db = ::sled::Config::new()
            .temporary(true)
            .open()
            .expect("a temporary sled");
        db.open_tree("ledger").expect("a tree")
    }

    #[test]
    fn bulk_writes_gather_a_stream_into_its_last_key_until_it_is_full() -> Result<(), StoreError> {
        let tree = tree();
        for bulk in 0..14u64 {
            write(&tree, &entries("img-a", bulk * 5 + 1..=bulk * 5 + 5))?;
        }
        write(&tree, &entries("img-b", 1..=3))?;
        assert_eq!(keys(&tree, "img-a"), vec![(1, 60), (61, 10)]);
        assert_eq!(keys(&tree, "img-b"), vec![(1, 3)]);
        // A run longer than a key's share is stored whole, in a key of its own.
        write(&tree, &entries("img-b", 4..=80))?;
        assert_eq!(keys(&tree, "img-b"), vec![(1, 3), (4, 77)]);
        Ok(())
    }

    #[test]
    fn indexing_records_again_after_a_crash_rewrites_the_same_positions_in_place(
    ) -> Result<(), StoreError> {
        let tree = tree();
        write(&tree, &entries("img-a", 1..=5))?;
        // Versions 3 to 5 were stored but `zv` was not: indexed again with 6 and 7.
        write(&tree, &entries("img-a", 3..=7))?;
        assert_eq!(keys(&tree, "img-a"), vec![(1, 7)]);
        let stored = tree.get(stream_key("img-a", 1))?.expect("the gathered key");
        let positions: Vec<u64> = stored
            .chunks(8)
            .map(|bytes| decode_u64(bytes, "position"))
            .collect::<Result<_, _>>()?;
        assert_eq!(positions, vec![10, 20, 30, 40, 50, 60, 70]);
        // A gap (a damaged record left out) starts a key of its own.
        write(&tree, &entries("img-a", 9..=9))?;
        assert_eq!(keys(&tree, "img-a"), vec![(1, 7), (9, 1)]);
        Ok(())
    }
}
