//! `image-ledger image …`: the image commands of `ImageLedger`, one
//! subcommand each, and their arguments; what each does is in [`run`],
//! the queries are in [`super::query`].

mod controls;
mod run;

use clap::{Args, Subcommand, ValueEnum};
use image_ledger::grpc::pb;

use self::controls::{Control, ControlArgs, LineageArgs, ProtectionArgs, ShareExpiryArgs};
use super::query::{AuthorizeArgs, ListArgs, SharesArgs};
use super::{RemoteArgs, TokenArg};

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
    /// Move or remove the end of shares of an image (ModifyImageShareExpiry).
    ShareExpiry(ShareExpiryArgs),
    /// Give up an image shared with the account (LeaveImageShare); the
    /// owner's slot is freed.
    Leave(ControlArgs),
    /// Disable an image (DisableImage): every share is cancelled and
    /// nobody may use, share, copy or change it.
    Disable(ControlArgs),
    /// Enable a disabled image for its owner again (EnableImage); shares
    /// are not restored.
    Enable(ControlArgs),
    /// Turn deletion protection on or off (ModifyImageDeletionProtection).
    Protection(ProtectionArgs),
    /// Deprecate an image shared with nobody (DeprecateImage): it can no
    /// longer be shared or copied.
    Deprecate(ControlArgs),
    /// Undo an image's deprecation (UndeprecateImage).
    Undeprecate(ControlArgs),
    /// The chain of copies back to the first image, as far as the account
    /// may see it (GetImageLineage).
    Lineage(LineageArgs),
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
    #[arg(
        long = "with",
        visible_alias = "to",
        value_name = "ACCOUNT",
        required = true,
        num_args = 1..,
        value_delimiter = ','
    )]
    pub to: Vec<String>,
    /// When the shares end by themselves (RFC 3339, e.g.
    /// 2027-01-31T00:00:00Z); they never do without it.
    #[arg(long, value_parser = super::render::instant)]
    pub expires_at: Option<time::OffsetDateTime>,
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
    #[arg(
        long = "with",
        visible_alias = "from",
        value_name = "ACCOUNT",
        required = true,
        num_args = 1..,
        value_delimiter = ','
    )]
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
        ImageCmd::Register(args) => run::register(args),
        ImageCmd::SetState(args) => run::set_state(args),
        ImageCmd::Share(args) => run::share(args),
        ImageCmd::Unshare(args) => run::unshare(args),
        ImageCmd::Copy(args) => run::copy(args),
        ImageCmd::Delete(args) => run::delete(args),
        ImageCmd::Modify(args) => run::modify(args),
        ImageCmd::Lighthouse(args) => run::lighthouse(args),
        ImageCmd::Authorize(args) => super::query::authorize(args),
        ImageCmd::List(args) => super::query::list(args),
        ImageCmd::Shares(args) => super::query::shares(args),
        ImageCmd::ShareExpiry(args) => controls::share_expiry(args),
        ImageCmd::Leave(args) => controls::control(Control::Leave, args),
        ImageCmd::Disable(args) => controls::control(Control::Disable, args),
        ImageCmd::Enable(args) => controls::control(Control::Enable, args),
        ImageCmd::Protection(args) => controls::protection(args),
        ImageCmd::Deprecate(args) => controls::control(Control::Deprecate, args),
        ImageCmd::Undeprecate(args) => controls::control(Control::Undeprecate, args),
        ImageCmd::Lineage(args) => controls::lineage(args),
    }
}
