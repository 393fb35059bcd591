//! The database's schema: numbered migrations in `migrations/`, applied in
//! order by whichever replica starts first (under an advisory lock, so two
//! starting at once do not both apply them), and a refusal to run on a
//! schema newer than this build knows.

use postgres::Client;

use super::connection::failed;
use crate::store::StoreError;

/// The migrations, in order; a migration's number is its place here plus one.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_log.sql"),
    include_str!("migrations/0002_notify.sql"),
];

/// Any number, the same in every replica: the advisory lock of migrations.
const MIGRATION_LOCK: i64 = 0x1ed9e7;

/// The schema version this build knows.
pub(super) fn known() -> i32 {
    MIGRATIONS.len() as i32
}

/// Brings the schema to [`known`], or refuses a newer one.
pub(super) fn migrate(client: &mut Client) -> Result<(), StoreError> {
    let mut tx = client
        .transaction()
        .map_err(failed("cannot start the migration"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(failed("cannot take the migration lock"))?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS ledger_schema (version integer NOT NULL)")
        .map_err(failed("cannot create the schema table"))?;
    let version: i32 = match tx
        .query_opt("SELECT version FROM ledger_schema", &[])
        .map_err(failed("cannot read the schema version"))?
    {
        Some(row) => row.get(0),
        None => {
            tx.execute("INSERT INTO ledger_schema (version) VALUES (0)", &[])
                .map_err(failed("cannot record the schema version"))?;
            0
        }
    };
    if version > known() {
        return Err(StoreError::failed(format!(
            "the database's schema is version {version}, newer than this build of image-ledger \
             knows ({}); run a newer build",
            known()
        )));
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.batch_execute(sql)
            .map_err(failed("cannot apply a migration"))?;
        tracing::info!(version = index + 1, "applied a schema migration");
    }
    tx.execute("UPDATE ledger_schema SET version = $1", &[&known()])
        .map_err(failed("cannot record the schema version"))?;
    tx.commit().map_err(failed("cannot commit the migration"))
}
