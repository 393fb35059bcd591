//! `image-ledger account …`: `RegisterAccount`, `DescribeImageQuota` and
//! the account's trusted image owners.

use clap::{Args, Subcommand, ValueEnum};
use image_ledger::grpc::pb;
use serde_json::json;

use super::{at_position, run, MinPositionArg, RemoteArgs, TokenArg};

/// `account …`
#[derive(Subcommand)]
pub enum AccountCmd {
    /// Register a root or collaborator account (RegisterAccount). Only
    /// registered accounts can own images or be shared with; sharing needs
    /// a root account.
    Register(RegisterArgs),
    /// How many custom images an account has in a region, against its
    /// quota (DescribeImageQuota). Shared images count against nobody's.
    Quota(QuotaArgs),
    /// Set the owner accounts whose shared images the account accepts
    /// (SetTrustedImageOwners): `enforce` refuses the others' images,
    /// `audit` allows them and says so, `off` stops applying the list.
    Trust(TrustArgs),
    /// The account's trusted image owners (DescribeTrustedImageOwners).
    Trusted(TrustedArgs),
}

/// How the list of trusted owners applies.
#[derive(Clone, Copy, ValueEnum)]
pub enum Mode {
    /// Not applied.
    Off,
    /// Allowed, but `image authorize` says enforcing would deny.
    Audit,
    /// Images of other owners may not be used or copied.
    Enforce,
}

/// `account trust`
#[derive(Args)]
pub struct TrustArgs {
    /// The account accepting images.
    pub account: String,
    /// How the list applies.
    #[arg(long, value_enum)]
    pub mode: Mode,
    /// The trusted owner accounts (repeat, or separate with commas).
    #[arg(long = "owner", num_args = 0.., value_delimiter = ',')]
    pub owners: Vec<String>,
    /// Check every rule, record nothing.
    #[arg(long)]
    pub dry_run: bool,
    #[command(flatten)]
    pub token: TokenArg,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// `account trusted`
#[derive(Args)]
pub struct TrustedArgs {
    /// The account id.
    pub account: String,
    #[command(flatten)]
    pub min_position: MinPositionArg,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// The kinds of account.
#[derive(Clone, Copy, ValueEnum)]
pub enum Kind {
    /// A root account: can be shared with.
    Root,
    /// A collaborator (sub-)account: can own images, cannot be shared with.
    Collaborator,
}

/// `account register`
#[derive(Args)]
pub struct RegisterArgs {
    /// The account id (1–20 digits).
    pub account: String,
    /// What kind of account it is.
    #[arg(long, value_enum, default_value_t = Kind::Root)]
    pub kind: Kind,
    #[command(flatten)]
    pub token: TokenArg,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// `account quota`
#[derive(Args)]
pub struct QuotaArgs {
    /// The account id (or as --account, as the other commands take it).
    #[arg(required_unless_present = "acting", conflicts_with = "acting")]
    pub account: Option<String>,
    /// The account id.
    #[arg(long = "account", id = "acting", value_name = "ACCOUNT")]
    pub acting: Option<String>,
    /// The region.
    #[arg(long)]
    pub region: String,
    #[command(flatten)]
    pub min_position: MinPositionArg,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// Runs an `account` command.
pub fn run_command(command: AccountCmd) -> anyhow::Result<()> {
    match command {
        AccountCmd::Register(args) => run(&args.remote, async {
            let mut client = args.remote.connect().await?;
            let kind = match args.kind {
                Kind::Root => pb::AccountKind::Root,
                Kind::Collaborator => pb::AccountKind::Collaborator,
            };
            let reply = client
                .register_account(pb::RegisterAccountRequest {
                    account_id: args.account.clone(),
                    kind: kind as i32,
                    client_token: args.token.value(),
                })
                .await?
                .into_inner();
            args.remote.print(json!({"position": reply.position}), || {
                format!(
                    "registered account {} ({})",
                    args.account,
                    at_position(reply.position)
                )
            });
            Ok(())
        }),
        AccountCmd::Quota(args) => run(&args.remote, async {
            // clap lets exactly one of them through.
            let account = args.account.or(args.acting).unwrap_or_default();
            let mut client = args.remote.connect().await?;
            let reply = client
                .describe_image_quota(pb::DescribeImageQuotaRequest {
                    account_id: account.clone(),
                    region: args.region.clone(),
                    min_position: args.min_position.min_position,
                })
                .await?
                .into_inner();
            args.remote
                .print(json!({"quota": reply.quota, "used": reply.used}), || {
                    format!(
                        "account {} uses {} of {} custom images in {}",
                        account, reply.used, reply.quota, args.region
                    )
                });
            Ok(())
        }),
        AccountCmd::Trust(args) => trust(args),
        AccountCmd::Trusted(args) => trusted(args),
    }
}

fn trust(args: TrustArgs) -> anyhow::Result<()> {
    run(&args.remote, async {
        let mode = match args.mode {
            Mode::Off => pb::TrustMode::Off,
            Mode::Audit => pb::TrustMode::Audit,
            Mode::Enforce => pb::TrustMode::Enforce,
        };
        let reply = args
            .remote
            .connect()
            .await?
            .set_trusted_image_owners(pb::SetTrustedImageOwnersRequest {
                account_id: args.account.clone(),
                mode: mode as i32,
                owner_account_ids: args.owners.clone(),
                client_token: args.token.value(),
                dry_run: args.dry_run,
            })
            .await?
            .into_inner();
        args.remote.print(json!({"position": reply.position}), || {
            let verb = if args.dry_run {
                "could trust"
            } else {
                "trusts"
            };
            format!(
                "account {} {verb} [{}] ({}; {})",
                args.account,
                args.owners.join(", "),
                mode.as_str_name(),
                at_position(reply.position)
            )
        });
        Ok(())
    })
}

fn trusted(args: TrustedArgs) -> anyhow::Result<()> {
    run(&args.remote, async {
        let reply = args
            .remote
            .connect()
            .await?
            .describe_trusted_image_owners(pb::DescribeTrustedImageOwnersRequest {
                account_id: args.account.clone(),
                min_position: args.min_position.min_position,
            })
            .await?
            .into_inner();
        let mode = pb::TrustMode::try_from(reply.mode).map_or("UNKNOWN", |mode| mode.as_str_name());
        args.remote.print(
            json!({"mode": mode, "owner_account_ids": reply.owner_account_ids}),
            || {
                format!(
                    "account {} trusts [{}] ({mode})",
                    args.account,
                    reply.owner_account_ids.join(", ")
                )
            },
        );
        Ok(())
    })
}
