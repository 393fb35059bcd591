//! sled's database, with a flush that survives a power loss.
//!
//! sled 0.34 makes its log buffers stable with `sync_file_range`. That call
//! writes the file's pages, but, as its manual says, it neither writes the
//! file's metadata (the size and block map of a file that grows, as sled's
//! log does at its end) nor flushes the disk's write cache. A flush it
//! reported done may then be lost to a power cut (sled issue #1452). So
//! every flush here is followed by `fdatasync` of the log file, which does
//! both. A process crash never needed it: the page cache survives that.
//!
//! sled also writes a page too large for its log buffers (over about
//! 128 KiB: a chunk of 64 records whose texts are long and compress
//! badly, or a leaf of such chunks) to a file of its own under `blobs/`,
//! before the log entry that points to it, and syncs neither the file nor
//! the directory. So a flush also syncs every blob file it has not synced
//! yet, and then the directory.

use std::collections::HashSet;
use std::ffi::OsString;
use std::fs::{File, OpenOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use ::sled::Db;

use crate::store::StoreError;

/// The log file sled 0.34 keeps in its directory.
pub(crate) const LOG_FILE: &str = "db";
/// The directory sled 0.34 writes large items to.
pub(crate) const BLOB_DIR: &str = "blobs";

/// A sled database and a handle on its log file. Cheap to clone.
#[derive(Clone)]
pub(super) struct DurableDb {
    db: Db,
    log: Arc<File>,
    blob_dir: PathBuf,
    /// The blob files known to be synced (sled removes them in time).
    synced_blobs: Arc<Mutex<HashSet<OsString>>>,
}

impl DurableDb {
    /// Wraps the database open in `dir`. Syncs the directory once, so the
    /// entries of the files sled created in it are durable too.
    pub(super) fn new(db: Db, dir: &Path) -> Result<Self, StoreError> {
        let io = |what: &str, err: std::io::Error| {
            StoreError::backend(format!("cannot {what} in {}", dir.display()), err)
        };
        let log = OpenOptions::new()
            .write(true)
            .open(dir.join(LOG_FILE))
            .map_err(|e| io("open sled's log file", e))?;
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("sync the directory", e))?;
        Ok(Self {
            db,
            log: Arc::new(log),
            blob_dir: dir.join(BLOB_DIR),
            synced_blobs: Arc::default(),
        })
    }

    /// The database, for everything but flushing.
    pub(super) fn sled(&self) -> &Db {
        &self.db
    }

    /// Returns once everything written before the call is on stable storage.
    pub(super) fn flush(&self) -> Result<(), StoreError> {
        self.flush_to_os()?;
        self.sync_to_disk()
    }

    /// sled's own flush: its buffers are written to the file.
    pub(super) fn flush_to_os(&self) -> Result<(), StoreError> {
        self.db.flush()?;
        Ok(())
    }

    /// Makes what the calls of [`Self::flush_to_os`] that returned before
    /// this call wrote durable against power loss.
    pub(super) fn sync_to_disk(&self) -> Result<(), StoreError> {
        self.sync_new_blobs()
            .map_err(|e| StoreError::backend("cannot sync sled's blob files", e))?;
        self.log
            .sync_data()
            .map_err(|e| StoreError::backend("cannot sync sled's log file", e))
    }

    /// Syncs the blob files not synced yet, then their directory.
    fn sync_new_blobs(&self) -> std::io::Result<()> {
        let mut synced = self
            .synced_blobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut present = HashSet::new();
        let mut added = false;
        let entries = match std::fs::read_dir(&self.blob_dir) {
            Ok(entries) => entries,
            // sled makes the directory when it opens; without it, no blobs.
            Err(err) if err.kind() == ErrorKind::NotFound => return Ok(()),
            Err(err) => return Err(err),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            if !synced.contains(&name) {
                match File::open(entry.path()).and_then(|f| f.sync_all()) {
                    Ok(()) => added = true,
                    // sled removed it meanwhile: nothing left to keep.
                    Err(err) if err.kind() == ErrorKind::NotFound => continue,
                    Err(err) => return Err(err),
                }
            }
            present.insert(name);
        }
        if added {
            File::open(&self.blob_dir)?.sync_all()?;
        }
        *synced = present;
        Ok(())
    }

    /// How many blob files the flushes synced and sled still keeps.
    #[cfg(test)]
    pub(super) fn synced_blob_files(&self) -> usize {
        self.synced_blobs.lock().map_or(0, |synced| synced.len())
    }
}
