//! The sharing controls beyond Tencent's, end to end over gRPC on both
//! stores: each rule's exact code, what the listings and the audit answers
//! show, and a log that `audit verify` re-decides afterwards.

#[macro_use]
mod common;

use std::process::Command;

use common::*;
use image_ledger::domain::Policy;
use image_ledger::grpc::pb;
use image_ledger::grpc::pb::audit_log_client::AuditLogClient;
use image_ledger::server::RunningServer;
use tempfile::TempDir;
use tonic::Code;

const REFUSED: Code = Code::FailedPrecondition;

/// A server on the test's backend, and the arguments that point an offline
/// audit command at its ledger.
struct Ledger {
    dir: TempDir,
    server: RunningServer,
    client: Client,
    location: Vec<String>,
    process: InProcess,
}

async fn start() -> Ledger {
    start_with(Policy::default()).await
}

/// A server with `policy`'s limits, three root accounts registered.
async fn start_with(policy: Policy) -> Ledger {
    let dir = tempfile::tempdir().expect("temporary directory");
    let mut location = vec!["--data-dir".to_owned(), dir.path().display().to_string()];
    let mut process = InProcess::new(dir.path()).policy(policy);
    if Backend::current() == Backend::Postgres {
        let url = image_ledger_testkit::Cluster::shared()
            .fresh_database()
            .expect("a fresh database");
        location = vec!["--database-url".to_owned(), url.clone()];
        process = process.with(move |config| config.store.database_url = Some(url));
    }
    let server = process.start().await.expect("server starts");
    let mut client = connect(&server).await;
    register_roots(&mut client, &[OWNER, FRIEND, OTHER]).await;
    Ledger {
        dir,
        server,
        client,
        location,
        process,
    }
}

impl Ledger {
    /// Stops the server, checks that its saved read side is what replaying
    /// the log gives, and runs `audit verify` on what it wrote.
    async fn stop_and_verify(self) -> Result<String, String> {
        self.server.stop().await.expect("clean stop");
        let mut check = vec!["projections", "rebuild", "--check"]
            .into_iter()
            .map(String::from)
            .collect::<Vec<_>>();
        check.extend(self.location.clone());
        cli(&check)?;
        let mut args = vec!["audit".to_owned(), "verify".to_owned()];
        args.extend(self.location);
        let verified = cli(&args)?;
        drop(self.dir);
        Ok(verified)
    }

    async fn audit(&self) -> AuditLogClient<tonic::transport::Channel> {
        AuditLogClient::connect(format!("http://{}", self.server.local_addr()))
            .await
            .expect("audit client connects")
    }
}

fn cli(args: &[String]) -> Result<String, String> {
    let out = Command::new(env!("CARGO_BIN_EXE_image-ledger"))
        .args(args)
        .output()
        .map_err(|e| e.to_string())?;
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("{text}{}", String::from_utf8_lossy(&out.stderr)))
    }
}

fn image_of(account: &str, image: &str) -> (String, String) {
    (account.to_owned(), image.to_owned())
}

fn leave(who: &str, image: &str, dry_run: bool) -> pb::LeaveImageShareRequest {
    let (account_id, image_id) = image_of(who, image);
    pb::LeaveImageShareRequest {
        account_id,
        image_id,
        client_token: String::new(),
        dry_run,
    }
}

fn protection(
    image: &str,
    enabled: bool,
    with_cooldown: bool,
) -> pb::ModifyImageDeletionProtectionRequest {
    pb::ModifyImageDeletionProtectionRequest {
        account_id: OWNER.into(),
        image_id: image.into(),
        enabled,
        with_cooldown,
        ..Default::default()
    }
}

fn delete(image: &str) -> pb::DeleteImageRequest {
    pb::DeleteImageRequest {
        account_id: OWNER.into(),
        image_id: image.into(),
        ..Default::default()
    }
}

/// The owner's view of `image` in its listing.
async fn listed(c: &mut Client, image: &str) -> pb::Image {
    c.describe_images(describe_request(OWNER, GZ))
        .await
        .expect("describe works")
        .into_inner()
        .images
        .into_iter()
        .find(|i| i.image_id == image)
        .expect("the owner lists its image")
}

async fn access_at(
    audit: &mut AuditLogClient<tonic::transport::Channel>,
    image: &str,
    position: u64,
) -> pb::GetImageAccessAsOfResponse {
    audit
        .get_image_access_as_of(pb::GetImageAccessAsOfRequest {
            image_id: image.into(),
            as_of: Some(pb::get_image_access_as_of_request::AsOf::AsOfPosition(
                position,
            )),
        })
        .await
        .expect("access as of works")
        .into_inner()
}

async fn a_recipient_leaves_and_an_owner_disables_protects_and_deprecates() -> TestResult {
    let mut ledger = start().await;
    let c = &mut ledger.client;
    let web = register_image(c, OWNER, GZ, "web").await;
    c.share_image(share_request(OWNER, &web, &[FRIEND, OTHER]))
        .await?;

    // Leaving: a dry run changes nothing; the real one frees the slot.
    assert_eq!(
        c.leave_image_share(leave(FRIEND, &web, true))
            .await?
            .into_inner()
            .position,
        0
    );
    assert_eq!(shares_of(c, OWNER, &web).await, vec![FRIEND, OTHER]);
    let left = c.leave_image_share(leave(FRIEND, &web, false)).await?;
    assert!(left.into_inner().position > 0);
    assert_eq!(shares_of(c, OWNER, &web).await, vec![OTHER]);
    assert!(visible(c, FRIEND, GZ).await.is_empty());
    assert_status(
        c.leave_image_share(leave(FRIEND, &web, false)).await,
        REFUSED,
        "FailedOperation.AccountNotShared",
    );
    assert_status(
        c.leave_image_share(leave(OWNER, &web, false)).await,
        REFUSED,
        "InvalidAccountIs.YourSelf",
    );

    // Disabling cancels the rest, once, whatever a retry of its token does.
    let disable = pb::DisableImageRequest {
        account_id: OWNER.into(),
        image_id: web.clone(),
        client_token: "disable-web-1".into(),
        dry_run: false,
    };
    let disabled_at = c
        .disable_image(disable.clone())
        .await?
        .into_inner()
        .position;
    assert_eq!(
        c.disable_image(disable).await?.into_inner().position,
        disabled_at
    );
    assert!(shares_of(c, OWNER, &web).await.is_empty());
    assert_eq!(
        authorize(c, OWNER, &web, GZ, pb::ImageUse::CreateInstance).await,
        (false, "UnsupportedOperation.ImageDisabled".to_owned())
    );
    assert_eq!(
        authorize(c, OTHER, &web, GZ, pb::ImageUse::CreateInstance).await,
        (
            false,
            "UnauthorizedOperation.ImageNotBelongToAccount".to_owned()
        )
    );
    assert_status(
        c.share_image(share_request(OWNER, &web, &[FRIEND])).await,
        REFUSED,
        "UnsupportedOperation.ImageDisabled",
    );
    assert!(listed(c, &web).await.disabled);
    let mut audit = ledger.audit().await;
    let then = access_at(&mut audit, &web, disabled_at).await;
    assert!(then.disabled && then.accounts.is_empty(), "{then:?}");
    assert_eq!(then.reason, "the image was disabled by its owner");
    let before = access_at(&mut audit, &web, disabled_at - 1).await;
    let could: Vec<_> = before
        .accounts
        .iter()
        .map(|a| a.account_id.as_str())
        .collect();
    assert_eq!(could, vec![OWNER, OTHER]);

    let c = &mut ledger.client;
    c.enable_image(pb::EnableImageRequest {
        account_id: OWNER.into(),
        image_id: web.clone(),
        ..Default::default()
    })
    .await?;
    assert_eq!(
        authorize(c, OWNER, &web, GZ, pb::ImageUse::CreateInstance).await,
        (true, String::new())
    );
    assert!(!listed(c, &web).await.disabled);

    // Deletion protection, then a cooldown.
    c.modify_image_deletion_protection(protection(&web, true, false))
        .await?;
    assert!(listed(c, &web).await.deletion_protection);
    assert_status(
        c.delete_image(delete(&web)).await,
        REFUSED,
        "FailedOperation.DeletionProtectionEnabled",
    );
    c.modify_image_deletion_protection(protection(&web, false, true))
        .await?;
    let image = listed(c, &web).await;
    assert!(!image.deletion_protection && image.delete_allowed_after.is_some());
    assert_status(
        c.delete_image(delete(&web)).await,
        REFUSED,
        "FailedOperation.DeletionProtectionCooldown",
    );
    assert_status(
        c.modify_image_deletion_protection(protection(&web, true, true))
            .await,
        Code::InvalidArgument,
        "InvalidParameterValue",
    );
    // On and off again without a cooldown ends the wait.
    c.modify_image_deletion_protection(protection(&web, true, false))
        .await?;
    c.modify_image_deletion_protection(protection(&web, false, false))
        .await?;

    // Deprecation: only unshared, then neither shared nor copied.
    c.share_image(share_request(OWNER, &web, &[FRIEND])).await?;
    let deprecate = pb::DeprecateImageRequest {
        account_id: OWNER.into(),
        image_id: web.clone(),
        ..Default::default()
    };
    assert_status(
        c.deprecate_image(deprecate.clone()).await,
        REFUSED,
        "InvalidImageId.InShared",
    );
    c.cancel_image_sharing(cancel_request(OWNER, &web, &[FRIEND]))
        .await?;
    c.deprecate_image(deprecate).await?;
    assert!(listed(c, &web).await.deprecated);
    assert_status(
        c.share_image(share_request(OWNER, &web, &[FRIEND])).await,
        REFUSED,
        "UnsupportedOperation.ImageDeprecated",
    );
    assert_status(
        c.copy_image(pb::CopyImageRequest {
            account_id: OWNER.into(),
            image_id: web.clone(),
            destination_regions: vec![SH.into()],
            ..Default::default()
        })
        .await,
        REFUSED,
        "UnsupportedOperation.ImageDeprecated",
    );
    assert_eq!(
        authorize(c, OWNER, &web, GZ, pb::ImageUse::CreateInstance).await,
        (true, String::new())
    );
    c.undeprecate_image(pb::UndeprecateImageRequest {
        account_id: OWNER.into(),
        image_id: web.clone(),
        ..Default::default()
    })
    .await?;
    c.delete_image(delete(&web)).await?;

    let verified = ledger.stop_and_verify().await?;
    assert!(verified.starts_with("OK: "), "{verified}");
    Ok(())
}

async fn trusted_owners_and_lineage() -> TestResult {
    let mut ledger = start().await;
    let c = &mut ledger.client;
    let web = register_image(c, OWNER, GZ, "web").await;
    c.share_image(share_request(OWNER, &web, &[FRIEND])).await?;
    let trust = |mode: pb::TrustMode, owners: &[&str]| pb::SetTrustedImageOwnersRequest {
        account_id: FRIEND.into(),
        mode: mode as i32,
        owner_account_ids: owners.iter().map(|o| o.to_string()).collect(),
        ..Default::default()
    };
    let enforced_at = c
        .set_trusted_image_owners(trust(pb::TrustMode::Enforce, &[OTHER]))
        .await?
        .into_inner()
        .position;
    let described = c
        .describe_trusted_image_owners(pb::DescribeTrustedImageOwnersRequest {
            account_id: FRIEND.into(),
            min_position: enforced_at,
        })
        .await?
        .into_inner();
    assert_eq!(
        (described.mode, described.owner_account_ids),
        (pb::TrustMode::Enforce as i32, vec![OTHER.to_owned()])
    );
    assert_eq!(
        authorize(c, FRIEND, &web, GZ, pb::ImageUse::CreateInstance).await,
        (
            false,
            "UnauthorizedOperation.UntrustedImageOwner".to_owned()
        )
    );
    let mut audit = ledger.audit().await;
    let head = audit
        .get_ledger_head(pb::GetLedgerHeadRequest {})
        .await?
        .into_inner()
        .position;
    let access = access_at(&mut audit, &web, head).await;
    assert_eq!(access.untrusted_recipients, vec![FRIEND.to_owned()]);
    assert_eq!(access.accounts.len(), 1, "{access:?}");

    let c = &mut ledger.client;
    c.set_trusted_image_owners(trust(pb::TrustMode::Audit, &[OTHER]))
        .await?;
    let reply = c
        .authorize_image_use(pb::AuthorizeImageUseRequest {
            account_id: FRIEND.into(),
            image_id: web.clone(),
            region: GZ.into(),
            r#use: pb::ImageUse::CreateInstance as i32,
            min_position: 0,
        })
        .await?
        .into_inner();
    assert_eq!(
        (reply.allowed, reply.audit_reason.as_str()),
        (true, "UnauthorizedOperation.UntrustedImageOwner")
    );

    // Lineage: the owner copies web to Shanghai and shares the copy.
    let copy = c
        .copy_image(pb::CopyImageRequest {
            account_id: OWNER.into(),
            image_id: web.clone(),
            destination_regions: vec![SH.into()],
            ..Default::default()
        })
        .await?
        .into_inner()
        .images
        .remove(0)
        .image_id;
    let lineage = |account: &str| pb::GetImageLineageRequest {
        account_id: account.into(),
        image_id: copy.clone(),
        min_position: 0,
    };
    let owner = c.get_image_lineage(lineage(OWNER)).await?.into_inner();
    let chain: Vec<_> = owner.links.iter().map(|l| l.image_id.as_str()).collect();
    assert_eq!((chain, owner.truncated), (vec![copy.as_str(), &web], false));
    assert_eq!(owner.links[1].region, GZ);
    c.update_image_state(pb::UpdateImageStateRequest {
        image_id: copy.clone(),
        state: pb::ImageState::Normal as i32,
        client_token: String::new(),
    })
    .await?;
    c.share_image(share_request(OWNER, &copy, &[FRIEND]))
        .await?;
    // The friend sees the source while that is shared with it too...
    let friend = c.get_image_lineage(lineage(FRIEND)).await?.into_inner();
    assert_eq!((friend.links.len(), friend.truncated), (2, false));
    // ...and only the copy once it is not.
    c.cancel_image_sharing(cancel_request(OWNER, &web, &[FRIEND]))
        .await?;
    let friend = c.get_image_lineage(lineage(FRIEND)).await?.into_inner();
    assert_eq!((friend.links.len(), friend.truncated), (1, true));
    assert_status(
        c.get_image_lineage(lineage(OTHER)).await,
        Code::PermissionDenied,
        "UnauthorizedOperation.ImageNotBelongToAccount",
    );

    let verified = ledger.stop_and_verify().await?;
    assert!(verified.starts_with("OK: "), "{verified}");
    Ok(())
}

async fn a_share_ends_at_its_end_and_the_ledger_records_it() -> TestResult {
    let mut ledger = start().await;
    let c = &mut ledger.client;
    let web = register_image(c, OWNER, GZ, "web").await;
    let end = time::OffsetDateTime::now_utc() + time::Duration::seconds(2);
    let mut request = share_request(OWNER, &web, &[FRIEND, OTHER]);
    request.expires_at = Some(image_ledger::grpc::timestamp(end));
    let shared_at = c.share_image(request).await?.into_inner().position;
    // The other share no longer ends.
    c.modify_image_share_expiry(pb::ModifyImageShareExpiryRequest {
        account_id: OWNER.into(),
        image_id: web.clone(),
        account_ids: vec![OTHER.into()],
        expires_at: None,
        ..Default::default()
    })
    .await?;
    let listed = c
        .describe_image_share_permission(pb::DescribeImageSharePermissionRequest {
            account_id: OWNER.into(),
            image_id: web.clone(),
            min_position: 0,
        })
        .await?
        .into_inner();
    let ends: Vec<_> = listed
        .shares
        .iter()
        .map(|s| (s.account_id.as_str(), s.expires_at.is_some()))
        .collect();
    assert_eq!(ends, vec![(FRIEND, true), (OTHER, false)]);
    assert_eq!(visible(c, FRIEND, GZ).await, vec![web.clone()]);
    assert_eq!(
        authorize(c, FRIEND, &web, GZ, pb::ImageUse::CreateInstance).await,
        (true, String::new())
    );
    let past = time::OffsetDateTime::now_utc() + time::Duration::seconds(1);
    let mut request = share_request(OWNER, &web, &[FRIEND]);
    request.expires_at = Some(image_ledger::grpc::timestamp(
        past - time::Duration::hours(1),
    ));
    assert_status(
        c.share_image(request).await,
        Code::InvalidArgument,
        "InvalidParameterValue",
    );

    // From the end on, the friend neither uses nor sees it.
    tokio::time::sleep(std::time::Duration::try_from(
        end - time::OffsetDateTime::now_utc(),
    )?)
    .await;
    assert_eq!(
        authorize(c, FRIEND, &web, GZ, pb::ImageUse::CreateInstance).await,
        (
            false,
            "UnauthorizedOperation.ImageNotBelongToAccount".to_owned()
        )
    );
    assert!(visible(c, FRIEND, GZ).await.is_empty());
    assert_eq!(
        authorize(c, OTHER, &web, GZ, pb::ImageUse::CreateInstance).await,
        (true, String::new())
    );
    // The ledger records the end within a few seconds, as the share-expiry
    // principal.
    let mut audit = ledger.audit().await;
    let mut recorded = None;
    for _ in 0..50 {
        let history = audit
            .get_image_history(pb::GetImageHistoryRequest {
                image_id: web.clone(),
            })
            .await?
            .into_inner()
            .events;
        if let Some(ended) = history.iter().find(|e| e.event_type == "ShareExpired") {
            recorded = Some(ended.clone());
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let recorded = recorded.expect("the end is recorded within five seconds");
    assert_eq!(
        (recorded.actor.as_str(), recorded.principal.as_str()),
        ("", "share-expiry")
    );
    let c = &mut ledger.client;
    assert_eq!(shares_of(c, OWNER, &web).await, vec![OTHER]);
    // Who could use it: the friend until the end, not from it.
    let at = |t: time::OffsetDateTime| pb::GetImageAccessAsOfRequest {
        image_id: web.clone(),
        as_of: Some(pb::get_image_access_as_of_request::AsOf::AsOfTime(
            image_ledger::grpc::timestamp(t),
        )),
    };
    let accounts = |reply: pb::GetImageAccessAsOfResponse| -> Vec<String> {
        reply.accounts.into_iter().map(|a| a.account_id).collect()
    };
    let before = audit
        .get_image_access_as_of(at(end - time::Duration::milliseconds(1)))
        .await?
        .into_inner();
    let until: Vec<bool> = before.accounts.iter().map(|a| a.until.is_some()).collect();
    assert_eq!(
        until,
        vec![false, true, false],
        "only the friend's share ends"
    );
    assert_eq!(accounts(before), vec![OWNER, FRIEND, OTHER]);
    let from = audit.get_image_access_as_of(at(end)).await?.into_inner();
    assert_eq!(accounts(from), vec![OWNER, OTHER]);
    assert!(access_at(&mut audit, &web, shared_at).await.accounts.len() == 3);

    let verified = ledger.stop_and_verify().await?;
    assert!(verified.starts_with("OK: "), "{verified}");
    Ok(())
}

async fn the_limits_are_recorded_checked_at_start_and_verified_without_flags() -> TestResult {
    let short = Policy {
        max_shares_per_image: 2,
        token_retention: std::time::Duration::from_secs(1),
        ..Policy::default()
    };
    let mut ledger = start_with(short.clone()).await;
    let c = &mut ledger.client;
    let web = register_image(c, OWNER, GZ, "web").await;
    c.share_image(share_request(OWNER, &web, &[FRIEND, OTHER]))
        .await?;
    // The log's limit, not the default 50, decides.
    register_roots(c, &[HELPER]).await;
    assert_status(
        c.share_image(share_request(OWNER, &web, &[HELPER])).await,
        Code::ResourceExhausted,
        "OverQuota",
    );
    // A token reused after the one-second retention is a new command: a
    // default day's retention would call it a reuse.
    let mut first = image_request(OWNER, GZ, "api");
    first.client_token = "api-1".into();
    c.register_image(first).await?;
    tokio::time::sleep(std::time::Duration::from_millis(1_100)).await;
    let mut again = image_request(OWNER, GZ, "api-2");
    again.client_token = "api-1".into();
    let again = c.register_image(again).await?.into_inner();
    assert!(again.position > 0, "a new command, recorded");

    // A restart with a per-image limit below a share count is refused,
    // saying what to do; one with a higher limit is recorded.
    ledger.server.stop().await?;
    let lower = Policy {
        max_shares_per_image: 1,
        ..short.clone()
    };
    let refused = ledger.process.clone().policy(lower).start().await;
    match refused {
        Err(err) => {
            let said = err.to_string();
            assert!(
                said.contains("shared with 2 accounts")
                    && said.contains("--max-shares-per-image at 2"),
                "{said}"
            );
        }
        Ok(_) => panic!("a start that would make history unlawful was accepted"),
    }
    let higher = Policy {
        max_shares_per_image: 3,
        ..short
    };
    let server = ledger.process.clone().policy(higher).start().await?;
    let mut c = connect(&server).await;
    c.share_image(share_request(OWNER, &web, &[HELPER])).await?;
    let mut audit = AuditLogClient::connect(format!("http://{}", server.local_addr())).await?;
    let mut records = audit
        .read_events(pb::ReadEventsRequest {
            from_position: 1,
            limit: 1_000,
        })
        .await?
        .into_inner();
    let mut limits = Vec::new();
    while let Some(record) = records.message().await? {
        if record.event_type == "LedgerLimitsSet" {
            limits.push((record.position, record.principal));
        }
    }
    // The ledger's creation, and the start with a higher limit (the
    // refused start recorded nothing).
    assert_eq!(limits.len(), 2, "{limits:?}");
    assert_eq!(limits[0], (1, "server-start".to_owned()));
    ledger.server = server;

    // `audit verify` with no flags: the limits come from the log.
    let verified = ledger.stop_and_verify().await?;
    assert!(verified.starts_with("OK: "), "{verified}");
    Ok(())
}

async fn a_share_that_ends_while_the_server_is_down_is_recorded_after_its_start() -> TestResult {
    let mut ledger = start().await;
    ledger.process = ledger.process.clone().with(|config| {
        config.server.metrics_addr = Some(std::net::SocketAddr::from(([127, 0, 0, 1], 0)));
    });
    let c = &mut ledger.client;
    let web = register_image(c, OWNER, GZ, "web").await;
    let end = time::OffsetDateTime::now_utc() + time::Duration::milliseconds(500);
    let mut request = share_request(OWNER, &web, &[FRIEND]);
    request.expires_at = Some(image_ledger::grpc::timestamp(end));
    c.share_image(request).await?;
    ledger.server.stop().await?;
    tokio::time::sleep(std::time::Duration::from_millis(800)).await;
    ledger.server = ledger.process.clone().start().await?;
    let mut c = connect(&ledger.server).await;
    let mut recorded = false;
    for _ in 0..50 {
        if shares_of(&mut c, OWNER, &web).await.is_empty() {
            recorded = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(recorded, "the restarted server records the end within 5 s");
    let metrics = ledger.server.metrics_addr().ok_or("metrics are served")?;
    let page = metrics_page(metrics).await.map_err(|e| e.to_string())?;
    assert!(page.contains("ledger_shares_ended_total 1\n"), "{page}");
    assert!(
        page.contains("ledger_shares_ended_unrecorded 0\n"),
        "{page}"
    );
    let verified = ledger.stop_and_verify().await?;
    assert!(verified.starts_with("OK: "), "{verified}");
    Ok(())
}

on_every_backend!(
    a_share_that_ends_while_the_server_is_down_is_recorded_after_its_start,
    the_limits_are_recorded_checked_at_start_and_verified_without_flags,
    a_recipient_leaves_and_an_owner_disables_protects_and_deprecates,
    trusted_owners_and_lineage,
    a_share_ends_at_its_end_and_the_ledger_records_it,
);
