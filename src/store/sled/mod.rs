//! The embedded store on sled 0.34: one tree whose keys are laid out in
//! [`keys`]; per group commit, its writes in order with the head last
//! (which commits it), then one flush ([`durable`]).
//!
//! The stream index ([`stream_index`]) and the projections
//! ([`projections`]) are written apart from the appends, in bulk.

mod chunk;
mod durable;
mod keys;
mod mark;
mod projections;
mod recover;
mod release;
mod stream_index;
#[cfg(any(test, feature = "test-hooks"))]
mod testing;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use ::sled::Tree;

use self::chunk::{decoded_chunk_at, Chunk};
use self::durable::DurableDb;
use self::keys::{decode_head, encode_head, log_key, tagged, HEAD, TOKEN};
use self::release::Release;
use self::stream_index::StreamIndex;
use super::{
    AppendBatch, EncodedRecord, Entries, EventLog, Head, StoreError, TokenSweeper, TokenVisitor,
};

pub use self::chunk::CHUNK_RECORDS;
#[cfg(test)]
pub(crate) use self::durable::{BLOB_DIR, LOG_FILE};
#[cfg(test)]
pub(crate) use self::mark::MARK_FILE;
pub use self::release::Released;

/// The sled-backed event store.
pub struct SledStore {
    dir: PathBuf,
    cache_bytes: u64,
    /// The open database; `None` only while it is opened afresh after a
    /// failure (see [`recover`]).
    open: RwLock<Option<Arc<Handles>>>,
    /// Serializes appends, so the head and stream checks and the batch that
    /// follows them cannot interleave with another append of this process
    /// (sled's directory lock keeps other processes out).
    /// It also owns the compressor, whose context is reused between chunks.
    append_lock: Mutex<zstd::bulk::Compressor<'static>>,
    /// An append failed part way: chunks past the head may be left.
    tail_left: AtomicBool,
    /// In tests, the next append stops after this many writes.
    #[cfg(test)]
    write_cut_short: Mutex<Option<usize>>,
    /// Last, so it is dropped after every sled handle above: waits until
    /// sled has released the directory.
    release: Release,
}

impl From<::sled::Error> for StoreError {
    fn from(err: ::sled::Error) -> Self {
        match err {
            ::sled::Error::Corruption { .. } => StoreError::Corrupt(err.to_string()),
            // sled's own message says what failed.
            err => StoreError::backend("", err),
        }
    }
}

/// One opening of sled's database.
struct Handles {
    db: DurableDb,
    tree: Tree,
    /// Where each aggregate's records are.
    index: StreamIndex,
    /// Opening removed chunks past the head: an append a crash cut short,
    /// whose idempotency records may be stored past the head too.
    cut_short: bool,
}

impl Handles {
    /// Opens sled in `dir`, removing what an append a crash cut short left
    /// past the head, and brings the stream index up to the head.
    fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let config = ::sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            // Durability comes from the explicit flush after every batch; the
            // background flusher would only add writes.
            .flush_every_ms(None);
        // A store dropped earlier (by this process or another) has released
        // the directory (see [`release`]): a held lock is another live store.
        let db = DurableDb::new(open_sled(&config, dir)?, dir)?;
        let tree = db.sled().open_tree("ledger")?;
        let stored = read_head(&tree)?;
        mark::check(dir, &tree, stored)?;
        let head = stored.position;
        let left = chunk::remove_past(&tree, head)?;
        if left > 0 {
            db.flush()?;
            tracing::warn!(
                chunks = left,
                head,
                "removed chunks past the head: an append a crash or a write failure cut short"
            );
        }
        let index = StreamIndex::open(&db, &tree, head, |from, visit| {
            chunk::scan(&tree, from, &mut |position, record| {
                visit(position, record).map(|()| true)
            })
        })?;
        Ok(Self {
            db,
            tree,
            index,
            cut_short: left > 0,
        })
    }
}

impl SledStore {
    /// Opens (or creates) the store in `dir`. `cache_bytes` sizes sled's page cache.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let handles = Handles::open(dir, cache_bytes)?;
        let compressor = zstd::bulk::Compressor::new(chunk::ZSTD_LEVEL)
            .map_err(|e| StoreError::backend("cannot start zstd", e))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            cache_bytes,
            open: RwLock::new(Some(Arc::new(handles))),
            append_lock: Mutex::new(compressor),
            tail_left: AtomicBool::new(false),
            #[cfg(test)]
            write_cut_short: Mutex::new(None),
            release: Release::new(dir.join(durable::LOG_FILE)),
        })
    }

    /// The open database, or why there is none.
    fn handles(&self) -> Result<Arc<Handles>, StoreError> {
        self.open
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
            .ok_or_else(|| StoreError::failed("the store is being opened afresh after a failure"))
    }

    /// A handle that tells when this store has been dropped and sled has
    /// released its directory.
    pub fn released(&self) -> Released {
        self.release.watch()
    }

    /// How many of the next append's writes are made before it fails: all
    /// of them, except where a test cut it short.
    fn writes_allowed(&self) -> usize {
        #[cfg(test)]
        if let Some(count) = self.write_cut_short.lock().ok().and_then(|mut c| c.take()) {
            return count;
        }
        usize::MAX
    }

    /// An append's writes, in order: its chunks, its idempotency records,
    /// then the head. sled recovers its log in order, so after a crash the
    /// writes that survive are a prefix of them, and the head, written
    /// last, is what commits the append: anything past it is removed when
    /// the store opens (chunks) or the ledger loads (idempotency records).
    /// Unlike a batch, single writes do not make sled seal and write out
    /// its I/O buffer twice per append (once before the batch and once for
    /// its manifest): measured, that was a third of sled's I/O threads'
    /// time under `share`.
    fn append_writes(
        compressor: &mut zstd::bulk::Compressor<'static>,
        batch: &AppendBatch,
        last: &EncodedRecord,
    ) -> Result<Entries, StoreError> {
        let mut writes = Vec::new();
        for chunk in batch.records.chunks(CHUNK_RECORDS) {
            let records: Vec<&[u8]> = chunk.iter().map(|r| r.bytes.as_slice()).collect();
            writes.push((
                log_key(chunk[0].position).to_vec(),
                chunk::encode(compressor, &records)?,
            ));
        }
        for (key, value) in &batch.tokens {
            writes.push((tagged(TOKEN, key), value.clone()));
        }
        writes.push((
            HEAD.to_vec(),
            encode_head(&Head {
                position: last.position,
                hash: last.hash,
            }),
        ));
        Ok(writes)
    }

    fn lock(
        &self,
    ) -> Result<std::sync::MutexGuard<'_, zstd::bulk::Compressor<'static>>, StoreError> {
        self.append_lock
            .lock()
            .map_err(|_| StoreError::failed("the append lock is poisoned"))
    }
}

/// Opens sled. sled 0.34 panics, rather than fail, when its recovery meets
/// damaged bytes in its files ("tried to serialize Uninitialized" for a
/// zeroed stretch): that is named as damage.
fn open_sled(config: &::sled::Config, dir: &Path) -> Result<::sled::Db, StoreError> {
    let opened = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| config.open()));
    match opened {
        // sled locks its directory: another process has it open (sled
        // 0.34 says so only in its message).
        Ok(Err(::sled::Error::Io(err)))
            if err.to_string().starts_with("could not acquire lock on") =>
        {
            Err(StoreError::failed(format!(
                "another process holds {} (a server already running on it?): stop it, or \
                 give another --data-dir",
                dir.display()
            )))
        }
        Ok(opened) => Ok(opened?),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "no message".into());
            Err(StoreError::Corrupt(format!(
                "sled cannot recover its files in {}: they are damaged (sled stopped with \
                 \"{what}\"); restore the directory from a backup, or import an export into \
                 a new one (audit import)",
                dir.display()
            )))
        }
    }
}

/// The stored head; the empty log's when there is none.
fn read_head(tree: &Tree) -> Result<Head, StoreError> {
    match tree.get(HEAD)? {
        Some(bytes) => decode_head(&bytes),
        None => Ok(Head::default()),
    }
}

impl EventLog for SledStore {
    fn head(&self) -> Result<Head, StoreError> {
        read_head(&self.handles()?.tree)
    }

    fn write(&self, batch: &AppendBatch) -> Result<(), StoreError> {
        let mut compressor = self.lock()?;
        let handles = self.handles()?;
        let head = read_head(&handles.tree)?;
        if head != batch.expected_head {
            return Err(StoreError::Conflict {
                expected: batch.expected_head.position,
                found: head.position,
            });
        }
        let Some(last) = batch.records.last() else {
            for key in &batch.expired_tokens {
                handles.tree.remove(tagged(TOKEN, key))?;
            }
            return Ok(());
        };
        if self.tail_left.load(Ordering::SeqCst) {
            chunk::remove_past(&handles.tree, head.position)?;
            self.tail_left.store(false, Ordering::SeqCst);
        }
        let writes = Self::append_writes(&mut compressor, batch, last)?;
        // Expired idempotency records go first: a token of this batch may
        // take one's key anew. Removing them is no part of the append (a
        // crash may keep any of it): they are dropped when loaded anyway.
        for key in &batch.expired_tokens {
            handles.tree.remove(tagged(TOKEN, key))?;
        }
        let (all, allowed) = (writes.len(), self.writes_allowed());
        for (key, value) in writes.into_iter().take(allowed) {
            if let Err(err) = handles.tree.insert(key, value) {
                // What got written is past the head: no reader sees it, and
                // the next append removes it first.
                self.tail_left.store(true, Ordering::SeqCst);
                return Err(err.into());
            }
        }
        if allowed < all {
            self.tail_left.store(true, Ordering::SeqCst);
            return Err(StoreError::failed(format!(
                "the append was cut short after {allowed} of its {all} writes"
            )));
        }
        handles.index.queue(
            batch
                .records
                .iter()
                .map(|r| (r.aggregate_id.as_str(), r.aggregate_version, r.position)),
        );
        Ok(())
    }

    fn flush_to_os(&self) -> Result<(), StoreError> {
        self.handles()?.db.flush_to_os()
    }

    fn sync_to_disk(&self) -> Result<(), StoreError> {
        self.handles()?.db.sync_to_disk()
    }

    fn recover(&self) -> Result<(), StoreError> {
        recover::recover(self)
    }

    fn scan(&self, from: u64, visit: &mut dyn FnMut(u64, &[u8]) -> bool) -> Result<(), StoreError> {
        // Records past the head (of an append that failed part way) are
        // not part of the log.
        let handles = self.handles()?;
        let head = read_head(&handles.tree)?.position;
        chunk::scan(&handles.tree, from, &mut |position, record| {
            Ok(position <= head && visit(position, record))
        })
    }

    fn read_at(&self, position: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let handles = self.handles()?;
        if position > read_head(&handles.tree)?.position {
            return Ok(None);
        }
        Ok(decoded_chunk_at(&handles.tree, position)?
            .and_then(|chunk| chunk.record(position).map(<[u8]>::to_vec)))
    }

    fn stream_versions(&self, aggregate_ids: &[&str], as_of: u64) -> Result<Vec<u64>, StoreError> {
        let handles = self.handles()?;
        aggregate_ids
            .iter()
            .map(|id| handles.index.version_at(id, as_of))
            .collect()
    }

    fn scan_stream(
        &self,
        aggregate_id: &str,
        visit: &mut dyn FnMut(u64, &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        // Records of one stream often share a chunk: keep the last one.
        let mut last: Option<Chunk> = None;
        let handles = self.handles()?;
        handles.index.positions(aggregate_id, &mut |position| {
            let chunk = match last.take() {
                Some(chunk) if chunk.record(position).is_some() => Some(chunk),
                _ => decoded_chunk_at(&handles.tree, position)?,
            };
            let Some(record) = chunk.as_ref().and_then(|chunk| chunk.record(position)) else {
                return Err(StoreError::Corrupt(format!(
                    "stream {aggregate_id} points at position {position}, which is not in the log"
                )));
            };
            let more = visit(position, record);
            last = chunk;
            Ok(more)
        })
    }

    fn tokens(&self) -> Result<Entries, StoreError> {
        scan_tagged(&self.handles()?.tree, TOKEN, b"")
    }

    fn token(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self
            .handles()?
            .tree
            .get(tagged(TOKEN, key))?
            .map(|value| value.to_vec()))
    }

    fn cut_short(&self) -> bool {
        // Unknown while reopening: as if it were.
        self.handles().map_or(true, |handles| handles.cut_short)
    }

    fn sweep_tokens(&self, sweep: &mut TokenSweeper<'_>) -> Result<Option<usize>, StoreError> {
        let tree = &self.handles()?.tree;
        let mut removed = 0;
        for entry in tree.scan_prefix([TOKEN]) {
            let (key, value) = entry?;
            if sweep(&key[1..], &value)? {
                let unchanged: Option<&[u8]> = Some(&value);
                if tree
                    .compare_and_swap(&key, unchanged, None::<&[u8]>)?
                    .is_ok()
                {
                    removed += 1;
                }
            }
        }
        Ok(Some(removed))
    }

    fn visit_tokens(&self, visit: &mut TokenVisitor<'_>) -> Result<(), StoreError> {
        for entry in self.handles()?.tree.scan_prefix([TOKEN]) {
            let (key, value) = entry?;
            visit(&key[1..], &value)?;
        }
        Ok(())
    }

    fn read_many(&self, positions: &[u64]) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let handles = self.handles()?;
        let head = read_head(&handles.tree)?.position;
        // Positions close together often share a chunk: keep the last one.
        let mut last: Option<Chunk> = None;
        let mut records = Vec::with_capacity(positions.len());
        for &position in positions.iter().filter(|p| **p <= head) {
            let chunk = match last.take() {
                Some(chunk) if chunk.record(position).is_some() => Some(chunk),
                _ => decoded_chunk_at(&handles.tree, position)?,
            };
            if let Some(record) = chunk.as_ref().and_then(|chunk| chunk.record(position)) {
                records.push((position, record.to_vec()));
            }
            last = chunk;
        }
        Ok(records)
    }
}

/// Every entry under `tag` whose key continues with `prefix`, the tag cut off.
fn scan_tagged(tree: &Tree, tag: u8, prefix: &[u8]) -> Result<Entries, StoreError> {
    tree.scan_prefix(tagged(tag, prefix))
        .map(|entry| {
            let (key, value) = entry?;
            Ok((key[1..].to_vec(), value.to_vec()))
        })
        .collect()
}
