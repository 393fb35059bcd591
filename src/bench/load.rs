//! The load generator: starts (or reaches) a server, preloads it, runs each
//! scenario for a fixed time with a fixed number of requests in flight over a
//! fixed number of HTTP/2 connections, and reports throughput and latency,
//! each scenario also as a ratio to the health-check baseline of the same run.

use std::collections::{BTreeMap, HashSet};
use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::HealthCheckRequest;

use super::fill::{account, fill, FillPlan};
use crate::domain::Policy;
use crate::grpc::pb;
use crate::grpc::pb::audit_log_client::AuditLogClient;
use crate::grpc::pb::image_ledger_client::ImageLedgerClient;

/// One kind of load.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scenario {
    /// `grpc.health.v1.Health/Check`: the cost of a call that does nothing.
    Health,
    /// `ShareImage` then `CancelImageSharing` of the same account, alternating, over many images.
    Share,
    /// `AuthorizeImageUse`.
    Authorize,
    /// `DescribeImages`, a page of 20.
    Describe,
    /// 90% reads (authorize and describe), 10% writes (share and cancel).
    Mixed,
}

impl Scenario {
    /// Every scenario, baseline first.
    pub const ALL: [Scenario; 5] = [
        Scenario::Health,
        Scenario::Share,
        Scenario::Authorize,
        Scenario::Describe,
        Scenario::Mixed,
    ];

    /// The scenario's name on the command line and in reports.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::Health => "health",
            Scenario::Share => "share",
            Scenario::Authorize => "authorize",
            Scenario::Describe => "describe",
            Scenario::Mixed => "mixed",
        }
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
    /// sled cache of the started server, MiB.
    pub cache_mb: u64,
    /// The started server's `DescribeImages` page cache, MiB.
    pub page_cache_mb: u64,
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

struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn spawn_server(config: &BenchConfig, dir: &Path) -> Result<(Server, Duration), BoxError> {
    let started = Instant::now();
    let mut child = Command::new(&config.binary)
        .args(["serve", "--addr", "127.0.0.1:0", "--image-quota", "1000000"])
        .args(["--cache-mb", &config.cache_mb.to_string()])
        .args(["--page-cache-mb", &config.page_cache_mb.to_string()])
        .arg("--data-dir")
        .arg(dir)
        .env(
            "RUST_LOG",
            std::env::var("IMAGE_LEDGER_BENCH_SERVER_LOG").unwrap_or_else(|_| "warn".into()),
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line)?;
    let startup = started.elapsed();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .ok_or_else(|| format!("the server said {line:?} instead of its address"))?
        .parse()?;
    Ok((Server { child, addr }, startup))
}

/// The region the filler puts images in when told to use one region.
fn bench_region() -> String {
    Policy::default()
        .regions
        .iter()
        .next()
        .map(|r| r.to_string())
        .unwrap_or_default()
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

/// The account that receives every share of the share scenario; it takes
/// no part in the preloaded shares, so its shares never collide with them.
const RECIPIENT: &str = "999999999999";

/// Runs the benchmark.
pub fn run(config: &BenchConfig) -> Result<BenchReport, BoxError> {
    if config.accounts < 2 || config.images == 0 {
        return Err("preload at least 2 accounts and 1 image".into());
    }
    let temp;
    let (server, startup, dir) = match config.addr {
        Some(_) => (None, None, None),
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
            let filled = fill(&dir, &plan, Policy::default())?;
            eprintln!(
                "  {} events in {:.1?}; starting the server",
                filled.events, filled.elapsed
            );
            let (server, startup) = spawn_server(config, &dir)?;
            (Some(server), Some(startup), Some(dir))
        }
    };
    let addr = server
        .as_ref()
        .map(|s| s.addr)
        .or(config.addr)
        .ok_or("no server")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let server_pid = server.as_ref().map(|s| s.child.id());
    let mut report = runtime.block_on(drive(config, addr, server_pid))?;
    report.startup = startup;
    if let Some(server) = &server {
        report.rss_bytes = rss_of(server.child.id());
    }
    if let Some(dir) = &dir {
        let bytes = dir_size(dir)?;
        report.disk_bytes_per_event = Some(bytes as f64 / report.events.max(1) as f64);
    }
    drop(server);
    Ok(report)
}

struct Workload {
    region: String,
    /// (image id, owner account index)
    images: Vec<(String, u64)>,
    /// Whether each image is shared with [`RECIPIENT`] now; carried across
    /// scenarios so a write scenario picks up where the last one left off.
    shared: Vec<AtomicBool>,
    /// The fewest and the most images a preloaded account lists.
    listed: (u64, u64),
}

async fn drive(
    config: &BenchConfig,
    addr: SocketAddr,
    server_pid: Option<u32>,
) -> Result<BenchReport, BoxError> {
    let endpoint = Endpoint::from_shared(format!("http://{addr}"))?;
    let mut channels = Vec::new();
    for _ in 0..config.connections.max(1) {
        // Each connect() opens its own HTTP/2 connection.
        channels.push(endpoint.connect().await?);
    }
    let workload = Arc::new(discover(config, channels[0].clone()).await?);
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

/// Finds the preloaded images and registers the share scenario's recipient.
async fn discover(config: &BenchConfig, channel: Channel) -> Result<Workload, BoxError> {
    let mut client = ImageLedgerClient::new(channel);
    let region = bench_region();
    let registered = client
        .register_account(pb::RegisterAccountRequest {
            account_id: RECIPIENT.into(),
            kind: pb::AccountKind::Root as i32,
            client_token: String::new(),
        })
        .await;
    registered?;
    let mut images = Vec::new();
    let mut listed = (u64::MAX, 0);
    for k in 0..config.accounts {
        // Its own images and those shared with it, in one listing.
        let all = list_images(
            &mut client,
            &account(k).to_string(),
            &region,
            pb::ImageType::Unspecified,
        )
        .await?;
        let count = all.len() as u64;
        listed = (listed.0.min(count), listed.1.max(count));
        let owned = all
            .into_iter()
            .filter(|image| image.image_type == pb::ImageType::PrivateImage as i32);
        images.extend(owned.map(|image| (image.image_id, k)));
    }
    if images.is_empty() {
        return Err("the server holds no preloaded images".into());
    }
    // A server driven before (by --addr, or a reused --data-dir) may still
    // share some images with the recipient: start from what it holds.
    let already: HashSet<String> =
        list_images(&mut client, RECIPIENT, &region, pb::ImageType::SharedImage)
            .await?
            .into_iter()
            .map(|image| image.image_id)
            .collect();
    let shared = images
        .iter()
        .map(|(id, _)| AtomicBool::new(already.contains(id)))
        .collect();
    Ok(Workload {
        region,
        images,
        shared,
        listed,
    })
}

/// Every image of one type that `account` sees in `region`, page by page.
async fn list_images(
    client: &mut ImageLedgerClient<Channel>,
    account: &str,
    region: &str,
    image_type: pb::ImageType,
) -> Result<Vec<pb::Image>, BoxError> {
    const PAGE: u32 = 100;
    let mut images = Vec::new();
    loop {
        let page = client
            .describe_images(pb::DescribeImagesRequest {
                account_id: account.to_owned(),
                region: region.to_owned(),
                image_type: image_type as i32,
                offset: u32::try_from(images.len()).unwrap_or(u32::MAX),
                limit: PAGE,
                ..Default::default()
            })
            .await?
            .into_inner();
        let got = page.images.len();
        images.extend(page.images);
        if got < PAGE as usize {
            return Ok(images);
        }
    }
}

/// The page size of the `describe` scenario.
const PAGE_SIZE: u32 = 20;

/// A `DescribeImages` reply as the load generator reads it: each image stays
/// the bytes of its encoded message instead of being decoded into strings.
/// The two processes share the machine's cores, so a client that decoded
/// every field would lower the measured rate for reasons that are not the
/// server's; what is checked is the number of images against the total.
#[derive(Clone, PartialEq, prost::Message)]
struct PageView {
    /// Each image of the page, still encoded.
    #[prost(bytes = "bytes", repeated, tag = "1")]
    images: Vec<bytes::Bytes>,
    /// How many images match in all.
    #[prost(uint32, tag = "2")]
    total_count: u32,
}

impl PageView {
    /// Whether this is a complete first page: as many images as the page
    /// size or the total allows, none of them empty (every listed image
    /// has an id).
    fn is_full_first_page(&self) -> bool {
        self.images.len() == PAGE_SIZE.min(self.total_count) as usize
            && self.images.iter().all(|image| !image.is_empty())
    }
}

/// Calls `DescribeImages`, reading the reply as a [`PageView`].
async fn describe_page(
    grpc: &mut tonic::client::Grpc<Channel>,
    request: pb::DescribeImagesRequest,
) -> Result<PageView, tonic::Status> {
    grpc.ready()
        .await
        .map_err(|e| tonic::Status::unavailable(format!("the channel is not ready: {e}")))?;
    let codec = tonic_prost::ProstCodec::<pb::DescribeImagesRequest, PageView>::default();
    let path = http::uri::PathAndQuery::from_static("/imageledger.v1.ImageLedger/DescribeImages");
    Ok(grpc
        .unary(tonic::Request::new(request), path, codec)
        .await?
        .into_inner())
}

async fn measure(
    config: &BenchConfig,
    scenario: Scenario,
    channels: &[Channel],
    workload: &Arc<Workload>,
    server_pid: Option<u32>,
) -> Result<Sample, BoxError> {
    let warmup = Duration::from_secs_f64((config.seconds / 5.0).min(1.0));
    let window = Duration::from_secs_f64(config.seconds);
    let start = Instant::now() + warmup;
    let end = start + window;
    // CPU time of both processes over exactly the measured window.
    let cpu = tokio::spawn(async move {
        tokio::time::sleep_until(start.into()).await;
        let read = || {
            (
                server_pid.and_then(cpu_by_thread),
                cpu_by_thread(std::process::id()),
            )
        };
        let (server_before, client_before) = read();
        tokio::time::sleep_until(end.into()).await;
        let (server_after, client_after) = read();
        let spent = |before: &Option<Threads>, after: &Option<Threads>| {
            let sum = |threads: &Threads| threads.values().sum::<Duration>();
            Some(sum(after.as_ref()?).saturating_sub(sum(before.as_ref()?)))
        };
        let (server_cpu, client_cpu) = (
            spent(&server_before, &server_after),
            spent(&client_before, &client_after),
        );
        let before = server_before.unwrap_or_default();
        let by_thread = server_after
            .unwrap_or_default()
            .into_iter()
            .map(|(kind, after)| {
                let spent = after.saturating_sub(before.get(&kind).copied().unwrap_or_default());
                (kind, spent)
            })
            .collect();
        (server_cpu, client_cpu, by_thread)
    });
    let tasks = config.concurrency.max(1);
    let mut handles = Vec::with_capacity(tasks);
    for t in 0..tasks {
        let channel = channels[t % channels.len()].clone();
        let workload = Arc::clone(workload);
        handles.push(tokio::spawn(async move {
            worker(scenario, t, tasks, channel, workload, start, end).await
        }));
    }
    let mut latencies: Vec<u32> = Vec::new();
    let mut errors = 0;
    for handle in handles {
        let (mut lat, errs) = handle.await?;
        latencies.append(&mut lat);
        errors += errs;
    }
    let (server_cpu, client_cpu, server_threads) = cpu.await?;
    Ok(Sample {
        latencies,
        errors,
        window,
        server_cpu,
        client_cpu,
        server_threads,
    })
}

/// One measured window of one scenario.
struct Sample {
    /// Latency (µs) of each call completed in the window.
    latencies: Vec<u32>,
    errors: u64,
    window: Duration,
    server_cpu: Option<Duration>,
    client_cpu: Option<Duration>,
    /// The server's CPU time in the window by kind of thread.
    server_threads: Threads,
}

impl Sample {
    fn ops_per_sec(&self) -> f64 {
        self.latencies.len() as f64 / self.window.as_secs_f64()
    }
}

/// One scenario's rounds as one result: rates and CPU over all windows,
/// percentiles over all calls, the ratio as the median of the rounds'.
fn summarize(scenario: Scenario, samples: Vec<Sample>, baselines: &[f64]) -> ScenarioResult {
    let round_ratios: Vec<f64> = samples
        .iter()
        .zip(baselines)
        .map(|(sample, baseline)| sample.ops_per_sec() / baseline)
        .collect();
    let window: Duration = samples.iter().map(|s| s.window).sum();
    let errors = samples.iter().map(|s| s.errors).sum();
    let total = |cpu: fn(&Sample) -> Option<Duration>| -> Option<Duration> {
        samples.iter().map(cpu).sum()
    };
    let (server_cpu, client_cpu) = (total(|s| s.server_cpu), total(|s| s.client_cpu));
    let mut by_thread: BTreeMap<String, Duration> = BTreeMap::new();
    for (kind, spent) in samples.iter().flat_map(|s| &s.server_threads) {
        *by_thread.entry(kind.clone()).or_default() += *spent;
    }
    let mut server_cpu_by_thread: Vec<(String, Duration)> = by_thread.into_iter().collect();
    server_cpu_by_thread.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    let mut latencies: Vec<u32> = samples.into_iter().flat_map(|s| s.latencies).collect();
    latencies.sort_unstable();
    let pick = |q: f64| {
        let index = ((latencies.len() as f64 * q).ceil() as usize).saturating_sub(1);
        Duration::from_micros(u64::from(latencies.get(index).copied().unwrap_or(0)))
    };
    let ops = latencies.len() as u64;
    let per_call =
        |spent: Option<Duration>| spent.map(|d| d / u32::try_from(ops.max(1)).unwrap_or(u32::MAX));
    ScenarioResult {
        scenario,
        ops,
        errors,
        ops_per_sec: ops as f64 / window.as_secs_f64().max(1e-9),
        p50: pick(0.50),
        p99: pick(0.99),
        p999: pick(0.999),
        ratio: median(&round_ratios),
        round_ratios,
        server_cpu_per_call: per_call(server_cpu),
        client_cpu_per_call: per_call(client_cpu),
        server_cpu_by_thread,
    }
}

/// Where one measured window sits in a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Window {
    /// The round it belongs to, from 1.
    round: usize,
    /// Whether it is the round's first window.
    round_starts: bool,
    /// The index of its scenario among the measured ones; `None` for a
    /// health window.
    slot: Option<usize>,
}

/// The order of a run's windows: every scenario window has a health window
/// right before it and right after it (the one before the next scenario,
/// or a last one at the end), so its baseline is measured on both sides of
/// it, seconds apart: `H S1 H S2 H … H`, round after round. A run of only
/// the baseline measures it once per round.
fn plan_windows(scenarios: &[Scenario], rounds: usize) -> Vec<(Window, Scenario)> {
    let mut plan = Vec::new();
    for round in 1..=rounds {
        if scenarios.is_empty() {
            let window = Window {
                round,
                round_starts: true,
                slot: None,
            };
            plan.push((window, Scenario::Health));
            continue;
        }
        for (slot, scenario) in scenarios.iter().enumerate() {
            let health = Window {
                round,
                round_starts: slot == 0,
                slot: None,
            };
            let measured = Window {
                round,
                round_starts: false,
                slot: Some(slot),
            };
            plan.push((health, Scenario::Health));
            plan.push((measured, *scenario));
        }
    }
    if !scenarios.is_empty() {
        let last = Window {
            round: rounds,
            round_starts: false,
            slot: None,
        };
        plan.push((last, Scenario::Health));
    }
    plan
}

/// The baseline of each of a scenario's windows, given the index of the
/// health window just before each (`befores`): the mean rate of that one and
/// the next, measured just after it, so a baseline that drifts steadily
/// cancels out.
fn bracketing_baselines(health: &[f64], befores: &[usize]) -> Vec<f64> {
    befores
        .iter()
        .map(
            |&before| match (health.get(before), health.get(before + 1)) {
                (Some(b), Some(a)) => (b + a) / 2.0,
                (Some(b), None) => *b,
                _ => f64::NAN,
            },
        )
        .collect()
}

/// The median (the mean of the middle two for an even count); 0 when empty.
fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}

/// One request loop. Returns the latencies (µs) of calls completed inside
/// the window and the number of failed calls.
async fn worker(
    scenario: Scenario,
    task: usize,
    tasks: usize,
    channel: Channel,
    workload: Arc<Workload>,
    start: Instant,
    end: Instant,
) -> (Vec<u32>, u64) {
    let mut ledger = ImageLedgerClient::new(channel.clone());
    let mut pages = tonic::client::Grpc::new(channel.clone());
    let mut health = HealthClient::new(channel);
    let mut rng = StdRng::seed_from_u64(task as u64);
    // This task's own images for writes, so no two tasks write one image.
    let own: Vec<usize> = (task..workload.images.len()).step_by(tasks).collect();
    let mut next_own = 0usize;
    let mut latencies = Vec::new();
    let mut errors = 0;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        let kind = match scenario {
            Scenario::Mixed => match rng.random_range(0..20) {
                0 | 1 => Scenario::Share,
                n if n % 2 == 0 => Scenario::Authorize,
                _ => Scenario::Describe,
            },
            other => other,
        };
        let ok = match kind {
            Scenario::Health => health
                .check(HealthCheckRequest {
                    service: String::new(),
                })
                .await
                .is_ok(),
            Scenario::Share => {
                if own.is_empty() {
                    break;
                }
                let i = own[next_own % own.len()];
                next_own += 1;
                let (image, owner) = &workload.images[i];
                let owner = account(*owner).to_string();
                let shared = workload.shared[i].load(Ordering::Relaxed);
                let result = if shared {
                    ledger
                        .cancel_image_sharing(pb::CancelImageSharingRequest {
                            account_id: owner,
                            image_id: image.clone(),
                            account_ids: vec![RECIPIENT.into()],
                            ..Default::default()
                        })
                        .await
                        .map(|_| ())
                } else {
                    ledger
                        .share_image(pb::ShareImageRequest {
                            account_id: owner,
                            image_id: image.clone(),
                            account_ids: vec![RECIPIENT.into()],
                            ..Default::default()
                        })
                        .await
                        .map(|_| ())
                };
                if result.is_ok() {
                    workload.shared[i].store(!shared, Ordering::Relaxed);
                }
                result.is_ok()
            }
            Scenario::Authorize => {
                let (image, owner) = &workload.images[rng.random_range(0..workload.images.len())];
                ledger
                    .authorize_image_use(pb::AuthorizeImageUseRequest {
                        account_id: account(*owner).to_string(),
                        image_id: image.clone(),
                        region: workload.region.clone(),
                        r#use: pb::ImageUse::CreateInstance as i32,
                    })
                    .await
                    .is_ok_and(|r| r.into_inner().allowed)
            }
            Scenario::Describe | Scenario::Mixed => {
                let (_, owner) = &workload.images[rng.random_range(0..workload.images.len())];
                let request = pb::DescribeImagesRequest {
                    account_id: account(*owner).to_string(),
                    region: workload.region.clone(),
                    limit: PAGE_SIZE,
                    ..Default::default()
                };
                describe_page(&mut pages, request)
                    .await
                    .is_ok_and(|page| page.is_full_first_page())
            }
        };
        let done = Instant::now();
        if now >= start && done <= end {
            if ok {
                latencies.push(u32::try_from((done - now).as_micros()).unwrap_or(u32::MAX));
            } else {
                errors += 1;
            }
        }
    }
    (latencies, errors)
}

/// CPU time by kind of thread.
type Threads = BTreeMap<String, Duration>;

/// CPU time (nanoseconds on the CPU, from the kernel's per-thread scheduler
/// statistics) of a process's threads, summed by kind of thread; `None`
/// when the process cannot be read. Threads that ended are not counted
/// (sled starts and ends I/O threads as it needs them).
fn cpu_by_thread(pid: u32) -> Option<Threads> {
    let mut by_kind = BTreeMap::new();
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    for task in tasks.flatten() {
        let path = task.path();
        let (Ok(name), Ok(stat)) = (
            std::fs::read_to_string(path.join("comm")),
            std::fs::read_to_string(path.join("schedstat")),
        ) else {
            continue;
        };
        let Some(Ok(nanos)) = stat.split_whitespace().next().map(str::parse::<u64>) else {
            continue;
        };
        *by_kind.entry(thread_kind(name.trim())).or_default() += Duration::from_nanos(nanos);
    }
    Some(by_kind)
}

/// A thread's name without a trailing `-<number>` (`sled-io-3` is `sled-io`).
fn thread_kind(name: &str) -> String {
    match name.rsplit_once('-') {
        Some((kind, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => {
            kind.to_owned()
        }
        _ => name.to_owned(),
    }
}

fn rss_of(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

fn dir_size(dir: &Path) -> std::io::Result<u64> {
    let mut total = 0;
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let meta = entry.metadata()?;
        total += if meta.is_dir() {
            dir_size(&entry.path())?
        } else {
            meta.len()
        };
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(calls: usize, seconds: u64) -> Sample {
        Sample {
            latencies: (0..calls).map(|i| i as u32).collect(),
            errors: 0,
            window: Duration::from_secs(seconds),
            server_cpu: Some(Duration::from_millis(calls as u64)),
            client_cpu: None,
            server_threads: BTreeMap::from([
                (
                    "ledger-append".to_owned(),
                    Duration::from_millis(calls as u64 / 4),
                ),
                (
                    "tokio-rt-worker".to_owned(),
                    Duration::from_millis(calls as u64 / 2),
                ),
            ]),
        }
    }

    /// A reply as the server writes it: each image as field 1, then the total.
    fn reply(images: &[pb::Image], total_count: u32) -> Vec<u8> {
        let mut out = Vec::new();
        for image in images {
            prost::encoding::message::encode(1, image, &mut out);
        }
        prost::encoding::uint32::encode(2, &total_count, &mut out);
        out
    }

    fn images(n: usize) -> Vec<pb::Image> {
        (0..n)
            .map(|i| pb::Image {
                image_id: format!("img-{i:08}"),
                image_name: format!("image {i}"),
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn a_page_view_keeps_each_image_encoded_and_checks_the_count() -> Result<(), prost::DecodeError>
    {
        use prost::Message;
        let full = images(20);
        let view = PageView::decode(reply(&full, 35).as_slice())?;
        assert_eq!(view.total_count, 35);
        assert_eq!(view.images.len(), 20);
        assert_eq!(view.images[7].as_ref(), full[7].encode_to_vec().as_slice());
        assert!(view.is_full_first_page());

        let short = PageView::decode(reply(&images(19), 35).as_slice())?;
        assert!(!short.is_full_first_page());
        let all = PageView::decode(reply(&images(3), 3).as_slice())?;
        assert!(all.is_full_first_page());
        let none = PageView::decode(reply(&[], 0).as_slice())?;
        assert!(none.is_full_first_page());
        let hollow = PageView::decode(reply(&[pb::Image::default()], 1).as_slice())?;
        assert!(!hollow.is_full_first_page());
        Ok(())
    }

    #[test]
    fn threads_are_grouped_by_name_without_their_number() {
        assert_eq!(thread_kind("sled-io-3"), "sled-io");
        assert_eq!(thread_kind("sled-io-12"), "sled-io");
        assert_eq!(thread_kind("tokio-rt-worker"), "tokio-rt-worker");
        assert_eq!(thread_kind("ledger-append"), "ledger-append");
        assert_eq!(thread_kind("worker-"), "worker-");
        assert_eq!(thread_kind("image-ledger"), "image-ledger");
    }

    #[test]
    fn every_scenario_window_has_a_health_window_on_each_side() {
        let plan = plan_windows(&[Scenario::Share, Scenario::Describe], 2);
        let names: Vec<&str> = plan.iter().map(|(_, s)| s.name()).collect();
        assert_eq!(
            names,
            [
                "health", "share", "health", "describe", "health", "share", "health", "describe",
                "health"
            ]
        );
        let slots: Vec<Option<usize>> = plan.iter().map(|(w, _)| w.slot).collect();
        assert_eq!(
            slots,
            [
                None,
                Some(0),
                None,
                Some(1),
                None,
                Some(0),
                None,
                Some(1),
                None
            ]
        );
        let starts: Vec<usize> = plan
            .iter()
            .filter(|(w, _)| w.round_starts)
            .map(|(w, _)| w.round)
            .collect();
        assert_eq!(starts, [1, 2]);
        // Only the baseline: one window per round.
        let alone = plan_windows(&[], 3);
        assert_eq!(alone.len(), 3);
        assert!(alone
            .iter()
            .all(|(w, s)| *s == Scenario::Health && w.slot.is_none()));
    }

    #[test]
    fn a_baseline_is_the_mean_of_the_health_windows_around_the_scenario() {
        // H0 S1 H1 D1 H2 S2 H3 D2 H4, health rising steadily: share follows
        // H0 and H2, describe H1 and H3.
        let health = [100.0, 110.0, 120.0, 130.0, 140.0];
        assert_eq!(bracketing_baselines(&health, &[0, 2]), vec![105.0, 125.0]);
        assert_eq!(bracketing_baselines(&health, &[1, 3]), vec![115.0, 135.0]);
        // A run cut short after its last scenario window keeps the one before.
        assert_eq!(
            bracketing_baselines(&health[..4], &[1, 3]),
            vec![115.0, 130.0]
        );
    }

    #[test]
    fn the_median_of_odd_even_and_empty_lists() {
        assert_eq!(median(&[0.3, 0.1, 0.2]), 0.2);
        assert_eq!(median(&[0.4, 0.1, 0.3, 0.2]), 0.25);
        assert_eq!(median(&[]), 0.0);
    }

    #[test]
    fn each_round_is_compared_with_its_own_baseline() {
        // Baselines of 100 and 50 calls/s; the scenario does 50 then 40:
        // ratios 0.5 and 0.8, whatever the pooled rates would say.
        let result = summarize(
            Scenario::Share,
            vec![sample(100, 2), sample(80, 2)],
            &[100.0, 50.0],
        );
        assert_eq!(result.round_ratios, vec![0.5, 0.8]);
        assert!((result.ratio - 0.65).abs() < 1e-12);
        assert_eq!(result.ops, 180);
        assert_eq!(result.ops_per_sec, 45.0);
        assert_eq!(result.server_cpu_per_call, Some(Duration::from_millis(1)));
        assert_eq!(result.client_cpu_per_call, None);
        // Thread CPU summed over the rounds, most first.
        assert_eq!(
            result.server_cpu_by_thread,
            vec![
                ("tokio-rt-worker".to_owned(), Duration::from_millis(90)),
                ("ledger-append".to_owned(), Duration::from_millis(45)),
            ]
        );
        // Percentiles over the calls of both rounds (latencies 0..100 and 0..80).
        assert_eq!(result.p50, Duration::from_micros(44));
    }

    #[test]
    fn the_log_is_filled_to_at_least_the_target_ending_on_a_round_of_shares() {
        let config = |accounts, images, log_events| BenchConfig {
            binary: "image-ledger".into(),
            addr: None,
            data_dir: None,
            accounts,
            images,
            log_events,
            scenarios: Vec::new(),
            seconds: 1.0,
            rounds: 1,
            concurrency: 64,
            connections: 4,
            cache_mb: 16,
            page_cache_mb: 16,
        };
        // Accounts, images, one round of shares.
        assert_eq!(preload_events(&config(1_000, 10_000, 0)), 21_000);
        assert_eq!(preload_events(&config(1_000, 10_000, 21_000)), 21_000);
        // One more event needs a round of cancels and one of shares.
        assert_eq!(preload_events(&config(1_000, 10_000, 21_001)), 41_000);
        // 98.9 rounds asked: 99, the last of them shares.
        assert_eq!(preload_events(&config(1_000, 10_000, 1_000_000)), 1_001_000);
        // 98 rounds asked, which would end on cancels: 99.
        assert_eq!(preload_events(&config(1_000, 10_000, 991_000)), 1_001_000);
        assert_eq!(preload_events(&config(20, 200, 500)), 820);
    }
}
