//! One connection to PostgreSQL on a thread of its own. The store's calls
//! are synchronous and come from any thread, some of them inside a tokio
//! runtime; the `postgres` crate drives a runtime of its own, which cannot
//! be entered from a thread already in one. So every call is a job sent to
//! this thread, which owns the client, reconnects when the connection was
//! lost, and sends the job's result back.
//!
//! Each connection holds the database's writer lock (a session advisory
//! lock) while it lives: one process at a time keeps a ledger in a
//! database, as sled's directory lock does for a directory, until replicas
//! that follow each other's writes exist. A reconnect takes the lock again
//! or stays disconnected.

use std::sync::mpsc::{channel, sync_channel, Sender};
use std::sync::Mutex;
use std::thread::JoinHandle;

use postgres::{Client, NoTls};

use crate::store::StoreError;

type Job = Box<dyn FnOnce(&mut Option<Client>) + Send>;

/// Any number, the same in every process: the writer lock's key.
const WRITER_LOCK: i64 = 0x1ed9e8;

/// Connects and takes the writer lock.
fn connect(url: &str) -> Result<Client, StoreError> {
    let mut client = Client::connect(url, NoTls).map_err(failed("cannot connect"))?;
    let locked: bool = client
        .query_one("SELECT pg_try_advisory_lock($1)", &[&WRITER_LOCK])
        .map_err(failed("cannot take the writer lock"))?
        .get(0);
    if !locked {
        return Err(StoreError::failed(
            "another image-ledger process holds this database (several replicas on one \
             database are not supported yet): stop it, or use --addr",
        ));
    }
    Ok(client)
}

/// A handle on the connection's thread. Dropping it gives the writer lock
/// back and closes the connection before it returns.
pub(super) struct Connection {
    jobs: Mutex<Option<Sender<Job>>>,
    thread: Option<JoinHandle<()>>,
}

/// A failure of the database or of the connection to it.
pub(super) fn failed(what: &str) -> impl FnOnce(postgres::Error) -> StoreError + '_ {
    move |err| StoreError::backend(format!("postgres: {what}"), err)
}

impl Connection {
    /// Connects to `url` (a libpq URL or key/value string; several hosts
    /// with `target_session_attrs=read-write` follow a failover).
    pub(super) fn open(url: &str) -> Result<Self, StoreError> {
        let url = url.to_owned();
        let (jobs, queue) = channel::<Job>();
        let (ready, connected) = sync_channel(1);
        let thread = std::thread::Builder::new()
            .name("ledger-postgres".into())
            .spawn(move || {
                let mut client = match connect(&url) {
                    Ok(client) => {
                        let _ = ready.send(Ok(()));
                        Some(client)
                    }
                    Err(err) => {
                        let _ = ready.send(Err(err));
                        return;
                    }
                };
                while let Ok(job) = queue.recv() {
                    if client.as_ref().is_none_or(Client::is_closed) {
                        client = match connect(&url) {
                            Ok(client) => {
                                tracing::info!("reconnected to postgres");
                                Some(client)
                            }
                            Err(err) => {
                                tracing::warn!(err = %crate::store::Chain(&err), "cannot reconnect to postgres");
                                None
                            }
                        };
                    }
                    job(&mut client);
                }
                if let Some(mut client) = client {
                    // Given back at once, not when the server notices the
                    // closed connection: the next process can open at once.
                    if let Err(err) =
                        client.execute("SELECT pg_advisory_unlock($1)", &[&WRITER_LOCK])
                    {
                        tracing::warn!(%err, "cannot give the writer lock back");
                    }
                }
            })
            .map_err(|e| StoreError::backend("cannot start the postgres connection thread", e))?;
        connected
            .recv()
            .map_err(|_| StoreError::failed("the postgres connection thread stopped"))??;
        Ok(Self {
            jobs: Mutex::new(Some(jobs)),
            thread: Some(thread),
        })
    }

    /// Runs `work` on the connection and returns its result.
    pub(super) fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Client) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = sync_channel(1);
        let job: Job = Box::new(move |client: &mut Option<Client>| {
            let result = match client.as_mut() {
                Some(client) => work(client),
                None => Err(StoreError::failed("postgres: not connected")),
            };
            let _ = reply.send(result);
        });
        self.jobs
            .lock()
            .map_err(|_| StoreError::failed("the postgres connection lock is poisoned"))?
            .as_ref()
            .ok_or_else(|| StoreError::failed("the postgres connection is closed"))?
            .send(job)
            .map_err(|_| StoreError::failed("the postgres connection thread stopped"))?;
        answer
            .recv()
            .map_err(|_| StoreError::failed("the postgres connection thread stopped"))?
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // Closing the queue ends the thread's loop.
        if let Ok(mut jobs) = self.jobs.lock() {
            jobs.take();
        }
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the postgres connection thread panicked");
            }
        }
    }
}
