//! Restart, crash and concurrency: nothing acknowledged is lost, the chain
//! continues, the read side always equals a replay, and racing commands
//! never both win.

mod common;

use std::sync::Arc;

use common::*;
use image_ledger::app::{rebuild_projections, replay_log};
use image_ledger::domain::Policy;
use image_ledger::grpc::pb;
use image_ledger::projection::persist;
use image_ledger::store::{EventLog, ProjectionStoreExt, SledStore};
use tonic::Code;

/// Everything a client can see of a small history, for before/after comparisons.
async fn snapshot(c: &mut Client, images: &[String]) -> Vec<String> {
    let mut out = Vec::new();
    for account in [OWNER, FRIEND, OTHER] {
        for region in [GZ, SH] {
            let listed = c
                .describe_images(describe_request(account, region))
                .await
                .expect("describe")
                .into_inner();
            out.push(format!("{account}/{region}: {:?}", listed.images));
            out.push(format!(
                "quota {account}/{region}: {}",
                quota_used(c, account, region).await
            ));
        }
    }
    for image in images {
        let permission = c
            .describe_image_share_permission(pb::DescribeImageSharePermissionRequest {
                account_id: OWNER.into(),
                image_id: image.clone(),
                min_position: 0,
            })
            .await
            .map(|r| format!("{:?}", r.into_inner()))
            .unwrap_or_else(|s| format!("{:?}", s.code()));
        out.push(format!("{image}: {permission}"));
    }
    out
}

async fn scripted_history(c: &mut Client) -> Vec<String> {
    register_roots(c, &[OWNER, FRIEND, OTHER]).await;
    let web = register_image(c, OWNER, GZ, "web").await;
    let db = register_image(c, OWNER, GZ, "db").await;
    let gone = register_image(c, OWNER, GZ, "gone").await;
    c.share_image(share_request(OWNER, &web, &[FRIEND, OTHER]))
        .await
        .expect("share");
    c.cancel_image_sharing(cancel_request(OWNER, &web, &[OTHER]))
        .await
        .expect("cancel");
    c.modify_lighthouse_share_permission(pb::ModifyLighthouseSharePermissionRequest {
        account_id: OWNER.into(),
        image_id: db.clone(),
        permission: pb::LighthousePermission::Share as i32,
        client_token: String::new(),
    })
    .await
    .expect("lighthouse");
    let copy = c
        .copy_image(pb::CopyImageRequest {
            account_id: OWNER.into(),
            image_id: web.clone(),
            destination_regions: vec![SH.into()],
            ..Default::default()
        })
        .await
        .expect("copy")
        .into_inner()
        .images[0]
        .image_id
        .clone();
    c.delete_image(pb::DeleteImageRequest {
        account_id: OWNER.into(),
        image_id: gone.clone(),
        ..Default::default()
    })
    .await
    .expect("delete");
    vec![web, db, gone, copy]
}

/// Reopens a stopped server's store and checks the log and the projections.
fn check_store(dir: &std::path::Path, events: u64) {
    let store = SledStore::open(dir, 8 * 1024 * 1024).expect("store reopens");
    let (replayed, head) = replay_log(&store).expect("the chain is intact");
    assert_eq!(head.position, events);
    assert_eq!(store.head().expect("head"), head);
    assert_eq!(
        store.projection_checkpoint().expect("checkpoint"),
        Some(events)
    );
    let projected = persist::load(&store).expect("projections load");
    assert_eq!(projected, replayed, "the projections equal a fresh replay");
}

// Accounts (3), images (3), share, cancel, Lighthouse, copy, delete.
// The ledger's limits, then the history.
const HISTORY_EVENTS: u64 = 12;

#[tokio::test]
async fn a_restart_keeps_every_image_share_and_quota() -> TestResult {
    let server = TestServer::start().await;
    let mut c = server.client();
    let images = scripted_history(&mut c).await;
    let before = snapshot(&mut c, &images).await;
    let dir = server.stop().await;
    check_store(dir.path(), HISTORY_EVENTS);

    let server = TestServer::start_in(dir, Policy::default()).await;
    let mut c = server.client();
    assert_eq!(snapshot(&mut c, &images).await, before);
    // The chain continues across the restart.
    c.share_image(share_request(OWNER, &images[0], &[OTHER]))
        .await?;
    let dir = server.stop().await;
    check_store(dir.path(), HISTORY_EVENTS + 1);
    Ok(())
}

#[tokio::test]
async fn stale_projections_are_rebuilt_from_the_log_at_start() -> TestResult {
    let server = TestServer::start().await;
    let mut c = server.client();
    let images = scripted_history(&mut c).await;
    let before = snapshot(&mut c, &images).await;
    let dir = server.stop().await;
    {
        // Wipe the read side, as a crash in the middle of a rebuild would.
        let store = SledStore::open(dir.path(), 8 * 1024 * 1024)?;
        store.replace_projections(&[], 0)?;
        assert_eq!(persist::load(&store)?, Default::default());
    }
    let server = TestServer::start_in(dir, Policy::default()).await;
    let mut c = server.client();
    assert_eq!(snapshot(&mut c, &images).await, before);
    let dir = server.stop().await;
    check_store(dir.path(), HISTORY_EVENTS);
    Ok(())
}

#[tokio::test]
async fn a_rewritten_record_is_detected_by_replay() -> TestResult {
    let server = TestServer::start().await;
    let mut c = server.client();
    scripted_history(&mut c).await;
    let dir = server.stop().await;
    let store = SledStore::open(dir.path(), 8 * 1024 * 1024)?;
    let mut original = Vec::new();
    store.scan(5, &mut |_, bytes| {
        original = bytes.to_vec();
        false
    })?;
    let forged = String::from_utf8(original)?.replace(OWNER, "100000000666");
    store.tamper_record(5, forged.as_bytes())?;
    let err =
        rebuild_projections(&store, &Default::default()).expect_err("a forged record is refused");
    assert!(err.to_string().contains("position 5"), "{err}");
    Ok(())
}

#[tokio::test]
async fn fifty_racers_for_one_free_slot_leave_exactly_fifty_shares() -> TestResult {
    let server = TestServer::start().await;
    let mut c = server.client();
    register_roots(&mut c, &[OWNER]).await;
    let first: Vec<String> = (0..49).map(|i| format!("3000000{i:05}")).collect();
    let racers: Vec<String> = (0..50).map(|i| format!("4000000{i:05}")).collect();
    for account in first.iter().chain(&racers) {
        register(&mut c, account, pb::AccountKind::Root).await;
    }
    for round in 0..3 {
        let image = register_image(&mut c, OWNER, GZ, &format!("contested-{round}")).await;
        let first_refs: Vec<&str> = first.iter().map(String::as_str).collect();
        c.share_image(share_request(OWNER, &image, &first_refs))
            .await?;
        let image = Arc::new(image);
        let mut tasks = Vec::new();
        for racer in &racers {
            let mut client = server.client();
            let image = Arc::clone(&image);
            let racer = racer.clone();
            tasks.push(tokio::spawn(async move {
                client
                    .share_image(share_request(OWNER, &image, &[&racer]))
                    .await
                    .map_err(|status| status.code())
            }));
        }
        let mut won = 0;
        for task in tasks {
            match task.await? {
                Ok(_) => won += 1,
                Err(code) => assert_eq!(code, Code::ResourceExhausted),
            }
        }
        assert_eq!(won, 1, "exactly one racer wins round {round}");
        assert_eq!(shares_of(&mut c, OWNER, &image).await.len(), 50);
    }
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn racing_registrations_never_pass_the_quota() -> TestResult {
    let server = TestServer::start_with(Policy {
        image_quota: 10,
        ..Policy::default()
    })
    .await;
    let mut c = server.client();
    register_roots(&mut c, &[OWNER]).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let mut client = server.client();
        tasks.push(tokio::spawn(async move {
            client
                .register_image(image_request(OWNER, GZ, &format!("racer-{i}")))
                .await
                .map_err(|status| status.code())
        }));
    }
    let mut won = 0;
    for task in tasks {
        match task.await? {
            Ok(_) => won += 1,
            Err(code) => assert_eq!(code, Code::ResourceExhausted),
        }
    }
    assert_eq!(won, 10);
    assert_eq!(quota_used(&mut c, OWNER, GZ).await, 10);
    server.stop().await;
    Ok(())
}

/// What a server killed under write load left behind.
struct Killed {
    dir: tempfile::TempDir,
    /// Images it acknowledged before the kill.
    acked: Vec<String>,
}

/// Starts the binary with `extra` flags, has eight writers register images
/// and kills it (SIGKILL) while they run.
async fn kill_under_writes(extra: &[&str]) -> Result<Killed, Box<dyn std::error::Error>> {
    let dir = tempfile::tempdir()?;
    let mut process = binary(dir.path()).args(extra).spawn()?;
    let mut c = pb::image_ledger_client::ImageLedgerClient::connect(process.url()).await?;
    register_roots(&mut c, &[OWNER]).await;
    // Writers keep going while the process is killed; every OK must survive.
    let mut tasks = Vec::new();
    for writer in 0..8 {
        let mut client = c.clone();
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in 0..1_000 {
                let name = format!("w{writer}-{i}");
                match client.register_image(image_request(OWNER, GZ, &name)).await {
                    Ok(reply) => acked.push(reply.into_inner().image_id),
                    Err(status) => {
                        // Only the kill may stop a writer: a transport failure, not a refusal.
                        assert!(
                            matches!(
                                status.code(),
                                Code::Unavailable | Code::Unknown | Code::Cancelled
                            ),
                            "{status:?}"
                        );
                        break;
                    }
                }
            }
            acked
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    process.kill()?;
    let mut acked = Vec::new();
    for task in tasks {
        acked.extend(task.await?);
    }
    // The kill must land while writes are still flowing, or the test proves nothing.
    assert!(
        !acked.is_empty() && acked.len() < 8_000,
        "{} writes acknowledged; the kill should fall in the middle",
        acked.len()
    );
    eprintln!("{} writes acknowledged before the kill", acked.len());
    Ok(Killed { dir, acked })
}

/// Verifies the crashed directory as it stands, with the server's limits.
fn verify_crashed(
    store: &SledStore,
) -> Result<image_ledger::audit::VerifyReport, Box<dyn std::error::Error>> {
    Ok(image_ledger::audit::verify(
        store,
        &Policy {
            image_quota: 1_000_000,
            ..Policy::default()
        },
        &image_ledger::audit::VerifyOptions::default(),
    )?)
}

/// Restarts the binary on the crashed directory and checks that every
/// acknowledged image is listed.
async fn restart_finds_every_acknowledged_image(killed: &Killed) -> TestResult {
    let process = binary(killed.dir.path()).spawn()?;
    let mut c = pb::image_ledger_client::ImageLedgerClient::connect(process.url()).await?;
    let present = listed_images(&mut c, OWNER, GZ).await?;
    let lost: Vec<&String> = killed
        .acked
        .iter()
        .filter(|id| !present.contains(*id))
        .collect();
    assert!(
        lost.is_empty(),
        "{} acknowledged images lost: {lost:?}",
        lost.len()
    );
    Ok(())
}

#[tokio::test]
async fn a_killed_server_loses_nothing_it_acknowledged() -> TestResult {
    let killed = kill_under_writes(&[]).await?;
    {
        // The crashed directory is consistent as it stands: the log verifies,
        // and the read side equals a replay up to its (older) checkpoint.
        let store = SledStore::open(killed.dir.path(), 8 * 1024 * 1024)?;
        let head = store.head()?.position;
        assert!(head as usize >= killed.acked.len());
        let checkpoint = store.projection_checkpoint()?.ok_or("a checkpoint")?;
        // The read side is written behind the log (every few seconds), so
        // the restart below has to replay what the crash left unprojected.
        assert!(checkpoint < head, "checkpoint {checkpoint}, head {head}");
        let report = verify_crashed(&store)?;
        assert_eq!(report.projections_at, Some(checkpoint));
    }
    restart_finds_every_acknowledged_image(&killed).await
}

#[tokio::test]
async fn a_server_killed_while_writing_its_read_side_loses_nothing() -> TestResult {
    // With no delay the read side is written all the time, so a kill may
    // cut a write of it short; whatever it left verifies and loads.
    let mut cut_short = 0;
    for _ in 0..3 {
        let killed = kill_under_writes(&["--read-side-delay-ms", "0"]).await?;
        {
            let store = SledStore::open(killed.dir.path(), 8 * 1024 * 1024)?;
            let report = verify_crashed(&store)?;
            assert!(report.projections_at.is_some());
            cut_short += usize::from(!report.projections_pending.is_empty());
        }
        restart_finds_every_acknowledged_image(&killed).await?;
        // The restart caught the read side up (and nothing was written since).
        let store = SledStore::open(killed.dir.path(), 8 * 1024 * 1024)?;
        assert_eq!(store.projection_pending()?, Vec::<u64>::new());
        assert_eq!(store.projection_checkpoint()?, Some(store.head()?.position));
    }
    eprintln!("{cut_short} of 3 kills cut a write of the read side short");
    Ok(())
}

#[tokio::test]
async fn sigterm_stops_the_server_cleanly_and_keeps_everything() -> TestResult {
    let dir = tempfile::tempdir()?;
    let mut process = binary(dir.path()).spawn()?;
    let mut c = pb::image_ledger_client::ImageLedgerClient::connect(process.url()).await?;
    register_roots(&mut c, &[OWNER]).await;
    let image = register_image(&mut c, OWNER, GZ, "web").await;
    // SIGTERM, waited for off the runtime so the client stays responsive
    // during the graceful stop.
    let exit =
        tokio::task::spawn_blocking(move || process.terminate(std::time::Duration::from_secs(60)))
            .await??;
    assert!(exit.success(), "a clean stop exits 0, got {exit:?}");

    let process = binary(dir.path()).spawn()?;
    let mut c = pb::image_ledger_client::ImageLedgerClient::connect(process.url()).await?;
    assert_eq!(visible(&mut c, OWNER, GZ).await, vec![image]);
    Ok(())
}
