//! The `image-ledger` command: run the server, or maintain a data directory.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use image_ledger::config::{parse_regions, Config};
use image_ledger::domain::Policy;
use image_ledger::store::SledStore;

/// The image-sharing ledger.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the gRPC server.
    Serve(ServeArgs),
    /// Maintain the read side.
    Projections {
        #[command(subcommand)]
        command: ProjectionsCmd,
    },
}

#[derive(Subcommand)]
enum ProjectionsCmd {
    /// Drop the projections and rebuild them from the log (server stopped).
    Rebuild(DataDirArg),
}

#[derive(Args)]
struct DataDirArg {
    /// Directory of the sled store.
    #[arg(long, env = "IMAGE_LEDGER_DATA_DIR", default_value = "./data")]
    data_dir: PathBuf,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "IMAGE_LEDGER_ADDR", default_value = "127.0.0.1:50051")]
    addr: SocketAddr,
    #[command(flatten)]
    data: DataDirArg,
    /// Most accounts one image may be shared with.
    #[arg(long, env = "IMAGE_LEDGER_MAX_SHARES_PER_IMAGE", default_value_t = 50)]
    max_shares_per_image: usize,
    /// Most accounts one ShareImage or CancelImageSharing call may name.
    #[arg(long, env = "IMAGE_LEDGER_MAX_ACCOUNTS_PER_CALL", default_value_t = 50)]
    max_accounts_per_call: usize,
    /// Custom-image quota per account and region.
    #[arg(long, env = "IMAGE_LEDGER_IMAGE_QUOTA", default_value_t = 500)]
    image_quota: u32,
    /// Comma-separated regions; empty means the built-in list of public regions.
    #[arg(long, env = "IMAGE_LEDGER_REGIONS", default_value = "")]
    regions: String,
    /// sled page cache size in MiB.
    #[arg(long, env = "IMAGE_LEDGER_CACHE_MB", default_value_t = 256)]
    cache_mb: u64,
    /// Seconds a stopping server waits for clients to close their connections.
    #[arg(long, env = "IMAGE_LEDGER_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    shutdown_grace_secs: u64,
}

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Cmd::Serve(args) => serve(args),
        Cmd::Projections {
            command: ProjectionsCmd::Rebuild(args),
        } => rebuild(args),
    }
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let regions = parse_regions(&args.regions).map_err(anyhow::Error::msg)?;
    anyhow::ensure!(
        args.max_shares_per_image > 0 && args.max_accounts_per_call > 0,
        "the share limits must be at least 1"
    );
    let config = Config {
        addr: args.addr,
        data_dir: args.data.data_dir,
        policy: Policy {
            max_shares_per_image: args.max_shares_per_image,
            max_accounts_per_call: args.max_accounts_per_call,
            image_quota: args.image_quota,
            regions,
        },
        cache_bytes: args.cache_mb.saturating_mul(1024 * 1024),
        shutdown_grace: std::time::Duration::from_secs(args.shutdown_grace_secs),
    };
    let runtime = tokio::runtime::Runtime::new().context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let data_dir = config.data_dir.display().to_string();
        let mut server = image_ledger::server::start(config)
            .await
            .with_context(|| format!("cannot start the server on data directory {data_dir}"))?;
        // A plain line on stdout for scripts that start the server on port 0.
        println!("listening on {}", server.local_addr());
        let stop = server.take_stop();
        let serving = tokio::spawn(server.wait());
        shutdown_signal().await;
        tracing::info!("shutting down: finishing in-flight calls");
        drop(stop);
        serving.await.context("the server task failed")??;
        Ok(())
    })
}

fn rebuild(args: DataDirArg) -> anyhow::Result<()> {
    let started = std::time::Instant::now();
    let store = Arc::new(
        SledStore::open(&args.data_dir, 64 * 1024 * 1024)
            .with_context(|| format!("cannot open {}", args.data_dir.display()))?,
    );
    let (state, head) = image_ledger::app::rebuild_projections(store.as_ref())
        .context("rebuilding the projections failed")?;
    println!(
        "rebuilt the projections from {} events ({} images, {} accounts) in {:.2?}",
        head.position,
        state.images().count(),
        state.accounts().count(),
        started.elapsed()
    );
    Ok(())
}

async fn shutdown_signal() {
    let interrupt = async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for SIGINT");
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
