//! The store on PostgreSQL: the log, its idempotency records and the read
//! side in tables of one database ([`migrations`](schema)), so several
//! replicas can share them.
//!
//! An append is one transaction that updates the single head row, checked
//! against the head the batch was decided on, and inserts the records and
//! idempotency records: the row's lock serialises appends, so they commit
//! in position order and a reader tailing by position never skips a row.
//! A commit is durable when it returns (with PostgreSQL's default
//! `synchronous_commit`), so the flush and sync steps have nothing left to
//! do. A save of the read side is one transaction too, so it never leaves a
//! save part way.
//!
//! Several replicas may share the database. Appends go through a
//! connection of their own, so a replica that lost a race can hold the
//! head row's lock (its turn) while it catches up and decides again;
//! everything else (scans, the read side) goes through a second one, and
//! [`watch`] opens one more for each watcher. One replica at a time keeps
//! the stored read side: the one whose session holds [`READ_SIDE_LOCK`].

mod append;
mod connection;
mod projections;
mod schema;
mod watch;

use postgres::GenericClient;

use self::append::lock_head;
use self::connection::{failed, Connection};
use super::{AppendBatch, Entries, EventLog, Head, SharedLog, StoreError, Watcher};

/// Any number, the same in every replica: the session lock of the replica
/// that keeps the stored read side.
const READ_SIDE_LOCK: i64 = 0x1ed9e9;
/// The advisory lock of the replica that records ended shares.
const SWEEP_LOCK: i64 = 0x1ed9ea;

/// Records read per query while scanning.
const SCAN_PAGE: i64 = 1_000;

/// One page of a scan: (cursor, position, record) rows, where the cursor
/// (a position, or a stream version) is what the next page starts after.
type Page = Vec<(i64, i64, Vec<u8>)>;

/// The PostgreSQL-backed event store.
pub struct PgStore {
    url: String,
    /// Appends and turns only.
    log: Connection,
    /// Every other call.
    connection: Connection,
}

impl PgStore {
    /// Connects to the database at `url` and creates or migrates its schema.
    /// Refuses a schema newer than this build knows.
    pub fn open(url: &str) -> Result<Self, StoreError> {
        let connection = Connection::open(url, "ledger-postgres")?;
        connection.run(|client| schema::migrate(client).map(drop))?;
        Self::with(url, connection)
    }

    /// Connects to a database whose schema is current, changing nothing
    /// in it (no DDL): what a role with DML rights only, an auditor's
    /// SELECT-only role, or a hot standby can open.
    pub fn open_existing(url: &str) -> Result<Self, StoreError> {
        let connection = Connection::open(url, "ledger-postgres")?;
        connection.run(schema::check)?;
        Self::with(url, connection)
    }

    /// Creates or migrates the schema of the database at `url`; returns
    /// how many migrations it applied (0 when it was current).
    pub fn migrate(url: &str) -> Result<usize, StoreError> {
        Connection::open(url, "ledger-postgres-migrate")?.run(schema::migrate)
    }

    fn with(url: &str, connection: Connection) -> Result<Self, StoreError> {
        let log = Connection::open(url, "ledger-postgres-log")?;
        Ok(Self {
            url: url.to_owned(),
            log,
            connection,
        })
    }

    /// Empties the ledger (log, idempotency records, read side), leaving
    /// the schema: what undoes an import that a bad line stopped.
    pub(crate) fn clear(&self) -> Result<(), StoreError> {
        self.connection.run(|client| {
            client
                .batch_execute(
                    "BEGIN; \
                     TRUNCATE ledger_events, ledger_tokens, ledger_projections, ledger_checkpoint; \
                     UPDATE ledger_head SET position = 0, hash = decode(repeat('00', 32), 'hex'); \
                     COMMIT",
                )
                .map_err(failed("cannot empty the database"))
        })
    }
}

/// Visits the rows of the pages `page` reads, each after the last row's
/// cursor, until a short page or until `visit` returns `false`.
fn visit_pages(
    mut after: i64,
    visit: &mut dyn FnMut(u64, &[u8]) -> bool,
    mut page: impl FnMut(i64) -> Result<Page, StoreError>,
) -> Result<(), StoreError> {
    loop {
        let rows = page(after)?;
        let full = rows.len() as i64 == SCAN_PAGE;
        for (cursor, position, record) in rows {
            if !visit(to_u64(position)?, &record) {
                return Ok(());
            }
            after = cursor;
        }
        if !full {
            return Ok(());
        }
    }
}

fn to_i64(value: u64) -> i64 {
    // Positions and versions stay far below i64::MAX; a query bound of
    // u64::MAX means "all".
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64) -> Result<u64, StoreError> {
    u64::try_from(value)
        .map_err(|_| StoreError::Corrupt(format!("a stored position or version is {value}")))
}

fn hash_of(bytes: &[u8]) -> Result<[u8; 32], StoreError> {
    bytes
        .try_into()
        .map_err(|_| StoreError::Corrupt("the stored head hash is not 32 bytes".into()))
}

fn read_head(client: &mut impl GenericClient) -> Result<Head, StoreError> {
    let row = client
        .query_one("SELECT position, hash FROM ledger_head", &[])
        .map_err(failed("cannot read the head"))?;
    Ok(Head {
        position: to_u64(row.get(0))?,
        hash: hash_of(row.get(1))?,
    })
}

impl EventLog for PgStore {
    fn head(&self) -> Result<Head, StoreError> {
        self.connection.run(read_head)
    }

    fn write(&self, batch: &AppendBatch) -> Result<(), StoreError> {
        match self.append_in_turn(batch, false)? {
            None => Ok(()),
            Some(found) => Err(StoreError::Conflict {
                expected: batch.expected_head.position,
                found: found.position,
            }),
        }
    }

    fn shared(&self) -> Option<&dyn SharedLog> {
        Some(self)
    }

    fn flush_to_os(&self) -> Result<(), StoreError> {
        // The commit in `write` returned only once PostgreSQL had made it
        // durable: nothing is left to hand over.
        Ok(())
    }

    fn sync_to_disk(&self) -> Result<(), StoreError> {
        // As for `flush_to_os`: the commit was already durable.
        Ok(())
    }

    fn recover(&self) -> Result<(), StoreError> {
        // Nothing is left half done here: the database answering is enough.
        self.head().map(drop)
    }

    fn scan(&self, from: u64, visit: &mut dyn FnMut(u64, &[u8]) -> bool) -> Result<(), StoreError> {
        visit_pages(to_i64(from).saturating_sub(1), visit, |after| {
            self.connection.run(move |client| {
                let rows = client
                    .query(
                        "SELECT position, position, record FROM ledger_events \
                         WHERE position > $1 ORDER BY position LIMIT $2",
                        &[&after, &SCAN_PAGE],
                    )
                    .map_err(failed("cannot read the log"))?;
                Ok(rows
                    .iter()
                    .map(|row| (row.get(0), row.get(1), row.get(2)))
                    .collect())
            })
        })
    }

    fn read_at(&self, position: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let position = to_i64(position);
        self.connection.run(move |client| {
            Ok(client
                .query_opt(
                    "SELECT record FROM ledger_events WHERE position = $1",
                    &[&position],
                )
                .map_err(failed("cannot read a record"))?
                .map(|row| row.get(0)))
        })
    }

    fn read_many(&self, positions: &[u64]) -> Result<Vec<(u64, Vec<u8>)>, StoreError> {
        let positions: Vec<i64> = positions.iter().map(|p| to_i64(*p)).collect();
        self.connection.run(move |client| {
            let rows = client
                .query(
                    "SELECT position, record FROM ledger_events WHERE position = ANY($1) \
                     ORDER BY position",
                    &[&positions],
                )
                .map_err(failed("cannot read records"))?;
            Ok(rows
                .iter()
                .map(|row| (u64::try_from(row.get::<_, i64>(0)).unwrap_or(0), row.get(1)))
                .collect())
        })
    }

    fn stream_versions(&self, aggregate_ids: &[&str], as_of: u64) -> Result<Vec<u64>, StoreError> {
        let ids: Vec<String> = aggregate_ids.iter().map(|id| (*id).to_owned()).collect();
        let as_of = to_i64(as_of);
        self.connection.run(move |client| {
            let rows = client
                .query(
                    "SELECT (SELECT max(aggregate_version) FROM ledger_events \
                             WHERE aggregate_id = ids.id AND position <= $2) \
                     FROM UNNEST($1::text[]) WITH ORDINALITY AS ids(id, n) ORDER BY n",
                    &[&ids, &as_of],
                )
                .map_err(failed("cannot read the streams' versions"))?;
            rows.iter()
                .map(|row| to_u64(row.get::<_, Option<i64>>(0).unwrap_or(0)))
                .collect()
        })
    }

    fn scan_stream(
        &self,
        aggregate_id: &str,
        visit: &mut dyn FnMut(u64, &[u8]) -> bool,
    ) -> Result<(), StoreError> {
        visit_pages(0, visit, |after| {
            let id = aggregate_id.to_owned();
            self.connection.run(move |client| {
                let rows = client
                    .query(
                        "SELECT aggregate_version, position, record FROM ledger_events \
                         WHERE aggregate_id = $1 AND aggregate_version > $2 \
                         ORDER BY aggregate_version LIMIT $3",
                        &[&id, &after, &SCAN_PAGE],
                    )
                    .map_err(failed("cannot read a stream"))?;
                Ok(rows
                    .iter()
                    .map(|row| (row.get(0), row.get(1), row.get(2)))
                    .collect())
            })
        })
    }

    fn token(&self, key: &[u8]) -> Result<Option<Vec<u8>>, StoreError> {
        let key = key.to_vec();
        self.connection.run(move |client| {
            let row = client
                .query_opt("SELECT value FROM ledger_tokens WHERE key = $1", &[&key])
                .map_err(failed("cannot read an idempotency record"))?;
            Ok(row.map(|row| row.get(0)))
        })
    }

    fn tokens(&self) -> Result<Entries, StoreError> {
        self.connection.run(|client| {
            let rows = client
                .query("SELECT key, value FROM ledger_tokens ORDER BY key", &[])
                .map_err(failed("cannot read the idempotency records"))?;
            Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
        })
    }
}

/// Turns and watchers: how replicas that share the database take part.
impl SharedLog for PgStore {
    fn write_or_take_turn(&self, batch: &AppendBatch) -> Result<Option<Head>, StoreError> {
        self.append_in_turn(batch, true)
    }

    fn take_turn(&self) -> Result<Head, StoreError> {
        self.log.run_in_session(|session| {
            if std::mem::take(&mut session.in_turn) {
                let _ = session.client.batch_execute("ROLLBACK");
            }
            let locked = session
                .client
                .batch_execute("BEGIN")
                .map_err(failed("cannot start a turn"))
                .and_then(|()| lock_head(&mut session.client));
            match locked {
                Ok(head) => {
                    session.in_turn = true;
                    Ok(head)
                }
                Err(err) => {
                    let _ = session.client.batch_execute("ROLLBACK");
                    Err(err)
                }
            }
        })
    }

    fn end_turn(&self) -> Result<(), StoreError> {
        self.log.run_in_session(|session| {
            if std::mem::take(&mut session.in_turn) {
                session
                    .client
                    .batch_execute("ROLLBACK")
                    .map_err(failed("cannot end a turn"))?;
            }
            Ok(())
        })
    }

    fn watcher(&self) -> Result<Box<dyn Watcher>, StoreError> {
        Ok(Box::new(watch::PgWatcher::open(&self.url)?))
    }

    fn claim_sweep(&self) -> Result<bool, StoreError> {
        // A session-level advisory lock: held while this connection lives,
        // released by the database when it ends (a crash, a lost network).
        self.connection.run_in_session(|session| {
            if !session.sweeps {
                session.sweeps = session
                    .client
                    .query_one("SELECT pg_try_advisory_lock($1)", &[&SWEEP_LOCK])
                    .map_err(connection::failed("cannot take the sweep's lock"))?
                    .get(0);
            }
            Ok(session.sweeps)
        })
    }
}

/// Inserts or replaces the idempotency records `$1` → `$2`.
const UPSERT_TOKENS: &str = "INSERT INTO ledger_tokens (key, value) \
     SELECT * FROM UNNEST($1::bytea[], $2::bytea[]) \
     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value";

/// Runs an upsert (`$1` keys, `$2` values) for `keys` and `values`, when there are any.
pub(super) fn upsert(
    tx: &mut impl GenericClient,
    sql: &str,
    keys: &[Vec<u8>],
    values: &[Vec<u8>],
) -> Result<(), postgres::Error> {
    if !keys.is_empty() {
        tx.execute(sql, &[&keys, &values])?;
    }
    Ok(())
}

#[cfg(test)]
mod tests;
