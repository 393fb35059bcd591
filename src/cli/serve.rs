//! `image-ledger serve`: the server in the foreground until SIGINT or SIGTERM.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use image_ledger::config::{Config, Secret};

/// The environment variable that carries the signing key's seed.
pub const SEED_VARIABLE: &str = "IMAGE_LEDGER_SIGNING_KEY_SEED";

use super::{runtime, DataDirArg, PolicyArgs};

/// `serve`
#[derive(Args)]
pub struct ServeArgs {
    /// Address to listen on.
    #[arg(long, env = "IMAGE_LEDGER_ADDR", default_value = "127.0.0.1:50051")]
    pub addr: SocketAddr,
    #[command(flatten)]
    pub data: DataDirArg,
    #[command(flatten)]
    pub policy: PolicyArgs,
    /// sled page cache size in MiB.
    #[arg(long, env = "IMAGE_LEDGER_CACHE_MB", default_value_t = image_ledger::config::DEFAULT_CACHE_MB)]
    pub cache_mb: u64,
    /// Encoded DescribeImages replies kept for reuse while the listings
    /// they show are unchanged, MiB; 0 turns the page cache off.
    #[arg(long, env = "IMAGE_LEDGER_PAGE_CACHE_MB", default_value_t = image_ledger::config::DEFAULT_PAGE_CACHE_MB)]
    pub page_cache_mb: u64,
    /// Seconds a stopping server waits for clients to close their connections.
    #[arg(long, env = "IMAGE_LEDGER_SHUTDOWN_GRACE_SECS", default_value_t = 10)]
    pub shutdown_grace_secs: u64,
    /// Milliseconds a stopping server keeps serving after its health turned
    /// NOT_SERVING, so load balancers drain it first (match their health
    /// check interval).
    #[arg(long, env = "IMAGE_LEDGER_SHUTDOWN_DRAIN_MS", default_value_t = 0)]
    pub shutdown_drain_ms: u64,
    /// Longest a durable change waits before the stored read side is
    /// written, ms: what a start after a crash replays at most (with a cap
    /// of 131,072 events). Lower means more writes, and fewer merged.
    #[arg(long, env = "IMAGE_LEDGER_READ_SIDE_DELAY_MS", default_value_t = image_ledger::config::DEFAULT_READ_SIDE_DELAY_MS)]
    pub read_side_delay_ms: u64,
    /// Ed25519 key file (64 hex characters) that signs heads; default
    /// `ledger-signing.key` in the data directory, created on first start.
    /// IMAGE_LEDGER_SIGNING_KEY_SEED (the 64 hex characters themselves, never
    /// a flag) takes its place: one key for every replica of a deployment.
    #[arg(long, env = "IMAGE_LEDGER_SIGNING_KEY")]
    pub signing_key: Option<PathBuf>,
    /// Serve Prometheus metrics on this address (`GET /metrics`); off
    /// unless set.
    #[arg(long, env = "IMAGE_LEDGER_METRICS_ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    /// Serve a non-loopback address without authentication: anyone who
    /// reaches the port can act as any account. Logged at every start.
    #[arg(long, env = "IMAGE_LEDGER_INSECURE_NO_AUTH")]
    pub insecure_no_auth: bool,
    /// Most connections open at once (lowered to fit the open-file limit);
    /// more wait in the kernel's backlog.
    #[arg(long, env = "IMAGE_LEDGER_MAX_CONNECTIONS", default_value_t = image_ledger::config::DEFAULT_MAX_CONNECTIONS)]
    pub max_connections: usize,
    /// Most Subscribe streams open at once; more get RESOURCE_EXHAUSTED.
    #[arg(long, env = "IMAGE_LEDGER_MAX_SUBSCRIPTIONS", default_value_t = image_ledger::config::DEFAULT_MAX_SUBSCRIPTIONS)]
    pub max_subscriptions: usize,
    /// Most Subscribe streams open on one connection.
    #[arg(long, env = "IMAGE_LEDGER_MAX_SUBSCRIPTIONS_PER_CONNECTION", default_value_t = image_ledger::config::DEFAULT_MAX_SUBSCRIPTIONS_PER_CONNECTION)]
    pub max_subscriptions_per_connection: usize,
    /// Records per second the background scrub reads the log at, checking
    /// every hash and link, pass after pass (0: no scrub).
    #[arg(long, env = "IMAGE_LEDGER_SCRUB_RATE", default_value_t = image_ledger::config::DEFAULT_SCRUB_RATE)]
    pub scrub_rate: u64,
    /// Make a new signing key although the ledger has history and its key
    /// is missing (a lost key): heads are signed with the new one from now on.
    #[arg(long)]
    pub new_signing_key: bool,
}

/// Runs the server until a signal asks it to stop.
pub fn serve(args: ServeArgs) -> anyhow::Result<()> {
    let config = Config {
        addr: args.addr,
        database_url: args.data.database_url.clone(),
        data_dir: args.data.data_dir.clone(),
        policy: args.policy.policy()?,
        cache_bytes: args.cache_mb.saturating_mul(1024 * 1024),
        page_cache_bytes: args.page_cache_mb.saturating_mul(1024 * 1024),
        shutdown_grace: std::time::Duration::from_secs(args.shutdown_grace_secs),
        shutdown_drain: std::time::Duration::from_millis(args.shutdown_drain_ms),
        signing_key: args.signing_key,
        signing_key_seed: super::signing_key_seed().map(Secret),
        read_side_delay: std::time::Duration::from_millis(args.read_side_delay_ms),
        metrics_addr: args.metrics_addr,
        auth: match super::file_auth() {
            Some(table) => Some(std::sync::Arc::new(
                image_ledger::auth::Authenticator::new(table)
                    .context("the config file's [auth] table")?,
            )),
            None => None,
        },
        insecure_no_auth: args.insecure_no_auth,
        tls: super::tls_settings(),
        new_signing_key: args.new_signing_key,
        max_connections: args.max_connections,
        max_subscriptions: args.max_subscriptions,
        max_subscriptions_per_connection: args.max_subscriptions_per_connection,
        scrub_rate: args.scrub_rate,
    };
    let store = match &args.data.database_url {
        Some(_) => args.data.describe(),
        None => format!("data directory {}", args.data.describe()),
    };
    runtime()?.block_on(async move {
        let mut server = image_ledger::server::start(config)
            .await
            .with_context(|| format!("cannot start the server on {store}"))?;
        let stop_asked = shutdown_signal();
        // A plain line on stdout for scripts that start the server on port 0.
        println!("listening on {}", server.local_addr());
        if let Some(addr) = server.metrics_addr() {
            tracing::info!(%addr, "serving metrics at /metrics");
        }
        std::io::stdout().flush().ok();
        if let Some(tls) = server.tls() {
            tokio::spawn(reload_on_hangup(tls));
        }
        let stop = server.take_stop();
        let serving = tokio::spawn(server.wait());
        stop_asked.await;
        tracing::info!("shutting down: finishing in-flight calls");
        drop(stop);
        serving.await.context("the server task failed")??;
        Ok(())
    })
}

/// Reloads the TLS files at every SIGHUP; a reload that fails keeps the
/// files in use and says why.
async fn reload_on_hangup(tls: std::sync::Arc<image_ledger::tls::Tls>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let mut hangups = match signal(SignalKind::hangup()) {
            Ok(hangups) => hangups,
            Err(err) => {
                tracing::error!(%err, "cannot listen for SIGHUP; the TLS files will not be reloaded");
                return;
            }
        };
        while hangups.recv().await.is_some() {
            match tls.reload() {
                Ok(()) => tracing::info!("reloaded the TLS certificates and key"),
                Err(err) => {
                    tracing::error!(%err, "cannot reload the TLS files; keeping the certificates in use")
                }
            }
        }
    }
    #[cfg(not(unix))]
    let _ = tls;
}

/// Listens for SIGINT and SIGTERM from the moment it is made: made before
/// the server says it listens, so a stop asked right after that is a clean
/// stop, not the signal's default (the process killed).
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let interrupt = signal(SignalKind::interrupt());
        let terminate = signal(SignalKind::terminate());
        async move {
            let (mut interrupt, mut terminate) = match (interrupt, terminate) {
                (Ok(interrupt), Ok(terminate)) => (interrupt, terminate),
                (Err(err), _) | (_, Err(err)) => {
                    tracing::error!(%err, "cannot listen for SIGINT and SIGTERM");
                    return std::future::pending::<()>().await;
                }
            };
            tokio::select! {
                _ = interrupt.recv() => {}
                _ = terminate.recv() => {}
            }
        }
    }
    #[cfg(not(unix))]
    async {
        if let Err(err) = tokio::signal::ctrl_c().await {
            tracing::error!(%err, "cannot listen for Ctrl-C");
            std::future::pending::<()>().await;
        }
    }
}
