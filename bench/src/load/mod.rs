//! The load generator: starts (or reaches) a server, preloads it, runs each
//! scenario for a fixed time with a fixed number of requests in flight over a
//! fixed number of HTTP/2 connections, and reports throughput and latency,
//! each scenario also as a ratio to the health-check baseline of the same run.
//! [`server`] starts the server and reads its threads' CPU time,
//! [`workload`] finds the preloaded images and sends the calls, and
//! [`windows`] times the windows and turns them into results.

pub mod scale;
pub(crate) mod server;
mod windows;
mod workload;

#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use image_ledger::domain::Policy;
use image_ledger::grpc::pb;
use image_ledger::grpc::pb::audit_log_client::AuditLogClient;
use tonic::transport::Endpoint;

use self::server::{dir_size, rss_of, spawn_server};
use self::windows::{bracketing_baselines, measure, plan_windows, summarize, Sample};
use self::workload::discover;
use crate::fill::{fill, FillPlan};
use image_ledger::store::Location;

/// What the load generator's functions fail with.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// One kind of load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// `grpc.health.v1.Health/Check`: the cost of a call that does nothing.
    Health,
    /// `ShareImage` then `CancelImageSharing` of the same account, alternating, over many images.
    Share,
    /// `AuthorizeImageUse`, linearizable (no `min_position`).
    Authorize,
    /// `AuthorizeImageUse` with a `min_position` already applied (1): no
    /// wait for the log's head on a shared database.
    AuthorizeApplied,
    /// `DescribeImages`, a page of 20.
    Describe,
    /// 90% reads (authorize and describe), 10% writes (share and cancel).
    Mixed,
    /// CVM `DescribeImages` (a page of 20) through the cloud API door,
    /// signed, over kept-alive HTTP/1.1: one connection per request in
    /// flight.
    CloudDescribe,
    /// CVM `ModifyImageSharePermission` SHARE then CANCEL through the door,
    /// as `share` does over gRPC.
    CloudShare,
}

impl Scenario {
    /// Every scenario, baseline first.
    pub const ALL: [Scenario; 8] = [
        Scenario::Health,
        Scenario::Share,
        Scenario::Authorize,
        Scenario::AuthorizeApplied,
        Scenario::Describe,
        Scenario::Mixed,
        Scenario::CloudDescribe,
        Scenario::CloudShare,
    ];

    /// The scenario's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Health => "health",
            Scenario::Share => "share",
            Scenario::Authorize => "authorize",
            Scenario::AuthorizeApplied => "authorize-applied",
            Scenario::Describe => "describe",
            Scenario::Mixed => "mixed",
            Scenario::CloudDescribe => "cloud-describe",
            Scenario::CloudShare => "cloud-share",
        }
    }

    /// Whether it goes through the cloud API door.
    pub fn is_cloud(self) -> bool {
        matches!(self, Scenario::CloudDescribe | Scenario::CloudShare)
    }

    /// Parses a scenario name.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// What to run.
#[derive(Debug, Clone)]
pub struct BenchConfig {
    /// The `image-ledger` binary that serves (when no `addr` is given).
    pub binary: PathBuf,
    /// A running server to drive instead of starting one (it must have been
    /// filled by this tool with the same `accounts`).
    pub addr: Option<SocketAddr>,
    /// Data directory for the started server; a temporary one when `None`.
    pub data_dir: Option<PathBuf>,
    /// An empty PostgreSQL database for the started server's ledger instead
    /// of the sled store in `data_dir` (which then holds only its key).
    pub database_url: Option<String>,
    /// Replicas started on `database_url`; the connections are spread over
    /// them in turn.
    pub replicas: usize,
    /// Accounts to preload.
    pub accounts: u64,
    /// Images to preload.
    pub images: u64,
    /// Events the log must hold before measuring (at least the preload).
    pub log_events: u64,
    /// Scenarios to run; the health baseline always runs first.
    pub scenarios: Vec<Scenario>,
    /// Measured time per scenario and round.
    pub seconds: f64,
    /// How many times each scenario is measured. Every scenario window has
    /// a health window right before and right after it, and its ratio is
    /// taken against the mean of those two; the median of the rounds'
    /// ratios is reported. On a shared machine the load drifts within
    /// seconds, so a baseline measured once, or only before, is off.
    pub rounds: usize,
    /// Requests in flight.
    pub concurrency: usize,
    /// HTTP/2 connections they share.
    pub connections: usize,
    /// sled cache of the started server, MiB; `None`: the server's default.
    pub cache_mb: Option<u64>,
    /// The started server's `DescribeImages` page cache, MiB; `None`: the
    /// server's default.
    pub page_cache_mb: Option<u64>,
    /// Speak TLS to the started servers, with a certificate made for the
    /// run.
    pub tls: bool,
    /// An OTLP/gRPC endpoint the started servers export their traces to;
    /// `None`: traces off.
    pub otlp_endpoint: Option<String>,
}

/// One scenario's measurements.
#[derive(Debug, Clone)]
pub struct ScenarioResult {
    /// The scenario.
    pub scenario: Scenario,
    /// Calls completed in the measured window.
    pub ops: u64,
    /// Calls that failed.
    pub errors: u64,
    /// Calls per second.
    pub ops_per_sec: f64,
    /// Latency percentiles.
    pub p50: Duration,
    /// 99th percentile.
    pub p99: Duration,
    /// 99.9th percentile.
    pub p999: Duration,
    /// The median over the rounds of (this scenario's ops/s) / (the same
    /// round's baseline ops/s).
    pub ratio: f64,
    /// Each round's ratio, in order.
    pub round_ratios: Vec<f64>,
    /// CPU time the server spent per call in the window (when the bench
    /// started it), user and system, all threads.
    pub server_cpu_per_call: Option<Duration>,
    /// CPU time this load generator spent per call in the window: on a
    /// machine shared with the server, it competes for the same cores.
    pub client_cpu_per_call: Option<Duration>,
    /// The server's CPU time in the windows by kind of thread (the thread
    /// name without a trailing number), most first: where its time went.
    pub server_cpu_by_thread: Vec<(String, Duration)>,
}

/// Everything a run measured.
#[derive(Debug, Clone)]
pub struct BenchReport {
    /// Per scenario, baseline first.
    pub results: Vec<ScenarioResult>,
    /// Events in the log when measuring started.
    pub events: u64,
    /// From spawning the server process to its first "listening" line.
    pub startup: Option<Duration>,
    /// Resident memory of the server after the scenarios.
    pub rss_bytes: Option<u64>,
    /// Bytes of the data directory / events.
    pub disk_bytes_per_event: Option<f64>,
    /// The fewest and the most images (own and shared) a preloaded account
    /// lists: `describe` pages hold min(20, that).
    pub listed: (u64, u64),
}

/// The events the log is filled with: at least `--log-events`, and ending
/// with a whole round of shares. After the accounts and the images, the
/// filler runs rounds over every image: the even ones share it with one
/// other account (the next one in round 0, one further every second round),
/// the odd ones cancel those shares. Ending on a round of shares leaves every
/// image shared with exactly one account, so every account lists its own
/// images and as many shared with it, and `describe` reads the same pages on
/// a small log as on a large one.
pub fn preload_events(config: &BenchConfig) -> u64 {
    let base = config.accounts + config.images;
    let rounds = config
        .log_events
        .saturating_sub(base)
        .div_ceil(config.images.max(1))
        .max(1);
    let rounds = if rounds.is_multiple_of(2) {
        rounds + 1
    } else {
        rounds
    };
    base + rounds * config.images
}

/// Runs the benchmark.
pub fn run(config: &BenchConfig) -> Result<BenchReport, BoxError> {
    if config.accounts < 2 || config.images == 0 {
        return Err("preload at least 2 accounts and 1 image".into());
    }
    if config.addr.is_some() && config.scenarios.iter().any(|s| s.is_cloud()) {
        return Err("the cloud-* scenarios need a server this tool starts (with its keys): leave out --addr".into());
    }
    let temp;
    let (server, startup, dir) = match config.addr {
        Some(_) => (Vec::new(), None, None),
        None => {
            let dir = match &config.data_dir {
                Some(dir) => dir.clone(),
                None => {
                    temp = tempfile::tempdir()?;
                    temp.path().to_path_buf()
                }
            };
            let needed = preload_events(config);
            let plan = FillPlan {
                events: needed,
                accounts: config.accounts,
                images: config.images,
                concurrency: 1024,
                regions: 1,
            };
            eprintln!("filling the log to {needed} events");
            let location = Location {
                database_url: config.database_url.clone(),
                ..Location::dir(&dir)
            };
            let filled = fill(&location, &plan, Policy::default())?;
            eprintln!(
                "  {} events in {:.1?}; starting the server",
                filled.events, filled.elapsed
            );
            let mut servers = Vec::new();
            let mut startup = None;
            // Every replica of a run signs with one key, as a deployment's do.
            let seed = hex_seed();
            for replica in 0..config.replicas.max(1) {
                // Each replica's key lives in a directory of its own.
                let home = match replica {
                    0 => dir.clone(),
                    n => dir.join(format!("replica-{n}")),
                };
                std::fs::create_dir_all(&home)?;
                let (server, took) = spawn_server(config, &home, &seed)?;
                startup.get_or_insert(took);
                servers.push(server);
            }
            (servers, startup, Some(dir))
        }
    };
    let addrs: Vec<SocketAddr> = match config.addr {
        Some(addr) => vec![addr],
        None => server.iter().map(|s| s.0.addr()).collect(),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let server_pid = server.first().map(|s| s.0.pid());
    let ca = match (&dir, config.tls) {
        (Some(dir), true) => Some(std::fs::read(dir.join(server::TLS_CA))?),
        _ => None,
    };
    let cloud = server.first().and_then(|s| s.1);
    let mut report = runtime.block_on(drive(config, &addrs, cloud, server_pid, ca))?;
    report.startup = startup;
    if let Some(server) = server.first() {
        report.rss_bytes = rss_of(server.0.pid());
    }
    if let (Some(dir), None) = (&dir, &config.database_url) {
        let bytes = dir_size(dir)?;
        report.disk_bytes_per_event = Some(bytes as f64 / report.events.max(1) as f64);
    }
    drop(server);
    Ok(report)
}

async fn drive(
    config: &BenchConfig,
    addrs: &[SocketAddr],
    cloud: Option<SocketAddr>,
    server_pid: Option<u32>,
    ca: Option<Vec<u8>>,
) -> Result<BenchReport, BoxError> {
    let mut channels = Vec::new();
    for (_, addr) in (0..config.connections.max(1)).zip(addrs.iter().cycle()) {
        // Each connect() opens its own HTTP/2 connection.
        let endpoint = match &ca {
            Some(ca) => Endpoint::from_shared(format!("https://{addr}"))?.tls_config(
                tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(ca))
                    .domain_name("localhost"),
            )?,
            None => Endpoint::from_shared(format!("http://{addr}"))?,
        };
        channels.push(endpoint.connect().await?);
    }
    let workload = Arc::new(discover(config, channels[0].clone(), cloud).await?);
    eprintln!(
        "{} images of {} accounts in {}; each account lists {} to {} (own and shared)",
        workload.images.len(),
        config.accounts,
        workload.region,
        workload.listed.0,
        workload.listed.1
    );
    let scenarios: Vec<Scenario> = config
        .scenarios
        .iter()
        .copied()
        .filter(|s| *s != Scenario::Health)
        .collect();
    let rounds = config.rounds.max(1);
    let mut health: Vec<Sample> = Vec::new();
    // Each scenario's windows, with the index of the health window just
    // before each of them.
    let mut taken: Vec<(Vec<Sample>, Vec<usize>)> =
        scenarios.iter().map(|_| (Vec::new(), Vec::new())).collect();
    let report = |scenario: Scenario, sample: &Sample| {
        eprintln!(
            "  {:<10} {:>9.0} ops/s  errors {}",
            scenario.name(),
            sample.ops_per_sec(),
            sample.errors
        );
    };
    for (window, scenario) in plan_windows(&scenarios, rounds) {
        if window.round_starts && rounds > 1 {
            eprintln!("round {} of {rounds}", window.round);
        }
        let sample = measure(config, scenario, &channels, &workload, server_pid).await?;
        report(scenario, &sample);
        match window.slot {
            Some(slot) => {
                let (samples, befores) = &mut taken[slot];
                samples.push(sample);
                befores.push(health.len().saturating_sub(1));
            }
            None => health.push(sample),
        }
    }
    let health_rates: Vec<f64> = health.iter().map(|s| s.ops_per_sec().max(1e-9)).collect();
    let mut results = Vec::with_capacity(scenarios.len() + 1);
    results.push(summarize(Scenario::Health, health, &health_rates));
    for (scenario, (samples, befores)) in scenarios.iter().zip(taken) {
        let baselines = bracketing_baselines(&health_rates, &befores);
        results.push(summarize(*scenario, samples, &baselines));
    }
    let events = AuditLogClient::new(channels[0].clone())
        .get_ledger_head(pb::GetLedgerHeadRequest {})
        .await?
        .into_inner()
        .position;
    Ok(BenchReport {
        results,
        events,
        startup: None,
        rss_bytes: None,
        disk_bytes_per_event: None,
        listed: workload.listed,
    })
}

/// A random signing key seed, as 64 hex digits.
fn hex_seed() -> String {
    use std::fmt::Write;
    let seed: [u8; 32] = rand::random();
    seed.iter()
        .fold(String::with_capacity(64), |mut out, byte| {
            let _ = write!(out, "{byte:02x}");
            out
        })
}
