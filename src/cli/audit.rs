//! `image-ledger audit`: verify, export, import, history, access and head,
//! on a stopped server's data directory or (where it makes sense) a
//! running server through the typed audit client.

use std::fs::File;
use std::io::{BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use image_ledger::audit::{self, AsOf, LedgerKey, SignedHead, VerifyOptions};
use image_ledger::domain::{rfc3339, AccountId, ImageId};
use image_ledger::progress::{CountingReader, CountingWriter, Progress, Unit};

use super::remote::Failure;
use super::{open_store, output, runtime, FileSettings, PolicyArgs, SourceArgs};
use image_ledger::store::Location;

/// `audit …`
#[derive(Subcommand)]
pub enum AuditCmd {
    /// Check every record: positions, hashes, the chain, the rules, the projections.
    Verify(VerifyArgs),
    /// Write the log as JSON lines, exactly as stored.
    Export(ExportArgs),
    /// Restore an export into a new, empty data directory, checking it all.
    Import(ImportArgs),
    /// Every event that touched an image or an account.
    History(HistoryArgs),
    /// Who could create or reinstall instances from an image at a moment.
    Access(AccessArgs),
    /// Print the signed head of the log (save it to pin history).
    Head(HeadArgs),
    /// Print a running server's log as JSON lines, then each record as it
    /// is appended (Subscribe).
    Follow(super::remote::audit::FollowArgs),
    /// Print the public key that signs a running server's heads
    /// (GetLedgerPublicKey).
    Key(super::remote::audit::KeyArgs),
}

/// `audit verify`
#[derive(Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub data: Location,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// A signed head saved earlier (`audit head`, `GetLedgerHead`) that must
    /// still be a prefix of the log.
    #[arg(long)]
    pub against_head: Option<PathBuf>,
    /// The public key (hex) that signed the pinned head, when the ledger's
    /// key has changed since (a lost key replaced with --new-signing-key);
    /// default: the ledger's key.
    #[arg(long, requires = "against_head")]
    pub head_key: Option<String>,
    /// Print the summary as JSON.
    #[arg(long)]
    pub json: bool,
}

/// `audit export`
#[derive(Args)]
pub struct ExportArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// First position to export.
    #[arg(long, default_value_t = 1)]
    pub from: u64,
    /// Last position to export (default: the head).
    #[arg(long)]
    pub to: Option<u64>,
    /// Write here instead of standard output.
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// `audit import`
#[derive(Args)]
pub struct ImportArgs {
    /// The export file (JSON lines).
    pub file: PathBuf,
    /// The new data directory; it must not exist or be empty.
    #[arg(
        long,
        required_unless_present = "database_url",
        conflicts_with = "database_url"
    )]
    pub data_dir: Option<PathBuf>,
    /// Import into this PostgreSQL database instead; it must hold no ledger yet.
    #[arg(long, env = "IMAGE_LEDGER_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    #[command(flatten)]
    pub policy: PolicyArgs,
}

/// `audit history`
#[derive(Args)]
pub struct HistoryArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// The image.
    #[arg(long, required_unless_present = "account", conflicts_with = "account")]
    pub image: Option<String>,
    /// The account (as owner, actor or recipient).
    #[arg(long)]
    pub account: Option<String>,
    /// One JSON envelope per line instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `audit access`
#[derive(Args)]
pub struct AccessArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// The image.
    #[arg(long)]
    pub image: String,
    /// The instant (RFC 3339, e.g. 2026-11-27T18:30:00Z).
    #[arg(
        long,
        value_parser = super::remote::instant,
        required_unless_present = "position",
        conflicts_with = "position"
    )]
    pub at: Option<time::OffsetDateTime>,
    /// Right after this log position.
    #[arg(long)]
    pub position: Option<u64>,
    /// Print JSON.
    #[arg(long)]
    pub json: bool,
}

/// `audit head`
#[derive(Args)]
pub struct HeadArgs {
    #[command(flatten)]
    pub source: SourceArgs,
    /// The key file, when not `ledger-signing.key` in the data directory.
    #[arg(long)]
    pub signing_key: Option<PathBuf>,
}

/// Runs an `audit` command.
pub fn run(command: AuditCmd, file: &FileSettings) -> anyhow::Result<()> {
    match command {
        AuditCmd::Verify(args) => verify(args, file),
        AuditCmd::Export(args) => export(args),
        AuditCmd::Import(args) => import(args),
        AuditCmd::History(args) => history(args),
        AuditCmd::Access(args) => access(args),
        AuditCmd::Head(args) => head(args, file),
        AuditCmd::Follow(args) => super::remote::audit::follow(args),
        AuditCmd::Key(args) => super::remote::audit::key(args),
    }
}

fn verify(args: VerifyArgs, file: &FileSettings) -> anyhow::Result<()> {
    let policy = args.policy.policy()?;
    let against_head = match &args.against_head {
        Some(path) => Some(read_signed_head(path)?),
        None => None,
    };
    let store = open_store(&args.data)?;
    if let Some(pinned) = &against_head {
        // The head must come from this ledger's key, when the key is here.
        let key_path = LedgerKey::default_path(&args.data.data_dir);
        let key = match seed_from_environment(file)? {
            Some(key) => Some(key),
            None if key_path.exists() => Some(LedgerKey::load(&key_path)?),
            None => None,
        };
        match (&args.head_key, key) {
            (Some(public), _) => pinned.check_signed_by(public)?,
            (None, Some(key)) => pinned.check_signed_by(&key.public_hex())?,
            (None, None) => {}
        }
    }
    let total = store.head()?.position;
    let progress = Progress::on_terminal("verifying", Unit::Events, Some(total));
    let options = VerifyOptions {
        against_head,
        progress: progress.clone(),
    };
    let verified = audit::verify(store.as_ref(), &policy, &options);
    progress.finish();
    match verified {
        Ok(report) => {
            let rate = report.events as f64 / report.elapsed.as_secs_f64().max(1e-9);
            if args.json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                let projections = match (report.projections_at, &report.projections_pending[..]) {
                    (Some(at), _) if at == report.head_position => {
                        "projections equal a fresh replay".to_owned()
                    }
                    (at, []) => format!(
                        "projections equal a fresh replay up to position {} (the next start catches them up)",
                        at.unwrap_or_default()
                    ),
                    (at, [target]) => format!(
                        "projections equal a fresh replay up to position {} with part of a write towards {target} (the next start finishes it)",
                        at.unwrap_or_default()
                    ),
                    (at, targets) => format!(
                        "projections equal a fresh replay up to position {} with parts of writes towards {} in turn (the next start finishes them)",
                        at.unwrap_or_default(),
                        targets.iter().map(u64::to_string).collect::<Vec<_>>().join(", ")
                    ),
                };
                println!(
                    "OK: {} events, {} aggregates, head {} {}, in {:.2?} ({:.0} events/s); {projections}{}",
                    report.events,
                    report.aggregates,
                    report.head_position,
                    report.head_hash,
                    report.elapsed,
                    rate,
                    match report.pinned_head {
                        Some(p) => format!("; the pinned head at {p} is a prefix of the log"),
                        None => String::new(),
                    }
                );
            }
            Ok(())
        }
        Err(err) => bail!("verification FAILED: {err}"),
    }
}

fn read_signed_head(path: &Path) -> anyhow::Result<SignedHead> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    serde_json::from_str(&text).with_context(|| format!("{} is not a signed head", path.display()))
}

fn export(args: ExportArgs) -> anyhow::Result<()> {
    let bearer = args.source.bearer()?;
    let started = Instant::now();
    // A bar only when writing to a file: stdout may be the terminal itself.
    let bar = |last: u64| match &args.output {
        Some(_) => {
            let total = (last + 1).saturating_sub(args.from.max(1));
            Progress::on_terminal("exporting", Unit::Events, Some(total))
        }
        None => Progress::hidden(),
    };
    let last = |head: u64| args.to.map_or(head, |to| to.min(head));
    let (written, progress) = match &args.source.addr {
        Some(addr) => runtime()?.block_on(async {
            let mut client = args.source.audit_client(addr, bearer.clone()).await?;
            // The head at the start bounds the bar; records appended
            // meanwhile are exported too.
            let progress = bar(last(client.head_position().await?));
            let written_out = |err: std::io::Error| Failure::Server(err.to_string());
            let out = output(args.output.as_deref())
                .map_err(|err| Failure::Server(format!("{err:#}")))?;
            let mut out = CountingWriter::new(out, progress.clone());
            let written = client.export(args.from, args.to, &mut out).await?;
            out.flush().map_err(written_out)?;
            Ok::<_, Failure>((written, progress))
        })?,
        None => {
            let store = open_store(&args.source.data)?;
            let progress = bar(last(store.head()?.position));
            let mut out = CountingWriter::new(output(args.output.as_deref())?, progress.clone());
            let written = audit::export(store.as_ref(), args.from, args.to, &mut out)?;
            out.flush()?;
            (written, progress)
        }
    };
    progress.finish();
    let elapsed = started.elapsed();
    eprintln!(
        "exported {written} events in {elapsed:.2?} ({:.0} events/s)",
        written as f64 / elapsed.as_secs_f64().max(1e-9)
    );
    Ok(())
}

fn import(args: ImportArgs) -> anyhow::Result<()> {
    let policy = args.policy.policy()?;
    let file =
        File::open(&args.file).with_context(|| format!("cannot open {}", args.file.display()))?;
    let size = file.metadata().map(|m| m.len()).ok();
    let progress = Progress::on_terminal("importing", Unit::Bytes, size);
    let mut input = CountingReader::new(BufReader::with_capacity(1 << 20, file), progress.clone());
    let (report, target) = match (&args.database_url, &args.data_dir) {
        (Some(url), _) => (
            audit::import_into_database(&mut input, url, &policy),
            "the PostgreSQL database".to_owned(),
        ),
        (None, Some(dir)) => (
            audit::import(&mut input, dir, &policy),
            dir.display().to_string(),
        ),
        (None, None) => bail!("give --data-dir or --database-url"),
    };
    progress.finish();
    let report =
        report.map_err(|err| anyhow::anyhow!("import refused, nothing was written: {err}"))?;
    println!(
        "imported {} events into {} in {:.2?} ({:.0} events/s); head hash {}",
        report.events,
        target,
        report.elapsed,
        report.events as f64 / report.elapsed.as_secs_f64().max(1e-9),
        report.head_hash
    );
    Ok(())
}

fn history(args: HistoryArgs) -> anyhow::Result<()> {
    let bearer = args.source.bearer()?;
    let records = match (&args.image, &args.account, &args.source.addr) {
        (Some(image), _, Some(addr)) => {
            let image = ImageId::parse(image)?;
            runtime()?.block_on(async {
                let mut client = args.source.audit_client(addr, bearer.clone()).await?;
                client.image_history(&image).await.map_err(Failure::from)
            })?
        }
        (None, Some(_), Some(_)) => {
            bail!("account history reads the whole log: run it on the data directory")
        }
        (Some(image), _, None) => {
            let store = open_store(&args.source.data)?;
            audit::image_history(store.as_ref(), &ImageId::parse(image)?)?
        }
        (None, Some(account), None) => {
            let store = open_store(&args.source.data)?;
            audit::account_history(store.as_ref(), &AccountId::parse(account)?)?
        }
        (None, None, _) => bail!("give --image or --account"),
    };
    let mut out = output(None)?;
    for record in &records {
        if args.json {
            out.write_all(&record.raw)?;
            out.write_all(b"\n")?;
        } else {
            writeln!(out, "{}", audit::describe_event(&record.envelope))?;
        }
    }
    if records.is_empty() && !args.json {
        writeln!(out, "no events")?;
    }
    out.flush()?;
    Ok(())
}

fn access(args: AccessArgs) -> anyhow::Result<()> {
    let bearer = args.source.bearer()?;
    let image = ImageId::parse(&args.image)?;
    let as_of = match (&args.at, args.position) {
        (Some(at), _) => AsOf::Time(*at),
        (None, Some(position)) => AsOf::Position(position),
        (None, None) => bail!("give --at or --position"),
    };
    let then = match as_of {
        AsOf::Position(position) => format!("position {position}"),
        AsOf::Time(at) => rfc3339(at),
    };
    let access = match &args.source.addr {
        Some(addr) => runtime()?.block_on(async {
            let mut client = args.source.audit_client(addr, bearer.clone()).await?;
            client
                .access_as_of(&image, as_of)
                .await
                .map_err(Failure::from)
        })?,
        None => {
            let store = open_store(&args.source.data)?;
            let head = store.head()?.position;
            audit::access_as_of(store.as_ref(), &image, as_of, head)?
        }
    };
    if args.json {
        println!("{}", serde_json::to_string(&access)?);
        return Ok(());
    }
    let Some(region) = access.region.as_deref() else {
        println!(
            "image {} did not exist as of {then}: nobody could use it",
            access.image_id
        );
        return Ok(());
    };
    println!(
        "image {} in {region} as of {then} (last record {})",
        access.image_id, access.position
    );
    if access.accounts.is_empty() {
        println!(
            "nobody could use it: {}",
            access.reason.as_deref().unwrap_or("unknown")
        );
        return Ok(());
    }
    for entry in &access.accounts {
        let since = match entry.until {
            Some(until) => format!("{} until {}", rfc3339(entry.since), rfc3339(until)),
            None => rfc3339(entry.since),
        };
        let (role, uses) = match entry.role {
            audit::Role::Owner => ("owner", "create, reinstall, export"),
            audit::Role::Recipient => ("recipient", "create, reinstall"),
        };
        println!("  {:<20} {role} since {since}: {uses}", entry.account_id);
    }
    if access.lighthouse_shared {
        println!("  Lighthouse of the owner's account could use it too");
    }
    for account in &access.untrusted_recipients {
        println!("  {account:<20} shared with, but could not use it: it enforced trusted owners without the owner");
    }
    if access.deprecated {
        println!("  (deprecated: it could not be shared or copied)");
    }
    Ok(())
}

fn head(args: HeadArgs, file: &FileSettings) -> anyhow::Result<()> {
    let bearer = args.source.bearer()?;
    let json = match &args.source.addr {
        Some(addr) => runtime()?.block_on(async {
            let mut client = args.source.audit_client(addr, bearer.clone()).await?;
            client.signed_head_json().await.map_err(Failure::from)
        })?,
        None => {
            let data_dir = &args.source.data.data_dir;
            let store = open_store(&args.source.data)?;
            let key = match seed_from_environment(file)? {
                Some(key) => key,
                None => LedgerKey::load(
                    &args
                        .signing_key
                        .unwrap_or_else(|| LedgerKey::default_path(data_dir)),
                )?,
            };
            serde_json::to_string(&key.sign_store_head(store.as_ref())?)?
        }
    };
    println!("{json}");
    Ok(())
}

/// The key whose seed `IMAGE_LEDGER_SIGNING_KEY_SEED` (or the config
/// file's `signing_key_seed`) holds, as `serve` reads it, if one does.
fn seed_from_environment(file: &FileSettings) -> anyhow::Result<Option<LedgerKey>> {
    match file.signing_key_seed() {
        Some(seed) => Ok(Some(LedgerKey::from_seed_hex(&seed)?)),
        None => Ok(None),
    }
}
