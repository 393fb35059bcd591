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

mod connection;
mod schema;
mod watch;

use postgres::GenericClient;

use self::connection::{failed, Connection};
use super::{
    AppendBatch, Entries, EventLog, Head, ProjectionOp, ProjectionStore, Saved, StoreError, Watcher,
};

/// Any number, the same in every replica: the session lock of the replica
/// that keeps the stored read side.
const READ_SIDE_LOCK: i64 = 0x1ed9e9;

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
        connection.run(schema::migrate)?;
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

impl PgStore {
    /// Appends `batch` in one transaction (inside the turn's when this
    /// process holds it). When the head is not the expected one, returns
    /// the head found: with `keep_turn`, the transaction stays open holding
    /// the head row (the turn), else it is rolled back.
    fn append_in_turn(
        &self,
        batch: &AppendBatch,
        keep_turn: bool,
    ) -> Result<Option<Head>, StoreError> {
        let Some(rows) = Rows::of(batch) else {
            return Ok(None);
        };
        self.log.run_in_session(move |session| {
            let client = &mut session.client;
            if !std::mem::take(&mut session.in_turn) {
                client
                    .batch_execute("BEGIN")
                    .map_err(failed("cannot start an append"))?;
            }
            let result = rows.insert(client);
            let end = match &result {
                Ok(None) => "COMMIT",
                Ok(Some(_)) if keep_turn => {
                    session.in_turn = true;
                    return result;
                }
                _ => "ROLLBACK",
            };
            let ended = client
                .batch_execute(end)
                .map_err(failed("cannot commit an append"));
            match (result, ended) {
                (Err(err), _) | (Ok(_), Err(err)) => Err(err),
                (Ok(found), Ok(())) => Ok(found),
            }
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

/// The head, locked until the transaction ends.
fn lock_head(client: &mut impl GenericClient) -> Result<Head, StoreError> {
    let row = client
        .query_one("SELECT position, hash FROM ledger_head FOR UPDATE", &[])
        .map_err(failed("cannot lock the head"))?;
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

    fn write_or_take_turn(&self, batch: &AppendBatch) -> Result<Option<Head>, StoreError> {
        self.append_in_turn(batch, true)
    }

    fn shared(&self) -> bool {
        true
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

    fn watcher(&self) -> Result<Option<Box<dyn Watcher>>, StoreError> {
        Ok(Some(Box::new(watch::PgWatcher::open(&self.url)?)))
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

    fn stream_version(&self, aggregate_id: &str, as_of: u64) -> Result<u64, StoreError> {
        let (aggregate_id, as_of) = (aggregate_id.to_owned(), to_i64(as_of));
        self.connection.run(move |client| {
            let version: Option<i64> = client
                .query_one(
                    "SELECT max(aggregate_version) FROM ledger_events \
                     WHERE aggregate_id = $1 AND position <= $2",
                    &[&aggregate_id, &as_of],
                )
                .map_err(failed("cannot read a stream's version"))?
                .get(0);
            to_u64(version.unwrap_or(0))
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

    fn tokens(&self) -> Result<Entries, StoreError> {
        self.connection.run(|client| {
            let rows = client
                .query("SELECT key, value FROM ledger_tokens ORDER BY key", &[])
                .map_err(failed("cannot read the idempotency records"))?;
            Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
        })
    }

    fn remove_tokens(&self, keys: &[Vec<u8>]) -> Result<(), StoreError> {
        let keys = keys.to_vec();
        self.connection.run(move |client| {
            client
                .execute("DELETE FROM ledger_tokens WHERE key = ANY($1)", &[&keys])
                .map_err(failed("cannot remove idempotency records"))?;
            Ok(())
        })
    }
}

/// An append's rows, ready for the statements that write them.
struct Rows {
    expected: Head,
    head: (i64, Vec<u8>),
    positions: Vec<i64>,
    aggregates: Vec<String>,
    versions: Vec<i64>,
    records: Vec<Vec<u8>>,
    keys: Vec<Vec<u8>>,
    values: Vec<Vec<u8>>,
}

impl Rows {
    /// The rows of `batch`; `None` when it has no records.
    fn of(batch: &AppendBatch) -> Option<Self> {
        let last = batch.records.last()?;
        let (keys, values) = batch.tokens.iter().cloned().unzip();
        Some(Self {
            expected: batch.expected_head,
            head: (to_i64(last.position), last.hash.to_vec()),
            positions: batch.records.iter().map(|r| to_i64(r.position)).collect(),
            aggregates: batch
                .records
                .iter()
                .map(|r| r.aggregate_id.clone())
                .collect(),
            versions: batch
                .records
                .iter()
                .map(|r| to_i64(r.aggregate_version))
                .collect(),
            records: batch.records.iter().map(|r| r.bytes.clone()).collect(),
            keys,
            values,
        })
    }

    /// Moves the head, checked against the expected one, and inserts the
    /// records and idempotency records, inside the caller's transaction.
    /// When the head is another, locks it (`FOR UPDATE`, waiting for the
    /// append that holds it) and returns it, having written nothing.
    fn insert(&self, client: &mut impl GenericClient) -> Result<Option<Head>, StoreError> {
        let expected = self.expected;
        let moved = client
            .execute(
                "UPDATE ledger_head SET position = $1, hash = $2 \
                 WHERE position = $3 AND hash = $4",
                &[
                    &self.head.0,
                    &self.head.1,
                    &to_i64(expected.position),
                    &expected.hash.as_slice(),
                ],
            )
            .map_err(failed("cannot move the head"))?;
        if moved != 1 {
            return lock_head(client).map(Some);
        }
        client
            .execute(
                "INSERT INTO ledger_events (position, aggregate_id, aggregate_version, record) \
                 SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::bigint[], $4::bytea[])",
                &[
                    &self.positions,
                    &self.aggregates,
                    &self.versions,
                    &self.records,
                ],
            )
            .map_err(failed("cannot insert the records"))?;
        upsert(client, UPSERT_TOKENS, &self.keys, &self.values)
            .map_err(failed("cannot insert the idempotency records"))?;
        Ok(None)
    }
}

/// Inserts or replaces the idempotency records `$1` → `$2`.
const UPSERT_TOKENS: &str = "INSERT INTO ledger_tokens (key, value) \
     SELECT * FROM UNNEST($1::bytea[], $2::bytea[]) \
     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value";

/// Inserts or replaces the projection entries `$1` → `$2`.
const UPSERT_PROJECTIONS: &str = "INSERT INTO ledger_projections (key, value) \
     SELECT * FROM UNNEST($1::bytea[], $2::bytea[]) \
     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value";

/// Runs one of the upserts above for `keys` and `values`, when there are any.
fn upsert(
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

/// The smallest key above every key that starts with `prefix`, if any.
fn past_prefix(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

/// Writes `ops` in one transaction's statements: the deletes, then the puts.
fn apply_ops(tx: &mut postgres::Transaction<'_>, ops: &[ProjectionOp]) -> Result<(), StoreError> {
    let mut deleted = Vec::new();
    let (mut keys, mut values) = (Vec::new(), Vec::new());
    for op in ops {
        match &op.value {
            Some(value) => {
                keys.push(op.key.clone());
                values.push(value.clone());
            }
            None => deleted.push(op.key.clone()),
        }
    }
    if !deleted.is_empty() {
        tx.execute(
            "DELETE FROM ledger_projections WHERE key = ANY($1)",
            &[&deleted],
        )
        .map_err(failed("cannot delete projection entries"))?;
    }
    upsert(tx, UPSERT_PROJECTIONS, &keys, &values)
        .map_err(failed("cannot write projection entries"))?;
    Ok(())
}

fn set_checkpoint(tx: &mut postgres::Transaction<'_>, checkpoint: u64) -> Result<(), StoreError> {
    tx.execute(
        "INSERT INTO ledger_checkpoint (position) VALUES ($1) \
         ON CONFLICT (only_row) DO UPDATE SET position = EXCLUDED.position",
        &[&to_i64(checkpoint)],
    )
    .map_err(failed("cannot move the checkpoint"))?;
    Ok(())
}

impl ProjectionStore for PgStore {
    fn projection_checkpoint(&self) -> Result<Option<u64>, StoreError> {
        self.connection.run(|client| {
            client
                .query_opt("SELECT position FROM ledger_checkpoint", &[])
                .map_err(failed("cannot read the checkpoint"))?
                .map(|row| to_u64(row.get(0)))
                .transpose()
        })
    }

    fn projection_scan(&self, prefix: &[u8]) -> Result<Entries, StoreError> {
        let (start, end) = (prefix.to_vec(), past_prefix(prefix));
        self.connection.run(move |client| {
            let rows = match &end {
                Some(end) => client.query(
                    "SELECT key, value FROM ledger_projections \
                     WHERE key >= $1 AND key < $2 ORDER BY key",
                    &[&start, end],
                ),
                None => client.query(
                    "SELECT key, value FROM ledger_projections WHERE key >= $1 ORDER BY key",
                    &[&start],
                ),
            }
            .map_err(failed("cannot read the projections"))?;
            Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
        })
    }

    fn save_projections(&self, ops: &[ProjectionOp], checkpoint: u64) -> Result<(), StoreError> {
        let ops = ops.to_vec();
        self.connection.run(move |client| {
            let mut tx = client
                .transaction()
                .map_err(failed("cannot start a save of the projections"))?;
            apply_ops(&mut tx, &ops)?;
            set_checkpoint(&mut tx, checkpoint)?;
            tx.commit()
                .map_err(failed("cannot commit a save of the projections"))
        })
    }

    fn save_projections_from(
        &self,
        ops: &[ProjectionOp],
        from: u64,
        checkpoint: u64,
    ) -> Result<Saved, StoreError> {
        let ops = ops.to_vec();
        self.connection.run_in_session(move |session| {
            if !session.keeps_read_side {
                session.keeps_read_side = session
                    .client
                    .query_one("SELECT pg_try_advisory_lock($1)", &[&READ_SIDE_LOCK])
                    .map_err(failed("cannot take the read side's lock"))?
                    .get(0);
                if !session.keeps_read_side {
                    return Ok(Saved::Skipped);
                }
            }
            let mut tx = session
                .client
                .transaction()
                .map_err(failed("cannot start a save of the projections"))?;
            let stored: Option<i64> = tx
                .query_opt("SELECT position FROM ledger_checkpoint FOR UPDATE", &[])
                .map_err(failed("cannot read the checkpoint"))?
                .map(|row| row.get(0));
            if stored.unwrap_or(0) != to_i64(from) {
                return Ok(Saved::Stale);
            }
            apply_ops(&mut tx, &ops)?;
            set_checkpoint(&mut tx, checkpoint)?;
            tx.commit()
                .map_err(failed("cannot commit a save of the projections"))?;
            Ok(Saved::Done)
        })
    }

    fn projection_pending(&self) -> Result<Vec<u64>, StoreError> {
        // Every save is one transaction: none is ever left part way.
        Ok(Vec::new())
    }

    fn replace_projections(&self, ops: &[ProjectionOp], checkpoint: u64) -> Result<(), StoreError> {
        let ops = ops.to_vec();
        self.connection.run(move |client| {
            let mut tx = client
                .transaction()
                .map_err(failed("cannot start a rebuild of the projections"))?;
            tx.batch_execute("DELETE FROM ledger_projections; DELETE FROM ledger_checkpoint")
                .map_err(failed("cannot clear the projections"))?;
            apply_ops(&mut tx, &ops)?;
            set_checkpoint(&mut tx, checkpoint)?;
            tx.commit()
                .map_err(failed("cannot commit a rebuild of the projections"))
        })
    }
}

#[cfg(any(test, feature = "test-hooks"))]
pub mod testing;

#[cfg(test)]
mod tests;
