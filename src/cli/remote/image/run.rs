//! What each `image` command that changes an image does: the request it
//! sends, and what it prints of the reply.

use image_ledger::grpc::pb;
use serde_json::json;

use super::super::{at_position, run, RemoteArgs};
use super::{
    CopyArgs, DeleteArgs, License, LighthouseArgs, ModifyArgs, Permission, RegisterArgs,
    SetStateArgs, ShareArgs, Source, UnshareArgs,
};

/// `image set-state`.
pub(super) fn set_state(args: SetStateArgs) -> anyhow::Result<()> {
    let request = pb::UpdateImageStateRequest {
        image_id: args.image.clone(),
        state: args.state.value(),
        client_token: args.token.value(),
    };
    let state = super::super::render::enum_name::<pb::ImageState>(args.state.value());
    positioned(
        &args.remote,
        |mut c| async move {
            c.update_image_state(request)
                .await
                .map(|r| r.into_inner().position)
        },
        format!("{} is {state}", args.image),
    )
}

/// `image share`.
pub(super) fn share(args: ShareArgs) -> anyhow::Result<()> {
    let a = &args.acting;
    let request = pb::ShareImageRequest {
        account_id: a.account.clone(),
        image_id: args.image.clone(),
        account_ids: args.to.clone(),
        client_token: a.token.value(),
        dry_run: args.dry_run,
        expires_at: args.expires_at.map(image_ledger::grpc::timestamp),
    };
    let done = changed(args.dry_run, "shared", "could be shared");
    positioned(
        &a.remote,
        |mut c| async move {
            c.share_image(request)
                .await
                .map(|r| r.into_inner().position)
        },
        format!("{} {done} with {}", args.image, args.to.join(", ")),
    )
}

/// `image unshare`.
pub(super) fn unshare(args: UnshareArgs) -> anyhow::Result<()> {
    let a = &args.acting;
    let request = pb::CancelImageSharingRequest {
        account_id: a.account.clone(),
        image_id: args.image.clone(),
        account_ids: args.from.clone(),
        client_token: a.token.value(),
        dry_run: args.dry_run,
    };
    let done = changed(args.dry_run, "is no longer shared", "could be unshared");
    positioned(
        &a.remote,
        |mut c| async move {
            c.cancel_image_sharing(request)
                .await
                .map(|r| r.into_inner().position)
        },
        format!("{} {done} with {}", args.image, args.from.join(", ")),
    )
}

/// `image delete`.
pub(super) fn delete(args: DeleteArgs) -> anyhow::Result<()> {
    let a = &args.acting;
    let request = pb::DeleteImageRequest {
        account_id: a.account.clone(),
        image_id: args.image.clone(),
        client_token: a.token.value(),
        dry_run: args.dry_run,
    };
    let done = changed(args.dry_run, "deleted", "could be deleted");
    positioned(
        &a.remote,
        |mut c| async move {
            c.delete_image(request)
                .await
                .map(|r| r.into_inner().position)
        },
        format!("{} {done}", args.image),
    )
}

/// `image modify`.
pub(super) fn modify(args: ModifyArgs) -> anyhow::Result<()> {
    let a = &args.acting;
    let request = pb::ModifyImageAttributeRequest {
        account_id: a.account.clone(),
        image_id: args.image.clone(),
        image_name: args.name.clone(),
        image_description: args.description.clone(),
        client_token: a.token.value(),
    };
    positioned(
        &a.remote,
        |mut c| async move {
            c.modify_image_attribute(request)
                .await
                .map(|r| r.into_inner().position)
        },
        format!("{} modified", args.image),
    )
}

/// `image lighthouse`.
pub(super) fn lighthouse(args: LighthouseArgs) -> anyhow::Result<()> {
    let a = &args.acting;
    let (permission, done) = match args.permission {
        Permission::Share => (pb::LighthousePermission::Share, "shared with Lighthouse"),
        Permission::Cancel => (
            pb::LighthousePermission::Cancel,
            "withdrawn from Lighthouse",
        ),
    };
    let request = pb::ModifyLighthouseSharePermissionRequest {
        account_id: a.account.clone(),
        image_id: args.image.clone(),
        permission: permission as i32,
        client_token: a.token.value(),
    };
    positioned(
        &a.remote,
        |mut c| async move {
            c.modify_lighthouse_share_permission(request)
                .await
                .map(|r| r.into_inner().position)
        },
        format!("{} {done}", args.image),
    )
}

/// Runs a command whose reply carries only its position, and prints
/// `done` with it (or the position alone under `--json`).
pub(super) fn positioned<F, Fut>(remote: &RemoteArgs, call: F, done: String) -> anyhow::Result<()>
where
    F: FnOnce(super::super::Client) -> Fut,
    Fut: std::future::Future<Output = Result<u64, tonic::Status>>,
{
    run(remote, async {
        let position = call(remote.connect().await?).await?;
        remote.print(json!({"position": position}), || {
            format!("{done} ({})", at_position(position))
        });
        Ok(())
    })
}

pub(super) fn register(args: RegisterArgs) -> anyhow::Result<()> {
    let a = &args.acting;
    run(&a.remote, async {
        let source = match args.source {
            Source::CreateImage => pb::ImageSource::CreateImage,
            Source::ExternalImport => pb::ImageSource::ExternalImport,
        };
        let license = match args.license {
            License::Tencentcloud => pb::LicenseType::Tencentcloud,
            License::Byol => pb::LicenseType::Byol,
        };
        let reply = a
            .remote
            .connect()
            .await?
            .register_image(pb::RegisterImageRequest {
                account_id: a.account.clone(),
                region: args.region.clone(),
                image_name: args.name.clone(),
                image_description: args.description.clone(),
                platform: args.platform.clone(),
                os_name: args.os_name.clone(),
                image_source: source as i32,
                license_type: license as i32,
                encrypted: args.encrypted,
                whole_instance: args.whole_instance,
                supports_cloudinit: args.cloud_init,
                state: args.state.value(),
                client_token: a.token.value(),
            })
            .await?
            .into_inner();
        a.remote.print(
            json!({"image_id": reply.image_id, "position": reply.position}),
            || format!("{} ({})", reply.image_id, at_position(reply.position)),
        );
        Ok(())
    })
}

pub(super) fn copy(args: CopyArgs) -> anyhow::Result<()> {
    let a = &args.acting;
    run(&a.remote, async {
        let reply = a
            .remote
            .connect()
            .await?
            .copy_image(pb::CopyImageRequest {
                account_id: a.account.clone(),
                image_id: args.image.clone(),
                destination_regions: args.regions.clone(),
                image_name: args.name.clone(),
                client_token: a.token.value(),
                dry_run: args.dry_run,
            })
            .await?
            .into_inner();
        let images: Vec<_> = reply
            .images
            .iter()
            .map(|i| json!({"image_id": i.image_id, "region": i.region}))
            .collect();
        a.remote.print(
            json!({"images": images, "position": reply.position}),
            || {
                let rows: Vec<Vec<String>> = reply
                    .images
                    .iter()
                    .map(|i| vec![i.image_id.clone(), i.region.clone()])
                    .collect();
                if args.dry_run {
                    format!(
                        "{} could be copied to {}",
                        args.image,
                        args.regions.join(", ")
                    )
                } else {
                    format!(
                        "{}\n{}",
                        super::super::render::table(&["IMAGE", "REGION"], &rows),
                        at_position(reply.position)
                    )
                }
            },
        );
        Ok(())
    })
}

/// What a command did, or would have done in a dry run.
pub(super) fn changed(dry_run: bool, done: &'static str, would: &'static str) -> &'static str {
    if dry_run {
        would
    } else {
        done
    }
}
