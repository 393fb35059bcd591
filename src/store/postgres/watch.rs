//! A watcher of the shared log: a connection of its own that listens on
//! the channel the head row's trigger notifies at every append
//! (`migrations/0002_notify.sql`) with the new head's position. The
//! notification is only a wake-up: whoever acts on it reads the log, so a
//! lost one costs a poll's delay, never a record.

use std::time::Duration;

use postgres::fallible_iterator::FallibleIterator;
use postgres::Client;

use super::connection::{connect, failed};
use super::read_head;
use crate::store::{Head, StoreError, Watcher};

/// The channel every append notifies.
const CHANNEL: &str = "ledger_appended";

pub(super) struct PgWatcher {
    url: String,
    /// `None` after the connection was lost, until the next call reconnects.
    client: Option<Client>,
}

impl PgWatcher {
    pub(super) fn open(url: &str) -> Result<Self, StoreError> {
        let mut watcher = Self {
            url: url.to_owned(),
            client: None,
        };
        watcher.client()?;
        Ok(watcher)
    }

    /// The connection, listening, opened again if it was lost.
    fn client(&mut self) -> Result<&mut Client, StoreError> {
        if self.client.as_ref().is_none_or(Client::is_closed) {
            self.client = None;
            let mut client = connect(&self.url)?;
            client
                .batch_execute(&format!("LISTEN {CHANNEL}"))
                .map_err(failed("cannot listen for appends"))?;
            self.client = Some(client);
        }
        self.client
            .as_mut()
            .ok_or_else(|| StoreError::failed("postgres: not connected"))
    }

    /// Runs `work` on the connection, dropping it when the call fails, so
    /// the next one reconnects. A connection that was open before may have
    /// died unseen (a failover, a restart of the server): a call that
    /// fails on one is tried once more on a new connection.
    fn with<T>(
        &mut self,
        mut work: impl FnMut(&mut Client) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let reused = self.client.is_some();
        let result = work(self.client()?);
        if result.is_ok() {
            return result;
        }
        self.client = None;
        if !reused {
            return result;
        }
        let retried = work(self.client()?);
        if retried.is_err() {
            self.client = None;
        }
        retried
    }
}

impl Watcher for PgWatcher {
    fn head(&mut self) -> Result<Head, StoreError> {
        self.with(read_head)
    }

    fn wait(&mut self, timeout: Duration) -> Result<u64, StoreError> {
        self.with(|client| {
            let mut newest = None;
            {
                let mut notifications = client.notifications();
                // The first one, or none within the timeout; then whatever
                // else is already here, so a burst of appends is one wake-up.
                let first = notifications
                    .timeout_iter(timeout)
                    .next()
                    .map_err(failed("cannot wait for appends"))?;
                let mut pending = notifications.iter();
                let mut next = first;
                while let Some(notification) = next {
                    let announced = notification.payload().parse::<u64>().ok();
                    newest = newest.max(announced);
                    next = pending.next().map_err(failed("cannot wait for appends"))?;
                }
            }
            match newest {
                Some(position) => Ok(position),
                None => Ok(read_head(client)?.position),
            }
        })
    }
}
