//! The embedded store on sled 0.34: one tree; per group commit, its writes
//! in order with the head last (which commits it), then one flush.
//!
//! Keys start with a one-byte tag, so each kind of entry is its own ordered
//! range (big-endian integers keep byte order equal to numeric order):
//!
//! | key | value |
//! |---|---|
//! | `l` first position (u64 BE) | a chunk: up to 64 consecutive records, compressed |
//! | `p` projection key | owned by the projection module |
//! | `t` account id `\0` token | idempotency record |
//! | `v` aggregate id `\0` first version (u64 BE) | positions (u64 BE each): the stream index |
//! | `zc` | projection checkpoint (u64 BE) |
//! | `zh` | head: position (u64 BE) and hash (32 bytes) |
//! | `zp` | the checkpoint a stepwise write of the projections is moving to (u64 BE); only while one runs, or after a crash cut one short |
//! | `zv` | the position up to which the stream index is stored (u64 BE) |
//!
//! The stream index and the projections are written apart from the
//! appends, in bulk (see [`super::stream_index`] and
//! [`EventStore::write_projections_in_steps`]).
//!
//! The head changes with every append (the checkpoint did too, before the
//! projections moved off the append path), so both sort last, beside the
//! small stream-index entries. sled keeps at most 16 entries in a
//! leaf and rewrites a leaf whole after every tenth change to it: had they
//! sorted first (as `h` and `c` did in earlier versions, which [`SledStore::open`]
//! moves), their leaf would also hold the oldest chunks, and every few appends
//! would rewrite tens of kilobytes of them.
//!
//! A chunk holds the records of one append (split every [`CHUNK_RECORDS`]),
//! joined by `\n` (a record is JSON without raw newlines) and compressed
//! with zstd as one frame: a format byte (`1`), the uncompressed length (u32
//! BE), then the frame. Records of one append compress together several
//! times over (their field names, ids and times repeat), and sled handles
//! one key per chunk instead of one per record. The records inside are
//! byte for byte what was hashed.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use sled::{Batch, IVec, Tree};

use super::durable::DurableDb;
use super::stream_index::StreamIndex;
use super::{AppendBatch, Entries, EventStore, Head, ProjectionOp, StoreError};

const HEAD_KEY: &[u8] = b"zh";
const CHECKPOINT_KEY: &[u8] = b"zc";
const PENDING_KEY: &[u8] = b"zp";
/// Where earlier versions kept the head and the checkpoint, and where they
/// are now.
const MOVED_KEYS: [(&[u8], &[u8]); 2] = [(b"h", HEAD_KEY), (b"c", CHECKPOINT_KEY)];

/// The most records one chunk holds.
pub const CHUNK_RECORDS: usize = 64;
/// The chunk format byte: records joined by newlines, one zstd frame.
const CHUNK_ZSTD: u8 = 1;
/// zstd level: the fastest levels already shrink a chunk several times.
const ZSTD_LEVEL: i32 = 1;

/// The sled-backed event store.
pub struct SledStore {
    db: DurableDb,
    tree: Tree,
    /// Serializes appends, so the head and stream checks and the batch that
    /// follows them cannot interleave with another append of this process
    /// (sled's directory lock keeps other processes out).
    /// It also owns the compressor, whose context is reused between chunks.
    append_lock: Mutex<zstd::bulk::Compressor<'static>>,
    /// Where each aggregate's records are.
    index: StreamIndex,
    dir: PathBuf,
    /// An append failed part way: chunks past the head may be left.
    tail_left: AtomicBool,
    /// In tests, the next append stops after this many writes.
    write_cut_short: Mutex<Option<usize>>,
}

/// An append's writes (a key, and its value or `None` to remove it), the
/// head last.
struct AppendWrites {
    writes: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    /// Written as one atomic batch rather than one after the other.
    atomic: bool,
}

/// Directories whose store this process dropped.
static CLOSED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn recently_closed(dir: &Path) -> bool {
    CLOSED
        .lock()
        .is_ok_and(|closed| closed.iter().any(|d| d == dir))
}

impl Drop for SledStore {
    fn drop(&mut self) {
        if let Ok(mut closed) = CLOSED.lock() {
            if !closed.contains(&self.dir) {
                closed.push(self.dir.clone());
            }
        }
    }
}

impl SledStore {
    /// Opens (or creates) the store in `dir`. `cache_bytes` sizes sled's page cache.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let config = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            // Durability comes from the explicit flush after every batch; the
            // background flusher would only add writes.
            .flush_every_ms(None);
        // sled's I/O threads can hold the directory lock for a while after a
        // store of this process is dropped: wait for them when this process
        // closed the directory itself; another process's lock fails fast.
        let closed_here = recently_closed(dir);
        let patience = if closed_here {
            std::time::Duration::from_secs(15)
        } else {
            std::time::Duration::from_millis(500)
        };
        let started = std::time::Instant::now();
        let db = loop {
            match config.open() {
                Ok(db) => break db,
                // sled reports a held lock as an I/O error of kind Other
                // whose message names the lock.
                Err(sled::Error::Io(err))
                    if err.to_string().contains("could not acquire lock")
                        && started.elapsed() < patience =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(20));
                }
                Err(err) => return Err(err.into()),
            }
        };
        let db = DurableDb::new(db, dir)?;
        let tree = db.sled().open_tree("ledger")?;
        move_keys(&db, &tree)?;
        let head = read_head(&tree)?.position;
        let left = remove_chunks_past(&tree, head)?;
        if left > 0 {
            db.flush()?;
            tracing::warn!(
                chunks = left,
                head,
                "removed chunks past the head: an append a crash cut short"
            );
        }
        let index = StreamIndex::open(&db, &tree, head, |from, visit| {
            scan_tree(&tree, from, &mut |position, record| {
                visit(position, record).map(|()| true)
            })
        })?;
        let compressor = zstd::bulk::Compressor::new(ZSTD_LEVEL)
            .map_err(|e| StoreError::Backend(format!("cannot start zstd: {e}")))?;
        Ok(Self {
            db,
            tree,
            append_lock: Mutex::new(compressor),
            index,
            dir: dir.to_path_buf(),
            tail_left: AtomicBool::new(false),
            write_cut_short: Mutex::new(None),
        })
    }

    /// How many of sled's blob files the flushes synced (see [`super::durable`]).
    #[cfg(test)]
    pub(super) fn synced_blob_files(&self) -> usize {
        self.db.synced_blob_files()
    }

    /// Rewrites one stored record in place, bypassing every check. Only for
    /// tests that prove tampering is detected.
    #[doc(hidden)]
    pub fn tamper_record(&self, position: u64, bytes: &[u8]) -> Result<(), StoreError> {
        let mut compressor = self.lock()?;
        let chunk = self
            .decoded_chunk_at(position)?
            .filter(|chunk| chunk.record(position).is_some())
            .ok_or_else(|| StoreError::Corrupt(format!("no record at position {position}")))?;
        let records: Vec<&[u8]> = chunk
            .records()
            .map(|(at, record)| if at == position { bytes } else { record })
            .collect();
        self.tree.insert(
            log_key(chunk.first),
            encode_chunk(&mut compressor, &records)?,
        )?;
        self.db.flush()?;
        Ok(())
    }

    /// Forgets the stream-index entries not yet stored, as a crash would.
    #[cfg(test)]
    pub(super) fn lose_queued_index(&self) {
        self.index.lose_queued();
    }

    /// Writes the first `count` of `ops` (all of them but in tests, which
    /// cut a write short that way) one by one, after recording the target
    /// checkpoint as pending; once all are written, moves the checkpoint
    /// and clears the pending one in one batch. Single writes, unlike a
    /// batch, do not hold sled's batch lock, so appends never wait behind
    /// more than one of them. sled recovers its log in order, so after a
    /// crash the writes that survive are a prefix of them.
    fn write_projection_steps(
        &self,
        ops: &[ProjectionOp],
        checkpoint: u64,
        count: usize,
    ) -> Result<(), StoreError> {
        if !ops.is_empty() {
            // An earlier write that stopped part way stays named: entries
            // past this one's progress may still hold its values.
            let mut pending = self.projection_pending()?;
            if pending.last() != Some(&checkpoint) {
                pending.push(checkpoint);
            }
            let bytes: Vec<u8> = pending.iter().flat_map(|p| p.to_be_bytes()).collect();
            self.tree.insert(PENDING_KEY, bytes)?;
        }
        for op in ops.iter().take(count) {
            let key = tagged(b'p', &op.key);
            match &op.value {
                Some(value) => self.tree.insert(key, value.as_slice())?,
                None => self.tree.remove(key)?,
            };
        }
        if count >= ops.len() {
            let mut last = Batch::default();
            last.insert(CHECKPOINT_KEY, &checkpoint.to_be_bytes());
            last.remove(PENDING_KEY);
            self.tree.apply_batch(last)?;
        }
        self.db.flush()?;
        Ok(())
    }

    /// A stepwise write of the projections that stops after `count` of
    /// `ops`, as a crash would.
    #[cfg(test)]
    pub(crate) fn write_projections_cut_short(
        &self,
        ops: &[ProjectionOp],
        checkpoint: u64,
        count: usize,
    ) -> Result<(), StoreError> {
        self.write_projection_steps(ops, checkpoint, count)
    }

    /// An append's writes. One that only extends the log (every append of
    /// the running ledger) is single writes in order: its chunks, its
    /// idempotency records, then the head. sled recovers its log in order,
    /// so after a crash the writes that survive are a prefix of them, and
    /// the head, written last, is what commits the append: anything past it
    /// is removed when the store opens (chunks) or the ledger loads
    /// (idempotency records). Unlike a batch, single writes do not make
    /// sled seal and write out its I/O buffer twice per append (once before
    /// the batch and once for its manifest): measured, that was a third of
    /// sled's I/O threads' time under `share`. An append that also writes
    /// the read side (an import) stays one atomic batch, since entries past
    /// the head would not be undone by a replay.
    fn append_writes(
        compressor: &mut zstd::bulk::Compressor<'static>,
        batch: &AppendBatch,
        last: &super::EncodedRecord,
    ) -> Result<AppendWrites, StoreError> {
        let mut writes = Vec::new();
        for chunk in batch.records.chunks(CHUNK_RECORDS) {
            let records: Vec<&[u8]> = chunk.iter().map(|r| r.bytes.as_slice()).collect();
            writes.push((
                log_key(chunk[0].position).to_vec(),
                Some(encode_chunk(compressor, &records)?),
            ));
        }
        for (key, value) in &batch.tokens {
            writes.push((tagged(b't', key), Some(value.clone())));
        }
        for op in &batch.projection {
            writes.push((tagged(b'p', &op.key), op.value.clone()));
        }
        if let Some(checkpoint) = batch.projection_checkpoint {
            writes.push((
                CHECKPOINT_KEY.to_vec(),
                Some(checkpoint.to_be_bytes().to_vec()),
            ));
        }
        writes.push((
            HEAD_KEY.to_vec(),
            Some(encode_head(&Head {
                position: last.position,
                hash: last.hash,
            })),
        ));
        let atomic = !batch.projection.is_empty() || batch.projection_checkpoint.is_some();
        Ok(AppendWrites { writes, atomic })
    }

    /// Applies an append's writes; in order, only the first `count` of them
    /// (then it fails).
    fn apply(
        &self,
        AppendWrites { writes, atomic }: AppendWrites,
        count: usize,
    ) -> Result<(), StoreError> {
        if atomic {
            let mut batch = Batch::default();
            for (key, value) in writes {
                match value {
                    Some(value) => batch.insert(key, value),
                    None => batch.remove(key),
                }
            }
            // After a crash either all of it is there or none.
            self.tree.apply_batch(batch)?;
            return Ok(());
        }
        let all = writes.len();
        for (key, value) in writes.into_iter().take(count) {
            match value {
                Some(value) => self.tree.insert(key, value)?,
                None => self.tree.remove(key)?,
            };
        }
        if count < all {
            return Err(StoreError::Backend(format!(
                "the append was cut short after {count} of its {all} writes"
            )));
        }
        Ok(())
    }

    /// Makes the next append write only its first `count` writes and then
    /// fail, as a crash part way would leave it (nothing is flushed).
    #[cfg(test)]
    pub(crate) fn cut_next_append_short(&self, count: usize) {
        if let Ok(mut cut) = self.write_cut_short.lock() {
            *cut = Some(count);
        }
    }

    /// The u64 stored under `key`, if any.
    fn stored_u64(&self, key: &[u8], what: &str) -> Result<Option<u64>, StoreError> {
        self.tree
            .get(key)?
            .map(|bytes| decode_u64(&bytes, what))
            .transpose()
    }

    fn lock(
        &self,
    ) -> Result<std::sync::MutexGuard<'_, zstd::bulk::Compressor<'static>>, StoreError> {
        self.append_lock
            .lock()
            .map_err(|_| StoreError::Backend("the append lock is poisoned".into()))
    }

    fn decoded_chunk_at(&self, position: u64) -> Result<Option<Chunk>, StoreError> {
        chunk_at(&self.tree, position)?
            .map(|(first, bytes)| Chunk::decode(first, &bytes))
            .transpose()
    }
}

/// Moves the head and the checkpoint of a store written by an earlier
/// version to their current keys, in one atomic, flushed batch.
fn move_keys(db: &DurableDb, tree: &Tree) -> Result<(), StoreError> {
    let mut writes = Batch::default();
    let mut moved = false;
    for (old, new) in MOVED_KEYS {
        if let Some(value) = tree.get(old)? {
            writes.insert(new, value);
            writes.remove(old);
            moved = true;
        }
    }
    if moved {
        tree.apply_batch(writes)?;
        db.flush()?;
        tracing::info!("moved the head and checkpoint of a store written by an earlier version to their current keys");
    }
    Ok(())
}

/// Removes the chunks past `head`: what an append that failed, or that a
/// crash cut short, left before it could write the head. Returns how many.
fn remove_chunks_past(tree: &Tree, head: u64) -> Result<usize, StoreError> {
    let mut removed = 0;
    for entry in tree.range(log_key(head.saturating_add(1))..=log_key(u64::MAX)) {
        let (key, _) = entry?;
        tree.remove(key)?;
        removed += 1;
    }
    Ok(removed)
}

/// A stored chunk, decompressed.
struct Chunk {
    first: u64,
    /// The records, joined by newlines.
    joined: Vec<u8>,
}

impl Chunk {
    fn decode(first: u64, stored: &[u8]) -> Result<Self, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("the chunk at {first} {what}"));
        if stored.len() < 5 || stored[0] != CHUNK_ZSTD {
            return Err(corrupt("has an unknown format"));
        }
        let length = u32::from_be_bytes([stored[1], stored[2], stored[3], stored[4]]) as usize;
        let joined = zstd::bulk::decompress(&stored[5..], length)
            .map_err(|e| corrupt(&format!("does not decompress: {e}")))?;
        if joined.len() != length {
            return Err(corrupt("has the wrong length"));
        }
        Ok(Self { first, joined })
    }

    /// Each record with its position, in order.
    fn records(&self) -> impl Iterator<Item = (u64, &[u8])> {
        (self.first..).zip(self.joined.split(|b| *b == b'\n'))
    }

    /// The record at `position`, if this chunk holds it.
    fn record(&self, position: u64) -> Option<&[u8]> {
        let index = usize::try_from(position.checked_sub(self.first)?).ok()?;
        self.joined.split(|b| *b == b'\n').nth(index)
    }
}

/// The chunk that would hold `position`, with its first position (it may
/// end before `position`).
fn chunk_at(tree: &Tree, position: u64) -> Result<Option<(u64, IVec)>, StoreError> {
    let Some(entry) = tree.range(log_key(0)..=log_key(position)).next_back() else {
        return Ok(None);
    };
    let (key, chunk) = entry?;
    Ok(Some((decode_u64(&key[1..], "log position")?, chunk)))
}

/// A visitor of records that can stop (`Ok(false)`) or fail.
type TryVisit<'a> = dyn FnMut(u64, &[u8]) -> Result<bool, StoreError> + 'a;

/// Visits the records from `from` on, until `visit` returns `Ok(false)` or fails.
fn scan_tree(tree: &Tree, from: u64, visit: &mut TryVisit<'_>) -> Result<(), StoreError> {
    // Start at the chunk holding `from`, which may begin before it.
    let start = match chunk_at(tree, from)? {
        Some((first, _)) => first,
        None => from,
    };
    for entry in tree.range(log_key(start)..=log_key(u64::MAX)) {
        let (key, stored) = entry?;
        let chunk = Chunk::decode(decode_u64(&key[1..], "log position")?, &stored)?;
        for (position, record) in chunk.records() {
            if position >= from && !visit(position, record)? {
                return Ok(());
            }
        }
    }
    Ok(())
}

fn put_projection_ops(writes: &mut Batch, ops: &[ProjectionOp]) {
    for op in ops {
        match &op.value {
            Some(value) => writes.insert(tagged(b'p', &op.key), value.as_slice()),
            None => writes.remove(tagged(b'p', &op.key)),
        }
    }
}

fn encode_chunk(
    compressor: &mut zstd::bulk::Compressor<'static>,
    records: &[&[u8]],
) -> Result<Vec<u8>, StoreError> {
    let mut joined = Vec::with_capacity(records.iter().map(|r| r.len() + 1).sum());
    for (i, record) in records.iter().enumerate() {
        if i > 0 {
            joined.push(b'\n');
        }
        joined.extend_from_slice(record);
    }
    let length = u32::try_from(joined.len())
        .map_err(|_| StoreError::Backend("a chunk is over 4 GiB".into()))?;
    let frame = compressor
        .compress(&joined)
        .map_err(|e| StoreError::Backend(format!("zstd compression failed: {e}")))?;
    let mut out = Vec::with_capacity(5 + frame.len());
    out.push(CHUNK_ZSTD);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&frame);
    Ok(out)
}

fn encode_head(head: &Head) -> Vec<u8> {
    let mut out = Vec::with_capacity(40);
    out.extend_from_slice(&head.position.to_be_bytes());
    out.extend_from_slice(&head.hash);
    out
}

/// The stored head; the empty log's when there is none.
fn read_head(tree: &Tree) -> Result<Head, StoreError> {
    match tree.get(HEAD_KEY)? {
        Some(bytes) => decode_head(&bytes),
        None => Ok(Head::default()),
    }
}

fn decode_head(bytes: &[u8]) -> Result<Head, StoreError> {
    if bytes.len() != 40 {
        return Err(StoreError::Corrupt("the stored head is malformed".into()));
    }
    let mut position = [0u8; 8];
    position.copy_from_slice(&bytes[..8]);
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&bytes[8..]);
    Ok(Head {
        position: u64::from_be_bytes(position),
        hash,
    })
}

fn decode_u64(bytes: &[u8], what: &str) -> Result<u64, StoreError> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("the stored {what} is malformed")))?;
    Ok(u64::from_be_bytes(array))
}

fn tagged(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + body.len());
    key.push(tag);
    key.extend_from_slice(body);
    key
}

fn log_key(position: u64) -> [u8; 9] {
    let mut key = [b'l'; 9];
    key[1..].copy_from_slice(&position.to_be_bytes());
    key
}

impl EventStore for SledStore {
    fn head(&self) -> Result<Head, StoreError> {
        read_head(&self.tree)
    }

    fn append(&self, batch: &AppendBatch) -> Result<(), StoreError> {
        self.append_unflushed(batch)?;
        self.flush()
    }

    fn flush_to_os(&self) -> Result<(), StoreError> {
        self.db.flush_to_os()
    }

    fn sync_to_disk(&self) -> Result<(), StoreError> {
        self.db.sync_to_disk()
    }

    fn append_unflushed(&self, batch: &AppendBatch) -> Result<(), StoreError> {
        let Some(last) = batch.records.last() else {
            return Ok(());
        };
        let mut compressor = self.lock()?;
        let head = self.head()?;
        if head != batch.expected_head {
            return Err(StoreError::Conflict(format!(
                "the log head is at position {}, the batch expected {}",
                head.position, batch.expected_head.position
            )));
        }
        if self.tail_left.load(Ordering::SeqCst) {
            remove_chunks_past(&self.tree, head.position)?;
            self.tail_left.store(false, Ordering::SeqCst);
        }
        let writes = Self::append_writes(&mut compressor, batch, last)?;
        let count = self
            .write_cut_short
            .lock()
            .ok()
            .and_then(|mut cut| cut.take());
        if let Err(err) = self.apply(writes, count.unwrap_or(usize::MAX)) {
            // What got written is past the head: no reader sees it, and the
            // next append removes it first.
            self.tail_left.store(true, Ordering::SeqCst);
            return Err(err);
        }
        self.index.queue(
            batch
                .records
                .iter()
                .map(|r| (r.aggregate_id.as_str(), r.aggregate_version, r.position)),
        );
        Ok(())
    }

    fn scan(&self, from: u64, visit: &mut dyn FnMut(u64, &[u8]) -> bool) -> Result<(), StoreError> {
        // Records past the head (of an append that failed part way) are
        // not part of the log.
        let head = self.head()?.position;
        scan_tree(&self.tree, from, &mut |position, record| {
            Ok(position <= head && visit(position, record))
        })
    }

    fn read_at(&self, position: u64) -> Result<Option<Vec<u8>>, StoreError> {
        if position > self.head()?.position {
            return Ok(None);
        }
        Ok(self
            .decoded_chunk_at(position)?
            .and_then(|chunk| chunk.record(position).map(<[u8]>::to_vec)))
    }

    fn stream_version(&self, aggregate_id: &str, as_of: u64) -> Result<u64, StoreError> {
        self.index.version_at(aggregate_id, as_of)
    }

    fn scan_stream(
        &self,
        aggregate_id: &str,
        visit: &mut dyn FnMut(u64, &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        // Records of one stream often share a chunk: keep the last one.
        let mut last: Option<Chunk> = None;
        self.index.positions(aggregate_id, &mut |position| {
            let chunk = match last.take() {
                Some(chunk) if chunk.record(position).is_some() => Some(chunk),
                _ => self.decoded_chunk_at(position)?,
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

    fn projection_checkpoint(&self) -> Result<Option<u64>, StoreError> {
        self.stored_u64(CHECKPOINT_KEY, "projection checkpoint")
    }

    fn projection_scan(&self, prefix: &[u8]) -> Result<Entries, StoreError> {
        self.tree
            .scan_prefix(tagged(b'p', prefix))
            .map(|entry| {
                let (key, value) = entry?;
                Ok((key[1..].to_vec(), value.to_vec()))
            })
            .collect()
    }

    fn write_projections(&self, ops: &[ProjectionOp], checkpoint: u64) -> Result<(), StoreError> {
        // No append lock: these keys are disjoint from the log's, and the
        // batch is atomic on its own.
        let mut writes = Batch::default();
        put_projection_ops(&mut writes, ops);
        writes.insert(CHECKPOINT_KEY, &checkpoint.to_be_bytes());
        writes.remove(PENDING_KEY);
        self.tree.apply_batch(writes)?;
        self.db.flush()?;
        Ok(())
    }

    fn write_projections_in_steps(
        &self,
        ops: &[ProjectionOp],
        checkpoint: u64,
    ) -> Result<(), StoreError> {
        self.write_projection_steps(ops, checkpoint, usize::MAX)
    }

    fn projection_pending(&self) -> Result<Vec<u64>, StoreError> {
        let Some(bytes) = self.tree.get(PENDING_KEY)? else {
            return Ok(Vec::new());
        };
        if bytes.is_empty() || bytes.len() % 8 != 0 {
            return Err(StoreError::Corrupt(
                "the stored pending projection checkpoints are malformed".into(),
            ));
        }
        bytes
            .chunks(8)
            .map(|p| decode_u64(p, "pending projection checkpoint"))
            .collect()
    }

    fn replace_projections(&self, ops: &[ProjectionOp], checkpoint: u64) -> Result<(), StoreError> {
        let _guard = self.lock()?;
        // The checkpoint goes first and comes back last: a crash part way
        // leaves none, and a store without one is rebuilt from the log.
        self.tree.remove(CHECKPOINT_KEY)?;
        self.db.flush()?;
        let mut clear = Batch::default();
        clear.remove(PENDING_KEY);
        for entry in self.tree.scan_prefix(b"p") {
            let (key, _) = entry?;
            clear.remove(key);
        }
        self.tree.apply_batch(clear)?;
        let mut writes = Batch::default();
        for op in ops {
            if let Some(value) = &op.value {
                writes.insert(tagged(b'p', &op.key), value.as_slice());
            }
        }
        self.tree.apply_batch(writes)?;
        self.db.flush()?;
        self.tree
            .insert(CHECKPOINT_KEY, &checkpoint.to_be_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    fn remove_tokens(&self, keys: &[Vec<u8>]) -> Result<(), StoreError> {
        for key in keys {
            self.tree.remove(tagged(b't', key))?;
        }
        self.db.flush()?;
        Ok(())
    }

    fn tokens(&self) -> Result<Entries, StoreError> {
        self.tree
            .scan_prefix(b"t")
            .map(|entry| {
                let (key, value) = entry?;
                Ok((key[1..].to_vec(), value.to_vec()))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::next_batch;

    #[test]
    fn a_store_of_an_earlier_version_keeps_its_head_and_checkpoint(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let head = Head {
            position: 7,
            hash: [9; 32],
        };
        {
            let store = SledStore::open(dir.path(), 1 << 20)?;
            store.tree.insert(b"h", encode_head(&head))?;
            store.tree.insert(b"c", &5u64.to_be_bytes())?;
            store.flush()?;
            assert_eq!(store.head()?, Head::default());
        }
        let store = SledStore::open(dir.path(), 1 << 20)?;
        assert_eq!(store.head()?, head);
        assert_eq!(store.projection_checkpoint()?, Some(5));
        assert_eq!(store.tree.get(b"h")?, None);
        assert_eq!(store.tree.get(b"c")?, None);
        Ok(())
    }

    fn all_records(store: &SledStore) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let mut records = Vec::new();
        store.scan(1, &mut |position, record| {
            records.push((position, record.to_vec()));
            true
        })?;
        Ok(records)
    }

    fn chunks_past(store: &SledStore, position: u64) -> usize {
        store
            .tree
            .range(log_key(position + 1)..=log_key(u64::MAX))
            .count()
    }

    #[test]
    fn an_append_cut_short_before_its_head_is_not_in_the_log_and_is_removed(
    ) -> Result<(), Box<dyn std::error::Error>> {
        // Two chunks (70 records), two idempotency records, then the head.
        const WRITES: usize = 5;
        for written in 0..WRITES {
            let dir = tempfile::tempdir()?;
            let (mut head, mut versions) = (Head::default(), [0; 5]);
            let before = {
                let store = SledStore::open(dir.path(), 1 << 20)?;
                store.append(&next_batch(&mut head, &mut versions, 3)?)?;
                let before = all_records(&store)?;
                let mut cut = next_batch(&mut head.clone(), &mut versions.clone(), 70)?;
                cut.tokens = vec![
                    (b"1001\0a".to_vec(), b"{}".to_vec()),
                    (b"1001\0b".to_vec(), b"{}".to_vec()),
                ];
                store.cut_next_append_short(written);
                assert!(store.append(&cut).is_err());
                // What it wrote is past the head: no reader sees it.
                assert_eq!(store.head()?, head, "{written} written");
                assert_eq!(all_records(&store)?, before, "{written} written");
                assert_eq!(store.read_at(head.position + 1)?, None);
                // Made durable by some later flush, then a crash.
                store.flush()?;
                before
            };
            let store = SledStore::open(dir.path(), 1 << 20)?;
            assert_eq!(store.head()?, head, "{written} written");
            assert_eq!(all_records(&store)?, before, "{written} written");
            // Its chunks are gone; its idempotency records are the ledger's
            // to remove (it knows their positions).
            assert_eq!(chunks_past(&store, head.position), 0, "{written} written");
            assert_eq!(store.tokens()?.len(), written.saturating_sub(2).min(2));
            // A shorter append in its place reads back whole.
            let next = next_batch(&mut head, &mut versions, 5)?;
            store.append(&next)?;
            let mut expected = before.clone();
            expected.extend(next.records.iter().map(|r| (r.position, r.bytes.clone())));
            assert_eq!(all_records(&store)?, expected, "{written} written");
        }
        Ok(())
    }

    #[test]
    fn the_append_after_one_that_failed_part_way_removes_what_it_left(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let store = SledStore::open(dir.path(), 1 << 20)?;
        let (mut head, mut versions) = (Head::default(), [0; 5]);
        store.append(&next_batch(&mut head, &mut versions, 3)?)?;
        // Both chunks written, not the head.
        store.cut_next_append_short(2);
        let failed = next_batch(&mut head.clone(), &mut versions.clone(), 70)?;
        assert!(store.append(&failed).is_err());
        assert_eq!(chunks_past(&store, head.position), 2);
        // Five records in its place: the failed append's second chunk (at
        // 68) would otherwise sit in the middle of the next ones.
        store.append(&next_batch(&mut head, &mut versions, 5)?)?;
        assert_eq!(chunks_past(&store, head.position), 0);
        store.append(&next_batch(&mut head, &mut versions, 70)?)?;
        let positions: Vec<u64> = all_records(&store)?.iter().map(|(p, _)| *p).collect();
        assert_eq!(positions, (1..=78).collect::<Vec<u64>>());
        Ok(())
    }

    fn ops(n: usize) -> Vec<ProjectionOp> {
        (0..n)
            .map(|i| ProjectionOp {
                key: format!("s{i:04}").into_bytes(),
                value: Some(b"v".to_vec()),
            })
            .collect()
    }

    #[test]
    fn a_stepwise_projection_write_cut_short_leaves_a_prefix_and_names_its_target(
    ) -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let ops = ops(600);
        {
            let store = SledStore::open(dir.path(), 1 << 20)?;
            store.write_projections(&[], 3)?;
            store.write_projections_cut_short(&ops, 9, 512)?;
        }
        // As a crash leaves it: 512 writes in, the old checkpoint, the target named.
        let store = SledStore::open(dir.path(), 1 << 20)?;
        assert_eq!(store.projection_checkpoint()?, Some(3));
        assert_eq!(store.projection_pending()?, vec![9]);
        let stored: Vec<Vec<u8>> = store
            .projection_scan(b"")?
            .into_iter()
            .map(|(key, _)| key)
            .collect();
        let prefix: Vec<Vec<u8>> = ops[..512].iter().map(|op| op.key.clone()).collect();
        assert_eq!(stored, prefix);

        // A later write that stops part way too is named after it, once
        // however often it is retried.
        store.write_projections_cut_short(&ops, 11, 3)?;
        store.write_projections_cut_short(&ops, 11, 2)?;
        assert_eq!(store.projection_pending()?, vec![9, 11]);
        assert_eq!(store.projection_checkpoint()?, Some(3));

        // A whole stepwise write moves the checkpoint and clears the target.
        store.write_projections_in_steps(&ops, 9)?;
        assert_eq!(store.projection_checkpoint()?, Some(9));
        assert_eq!(store.projection_pending()?, Vec::<u64>::new());
        assert_eq!(store.projection_scan(b"")?.len(), ops.len());

        // So does an atomic write after a cut-short one, and a rebuild.
        store.write_projections_cut_short(&ops, 12, 1)?;
        assert_eq!(store.projection_pending()?, vec![12]);
        store.write_projections(&[], 12)?;
        assert_eq!(store.projection_pending()?, Vec::<u64>::new());
        store.write_projections_cut_short(&ops, 15, 1)?;
        store.replace_projections(&[], 15)?;
        assert_eq!(store.projection_pending()?, Vec::<u64>::new());
        assert_eq!(store.projection_checkpoint()?, Some(15));
        Ok(())
    }

    #[test]
    fn a_stream_index_of_an_earlier_version_reads_as_one_position_per_key(
    ) -> Result<(), Box<dyn std::error::Error>> {
        use crate::store::stream_index::COMPLETE_KEY;
        let dir = tempfile::tempdir()?;
        {
            // Earlier versions: one key per event, no `zv`.
            let store = SledStore::open(dir.path(), 1 << 20)?;
            for (version, position) in [(1u64, 3u64), (2, 7), (3, 9)] {
                let mut key = b"vimg-00000001\0".to_vec();
                key.extend_from_slice(&version.to_be_bytes());
                store.tree.insert(key, &position.to_be_bytes())?;
            }
            let head = Head {
                position: 9,
                hash: [1; 32],
            };
            store.tree.insert(HEAD_KEY, encode_head(&head))?;
            store.tree.remove(COMPLETE_KEY)?;
            store.flush()?;
        }
        let store = SledStore::open(dir.path(), 1 << 20)?;
        assert_eq!(store.stream_version("img-00000001", 2)?, 0);
        assert_eq!(store.stream_version("img-00000001", 8)?, 2);
        assert_eq!(store.stream_version("img-00000001", 9)?, 3);
        assert_eq!(store.stream_version("img-00000002", 9)?, 0);
        // The whole log counts as indexed.
        assert_eq!(
            store.tree.get(COMPLETE_KEY)?.as_deref(),
            Some(&9u64.to_be_bytes()[..])
        );
        Ok(())
    }
}
