//! `image-ledger serve`: the server in the foreground until SIGINT or SIGTERM.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Args;
use image_ledger::app::LedgerSettings;
use image_ledger::auth::CloudKeys;
use image_ledger::config::{Config, Secret, ServerSettings};
use image_ledger::store::Location;

use super::notify::Notifier;
use super::{runtime, FileSettings, PolicyArgs};

/// `serve`: every flag is a field of the section that uses it.
#[derive(Args)]
pub struct ServeArgs {
    #[command(flatten)]
    pub server: ServerSettings,
    #[command(flatten)]
    pub store: Location,
    #[command(flatten)]
    pub policy: PolicyArgs,
    #[command(flatten)]
    pub ledger: LedgerSettings,
}

/// Runs the server until a signal asks it to stop.
pub fn serve(args: ServeArgs, file: &FileSettings) -> anyhow::Result<()> {
    let config = Config {
        server: args.server,
        store: args.store,
        policy: args.policy.policy()?,
        ledger: args.ledger,
        signing_key_seed: file.signing_key_seed().map(Secret),
        auth: match &file.auth {
            Some(table) => Some(Arc::new(
                image_ledger::auth::Authenticator::new(table)
                    .context("the config file's [auth] table")?,
            )),
            None => None,
        },
        tls: file.tls_settings(),
        cloud_keys: Arc::new(CloudKeys::new(file.cloud_keys()?)),
    };
    let (security, authentication) = security(&config);
    warn_of_client_addr(config.server.addr);
    let keys = Arc::clone(&config.cloud_keys);
    let file_path = file.path.clone();
    let store = config.store.describe();
    let notifier = Notifier::from_env();
    runtime()?.block_on(async move {
        notifier.status(&format!("opening {store} and loading the ledger"));
        let mut server = image_ledger::server::start(config)
            .await
            .map_err(|err| start_failure(err, &store))?;
        let stop_asked = shutdown_signal();
        let serving_status = match server.cloud_api_addr() {
            Some(door) => format!(
                "serving gRPC on {} and the cloud API on {door}",
                server.local_addr()
            ),
            None => format!("serving gRPC on {}", server.local_addr()),
        };
        // Listening for SIGHUP from before the server says it listens: a
        // reload asked right after that (systemd's ExecReload, a script)
        // must reload, not end the process as SIGHUP's default does.
        let reloads = reload_on_hangup(
            server.tls(),
            keys,
            file_path,
            (notifier, serving_status.clone()),
        );
        tracing::info!(
            addr = %server.local_addr(),
            transport = security,
            authentication,
            "serving gRPC"
        );
        // A plain line on stdout for scripts that start the server on port 0.
        println!("listening on {}", server.local_addr());
        if let Some(addr) = server.cloud_api_addr() {
            println!("cloud api listening on {addr}");
        }
        notifier.ready(&serving_status);
        if let Some(watchdog) = notifier.watchdog() {
            tokio::spawn(watchdog);
        }
        if let Some(addr) = server.metrics_addr() {
            tracing::info!(%addr, "serving metrics at /metrics");
        }
        std::io::stdout().flush().ok();
        tokio::spawn(reloads);
        let stop = server.take_stop();
        let serving = tokio::spawn(server.wait());
        stop_asked.await;
        notifier.stopping();
        tracing::info!("shutting down: finishing in-flight calls");
        drop(stop);
        serving.await.context("the server task failed")??;
        Ok(())
    })
}

/// What a client must bring, said at start: the transport and the
/// authentication.
fn security(config: &Config) -> (&'static str, &'static str) {
    let transport = match &config.tls {
        None => "plaintext",
        Some(tls) if tls.client_ca.is_some() => "TLS, client certificates checked",
        Some(_) => "TLS",
    };
    let authentication = if config.auth.is_some() {
        "tokens and roles ([auth])"
    } else {
        "none"
    };
    (transport, authentication)
}

/// IMAGE_LEDGER_ADDR is the clients' variable (once serve's too): says it
/// is not read here.
fn warn_of_client_addr(listen: std::net::SocketAddr) {
    if let Ok(client_addr) = std::env::var("IMAGE_LEDGER_ADDR") {
        if std::env::var_os("IMAGE_LEDGER_LISTEN").is_none() {
            tracing::warn!(
                IMAGE_LEDGER_ADDR = %client_addr,
                %listen,
                "IMAGE_LEDGER_ADDR is where clients connect; serve listens on --addr or IMAGE_LEDGER_LISTEN"
            );
        }
    }
}

/// A start that failed, named by what failed: only what the store did
/// names the data directory (a port in use or a TLS file is not its fault).
fn start_failure(err: image_ledger::server::ServeError, store: &str) -> anyhow::Error {
    use image_ledger::server::ServeError;
    let about_store = matches!(
        err,
        ServeError::Open(_)
            | ServeError::Key(_)
            | ServeError::KeyMissing(_)
            | ServeError::Limits(_)
    );
    let err = anyhow::Error::new(err);
    if about_store {
        err.context(format!("cannot start the server on {store}"))
    } else {
        err.context("cannot start the server")
    }
}

/// Listens for SIGHUP from the moment it is called, and returns the task
/// that reloads the TLS files and the cloud API keys at each one; a reload
/// that fails keeps what is in use and says why.
/// The service manager is told of each reload, then of serving again
/// with `status`.
fn reload_on_hangup(
    tls: Option<Arc<image_ledger::tls::Tls>>,
    keys: Arc<CloudKeys>,
    file: Option<PathBuf>,
    told: (Notifier, String),
) -> impl std::future::Future<Output = ()> {
    #[cfg(unix)]
    let hangups = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup());
    async move {
        #[cfg(unix)]
        reload_at_each(hangups, tls, keys, file, told).await;
        #[cfg(not(unix))]
        let _ = (tls, keys, file, told);
    }
}

#[cfg(unix)]
async fn reload_at_each(
    hangups: std::io::Result<tokio::signal::unix::Signal>,
    tls: Option<Arc<image_ledger::tls::Tls>>,
    keys: Arc<CloudKeys>,
    file: Option<PathBuf>,
    (notifier, status): (Notifier, String),
) {
    let mut hangups = match hangups {
        Ok(hangups) => hangups,
        Err(err) => {
            tracing::error!(%err, "cannot listen for SIGHUP; nothing will be reloaded");
            return;
        }
    };
    while hangups.recv().await.is_some() {
        notifier.reloading();
        if let Some(tls) = &tls {
            match tls.reload() {
                Ok(()) => tracing::info!("reloaded the TLS certificates and key"),
                Err(err) => {
                    tracing::error!(%err, "cannot reload the TLS files; keeping the certificates in use")
                }
            }
        }
        if let Some(path) = &file {
            match reload_keys(path) {
                Ok(table) => {
                    let count = table.len();
                    keys.replace(table);
                    tracing::info!(keys = count, "reloaded the cloud API keys");
                }
                Err(err) => {
                    tracing::error!(
                        err = format!("{err:#}"),
                        "cannot reload the cloud API keys; keeping the keys in use"
                    )
                }
            }
        }
        // A reload that failed keeps what was in use: serving goes on.
        notifier.ready(&status);
    }
}

/// The config file's `[[cloud_api.keys]]`, read again.
fn reload_keys(path: &std::path::Path) -> anyhow::Result<image_ledger::auth::KeyTable> {
    let file = FileSettings {
        cloud_api: super::config_file::cloud_api_of(path)?,
        path: Some(path.to_owned()),
        ..FileSettings::default()
    };
    file.cloud_keys()
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
