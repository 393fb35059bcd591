//! One measured window of a scenario, the order of a run's windows, and
//! how they become a scenario's result against its bracketing baselines.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tonic::transport::Channel;

use super::server::{cpu_by_thread, Threads};
use super::workload::{worker, Workload};
use super::{BenchConfig, BoxError, Scenario, ScenarioResult};

pub(super) async fn measure(
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
pub(super) struct Sample {
    /// Latency (µs) of each call completed in the window.
    pub(super) latencies: Vec<u32>,
    pub(super) errors: u64,
    pub(super) window: Duration,
    pub(super) server_cpu: Option<Duration>,
    pub(super) client_cpu: Option<Duration>,
    /// The server's CPU time in the window by kind of thread.
    pub(super) server_threads: Threads,
}

impl Sample {
    pub(super) fn ops_per_sec(&self) -> f64 {
        self.latencies.len() as f64 / self.window.as_secs_f64()
    }
}

/// One scenario's rounds as one result: rates and CPU over all windows,
/// percentiles over all calls, the ratio as the median of the rounds'.
pub(super) fn summarize(
    scenario: Scenario,
    samples: Vec<Sample>,
    baselines: &[f64],
) -> ScenarioResult {
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
pub(super) struct Window {
    /// The round it belongs to, from 1.
    pub(super) round: usize,
    /// Whether it is the round's first window.
    pub(super) round_starts: bool,
    /// The index of its scenario among the measured ones; `None` for a
    /// health window.
    pub(super) slot: Option<usize>,
}

/// The order of a run's windows: every scenario window has a health window
/// right before it and right after it (the one before the next scenario,
/// or a last one at the end), so its baseline is measured on both sides of
/// it, seconds apart: `H S1 H S2 H … H`, round after round. A run of only
/// the baseline measures it once per round.
pub(super) fn plan_windows(scenarios: &[Scenario], rounds: usize) -> Vec<(Window, Scenario)> {
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
pub(super) fn bracketing_baselines(health: &[f64], befores: &[usize]) -> Vec<f64> {
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
pub(super) fn median(values: &[f64]) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    match n {
        0 => 0.0,
        _ if n % 2 == 1 => sorted[n / 2],
        _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
    }
}
