//! How the log's records are stored: a chunk holds the records of one
//! append (split every [`CHUNK_RECORDS`]), joined by `\n` (a record is
//! JSON without raw newlines) and compressed with zstd as one frame: a
//! format byte (`1`), the uncompressed length (u32 BE), then the frame.
//! Records of one append compress together several times over (their field
//! names, ids and times repeat), and sled handles one key per chunk instead
//! of one per record. The records inside are byte for byte what was hashed.

use ::sled::{IVec, Tree};

use super::keys::{log_key, log_position};
use crate::store::StoreError;

/// The most records one chunk holds.
pub const CHUNK_RECORDS: usize = 64;
/// The chunk format byte: records joined by newlines, one zstd frame.
const CHUNK_ZSTD: u8 = 1;
/// zstd level: the fastest levels already shrink a chunk several times.
pub(super) const ZSTD_LEVEL: i32 = 1;

/// A stored chunk, decompressed.
pub(super) struct Chunk {
    pub(super) first: u64,
    /// The records, joined by newlines.
    joined: Vec<u8>,
}

impl Chunk {
    pub(super) fn decode(first: u64, stored: &[u8]) -> Result<Self, StoreError> {
        let mut decompressor = zstd::bulk::Decompressor::new()
            .map_err(|e| StoreError::backend("cannot start zstd", e))?;
        Self::decode_with(&mut decompressor, first, stored)
    }

    /// [`Self::decode`] with a decompressor kept across chunks: a scan
    /// spent about a tenth of its reading time setting up a new one per chunk.
    pub(super) fn decode_with(
        decompressor: &mut zstd::bulk::Decompressor<'static>,
        first: u64,
        stored: &[u8],
    ) -> Result<Self, StoreError> {
        let corrupt = |what: &str| StoreError::Corrupt(format!("the chunk at {first} {what}"));
        if stored.len() < 5 || stored[0] != CHUNK_ZSTD {
            return Err(corrupt("has an unknown format"));
        }
        let length = u32::from_be_bytes([stored[1], stored[2], stored[3], stored[4]]) as usize;
        let joined = decompressor
            .decompress(&stored[5..], length)
            .map_err(|e| corrupt(&format!("does not decompress: {e}")))?;
        if joined.len() != length {
            return Err(corrupt("has the wrong length"));
        }
        Ok(Self { first, joined })
    }

    /// Each record with its position, in order.
    pub(super) fn records(&self) -> impl Iterator<Item = (u64, &[u8])> {
        (self.first..).zip(self.joined.split(|b| *b == b'\n'))
    }

    /// The record at `position`, if this chunk holds it.
    pub(super) fn record(&self, position: u64) -> Option<&[u8]> {
        let index = usize::try_from(position.checked_sub(self.first)?).ok()?;
        self.joined.split(|b| *b == b'\n').nth(index)
    }
}

/// The stored form of a chunk of `records`.
pub(super) fn encode(
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
    let length =
        u32::try_from(joined.len()).map_err(|_| StoreError::failed("a chunk is over 4 GiB"))?;
    let frame = compressor
        .compress(&joined)
        .map_err(|e| StoreError::backend("zstd compression failed", e))?;
    let mut out = Vec::with_capacity(5 + frame.len());
    out.push(CHUNK_ZSTD);
    out.extend_from_slice(&length.to_be_bytes());
    out.extend_from_slice(&frame);
    Ok(out)
}

/// The chunk that would hold `position`, with its first position (it may
/// end before `position`).
pub(super) fn chunk_at(tree: &Tree, position: u64) -> Result<Option<(u64, IVec)>, StoreError> {
    let Some(entry) = tree.range(log_key(0)..=log_key(position)).next_back() else {
        return Ok(None);
    };
    let (key, chunk) = entry?;
    Ok(Some((log_position(&key)?, chunk)))
}

/// The chunk holding `position`, decoded.
pub(super) fn decoded_chunk_at(tree: &Tree, position: u64) -> Result<Option<Chunk>, StoreError> {
    chunk_at(tree, position)?
        .map(|(first, bytes)| Chunk::decode(first, &bytes))
        .transpose()
}

/// A visitor of records that can stop (`Ok(false)`) or fail.
pub(super) type TryVisit<'a> = dyn FnMut(u64, &[u8]) -> Result<bool, StoreError> + 'a;

/// Visits the records from `from` on, until `visit` returns `Ok(false)` or fails.
pub(super) fn scan(tree: &Tree, from: u64, visit: &mut TryVisit<'_>) -> Result<(), StoreError> {
    // Start at the chunk holding `from`, which may begin before it.
    let start = match chunk_at(tree, from)? {
        Some((first, _)) => first,
        None => from,
    };
    let mut decompressor =
        zstd::bulk::Decompressor::new().map_err(|e| StoreError::backend("cannot start zstd", e))?;
    for entry in tree.range(log_key(start)..=log_key(u64::MAX)) {
        let (key, stored) = entry?;
        let chunk = Chunk::decode_with(&mut decompressor, log_position(&key)?, &stored)?;
        for (position, record) in chunk.records() {
            if position >= from && !visit(position, record)? {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// Removes the chunks past `head`: what an append that failed, or that a
/// crash cut short, left before it could write the head. Returns how many.
pub(super) fn remove_past(tree: &Tree, head: u64) -> Result<usize, StoreError> {
    let mut removed = 0;
    for entry in tree.range(log_key(head.saturating_add(1))..=log_key(u64::MAX)) {
        let (key, _) = entry?;
        tree.remove(key)?;
        removed += 1;
    }
    Ok(removed)
}
