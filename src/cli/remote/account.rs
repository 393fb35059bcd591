//! `image-ledger account …`: `RegisterAccount` and `DescribeImageQuota`.

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
    /// The account id.
    pub account: String,
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
            let mut client = args.remote.connect().await?;
            let reply = client
                .describe_image_quota(pb::DescribeImageQuotaRequest {
                    account_id: args.account.clone(),
                    region: args.region.clone(),
                    min_position: args.min_position.min_position,
                })
                .await?
                .into_inner();
            args.remote
                .print(json!({"quota": reply.quota, "used": reply.used}), || {
                    format!(
                        "account {} uses {} of {} custom images in {}",
                        args.account, reply.used, reply.quota, args.region
                    )
                });
            Ok(())
        }),
    }
}
