//! Every action through the door: answers in Tencent's shape, the rules'
//! refusals, and a key confined to its account.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn describe_images_answers_in_tencents_shape_with_its_filters() -> TestResult {
    let door = door().await;
    let reply = door.cvm(&door.owner, "DescribeImages", json!({})).await;
    let response = answered(&reply);
    assert_eq!(response["TotalCount"], json!(2));
    let set = response["ImageSet"].as_array().ok_or("an ImageSet")?;
    let web = set
        .iter()
        .find(|image| image["ImageId"] == json!(door.image))
        .ok_or("the image is listed")?;
    for (field, value) in [
        ("ImageType", json!("PRIVATE_IMAGE")),
        ("ImageState", json!("NORMAL")),
        ("ImageName", json!("web")),
        ("ImageDescription", json!("web tier")),
        ("Platform", json!("CentOS")),
        ("OsName", json!("CentOS 7.9 64-bit")),
        ("ImageSize", json!(0)),
        ("Architecture", json!("")),
        ("ImageCreator", json!(OWNER)),
        ("ImageSource", json!("CREATE_IMAGE")),
        ("SyncPercent", Value::Null),
        ("IsSupportCloudinit", json!(true)),
        ("SnapshotSet", json!([])),
        ("Tags", json!([])),
        ("LicenseType", json!("TencentCloud")),
        ("ImageFamily", json!("")),
        ("ImageDeprecated", json!(false)),
    ] {
        assert_eq!(web[field], value, "{field} of {web}");
    }
    assert!(is_tencent_time(&web["CreatedTime"]), "{web}");

    // Filters AND, values OR; paging; ImageIds.
    let filtered =
        |filters: Value| door.cvm(&door.owner, "DescribeImages", json!({"Filters": filters}));
    let reply = filtered(json!([{"Name": "image-name", "Values": ["ap", "zz"]}])).await;
    assert_eq!(image_names(&reply), ["api"]);
    let reply = filtered(json!([
        {"Name": "image-name", "Values": ["w"]},
        {"Name": "platform", "Values": ["Cent"]},
        {"Name": "image-type", "Values": ["PRIVATE_IMAGE"]}
    ]))
    .await;
    assert_eq!(image_names(&reply), ["web"]);
    let reply = filtered(json!([{"Name": "image-type", "Values": ["SHARED_IMAGE"]}])).await;
    assert_eq!(answered(&reply)["TotalCount"], json!(0));
    let reply = filtered(json!([{"Name": "image-type", "Values": ["PUBLIC_IMAGE"]}])).await;
    assert_eq!(answered(&reply)["TotalCount"], json!(0));
    let reply = filtered(json!([{"Name": "tag:team", "Values": ["web"]}])).await;
    assert_eq!(answered(&reply)["TotalCount"], json!(0));
    let reply = filtered(json!([{"Name": "image-id", "Values": [door.other_image]}])).await;
    assert_eq!(image_names(&reply), ["api"]);
    let reply = door
        .cvm(
            &door.owner,
            "DescribeImages",
            json!({"Offset": 1, "Limit": 1}),
        )
        .await;
    assert_eq!(answered(&reply)["TotalCount"], json!(2));
    assert_eq!(image_names(&reply).len(), 1);
    let reply = door
        .cvm(
            &door.owner,
            "DescribeImages",
            json!({"ImageIds": [door.image]}),
        )
        .await;
    assert_eq!(image_names(&reply), ["web"]);

    for (body, code) in [
        (
            json!({"ImageIds": [door.image], "Filters": [{"Name": "image-id", "Values": [door.image]}]}),
            "InvalidParameter.InvalidParameterCoexistImageIdsFilters",
        ),
        (
            json!({"Filters": [{"Name": "zone", "Values": ["a"]}]}),
            "InvalidFilter",
        ),
        (
            json!({"Filters": [{"Name": "image-type", "Values": ["MINE"]}]}),
            "InvalidFilter",
        ),
        (
            json!({"Filters": [{"Name": "image-name", "Values": ["a", "b", "c", "d", "e", "f"]}]}),
            "InvalidFilterValue.LimitExceeded",
        ),
        (json!({"Limit": 101}), "InvalidParameterValue.Range"),
        (json!({"Limit": 0}), "InvalidParameterValue.Range"),
        (
            json!({"ImageIds": ["img-NOPE"]}),
            "InvalidImageId.Malformed",
        ),
        (
            json!({"Filters": [{"Name": "image-id", "Value": ["x"]}]}),
            "UnknownParameter",
        ),
    ] {
        refused(
            &door.cvm(&door.owner, "DescribeImages", body.clone()).await,
            code,
        );
    }
    door.server.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sharing_through_the_door_follows_every_rule() -> TestResult {
    let mut door = door().await;
    let spares: Vec<String> = (0..50).map(|n| format!("2000000000{n:02}")).collect();
    let spare_refs: Vec<&str> = spares.iter().map(String::as_str).collect();
    register_roots(&mut door.grpc, &spare_refs).await;

    // The friend's page, read (and kept by the page cache) before the share.
    let before = door.cvm(&door.friend, "DescribeImages", json!({})).await;
    assert_eq!(answered(&before)["TotalCount"], json!(0));
    answered(
        &door
            .share(&door.owner, &door.image, &[FRIEND], "SHARE")
            .await,
    );
    assert_eq!(
        shares_of(&mut door.grpc, OWNER, &door.image).await,
        [FRIEND]
    );
    let after = door.cvm(&door.friend, "DescribeImages", json!({})).await;
    assert_eq!(answered(&after)["TotalCount"], json!(1), "a stale page");
    assert_eq!(
        after.response()["ImageSet"][0]["ImageId"],
        json!(door.image)
    );
    let reply = door
        .cvm(
            &door.owner,
            "DescribeImageSharePermission",
            json!({"ImageId": door.image}),
        )
        .await;
    let set = answered(&reply)["SharePermissionSet"].clone();
    assert_eq!(set.as_array().map(Vec::len), Some(1), "{set}");
    assert_eq!(set[0]["AccountId"], json!(FRIEND));
    assert!(is_tencent_time(&set[0]["CreatedTime"]), "{set}");
    let reply = door
        .cvm(
            &door.friend,
            "DescribeImages",
            json!({"Filters": [{"Name": "image-type", "Values": ["SHARED_IMAGE"]}]}),
        )
        .await;
    let listed = &answered(&reply)["ImageSet"];
    assert_eq!(listed.as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(listed[0]["ImageId"], json!(door.image));
    assert_eq!(listed[0]["ImageType"], json!("SHARED_IMAGE"));

    // A recipient uses the image and nothing more; the owner cannot delete it while shared.
    let image = door.image.clone();
    for (reply, code) in [
        (
            door.cvm(&door.friend, "DeleteImages", json!({"ImageIds": [image]}))
                .await,
            "InvalidParameterValue.InvalidImageIdIsShared",
        ),
        (
            door.share(&door.friend, &image, &[OTHER], "SHARE").await,
            "UnauthorizedOperation.ImageNotBelongToAccount",
        ),
        (
            door.cvm(
                &door.friend,
                "ModifyImageAttribute",
                json!({"ImageId": image, "ImageName": "mine"}),
            )
            .await,
            "UnsupportedOperation.SharedImageModifyUnsupported",
        ),
        (
            door.cvm(&door.owner, "DeleteImages", json!({"ImageIds": [image]}))
                .await,
            "InvalidImageId.InShared",
        ),
        (
            door.share(&door.owner, &image, &[OWNER], "SHARE").await,
            "InvalidAccountIs.YourSelf",
        ),
        (
            door.share(&door.owner, &image, &[FRIEND], "SHARE").await,
            "FailedOperation.AccountAlreadyExists",
        ),
        (
            door.share(&door.owner, &image, &[OTHER], "LEND").await,
            "InvalidParameterValue",
        ),
        (
            door.share(&door.owner, &image, &["12ab"], "SHARE").await,
            "InvalidAccountId.Malformed",
        ),
        (
            door.call(
                &door.owner,
                Call::cvm(
                    "ModifyImageSharePermission",
                    SH,
                    &json!({"ImageId": image, "AccountIds": [OTHER], "Permission": "SHARE"}),
                ),
            )
            .await,
            "InvalidImageId.NotFound",
        ),
    ] {
        refused(&reply, code);
    }
    assert_eq!(
        shares_of(&mut door.grpc, OWNER, &door.image).await,
        [FRIEND]
    );

    // 49 more make 50; the 51st is over the limit.
    answered(
        &door
            .share(&door.owner, &door.image, &spare_refs[..49], "SHARE")
            .await,
    );
    refused(
        &door
            .share(&door.owner, &door.image, &spare_refs[49..], "SHARE")
            .await,
        "OverQuota",
    );
    assert_eq!(
        shares_of(&mut door.grpc, OWNER, &door.image).await.len(),
        50
    );
    answered(
        &door
            .share(&door.owner, &door.image, &spare_refs[..49], "CANCEL")
            .await,
    );
    answered(
        &door
            .share(&door.owner, &door.image, &[FRIEND], "CANCEL")
            .await,
    );
    refused(
        &door
            .share(&door.owner, &door.image, &[FRIEND], "CANCEL")
            .await,
        "FailedOperation.AccountNotShared",
    );

    // Deleting: a dry run changes nothing; then every image or none.
    let both = json!({"ImageIds": [door.image, door.other_image]});
    answered(
        &door
            .share(&door.owner, &door.other_image, &[FRIEND], "SHARE")
            .await,
    );
    refused(
        &door.cvm(&door.owner, "DeleteImages", both.clone()).await,
        "InvalidImageId.InShared",
    );
    assert_eq!(common::visible(&mut door.grpc, OWNER, GZ).await.len(), 2);
    answered(
        &door
            .share(&door.owner, &door.other_image, &[FRIEND], "CANCEL")
            .await,
    );
    refused(
        &door
            .cvm(
                &door.owner,
                "DeleteImages",
                json!({"ImageIds": [door.image], "DryRun": true}),
            )
            .await,
        "DryRunOperation",
    );
    assert_eq!(common::visible(&mut door.grpc, OWNER, GZ).await.len(), 2);
    let position = door.server_head().await?;
    answered(&door.cvm(&door.owner, "DeleteImages", both).await);
    assert!(common::visible(&mut door.grpc, OWNER, GZ).await.is_empty());
    // One request, one command: both deletions recorded together.
    assert_eq!(door.server_head().await?, position + 2);
    door.server.stop().await?;
    // And the history the door wrote re-decides lawfully.
    let store = image_ledger::store::SledStore::open(door.dir.path(), 8 * 1024 * 1024)?;
    let report = image_ledger::audit::verify(
        &store,
        &image_ledger::domain::Policy::default(),
        &image_ledger::audit::VerifyOptions::default(),
    )?;
    assert_eq!(report.head_position, position + 2);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn copies_attributes_quota_and_lighthouse() -> TestResult {
    let mut door = door().await;
    let reply = door
        .cvm(
            &door.owner,
            "SyncImages",
            json!({"ImageIds": [door.image], "DestinationRegions": [SH], "ImageName": "web-sh", "ImageSetRequired": true}),
        )
        .await;
    let set = answered(&reply)["ImageSet"].clone();
    assert_eq!(set.as_array().map(Vec::len), Some(1), "{set}");
    assert_eq!(set[0]["Region"], json!(SH));
    let copy = set[0]["ImageId"].as_str().ok_or("a copy id")?.to_owned();
    assert_eq!(common::visible(&mut door.grpc, OWNER, SH).await, [copy]);
    // Without ImageSetRequired there is no ImageSet.
    let reply = door
        .cvm(
            &door.owner,
            "SyncImages",
            json!({"ImageIds": [door.other_image], "DestinationRegions": [SH]}),
        )
        .await;
    assert!(answered(&reply).get("ImageSet").is_none(), "{}", reply.body);
    for (body, code) in [
        (
            json!({"ImageIds": [door.image], "DestinationRegions": [SH], "ImageName": "web-sh-2", "DryRun": true}),
            "DryRunOperation",
        ),
        (
            json!({"ImageIds": [door.image], "DestinationRegions": [GZ]}),
            "InvalidParameterValue.InvalidRegion",
        ),
        (
            json!({"ImageIds": [door.image], "DestinationRegions": [SH], "Encrypt": true}),
            "UnsupportedOperation.EncryptedImagesNotSupported",
        ),
        (json!({"ImageIds": [door.image]}), "MissingParameter"),
    ] {
        refused(&door.cvm(&door.owner, "SyncImages", body).await, code);
    }
    assert_eq!(common::visible(&mut door.grpc, OWNER, SH).await.len(), 2);

    let page = door.cvm(&door.owner, "DescribeImages", json!({})).await;
    assert_eq!(image_names(&page), ["api", "web"]);
    answered(
        &door
            .cvm(
                &door.owner,
                "ModifyImageAttribute",
                json!({"ImageId": door.image, "ImageName": "web-2", "ImageDescription": "second"}),
            )
            .await,
    );
    // The page the cache kept before the rename is not served after it.
    let page = door.cvm(&door.owner, "DescribeImages", json!({})).await;
    assert_eq!(image_names(&page), ["api", "web-2"]);
    let reply = door
        .cvm(
            &door.owner,
            "DescribeImages",
            json!({"ImageIds": [door.image]}),
        )
        .await;
    assert_eq!(answered(&reply)["ImageSet"][0]["ImageName"], json!("web-2"));
    assert_eq!(
        reply.response()["ImageSet"][0]["ImageDescription"],
        json!("second")
    );
    // Deprecation, alone or with a rename, is one decision that
    // DescribeImages shows; families are refused.
    let deprecated = |on: bool| json!({"ImageId": door.image, "ImageDeprecated": on});
    answered(
        &door
            .cvm(&door.owner, "ModifyImageAttribute", deprecated(true))
            .await,
    );
    let shown_deprecated = || async {
        let shown = door
            .cvm(
                &door.owner,
                "DescribeImages",
                json!({"ImageIds": [door.image]}),
            )
            .await;
        answered(&shown)["ImageSet"][0]["ImageDeprecated"].clone()
    };
    assert_eq!(shown_deprecated().await, json!(true));
    refused(
        &door
            .cvm(
                &door.owner,
                "ModifyImageAttribute",
                json!({"ImageId": door.image, "ImageDeprecated": false, "ImageName": "api"}),
            )
            .await,
        "InvalidImageName.Duplicate",
    );
    assert_eq!(shown_deprecated().await, json!(true));
    answered(
        &door
            .cvm(&door.owner, "ModifyImageAttribute", deprecated(false))
            .await,
    );
    refused(
        &door
            .cvm(
                &door.owner,
                "ModifyImageAttribute",
                json!({"ImageId": door.image, "ImageFamily": "web"}),
            )
            .await,
        "UnsupportedOperation",
    );
    refused(
        &door
            .cvm(
                &door.owner,
                "ModifyImageAttribute",
                json!({"ImageId": door.image, "ImageName": "ab\u{202e}cd"}),
            )
            .await,
        "InvalidParameterValue",
    );
    refused(
        &door
            .cvm(
                &door.owner,
                "ModifyImageAttribute",
                json!({"ImageId": door.image, "ImageName": "api"}),
            )
            .await,
        "InvalidImageName.Duplicate",
    );

    let reply = door.cvm(&door.owner, "DescribeImageQuota", json!({})).await;
    assert_eq!(answered(&reply)["ImageNumQuota"], json!(500));

    let lighthouse = |permission: &str| {
        Call::lighthouse(
            "ModifyImageSharePermission",
            GZ,
            &json!({"ImageId": door.image, "Permission": permission}),
        )
    };
    let reply = door.call(&door.owner, lighthouse("SHARE")).await;
    let blueprint = format!("lhbp-{}", &door.image[4..]);
    assert_eq!(answered(&reply)["BlueprintId"], json!(blueprint));
    refused(
        &door.call(&door.owner, lighthouse("SHARE")).await,
        "UnsupportedOperation.ImageAlreadyShared",
    );
    let reply = door.call(&door.owner, lighthouse("CANCEL")).await;
    assert_eq!(answered(&reply)["BlueprintId"], Value::Null);
    refused(
        &door.call(&door.friend, lighthouse("SHARE")).await,
        "UnauthorizedOperation.ImageNotBelongToAccount",
    );
    door.server.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_acts_for_its_account_only_whatever_the_body_says() -> TestResult {
    let mut door = door().await;
    // No field names the acting account: trying is an unknown parameter.
    for field in ["AccountId", "OwnerUin", "Uin"] {
        let mut body = json!({"ImageId": door.image, "AccountIds": [OTHER], "Permission": "SHARE"});
        body[field] = json!(OWNER);
        refused(
            &door
                .cvm(&door.friend, "ModifyImageSharePermission", body)
                .await,
            "UnknownParameter",
        );
    }
    // The friend's key cannot touch the owner's images, nor see them.
    let image = door.image.clone();
    for (action, body) in [
        (
            "ModifyImageSharePermission",
            json!({"ImageId": image, "AccountIds": [OTHER], "Permission": "SHARE"}),
        ),
        ("DescribeImageSharePermission", json!({"ImageId": image})),
        ("DeleteImages", json!({"ImageIds": [image]})),
        (
            "ModifyImageAttribute",
            json!({"ImageId": image, "ImageName": "x"}),
        ),
    ] {
        refused(
            &door.cvm(&door.friend, action, body).await,
            "UnauthorizedOperation.ImageNotBelongToAccount",
        );
    }
    let reply = door
        .cvm(&door.friend, "DescribeImages", json!({"ImageIds": [image]}))
        .await;
    assert_eq!(answered(&reply)["TotalCount"], json!(0));
    assert!(shares_of(&mut door.grpc, OWNER, &image).await.is_empty());
    door.server.stop().await?;
    Ok(())
}
