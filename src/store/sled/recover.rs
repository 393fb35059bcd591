//! Taking writes again after a failure. sled 0.34 keeps the first I/O
//! error its log writer meets (a full disk, EIO) and fails every later
//! write and flush with it, for as long as the database stays open: only a
//! fresh open clears it. So once the disk takes a write of its own again,
//! the database is closed and opened afresh. Reads are answered from the
//! old opening until then, and, being refused for the moment of the swap
//! only, by the new one after.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::{Handles, SledStore};
use crate::store::StoreError;

/// The file the disk is asked to take a write in.
const PROBE_FILE: &str = "write-probe";
/// What the disk must take: more than sled writes when it opens and
/// appends a batch, so a disk with only a few pages left stays refused.
const PROBE_BYTES: usize = 1 << 20;
/// How long readers of the old opening are waited for before this attempt
/// gives up (the writer tries again).
const READERS_PATIENCE: Duration = Duration::from_secs(10);

pub(super) fn recover(store: &SledStore) -> Result<(), StoreError> {
    // No append meanwhile.
    let _appending = store.lock()?;
    if let Ok(handles) = store.handles() {
        // A failure that left sled well (a blob file's sync) heals in place.
        if handles.db.flush().is_ok() {
            return Ok(());
        }
    }
    probe(&store.dir)?;
    reopen(store)
}

/// Writes and syncs a file of [`PROBE_BYTES`] in `dir`, then removes it.
fn probe(dir: &Path) -> Result<(), StoreError> {
    let path = dir.join(PROBE_FILE);
    let written = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&path)
        .and_then(|mut file| {
            file.write_all(&vec![0; PROBE_BYTES])?;
            file.sync_all()
        });
    let removed = std::fs::remove_file(&path).and_then(|()| File::open(dir)?.sync_all());
    written.and(removed).map_err(|err| {
        StoreError::backend(
            format!("the disk under {} takes no write", dir.display()),
            err,
        )
    })
}

/// Closes the database and opens it afresh.
fn reopen(store: &SledStore) -> Result<(), StoreError> {
    let taken = store
        .open
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(old) = taken {
        let old = match wait_unshared(old) {
            Ok(old) => old,
            Err(old) => {
                *store
                    .open
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(old);
                return Err(StoreError::failed(
                    "readers still hold the store; opening it afresh is tried again",
                ));
            }
        };
        // Stops the stream index's worker and closes sled.
        drop(old);
        store.release.wait_unlocked().map_err(StoreError::failed)?;
    }
    let handles = Handles::open(&store.dir, store.cache_bytes)?;
    store
        .tail_left
        .store(false, std::sync::atomic::Ordering::SeqCst);
    *store
        .open
        .write()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(Arc::new(handles));
    tracing::info!(dir = %store.dir.display(), "opened the store afresh after a write failure");
    Ok(())
}

/// The handles once no reader holds them any more, or back when readers
/// keep them past [`READERS_PATIENCE`].
fn wait_unshared(mut handles: Arc<Handles>) -> Result<Handles, Arc<Handles>> {
    let started = Instant::now();
    loop {
        match Arc::try_unwrap(handles) {
            Ok(handles) => return Ok(handles),
            Err(shared) if started.elapsed() >= READERS_PATIENCE => return Err(shared),
            Err(shared) => {
                handles = shared;
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }
}
