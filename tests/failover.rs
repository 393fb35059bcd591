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
    let url = format!(
        "postgres://postgres@127.0.0.1:{},127.0.0.1:{}/postgres?target_session_attrs=read-write&connect_timeout=2",
        primary.port(),
        standby.port()
    );
    let mut servers = Vec::new();
    for _ in 0..2 {
        let dir = tempfile::tempdir()?;
        let server = InProcess::new(dir.path())
            .with(|config| config.store.database_url = Some(url.clone()))
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
    assert_eq!(report.events, 1 + acked.len() as u64);
    Ok(())
}
