//! The stored read side in SQL: one transaction a save, kept by one
//! replica at a time and checked against the stored checkpoint.

use super::connection::failed;
use super::{to_i64, to_u64, upsert, PgStore, READ_SIDE_LOCK};
use crate::chunks::chunked;
use crate::store::{
    Entries, ProjectionOp, ProjectionSave, ProjectionStatus, ProjectionStore, SaveMode, Saved,
    StoreError, VisitEntry,
};

/// Rows handed from the connection's thread to a visit at a time.
const VISIT_CHUNK: usize = 1024;

/// Inserts or replaces the projection entries `$1` → `$2`.
const UPSERT_PROJECTIONS: &str = "INSERT INTO ledger_projections (key, value) \
     SELECT * FROM UNNEST($1::bytea[], $2::bytea[]) \
     ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value";

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
    fn projection_status(&self) -> Result<ProjectionStatus, StoreError> {
        let checkpoint = self.connection.run(|client| {
            client
                .query_opt("SELECT position FROM ledger_checkpoint", &[])
                .map_err(failed("cannot read the checkpoint"))?
                .map(|row| to_u64(row.get(0)))
                .transpose()
        })?;
        // Every save is one transaction: none is ever left part way.
        Ok(ProjectionStatus {
            checkpoint,
            pending: Vec::new(),
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

    /// One statement, so one snapshot, streamed: the connection's thread
    /// reads rows as they come and hands them over a chunk at a time.
    fn projection_visit(
        &self,
        prefix: &[u8],
        visit: &mut VisitEntry<'_>,
    ) -> Result<(), StoreError> {
        let mut params = vec![prefix.to_vec()];
        let sql = match past_prefix(prefix) {
            Some(end) => {
                params.push(end);
                "SELECT key, value FROM ledger_projections \
                 WHERE key >= $1 AND key < $2 ORDER BY key"
            }
            None => "SELECT key, value FROM ledger_projections WHERE key >= $1 ORDER BY key",
        };
        let (mut tx, rx) = chunked::<(Vec<u8>, Vec<u8>)>(VISIT_CHUNK, 4);
        std::thread::scope(|scope| {
            let reader = scope.spawn(|| {
                self.connection.run(move |client| {
                    use postgres::fallible_iterator::FallibleIterator;
                    let mut rows = client
                        .query_raw(sql, params.iter())
                        .map_err(failed("cannot read the projections"))?;
                    while let Some(row) =
                        rows.next().map_err(failed("cannot read the projections"))?
                    {
                        if !tx.push((row.get(0), row.get(1))) {
                            // The visit stopped at an error of its own.
                            return Ok(());
                        }
                    }
                    tx.finish();
                    Ok(())
                })
            });
            let mut visited = Ok(());
            'chunks: for chunk in &rx {
                for (key, value) in chunk {
                    if let Err(err) = visit(&key, &value) {
                        visited = Err(err);
                        break 'chunks;
                    }
                }
            }
            drop(rx);
            // A panic on the other thread is one of this one.
            let read = reader
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic));
            visited.and(read)
        })
    }

    fn save_projections(&self, save: &ProjectionSave<'_>) -> Result<Saved, StoreError> {
        let (ops, checkpoint) = (save.ops, save.checkpoint);
        match save.mode {
            SaveMode::Update { from: None } => self.update(ops, checkpoint).map(|()| Saved::Done),
            SaveMode::Update { from: Some(from) } => self.update_from(ops, from, checkpoint),
            SaveMode::Replace => self.replace(ops, checkpoint).map(|()| Saved::Done),
        }
    }
}

impl PgStore {
    /// Applies `ops` and moves the checkpoint, in one transaction.
    fn update(&self, ops: &[ProjectionOp], checkpoint: u64) -> Result<(), StoreError> {
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

    /// [`Self::update`] when this replica keeps the projections and they
    /// are still at `from`.
    fn update_from(
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

    /// Drops every entry and writes `ops`, in one transaction.
    fn replace(&self, ops: &[ProjectionOp], checkpoint: u64) -> Result<(), StoreError> {
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

/// A save is one transaction: one that fails part way leaves nothing.
#[cfg(any(test, feature = "test-hooks"))]
impl crate::store::CutShort for PgStore {
    fn save_cut_short(&self, _: &[ProjectionOp], _: u64, _: usize) -> Result<(), StoreError> {
        Ok(())
    }
}
