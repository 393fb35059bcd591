//! `image-ledger audit follow` and `audit key`: the `AuditLog` reads that
//! exist only on a running server.

use std::io::Write;

use clap::Args;
use image_ledger::grpc::AuditClient;
use serde_json::json;

use super::{run, Failure, RemoteArgs};

/// `audit follow`
#[derive(Args)]
pub struct FollowArgs {
    /// The first position to print.
    #[arg(long, default_value_t = 1)]
    pub from: u64,
    /// Stop after this many records (default: follow until interrupted).
    #[arg(long)]
    pub count: Option<u64>,
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// `audit key`
#[derive(Args)]
pub struct KeyArgs {
    #[command(flatten)]
    pub remote: RemoteArgs,
}

/// Prints the log from `--from` as JSON lines, exactly as stored, then
/// every record as it is appended (Subscribe).
pub fn follow(args: FollowArgs) -> anyhow::Result<()> {
    run(&args.remote, async {
        let mut client = AuditClient::new(
            args.remote.channel_for_streams().await?,
            args.remote.bearer()?,
        );
        let mut out = std::io::stdout().lock();
        let written = client.follow(args.from, args.count, &mut out).await?;
        out.flush()
            .map_err(|err| Failure::Server(err.to_string()))?;
        eprintln!("followed {written} events");
        Ok(())
    })
}

/// Prints the public key that signs this ledger's heads (GetLedgerPublicKey).
pub fn key(args: KeyArgs) -> anyhow::Result<()> {
    run(&args.remote, async {
        let key = AuditClient::new(args.remote.channel().await?, args.remote.bearer()?)
            .public_key()
            .await?;
        args.remote
            .print(json!({"public_key": key}), || key.clone());
        Ok(())
    })
}
