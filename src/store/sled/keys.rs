//! Every key of the sled store's tree and the codec of each value that is
//! not a record or a projection entry. Keys start with a one-byte tag, so
//! each kind of entry is its own ordered range, and integers are big-endian
//! so byte order is numeric order:
//!
//! | key | value |
//! |---|---|
//! | `l` first position (u64) | a chunk: consecutive records, compressed ([`super::chunk`]) |
//! | `p` projection key | a projection entry ([`crate::projection::persist`]) |
//! | `t` account id `\0` token | an idempotency record ([`crate::idempotency`]) |
//! | `v` aggregate id `\0` first version (u64) | positions (u64 each): the stream index ([`super::stream_index`]) |
//! | `zc` | projection checkpoint (u64) |
//! | `zh` | head: position (u64) and hash (32 bytes) |
//! | `zp` | the checkpoints stepwise saves of the projections were moving to (u64 each); only while one runs, or after one stopped part way |
//! | `zv` | the position up to which the stream index is stored (u64) |
//!
//! The head changes with every append, so it sorts last, beside the small
//! stream-index entries. sled keeps at most 16 entries in a leaf and
//! rewrites a leaf whole after every tenth change to it: had the head
//! sorted first, its leaf would also hold the oldest chunks, and every few
//! appends would rewrite tens of kilobytes of them.

use crate::store::{Head, StoreError};

/// Tag of the log's chunks.
pub(super) const LOG: u8 = b'l';
/// Tag of the projection entries.
pub(super) const PROJECTION: u8 = b'p';
/// Tag of the idempotency records.
pub(super) const TOKEN: u8 = b't';
/// Tag of the stream index entries.
pub(super) const STREAM: u8 = b'v';

/// The head.
pub(super) const HEAD: &[u8] = b"zh";
/// The projection checkpoint.
pub(super) const CHECKPOINT: &[u8] = b"zc";
/// The targets of unfinished stepwise projection saves.
pub(super) const PENDING: &[u8] = b"zp";
/// The position up to which the stream index is stored.
pub(super) const INDEXED: &[u8] = b"zv";

/// `tag` followed by `body`.
pub(super) fn tagged(tag: u8, body: &[u8]) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + body.len());
    key.push(tag);
    key.extend_from_slice(body);
    key
}

/// The key of the chunk whose first record is at `position`.
pub(super) fn log_key(position: u64) -> [u8; 9] {
    let mut key = [LOG; 9];
    key[1..].copy_from_slice(&position.to_be_bytes());
    key
}

/// The first position a chunk's key names.
pub(super) fn log_position(key: &[u8]) -> Result<u64, StoreError> {
    decode_u64(&key[1..], "log position")
}

/// The prefix of every stream index key of one aggregate.
pub(super) fn stream_prefix(aggregate_id: &str) -> Vec<u8> {
    let mut prefix = Vec::with_capacity(2 + aggregate_id.len());
    prefix.push(STREAM);
    prefix.extend_from_slice(aggregate_id.as_bytes());
    prefix.push(0);
    prefix
}

/// The stream index key of one aggregate's run starting at `first_version`.
pub(super) fn stream_key(aggregate_id: &str, first_version: u64) -> Vec<u8> {
    let mut key = stream_prefix(aggregate_id);
    key.extend_from_slice(&first_version.to_be_bytes());
    key
}

/// The first version a stream index key of `aggregate_id` names.
pub(super) fn stream_first_version(key: &[u8], aggregate_id: &str) -> Result<u64, StoreError> {
    let start = 2 + aggregate_id.len();
    if key.len() != start + 8 {
        return Err(StoreError::Corrupt(format!(
            "a stream index key of {aggregate_id} is malformed"
        )));
    }
    decode_u64(&key[start..], "stream index version")
}

/// A big-endian u64; `what` names it in the error.
pub(super) fn decode_u64(bytes: &[u8], what: &str) -> Result<u64, StoreError> {
    let array: [u8; 8] = bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt(format!("the stored {what} is malformed")))?;
    Ok(u64::from_be_bytes(array))
}

/// A run of big-endian u64s.
pub(super) fn decode_u64s(bytes: &[u8], what: &str) -> Result<Vec<u64>, StoreError> {
    if !bytes.len().is_multiple_of(8) {
        return Err(StoreError::Corrupt(format!(
            "the stored {what} is malformed"
        )));
    }
    bytes.chunks(8).map(|p| decode_u64(p, what)).collect()
}

/// A run of u64s, big-endian.
pub(super) fn encode_u64s(values: &[u64]) -> Vec<u8> {
    values.iter().flat_map(|v| v.to_be_bytes()).collect()
}

/// The head's value: position then hash.
pub(super) fn encode_head(head: &Head) -> Vec<u8> {
    let mut out = Vec::with_capacity(40);
    out.extend_from_slice(&head.position.to_be_bytes());
    out.extend_from_slice(&head.hash);
    out
}

/// The head a value of [`HEAD`] holds.
pub(super) fn decode_head(bytes: &[u8]) -> Result<Head, StoreError> {
    if bytes.len() != 40 {
        return Err(StoreError::Corrupt("the stored head is malformed".into()));
    }
    let mut hash = [0u8; 32];
    hash.copy_from_slice(&bytes[8..]);
    Ok(Head {
        position: decode_u64(&bytes[..8], "head position")?,
        hash,
    })
}
