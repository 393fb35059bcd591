//! The command line: argument definitions and what each command does.

use std::fs::File;
use std::io::{BufReader, BufWriter, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use image_ledger::audit::{self, AsOf, LedgerKey, SignedHead, VerifyOptions};
use image_ledger::config::{parse_regions, Config};
use image_ledger::domain::{AccountId, ImageId, Policy};
use image_ledger::grpc::pb;
use image_ledger::grpc::pb::audit_log_client::AuditLogClient;
use image_ledger::store::{EventLog, SledStore};

/// The image-sharing ledger.
#[derive(Parser)]
#[command(version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

/// The commands.
#[derive(Subcommand)]
pub enum Cmd {
    /// Run the gRPC server.
    Serve(ServeArgs),
    /// Prove, back up, restore and question the log.
    Audit {
        #[command(subcommand)]
        command: AuditCmd,
    },
    /// Maintain the read side.
    Projections {
        #[command(subcommand)]
        command: ProjectionsCmd,
    },
    /// Measure the server: each scenario against the health-check baseline.
    #[command(args_conflicts_with_subcommands = true)]
    Bench {
        #[command(subcommand)]
        command: Option<BenchCmd>,
        #[command(flatten)]
        args: BenchArgs,
    },
}

/// `bench …`
#[derive(Subcommand)]
pub enum BenchCmd {
    /// Fill a data directory with a lawful log through the normal write path.
    Fill(FillArgs),
}

/// `bench` (the load generator)
#[derive(Args)]
pub struct BenchArgs {
    /// Drive this running server (filled earlier by `bench fill` with the
    /// same --accounts) instead of starting one.
    #[arg(long)]
    addr: Option<SocketAddr>,
    /// Data directory for the started server (default: a temporary one).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Accounts to preload.
    #[arg(long, default_value_t = 1_000)]
    accounts: u64,
    /// Images to preload.
    #[arg(long, default_value_t = 10_000)]
    images: u64,
    /// Fill the log to this many events before measuring.
    #[arg(long, default_value_t = 0)]
    log_events: u64,
    /// Comma-separated scenarios: share, authorize, describe, mixed, health.
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
    /// sled cache of the started server, MiB.
    #[arg(long, default_value_t = image_ledger::config::DEFAULT_CACHE_MB)]
    cache_mb: u64,
    /// DescribeImages page cache of the started server, MiB; 0 measures
    /// every page built from the state.
    #[arg(long, default_value_t = image_ledger::config::DEFAULT_PAGE_CACHE_MB)]
    page_cache_mb: u64,
}

/// `bench fill`
#[derive(Args)]
pub struct FillArgs {
    #[command(flatten)]
    data: DataDirArg,
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

/// `projections …`
#[derive(Subcommand)]
pub enum ProjectionsCmd {
    /// Drop the projections and rebuild them from the log (server stopped).
    Rebuild(DataDirArg),
}

/// `audit …`
#[derive(Subcommand)]
pub enum AuditCmd {
    /// Check every record: positions, hashes, the chain, the rules, the projections.
    Verify(VerifyArgs),
    /// Write the log as JSON lines, exactly as stored.
    Export(ExportArgs),
    /// Restore an export into a new, empty data directory, checking it all.
    Import(ImportArgs),
    /// Every event that touched an image or an account.
    History(HistoryArgs),
    /// Who could create or reinstall instances from an image at a moment.
    Access(AccessArgs),
    /// Print the signed head of the log (save it to pin history).
    Head(HeadArgs),
}

/// `--data-dir`
#[derive(Args)]
pub struct DataDirArg {
    /// Directory of the sled store.
    #[arg(long, env = "IMAGE_LEDGER_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,
}

/// Where an audit command reads from: a stopped server's directory or a running server.
#[derive(Args)]
pub struct SourceArgs {
    #[command(flatten)]
    data: DataDirArg,
    /// Ask a running server at this address instead of reading the directory.
    #[arg(long, conflicts_with = "data_dir")]
    addr: Option<SocketAddr>,
}

/// The rules' limits, shared by `serve`, `audit verify` and `audit import`.
#[derive(Args, Clone)]
pub struct PolicyArgs {
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
}

impl PolicyArgs {
    fn policy(&self) -> anyhow::Result<Policy> {
        anyhow::ensure!(
            self.max_shares_per_image > 0 && self.max_accounts_per_call > 0,
            "the share limits must be at least 1"
        );
        Ok(Policy {
            max_shares_per_image: self.max_shares_per_image,
            max_accounts_per_call: self.max_accounts_per_call,
            image_quota: self.image_quota,
            regions: parse_regions(&self.regions).map_err(anyhow::Error::msg)?,
        })
    }
}

/// `serve`
#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "IMAGE_LEDGER_ADDR", default_value = "127.0.0.1:50051")]
    addr: SocketAddr,
    #[command(flatten)]
    data: DataDirArg,
    #[command(flatten)]
    policy: PolicyArgs,
    /// sled page cache size in MiB.
    #[arg(long, env = "IMAGE_LEDGER_CACHE_MB", default_value_t = image_ledger::config::DEFAULT_CACHE_MB)]
    cache_mb: u64,
    /// Encoded DescribeImages replies kept for reuse while the listings
    /// they show are unchanged, MiB; 0 turns the page cache off.
    #[arg(long, env = "IMAGE_LEDGER_PAGE_CACHE_MB", default_value_t = image_ledger::config::DEFAULT_PAGE_CACHE_MB)]
    page_cache_mb: u64,
    /// Seconds a stopping server waits for clients to close their connections.
    #[arg(long, env = "IMAGE_LEDGER_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    shutdown_grace_secs: u64,
    /// Longest a durable change waits before the stored read side is
    /// written, ms: what a start after a crash replays at most (with a cap
    /// of 131,072 events). Lower means more writes, and fewer merged.
    #[arg(long, env = "IMAGE_LEDGER_READ_SIDE_DELAY_MS", default_value_t = image_ledger::config::DEFAULT_READ_SIDE_DELAY_MS)]
    read_side_delay_ms: u64,
    /// Ed25519 key file (64 hex characters) that signs heads; default
    /// `ledger-signing.key` in the data directory, created on first start.
    #[arg(long, env = "IMAGE_LEDGER_SIGNING_KEY")]
    signing_key: Option<PathBuf>,
}

/// `audit verify`
#[derive(Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    data: DataDirArg,
    #[command(flatten)]
    policy: PolicyArgs,
    /// A signed head saved earlier (`audit head`, `GetLedgerHead`) that must
    /// still be a prefix of the log.
    #[arg(long)]
    against_head: Option<PathBuf>,
    /// Print the summary as JSON.
    #[arg(long)]
    json: bool,
}

/// `audit export`
#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// First position to export.
    #[arg(long, default_value_t = 1)]
    from: u64,
    /// Last position to export (default: the head).
    #[arg(long)]
    to: Option<u64>,
    /// Write here instead of standard output.
    #[arg(long, short)]
    output: Option<PathBuf>,
}

/// `audit import`
#[derive(Args)]
pub struct ImportArgs {
    /// The export file (JSON lines).
    file: PathBuf,
    /// The new data directory; it must not exist or be empty.
    #[arg(long)]
    data_dir: PathBuf,
    #[command(flatten)]
    policy: PolicyArgs,
}

/// `audit history`
#[derive(Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// The image.
    #[arg(long, required_unless_present = "account", conflicts_with = "account")]
    image: Option<String>,
    /// The account (as owner, actor or recipient).
    #[arg(long)]
    account: Option<String>,
    /// One JSON envelope per line instead of text.
    #[arg(long)]
    json: bool,
}

/// `audit access`
#[derive(Args)]
pub struct AccessArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// The image.
    #[arg(long)]
    image: String,
    /// The instant (RFC 3339, e.g. 2026-11-27T18:30:00Z).
    #[arg(
        long,
        required_unless_present = "position",
        conflicts_with = "position"
    )]
    at: Option<String>,
    /// Right after this log position.
    #[arg(long)]
    position: Option<u64>,
    /// Print JSON.
    #[arg(long)]
    json: bool,
}

/// `audit head`
#[derive(Args)]
pub struct HeadArgs {
    #[command(flatten)]
    source: SourceArgs,
    /// The key file, when not `ledger-signing.key` in the data directory.
    #[arg(long)]
    signing_key: Option<PathBuf>,
}

/// Runs a parsed command.
pub fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Serve(args) => serve(args),
        Cmd::Projections {
            command: ProjectionsCmd::Rebuild(args),
        } => rebuild(args),
        Cmd::Audit { command } => match command {
            AuditCmd::Verify(args) => verify(args),
            AuditCmd::Export(args) => export(args),
            AuditCmd::Import(args) => import(args),
            AuditCmd::History(args) => history(args),
            AuditCmd::Access(args) => access(args),
            AuditCmd::Head(args) => head(args),
        },
        Cmd::Bench {
            command: Some(BenchCmd::Fill(args)),
            ..
        } => fill(args),
        Cmd::Bench {
            command: None,
            args,
        } => bench(args),
    }
}

fn bench(args: BenchArgs) -> anyhow::Result<()> {
    use image_ledger::bench::{BenchConfig, Scenario};
    let scenarios = args
        .scenarios
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|name| Scenario::parse(name).with_context(|| format!("no scenario {name:?}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    anyhow::ensure!(args.seconds > 0.0, "--seconds must be positive");
    anyhow::ensure!(args.rounds >= 1, "--rounds must be at least 1");
    let config = BenchConfig {
        binary: std::env::current_exe().context("cannot find this program's path")?,
        addr: args.addr,
        data_dir: args.data_dir,
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
    };
    let report = image_ledger::bench::run(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
    println!(
        "{} events in the log; concurrency {}, {} connections, {} s per scenario, {} round(s)",
        report.events, config.concurrency, config.connections, config.seconds, config.rounds
    );
    println!(
        "each preloaded account lists {} to {} images (own and shared); describe reads pages of up to 20",
        report.listed.0, report.listed.1
    );
    println!(
        "{:<10} {:>10} {:>10} {:>10} {:>10} {:>8} {:>7} {:>11} {:>11}",
        "scenario", "ops/s", "p50", "p99", "p99.9", "errors", "ratio", "server/call", "client/call"
    );
    let cpu = |d: Option<std::time::Duration>| {
        d.map_or_else(
            || "-".to_owned(),
            |d| format!("{:.1}µs", d.as_secs_f64() * 1e6),
        )
    };
    for r in &report.results {
        println!(
            "{:<10} {:>10.0} {:>10.2?} {:>10.2?} {:>10.2?} {:>8} {:>7.2} {:>11} {:>11}",
            r.scenario.name(),
            r.ops_per_sec,
            r.p50,
            r.p99,
            r.p999,
            r.errors,
            r.ratio,
            cpu(r.server_cpu_per_call),
            cpu(r.client_cpu_per_call)
        );
    }
    println!(
        "server/call, client/call: CPU time (user + system, all threads) per call in the window"
    );
    if config.rounds > 1 {
        println!(
            "ratio: the median of the rounds' ratios, each to the health windows just before and after it:"
        );
        for r in report.results.iter().skip(1) {
            let rounds: Vec<String> = r.round_ratios.iter().map(|x| format!("{x:.2}")).collect();
            println!("  {:<10} {}", r.scenario.name(), rounds.join(" "));
        }
    }
    if report
        .results
        .iter()
        .any(|r| !r.server_cpu_by_thread.is_empty())
    {
        println!("server CPU by thread (share of the server's CPU in the windows):");
        for r in &report.results {
            let total: f64 = r
                .server_cpu_by_thread
                .iter()
                .map(|(_, d)| d.as_secs_f64())
                .sum();
            let shares: Vec<String> = r
                .server_cpu_by_thread
                .iter()
                .map(|(kind, d)| (kind, 100.0 * d.as_secs_f64() / total.max(1e-9)))
                .filter(|(_, percent)| *percent >= 0.5)
                .map(|(kind, percent)| format!("{kind} {percent:.0}%"))
                .collect();
            println!("  {:<10} {}", r.scenario.name(), shares.join(", "));
        }
    }
    if let Some(startup) = report.startup {
        println!("start to serving: {startup:.2?}");
    }
    if let Some(rss) = report.rss_bytes {
        println!(
            "resident memory after the run: {:.1} MiB",
            rss as f64 / 1048576.0
        );
    }
    if let Some(per_event) = report.disk_bytes_per_event {
        println!("disk per event: {per_event:.0} bytes");
    }
    Ok(())
}

fn fill(args: FillArgs) -> anyhow::Result<()> {
    anyhow::ensure!(args.accounts >= 2, "--accounts must be at least 2");
    let plan = image_ledger::bench::FillPlan {
        events: args.events,
        accounts: args.accounts,
        images: args.images,
        concurrency: args.concurrency,
        regions: usize::MAX,
    };
    let report = image_ledger::bench::fill(&args.data.data_dir, &plan, Policy::default())?;
    println!(
        "filled {} with {} events in {:.2?} ({:.0} events/s)",
        args.data.data_dir.display(),
        report.events,
        report.elapsed,
        report.events as f64 / report.elapsed.as_secs_f64().max(1e-9)
    );
    Ok(())
}

fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config {
        addr: args.addr,
        data_dir: args.data.data_dir,
        policy: args.policy.policy()?,
        cache_bytes: args.cache_mb.saturating_mul(1024 * 1024),
        page_cache_bytes: args.page_cache_mb.saturating_mul(1024 * 1024),
        shutdown_grace: std::time::Duration::from_secs(args.shutdown_grace_secs),
        signing_key: args.signing_key,
        read_side_delay: std::time::Duration::from_millis(args.read_side_delay_ms),
    };
    runtime()?.block_on(async move {
        let data_dir = config.data_dir.display().to_string();
        let mut server = image_ledger::server::start(config)
            .await
            .with_context(|| format!("cannot start the server on data directory {data_dir}"))?;
        // A plain line on stdout for scripts that start the server on port 0.
        println!("listening on {}", server.local_addr());
        std::io::stdout().flush().ok();
        let stop = server.take_stop();
        let serving = tokio::spawn(server.wait());
        shutdown_signal().await;
        tracing::info!("shutting down: finishing in-flight calls");
        drop(stop);
        serving.await.context("the server task failed")??;
        Ok(())
    })
}

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("cannot start the async runtime")
}

/// Opens a stopped server's store; a running server holds the directory's lock.
fn open_store(data_dir: &Path) -> anyhow::Result<SledStore> {
    if !data_dir.exists() {
        bail!("{} does not exist", data_dir.display());
    }
    SledStore::open(data_dir, 64 * 1024 * 1024).with_context(|| {
        format!(
            "cannot open {} (a running server holds it: stop it, or use --addr)",
            data_dir.display()
        )
    })
}

fn rebuild(args: DataDirArg) -> anyhow::Result<()> {
    let started = Instant::now();
    let store = open_store(&args.data_dir)?;
    let (state, head) = image_ledger::app::rebuild_projections(&store)
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

fn verify(args: VerifyArgs) -> anyhow::Result<()> {
    let policy = args.policy.policy()?;
    let against_head = match &args.against_head {
        Some(path) => Some(read_signed_head(path)?),
        None => None,
    };
    let store = open_store(&args.data.data_dir)?;
    if let Some(pinned) = &against_head {
        // The head must come from this ledger's key, when the key is here.
        let key_path = LedgerKey::default_path(&args.data.data_dir);
        if key_path.exists() {
            let key = LedgerKey::load(&key_path)?;
            pinned.check_signed_by(&key.public_hex())?;
        }
    }
    let total = store.head()?.position;
    eprintln!(
        "verifying {total} events in {}",
        args.data.data_dir.display()
    );
    let options = VerifyOptions {
        against_head,
        progress_every: if total >= 500_000 { 250_000 } else { 0 },
    };
    match audit::verify(&store, &policy, &options) {
        Ok(report) => {
            let rate = report.events as f64 / report.elapsed.as_secs_f64().max(1e-9);
            if args.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                let projections = match (report.projections_at, &report.projections_pending[..]) {
                    (Some(at), _) if at == report.head_position => {
                        "projections equal a fresh replay".to_owned()
                    }
                    (at, []) => format!(
                        "projections equal a fresh replay up to position {} (the next start catches them up)",
                        at.unwrap_or_default()
                    ),
                    (at, [target]) => format!(
                        "projections equal a fresh replay up to position {} with part of a write towards {target} (the next start finishes it)",
                        at.unwrap_or_default()
                    ),
                    (at, targets) => format!(
                        "projections equal a fresh replay up to position {} with parts of writes towards {} in turn (the next start finishes them)",
                        at.unwrap_or_default(),
                        targets.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
                    ),
                };
                println!(
                    "OK: {} events, {} aggregates, head {} {}, in {:.2?} ({:.0} events/s); {projections}{}",
                    report.events,
                    report.aggregates,
                    report.head_position,
                    report.head_hash,
                    report.elapsed,
                    rate,
                    match report.pinned_head {
                        Some(p) => format!("; the pinned head at {p} is a prefix of the log"),
                        None => String::new(),
                    }
                );
            }
            Ok(())
        }
        Err(err) => bail!("verification FAILED: {err}"),
    }
}

fn read_signed_head(path: &Path) -> anyhow::Result<SignedHead> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a signed head", path.display()))
}

fn output(path: Option<&Path>) -> anyhow::Result<Box<dyn Write>> {
    Ok(match path {
        Some(path) => Box::new(BufWriter::new(
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    })
}

fn export(args: ExportArgs) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut out = output(args.output.as_deref())?;
    let written = match args.source.addr {
        Some(addr) => runtime()?.block_on(export_remote(addr, args.from, args.to, &mut out))?,
        None => {
            let store = open_store(&args.source.data.data_dir)?;
            audit::export(&store, args.from, args.to, &mut out)?
        }
    };
    out.flush()?;
    let elapsed = started.elapsed();
    eprintln!(
        "exported {written} events in {elapsed:.2?} ({:.0} events/s)",
        written as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    Ok(())
}

async fn export_remote(
    addr: SocketAddr,
    from: u64,
    to: Option<u64>,
    out: &mut dyn Write,
) -> anyhow::Result<u64> {
    let mut client = AuditLogClient::connect(format!("http://{addr}")).await?;
    let mut next = from.max(1);
    let mut written = 0;
    loop {
        let mut stream = client
            .read_events(pb::ReadEventsRequest {
                from_position: next,
                limit: 10_000,
            })
            .await?
            .into_inner();
        let mut got = 0;
        while let Some(record) = stream.message().await? {
            if to.is_some_and(|to| record.position > to) {
                return Ok(written);
            }
            out.write_all(record.raw.as_bytes())?;
            out.write_all(b"\n")?;
            next = record.position + 1;
            written += 1;
            got += 1;
        }
        if got == 0 {
            return Ok(written);
        }
    }
}

fn import(args: ImportArgs) -> anyhow::Result<()> {
    let policy = args.policy.policy()?;
    let file =
        File::open(&args.file).with_context(|| format!("cannot open {}", args.file.display()))?;
    let mut input = BufReader::with_capacity(1 << 20, file);
    let report = audit::import(&mut input, &args.data_dir, &policy, 250_000)
        .map_err(|err| anyhow::anyhow!("import refused, nothing was written: {err}"))?;
    println!(
        "imported {} events into {} in {:.2?} ({:.0} events/s); head hash {}",
        report.events,
        args.data_dir.display(),
        report.elapsed,
        report.events as f64 / report.elapsed.as_secs_f64().max(1e-9),
        report.head_hash
    );
    Ok(())
}

fn history(args: HistoryArgs) -> anyhow::Result<()> {
    let records = match (&args.image, &args.account, args.source.addr) {
        (Some(image), _, Some(addr)) => {
            let image = ImageId::parse(image)?;
            let events = runtime()?.block_on(async {
                let mut client = AuditLogClient::connect(format!("http://{addr}")).await?;
                let reply = client
                    .get_image_history(pb::GetImageHistoryRequest {
                        image_id: image.to_string(),
                    })
                    .await?;
                anyhow::Ok(reply.into_inner().events)
            })?;
            events
                .into_iter()
                .map(|e| {
                    let raw = e.raw.into_bytes();
                    let envelope = image_ledger::store::Envelope::decode(&raw)?;
                    Ok(audit::Record { envelope, raw })
                })
                .collect::<anyhow::Result<Vec<_>>>()?
        }
        (None, Some(_), Some(_)) => {
            bail!("account history reads the whole log: run it on the data directory")
        }
        (Some(image), _, None) => {
            let store = open_store(&args.source.data.data_dir)?;
            audit::image_history(&store, &ImageId::parse(image)?)?
        }
        (None, Some(account), None) => {
            let store = open_store(&args.source.data.data_dir)?;
            audit::account_history(&store, &AccountId::parse(account)?)?
        }
        (None, None, _) => bail!("give --image or --account"),
    };
    let mut out = output(None)?;
    for record in &records {
        if args.json {
            out.write_all(&record.raw)?;
            out.write_all(b"\n")?;
        } else {
            writeln!(out, "{}", audit::describe_event(&record.envelope))?;
        }
    }
    if records.is_empty() && !args.json {
        writeln!(out, "no events")?;
    }
    out.flush()?;
    Ok(())
}

fn access(args: AccessArgs) -> anyhow::Result<()> {
    let image = ImageId::parse(&args.image)?;
    let as_of = match (&args.at, args.position) {
        (Some(at), _) => AsOf::Time(
            time::OffsetDateTime::parse(at, &time::format_description::well_known::Rfc3339)
                .with_context(|| format!("{at:?} is not an RFC 3339 time"))?,
        ),
        (None, Some(position)) => AsOf::Position(position),
        (None, None) => bail!("give --at or --position"),
    };
    let access = match args.source.addr {
        Some(addr) => runtime()?.block_on(access_remote(addr, &image, as_of))?,
        None => {
            let store = open_store(&args.source.data.data_dir)?;
            let head = store.head()?.position;
            audit::access_as_of(&store, &image, as_of, head)?
        }
    };
    if args.json {
        println!("{}", serde_json::to_string(&access)?);
        return Ok(());
    }
    let region = access.region.as_deref().unwrap_or("-");
    println!(
        "image {} in {region}, as of position {}",
        access.image_id, access.position
    );
    if access.accounts.is_empty() {
        println!(
            "nobody could use it: {}",
            access.reason.as_deref().unwrap_or("unknown")
        );
    }
    for entry in &access.accounts {
        let since = entry
            .since
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let uses = match entry.role {
            audit::Role::Owner => "create, reinstall, export",
            audit::Role::Recipient => "create, reinstall",
        };
        println!(
            "  {:<20} {:?} since {since}: {uses}",
            entry.account_id, entry.role
        );
    }
    if access.lighthouse_shared {
        println!("  Lighthouse of the owner's account could use it too");
    }
    Ok(())
}

async fn access_remote(
    addr: SocketAddr,
    image: &ImageId,
    as_of: AsOf,
) -> anyhow::Result<audit::Access> {
    use pb::get_image_access_as_of_request::AsOf as Wire;
    let mut client = AuditLogClient::connect(format!("http://{addr}")).await?;
    let wire = match as_of {
        AsOf::Position(p) => Wire::AsOfPosition(p),
        AsOf::Time(t) => Wire::AsOfTime(image_ledger::grpc::timestamp(t)),
    };
    let reply = client
        .get_image_access_as_of(pb::GetImageAccessAsOfRequest {
            image_id: image.to_string(),
            as_of: Some(wire),
        })
        .await?
        .into_inner();
    let time_of = |t: Option<prost_types::Timestamp>| {
        t.as_ref()
            .and_then(image_ledger::grpc::time_of)
            .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
    };
    Ok(audit::Access {
        image_id: reply.image_id,
        position: reply.position,
        region: reply.existed.then_some(reply.region),
        state: pb::ImageState::try_from(reply.state)
            .ok()
            .and_then(image_ledger::grpc::state_of),
        deleted: reply.deleted,
        lighthouse_shared: reply.lighthouse_shared,
        accounts: reply
            .accounts
            .into_iter()
            .map(|entry| audit::AccessEntry {
                account_id: entry.account_id,
                role: if entry.role == pb::AccessRole::Owner as i32 {
                    audit::Role::Owner
                } else {
                    audit::Role::Recipient
                },
                since: time_of(entry.since),
            })
            .collect(),
        reason: (!reply.reason.is_empty()).then_some(reply.reason),
    })
}

fn head(args: HeadArgs) -> anyhow::Result<()> {
    let json = match args.source.addr {
        Some(addr) => runtime()?.block_on(async {
            let mut client = AuditLogClient::connect(format!("http://{addr}")).await?;
            let reply = client.get_ledger_head(pb::GetLedgerHeadRequest {}).await?;
            anyhow::Ok(reply.into_inner().signed_head_json)
        })?,
        None => {
            let data_dir = &args.source.data.data_dir;
            let store = open_store(data_dir)?;
            let key_path = args
                .signing_key
                .unwrap_or_else(|| LedgerKey::default_path(data_dir));
            let key = LedgerKey::load(&key_path)?;
            serde_json::to_string(&key.sign_store_head(&store)?)?
        }
    };
    println!("{json}");
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
