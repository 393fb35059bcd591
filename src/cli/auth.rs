//! `image-ledger auth`: making the secrets the config file's `[auth]`
//! table refers to.

use clap::Subcommand;
use std::path::PathBuf;

use anyhow::Context;
use image_ledger::auth::{digest_hex, new_cloud_key, new_token};
use image_ledger::domain::AccountId;

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
    /// Make a Tencent Cloud API key for the cloud API door: prints the
    /// SecretId and SecretKey on stdout (hand them to the account's
    /// tooling) and, on stderr, the [[cloud_api.keys]] entry for the
    /// config file.
    NewCloudKey {
        /// The root account every request signed with the key acts for.
        #[arg(long)]
        account: String,
        /// Write the SecretKey to this new file (mode 600) and name it in
        /// the entry, rather than putting the key in the entry itself.
        #[arg(long)]
        key_file: Option<PathBuf>,
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
        AuthCmd::NewCloudKey { account, key_file } => {
            let account = AccountId::parse(&account).map_err(anyhow::Error::msg)?;
            let (secret_id, secret_key) = new_cloud_key();
            println!("SecretId:  {secret_id}\nSecretKey: {secret_key}");
            let key_line = match &key_file {
                Some(path) => {
                    write_private(path, &secret_key)?;
                    format!("secret_key_file = {:?}", path.display().to_string())
                }
                None => format!("secret_key = {secret_key:?}"),
            };
            eprintln!(
                "# add to the config file, then restart the server or send it SIGHUP\n\
                 [[cloud_api.keys]]\nsecret_id = {secret_id:?}\n{key_line}\naccount_id = \"{account}\""
            );
            Ok(())
        }
    }
}

/// Creates `path` readable by its owner only and writes `secret` to it;
/// an existing file is left alone.
fn write_private(path: &std::path::Path, secret: &str) -> anyhow::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .with_context(|| format!("cannot create {} (it must not exist yet)", path.display()))?;
    writeln!(file, "{secret}")
        .and_then(|()| file.sync_all())
        .with_context(|| format!("cannot write {}", path.display()))
}
