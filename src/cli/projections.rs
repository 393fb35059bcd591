//! `image-ledger projections`: maintenance of the stored read side.

use std::time::Instant;

use anyhow::Context;
use clap::Subcommand;

use image_ledger::progress::{Progress, Unit};

use image_ledger::store::Location;

use super::open_store;

/// `projections …`
#[derive(Subcommand)]
pub enum ProjectionsCmd {
    /// Drop the projections and rebuild them from the log (server stopped).
    Rebuild(Location),
}

/// Runs a `projections` command.
pub fn run(command: ProjectionsCmd) -> anyhow::Result<()> {
    match command {
        ProjectionsCmd::Rebuild(args) => rebuild(args),
    }
}

fn rebuild(args: Location) -> anyhow::Result<()> {
    let started = Instant::now();
    let store = open_store(&args)?;
    let total = store.head()?.position;
    let progress = Progress::on_terminal("replaying", Unit::Events, Some(total));
    let rebuilt = image_ledger::app::rebuild_projections(store.as_ref(), &progress);
    progress.finish();
    let (state, head) = rebuilt.context("rebuilding the projections failed")?;
    println!(
        "rebuilt the projections from {} events ({} images, {} accounts) in {:.2?}",
        head.position,
        state.images().count(),
        state.accounts().count(),
        started.elapsed()
    );
    Ok(())
}
