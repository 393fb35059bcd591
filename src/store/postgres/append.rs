//! An append in SQL: the rows of a batch, the statements that write them
//! behind the head row's check, and the turn a lost race leaves held.

use postgres::GenericClient;

use super::connection::failed;
use super::{hash_of, to_i64, to_u64, upsert, PgStore, UPSERT_TOKENS};
use crate::store::{AppendBatch, Head, StoreError};

impl PgStore {
    /// Appends `batch` in one transaction (inside the turn's when this
    /// process holds it). When the head is not the expected one, returns
    /// the head found: with `keep_turn`, the transaction stays open holding
    /// the head row (the turn), else it is rolled back.
    pub(super) fn append_in_turn(
        &self,
        batch: &AppendBatch,
        keep_turn: bool,
    ) -> Result<Option<Head>, StoreError> {
        let rows = Rows::of(batch);
        self.log.run_in_session(move |session| {
            let client = &mut session.client;
            if !std::mem::take(&mut session.in_turn) {
                client
                    .batch_execute("BEGIN")
                    .map_err(failed("cannot start an append"))?;
            }
            let result = rows.insert(client);
            let ended = match &result {
                Ok(None) => session.commit("cannot commit an append"),
                Ok(Some(_)) if keep_turn => {
                    session.in_turn = true;
                    return result;
                }
                _ => session
                    .client
                    .batch_execute("ROLLBACK")
                    .map_err(failed("cannot roll an append back")),
            };
            match (result, ended) {
                (Err(err), _) | (Ok(_), Err(err)) => Err(err),
                (Ok(found), Ok(())) => Ok(found),
            }
        })
    }
}

/// The head, locked until the transaction ends.
pub(super) fn lock_head(client: &mut impl GenericClient) -> Result<Head, StoreError> {
    let row = client
        .query_one("SELECT position, hash FROM ledger_head FOR UPDATE", &[])
        .map_err(failed("cannot lock the head"))?;
    Ok(Head {
        position: to_u64(row.get(0))?,
        hash: hash_of(row.get(1))?,
    })
}

/// An append's rows, ready for the statements that write them.
pub(super) struct Rows {
    expected: Head,
    head: (i64, Vec<u8>),
    positions: Vec<i64>,
    aggregates: Vec<String>,
    versions: Vec<i64>,
    records: Vec<Vec<u8>>,
    keys: Vec<Vec<u8>>,
    values: Vec<Vec<u8>>,
    expired: Vec<Vec<u8>>,
}

impl Rows {
    /// The rows of `batch`. One of no records leaves the head where it is
    /// (checked all the same) and only removes expired idempotency records.
    fn of(batch: &AppendBatch) -> Self {
        let (keys, values) = batch.tokens.iter().cloned().unzip();
        let head = batch
            .records
            .last()
            .map_or(batch.expected_head, |last| Head {
                position: last.position,
                hash: last.hash,
            });
        Self {
            expected: batch.expected_head,
            head: (to_i64(head.position), head.hash.to_vec()),
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
            expired: batch.expired_tokens.clone(),
        }
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
        // Expired idempotency records first: a token of this append may
        // take one's key anew.
        if !self.expired.is_empty() {
            client
                .execute(
                    "DELETE FROM ledger_tokens WHERE key = ANY($1)",
                    &[&self.expired],
                )
                .map_err(failed("cannot remove expired idempotency records"))?;
        }
        upsert(client, UPSERT_TOKENS, &self.keys, &self.values)
            .map_err(failed("cannot insert the idempotency records"))?;
        Ok(None)
    }
}
