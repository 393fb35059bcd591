//! `scale`: one table of what a region-sized log costs. Fills the log once
//! (or tops up one filled earlier), runs the call scenarios against the
//! health baseline, then measures the starts an operator meets (after a
//! clean stop, and after a SIGKILL under write load), the memory once
//! serving and after the load, `audit verify` and the disk per event.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use super::server::{rss_of, spawn_server};
use super::{hex_seed, run, BenchConfig, BenchReport, BoxError, Scenario};

/// What `scale` measured.
#[derive(Debug, Clone)]
pub struct ScaleReport {
    /// The call scenarios, start, memory after the load and disk.
    pub calls: BenchReport,
    /// Start to serving after a clean stop, and the memory once serving.
    pub clean_start: (Duration, Option<u64>),
    /// Events written under load before the SIGKILL, and the start after it.
    pub killed_start: (u64, Duration),
    /// `audit verify`'s time and peak memory (sled only).
    pub verify: Option<(Duration, Option<u64>)>,
    /// Events in the log at the end.
    pub events: u64,
}

/// Runs `config`'s scenarios and the starts, memory and verify around them.
pub fn scale(config: &BenchConfig) -> Result<ScaleReport, BoxError> {
    let dir = config
        .data_dir
        .clone()
        .ok_or("scale needs --data-dir: its log is kept for the next run")?;
    let calls = run(config)?;
    // Every start signs with one key, as a deployment's replicas do.
    let seed = hex_seed();
    let (server, startup) = spawn_server(config, &dir, &seed)?;
    // Settled: the start's temporaries are freed by now.
    std::thread::sleep(Duration::from_secs(1));
    let serving = rss_of(server.0.pid());
    drop(server);
    let clean_start = (startup, serving);

    let (mut server, _) = spawn_server(config, &dir, &seed)?;
    // The clean start wrote nothing: the head is where the calls left it.
    let before = calls.events;
    let writes = BenchConfig {
        addr: Some(server.0.addr()),
        scenarios: vec![Scenario::Share],
        seconds: 3.0,
        rounds: 1,
        ..config.clone()
    };
    let events = run(&writes)?.events;
    let written = events.saturating_sub(before);
    server.0.kill()?;
    drop(server);
    let (server, after_kill) = spawn_server(config, &dir, &seed)?;
    drop(server);

    let verify = match &config.database_url {
        Some(_) => None,
        None => Some(verify(&config.binary, &dir)?),
    };
    Ok(ScaleReport {
        calls,
        clean_start,
        killed_start: (written, after_kill),
        verify,
        events,
    })
}

/// Runs `audit verify` on the sled store in `dir`: its time, and its peak
/// resident memory (read from /proc while it runs).
fn verify(binary: &Path, dir: &Path) -> Result<(Duration, Option<u64>), BoxError> {
    let started = Instant::now();
    let mut child = Command::new(binary)
        .args(["audit", "verify", "--data-dir"])
        .arg(dir)
        .stdout(std::process::Stdio::null())
        .spawn()?;
    let mut peak = None;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        peak = peak_rss(child.id()).or(peak);
        std::thread::sleep(Duration::from_millis(50));
    };
    let took = started.elapsed();
    if !status.success() {
        return Err(format!("audit verify failed: {status}").into());
    }
    Ok((took, peak))
}

/// The peak resident memory of process `pid` so far, in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}
