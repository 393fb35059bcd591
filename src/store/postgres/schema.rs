//! The database's schema: numbered migrations in `migrations/`, applied in
//! order by `image-ledger migrate` or whichever replica starts first (under
//! an advisory lock, so two starting at once do not both apply them), and a
//! refusal to run on a schema newer than this build knows. A schema that is
//! current is only read (no DDL, no lock): a role with DML rights only, or
//! SELECT only, on a primary or a hot standby, opens it.

use postgres::Client;

use super::connection::failed;
use crate::store::StoreError;

/// The migrations, in order; a migration's number is its place here plus one.
const MIGRATIONS: &[&str] = &[
    include_str!("migrations/0001_log.sql"),
    include_str!("migrations/0002_notify.sql"),
    include_str!("migrations/0003_read_side_room.sql"),
];

/// What a failed migration says: most often, a role without the right.
const OWNER_NEEDED: &str = "cannot create or migrate the schema (run `image-ledger migrate \
     --database-url URL` as the database's owner, then serve on a role with row rights)";

/// Any number, the same in every replica: the advisory lock of migrations.
const MIGRATION_LOCK: i64 = 0x1ed9e7;

/// The schema version this build knows.
pub(super) fn known() -> i32 {
    MIGRATIONS.len() as i32
}

/// The schema's version; `None` when the database has no ledger schema.
fn version(client: &mut impl postgres::GenericClient) -> Result<Option<i32>, StoreError> {
    let exists: bool = client
        .query_one("SELECT to_regclass('ledger_schema') IS NOT NULL", &[])
        .map_err(failed("cannot look for the schema"))?
        .get(0);
    if !exists {
        return Ok(None);
    }
    Ok(client
        .query_opt("SELECT version FROM ledger_schema", &[])
        .map_err(failed("cannot read the schema version"))?
        .map(|row| row.get(0)))
}

/// Checks that the schema is the one this build knows, changing nothing.
pub(super) fn check(client: &mut Client) -> Result<(), StoreError> {
    match version(client)? {
        Some(version) if version == known() => Ok(()),
        Some(version) if version > known() => Err(newer(version)),
        found => Err(StoreError::failed(format!(
            "the database's ledger schema is {}, this build needs version {}: run \
             `image-ledger migrate --database-url URL` as the database's owner",
            found.map_or("missing".into(), |v| format!("version {v}")),
            known()
        ))),
    }
}

fn newer(version: i32) -> StoreError {
    StoreError::failed(format!(
        "the database's schema is version {version}, newer than this build of image-ledger \
         knows ({}); run a newer build",
        known()
    ))
}

/// Brings the schema to [`known`], or refuses a newer one; returns how
/// many migrations it applied. A current schema is only read.
pub(super) fn migrate(client: &mut Client) -> Result<usize, StoreError> {
    match version(client)? {
        Some(version) if version == known() => return Ok(0),
        Some(version) if version > known() => return Err(newer(version)),
        _ => {}
    }
    let mut tx = client
        .transaction()
        .map_err(failed("cannot start the migration"))?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .map_err(failed("cannot take the migration lock"))?;
    // Read again under the lock: another process may have migrated.
    let version = match version(&mut tx)? {
        Some(version) => version,
        None => {
            tx.batch_execute("CREATE TABLE ledger_schema (version integer NOT NULL)")
                .map_err(failed(OWNER_NEEDED))?;
            tx.execute("INSERT INTO ledger_schema (version) VALUES (0)", &[])
                .map_err(failed("cannot record the schema version"))?;
            0
        }
    };
    if version > known() {
        return Err(newer(version));
    }
    let applied = MIGRATIONS.len().saturating_sub(version as usize);
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        tx.batch_execute(sql).map_err(failed(OWNER_NEEDED))?;
        tracing::info!(version = index + 1, "applied a schema migration");
    }
    tx.execute("UPDATE ledger_schema SET version = $1", &[&known()])
        .map_err(failed("cannot record the schema version"))?;
    tx.commit().map_err(failed("cannot commit the migration"))?;
    Ok(applied)
}
