//! A short run of every benchmark scenario, so the tool cannot rot. The
//! numbers are not checked: speed is measured by `image-ledger-bench`, not by tests.

use image_ledger_bench::{run, BenchConfig, Scenario};

#[test]
fn every_scenario_runs_against_a_real_server_without_errors(
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let config = BenchConfig {
        binary: env!("CARGO_BIN_EXE_image-ledger").into(),
        addr: None,
        data_dir: None,
        database_url: None,
        replicas: 1,
        accounts: 20,
        images: 200,
        log_events: 500,
        scenarios: Scenario::ALL.to_vec(),
        seconds: 0.5,
        rounds: 1,
        concurrency: 8,
        connections: 2,
        cache_mb: Some(16),
        page_cache_mb: Some(16),
        tls: false,
        otlp_endpoint: None,
    };
    let report = run(&config)?;
    let names: Vec<&str> = report.results.iter().map(|r| r.scenario.name()).collect();
    assert_eq!(
        names,
        vec![
            "health",
            "share",
            "authorize",
            "authorize-applied",
            "describe",
            "mixed",
            "cloud-describe",
            "cloud-share"
        ]
    );
    for result in &report.results {
        assert!(
            result.ops > 0,
            "{} completed no call",
            result.scenario.name()
        );
        assert_eq!(result.errors, 0, "{} had failures", result.scenario.name());
        assert!(result.p50 <= result.p99 && result.p99 <= result.p999);
    }
    assert_eq!(
        report.results[0].ratio, 1.0,
        "the baseline is its own yardstick"
    );
    assert!(
        report.events >= 500,
        "the log was filled: {}",
        report.events
    );
    // Filled to a round of shares (the third): each account lists its 10
    // images and 10 shared with it, a full page for describe.
    assert_eq!(report.listed, (20, 20));
    assert!(report.startup.is_some() && report.rss_bytes.is_some());
    assert!(report.disk_bytes_per_event.is_some_and(|b| b > 0.0));
    Ok(())
}

/// A second run on the same data directory starts where the first left
/// off: images it left shared with the recipient are cancelled first, not
/// shared again (which the ledger refuses).
#[test]
fn a_second_run_on_the_same_data_directory_has_no_errors(
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let dir = tempfile::tempdir()?;
    let config = BenchConfig {
        binary: env!("CARGO_BIN_EXE_image-ledger").into(),
        addr: None,
        data_dir: Some(dir.path().to_path_buf()),
        database_url: None,
        replicas: 1,
        accounts: 10,
        images: 50,
        log_events: 0,
        scenarios: vec![Scenario::Share],
        seconds: 0.3,
        rounds: 2,
        concurrency: 8,
        connections: 1,
        cache_mb: Some(16),
        page_cache_mb: Some(16),
        tls: false,
        otlp_endpoint: None,
    };
    for run_number in 1..=2 {
        let report = run(&config)?;
        let share = &report.results[1];
        assert_eq!(share.scenario.name(), "share");
        assert!(share.ops > 0, "run {run_number} completed no share");
        assert_eq!(share.errors, 0, "run {run_number} had failures");
        assert_eq!(share.round_ratios.len(), 2, "one ratio per round");
        // The preload shared each image once with the next account, and the
        // share scenario's recipient is none of them.
        assert_eq!(
            report.listed,
            (10, 10),
            "run {run_number}: every account lists its 5 images and 5 shared with it"
        );
    }
    Ok(())
}

/// The bench on a database with two replicas: every scenario runs over
/// connections spread between them, without errors. Ignored where
/// PostgreSQL's server is not installed.
#[cfg_attr(
    not(postgres_installed),
    ignore = "needs PostgreSQL's server (apt-get install postgresql)"
)]
#[test]
fn every_scenario_runs_against_two_replicas_on_a_database_without_errors(
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let cluster = image_ledger_testkit::Cluster::shared();
    let config = BenchConfig {
        binary: env!("CARGO_BIN_EXE_image-ledger").into(),
        addr: None,
        data_dir: None,
        database_url: Some(cluster.fresh_database()?),
        replicas: 2,
        accounts: 20,
        images: 200,
        log_events: 500,
        scenarios: Scenario::ALL.to_vec(),
        seconds: 0.5,
        rounds: 1,
        concurrency: 8,
        connections: 2,
        cache_mb: Some(16),
        page_cache_mb: Some(16),
        tls: false,
        otlp_endpoint: None,
    };
    let report = run(&config)?;
    assert_eq!(report.results.len(), Scenario::ALL.len());
    for result in &report.results {
        assert!(
            result.ops > 0,
            "{} completed no call",
            result.scenario.name()
        );
        assert_eq!(result.errors, 0, "{} had failures", result.scenario.name());
    }
    assert!(
        report.events >= 500,
        "the log was filled: {}",
        report.events
    );
    Ok(())
}

/// `--tls --traces`: the same scenarios over TLS, without errors, the
/// server's spans reaching the bench's receiver.
#[test]
fn a_tls_run_with_traces_has_no_errors() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let receiving = tokio::runtime::Runtime::new()?;
    let (endpoint, sink) = receiving.block_on(image_ledger_bench::otlp::Sink::start(false))?;
    let config = BenchConfig {
        binary: env!("CARGO_BIN_EXE_image-ledger").into(),
        addr: None,
        data_dir: None,
        database_url: None,
        replicas: 1,
        accounts: 20,
        images: 200,
        log_events: 300,
        scenarios: vec![Scenario::Health, Scenario::Share, Scenario::Authorize],
        seconds: 0.3,
        rounds: 1,
        concurrency: 8,
        connections: 2,
        cache_mb: Some(16),
        page_cache_mb: Some(16),
        tls: true,
        otlp_endpoint: Some(endpoint),
    };
    let report = run(&config)?;
    // Each call's span and its stages': more spans than shares.
    let shares = report.results[1].ops;
    assert!(sink.received() > shares, "{} spans", sink.received());
    assert_eq!(report.results.len(), 3);
    for result in &report.results {
        assert!(
            result.ops > 0,
            "{} completed no call",
            result.scenario.name()
        );
        assert_eq!(result.errors, 0, "{} had failures", result.scenario.name());
    }
    Ok(())
}
