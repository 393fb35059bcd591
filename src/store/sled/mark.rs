//! The log's mark: a small file beside sled's naming a position, and the
//! hash of its record, that the log is known to have reached (the read
//! side's checkpoint, written after each save of it). sled 0.34, meeting
//! damaged bytes in its files while it recovers, can stop there without a
//! word and open with everything after them gone: the log would end early,
//! or be empty, and a server would serve it and append a history of its
//! own. The mark names that at open: a log that ends before its mark, or
//! holds another record there, is damaged.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;

use ::sled::Tree;

use super::chunk::decoded_chunk_at;
use crate::store::{Envelope, Head, StoreError};

/// The mark's file in the data directory.
pub(crate) const MARK_FILE: &str = "log-mark";

/// Replaces the mark with `head`, durably (a new file renamed over it).
pub(super) fn write(dir: &Path, head: Head) -> Result<(), StoreError> {
    let written = (|| -> std::io::Result<()> {
        let staged = dir.join(format!("{MARK_FILE}.new"));
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&staged)?;
        writeln!(file, "{} {}", head.position, hex::encode(head.hash))?;
        file.sync_all()?;
        std::fs::rename(&staged, dir.join(MARK_FILE))?;
        File::open(dir)?.sync_all()
    })();
    written.map_err(|err| StoreError::backend("cannot write the log's mark", err))
}

/// The mark, if there is one (stores written before marks have none).
fn read(dir: &Path) -> Result<Option<Head>, StoreError> {
    let text = match std::fs::read_to_string(dir.join(MARK_FILE)) {
        Ok(text) => text,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) => return Err(StoreError::backend("cannot read the log's mark", err)),
    };
    let malformed = || StoreError::Corrupt(format!("the log's mark {text:?} is malformed"));
    let (position, hash) = text.trim().split_once(' ').ok_or_else(malformed)?;
    let position = position.parse().map_err(|_| malformed())?;
    let hash = hex::decode(hash)
        .ok()
        .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        .ok_or_else(malformed)?;
    Ok(Some(Head { position, hash }))
}

/// Checks that the log, whose stored head is `head`, reaches the mark
/// and holds the marked record there.
pub(super) fn check(dir: &Path, tree: &Tree, head: Head) -> Result<(), StoreError> {
    let Some(mark) = read(dir)? else {
        return Ok(());
    };
    let damaged = |what: String| {
        StoreError::Corrupt(format!(
            "{what}: sled's files in {} are damaged (its recovery stopped early); restore the \
             directory from a backup, or import an export into a new one (audit import)",
            dir.display()
        ))
    };
    if head.position < mark.position {
        return Err(damaged(format!(
            "the log ends at position {}, but it had reached {} ({MARK_FILE})",
            head.position, mark.position
        )));
    }
    match hash_at(tree, mark.position)? {
        Some(hash) if hash == mark.hash => Ok(()),
        Some(_) => Err(damaged(format!(
            "the record at position {} is not the one {MARK_FILE} names",
            mark.position
        ))),
        None => Err(damaged(format!(
            "the log has no record at position {}",
            mark.position
        ))),
    }
}

/// The head at `position` as the tree holds it, to mark.
pub(super) fn head_at(tree: &Tree, position: u64) -> Result<Head, StoreError> {
    let hash = hash_at(tree, position)?
        .ok_or_else(|| StoreError::Corrupt(format!("no record at position {position} to mark")))?;
    Ok(Head { position, hash })
}

/// The hash of the record at `position` (the empty log's at 0), if the
/// tree holds one.
fn hash_at(tree: &Tree, position: u64) -> Result<Option<[u8; 32]>, StoreError> {
    if position == 0 {
        return Ok(Some(Head::default().hash));
    }
    match decoded_chunk_at(tree, position)?
        .and_then(|chunk| chunk.record(position).map(<[u8]>::to_vec))
    {
        Some(record) => Ok(Some(Envelope::decode(&record)?.hash_bytes()?)),
        None => Ok(None),
    }
}
