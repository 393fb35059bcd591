//! `image-ledger serve`: the server in the foreground until SIGINT or SIGTERM.

use std::io::Write;

use anyhow::Context;
use clap::Args;
use image_ledger::app::LedgerSettings;
use image_ledger::config::{Config, Secret, ServerSettings};
use image_ledger::store::Location;

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
            Some(table) => Some(std::sync::Arc::new(
                image_ledger::auth::Authenticator::new(table)
                    .context("the config file's [auth] table")?,
            )),
            None => None,
        },
        tls: file.tls_settings(),
    };
    let store = config.store.describe();
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
