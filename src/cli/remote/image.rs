//! `image-ledger image …`: the image commands of `ImageLedger`, one
//! subcommand each; the queries are in [`super::query`].

use clap::{Args, Subcommand, ValueEnum};
use image_ledger::grpc::pb;
use serde_json::json;

use super::query::{AuthorizeArgs, ListArgs, SharesArgs};
use super::{at_position, run, RemoteArgs, TokenArg};

/// `image …`
#[derive(Subcommand)]
pub enum ImageCmd {
    /// Record a new custom image of an account in a region (RegisterImage);
    /// prints the id the ledger gave it.
    Register(RegisterArgs),
    /// Report an image's state, as the image factory does (UpdateImageState).
    SetState(SetStateArgs),
    /// Share an image with other root accounts in its region (ShareImage):
    /// they can then create and reinstall instances from it, nothing else.
    Share(ShareArgs),
    /// Cancel the sharing of an image with accounts (CancelImageSharing).
    Unshare(UnshareArgs),
    /// Copy an image to other regions (CopyImage); to share it there, share
    /// the copy.
    Copy(CopyArgs),
    /// Delete an image (DeleteImage); refused while it is shared.
    Delete(DeleteArgs),
    /// Rename an image or change its description (ModifyImageAttribute).
    Modify(ModifyArgs),
    /// Share an image with, or withdraw it from, Lighthouse in the owner's
    /// account and region (ModifyLighthouseSharePermission).
    Lighthouse(LighthouseArgs),
    /// Ask whether an account may use an image (AuthorizeImageUse); exits 3
    /// when it may not, printing the reason.
    Authorize(AuthorizeArgs),
    /// List the images an account owns or was shared, in a region
    /// (DescribeImages).
    List(ListArgs),
    /// The accounts an image is shared with, oldest first, and its
    /// Lighthouse share (DescribeImageSharePermission).
    Shares(SharesArgs),
}

/// `--account`, `--token` and the server, which most image commands take.
#[derive(Args, Clone)]
pub struct ActingArgs {
    /// The calling account (the owner, for most commands).
    #[arg(long)]
    pub account: String,
    #[command(flatten)]
    pub token: TokenArg,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// Image states, as the proto names them.
#[derive(Clone, Copy, ValueEnum)]
pub enum State {
    Creating,
    Normal,
    Createfailed,
    Syncing,
    Importing,
    Importfailed,
}

impl State {
    fn value(self) -> i32 {
        (match self {
            State::Creating => pb::ImageState::Creating,
            State::Normal => pb::ImageState::Normal,
            State::Createfailed => pb::ImageState::Createfailed,
            State::Syncing => pb::ImageState::Syncing,
            State::Importing => pb::ImageState::Importing,
            State::Importfailed => pb::ImageState::Importfailed,
        }) as i32
    }
}

/// Where an image came from.
#[derive(Clone, Copy, ValueEnum)]
pub enum Source {
    /// Made from an instance.
    CreateImage,
    /// Imported from outside.
    ExternalImport,
}

/// The image's licence.
#[derive(Clone, Copy, ValueEnum)]
pub enum License {
    /// Licensed through the cloud.
    Tencentcloud,
    /// Bring your own licence (cannot be shared).
    Byol,
}

/// `image register`
#[derive(Args)]
pub struct RegisterArgs {
    /// The image's name (unique among the owner's images in the region).
    #[arg(long)]
    pub name: String,
    /// The region.
    #[arg(long)]
    pub region: String,
    /// The operating system family, e.g. CentOS.
    #[arg(long)]
    pub platform: String,
    /// The operating system, e.g. "CentOS 7.9 64-bit".
    #[arg(long)]
    pub os_name: String,
    /// A description.
    #[arg(long, default_value = "")]
    pub description: String,
    /// Where the image came from.
    #[arg(long, value_enum, default_value_t = Source::CreateImage)]
    pub source: Source,
    /// Its licence.
    #[arg(long, value_enum, default_value_t = License::Tencentcloud)]
    pub license: License,
    /// The image is encrypted (it cannot be shared or copied).
    #[arg(long)]
    pub encrypted: bool,
    /// A whole-instance image (it cannot be shared).
    #[arg(long)]
    pub whole_instance: bool,
    /// The image supports cloud-init (Lighthouse needs it).
    #[arg(long)]
    pub cloud_init: bool,
    /// Its state at registration.
    #[arg(long, value_enum, default_value_t = State::Normal)]
    pub state: State,
    #[command(flatten)]
    pub acting: ActingArgs,
}

/// `image set-state`
#[derive(Args)]
pub struct SetStateArgs {
    /// The image id.
    pub image: String,
    /// The new state.
    #[arg(value_enum)]
    pub state: State,
    #[command(flatten)]
    pub token: TokenArg,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// `image share`
#[derive(Args)]
pub struct ShareArgs {
    /// The image id.
    pub image: String,
    /// The accounts to share with (repeat, or separate with commas).
    #[arg(long, required = true, num_args = 1.., value_delimiter = ',')]
    pub to: Vec<String>,
    /// Check every rule, record nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub acting: ActingArgs,
}

/// `image unshare`
#[derive(Args)]
pub struct UnshareArgs {
    /// The image id.
    pub image: String,
    /// The accounts to stop sharing with (repeat, or separate with commas).
    #[arg(long, required = true, num_args = 1.., value_delimiter = ',')]
    pub from: Vec<String>,
    /// Check every rule, record nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub acting: ActingArgs,
}

/// `image copy`
#[derive(Args)]
pub struct CopyArgs {
    /// The image id.
    pub image: String,
    /// The regions to copy to (repeat, or separate with commas).
    #[arg(long = "to-region", required = true, num_args = 1.., value_delimiter = ',')]
    pub regions: Vec<String>,
    /// The copies' name (default: the source's).
    #[arg(long)]
    pub name: Option<String>,
    /// Check every rule, record nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub acting: ActingArgs,
}

/// `image delete`
#[derive(Args)]
pub struct DeleteArgs {
    /// The image id.
    pub image: String,
    /// Check every rule, record nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub acting: ActingArgs,
}

/// `image modify`
#[derive(Args)]
pub struct ModifyArgs {
    /// The image id.
    pub image: String,
    /// The new name.
    #[arg(long, required_unless_present = "description")]
    pub name: Option<String>,
    /// The new description.
    #[arg(long)]
    pub description: Option<String>,
    #[command(flatten)]
    pub acting: ActingArgs,
}

/// What to do with the Lighthouse share.
#[derive(Clone, Copy, ValueEnum)]
pub enum Permission {
    /// Share the image with Lighthouse.
    Share,
    /// Cancel the Lighthouse share.
    Cancel,
}

/// `image lighthouse`
#[derive(Args)]
pub struct LighthouseArgs {
    /// The image id.
    pub image: String,
    /// Share or cancel.
    #[arg(value_enum)]
    pub permission: Permission,
    #[command(flatten)]
    pub acting: ActingArgs,
}

/// Runs an `image` command.
pub fn run_command(command: ImageCmd) -> anyhow::Result<()> {
    match command {
        ImageCmd::Register(args) => register(args),
        ImageCmd::SetState(args) => set_state(args),
        ImageCmd::Share(args) => share(args),
        ImageCmd::Unshare(args) => unshare(args),
        ImageCmd::Copy(args) => copy(args),
        ImageCmd::Delete(args) => delete(args),
        ImageCmd::Modify(args) => modify(args),
        ImageCmd::Lighthouse(args) => lighthouse(args),
        ImageCmd::Authorize(args) => super::query::authorize(args),
        ImageCmd::List(args) => super::query::list(args),
        ImageCmd::Shares(args) => super::query::shares(args),
    }
}

/// `image set-state`.
fn set_state(args: SetStateArgs) -> anyhow::Result<()> {
    let request = pb::UpdateImageStateRequest {
        image_id: args.image.clone(),
        state: args.state.value(),
        client_token: args.token.value(),
    };
    let state = super::render::enum_name::<pb::ImageState>(args.state.value());
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
fn share(args: ShareArgs) -> anyhow::Result<()> {
    let a = &args.acting;
    let request = pb::ShareImageRequest {
        account_id: a.account.clone(),
        image_id: args.image.clone(),
        account_ids: args.to.clone(),
        client_token: a.token.value(),
        dry_run: args.dry_run,
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
fn unshare(args: UnshareArgs) -> anyhow::Result<()> {
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
fn delete(args: DeleteArgs) -> anyhow::Result<()> {
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
fn modify(args: ModifyArgs) -> anyhow::Result<()> {
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
fn lighthouse(args: LighthouseArgs) -> anyhow::Result<()> {
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
fn positioned<F, Fut>(remote: &RemoteArgs, call: F, done: String) -> anyhow::Result<()>
where
    F: FnOnce(super::Client) -> Fut,
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

fn register(args: RegisterArgs) -> anyhow::Result<()> {
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

fn copy(args: CopyArgs) -> anyhow::Result<()> {
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
                        super::render::table(&["IMAGE", "REGION"], &rows),
                        at_position(reply.position)
                    )
                }
            },
        );
        Ok(())
    })
}

/// What a command did, or would have done in a dry run.
fn changed(dry_run: bool, done: &'static str, would: &'static str) -> &'static str {
    if dry_run {
        would
    } else {
        done
    }
}
