//! A failover of the database loses no acknowledged write: two replicas
//! write to a primary with a synchronous standby; the primary is killed
//! (`pg_ctl stop -m immediate`) and the standby promoted; the replicas
//! carry on against it through a multi-host URL, writes resume within 5 s
//! of the promotion, every acknowledged image is there and the chain
//! continues. Ignored where PostgreSQL's server is not installed.

mod common;

use std::time::{Duration, Instant};

use common::*;
use image_ledger::domain::Policy;
use image_ledger::store::PgStore;
use image_ledger_testkit::Cluster;
use tokio::sync::watch;

#[cfg_attr(
    not(postgres_installed),
    ignore = "needs PostgreSQL's server (apt-get install postgresql)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failover_to_a_synchronous_standby_loses_no_acknowledged_write() -> TestResult {
    let (primary, standby) = Cluster::start_with_standby();
    let url = failover_url(&primary, &standby);
    let mut servers = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir()?;
        let server = InProcess::new(dir.path())
            .with(|config| {
                config.store.database_url = Some(url.clone());
                config.signing_key_seed = Some(common::replica_seed());
            })
            .policy(Policy {
                image_quota: 1_000_000,
                ..Policy::default()
            })
            .start()
            .await?;
        servers.push((dir, server));
    }
    let mut first = connect(&servers[0].1).await;
    register_roots(&mut first, &[OWNER]).await;

    // Four writers per replica; each retries a write (same client token)
    // until it is acknowledged, and notes when writes resumed.
    let (stop, stopped) = watch::channel(false);
    let mut writers = Vec::new();
    for (replica, (_, server)) in servers.iter().enumerate() {
        for writer in 0..4 {
            let mut client = connect(server).await;
            let stopped = stopped.clone();
            writers.push(tokio::spawn(async move {
                let mut acked = Vec::new();
                let mut i = 0;
                while !*stopped.borrow() {
                    let mut request =
                        image_request(OWNER, GZ, &format!("r{replica}-w{writer}-{i}"));
                    request.client_token = format!("r{replica}-w{writer}-{i}");
                    loop {
                        match client.register_image(request.clone()).await {
                            Ok(reply) => {
                                acked.push((Instant::now(), reply.into_inner().image_id));
                                break;
                            }
                            Err(status) => {
                                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                                tokio::time::sleep(Duration::from_millis(50)).await;
                            }
                        }
                    }
                    i += 1;
                }
                acked
            }));
        }
    }
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    primary.crash()?;
    let crashed = Instant::now();
    tokio::time::sleep(Duration::from_millis(500)).await;
    standby.promote()?;
    let promoted = Instant::now();
    tokio::time::sleep(Duration::from_secs(6)).await;
    stop.send_replace(true);
    let mut acked = Vec::new();
    for writer in writers {
        acked.extend(writer.await?);
    }
    let before = acked.iter().filter(|(at, _)| *at < crashed).count();
    let resumed = acked
        .iter()
        .map(|(at, _)| *at)
        .filter(|at| *at > promoted)
        .min()
        .ok_or("no write was acknowledged after the promotion")?;
    eprintln!(
        "{before} writes acknowledged before the crash, {} in all; writes resumed {:?} after the promotion",
        acked.len(),
        resumed - promoted
    );
    assert!(before > 0, "the crash fell before any write");
    assert!(resumed - promoted < Duration::from_secs(5));

    // Every acknowledged image is on the new primary, seen by both replicas.
    for (_, server) in &servers {
        let mut client = connect(server).await;
        let present = listed_images(&mut client, OWNER, GZ).await?;
        let lost: Vec<&String> = acked
            .iter()
            .map(|(_, id)| id)
            .filter(|id| !present.contains(*id))
            .collect();
        assert!(lost.is_empty(), "{} acknowledged images lost", lost.len());
        assert_eq!(
            present.len(),
            acked.len(),
            "no image twice, none unacknowledged"
        );
    }
    for (_, server) in servers {
        server.stop().await?;
    }
    // The chain continues across the failover: the whole log verifies.
    let standby_url = format!("postgres://postgres@127.0.0.1:{}/postgres", standby.port());
    let report = tokio::task::spawn_blocking(move || -> Result<_, String> {
        let store = PgStore::open(&standby_url).map_err(|e| e.to_string())?;
        image_ledger::audit::verify(
            &store,
            &Policy {
                image_quota: 1_000_000,
                ..Policy::default()
            },
            &image_ledger::audit::VerifyOptions::default(),
        )
        .map_err(|e| e.to_string())
    })
    .await??;
    // The ledger's limits, the account, and every acknowledged write.
    assert_eq!(report.events, 2 + acked.len() as u64);
    Ok(())
}

/// The multi-host URL replicas are given for a primary and its standby.
fn failover_url(primary: &Cluster, standby: &Cluster) -> String {
    format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write&connect_timeout=2",
        primary.port(),
        standby.port()
    )
}

/// A replica on `url` in a directory of its own, holding the signing key
/// of the replica in `key_of` (replicas of a deployment share one), with
/// `change` made to its settings.
async fn replica(
    url: &str,
    key_of: Option<&std::path::Path>,
    change: impl FnOnce(&mut image_ledger::config::Config),
) -> Result<(tempfile::TempDir, image_ledger::server::RunningServer), Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    if let Some(first) = key_of {
        common::share_signing_key(first, dir.path())?;
    }
    let server = InProcess::new(dir.path())
        .with(|config| {
            config.store.database_url = Some(url.to_owned());
            change(config);
        })
        .start()
        .await?;
    Ok((dir, server))
}

/// Cancels, on `url`'s server, every backend waiting for the synchronous
/// standby, once one is; errs when none waits within 5 s.
fn cancel_synchronous_waits(url: String) -> Result<usize, String> {
    let mut admin = postgres::Client::connect(&url, postgres::NoTls).map_err(|e| e.to_string())?;
    for _ in 0..100 {
        let rows = admin
            .query(
                "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE wait_event = 'SyncRep'",
                &[],
            )
            .map_err(|e| e.to_string())?;
        let cancelled = rows.iter().filter(|row| row.get::<_, bool>(0)).count();
        if cancelled > 0 {
            return Ok(cancelled);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err("no commit waited for the synchronous standby".into())
}

#[cfg_attr(
    not(postgres_installed),
    ignore = "needs PostgreSQL's server (apt-get install postgresql)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_synchronous_wait_was_cancelled_is_never_acknowledged() -> TestResult {
    let (primary, standby) = Cluster::start_with_standby();
    let url = failover_url(&primary, &standby);
    let (dir, server) = replica(&url, None, |_| {}).await?;
    let mut client = connect(&server).await;
    register_roots(&mut client, &[OWNER]).await;

    // The standby goes away: the next commit waits for it, and the wait is
    // cancelled on the primary, which then commits locally with a WARNING.
    standby.crash()?;
    let mut request = image_request(OWNER, GZ, "waited");
    request.client_token = "waited-1".into();
    let waiting = {
        let mut client = client.clone();
        let request = request.clone();
        tokio::spawn(async move { client.register_image(request).await })
    };
    let primary_url = primary.url();
    let cancelled =
        tokio::task::spawn_blocking(move || cancel_synchronous_waits(primary_url)).await??;
    assert!(cancelled >= 1);
    let status = waiting
        .await?
        .expect_err("a commit the standby never confirmed was acknowledged");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(common::rpcs::reason(&status), "InternalError");

    // A retry with the token before the standby is back is not answered
    // OK either: the record is on the primary only.
    let mut early = request.clone();
    early.client_token = request.client_token.clone();
    let mut retry = tonic::Request::new(early);
    retry.set_timeout(Duration::from_secs(2));
    assert!(
        client.register_image(retry).await.is_err(),
        "a retry was answered from a record the standby does not hold"
    );

    primary.crash()?;
    fail_over_and_check(standby, server, client, request, dir.path(), None).await
}

/// Promotes `standby` (whose primary was stopped, and which never received
/// the record `request` may have left there), retries `request` for up to
/// 10 s, and checks on a fresh replica of the new primary that whatever was
/// acknowledged is there, and that the command was applied at most once.
async fn fail_over_and_check(
    standby: Cluster,
    server: image_ledger::server::RunningServer,
    mut client: Client,
    request: image_ledger::grpc::pb::RegisterImageRequest,
    dir: &std::path::Path,
    forked: Option<Forked<'_>>,
) -> TestResult {
    standby.resume()?;
    standby.promote()?;
    let promoted = Instant::now();
    let mut acknowledged = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && acknowledged.is_empty() {
        // A linearizable read never shows the record the new primary lost;
        // while the replica reloads, it is UNAVAILABLE, never INTERNAL.
        if let Some(Forked { client, lost, .. }) = &forked {
            let mut client = (*client).clone();
            match client.describe_images(describe_request(OWNER, GZ)).await {
                Ok(page) => assert!(
                    page.into_inner()
                        .images
                        .iter()
                        .all(|image| image.image_id != **lost),
                    "a read showed {lost}, which the database lost"
                ),
                Err(status) => {
                    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}")
                }
            }
        }
        let mut retry = tonic::Request::new(request.clone());
        retry.set_timeout(Duration::from_secs(2));
        match client.register_image(retry).await {
            Ok(reply) => acknowledged.push(reply.into_inner().image_id),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                tokio::time::sleep(Duration::from_millis(200)).await
            }
        }
    }
    // The replica serves again without a restart, and the retry was applied.
    assert_eq!(
        acknowledged.len(),
        1,
        "the retry was never acknowledged after the failover"
    );
    eprintln!(
        "the retry was acknowledged {:?} after the promotion",
        promoted.elapsed()
    );
    if let Some(Forked {
        client,
        lost,
        metrics,
    }) = &forked
    {
        // The replica that read the lost record serves again, without it.
        let mut client = (*client).clone();
        let deadline = Instant::now() + Duration::from_secs(10);
        let listed = loop {
            match client.describe_images(describe_request(OWNER, GZ)).await {
                Ok(page) => break page.into_inner().images,
                Err(status) => {
                    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                    assert!(
                        Instant::now() < deadline,
                        "the forked replica never served again"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        assert!(listed.iter().all(|image| image.image_id != *lost));
        let text = common::metrics_page(*metrics)
            .await
            .map_err(|e| e.to_string())?;
        let forks = text
            .lines()
            .find_map(|line| line.strip_prefix("ledger_chain_forks_total "))
            .and_then(|value| value.trim().parse::<f64>().ok());
        assert_eq!(forks, Some(1.0), "the fork was not counted once");
    }
    server.stop().await?;
    // The same directory: its signing key.
    let standby_url = format!("postgres://postgres@127.0.0.1:{}/postgres", standby.port());
    let truth = InProcess::new(dir)
        .with(|config| config.store.database_url = Some(standby_url))
        .start()
        .await?;
    let listed = listed_images(&mut connect(&truth).await, OWNER, GZ).await?;
    for id in &acknowledged {
        assert!(listed.contains(id), "{id} was acknowledged and is lost");
    }
    assert!(listed.len() <= 1, "applied more than once: {listed:?}");
    eprintln!(
        "after the failover: {} acknowledged, {} on the new primary",
        acknowledged.len(),
        listed.len()
    );
    truth.stop().await?;
    Ok(())
}

#[cfg_attr(
    not(postgres_installed),
    ignore = "needs PostgreSQL's server (apt-get install postgresql)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retry_is_not_acknowledged_from_a_record_only_crash_recovery_holds() -> TestResult {
    let (primary, standby) = Cluster::start_with_standby();
    let url = failover_url(&primary, &standby);
    let (dir, server) = replica(&url, None, |_| {}).await?;
    let mut client = connect(&server).await;
    register_roots(&mut client, &[OWNER]).await;
    // A second replica, which takes the retries: it did not fail the
    // write, so it answers from what it reads of the log.
    let (_other_dir, other) = replica(&url, Some(dir.path()), |_| {}).await?;
    let mut other_client = connect(&other).await;
    // A third that only reads: it holds what it follows, and no write of
    // its own fails, so only the fork can tell it its history is gone.
    let metrics = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?;
    let (_reader_dir, reader) = replica(&url, Some(dir.path()), |config| {
        config.server.metrics_addr = Some(metrics)
    })
    .await?;
    let mut reader_client = connect(&reader).await;

    // The standby goes away; the primary is killed while a commit waits
    // for it, and restarted: crash recovery makes the record visible,
    // though the standby never received it.
    standby.crash()?;
    let mut request = image_request(OWNER, GZ, "recovered");
    request.client_token = "recovered-1".into();
    let waiting = {
        let mut client = client.clone();
        let request = request.clone();
        tokio::spawn(async move { client.register_image(request).await })
    };
    tokio::time::sleep(Duration::from_millis(500)).await;
    primary.crash()?;
    assert!(
        waiting.await?.is_err(),
        "a commit the standby never confirmed was acknowledged"
    );
    primary.resume()?;
    // Retried on the other replica against the recovered primary: the
    // record is found, but the standby cannot confirm it, so no OK.
    let deadline = Instant::now() + Duration::from_secs(3);
    while Instant::now() < deadline {
        let mut retry = tonic::Request::new(request.clone());
        retry.set_timeout(Duration::from_millis(500));
        assert!(
            other_client.register_image(retry).await.is_err(),
            "a retry was answered from a record only the primary holds"
        );
    }
    // The record the recovered primary holds, as the reader sees it.
    let mut read = describe_request(OWNER, GZ);
    read.min_position = 1;
    let seen = reader_client
        .describe_images(read)
        .await?
        .into_inner()
        .images;
    assert_eq!(seen.len(), 1, "{seen:?}");
    let lost = seen[0].image_id.clone();
    primary.crash()?;
    other.stop().await?;
    let forked = Forked {
        client: &reader_client,
        lost: &lost,
        metrics,
    };
    fail_over_and_check(standby, server, client, request, dir.path(), Some(forked)).await?;
    reader.stop().await?;
    Ok(())
}

/// A replica that read a record the failover lost: its client, the
/// record's image, its metrics.
struct Forked<'a> {
    client: &'a Client,
    lost: &'a str,
    metrics: std::net::SocketAddr,
}

#[cfg_attr(
    not(postgres_installed),
    ignore = "needs PostgreSQL's server (apt-get install postgresql)"
)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_restart_fails_no_write_on_either_replica() -> TestResult {
    let cluster = Cluster::start();
    let url = cluster.url();
    let (first_dir, first) = replica(&url, None, |_| {}).await?;
    let (_second_dir, second) = replica(&url, Some(first_dir.path()), |_| {}).await?;
    let servers = [first, second];
    let mut clients = Vec::new();
    for server in &servers {
        clients.push(connect(server).await);
    }
    register_roots(&mut clients[0], &[OWNER]).await;
    for (n, client) in clients.iter_mut().enumerate() {
        client
            .register_image(image_request(OWNER, GZ, &format!("before-{n}")))
            .await?;
    }
    // Restarted while the replicas are idle; then one write on each, at once.
    tokio::time::sleep(Duration::from_millis(500)).await;
    cluster.crash()?;
    cluster.resume()?;
    for (n, client) in clients.iter_mut().enumerate() {
        let written = client
            .register_image(image_request(OWNER, GZ, &format!("after-{n}")))
            .await;
        assert!(
            written.is_ok(),
            "replica {n}'s first write after the restart failed: {written:?}"
        );
    }
    for server in servers {
        server.stop().await?;
    }
    Ok(())
}
