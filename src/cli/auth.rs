//! `image-ledger auth`: making the secrets the config file's `[auth]`
//! table refers to.

use clap::Subcommand;
use image_ledger::auth::{digest_hex, new_token};

/// `auth …`
#[derive(Subcommand)]
pub enum AuthCmd {
    /// Make a bearer token: prints the token on stdout (hand it to its
    /// holder; it is shown once) and, on stderr, the [[auth.tokens]] entry
    /// for the config file, which keeps only the token's SHA-256.
    NewToken {
        /// The token's name in logs, and in rotation (e.g. ops-2026-12).
        #[arg(long)]
        id: String,
        /// The principal it authenticates (a key of [auth.principals]).
        #[arg(long)]
        principal: String,
    },
}

/// Runs an `auth` command.
pub fn run(command: AuthCmd) -> anyhow::Result<()> {
    match command {
        AuthCmd::NewToken { id, principal } => {
            let token = new_token();
            println!("{token}");
            eprintln!(
                "# add to the config file; the token itself is not kept\n\
                 [[auth.tokens]]\nid = {id:?}\nprincipal = {principal:?}\nsha256 = \"{}\"",
                digest_hex(&token)
            );
            Ok(())
        }
    }
}
