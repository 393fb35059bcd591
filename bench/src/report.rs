//! The report of a run on stdout: a table of the scenarios, then the
//! rounds, where the server's CPU went, start-up, memory and disk.

use image_ledger_bench::{BenchConfig, BenchReport, ScaleReport};

/// Prints what a run measured.
pub fn print(config: &BenchConfig, report: &BenchReport) {
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
}

/// Prints what `scale` measured: the calls as [`print`] does, then one
/// table of the figures a region-sized log is judged by.
pub fn print_scale(config: &BenchConfig, report: &ScaleReport) {
    print(config, &report.calls);
    let mib = |bytes: Option<u64>| {
        bytes.map_or_else(
            || "-".to_owned(),
            |b| format!("{:.0} MiB", b as f64 / 1048576.0),
        )
    };
    let ratio = |name: &str| {
        report
            .calls
            .results
            .iter()
            .find(|r| r.scenario.name() == name)
            .map_or_else(|| "-".to_owned(), |r| format!("{:.2}", r.ratio))
    };
    println!();
    println!(
        "{} events, {} accounts, {} images",
        report.events, config.accounts, config.images
    );
    println!("| figure | measured |");
    println!("|---|---|");
    println!(
        "| start after a clean stop | {:.2?} |",
        report.clean_start.0
    );
    println!(
        "| start after a SIGKILL ({} events written under load before it) | {:.2?} |",
        report.killed_start.0, report.killed_start.1
    );
    println!(
        "| resident memory once serving | {} |",
        mib(report.clean_start.1)
    );
    println!(
        "| resident memory after the calls | {} |",
        mib(report.calls.rss_bytes)
    );
    for name in ["share", "authorize", "describe"] {
        println!("| {name} / health | {} |", ratio(name));
    }
    match report.verify {
        Some((took, peak)) => println!(
            "| audit verify | {:.1?}, {:.0} events/s, peak {} |",
            took,
            report.events as f64 / took.as_secs_f64().max(1e-9),
            mib(peak)
        ),
        None => println!("| audit verify | - (sled only) |"),
    }
    match report.calls.disk_bytes_per_event {
        Some(per_event) => println!("| disk per event | {per_event:.0} bytes |"),
        None => println!("| disk per event | - (sled only) |"),
    }
}
