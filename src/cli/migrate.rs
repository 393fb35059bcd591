//! `image-ledger migrate`: creates or migrates the PostgreSQL schema, run
//! as the database's owner, so the servers can run on a role that may
//! only read and write rows.

use anyhow::{bail, Context};
use clap::Args;
use image_ledger::store::PgStore;

/// `migrate`.
#[derive(Args)]
pub struct MigrateArgs {
    /// The database (a libpq URL). Its owner's role: migrations create
    /// tables, a function and a trigger.
    #[arg(long, env = "IMAGE_LEDGER_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
}

/// Runs `migrate`.
pub fn run(args: MigrateArgs) -> anyhow::Result<()> {
    let Some(url) = args.database_url else {
        bail!("migrate needs --database-url (a sled data directory has no schema to migrate)");
    };
    let applied = PgStore::migrate(&url).context("cannot migrate the database's schema")?;
    match applied {
        0 => println!("the schema is current; nothing to do"),
        n => println!("applied {n} migration(s); the schema is current"),
    }
    Ok(())
}
