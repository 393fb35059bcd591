//! The embedded store on sled 0.34: three trees written in one transaction
//! per batch, then one flush.
//!
//! - `log`: position (u64 big-endian, so byte order is log order) → record.
//! - `index`: `h` → head; `s<stream>` → stream version; `v<stream>\0<version>`
//!   → position; `t<token key>` → idempotency record.
//! - `proj`: `c` → projection checkpoint; the rest is owned by the projection module.

use std::path::Path;

use sled::transaction::{ConflictableTransactionError, TransactionError};
use sled::{Db, Transactional, Tree};

use super::{AppendBatch, Entries, EventStore, Head, ProjectionOp, StoreError};

const HEAD_KEY: &[u8] = b"h";
const CHECKPOINT_KEY: &[u8] = b"c";

/// The sled-backed event store.
pub struct SledStore {
    db: Db,
    log: Tree,
    index: Tree,
    proj: Tree,
}

impl SledStore {
    /// Opens (or creates) the store in `dir`. `cache_bytes` sizes sled's page cache.
    pub fn open(dir: &Path, cache_bytes: u64) -> Result<Self, StoreError> {
        let db = sled::Config::new()
            .path(dir)
            .cache_capacity(cache_bytes)
            // Durability comes from the explicit flush after every batch; the
            // background flusher would only add writes.
            .flush_every_ms(None)
            .open()?;
        let log = db.open_tree("log")?;
        let index = db.open_tree("index")?;
        let proj = db.open_tree("proj")?;
        Ok(Self {
            db,
            log,
            index,
            proj,
        })
    }

    /// Rewrites one stored record in place, bypassing every check. Only for
    /// tests that prove tampering is detected.
    #[doc(hidden)]
    pub fn tamper_record(&self, position: u64, bytes: &[u8]) -> Result<(), StoreError> {
        self.log.insert(position.to_be_bytes(), bytes)?;
        self.db.flush()?;
        Ok(())
    }
}

fn encode_head(head: &Head) -> Vec<u8> {
    let mut out = Vec::with_capacity(40);
    out.extend_from_slice(&head.position.to_be_bytes());
    out.extend_from_slice(&head.hash);
    out
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

fn stream_key(stream: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + stream.len());
    key.push(b's');
    key.extend_from_slice(stream.as_bytes());
    key
}

fn version_key(stream: &str, version: u64) -> Vec<u8> {
    let mut key = Vec::with_capacity(10 + stream.len());
    key.push(b'v');
    key.extend_from_slice(stream.as_bytes());
    key.push(0);
    key.extend_from_slice(&version.to_be_bytes());
    key
}

fn token_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + key.len());
    out.push(b't');
    out.extend_from_slice(key);
    out
}

fn proj_key(key: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + key.len());
    out.push(b'p');
    out.extend_from_slice(key);
    out
}

type TxResult<T> = Result<T, ConflictableTransactionError<StoreError>>;

impl EventStore for SledStore {
    fn head(&self) -> Result<Head, StoreError> {
        match self.index.get(HEAD_KEY)? {
            Some(bytes) => decode_head(&bytes),
            None => Ok(Head::default()),
        }
    }

    fn append(&self, batch: &AppendBatch) -> Result<(), StoreError> {
        let Some(last) = batch.records.last() else {
            return Ok(());
        };
        let new_head = Head {
            position: last.position,
            hash: last.hash,
        };
        let result = (&self.log, &self.index, &self.proj).transaction(|(log, index, proj)| {
            let head = match index.get(HEAD_KEY)? {
                Some(bytes) => decode_head(&bytes).map_err(ConflictableTransactionError::Abort)?,
                None => Head::default(),
            };
            if head != batch.expected_head {
                return abort(StoreError::Conflict(format!(
                    "the log head is at position {}, the batch expected {}",
                    head.position, batch.expected_head.position
                )));
            }
            for (stream, expected) in &batch.expected_versions {
                let current = match index.get(stream_key(stream))? {
                    Some(bytes) => decode_u64(&bytes, "stream version")
                        .map_err(ConflictableTransactionError::Abort)?,
                    None => 0,
                };
                if current != *expected {
                    return abort(StoreError::Conflict(format!(
                        "stream {stream} is at version {current}, the batch expected {expected}"
                    )));
                }
            }
            for record in &batch.records {
                log.insert(&record.position.to_be_bytes(), record.bytes.as_slice())?;
                index.insert(
                    version_key(&record.aggregate_id, record.aggregate_version),
                    &record.position.to_be_bytes(),
                )?;
                index.insert(
                    stream_key(&record.aggregate_id),
                    &record.aggregate_version.to_be_bytes(),
                )?;
            }
            for (key, value) in &batch.tokens {
                index.insert(token_key(key), value.as_slice())?;
            }
            index.insert(HEAD_KEY, encode_head(&new_head))?;
            for op in &batch.projection {
                match &op.value {
                    Some(value) => proj.insert(proj_key(&op.key), value.as_slice())?,
                    None => proj.remove(proj_key(&op.key))?,
                };
            }
            proj.insert(CHECKPOINT_KEY, &new_head.position.to_be_bytes())?;
            Ok(())
        });
        match result {
            Ok(()) => {}
            Err(TransactionError::Abort(err)) => return Err(err),
            Err(TransactionError::Storage(err)) => return Err(err.into()),
        }
        self.db.flush()?;
        Ok(())
    }

    fn scan(&self, from: u64, visit: &mut dyn FnMut(u64, &[u8]) -> bool) -> Result<(), StoreError> {
        for entry in self.log.range(from.to_be_bytes()..) {
            let (key, value) = entry?;
            let position = decode_u64(&key, "log position")?;
            if !visit(position, &value) {
                break;
            }
        }
        Ok(())
    }

    fn read_at(&self, position: u64) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.log.get(position.to_be_bytes())?.map(|v| v.to_vec()))
    }

    fn scan_stream(
        &self,
        aggregate_id: &str,
        visit: &mut dyn FnMut(u64, &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        let mut prefix = version_key(aggregate_id, 0);
        prefix.truncate(prefix.len() - 8);
        for entry in self.index.scan_prefix(&prefix) {
            let (_, position) = entry?;
            let position = decode_u64(&position, "stream position")?;
            let record = self.log.get(position.to_be_bytes())?.ok_or_else(|| {
                StoreError::Corrupt(format!(
                    "stream {aggregate_id} points at position {position}, which is not in the log"
                ))
            })?;
            if !visit(position, &record) {
                break;
            }
        }
        Ok(())
    }

    fn projection_checkpoint(&self) -> Result<Option<u64>, StoreError> {
        self.proj
            .get(CHECKPOINT_KEY)?
            .map(|bytes| decode_u64(&bytes, "projection checkpoint"))
            .transpose()
    }

    fn projection_scan(&self, prefix: &[u8]) -> Result<Entries, StoreError> {
        self.proj
            .scan_prefix(proj_key(prefix))
            .map(|entry| {
                let (key, value) = entry?;
                Ok((key[1..].to_vec(), value.to_vec()))
            })
            .collect()
    }

    fn replace_projections(&self, ops: &[ProjectionOp], checkpoint: u64) -> Result<(), StoreError> {
        // Not one transaction: a crash part way leaves no checkpoint, and a
        // store without one is rebuilt from the log at the next start.
        self.proj.remove(CHECKPOINT_KEY)?;
        self.db.flush()?;
        self.proj.clear()?;
        let mut batch = sled::Batch::default();
        for op in ops {
            if let Some(value) = &op.value {
                batch.insert(proj_key(&op.key), value.as_slice());
            }
        }
        self.proj.apply_batch(batch)?;
        self.db.flush()?;
        self.proj
            .insert(CHECKPOINT_KEY, &checkpoint.to_be_bytes())?;
        self.db.flush()?;
        Ok(())
    }

    fn tokens(&self) -> Result<Entries, StoreError> {
        self.index
            .scan_prefix(b"t")
            .map(|entry| {
                let (key, value) = entry?;
                Ok((key[1..].to_vec(), value.to_vec()))
            })
            .collect()
    }
}

fn abort<T>(err: StoreError) -> TxResult<T> {
    Err(ConflictableTransactionError::Abort(err))
}
