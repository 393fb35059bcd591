//! Bad input gets the documented error code and changes nothing: never a
//! panic, never INTERNAL.

#[macro_use]
mod common;

use common::*;
use image_ledger::grpc::pb;
use tonic::Code;

const BAD: Code = Code::InvalidArgument;

async fn empty_requests_name_the_missing_field() -> TestResult {
    let server = TestServer::start().await;
    let mut c = server.client();
    assert_status(
        c.register_account(pb::RegisterAccountRequest::default())
            .await,
        BAD,
        "InvalidAccountId.Malformed",
    );
    assert_status(
        c.register_image(pb::RegisterImageRequest::default()).await,
        BAD,
        "InvalidParameterValue",
    );
    assert_status(
        c.update_image_state(pb::UpdateImageStateRequest::default())
            .await,
        BAD,
        "InvalidImageId.Malformed",
    );
    assert_status(
        c.share_image(pb::ShareImageRequest::default()).await,
        BAD,
        "InvalidAccountId.Malformed",
    );
    assert_status(
        c.cancel_image_sharing(pb::CancelImageSharingRequest::default())
            .await,
        BAD,
        "InvalidAccountId.Malformed",
    );
    assert_status(
        c.copy_image(pb::CopyImageRequest::default()).await,
        BAD,
        "InvalidAccountId.Malformed",
    );
    assert_status(
        c.delete_image(pb::DeleteImageRequest::default()).await,
        BAD,
        "InvalidAccountId.Malformed",
    );
    assert_status(
        c.modify_image_attribute(pb::ModifyImageAttributeRequest::default())
            .await,
        BAD,
        "InvalidAccountId.Malformed",
    );
    assert_status(
        c.modify_lighthouse_share_permission(pb::ModifyLighthouseSharePermissionRequest::default())
            .await,
        BAD,
        "InvalidParameterValue",
    );
    assert_status(
        c.authorize_image_use(pb::AuthorizeImageUseRequest::default())
            .await,
        BAD,
        "InvalidParameterValue",
    );
    assert_status(
        c.describe_images(pb::DescribeImagesRequest::default())
            .await,
        BAD,
        "InvalidAccountId.Malformed",
    );
    assert_status(
        c.describe_image_share_permission(pb::DescribeImageSharePermissionRequest::default())
            .await,
        BAD,
        "InvalidAccountId.Malformed",
    );
    assert_status(
        c.describe_image_quota(pb::DescribeImageQuotaRequest::default())
            .await,
        BAD,
        "InvalidAccountId.Malformed",
    );
    let malformed = "InvalidAccountId.Malformed";
    assert_status(
        c.modify_image_share_expiry(pb::ModifyImageShareExpiryRequest::default())
            .await,
        BAD,
        malformed,
    );
    assert_status(
        c.leave_image_share(pb::LeaveImageShareRequest::default())
            .await,
        BAD,
        malformed,
    );
    assert_status(
        c.disable_image(pb::DisableImageRequest::default()).await,
        BAD,
        malformed,
    );
    assert_status(
        c.enable_image(pb::EnableImageRequest::default()).await,
        BAD,
        malformed,
    );
    assert_status(
        c.modify_image_deletion_protection(pb::ModifyImageDeletionProtectionRequest::default())
            .await,
        BAD,
        malformed,
    );
    assert_status(
        c.deprecate_image(pb::DeprecateImageRequest::default())
            .await,
        BAD,
        malformed,
    );
    assert_status(
        c.undeprecate_image(pb::UndeprecateImageRequest::default())
            .await,
        BAD,
        malformed,
    );
    assert_status(
        c.set_trusted_image_owners(pb::SetTrustedImageOwnersRequest::default())
            .await,
        BAD,
        malformed,
    );
    assert_status(
        c.describe_trusted_image_owners(pb::DescribeTrustedImageOwnersRequest::default())
            .await,
        BAD,
        malformed,
    );
    assert_status(
        c.get_image_lineage(pb::GetImageLineageRequest::default())
            .await,
        BAD,
        malformed,
    );
    assert_status(
        c.set_trusted_image_owners(pb::SetTrustedImageOwnersRequest {
            account_id: OWNER.into(),
            mode: 9,
            ..Default::default()
        })
        .await,
        BAD,
        "InvalidParameterValue",
    );
    server.stop().await;
    Ok(())
}

async fn huge_odd_and_out_of_range_values_are_refused() -> TestResult {
    let server = TestServer::start().await;
    let mut c = server.client();
    register_roots(&mut c, &[OWNER, FRIEND]).await;
    let image = register_image(&mut c, OWNER, GZ, "web").await;

    let huge = "x".repeat(1 << 20);
    let cases: Vec<(pb::RegisterImageRequest, Code, &str)> = vec![
        (
            pb::RegisterImageRequest {
                image_name: huge.clone(),
                ..image_request(OWNER, GZ, "")
            },
            BAD,
            "InvalidParameterValue.TooLarge",
        ),
        (
            pb::RegisterImageRequest {
                image_description: huge.clone(),
                ..image_request(OWNER, GZ, "big-description")
            },
            BAD,
            "InvalidParameterValue.TooLarge",
        ),
        (
            image_request(OWNER, GZ, "tab\there"),
            BAD,
            "InvalidParameterValue",
        ),
        (
            image_request(OWNER, GZ, "   "),
            BAD,
            "InvalidParameterValue",
        ),
        (
            image_request("１２３", GZ, "web"),
            BAD,
            "InvalidAccountId.Malformed",
        ),
        (
            image_request(OWNER, "ap-广州", "web"),
            BAD,
            "InvalidRegion.NotFound",
        ),
        (
            image_request(OWNER, "", "web"),
            BAD,
            "InvalidParameterValue",
        ),
        (
            pb::RegisterImageRequest {
                image_source: 99,
                ..image_request(OWNER, GZ, "enum")
            },
            BAD,
            "InvalidParameterValue",
        ),
        (
            pb::RegisterImageRequest {
                license_type: -1,
                ..image_request(OWNER, GZ, "enum")
            },
            BAD,
            "InvalidParameterValue",
        ),
        (
            pb::RegisterImageRequest {
                state: 42,
                ..image_request(OWNER, GZ, "enum")
            },
            BAD,
            "InvalidParameterValue",
        ),
        (
            pb::RegisterImageRequest {
                platform: String::new(),
                ..image_request(OWNER, GZ, "no-platform")
            },
            BAD,
            "InvalidParameterValue",
        ),
        (
            pb::RegisterImageRequest {
                client_token: "t".repeat(65),
                ..image_request(OWNER, GZ, "token")
            },
            BAD,
            "InvalidParameterValue",
        ),
        (
            pb::RegisterImageRequest {
                client_token: "naïve".into(),
                ..image_request(OWNER, GZ, "token")
            },
            BAD,
            "InvalidParameterValue",
        ),
        (
            image_request("00000000000000000000000", GZ, "web"),
            BAD,
            "InvalidAccountId.Malformed",
        ),
    ];
    for (request, code, reason) in cases {
        assert_status(c.register_image(request).await, code, reason);
    }
    assert_eq!(visible(&mut c, OWNER, GZ).await, vec![image.clone()]);

    let mut share = share_request(OWNER, &image, &[FRIEND]);
    share.account_ids.push("  ".into());
    assert_status(
        c.share_image(share).await,
        BAD,
        "InvalidAccountId.Malformed",
    );
    let many: Vec<String> = (0..51).map(|i| format!("5000000{i:05}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_status(
        c.share_image(share_request(OWNER, &image, &many)).await,
        BAD,
        "InvalidParameterValue.LimitExceeded",
    );
    assert_status(
        c.share_image(share_request(OWNER, "IMG-AAAAAAAA", &[FRIEND]))
            .await,
        BAD,
        "InvalidImageId.Malformed",
    );
    assert_status(
        c.share_image(share_request(OWNER, &format!("{image} "), &[FRIEND]))
            .await,
        BAD,
        "InvalidImageId.Malformed",
    );
    assert_status(
        c.update_image_state(pb::UpdateImageStateRequest {
            image_id: image.clone(),
            state: pb::ImageState::Unspecified as i32,
            client_token: String::new(),
        })
        .await,
        BAD,
        "InvalidParameterValue",
    );
    assert_status(
        c.authorize_image_use(pb::AuthorizeImageUseRequest {
            account_id: OWNER.into(),
            image_id: image.clone(),
            region: "xx-none".into(),
            r#use: pb::ImageUse::CreateInstance as i32,
            min_position: 0,
        })
        .await,
        BAD,
        "InvalidRegion.NotFound",
    );
    assert_status(
        c.describe_images(pb::DescribeImagesRequest {
            image_type: 7,
            ..describe_request(OWNER, GZ)
        })
        .await,
        BAD,
        "InvalidParameterValue",
    );
    assert_status(
        c.register_account(pb::RegisterAccountRequest {
            account_id: OWNER.into(),
            kind: 0,
            client_token: String::new(),
        })
        .await,
        BAD,
        "InvalidParameterValue",
    );
    assert_eq!(shares_of(&mut c, OWNER, &image).await, Vec::<String>::new());
    server.stop().await;
    Ok(())
}

async fn unknown_images_and_accounts_are_not_found() -> TestResult {
    let server = TestServer::start().await;
    let mut c = server.client();
    register_roots(&mut c, &[OWNER]).await;
    assert_status(
        c.update_image_state(pb::UpdateImageStateRequest {
            image_id: "img-00000000".into(),
            state: pb::ImageState::Normal as i32,
            client_token: String::new(),
        })
        .await,
        Code::NotFound,
        "InvalidImageId.NotFound",
    );
    assert_status(
        c.register_image(image_request("999", GZ, "web")).await,
        Code::NotFound,
        "InvalidAccountId.NotFound",
    );
    assert_status(
        c.describe_image_quota(pb::DescribeImageQuotaRequest {
            account_id: OWNER.into(),
            region: "nope".into(),
            min_position: 0,
        })
        .await,
        BAD,
        "InvalidRegion.NotFound",
    );
    assert_eq!(
        authorize(
            &mut c,
            OWNER,
            "img-00000000",
            GZ,
            pb::ImageUse::CreateInstance
        )
        .await,
        (false, "InvalidImageId.NotFound".to_string())
    );
    server.stop().await;
    Ok(())
}

on_every_backend!(
    too_much_metadata_refuses_the_call_not_the_connection,
    messages_that_cannot_be_read_are_refused_with_a_reason,
    empty_requests_name_the_missing_field,
    huge_odd_and_out_of_range_values_are_refused,
    unknown_images_and_accounts_are_not_found,
);

#[tokio::test]
async fn names_that_look_the_same_are_the_same_and_invisible_ones_are_refused() -> TestResult {
    let server = TestServer::start().await;
    let mut c = server.client();
    register_roots(&mut c, &[OWNER]).await;
    // "café" with a precomposed é, then with e and a combining accent.
    let composed = register_image(&mut c, OWNER, GZ, "caf\u{e9}").await;
    assert_status(
        c.register_image(image_request(OWNER, GZ, "cafe\u{301}"))
            .await,
        Code::AlreadyExists,
        "InvalidImageName.Duplicate",
    );
    // The decomposed form is recorded composed: listing by it finds the image.
    let other = register_image(&mut c, OWNER, GZ, "cre\u{300}me").await;
    let listed = c
        .describe_images(pb::DescribeImagesRequest {
            account_id: OWNER.into(),
            region: GZ.into(),
            image_ids: vec![other.clone()],
            ..Default::default()
        })
        .await?
        .into_inner();
    assert_eq!(listed.images[0].image_name, "cr\u{e8}me");
    // Renaming to the other's name in another composition is a duplicate too.
    assert_status(
        c.modify_image_attribute(pb::ModifyImageAttributeRequest {
            account_id: OWNER.into(),
            image_id: other.clone(),
            image_name: Some("cafe\u{301}".into()),
            ..Default::default()
        })
        .await,
        Code::AlreadyExists,
        "InvalidImageName.Duplicate",
    );
    for invisible in [
        "\u{200b}",
        " \u{200b} ",
        "\u{3000}",
        "\u{2060}\u{feff}",
        "\u{2800}",
        "\u{115f}",
    ] {
        assert_status(
            c.register_image(image_request(OWNER, GZ, invisible)).await,
            Code::InvalidArgument,
            "InvalidParameterValue",
        );
        assert_status(
            c.modify_image_attribute(pb::ModifyImageAttributeRequest {
                account_id: OWNER.into(),
                image_id: composed.clone(),
                image_name: Some(invisible.into()),
                ..Default::default()
            })
            .await,
            Code::InvalidArgument,
            "InvalidParameterValue",
        );
    }
    // Format characters that change how a name reads without showing are
    // refused anywhere in it (here U+202E turns "ab…cd" into "abdc" on
    // screen); the joiners some scripts need are not.
    for spoofing in [
        "ab\u{202e}cd",
        "\u{200b}web\u{200b}",
        "web\u{2066}",
        "\u{feff}web",
    ] {
        assert_status(
            c.register_image(image_request(OWNER, GZ, spoofing)).await,
            Code::InvalidArgument,
            "InvalidParameterValue",
        );
        assert_status(
            c.copy_image(pb::CopyImageRequest {
                account_id: OWNER.into(),
                image_id: composed.clone(),
                destination_regions: vec![SH.into()],
                image_name: Some(spoofing.into()),
                ..Default::default()
            })
            .await,
            Code::InvalidArgument,
            "InvalidParameterValue",
        );
    }
    let persian = "\u{645}\u{6cc}\u{200c}\u{62e}\u{648}\u{627}\u{647}\u{645}";
    register_image(&mut c, OWNER, GZ, persian).await;
    server.stop().await;
    Ok(())
}

/// A message whose field 1 is a number: `account_id`, a string in every
/// request, cannot be read from it.
#[derive(Clone, PartialEq, prost::Message)]
struct NotARequest {
    #[prost(uint64, tag = "1")]
    account_id: u64,
}

async fn messages_that_cannot_be_read_are_refused_with_a_reason() -> TestResult {
    let server = TestServer::start().await;
    let mut c = server.client();
    register_roots(&mut c, &[OWNER]).await;
    // Over the 4 MiB the server reads: RESOURCE_EXHAUSTED, not tonic's bare OUT_OF_RANGE.
    let mut huge = image_request(OWNER, GZ, "web");
    huge.image_description = "x".repeat(5 << 20);
    assert_status(
        c.register_image(huge).await,
        Code::ResourceExhausted,
        "RequestSizeLimitExceeded",
    );
    // Not the method's protobuf: INVALID_ARGUMENT, not tonic's bare INTERNAL.
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", server.server.local_addr()))?
            .connect()
            .await?;
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await?;
    let codec = tonic_prost::ProstCodec::<NotARequest, ()>::default();
    let path = http::uri::PathAndQuery::from_static("/imageledger.v1.ImageLedger/ShareImage");
    let request = tonic::Request::new(NotARequest { account_id: 7 });
    assert_status(
        grpc.unary(request, path, codec).await,
        Code::InvalidArgument,
        "InvalidParameterValue.MalformedMessage",
    );
    // The connection still serves.
    assert_eq!(quota_used(&mut c, OWNER, GZ).await, 0);
    server.stop().await;
    Ok(())
}

async fn too_much_metadata_refuses_the_call_not_the_connection() -> TestResult {
    let server = TestServer::start().await;
    // One connection for everything below.
    let channel =
        tonic::transport::Endpoint::from_shared(format!("http://{}", server.server.local_addr()))?
            .connect()
            .await?;
    let mut c = pb::image_ledger_client::ImageLedgerClient::new(channel.clone());
    let mut audit = pb::audit_log_client::AuditLogClient::new(channel);
    register_roots(&mut c, &[OWNER]).await;
    // A call in flight on the connection: a subscription.
    let mut follow = audit
        .subscribe(pb::SubscribeRequest { from_position: 0 })
        .await?
        .into_inner();
    let mut padded = tonic::Request::new(pb::DescribeImageQuotaRequest {
        account_id: OWNER.into(),
        region: GZ.into(),
        min_position: 0,
    });
    padded
        .metadata_mut()
        .insert("x-padding", "x".repeat(100_000).parse()?);
    assert!(c.describe_image_quota(padded).await.is_err());
    // The connection was not closed: the subscription goes on and sees
    // the next record.
    register_roots(&mut c, &[FRIEND]).await;
    let mut seen = Vec::new();
    while seen.len() < 3 {
        let record = follow.message().await?.ok_or("the subscription ended")?;
        seen.push(record.event_type);
    }
    assert_eq!(
        seen,
        ["LedgerLimitsSet", "AccountRegistered", "AccountRegistered"]
    );
    server.stop().await;
    Ok(())
}
