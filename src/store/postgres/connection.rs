//! One connection to PostgreSQL on a thread of its own. The store's calls
//! are synchronous and come from any thread, some of them inside a tokio
//! runtime; the `postgres` crate drives a runtime of its own, which cannot
//! be entered from a thread already in one. So every call is a job sent to
//! this thread, which owns the session, reconnects when the connection was
//! lost, and sends the job's result back.

use std::sync::mpsc::{channel, sync_channel, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use postgres::{Client, NoTls};

use crate::store::StoreError;

type Job = Box<dyn FnOnce(&mut Option<Session>) + Send>;

/// The WARNINGs the database sent on one connection, kept until taken. A
/// COMMIT that comes with one did not end cleanly: PostgreSQL warns when
/// it stops waiting for the synchronous standby (a cancel, a timeout) and
/// reports the commit as done, though only this node may hold it.
#[derive(Clone, Default)]
pub(super) struct Warnings(Arc<Mutex<Vec<String>>>);

impl Warnings {
    /// The warnings received since the last take.
    pub(super) fn take(&self) -> Vec<String> {
        self.0
            .lock()
            .map(|mut warnings| std::mem::take(&mut *warnings))
            .unwrap_or_default()
    }

    fn push(&self, warning: String) {
        if let Ok(mut warnings) = self.0.lock() {
            warnings.push(warning);
        }
    }
}

/// A live connection and what it holds beyond one call.
pub(super) struct Session {
    pub(super) client: Client,
    /// What the database warned about on it.
    pub(super) warnings: Warnings,
    /// A transaction holding the head row's lock is open (see
    /// [`EventLog::take_turn`](crate::store::EventLog::take_turn)).
    pub(super) in_turn: bool,
    /// This session holds the lock of the replica that keeps the stored
    /// read side.
    pub(super) keeps_read_side: bool,
    /// This session holds the lock of the replica that sweeps ended shares.
    pub(super) sweeps: bool,
    /// When its last job ended.
    used: Instant,
}

/// How long a session may sit in a transaction between statements before
/// the database ends it. A turn is held for a catch-up and a decision,
/// milliseconds; a replica stopped while it holds one (a SIGSTOP, a frozen
/// VM) must not hold every other replica's appends for longer than this.
const IDLE_IN_TRANSACTION: &str = "5s";

/// A connection unused for this long is checked before its next job.
const IDLE_CHECK: Duration = Duration::from_millis(250);
/// How long that check may take.
const VALIDATION_TIMEOUT: Duration = Duration::from_secs(2);

/// Connects to `url`, keeping the session's WARNINGs in `warnings`
/// (other notices go to the debug log).
pub(super) fn connect_noting(url: &str, warnings: Warnings) -> Result<Client, StoreError> {
    let mut config: postgres::Config = url.parse().map_err(failed("cannot read the URL"))?;
    config.notice_callback(move |notice| {
        use postgres::error::Severity;
        if notice.parsed_severity() == Some(Severity::Warning) {
            tracing::warn!(
                message = notice.message(),
                detail = notice.detail(),
                "postgres warned"
            );
            warnings.push(match notice.detail() {
                Some(detail) => format!("{} ({detail})", notice.message()),
                None => notice.message().to_owned(),
            });
        } else {
            tracing::debug!(
                severity = notice.severity(),
                message = notice.message(),
                "postgres notice"
            );
        }
    });
    let mut client = config.connect(NoTls).map_err(failed("cannot connect"))?;
    client
        .batch_execute(&format!(
            "SET idle_in_transaction_session_timeout = '{IDLE_IN_TRANSACTION}'"
        ))
        .map_err(failed("cannot configure the session"))?;
    Ok(client)
}

/// Connects to `url`, its warnings logged only.
pub(super) fn connect(url: &str) -> Result<Client, StoreError> {
    connect_noting(url, Warnings::default())
}

/// A handle on the connection's thread. Dropping it closes the connection
/// before it returns.
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
    pub(super) fn open(url: &str, name: &str) -> Result<Self, StoreError> {
        let url = url.to_owned();
        let (jobs, queue) = channel::<Job>();
        let (ready, connected) = sync_channel(1);
        let thread = std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                let mut session = match Session::open(&url) {
                    Ok(session) => {
                        let _ = ready.send(Ok(()));
                        Some(session)
                    }
                    Err(err) => {
                        let _ = ready.send(Err(err));
                        return;
                    }
                };
                while let Ok(job) = queue.recv() {
                    // After a pause the connection may have died with the
                    // database (a restart, a failover) without the client
                    // knowing yet: a round trip finds out before the job does.
                    if let Some(idle) = session.as_mut().filter(|s| s.idle()) {
                        if let Err(err) = idle.client.is_valid(VALIDATION_TIMEOUT) {
                            tracing::info!(%err, "the postgres connection died while idle; reconnecting");
                            session = None;
                        }
                    }
                    if session.as_ref().is_none_or(|s| s.client.is_closed()) {
                        session = match Session::open(&url) {
                            Ok(session) => {
                                tracing::info!("reconnected to postgres");
                                Some(session)
                            }
                            Err(err) => {
                                tracing::warn!(err = %crate::store::Chain(&err), "cannot reconnect to postgres");
                                None
                            }
                        };
                    }
                    job(&mut session);
                    if let Some(session) = session.as_mut() {
                        session.used = Instant::now();
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
        self.run_in_session(move |session| work(&mut session.client))
    }

    /// [`run`](Self::run), with what the session holds beyond one call.
    pub(super) fn run_in_session<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut Session) -> Result<T, StoreError> + Send + 'static,
    ) -> Result<T, StoreError> {
        let (reply, answer) = sync_channel(1);
        let job: Job = Box::new(move |session: &mut Option<Session>| {
            let result = match session.as_mut() {
                Some(session) => work(session),
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

impl Session {
    fn open(url: &str) -> Result<Self, StoreError> {
        let warnings = Warnings::default();
        Ok(Self {
            client: connect_noting(url, warnings.clone())?,
            warnings,
            in_turn: false,
            keeps_read_side: false,
            sweeps: false,
            used: Instant::now(),
        })
    }

    /// Whether it has been unused long enough that the database may have
    /// gone away meanwhile.
    fn idle(&self) -> bool {
        self.used.elapsed() >= IDLE_CHECK
    }

    /// Ends the session's transaction with COMMIT, and fails unless it
    /// ended cleanly: an error, or a WARNING with it (the synchronous
    /// standby's wait cancelled), leaves the outcome unknown.
    pub(super) fn commit(&mut self, what: &str) -> Result<(), StoreError> {
        self.warnings.take();
        self.client.batch_execute("COMMIT").map_err(failed(what))?;
        let warnings = self.warnings.take();
        if warnings.is_empty() {
            Ok(())
        } else {
            Err(StoreError::failed(format!(
                "postgres: {what}: the commit was not confirmed (it may be on this node only): {}",
                warnings.join("; ")
            )))
        }
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
