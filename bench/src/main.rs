//! The `image-ledger-bench` command: measure a server, or fill a data
//! directory with a lawful log.

mod report;

// As in the server: the filler replays and writes through the same code.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use image_ledger::domain::Policy;
use image_ledger_bench::{BenchConfig, FillPlan, Scenario, SoakConfig};

/// Measure image-ledger: each scenario against the health-check baseline.
#[derive(Parser)]
#[command(version, about, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<BenchCmd>,
    #[command(flatten)]
    args: BenchArgs,
}

#[derive(Subcommand)]
enum BenchCmd {
    /// Fill a data directory with a lawful log through the normal write path.
    Fill(FillArgs),
    /// Fill a region-sized log once, then measure the calls, the starts
    /// (after a clean stop and after a SIGKILL under load), memory, `audit
    /// verify` and the disk per event, as one table.
    Scale(ScaleArgs),
    /// Try the server's bounds: SIGKILLs under load, subscribers that never
    /// read, half a million client tokens and their expiry.
    Soak(SoakArgs),
}

/// `soak`
#[derive(Args)]
struct SoakArgs {
    /// The `image-ledger` binary to start (default: the one next to this program).
    #[arg(long)]
    server_binary: Option<PathBuf>,
    /// SIGKILLs under write load (0: skip).
    #[arg(long, default_value_t = 20)]
    kills: usize,
    /// Subscribers that never read (0: skip).
    #[arg(long, default_value_t = 10_000)]
    subscribers: usize,
    /// HTTP/2 connections that never call, past the connection cap (0: skip).
    #[arg(long, default_value_t = 4_100)]
    idle_connections: usize,
    /// Unique client tokens (0: skip).
    #[arg(long, default_value_t = 500_000)]
    tokens: u64,
    /// Their retention, seconds: the run waits it out.
    #[arg(long, default_value_t = 60)]
    token_retention_secs: u64,
    /// Starts timed with the tokens live and without tokens, alternating
    /// (medians reported); they must end within the retention.
    #[arg(long, default_value_t = 3)]
    token_starts: usize,
}

/// `scale`
#[derive(Args)]
struct ScaleArgs {
    /// The `image-ledger` binary to start (default: the one next to this program).
    #[arg(long)]
    server_binary: Option<PathBuf>,
    /// Data directory of the log; filled when it holds fewer events, kept
    /// for the next run.
    #[arg(long)]
    data_dir: PathBuf,
    /// Keep the ledger in this PostgreSQL database instead (its signing key
    /// stays in --data-dir).
    #[arg(long, env = "IMAGE_LEDGER_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Events the log holds (rounded up to end with a whole round of shares).
    #[arg(long, default_value_t = 10_000_000)]
    events: u64,
    /// Accounts.
    #[arg(long, default_value_t = 100_000)]
    accounts: u64,
    /// Images.
    #[arg(long, default_value_t = 1_000_000)]
    images: u64,
    /// Measured seconds per scenario and round.
    #[arg(long, default_value_t = 5.0)]
    seconds: f64,
    /// Rounds of the call scenarios.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
}

/// The load generator's settings.
#[derive(Args)]
struct BenchArgs {
    /// The `image-ledger` binary to start (default: the one next to this program).
    #[arg(long)]
    server_binary: Option<PathBuf>,
    /// Drive this running server (filled earlier by `fill` with the
    /// same --accounts) instead of starting one.
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// Data directory for the started server (default: a temporary one).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Keep the started server's ledger in this empty PostgreSQL database.
    #[arg(long, env = "IMAGE_LEDGER_DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Start this many replicas on the database and spread the
    /// connections over them, one after the other.
    #[arg(long, default_value_t = 1, requires = "database_url")]
    replicas: usize,
    /// Speak TLS to the started server (one replica), with a certificate
    /// made for the run.
    #[arg(long, conflicts_with = "addr")]
    tls: bool,
    /// Turn the started servers' traces on, exported over OTLP/gRPC to a
    /// receiver in this program that counts them.
    #[arg(long, conflicts_with = "addr")]
    traces: bool,
    /// Accounts to preload.
    #[arg(long, default_value_t = 1_000)]
    accounts: u64,
    /// Images to preload.
    #[arg(long, default_value_t = 10_000)]
    images: u64,
    /// Fill the log to this many events before measuring.
    #[arg(long, default_value_t = 0)]
    log_events: u64,
    /// Comma-separated scenarios: share, authorize, authorize-applied,
    /// describe, mixed, health, and through the cloud API door (signed,
    /// one kept-alive HTTP/1.1 connection per request in flight)
    /// cloud-describe and cloud-share.
    #[arg(long, default_value = "share,authorize,describe,mixed")]
    scenarios: String,
    /// Measured seconds per scenario and round (after a short warm-up).
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// Measure each scenario this many times, each time between two health
    /// windows; each ratio is the median of the rounds' ratios to the mean
    /// of the two health windows around them.
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// HTTP/2 connections.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// sled cache of the started server, MiB (default: the server's).
    #[arg(long)]
    cache_mb: Option<u64>,
    /// DescribeImages page cache of the started server, MiB; 0 measures
    /// every page built from the state (default: the server's).
    #[arg(long)]
    page_cache_mb: Option<u64>,
}

/// `fill`
#[derive(Args)]
struct FillArgs {
    /// The store to fill: a sled directory, or a PostgreSQL database.
    #[command(flatten)]
    location: image_ledger::store::Location,
    /// Events to reach.
    #[arg(long, default_value_t = 1_000_000)]
    events: u64,
    /// Accounts registered first.
    #[arg(long, default_value_t = 10_000)]
    accounts: u64,
    /// Images registered next; the rest shares and cancels them.
    #[arg(long, default_value_t = 100_000)]
    images: u64,
    /// Commands in flight.
    #[arg(long, default_value_t = 1024)]
    concurrency: usize,
}

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let result = match cli.command {
        Some(BenchCmd::Fill(args)) => fill(args),
        Some(BenchCmd::Scale(args)) => scale(args),
        Some(BenchCmd::Soak(args)) => soak(args),
        None => bench(cli.args),
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {err:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn bench(args: BenchArgs) -> anyhow::Result<()> {
    let scenarios = args
        .scenarios
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|name| Scenario::parse(name).with_context(|| format!("no scenario {name:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(args.seconds > 0.0, "--seconds must be positive");
    anyhow::ensure!(args.rounds >= 1, "--rounds must be at least 1");
    anyhow::ensure!(args.replicas >= 1, "--replicas must be at least 1");
    anyhow::ensure!(
        !args.tls || args.replicas == 1,
        "--tls runs one replica (each would need the run's CA)"
    );
    anyhow::ensure!(
        args.replicas <= args.connections,
        "--replicas must not exceed --connections: each replica needs a connection"
    );
    let binary = server_binary(args.server_binary)?;
    // The receiver runs beside the load, on a runtime of its own (kept
    // until the run ends).
    let (_receiving, sink) = match args.traces {
        true => {
            let receiving = tokio::runtime::Runtime::new()?;
            let sink = receiving
                .block_on(image_ledger_bench::otlp::Sink::start(false))
                .map_err(|e| anyhow::anyhow!("cannot start the OTLP receiver: {e}"))?;
            (Some(receiving), Some(sink))
        }
        false => (None, None),
    };
    let config = BenchConfig {
        binary,
        addr: args.addr,
        data_dir: args.data_dir,
        database_url: args.database_url,
        replicas: args.replicas,
        accounts: args.accounts,
        images: args.images,
        log_events: args.log_events,
        scenarios,
        seconds: args.seconds,
        rounds: args.rounds,
        concurrency: args.concurrency,
        connections: args.connections,
        cache_mb: args.cache_mb,
        page_cache_mb: args.page_cache_mb,
        tls: args.tls,
        otlp_endpoint: sink.as_ref().map(|(endpoint, _)| endpoint.clone()),
    };
    let report = image_ledger_bench::run(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
    report::print(&config, &report);
    if let Some((endpoint, sink)) = sink {
        let calls: u64 = report.results.iter().map(|r| r.ops).sum();
        println!(
            "traces: {} spans received at {endpoint} ({:.2} a call measured)",
            sink.received(),
            sink.received() as f64 / calls.max(1) as f64
        );
    }
    Ok(())
}

/// The `image-ledger` binary that `cargo build` puts beside this one.
/// The `image-ledger` binary given, or else the one next to this program.
fn server_binary(given: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    given.map_or_else(server_next_to_this_program, Ok)
}

fn server_next_to_this_program() -> anyhow::Result<PathBuf> {
    let this = std::env::current_exe().context("cannot find this program's path")?;
    let server = this.with_file_name(format!("image-ledger{}", std::env::consts::EXE_SUFFIX));
    anyhow::ensure!(
        server.exists(),
        "{} does not exist: build it (`cargo build --release` builds both) or pass --server-binary",
        server.display()
    );
    Ok(server)
}

fn scale(args: ScaleArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.accounts >= 2, "--accounts must be at least 2");
    anyhow::ensure!(args.seconds > 0.0, "--seconds must be positive");
    let config = BenchConfig {
        binary: server_binary(args.server_binary)?,
        addr: None,
        data_dir: Some(args.data_dir),
        database_url: args.database_url,
        replicas: 1,
        accounts: args.accounts,
        images: args.images,
        log_events: args.events,
        scenarios: vec![Scenario::Share, Scenario::Authorize, Scenario::Describe],
        seconds: args.seconds,
        rounds: args.rounds.max(1),
        concurrency: 64,
        connections: 4,
        cache_mb: None,
        page_cache_mb: None,
        tls: false,
        otlp_endpoint: None,
    };
    let report = image_ledger_bench::scale(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
    report::print_scale(&config, &report);
    Ok(())
}

fn soak(args: SoakArgs) -> anyhow::Result<()> {
    let binary = server_binary(args.server_binary)?;
    let config = SoakConfig {
        binary,
        kills: args.kills,
        subscribers: args.subscribers,
        idle_connections: args.idle_connections,
        tokens: args.tokens,
        token_retention_secs: args.token_retention_secs,
        token_starts: args.token_starts.max(1),
    };
    image_ledger_bench::soak(&config).map_err(|e| anyhow::anyhow!("{e}"))
}

fn fill(args: FillArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.accounts >= 2, "--accounts must be at least 2");
    let plan = FillPlan {
        events: args.events,
        accounts: args.accounts,
        images: args.images,
        concurrency: args.concurrency,
        regions: usize::MAX,
    };
    let report = image_ledger_bench::fill(&args.location, &plan, Policy::default())?;
    let target = args.location.describe();
    println!(
        "filled {} with {} events in {:.2?} ({:.0} events/s)",
        target,
        report.events,
        report.elapsed,
        report.events as f64 / report.elapsed.as_secs_f64().max(1e-9)
    );
    Ok(())
}
