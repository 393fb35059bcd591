//! `image-ledger image authorize|list|shares`: the queries of
//! `ImageLedger` about images.

use clap::{Args, ValueEnum};
use image_ledger::grpc::pb;
use serde_json::json;

use super::render::{enum_name, table, time};
use super::{run, Failure, MinPositionArg, RemoteArgs};

/// The uses an account may ask for.
#[derive(Clone, Copy, ValueEnum)]
pub enum Use {
    /// Create an instance from the image.
    CreateInstance,
    /// Reinstall an instance with the image.
    ReinstallInstance,
    /// Export the image (owners only).
    Export,
}

/// `image authorize`
#[derive(Args)]
pub struct AuthorizeArgs {
    /// The image id.
    pub image: String,
    /// The account that wants to use it.
    #[arg(long)]
    pub account: String,
    /// The region the instance is in.
    #[arg(long)]
    pub region: String,
    /// What it wants to do.
    #[arg(long = "use", value_enum)]
    pub usage: Use,
    #[command(flatten)]
    pub min_position: MinPositionArg,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// Which images to list.
#[derive(Clone, Copy, ValueEnum)]
pub enum Type {
    /// The account's own images.
    Private,
    /// Images shared with the account.
    Shared,
}

/// `image list`
#[derive(Args)]
pub struct ListArgs {
    /// The account whose images to list.
    #[arg(long)]
    pub account: String,
    /// The region.
    #[arg(long)]
    pub region: String,
    /// Only private or only shared images (default: both).
    #[arg(long = "type", value_enum)]
    pub image_type: Option<Type>,
    /// Only these images (repeat, or separate with commas).
    #[arg(long = "id", value_delimiter = ',')]
    pub ids: Vec<String>,
    /// Only images whose name contains this.
    #[arg(long, default_value = "")]
    pub name: String,
    /// Skip this many matching images.
    #[arg(long, default_value_t = 0)]
    pub offset: u32,
    /// At most this many images (the server allows up to 100).
    #[arg(long, default_value_t = 20)]
    pub limit: u32,
    #[command(flatten)]
    pub min_position: MinPositionArg,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// `image shares`
#[derive(Args)]
pub struct SharesArgs {
    /// The image id.
    pub image: String,
    /// The owner.
    #[arg(long)]
    pub account: String,
    #[command(flatten)]
    pub min_position: MinPositionArg,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// `image authorize`: prints the answer; a denial is a refusal (exit 3).
pub fn authorize(args: AuthorizeArgs) -> anyhow::Result<()> {
    run(&args.remote, async {
        let usage = match args.usage {
            Use::CreateInstance => pb::ImageUse::CreateInstance,
            Use::ReinstallInstance => pb::ImageUse::ReinstallInstance,
            Use::Export => pb::ImageUse::Export,
        };
        let reply = args
            .remote
            .connect()
            .await?
            .authorize_image_use(pb::AuthorizeImageUseRequest {
                account_id: args.account.clone(),
                image_id: args.image.clone(),
                region: args.region.clone(),
                r#use: usage as i32,
                min_position: args.min_position.min_position,
            })
            .await?
            .into_inner();
        if args.remote.json {
            println!(
                "{}",
                json!({"allowed": reply.allowed, "reason": reply.reason,
                       "audit_reason": reply.audit_reason})
            );
        } else if reply.allowed && !reply.audit_reason.is_empty() {
            println!(
                "allowed (enforcing its trusted owners would deny: {})",
                reply.audit_reason
            );
        } else if reply.allowed {
            println!("allowed");
        } else {
            println!("denied: {}", reply.reason);
        }
        if reply.allowed {
            return Ok(());
        }
        Err(Failure::Denied {
            reason: reply.reason,
        })
    })
}

/// `image list`: a table of the page, then how many match in all.
pub fn list(args: ListArgs) -> anyhow::Result<()> {
    run(&args.remote, async {
        let image_type = match args.image_type {
            None => pb::ImageType::Unspecified,
            Some(Type::Private) => pb::ImageType::PrivateImage,
            Some(Type::Shared) => pb::ImageType::SharedImage,
        };
        let reply = args
            .remote
            .connect()
            .await?
            .describe_images(pb::DescribeImagesRequest {
                account_id: args.account.clone(),
                region: args.region.clone(),
                image_type: image_type as i32,
                image_ids: args.ids.clone(),
                image_name: args.name.clone(),
                offset: args.offset,
                limit: args.limit,
                min_position: args.min_position.min_position,
            })
            .await?
            .into_inner();
        let images: Vec<_> = reply.images.iter().map(image_json).collect();
        args.remote.print(
            json!({"images": images, "total_count": reply.total_count}),
            || {
                let rows: Vec<Vec<String>> = reply
                    .images
                    .iter()
                    .map(|i| {
                        vec![
                            i.image_id.clone(),
                            i.image_name.clone(),
                            enum_name::<pb::ImageType>(i.image_type),
                            enum_name::<pb::ImageState>(i.state),
                            i.owner_account_id.clone(),
                            i.os_name.clone(),
                            time(i.created_time.as_ref()),
                        ]
                    })
                    .collect();
                let header = ["IMAGE", "NAME", "TYPE", "STATE", "OWNER", "OS", "CREATED"];
                let count = format!(
                    "{} of {} images in {}",
                    reply.images.len(),
                    reply.total_count,
                    args.region
                );
                if rows.is_empty() {
                    count
                } else {
                    format!("{}\n{count}", table(&header, &rows))
                }
            },
        );
        Ok(())
    })
}

/// `image shares`: the accounts, oldest share first, and Lighthouse.
pub fn shares(args: SharesArgs) -> anyhow::Result<()> {
    run(&args.remote, async {
        let reply = args
            .remote
            .connect()
            .await?
            .describe_image_share_permission(pb::DescribeImageSharePermissionRequest {
                account_id: args.account.clone(),
                image_id: args.image.clone(),
                min_position: args.min_position.min_position,
            })
            .await?
            .into_inner();
        let shares: Vec<_> = reply
            .shares
            .iter()
            .map(|s| json!({"account_id": s.account_id, "created_time": time(s.created_time.as_ref())}))
            .collect();
        args.remote.print(
            json!({"shares": shares, "lighthouse_shared": reply.lighthouse_shared}),
            || {
                let rows: Vec<Vec<String>> = reply
                    .shares
                    .iter()
                    .map(|s| vec![s.account_id.clone(), time(s.created_time.as_ref())])
                    .collect();
                let lighthouse = if reply.lighthouse_shared {
                    "shared with Lighthouse"
                } else {
                    "not shared with Lighthouse"
                };
                if rows.is_empty() {
                    format!("{} is shared with no account; {lighthouse}", args.image)
                } else {
                    format!(
                        "{}\n{lighthouse}",
                        table(&["ACCOUNT", "SHARED SINCE"], &rows)
                    )
                }
            },
        );
        Ok(())
    })
}

/// An image as `--json` prints it: the proto's field names, enum names.
fn image_json(i: &pb::Image) -> serde_json::Value {
    json!({
        "image_id": i.image_id,
        "owner_account_id": i.owner_account_id,
        "region": i.region,
        "image_name": i.image_name,
        "image_description": i.image_description,
        "platform": i.platform,
        "os_name": i.os_name,
        "image_type": enum_name::<pb::ImageType>(i.image_type),
        "state": enum_name::<pb::ImageState>(i.state),
        "image_source": enum_name::<pb::ImageSource>(i.image_source),
        "license_type": enum_name::<pb::LicenseType>(i.license_type),
        "encrypted": i.encrypted,
        "whole_instance": i.whole_instance,
        "supports_cloudinit": i.supports_cloudinit,
        "created_time": time(i.created_time.as_ref()),
        "copied_from": i.copied_from.as_ref().map(|c| json!({"image_id": c.image_id, "region": c.region})),
    })
}
