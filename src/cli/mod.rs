//! The `image-ledger` command line: the commands and the arguments they
//! share; each group of commands has a module of its own.

mod audit;
mod auth;
pub mod config_file;
mod migrate;
mod notify;
mod projections;
mod remote;
mod serve;

use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context};
use clap::{Args, Parser, Subcommand};
use image_ledger::config::parse_regions;
use image_ledger::domain::Policy;
use image_ledger::store::{Location, Store, StoreError};

use self::audit::AuditCmd;
use self::projections::ProjectionsCmd;
use self::serve::ServeArgs;

/// The `image-ledger` command.
#[derive(Parser)]
#[command(version, about, propagate_version = true)]
pub struct Cli {
    /// A TOML file of settings: serve's flags, with _ for -, and
    /// signing_key_seed. Flags and environment variables win over it.
    #[arg(
        long,
        global = true,
        env = "IMAGE_LEDGER_CONFIG",
        help_heading = "Global options"
    )]
    pub config: Option<PathBuf>,
    /// How logs are written to stderr: `text` for people, `json` (one
    /// object a line) for log pipelines.
    #[arg(
        long,
        global = true,
        env = "IMAGE_LEDGER_LOG_FORMAT",
        value_enum,
        default_value_t = LogFormat::Text,
        help_heading = "Global options"
    )]
    pub log_format: LogFormat,
    #[command(subcommand)]
    pub command: Cmd,
}

/// The form of the logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines (coloured on a terminal).
    Text,
    /// One JSON object a line.
    Json,
}

/// The commands.
#[derive(Subcommand)]
pub enum Cmd {
    /// Run the gRPC server.
    Serve(ServeArgs),
    /// Prove, back up, restore and question the log.
    Audit {
        #[command(subcommand)]
        command: AuditCmd,
    },
    /// Create or migrate the PostgreSQL schema (as the database's owner).
    Migrate(migrate::MigrateArgs),
    /// Maintain the read side.
    Projections {
        #[command(subcommand)]
        command: ProjectionsCmd,
    },
    /// Make bearer tokens ([auth]) and cloud API keys ([cloud_api]) for the config file.
    Auth {
        #[command(subcommand)]
        command: auth::AuthCmd,
    },
    /// Call a running server: register accounts, see quotas.
    Account {
        #[command(subcommand)]
        command: remote::AccountCmd,
    },
    /// Call a running server: register, share, copy, delete, list images.
    Image {
        #[command(subcommand)]
        command: remote::ImageCmd,
    },
}

/// The environment variable that carries the signing key's seed.
pub const SEED_VARIABLE: &str = "IMAGE_LEDGER_SIGNING_KEY_SEED";

/// What the config file holds that is not a flag: secrets and tables.
#[derive(Default)]
pub struct FileSettings {
    /// `signing_key_seed`.
    pub signing_key_seed: Option<String>,
    /// `[auth]`.
    pub auth: Option<image_ledger::auth::AuthConfig>,
    /// `[tls]`.
    pub tls: Option<image_ledger::tls::TlsConfig>,
    /// `[cloud_api]`.
    pub cloud_api: Option<image_ledger::auth::CloudApiConfig>,
    /// The file itself, when there is one: key files are relative to its
    /// folder, and a reload reads it again.
    pub path: Option<PathBuf>,
}

impl FileSettings {
    /// The TLS files: `IMAGE_LEDGER_TLS_CERT` and `IMAGE_LEDGER_TLS_KEY`
    /// (and `IMAGE_LEDGER_TLS_CLIENT_CA`), else the config file's `[tls]`.
    pub fn tls_settings(&self) -> Option<image_ledger::tls::TlsConfig> {
        let var = |name: &str| std::env::var_os(name).map(PathBuf::from);
        match (var("IMAGE_LEDGER_TLS_CERT"), var("IMAGE_LEDGER_TLS_KEY")) {
            (Some(cert), Some(key)) => Some(image_ledger::tls::TlsConfig {
                cert,
                key,
                client_ca: var("IMAGE_LEDGER_TLS_CLIENT_CA"),
            }),
            _ => self.tls.clone(),
        }
    }

    /// The checked `[[cloud_api.keys]]`, key files read relative to the
    /// config file's folder.
    pub fn cloud_keys(&self) -> anyhow::Result<image_ledger::auth::KeyTable> {
        let base = self
            .path
            .as_deref()
            .and_then(Path::parent)
            .unwrap_or(Path::new("."));
        let config = self.cloud_api.clone().unwrap_or_default();
        image_ledger::auth::key_table(&config, base).context("the config file's [cloud_api] table")
    }

    /// `IMAGE_LEDGER_SIGNING_KEY_SEED`, else the config file's.
    pub fn signing_key_seed(&self) -> Option<String> {
        std::env::var(SEED_VARIABLE)
            .ok()
            .or_else(|| self.signing_key_seed.clone())
    }
}

pub use remote::exit_code;

/// Runs a parsed command with what the config file held beside flags.
pub fn run(cli: Cli, file: &FileSettings) -> anyhow::Result<()> {
    match cli.command {
        Cmd::Serve(args) => serve::serve(args, file),
        Cmd::Migrate(args) => migrate::run(args),
        Cmd::Projections { command } => projections::run(command),
        Cmd::Audit { command } => audit::run(command, file),
        Cmd::Auth { command } => auth::run(command),
        Cmd::Account { command } => remote::account::run_command(command),
        Cmd::Image { command } => remote::image::run_command(command),
    }
}

/// Where an audit command reads from: a stopped server's directory or a running server.
#[derive(Args)]
pub struct SourceArgs {
    #[command(flatten)]
    pub data: Location,
    /// Ask a running server instead of reading the store: host:port or
    /// https://host:port.
    #[arg(long, conflicts_with_all = ["data_dir", "database_url"])]
    pub addr: Option<String>,
    /// With --addr: a file holding the bearer token to send
    /// (IMAGE_LEDGER_TOKEN holds the token itself).
    #[arg(long, env = "IMAGE_LEDGER_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    #[command(flatten)]
    pub tls: remote::TlsArgs,
}

impl SourceArgs {
    /// The bearer token for `--addr`.
    pub fn bearer(&self) -> anyhow::Result<image_ledger::grpc::Bearer> {
        Ok(remote::bearer(self.token_file.as_deref())?)
    }

    /// A client of the audit service at `addr` (`--addr`'s), as
    /// `bearer`; the connection given up after 10 s, calls never (an
    /// export may take long).
    pub async fn audit_client(
        &self,
        addr: &str,
        bearer: image_ledger::grpc::Bearer,
    ) -> Result<image_ledger::grpc::AuditClient, remote::Failure> {
        let channel =
            remote::channel(addr, &self.tls, std::time::Duration::from_secs(10), false).await?;
        Ok(image_ledger::grpc::AuditClient::new(channel, bearer))
    }
}

/// The rules' limits, shared by `serve`, `audit verify` and `audit import`.
#[derive(Args, Clone)]
pub struct PolicyArgs {
    /// Most accounts one image may be shared with.
    #[arg(long, env = "IMAGE_LEDGER_MAX_SHARES_PER_IMAGE", default_value_t = 50)]
    max_shares_per_image: usize,
    /// Most accounts one ShareImage or CancelImageSharing call may name.
    #[arg(long, env = "IMAGE_LEDGER_MAX_ACCOUNTS_PER_CALL", default_value_t = 50)]
    max_accounts_per_call: usize,
    /// Custom-image quota per account and region.
    #[arg(long, env = "IMAGE_LEDGER_IMAGE_QUOTA", default_value_t = 500)]
    image_quota: u32,
    /// Comma-separated regions; empty means the built-in list of public regions.
    #[arg(long, env = "IMAGE_LEDGER_REGIONS", default_value = "")]
    regions: String,
    /// How long a client_token is remembered, in seconds: a retry within it
    /// gets the first reply, one after it runs as a new command.
    #[arg(
        long,
        env = "IMAGE_LEDGER_IDEMPOTENCY_RETENTION_SECS",
        default_value_t = 86_400
    )]
    idempotency_retention_secs: u64,
}

impl PolicyArgs {
    pub fn policy(&self) -> anyhow::Result<Policy> {
        anyhow::ensure!(
            self.max_shares_per_image > 0 && self.max_accounts_per_call > 0,
            "the share limits must be at least 1"
        );
        anyhow::ensure!(
            self.idempotency_retention_secs > 0,
            "--idempotency-retention-secs must be at least 1"
        );
        Ok(Policy {
            max_shares_per_image: self.max_shares_per_image,
            max_accounts_per_call: self.max_accounts_per_call,
            image_quota: self.image_quota,
            regions: parse_regions(&self.regions).map_err(anyhow::Error::msg)?,
            token_retention: std::time::Duration::from_secs(self.idempotency_retention_secs),
        })
    }
}

pub fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Runtime::new().context("cannot start the async runtime")
}

/// Opens the store: the database (its schema current already: nothing is
/// created, so an auditor's read-only role or a hot standby will do), or a
/// stopped server's directory (a running server holds the directory's
/// lock).
pub fn open_store(location: &Location) -> anyhow::Result<Arc<dyn Store>> {
    if location.database_url.is_none() && !location.data_dir.exists() {
        bail!("{} does not exist", location.data_dir.display());
    }
    let opened = location.open_existing().map_err(|err| {
        let hint = match (&err, &location.database_url) {
            // Damage is named by the error itself.
            (StoreError::Corrupt(_), _) | (_, Some(_)) => "",
            _ => " (a running server holds it: stop it, or use --addr)",
        };
        anyhow::Error::new(err).context(format!("cannot open {}{hint}", location.describe()))
    })?;
    Ok(opened.store)
}

/// A buffered writer to `path`, or to standard output.
pub fn output(path: Option<&Path>) -> anyhow::Result<Box<dyn Write>> {
    Ok(match path {
        Some(path) => Box::new(BufWriter::new(
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => Box::new(BufWriter::new(std::io::stdout().lock())),
    })
}
