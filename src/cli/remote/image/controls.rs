//! The `image` commands of the controls beyond Tencent's: leave, disable,
//! enable, protection, deprecate, undeprecate and lineage.

use clap::{Args, ValueEnum};
use image_ledger::domain::rfc3339;
use image_ledger::grpc::pb;
use serde_json::json;

use super::super::render::time;
use super::super::{run, MinPositionArg, RemoteArgs};
use super::run::{changed, positioned};
use super::ActingArgs;

/// An image and whether to only check the rules: what each control takes.
#[derive(Args)]
pub struct ControlArgs {
    /// The image id.
    pub image: String,
    /// Check every rule, record nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub acting: ActingArgs,
}

/// Deletion protection on or off.
#[derive(Clone, Copy, ValueEnum)]
pub enum Switch {
    /// Refuse delete.
    On,
    /// Allow delete again (after the cooldown, with `--with-cooldown`).
    Off,
}

/// `image protection`
#[derive(Args)]
pub struct ProtectionArgs {
    #[command(flatten)]
    pub control: ControlArgs,
    /// On or off (after the image id).
    #[arg(value_enum)]
    pub switch: Switch,
    /// With `off`: keep refusing delete for 24 hours.
    #[arg(long)]
    pub with_cooldown: bool,
}

/// `image share-expiry`
#[derive(Args)]
pub struct ShareExpiryArgs {
    /// The accounts whose shares change (repeat, or separate with commas).
    #[arg(long = "of", required = true, num_args = 1.., value_delimiter = ',')]
    pub accounts: Vec<String>,
    /// The new end (RFC 3339).
    #[arg(long, value_parser = super::super::render::instant, required_unless_present = "never")]
    pub expires_at: Option<time::OffsetDateTime>,
    /// The shares no longer end by themselves.
    #[arg(long, conflicts_with = "expires_at")]
    pub never: bool,
    #[command(flatten)]
    pub control: ControlArgs,
}

/// `image lineage`
#[derive(Args)]
pub struct LineageArgs {
    /// The image id.
    pub image: String,
    /// The asking account: the image's owner or a recipient.
    #[arg(long)]
    pub account: String,
    #[command(flatten)]
    pub min_position: MinPositionArg,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// Which control an [`ControlArgs`] command runs.
#[derive(Clone, Copy)]
pub enum Control {
    /// `image leave`
    Leave,
    /// `image disable`
    Disable,
    /// `image enable`
    Enable,
    /// `image deprecate`
    Deprecate,
    /// `image undeprecate`
    Undeprecate,
}

/// Runs `image leave|disable|enable|deprecate|undeprecate`.
pub(super) fn control(which: Control, args: ControlArgs) -> anyhow::Result<()> {
    let a = &args.acting;
    let (account_id, image_id) = (a.account.clone(), args.image.clone());
    let (client_token, dry_run) = (a.token.value(), args.dry_run);
    let (done, would) = match which {
        Control::Leave => ("is no longer shared with you", "could be left"),
        Control::Disable => ("is disabled", "could be disabled"),
        Control::Enable => ("is enabled", "could be enabled"),
        Control::Deprecate => ("is deprecated", "could be deprecated"),
        Control::Undeprecate => ("is no longer deprecated", "could be undeprecated"),
    };
    // Each control's request has the same four fields.
    macro_rules! send {
        ($client:ident . $method:ident ( $request:ident )) => {
            $client
                .$method(pb::$request {
                    account_id,
                    image_id,
                    client_token,
                    dry_run,
                })
                .await
                .map(|reply| reply.into_inner().position)
        };
    }
    positioned(
        &a.remote,
        |mut c| async move {
            match which {
                Control::Leave => send!(c.leave_image_share(LeaveImageShareRequest)),
                Control::Disable => send!(c.disable_image(DisableImageRequest)),
                Control::Enable => send!(c.enable_image(EnableImageRequest)),
                Control::Deprecate => send!(c.deprecate_image(DeprecateImageRequest)),
                Control::Undeprecate => send!(c.undeprecate_image(UndeprecateImageRequest)),
            }
        },
        format!("{} {}", args.image, changed(dry_run, done, would)),
    )
}

/// `image protection`.
pub(super) fn protection(args: ProtectionArgs) -> anyhow::Result<()> {
    let c = &args.control;
    let a = &c.acting;
    let enabled = matches!(args.switch, Switch::On);
    let request = pb::ModifyImageDeletionProtectionRequest {
        account_id: a.account.clone(),
        image_id: c.image.clone(),
        enabled,
        with_cooldown: args.with_cooldown,
        client_token: a.token.value(),
        dry_run: c.dry_run,
    };
    let done = match (enabled, args.with_cooldown) {
        (true, _) => "has deletion protection on",
        (false, false) => "has deletion protection off",
        (false, true) => "has deletion protection off, delete refused for 24 hours",
    };
    positioned(
        &a.remote,
        |mut client| async move {
            client
                .modify_image_deletion_protection(request)
                .await
                .map(|r| r.into_inner().position)
        },
        format!(
            "{} {}",
            c.image,
            changed(c.dry_run, done, "could be changed")
        ),
    )
}

/// `image share-expiry`.
pub(super) fn share_expiry(args: ShareExpiryArgs) -> anyhow::Result<()> {
    let c = &args.control;
    let a = &c.acting;
    let request = pb::ModifyImageShareExpiryRequest {
        account_id: a.account.clone(),
        image_id: c.image.clone(),
        account_ids: args.accounts.clone(),
        expires_at: args.expires_at.map(image_ledger::grpc::timestamp),
        client_token: a.token.value(),
        dry_run: c.dry_run,
    };
    let done = match args.expires_at {
        Some(end) => format!(
            "shares of {} end at {}",
            args.accounts.join(", "),
            rfc3339(end)
        ),
        None => format!("shares of {} no longer end", args.accounts.join(", ")),
    };
    let done = if c.dry_run {
        format!("{}: could be changed ({done})", c.image)
    } else {
        format!("{}: {done}", c.image)
    };
    positioned(
        &a.remote,
        |mut client| async move {
            client
                .modify_image_share_expiry(request)
                .await
                .map(|r| r.into_inner().position)
        },
        done,
    )
}

/// `image lineage`: the chain of copies, newest first.
pub(super) fn lineage(args: LineageArgs) -> anyhow::Result<()> {
    run(&args.remote, async {
        let reply = args
            .remote
            .connect()
            .await?
            .get_image_lineage(pb::GetImageLineageRequest {
                account_id: args.account.clone(),
                image_id: args.image.clone(),
                min_position: args.min_position.min_position,
            })
            .await?
            .into_inner();
        let when = |link: &pb::LineageLink| time(link.created_time.as_ref());
        let links: Vec<_> = reply
            .links
            .iter()
            .map(|link| {
                json!({"image_id": link.image_id, "region": link.region,
                       "owner_account_id": link.owner_account_id,
                       "created_time": when(link), "deleted": link.deleted})
            })
            .collect();
        args.remote.print(
            json!({"links": links, "truncated": reply.truncated}),
            || {
                let rows: Vec<Vec<String>> = reply
                    .links
                    .iter()
                    .map(|link| {
                        vec![
                            link.image_id.clone(),
                            link.region.clone(),
                            link.owner_account_id.clone(),
                            when(link),
                            if link.deleted { "deleted" } else { "" }.to_owned(),
                        ]
                    })
                    .collect();
                let table = super::super::render::table(
                    &["IMAGE", "REGION", "OWNER", "CREATED", ""],
                    &rows,
                );
                if reply.truncated {
                    format!("{table}\n(copied from an image that is not yours to see)")
                } else {
                    table
                }
            },
        );
        Ok(())
    })
}
