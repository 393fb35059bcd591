//! `image-ledger projections`: maintenance of the stored read side.

use std::time::Instant;

use anyhow::Context;
use clap::Subcommand;

use image_ledger::progress::{Progress, Unit};

use image_ledger::store::{Location, ProjectionStoreExt};

use super::open_store;

/// `projections …`
#[derive(Subcommand)]
pub enum ProjectionsCmd {
    /// Drop the projections and rebuild them from the log (server stopped).
    Rebuild(RebuildArgs),
}

/// `projections rebuild`.
#[derive(clap::Args)]
pub struct RebuildArgs {
    #[command(flatten)]
    location: Location,
    /// Only compare the stored projections with a fresh replay, writing
    /// nothing (an auditor's read-only role or a hot standby will do);
    /// exits 1 when they differ.
    #[arg(long)]
    check: bool,
}

/// Runs a `projections` command.
pub fn run(command: ProjectionsCmd) -> anyhow::Result<()> {
    match command {
        ProjectionsCmd::Rebuild(args) if args.check => check(&args.location),
        ProjectionsCmd::Rebuild(args) => rebuild(args.location),
    }
}

fn check(location: &Location) -> anyhow::Result<()> {
    use image_ledger::projection::{check_projections, ProjectionCheck};
    let started = Instant::now();
    let store = open_store(location)?;
    let total = store.projection_checkpoint()?.unwrap_or(0);
    let progress = Progress::on_terminal("replaying", Unit::Events, Some(total));
    let checked = check_projections(store.as_ref(), &progress);
    progress.finish();
    match checked.context("checking the projections failed")? {
        ProjectionCheck::Equal { checkpoint, head } => println!(
            "the stored projections equal a fresh replay up to their checkpoint {checkpoint} \
             (the log's head is {head}{}) in {:.2?}",
            if checkpoint < head { "; the next start catches them up" } else { "" },
            started.elapsed()
        ),
        ProjectionCheck::Unfinished { pending } => println!(
            "a write of the projections towards {pending:?} was cut short: the next start \
             finishes it (audit verify checks what it left)"
        ),
        ProjectionCheck::Missing => println!("no projections are stored: the next start builds them"),
        ProjectionCheck::Differs { key } => anyhow::bail!(
            "the stored projections differ from a fresh replay at key {:?}: run `projections rebuild`",
            String::from_utf8_lossy(&key)
        ),
    }
    Ok(())
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
