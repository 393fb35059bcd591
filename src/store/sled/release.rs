//! Knowing when sled has let go of its directory. sled 0.34 holds an
//! exclusive `flock` on its `db` file for as long as any of its handles
//! lives, and its I/O threads can hold one for a moment after the store is
//! dropped. [`Release`], the store's last field, runs after every handle
//! of the store is dropped and takes the same lock on a file description
//! of its own: it is granted exactly when sled's is gone. So a dropped
//! store has released its directory, and the directory can be opened
//! again at once, by this process or another.

use std::fs::{File, OpenOptions};
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use fs2::FileExt;

/// Longer than any wait seen for sled's threads; past it the drop gives up
/// and says so, rather than hang a stopping process.
const PATIENCE: Duration = Duration::from_secs(15);

/// Whether the store released its directory; shared with [`Released`].
#[derive(Debug, Default)]
struct Flag {
    done: Mutex<bool>,
    set: Condvar,
}

/// A handle that tells when a store has released its directory.
#[derive(Debug, Clone)]
pub struct Released(Arc<Flag>);

impl Released {
    /// Waits up to `timeout` for the store to be dropped and its directory
    /// released; `true` once it is.
    pub fn wait(&self, timeout: Duration) -> bool {
        let done = self.0.done.lock().unwrap_or_else(|p| p.into_inner());
        let (done, _) = self
            .0
            .set
            .wait_timeout_while(done, timeout, |done| !*done)
            .unwrap_or_else(|p| p.into_inner());
        *done
    }
}

/// Waits, when dropped, until sled's lock on `lock_file` is gone.
pub(super) struct Release {
    lock_file: PathBuf,
    flag: Arc<Flag>,
}

impl Release {
    pub(super) fn new(lock_file: PathBuf) -> Self {
        Self {
            lock_file,
            flag: Arc::default(),
        }
    }

    pub(super) fn watch(&self) -> Released {
        Released(Arc::clone(&self.flag))
    }
}

impl Release {
    /// Waits (up to a bound) until sled's lock on the directory is gone:
    /// every handle of a database opened there has been dropped.
    pub(super) fn wait_unlocked(&self) -> Result<(), String> {
        let path = self.lock_file.clone();
        let (tx, rx) = std::sync::mpsc::channel();
        // The lock is taken on a thread of its own so the wait is bounded.
        std::thread::Builder::new()
            .name("ledger-release".into())
            .spawn(move || {
                let taken = match OpenOptions::new().read(true).write(true).open(&path) {
                    Ok(file) => lock_and_unlock(&file),
                    // The directory is gone: nothing holds it any more.
                    Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(err) => Err(err),
                };
                let _ = tx.send(taken);
            })
            .map_err(|err| err.to_string())?;
        match rx.recv_timeout(PATIENCE) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(err)) => Err(format!("cannot tell whether sled released its lock: {err}")),
            Err(_) => Err(format!(
                "sled still holds its lock {PATIENCE:?} after its database was closed"
            )),
        }
    }
}

impl Drop for Release {
    fn drop(&mut self) {
        if let Err(err) = self.wait_unlocked() {
            tracing::warn!(%err, path = %self.lock_file.display(), "sled may still hold its directory");
        }
        *self.flag.done.lock().unwrap_or_else(|p| p.into_inner()) = true;
        self.flag.set.notify_all();
    }
}

/// Blocks until the exclusive lock is granted, then gives it back.
fn lock_and_unlock(file: &File) -> std::io::Result<()> {
    file.lock_exclusive()?;
    FileExt::unlock(file)
}
