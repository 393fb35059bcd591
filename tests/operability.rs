//! What operators run on: the metrics endpoint (a scrape shows the gRPC
//! counters and the ledger's own moving as calls are made, in the
//! OpenMetrics text format) and JSON logs (every line parses, calls carry
//! their span).

mod common;

use common::scrape::{get, sample};
use common::*;
use image_ledger::grpc::pb;
use image_ledger::grpc::pb::audit_log_client::AuditLogClient;
use image_ledger_testkit::{ServerCommand, StartError, Stderr};
use std::time::Duration;

#[tokio::test]
async fn a_scrape_shows_the_calls_and_the_ledger_moving() -> TestResult {
    let dir = tempfile::tempdir()?;
    let metrics = "127.0.0.1:0".parse()?;
    let server = InProcess::new(dir.path())
        .with(|config| config.server.metrics_addr = Some(metrics))
        .start()
        .await?;
    let metrics = server.metrics_addr().ok_or("metrics are served")?;
    let mut c = connect(&server).await;

    // The ledger's limits are its first record, made as it starts.
    let (_, before) = get(metrics, "/metrics").await?;
    assert_eq!(sample(&before, "ledger_head_position"), Some(1.0));
    assert_eq!(sample(&before, "ledger_events_committed_total"), Some(1.0));

    register_roots(&mut c, &[OWNER, FRIEND]).await;
    let image = register_image(&mut c, OWNER, GZ, "web").await;
    c.share_image(share_request(OWNER, &image, &[FRIEND]))
        .await?;
    // A refusal: sharing again with the same account.
    assert!(c
        .share_image(share_request(OWNER, &image, &[FRIEND]))
        .await
        .is_err());
    for _ in 0..3 {
        c.describe_images(describe_request(FRIEND, GZ)).await?;
    }
    let mut audit = AuditLogClient::connect(format!("http://{}", server.local_addr())).await?;
    let stream = audit
        .subscribe(pb::SubscribeRequest { from_position: 0 })
        .await?
        .into_inner();

    let (status, text) = get(metrics, "/metrics").await?;
    assert!(status.contains("200"), "{status}");
    let ledger = "grpc_service=\"imageledger.v1.ImageLedger\"";
    assert_eq!(
        sample(
            &text,
            &format!("grpc_server_started_total{{{ledger},grpc_method=\"ShareImage\"}}")
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(
            &text,
            &format!(
                "grpc_server_handled_total{{{ledger},grpc_method=\"ShareImage\",grpc_code=\"OK\"}}"
            )
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            &format!(
                "grpc_server_handled_total{{{ledger},grpc_method=\"ShareImage\",grpc_code=\"FailedPrecondition\"}}"
            )
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &text,
            &format!(
                "grpc_server_handling_seconds_count{{{ledger},grpc_method=\"DescribeImages\"}}"
            )
        ),
        Some(3.0)
    );
    // Two accounts, an image, a share.
    assert_eq!(sample(&text, "ledger_head_position"), Some(5.0));
    assert_eq!(sample(&text, "ledger_events_committed_total"), Some(5.0));
    assert_eq!(sample(&text, "ledger_commands_committed_total"), Some(5.0));
    assert!(sample(&text, "ledger_group_commit_commands_count").is_some_and(|n| n >= 1.0));
    assert!(
        sample(&text, "ledger_commit_stage_seconds_count{stage=\"sync\"}")
            .is_some_and(|n| n >= 1.0),
        "{text}"
    );
    assert_eq!(sample(&text, "ledger_page_cache_misses_total"), Some(1.0));
    assert_eq!(sample(&text, "ledger_page_cache_hits_total"), Some(2.0));
    assert_eq!(sample(&text, "ledger_subscriptions_open"), Some(1.0));
    assert_eq!(sample(&text, "ledger_writer_queue_depth"), Some(0.0));
    assert_eq!(sample(&text, "ledger_read_side_lag_events"), Some(5.0));
    assert!(
        text.ends_with("# EOF\n"),
        "an OpenMetrics exposition ends with # EOF"
    );

    drop(stream);
    let mut open = None;
    for _ in 0..50 {
        let (_, text) = get(metrics, "/metrics").await?;
        open = sample(&text, "ledger_subscriptions_open");
        if open == Some(0.0) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    assert_eq!(
        open,
        Some(0.0),
        "a closed subscription is no longer counted"
    );

    let (status, _) = get(metrics, "/other").await?;
    assert!(status.contains("404"), "{status}");
    server.stop().await?;
    Ok(())
}

// Several threads: the test blocks one reading the server's stderr while
// the client's connection closes on another.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_logs_are_one_object_a_line_with_the_calls_span() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut server = ServerCommand::new(env!("CARGO_BIN_EXE_image-ledger"))
        .global("--log-format")
        .global("json")
        .data_dir(dir.path())
        .env("RUST_LOG", "debug,h2=info,tower=info,hyper=info")
        .stderr(Stderr::Capture)
        .spawn()?;
    let addr = server.addr().to_string();
    let mut c = pb::image_ledger_client::ImageLedgerClient::connect(server.url()).await?;
    register(&mut c, OWNER, pb::AccountKind::Root).await;
    c.register_account(pb::RegisterAccountRequest {
        account_id: FRIEND.into(),
        kind: pb::AccountKind::Root as i32,
        client_token: "tok-never-logged-7f3a".into(),
    })
    .await?;
    c.describe_image_quota(pb::DescribeImageQuotaRequest {
        account_id: OWNER.into(),
        region: GZ.into(),
        min_position: 0,
    })
    .await?;
    // A stopping server waits for open connections to close.
    drop(c);
    assert!(server.terminate(Duration::from_secs(30))?.success());
    let logs = server.logs();
    let lines: Vec<serde_json::Value> = logs
        .lines()
        .map(|line| serde_json::from_str(line).map_err(|e| format!("{e}: {line}")))
        .collect::<Result<_, _>>()?;
    assert!(
        lines
            .iter()
            .any(|l| l["message"] == "serving" && l["addr"] == addr.as_str()),
        "{logs}"
    );
    // The call's span: its method, the account it acted for, its code.
    let handled = lines
        .iter()
        .find(|l| {
            l["message"] == "handled"
                && l["span"]["method"] == "/imageledger.v1.ImageLedger/RegisterAccount"
        })
        .ok_or(format!("no handled line for the call in {logs}"))?;
    assert_eq!(handled["span"]["name"], "call");
    assert_eq!(handled["span"]["account"], OWNER);
    assert_eq!(handled["span"]["outcome"], "OK");
    assert_eq!(handled["level"], "DEBUG");
    // Client tokens (idempotency keys) never reach the logs.
    assert!(!logs.contains("tok-never-logged-7f3a"), "{logs}");
    // Queries name the account they ask for too.
    let query = lines
        .iter()
        .find(|l| {
            l["message"] == "handled"
                && l["span"]["method"] == "/imageledger.v1.ImageLedger/DescribeImageQuota"
        })
        .ok_or(format!("no handled line for the query in {logs}"))?;
    assert_eq!(query["span"]["account"], OWNER);
    assert_eq!(query["span"]["outcome"], "OK");
    Ok(())
}

/// The address `serve` listens on with these extra arguments and
/// environment, and the config file holding `file`.
fn listens_on(
    file: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<String, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("ledger.toml");
    std::fs::write(&config, file)?;
    let mut command = ServerCommand::new(env!("CARGO_BIN_EXE_image-ledger"))
        .addr(None)
        .data_dir(dir.path())
        .args(args)
        .env("IMAGE_LEDGER_CONFIG", &config)
        .env_remove("IMAGE_LEDGER_LISTEN");
    for (name, value) in env {
        command = command.env(name, value);
    }
    Ok(command.spawn()?.addr().to_string())
}

fn free_addr() -> Result<String, Box<dyn std::error::Error>> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .to_string())
}

#[test]
fn a_setting_comes_from_the_flag_then_the_environment_then_the_file() -> TestResult {
    let (file, env, flag) = (free_addr()?, free_addr()?, free_addr()?);
    let config = format!("addr = \"{file}\"\nimage_quota = 7\n");
    assert_eq!(listens_on(&config, &[], &[])?, file);
    assert_eq!(
        listens_on(&config, &[], &[("IMAGE_LEDGER_LISTEN", &env)])?,
        env
    );
    assert_eq!(
        listens_on(
            &config,
            &["--addr", &flag],
            &[("IMAGE_LEDGER_LISTEN", &env)]
        )?,
        flag
    );
    Ok(())
}

/// `serve` on `data` with `args`, refused: its stderr.
fn refused_start(
    data: &std::path::Path,
    args: &[&str],
) -> Result<String, Box<dyn std::error::Error>> {
    match ServerCommand::new(env!("CARGO_BIN_EXE_image-ledger"))
        .addr(None)
        .data_dir(data)
        .args(args)
        .stderr(Stderr::Capture)
        .spawn()
    {
        Err(StartError::Refused { status, stderr, .. }) => {
            assert_eq!(status.and_then(|s| s.code()), Some(1), "{stderr}");
            Ok(stderr)
        }
        Ok(_) => Err("the server started".into()),
        Err(err) => Err(err.into()),
    }
}

#[test]
fn a_start_that_cannot_serve_says_why_in_its_own_words_and_creates_nothing() -> TestResult {
    let dir = tempfile::tempdir()?;
    // A port in use: refused before the data directory is made.
    let taken = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = taken.local_addr()?.to_string();
    let fresh = dir.path().join("fresh");
    let said = refused_start(&fresh, &["--addr", &port])?;
    assert!(
        said.contains(&format!(
            "error: cannot start the server: cannot listen on {port}: Address already in use"
        )),
        "{said}"
    );
    assert_eq!(said.matches("Address already in use").count(), 1, "{said}");
    assert!(!fresh.exists(), "the data directory was made");
    drop(taken);

    // A second server on a data directory in use.
    let data = dir.path().join("data");
    let _first = ServerCommand::new(env!("CARGO_BIN_EXE_image-ledger"))
        .data_dir(&data)
        .spawn()?;
    let said = refused_start(&data, &["--addr", "127.0.0.1:0"])?;
    assert!(
        said.contains(&format!(
            "another process holds {} (a server already running on it?)",
            data.display()
        )),
        "{said}"
    );
    assert!(!said.contains("WouldBlock"), "{said}");

    // A host name is resolved: localhost is loopback.
    let named = ServerCommand::new(env!("CARGO_BIN_EXE_image-ledger"))
        .addr(None)
        .data_dir(dir.path().join("named"))
        .args(["--addr", "localhost:0"])
        .spawn()?;
    assert!(named.addr().ip().is_loopback(), "{}", named.addr());
    Ok(())
}

#[test]
fn a_config_file_with_an_unknown_setting_is_refused_by_its_name() -> TestResult {
    let dir = tempfile::tempdir()?;
    let config = dir.path().join("ledger.toml");
    std::fs::write(&config, "addr = \"127.0.0.1:0\"\nmax_shares = 10\n")?;
    let refused = ServerCommand::new(env!("CARGO_BIN_EXE_image-ledger"))
        .addr(None)
        .args(["--config".as_ref(), config.as_os_str()])
        .data_dir(dir.path())
        .stderr(Stderr::Capture)
        .spawn();
    let Err(StartError::Refused { status, stderr, .. }) = refused else {
        panic!("a config file with an unknown setting started a server");
    };
    assert_eq!(status.and_then(|status| status.code()), Some(2));
    assert!(stderr.contains("unknown setting `max_shares`"), "{stderr}");
    Ok(())
}
