//! The API end to end over real gRPC: every rule and error code as a client sees it.

#[macro_use]
mod common;

use common::*;
use image_ledger::domain::Policy;
use image_ledger::grpc::pb;
use tonic::Code;

async fn with_image() -> (TestServer, String) {
    let server = TestServer::start().await;
    let mut client = server.client();
    register_roots(&mut client, &[OWNER, FRIEND, OTHER]).await;
    register(&mut client, HELPER, pb::AccountKind::Collaborator).await;
    let image = register_image(&mut client, OWNER, GZ, "web").await;
    (server, image)
}

async fn a_share_walkthrough() -> TestResult {
    let (server, image) = with_image().await;
    let mut c = server.client();

    assert_eq!(visible(&mut c, FRIEND, GZ).await, Vec::<String>::new());
    c.share_image(share_request(OWNER, &image, &[FRIEND, OTHER]))
        .await?;
    assert_eq!(shares_of(&mut c, OWNER, &image).await, vec![FRIEND, OTHER]);

    // The recipient sees it as a shared image, in its region only.
    let listed = c
        .describe_images(describe_request(FRIEND, GZ))
        .await?
        .into_inner();
    assert_eq!(listed.total_count, 1);
    let seen = &listed.images[0];
    assert_eq!(seen.image_id, image);
    assert_eq!(seen.owner_account_id, OWNER);
    assert_eq!(seen.image_type, pb::ImageType::SharedImage as i32);
    assert_eq!(seen.state, pb::ImageState::Normal as i32);
    assert!(seen.created_time.is_some());
    assert_eq!(visible(&mut c, FRIEND, SH).await, Vec::<String>::new());
    let own = c
        .describe_images(describe_request(OWNER, GZ))
        .await?
        .into_inner();
    assert_eq!(own.images[0].image_type, pb::ImageType::PrivateImage as i32);

    // Shared images use nobody's quota.
    assert_eq!(quota_used(&mut c, OWNER, GZ).await, 1);
    assert_eq!(quota_used(&mut c, FRIEND, GZ).await, 0);

    assert_eq!(
        authorize(&mut c, FRIEND, &image, GZ, pb::ImageUse::CreateInstance).await,
        (true, String::new())
    );

    // The owner cannot delete while shared; after cancelling every share it can.
    assert_status(
        c.delete_image(pb::DeleteImageRequest {
            account_id: OWNER.into(),
            image_id: image.clone(),
            ..Default::default()
        })
        .await,
        Code::FailedPrecondition,
        "InvalidImageId.InShared",
    );
    c.cancel_image_sharing(cancel_request(OWNER, &image, &[FRIEND, OTHER]))
        .await?;
    assert_eq!(visible(&mut c, FRIEND, GZ).await, Vec::<String>::new());
    assert_eq!(
        authorize(&mut c, FRIEND, &image, GZ, pb::ImageUse::CreateInstance).await,
        (
            false,
            "UnauthorizedOperation.ImageNotBelongToAccount".to_string()
        )
    );
    c.delete_image(pb::DeleteImageRequest {
        account_id: OWNER.into(),
        image_id: image.clone(),
        ..Default::default()
    })
    .await?;
    assert_eq!(quota_used(&mut c, OWNER, GZ).await, 0);
    assert_eq!(visible(&mut c, OWNER, GZ).await, Vec::<String>::new());
    assert_status(
        c.share_image(share_request(OWNER, &image, &[FRIEND])).await,
        Code::NotFound,
        "InvalidImageId.NotFound",
    );
    server.stop().await;
    Ok(())
}

async fn sharing_errors_carry_their_codes() -> TestResult {
    let (server, image) = with_image().await;
    let mut c = server.client();
    c.share_image(share_request(OWNER, &image, &[FRIEND]))
        .await?;

    let cases: Vec<(pb::ShareImageRequest, Code, &str)> = vec![
        (
            share_request(FRIEND, &image, &[OTHER]),
            Code::PermissionDenied,
            "UnauthorizedOperation.ImageNotBelongToAccount",
        ),
        (
            share_request(OWNER, &image, &[OWNER]),
            Code::FailedPrecondition,
            "InvalidAccountIs.YourSelf",
        ),
        (
            share_request(OWNER, &image, &[HELPER]),
            Code::FailedPrecondition,
            "FailedOperation.NotMasterAccount",
        ),
        (
            share_request(OWNER, &image, &[OTHER, FRIEND]),
            Code::FailedPrecondition,
            "FailedOperation.AccountAlreadyExists",
        ),
        (
            share_request(OWNER, &image, &["4242"]),
            Code::NotFound,
            "InvalidAccountId.NotFound",
        ),
        (
            share_request(OWNER, "img-zzzzzzzz", &[OTHER]),
            Code::NotFound,
            "InvalidImageId.NotFound",
        ),
        (
            share_request(OWNER, "img-ZZ", &[OTHER]),
            Code::InvalidArgument,
            "InvalidImageId.Malformed",
        ),
        (
            share_request(OWNER, &image, &["12ab"]),
            Code::InvalidArgument,
            "InvalidAccountId.Malformed",
        ),
        (
            share_request(OWNER, &image, &[]),
            Code::InvalidArgument,
            "InvalidParameterValue",
        ),
        (
            share_request(OWNER, &image, &[OTHER, OTHER]),
            Code::InvalidArgument,
            "InvalidParameterValue",
        ),
    ];
    for (request, code, reason) in cases {
        assert_status(c.share_image(request).await, code, reason);
    }
    // None of the failures changed anything.
    assert_eq!(shares_of(&mut c, OWNER, &image).await, vec![FRIEND]);
    assert_status(
        c.cancel_image_sharing(cancel_request(OWNER, &image, &[FRIEND, OTHER]))
            .await,
        Code::FailedPrecondition,
        "FailedOperation.AccountNotShared",
    );
    assert_eq!(shares_of(&mut c, OWNER, &image).await, vec![FRIEND]);
    assert_status(
        c.describe_image_share_permission(pb::DescribeImageSharePermissionRequest {
            account_id: FRIEND.into(),
            image_id: image.clone(),
            min_position: 0,
        })
        .await,
        Code::PermissionDenied,
        "UnauthorizedOperation.ImageNotBelongToAccount",
    );
    server.stop().await;
    Ok(())
}

async fn per_call_and_per_image_limits() -> TestResult {
    let policy = Policy {
        max_shares_per_image: 3,
        max_accounts_per_call: 2,
        ..Policy::default()
    };
    let server = TestServer::start_with(policy).await;
    let mut c = server.client();
    let accounts = [
        "200000000001",
        "200000000002",
        "200000000003",
        "200000000004",
    ];
    register_roots(&mut c, &[OWNER]).await;
    register_roots(&mut c, &accounts).await;
    let image = register_image(&mut c, OWNER, GZ, "web").await;
    assert_status(
        c.share_image(share_request(OWNER, &image, &accounts[..3]))
            .await,
        Code::InvalidArgument,
        "InvalidParameterValue.LimitExceeded",
    );
    c.share_image(share_request(OWNER, &image, &accounts[..2]))
        .await?;
    assert_status(
        c.share_image(share_request(OWNER, &image, &accounts[2..]))
            .await,
        Code::ResourceExhausted,
        "OverQuota",
    );
    c.share_image(share_request(OWNER, &image, &accounts[2..3]))
        .await?;
    assert_eq!(shares_of(&mut c, OWNER, &image).await.len(), 3);
    server.stop().await;
    Ok(())
}

async fn images_that_cannot_be_shared() -> TestResult {
    let server = TestServer::start().await;
    let mut c = server.client();
    register_roots(&mut c, &[OWNER, FRIEND]).await;
    let mut byol = image_request(OWNER, GZ, "byol");
    byol.license_type = pb::LicenseType::Byol as i32;
    let mut encrypted = image_request(OWNER, GZ, "encrypted");
    encrypted.encrypted = true;
    let mut whole = image_request(OWNER, GZ, "whole");
    whole.whole_instance = true;
    let mut creating = image_request(OWNER, GZ, "creating");
    creating.state = pb::ImageState::Creating as i32;
    for (request, code, reason) in [
        (
            byol,
            Code::FailedPrecondition,
            "FailedOperation.BYOLImageShareFailed",
        ),
        (
            encrypted,
            Code::FailedPrecondition,
            "UnsupportedOperation.EncryptedImagesNotSupported",
        ),
        (
            whole,
            Code::FailedPrecondition,
            "InvalidParameter.InstanceImageNotSupport",
        ),
        (
            creating,
            Code::FailedPrecondition,
            "InvalidParameterValue.InvalidImageState",
        ),
    ] {
        let image = c.register_image(request).await?.into_inner().image_id;
        assert_status(
            c.share_image(share_request(OWNER, &image, &[FRIEND])).await,
            code,
            reason,
        );
    }
    server.stop().await;
    Ok(())
}

async fn copies_start_syncing_and_share_nothing() -> TestResult {
    let (server, image) = with_image().await;
    let mut c = server.client();
    c.share_image(share_request(OWNER, &image, &[FRIEND]))
        .await?;
    let copies = c
        .copy_image(pb::CopyImageRequest {
            account_id: OWNER.into(),
            image_id: image.clone(),
            destination_regions: vec![SH.into()],
            image_name: Some("web-sh".into()),
            ..Default::default()
        })
        .await?
        .into_inner()
        .images;
    assert_eq!(copies.len(), 1);
    assert_eq!(copies[0].region, SH);
    let copy = copies[0].image_id.clone();
    assert_ne!(copy, image);

    let listed = c
        .describe_images(describe_request(OWNER, SH))
        .await?
        .into_inner();
    let seen = &listed.images[0];
    assert_eq!(seen.image_id, copy);
    assert_eq!(seen.image_name, "web-sh");
    assert_eq!(seen.state, pb::ImageState::Syncing as i32);
    assert_eq!(
        seen.copied_from,
        Some(pb::ImageRef {
            image_id: image.clone(),
            region: GZ.into()
        })
    );
    assert_eq!(shares_of(&mut c, OWNER, &copy).await, Vec::<String>::new());
    assert_eq!(quota_used(&mut c, OWNER, SH).await, 1);

    // A syncing copy cannot be shared or deleted until it is NORMAL.
    assert_status(
        c.share_image(share_request(OWNER, &copy, &[FRIEND])).await,
        Code::FailedPrecondition,
        "InvalidParameterValue.InvalidImageState",
    );
    assert_status(
        c.delete_image(pb::DeleteImageRequest {
            account_id: OWNER.into(),
            image_id: copy.clone(),
            ..Default::default()
        })
        .await,
        Code::FailedPrecondition,
        "InvalidImageId.IncorrectState",
    );
    c.update_image_state(pb::UpdateImageStateRequest {
        image_id: copy.clone(),
        state: pb::ImageState::Normal as i32,
        client_token: String::new(),
    })
    .await?;
    c.share_image(share_request(OWNER, &copy, &[FRIEND]))
        .await?;
    assert_eq!(visible(&mut c, FRIEND, SH).await, vec![copy.clone()]);

    // Copy region rules for the owner and for a recipient.
    let copy_req = |who: &str, to: &str| pb::CopyImageRequest {
        account_id: who.into(),
        image_id: image.clone(),
        destination_regions: vec![to.into()],
        ..Default::default()
    };
    assert_status(
        c.copy_image(copy_req(OWNER, GZ)).await,
        Code::FailedPrecondition,
        "InvalidParameterValue.InvalidRegion",
    );
    assert_status(
        c.copy_image(copy_req(FRIEND, SH)).await,
        Code::FailedPrecondition,
        "InvalidParameterValue.InvalidRegion",
    );
    assert_status(
        c.copy_image(copy_req(OTHER, GZ)).await,
        Code::PermissionDenied,
        "UnauthorizedOperation.ImageNotBelongToAccount",
    );
    assert_status(
        c.copy_image(copy_req(OWNER, "xx-nowhere")).await,
        Code::InvalidArgument,
        "InvalidRegion.NotFound",
    );
    // The recipient's own copy is a private image of its own, which it may then share.
    let mine = c
        .copy_image(copy_req(FRIEND, GZ))
        .await?
        .into_inner()
        .images;
    let mine = mine[0].image_id.clone();
    let listed = c
        .describe_images(describe_request(FRIEND, GZ))
        .await?
        .into_inner();
    let own = listed
        .images
        .iter()
        .find(|i| i.image_id == mine)
        .ok_or("the recipient's copy is listed")?;
    assert_eq!(own.owner_account_id, FRIEND);
    assert_eq!(own.image_type, pb::ImageType::PrivateImage as i32);
    assert_eq!(quota_used(&mut c, FRIEND, GZ).await, 1);
    server.stop().await;
    Ok(())
}

async fn recipients_use_but_never_change_delete_or_export() -> TestResult {
    let (server, image) = with_image().await;
    let mut c = server.client();
    c.share_image(share_request(OWNER, &image, &[FRIEND]))
        .await?;
    assert_status(
        c.modify_image_attribute(pb::ModifyImageAttributeRequest {
            account_id: FRIEND.into(),
            image_id: image.clone(),
            image_name: Some("mine".into()),
            ..Default::default()
        })
        .await,
        Code::FailedPrecondition,
        "UnsupportedOperation.SharedImageModifyUnsupported",
    );
    assert_status(
        c.delete_image(pb::DeleteImageRequest {
            account_id: FRIEND.into(),
            image_id: image.clone(),
            ..Default::default()
        })
        .await,
        Code::FailedPrecondition,
        "InvalidParameterValue.InvalidImageIdIsShared",
    );
    assert_eq!(
        authorize(&mut c, FRIEND, &image, GZ, pb::ImageUse::ReinstallInstance).await,
        (true, String::new())
    );
    assert_eq!(
        authorize(&mut c, FRIEND, &image, GZ, pb::ImageUse::Export).await,
        (
            false,
            "UnsupportedOperation.SharedImageExportUnsupported".to_string()
        )
    );
    assert_eq!(
        authorize(&mut c, FRIEND, &image, SH, pb::ImageUse::CreateInstance).await,
        (false, "InvalidParameterValue.InvalidRegion".to_string())
    );
    assert_eq!(
        authorize(&mut c, OWNER, &image, GZ, pb::ImageUse::Export).await,
        (true, String::new())
    );
    server.stop().await;
    Ok(())
}

/// (image name, image type) of each image an unfiltered DescribeImages lists.
async fn names_listed(c: &mut Client, account: &str) -> Vec<(String, i32)> {
    let listed = c
        .describe_images(describe_request(account, GZ))
        .await
        .expect("describe works")
        .into_inner();
    assert_eq!(listed.total_count as usize, listed.images.len());
    listed
        .images
        .into_iter()
        .map(|i| (i.image_name, i.image_type))
        .collect()
}

async fn a_listing_asked_again_shows_every_change() -> TestResult {
    // Unfiltered pages are served from the page cache while unchanged; each
    // step reads both listings before and after the change.
    let (server, image) = with_image().await;
    let mut c = server.client();
    let own = pb::ImageType::PrivateImage as i32;
    let theirs = pb::ImageType::SharedImage as i32;
    let web = |kind| vec![("web".to_string(), kind)];
    assert_eq!(names_listed(&mut c, OWNER).await, web(own));
    assert_eq!(names_listed(&mut c, FRIEND).await, vec![]);

    c.share_image(share_request(OWNER, &image, &[FRIEND]))
        .await?;
    assert_eq!(names_listed(&mut c, FRIEND).await, web(theirs));
    assert_eq!(names_listed(&mut c, OWNER).await, web(own));

    c.modify_image_attribute(pb::ModifyImageAttributeRequest {
        account_id: OWNER.into(),
        image_id: image.clone(),
        image_name: Some("web-v2".into()),
        ..Default::default()
    })
    .await?;
    let v2 = |kind| vec![("web-v2".to_string(), kind)];
    assert_eq!(names_listed(&mut c, OWNER).await, v2(own));
    assert_eq!(names_listed(&mut c, FRIEND).await, v2(theirs));

    register_image(&mut c, FRIEND, GZ, "mine").await;
    assert_eq!(
        names_listed(&mut c, FRIEND).await,
        vec![("mine".to_string(), own), ("web-v2".to_string(), theirs)]
    );

    c.cancel_image_sharing(cancel_request(OWNER, &image, &[FRIEND]))
        .await?;
    assert_eq!(
        names_listed(&mut c, FRIEND).await,
        vec![("mine".to_string(), own)]
    );
    c.delete_image(pb::DeleteImageRequest {
        account_id: OWNER.into(),
        image_id: image.clone(),
        ..Default::default()
    })
    .await?;
    assert_eq!(names_listed(&mut c, OWNER).await, vec![]);
    server.stop().await;
    Ok(())
}

async fn owner_renames_within_the_rules() -> TestResult {
    let (server, image) = with_image().await;
    let mut c = server.client();
    register_image(&mut c, OWNER, GZ, "db").await;
    let modify =
        |name: Option<&str>, description: Option<String>| pb::ModifyImageAttributeRequest {
            account_id: OWNER.into(),
            image_id: image.clone(),
            image_name: name.map(str::to_owned),
            image_description: description,
            client_token: String::new(),
        };
    assert_status(
        c.modify_image_attribute(modify(Some("db"), None)).await,
        Code::AlreadyExists,
        "InvalidImageName.Duplicate",
    );
    assert_status(
        c.modify_image_attribute(modify(Some(&"n".repeat(61)), None))
            .await,
        Code::InvalidArgument,
        "InvalidParameterValue.TooLarge",
    );
    assert_status(
        c.modify_image_attribute(modify(None, Some("d".repeat(257))))
            .await,
        Code::InvalidArgument,
        "InvalidParameterValue.TooLarge",
    );
    assert_status(
        c.modify_image_attribute(modify(None, None)).await,
        Code::InvalidArgument,
        "InvalidParameterValue",
    );
    c.modify_image_attribute(modify(Some("web-v2"), Some("second cut".into())))
        .await?;
    let listed = c
        .describe_images(pb::DescribeImagesRequest {
            image_name: "v2".into(),
            ..describe_request(OWNER, GZ)
        })
        .await?
        .into_inner();
    assert_eq!(listed.total_count, 1);
    assert_eq!(listed.images[0].image_name, "web-v2");
    assert_eq!(listed.images[0].image_description, "second cut");
    assert_status(
        c.register_image(image_request(OWNER, GZ, "web-v2")).await,
        Code::AlreadyExists,
        "InvalidImageName.Duplicate",
    );
    server.stop().await;
    Ok(())
}

async fn lighthouse_sharing() -> TestResult {
    let (server, image) = with_image().await;
    let mut c = server.client();
    let lighthouse = |who: &str, image: &str, permission: pb::LighthousePermission| {
        pb::ModifyLighthouseSharePermissionRequest {
            account_id: who.into(),
            image_id: image.into(),
            permission: permission as i32,
            client_token: String::new(),
        }
    };
    assert_status(
        c.modify_lighthouse_share_permission(lighthouse(
            OWNER,
            &image,
            pb::LighthousePermission::Cancel,
        ))
        .await,
        Code::FailedPrecondition,
        "FailedOperation.AccountNotShared",
    );
    c.modify_lighthouse_share_permission(lighthouse(
        OWNER,
        &image,
        pb::LighthousePermission::Share,
    ))
    .await?;
    assert_status(
        c.modify_lighthouse_share_permission(lighthouse(
            OWNER,
            &image,
            pb::LighthousePermission::Share,
        ))
        .await,
        Code::FailedPrecondition,
        "UnsupportedOperation.ImageAlreadyShared",
    );
    let permission = c
        .describe_image_share_permission(pb::DescribeImageSharePermissionRequest {
            account_id: OWNER.into(),
            image_id: image.clone(),
            min_position: 0,
        })
        .await?
        .into_inner();
    assert!(permission.lighthouse_shared);
    assert_status(
        c.delete_image(pb::DeleteImageRequest {
            account_id: OWNER.into(),
            image_id: image.clone(),
            ..Default::default()
        })
        .await,
        Code::FailedPrecondition,
        "InvalidImageId.InShared",
    );
    assert_status(
        c.modify_lighthouse_share_permission(lighthouse(
            FRIEND,
            &image,
            pb::LighthousePermission::Cancel,
        ))
        .await,
        Code::PermissionDenied,
        "UnauthorizedOperation.ImageNotBelongToAccount",
    );
    let mut imported = image_request(OWNER, GZ, "imported");
    imported.image_source = pb::ImageSource::ExternalImport as i32;
    let imported = c.register_image(imported).await?.into_inner().image_id;
    assert_status(
        c.modify_lighthouse_share_permission(lighthouse(
            OWNER,
            &imported,
            pb::LighthousePermission::Share,
        ))
        .await,
        Code::FailedPrecondition,
        "UnsupportedOperation.ImageUnableToShare",
    );
    server.stop().await;
    Ok(())
}

async fn quota_limits_registering_and_copying() -> TestResult {
    let policy = Policy {
        image_quota: 1,
        ..Policy::default()
    };
    let server = TestServer::start_with(policy).await;
    let mut c = server.client();
    register_roots(&mut c, &[OWNER]).await;
    let image = register_image(&mut c, OWNER, GZ, "web").await;
    register_image(&mut c, OWNER, SH, "web").await;
    assert_status(
        c.register_image(image_request(OWNER, GZ, "more")).await,
        Code::ResourceExhausted,
        "ImageQuotaLimitExceeded",
    );
    assert_status(
        c.copy_image(pb::CopyImageRequest {
            account_id: OWNER.into(),
            image_id: image,
            destination_regions: vec![SH.into()],
            image_name: Some("copy".into()),
            ..Default::default()
        })
        .await,
        Code::ResourceExhausted,
        "ImageQuotaLimitExceeded",
    );
    let quota = c
        .describe_image_quota(pb::DescribeImageQuotaRequest {
            account_id: OWNER.into(),
            region: GZ.into(),
            min_position: 0,
        })
        .await?
        .into_inner();
    assert_eq!((quota.quota, quota.used), (1, 1));
    server.stop().await;
    Ok(())
}

async fn describe_images_pages_and_filters() -> TestResult {
    let server = TestServer::start().await;
    let mut c = server.client();
    register_roots(&mut c, &[OWNER, FRIEND]).await;
    let mut own = Vec::new();
    for i in 0..25 {
        own.push(register_image(&mut c, OWNER, GZ, &format!("img-{i:02}")).await);
    }
    let theirs = register_image(&mut c, FRIEND, GZ, "from-friend").await;
    c.share_image(share_request(FRIEND, &theirs, &[OWNER]))
        .await?;

    let first = c
        .describe_images(describe_request(OWNER, GZ))
        .await?
        .into_inner();
    assert_eq!(first.total_count, 26);
    assert_eq!(first.images.len(), 20);
    let rest = c
        .describe_images(pb::DescribeImagesRequest {
            offset: 20,
            limit: 100,
            ..describe_request(OWNER, GZ)
        })
        .await?
        .into_inner();
    assert_eq!(rest.images.len(), 6);
    let mut all: Vec<String> = first
        .images
        .iter()
        .chain(&rest.images)
        .map(|i| i.image_id.clone())
        .collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), 26);

    let shared_only = c
        .describe_images(pb::DescribeImagesRequest {
            image_type: pb::ImageType::SharedImage as i32,
            ..describe_request(OWNER, GZ)
        })
        .await?
        .into_inner();
    assert_eq!(shared_only.total_count, 1);
    assert_eq!(shared_only.images[0].image_id, theirs);
    let private_only = c
        .describe_images(pb::DescribeImagesRequest {
            image_type: pb::ImageType::PrivateImage as i32,
            ..describe_request(OWNER, GZ)
        })
        .await?
        .into_inner();
    assert_eq!(private_only.total_count, 25);
    let by_id = c
        .describe_images(pb::DescribeImagesRequest {
            image_ids: vec![own[3].clone(), theirs.clone()],
            ..describe_request(OWNER, GZ)
        })
        .await?
        .into_inner();
    assert_eq!(by_id.total_count, 2);
    assert_status(
        c.describe_images(pb::DescribeImagesRequest {
            limit: 101,
            ..describe_request(OWNER, GZ)
        })
        .await,
        Code::InvalidArgument,
        "InvalidParameterValue",
    );
    assert_status(
        c.describe_images(describe_request(OWNER, "nowhere-1"))
            .await,
        Code::InvalidArgument,
        "InvalidRegion.NotFound",
    );
    assert_status(
        c.describe_images(describe_request("555", GZ)).await,
        Code::NotFound,
        "InvalidAccountId.NotFound",
    );
    server.stop().await;
    Ok(())
}

async fn client_tokens_make_retries_safe() -> TestResult {
    let server = TestServer::start().await;
    let mut c = server.client();
    register_roots(&mut c, &[OWNER, FRIEND, OTHER]).await;
    let mut request = image_request(OWNER, GZ, "web");
    request.client_token = "register-web-1".into();
    let first = c
        .register_image(request.clone())
        .await?
        .into_inner()
        .image_id;
    let again = c
        .register_image(request.clone())
        .await?
        .into_inner()
        .image_id;
    assert_eq!(first, again, "a retry gets the first reply");
    assert_eq!(
        quota_used(&mut c, OWNER, GZ).await,
        1,
        "and appends nothing"
    );
    request.image_name = "other".into();
    assert_status(
        c.register_image(request).await,
        Code::AlreadyExists,
        "IdempotentParameterMismatch",
    );

    let mut share = share_request(OWNER, &first, &[FRIEND]);
    share.client_token = "share-1".into();
    c.share_image(share.clone()).await?;
    c.share_image(share.clone()).await?;
    share.account_ids = vec![OTHER.into()];
    assert_status(
        c.share_image(share).await,
        Code::AlreadyExists,
        "IdempotentParameterMismatch",
    );
    assert_eq!(shares_of(&mut c, OWNER, &first).await, vec![FRIEND]);
    // Tokens belong to an account: another account may use the same one.
    let mut theirs = image_request(FRIEND, GZ, "web");
    theirs.client_token = "register-web-1".into();
    let friends = c.register_image(theirs).await?.into_inner().image_id;
    assert_ne!(friends, first);
    server.stop().await;
    Ok(())
}

async fn dry_runs_check_everything_and_change_nothing() -> TestResult {
    let (server, image) = with_image().await;
    let mut c = server.client();
    let mut share = share_request(OWNER, &image, &[FRIEND]);
    share.dry_run = true;
    c.share_image(share.clone()).await?;
    assert_eq!(shares_of(&mut c, OWNER, &image).await, Vec::<String>::new());
    share.account_ids = vec![HELPER.into()];
    assert_status(
        c.share_image(share).await,
        Code::FailedPrecondition,
        "FailedOperation.NotMasterAccount",
    );
    let copies = c
        .copy_image(pb::CopyImageRequest {
            account_id: OWNER.into(),
            image_id: image.clone(),
            destination_regions: vec![SH.into()],
            dry_run: true,
            ..Default::default()
        })
        .await?
        .into_inner();
    assert!(copies.images.is_empty());
    assert_eq!(quota_used(&mut c, OWNER, SH).await, 0);
    c.delete_image(pb::DeleteImageRequest {
        account_id: OWNER.into(),
        image_id: image.clone(),
        client_token: String::new(),
        dry_run: true,
    })
    .await?;
    assert_eq!(visible(&mut c, OWNER, GZ).await, vec![image]);
    server.stop().await;
    Ok(())
}

async fn health_and_reflection_are_served() -> TestResult {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let server = TestServer::start().await;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", server.server.local_addr()))?
            .connect()
            .await?;
    let mut health = HealthClient::new(channel.clone());
    let overall = health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(overall.status, ServingStatus::Serving as i32);
    let ledger = health
        .check(HealthCheckRequest {
            service: "imageledger.v1.ImageLedger".into(),
        })
        .await?
        .into_inner();
    assert_eq!(ledger.status, ServingStatus::Serving as i32);

    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    let mut reflection = ServerReflectionClient::new(channel.clone());
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies = reflection
        .server_reflection_info(tokio_stream::iter(vec![request]))
        .await?
        .into_inner();
    let reply = replies.message().await?.ok_or("a reflection reply")?;
    let Some(MessageResponse::ListServicesResponse(list)) = reply.message_response else {
        return Err("expected a list of services".into());
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"imageledger.v1.ImageLedger".to_string()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_string()),
        "{names:?}"
    );
    for version in ["v1", "v1alpha"] {
        let service = format!("grpc.reflection.{version}.ServerReflection");
        assert!(names.contains(&service), "{names:?}");
    }

    // The older protocol, the only one grpcurl 1.8.6 and grpcio-reflection
    // speak: the same services, and a file by symbol.
    use tonic_reflection::pb::v1alpha::server_reflection_client::ServerReflectionClient as AlphaClient;
    use tonic_reflection::pb::v1alpha::server_reflection_request::MessageRequest as AlphaRequest;
    use tonic_reflection::pb::v1alpha::server_reflection_response::MessageResponse as AlphaResponse;
    use tonic_reflection::pb::v1alpha::ServerReflectionRequest as AlphaReflectionRequest;
    let mut alpha = AlphaClient::new(channel.clone());
    let requests = vec![
        AlphaReflectionRequest {
            host: String::new(),
            message_request: Some(AlphaRequest::ListServices(String::new())),
        },
        AlphaReflectionRequest {
            host: String::new(),
            message_request: Some(AlphaRequest::FileContainingSymbol(
                "imageledger.v1.ImageLedger".into(),
            )),
        },
    ];
    let mut replies = alpha
        .server_reflection_info(tokio_stream::iter(requests))
        .await?
        .into_inner();
    let listed = replies.message().await?.ok_or("a v1alpha list")?;
    let Some(AlphaResponse::ListServicesResponse(list)) = listed.message_response else {
        return Err("expected a v1alpha list of services".into());
    };
    let alpha_names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert_eq!(alpha_names, names, "both versions list the same services");
    let file = replies.message().await?.ok_or("a v1alpha file")?;
    let Some(AlphaResponse::FileDescriptorResponse(files)) = file.message_response else {
        return Err("expected the file that declares ImageLedger".into());
    };
    assert!(!files.file_descriptor_proto.is_empty());
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_stopping_server_says_not_serving_while_it_drains_then_releases_its_directory(
) -> TestResult {
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;

    let dir = tempfile::tempdir()?;
    let mut server = InProcess::new(dir.path())
        .with(|config| config.server.shutdown_drain_ms = 1500)
        .start()
        .await?;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", server.local_addr()))?
            .connect()
            .await?;
    let mut health = HealthClient::new(channel.clone());
    let mut client = pb::image_ledger_client::ImageLedgerClient::new(channel);
    let status_of = |service: &str| HealthCheckRequest {
        service: service.into(),
    };
    assert_eq!(
        health.check(status_of("")).await?.into_inner().status,
        ServingStatus::Serving as i32
    );

    let stop = server.take_stop().ok_or("a stop handle")?;
    stop.send(true)?;
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    for service in ["", "imageledger.v1.ImageLedger", "imageledger.v1.AuditLog"] {
        assert_eq!(
            health.check(status_of(service)).await?.into_inner().status,
            ServingStatus::NotServing as i32,
            "{service:?} while draining"
        );
    }
    // Still taking calls while load balancers move away.
    client
        .register_account(pb::RegisterAccountRequest {
            account_id: OWNER.into(),
            kind: pb::AccountKind::Root as i32,
            client_token: String::new(),
        })
        .await?;
    drop((health, client));
    server.wait().await?;
    // Stopped means released: the directory opens at once, and holds the call.
    let store = image_ledger::store::SledStore::open(dir.path(), 1 << 20)?;
    use image_ledger::store::EventLog;
    // The ledger's limits, then the registration.
    assert_eq!(store.head()?.position, 2);
    Ok(())
}

async fn replies_carry_positions_and_queries_wait_for_them() -> TestResult {
    use std::time::{Duration, Instant};
    let server = TestServer::start().await;
    let mut c = server.client();
    let account = |id: &str| pb::RegisterAccountRequest {
        account_id: id.into(),
        kind: pb::AccountKind::Root as i32,
        client_token: String::new(),
    };
    assert_eq!(
        c.register_account(account(OWNER))
            .await?
            .into_inner()
            .position,
        // Position 1 is the ledger's limits, recorded when it was created.
        2
    );
    assert_eq!(
        c.register_account(account(OWNER))
            .await?
            .into_inner()
            .position,
        0,
        "a command that changes nothing records nothing"
    );
    assert_eq!(
        c.register_account(account(FRIEND))
            .await?
            .into_inner()
            .position,
        3
    );
    let mut image = image_request(OWNER, GZ, "web");
    image.client_token = "image-once".into();
    let first = c.register_image(image.clone()).await?.into_inner();
    assert_eq!(first.position, 4);
    assert_eq!(
        c.register_image(image).await?.into_inner(),
        first,
        "a retry gets the first reply, position included"
    );
    let mut dry = share_request(OWNER, &first.image_id, &[FRIEND]);
    dry.dry_run = true;
    assert_eq!(c.share_image(dry).await?.into_inner().position, 0);
    let shared = c
        .share_image(share_request(OWNER, &first.image_id, &[FRIEND]))
        .await?
        .into_inner();
    assert_eq!(shared.position, 5);
    let copied = c
        .copy_image(pb::CopyImageRequest {
            account_id: OWNER.into(),
            image_id: first.image_id.clone(),
            destination_regions: vec![SH.into(), "ap-beijing".into()],
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(copied.position, 7, "the copy's last event");

    // A position already applied is answered at once.
    let authorize = |min_position: u64| pb::AuthorizeImageUseRequest {
        account_id: FRIEND.into(),
        image_id: first.image_id.clone(),
        region: GZ.into(),
        r#use: pb::ImageUse::CreateInstance as i32,
        min_position,
    };
    assert!(
        c.authorize_image_use(authorize(7))
            .await?
            .into_inner()
            .allowed
    );
    let quota = pb::DescribeImageQuotaRequest {
        account_id: OWNER.into(),
        region: SH.into(),
        min_position: 7,
    };
    assert_eq!(c.describe_image_quota(quota).await?.into_inner().used, 1);

    // One past every position written cannot have come from a reply: it
    // is refused at once, whatever the deadline, not waited for.
    for (wanted, deadline) in [(1_000, "99999999H"), (8, "5S")] {
        let mut future = tonic::Request::new(authorize(wanted));
        future
            .metadata_mut()
            .insert("grpc-timeout", deadline.parse()?);
        let started = Instant::now();
        assert_status(
            c.authorize_image_use(future).await,
            Code::OutOfRange,
            "InvalidParameterValue.PositionNotWritten",
        );
        assert!(started.elapsed() < Duration::from_secs(1), "{wanted}");
    }
    let share_permission = pb::DescribeImageSharePermissionRequest {
        account_id: OWNER.into(),
        image_id: first.image_id.clone(),
        min_position: 8,
    };
    // Once written (the copy in Shanghai turning NORMAL), it is answered.
    let state = c
        .update_image_state(pb::UpdateImageStateRequest {
            image_id: copied.images[0].image_id.clone(),
            state: pb::ImageState::Normal as i32,
            client_token: String::new(),
        })
        .await?
        .into_inner();
    assert_eq!(state.position, 8);
    let answered = c
        .describe_image_share_permission(share_permission)
        .await?
        .into_inner();
    assert_eq!(answered.shares.len(), 1);
    Ok(())
}

on_every_backend!(
    replies_carry_positions_and_queries_wait_for_them,
    a_share_walkthrough,
    sharing_errors_carry_their_codes,
    per_call_and_per_image_limits,
    images_that_cannot_be_shared,
    copies_start_syncing_and_share_nothing,
    recipients_use_but_never_change_delete_or_export,
    a_listing_asked_again_shows_every_change,
    owner_renames_within_the_rules,
    lighthouse_sharing,
    quota_limits_registering_and_copying,
    describe_images_pages_and_filters,
    client_tokens_make_retries_safe,
    dry_runs_check_everything_and_change_nothing,
    health_and_reflection_are_served,
);

#[cfg_attr(
    not(postgres_installed),
    ignore = "needs PostgreSQL's server (apt-get install postgresql)"
)]
#[tokio::test]
async fn a_database_that_goes_away_refuses_writes_keeps_reads_and_is_rejoined() -> TestResult {
    use image_ledger_testkit::Cluster;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    use tonic_health::pb::HealthCheckRequest;
    let cluster = Cluster::start();
    let dir = tempfile::tempdir()?;
    let url = cluster.url();
    let server = InProcess::new(dir.path())
        .with(|config| config.store.database_url = Some(url))
        .start()
        .await?;
    let mut c = connect(&server).await;
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", server.local_addr()))?
            .connect()
            .await?;
    let mut health = HealthClient::new(channel);
    let mut status = async move || -> Result<ServingStatus, tonic::Status> {
        let reply = health
            .check(HealthCheckRequest {
                service: "imageledger.v1.ImageLedger".into(),
            })
            .await?;
        Ok(reply.into_inner().status())
    };
    register_roots(&mut c, &[OWNER, FRIEND]).await;
    let registered = c
        .register_image(image_request(OWNER, GZ, "web"))
        .await?
        .into_inner();
    let image = registered.image_id;
    let authorize_at = |min_position| pb::AuthorizeImageUseRequest {
        account_id: OWNER.into(),
        image_id: image.clone(),
        region: GZ.into(),
        r#use: pb::ImageUse::CreateInstance as i32,
        min_position,
    };
    assert_eq!(status().await?, ServingStatus::Serving);

    cluster.crash()?;
    // A write's outcome is unknown: UNAVAILABLE, no internals.
    let mut share = share_request(OWNER, &image, &[FRIEND]);
    share.client_token = "share-during-outage".into();
    let refused = c.share_image(share.clone()).await;
    assert_status(refused, Code::Unavailable, "InternalError");
    // A linearizable read cannot know it is current: refused the same way.
    assert_status(
        c.authorize_image_use(authorize_at(0)).await,
        Code::Unavailable,
        "InternalError",
    );
    // A read whose position is applied answers from memory meanwhile.
    let reply = c
        .authorize_image_use(authorize_at(registered.position))
        .await?
        .into_inner();
    assert!(reply.allowed, "{}", reply.reason);
    // Health says NOT_SERVING until the database answers again.
    let mut seen = Vec::new();
    for _ in 0..50 {
        seen.push(status().await?);
        if seen.last() == Some(&ServingStatus::NotServing) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(seen.last(), Some(&ServingStatus::NotServing), "{seen:?}");

    cluster.resume()?;
    // The retry with the same token applies once the database is back.
    let mut shared = None;
    for _ in 0..50 {
        match c.share_image(share.clone()).await {
            Ok(reply) => {
                shared = Some(reply.into_inner());
                break;
            }
            Err(status) => assert_eq!(status.code(), Code::Unavailable, "{status:?}"),
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let shared = shared.ok_or("writes never resumed")?;
    assert_eq!(shared.position, 5);
    assert_eq!(c.share_image(share).await?.into_inner(), shared);
    assert_eq!(shares_of(&mut c, OWNER, &image).await, vec![FRIEND]);
    let mut seen = Vec::new();
    for _ in 0..50 {
        seen.push(status().await?);
        if seen.last() == Some(&ServingStatus::Serving) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(seen.last(), Some(&ServingStatus::Serving), "{seen:?}");
    server.stop().await?;
    Ok(())
}
