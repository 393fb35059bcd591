//! A worker thread that writes work in bulk behind those who hand it over:
//! the work waiting under one lock, the wake-up, the wait until the work
//! is due (enough of it, a request, or its age), and a stop at drop that
//! lets the worker write what waits first. The stored read side's writer
//! and sled's stream index are two such workers.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The work waiting for a worker.
pub trait Waiting: Send + 'static {
    /// When the oldest work not yet written came in; `None` when none waits.
    fn since(&self) -> Option<Instant>;
    /// Whether to write now, whatever the age: enough waits, a stop, a
    /// request.
    fn due_now(&self) -> bool;
    /// Asks the worker to write what waits and stop.
    fn stop(&mut self);
}

/// What a worker and its handle share.
pub struct Shared<W> {
    waiting: Mutex<W>,
    wake: Condvar,
    max_age: Duration,
}

impl<W: Waiting> Shared<W> {
    /// The waiting work. Every holder changes it whole, so a panic while it
    /// was held leaves nothing half done, and a poisoned lock is used.
    pub fn lock(&self) -> MutexGuard<'_, W> {
        self.waiting
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Wakes the worker, and whoever waits on it. Whoever hands over the
    /// first work while none waits must call it, so the worker's clock
    /// starts.
    pub fn notify(&self) {
        self.wake.notify_all();
    }

    /// Waits until the work is due (now, or its oldest part has waited
    /// `max_age`) and returns it locked.
    pub fn wait_due(&self) -> MutexGuard<'_, W> {
        let mut waiting = self.lock();
        loop {
            if waiting.due_now() {
                return waiting;
            }
            waiting = match waiting.since() {
                None => self
                    .wake
                    .wait(waiting)
                    .unwrap_or_else(std::sync::PoisonError::into_inner),
                Some(since) => {
                    let left = self.max_age.saturating_sub(since.elapsed());
                    if left.is_zero() {
                        return waiting;
                    }
                    self.wake
                        .wait_timeout(waiting, left)
                        .map(|(guard, _)| guard)
                        .unwrap_or_else(|poisoned| poisoned.into_inner().0)
                }
            };
        }
    }

    /// Waits while `waiting` says so (someone waiting for the worker's
    /// next write) and returns the work locked.
    pub fn wait_while<'a>(
        &self,
        guard: MutexGuard<'a, W>,
        waiting: impl FnMut(&mut W) -> bool,
    ) -> MutexGuard<'a, W> {
        self.wake
            .wait_while(guard, waiting)
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The handle on a worker: dropping it asks the worker to write what waits
/// and stop, and waits for it.
pub struct Deferred<W: Waiting> {
    shared: Arc<Shared<W>>,
    worker: Option<JoinHandle<()>>,
    name: &'static str,
}

impl<W: Waiting> Deferred<W> {
    /// Starts `run` on a thread called `name`, with `waiting` as the work
    /// at first, writing work at most `max_age` after it came in.
    pub fn start(
        name: &'static str,
        waiting: W,
        max_age: Duration,
        run: impl FnOnce(&Shared<W>) + Send + 'static,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            waiting: Mutex::new(waiting),
            wake: Condvar::new(),
            max_age,
        });
        let worker = {
            let shared = Arc::clone(&shared);
            std::thread::Builder::new()
                .name(name.into())
                .spawn(move || run(&shared))?
        };
        Ok(Self {
            shared,
            worker: Some(worker),
            name,
        })
    }

    /// What it shares with its worker.
    pub fn shared(&self) -> &Shared<W> {
        &self.shared
    }
}

impl<W: Waiting> Drop for Deferred<W> {
    fn drop(&mut self) {
        self.shared.lock().stop();
        self.shared.notify();
        if let Some(worker) = self.worker.take() {
            if worker.join().is_err() {
                tracing::error!(thread = self.name, "a writer thread panicked");
            }
        }
    }
}
