//! The hooks tests use on the sled store, which need its internals:
//! tampering with a record, cutting an append short, losing the stream
//! index's queue as a crash would, counting the blob files synced.

use super::chunk::{self, decoded_chunk_at};
use super::keys::log_key;
use super::SledStore;
use crate::store::StoreError;

impl SledStore {
    /// Rewrites one stored record in place, bypassing every check: what
    /// tests that prove tampering is detected do to a store.
    pub fn tamper_record(&self, position: u64, bytes: &[u8]) -> Result<(), StoreError> {
        let mut compressor = self.lock()?;
        let handles = self.handles()?;
        let chunk = decoded_chunk_at(&handles.tree, position)?
            .filter(|chunk| chunk.record(position).is_some())
            .ok_or_else(|| StoreError::Corrupt(format!("no record at position {position}")))?;
        let records: Vec<&[u8]> = chunk
            .records()
            .map(|(at, record)| if at == position { bytes } else { record })
            .collect();
        handles.tree.insert(
            log_key(chunk.first),
            chunk::encode(&mut compressor, &records)?,
        )?;
        handles.db.flush()?;
        Ok(())
    }

    /// How many of sled's blob files the flushes synced (see [`durable`]).
    #[cfg(test)]
    pub(in crate::store) fn synced_blob_files(&self) -> usize {
        self.handles()
            .map_or(0, |handles| handles.db.synced_blob_files())
    }

    /// Forgets the stream-index entries not yet stored, as a crash would.
    #[cfg(test)]
    pub(in crate::store) fn lose_queued_index(&self) {
        if let Ok(handles) = self.handles() {
            handles.index.lose_queued();
        }
    }

    /// Makes the next append write only its first `count` writes and then
    /// fail, as a crash part way would leave it (nothing is flushed).
    #[cfg(test)]
    pub(crate) fn cut_next_append_short(&self, count: usize) {
        if let Ok(mut cut) = self.write_cut_short.lock() {
            *cut = Some(count);
        }
    }
}
