//! Wiring: the store, the ledger and the gRPC server with health and
//! reflection, started and stopped as one. [`start`] opens the ledger
//! ([`open`]), builds the routes ([`router`]) and serves them
//! ([`serve`]); a failure part way stops what it had opened.

mod cloud;
mod http2;
mod open;
mod router;
mod serve;

use std::net::SocketAddr;
use std::sync::Arc;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::{AppError, Ledger};
use crate::audit::AuditError;
use crate::config::Config;
use crate::metrics::Metrics;
use crate::store::{Released, StoreError};

/// Why a server could not start or stopped with an error.
#[derive(Debug, Error)]
pub enum ServeError {
    /// The data directory could not be opened or loaded.
    #[error("cannot open the ledger")]
    Open(#[from] AppError),
    /// The signing key could not be loaded or created.
    #[error("cannot load the signing key: {0}")]
    Key(#[from] AuditError),
    /// The address could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why it failed.
        source: std::io::Error,
    },
    /// The ledger has history but its signing key is missing.
    #[error(
        "the signing key {0} is missing but the ledger is not empty: restore the key file \
         (or give IMAGE_LEDGER_SIGNING_KEY_SEED), or pass --new-signing-key to sign with a new \
         key from now on (heads signed before still verify with audit verify --head-key)"
    )]
    KeyMissing(std::path::PathBuf),
    /// The TLS files cannot be used.
    #[error("cannot set up TLS: {0}")]
    Tls(crate::tls::TlsError),
    /// A non-loopback address without authentication.
    #[error(
        "refusing to serve {0} without authentication: anyone who reaches it could act as any \
         account. Add an [auth] table to the config file (README, \"Securing it\"), serve on \
         127.0.0.1, or pass --insecure-no-auth to accept the risk"
    )]
    Unprotected(SocketAddr),
    /// Bearer tokens on a non-loopback address without TLS.
    #[error(
        "refusing to take bearer tokens on {0}: they would cross the network in plaintext. \
         Configure [tls] (README, \"Securing it\"), or serve on a loopback address"
    )]
    PlaintextTokens(SocketAddr),
    /// The cloud API door off loopback without TLS.
    #[error(
        "refusing to serve the cloud API on {0} without TLS: its requests and answers would \
         cross the network in plaintext. Configure [tls] (README, \"Securing it\"), or serve it \
         on a loopback address"
    )]
    PlaintextCloudApi(SocketAddr),
    /// The cloud API door without a key to check signatures with.
    #[error(
        "--cloud-api-addr is set but the config file lists no [[cloud_api.keys]]: every request \
         would be refused. Make a key with `image-ledger auth new-cloud-key --account ACCOUNT`"
    )]
    NoCloudKeys,
    /// The limits the server was started with would make the recorded
    /// history unlawful.
    #[error("cannot start with these limits: {0}")]
    Limits(String),
    /// The reflection service could not be built from the descriptors.
    #[error("cannot build the reflection service: {0}")]
    Reflection(String),
    /// A task of the server panicked or was cancelled.
    #[error("{0}")]
    Task(String),
}

impl From<StoreError> for ServeError {
    fn from(err: StoreError) -> Self {
        ServeError::Open(AppError::Storage(err))
    }
}

/// A server that is accepting calls.
pub struct RunningServer {
    addr: SocketAddr,
    metrics_addr: Option<SocketAddr>,
    cloud_api_addr: Option<SocketAddr>,
    tls: Option<Arc<crate::tls::Tls>>,
    stop: Option<watch::Sender<bool>>,
    task: JoinHandle<Result<(), ServeError>>,
}

impl RunningServer {
    /// The address it listens on (with the real port when port 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// A handle that reloads the TLS files, when the server speaks TLS.
    pub fn tls(&self) -> Option<Arc<crate::tls::Tls>> {
        self.tls.clone()
    }

    /// The address the cloud API door listens on, if it does.
    pub fn cloud_api_addr(&self) -> Option<SocketAddr> {
        self.cloud_api_addr
    }

    /// The address metrics are served on, if they are.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Stops taking calls, lets in-flight calls finish, flushes and closes the store.
    pub async fn stop(mut self) -> Result<(), ServeError> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        self.wait().await
    }

    /// Waits until the server stops on its own (after [`Self::stop`] or a failure).
    pub async fn wait(self) -> Result<(), ServeError> {
        match self.task.await {
            Ok(result) => result,
            Err(err) => Err(ServeError::Task(format!("the server task failed: {err}"))),
        }
    }

    /// A handle that stops the server when it sends `true` or is dropped.
    pub fn take_stop(&mut self) -> Option<watch::Sender<bool>> {
        self.stop.take()
    }
}

/// Opens the store `config.store` names, loads the ledger and starts
/// serving on `config.server.addr`.
pub async fn start(config: Config) -> Result<RunningServer, ServeError> {
    start_on(config, None).await
}

/// [`start`], on `listener` when one is given (a test binds its own
/// port and knows its address without reading it back).
pub async fn start_on(
    config: Config,
    listener: Option<TcpListener>,
) -> Result<RunningServer, ServeError> {
    protection(&config)?;
    cloud::protection(&config)?;
    // Bound before the store is opened: a port in use creates nothing.
    let listener = match listener {
        Some(listener) => listener,
        None => serve::bind(config.server.addr).await?.0,
    };
    let metrics_listener = match config.server.metrics_addr {
        Some(addr) => Some(serve::bind(addr).await?),
        None => None,
    };
    let metrics = Arc::new(Metrics::new());
    let open::Opened {
        ledger,
        key,
        released,
    } = open::open_ledger(&config, &metrics).await?;
    let (stop, stopped) = watch::channel(false);
    // Every failure from here on stops the ledger it opened, in one place.
    let listeners = (listener, metrics_listener);
    let prepared = match prepare(&config, &ledger, key, &metrics, listeners, &stopped).await {
        Ok(prepared) => prepared,
        Err(err) => {
            stop_ledger(ledger, released).await;
            return Err(err);
        }
    };
    let addr = prepared.addr;
    let cloud_api_addr = prepared.cloud.as_ref().map(|(addr, _)| *addr);
    let task = tokio::spawn(
        serve::Serving {
            routes: prepared.served.routes,
            health: prepared.served.health,
            listener: prepared.listener,
            places: prepared.places,
            tls: prepared.tls.clone(),
            cloud: prepared.cloud.map(|(_, serving)| serving),
            ledger,
            released,
            metrics,
            stopped,
        }
        .run(config),
    );
    tracing::info!(%addr, "serving");
    Ok(RunningServer {
        addr,
        metrics_addr: prepared.metrics_addr,
        cloud_api_addr,
        tls: prepared.tls,
        stop: Some(stop),
        task,
    })
}

/// What serving needs besides the ledger, made before anything is served.
struct Prepared {
    listener: TcpListener,
    addr: SocketAddr,
    tls: Option<Arc<crate::tls::Tls>>,
    metrics_addr: Option<SocketAddr>,
    cloud: Option<(SocketAddr, crate::cloud::Serving)>,
    /// One connection cap for both ports.
    places: crate::listener::Places,
    served: router::Served,
}

/// Binds (unless `listener` was bound already), loads the TLS files,
/// starts the metrics endpoint and builds the routes.
/// Records the limits the server was started with when they are not the
/// log's: the rules from here on are decided under them, and an audit
/// reads them from the log.
async fn record_limits(ledger: &Ledger) -> Result<(), ServeError> {
    match ledger.record_limits().await {
        Ok(Some((position, limits))) => {
            tracing::info!(
                position,
                max_shares_per_image = limits.max_shares_per_image,
                max_accounts_per_call = limits.max_accounts_per_call,
                image_quota = limits.image_quota,
                token_retention_ms = limits.token_retention_ms,
                regions = limits.regions.len(),
                "recorded the ledger's limits: they differ from those the log last recorded (or it recorded none)"
            );
            Ok(())
        }
        Ok(None) => Ok(()),
        Err(AppError::Domain(refusal)) => Err(ServeError::Limits(refusal.to_string())),
        Err(err) => Err(ServeError::Open(err)),
    }
}

async fn prepare(
    config: &Config,
    ledger: &Ledger,
    key: crate::audit::LedgerKey,
    metrics: &Arc<Metrics>,
    (listener, metrics_listener): (TcpListener, Option<(TcpListener, SocketAddr)>),
    stopped: &watch::Receiver<bool>,
) -> Result<Prepared, ServeError> {
    record_limits(ledger).await?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: config.server.addr,
        source,
    })?;
    let tls = match &config.tls {
        Some(settings) => Some(crate::tls::Tls::load(settings.clone()).map_err(ServeError::Tls)?),
        None => None,
    };
    if let Some(tls) = &tls {
        let cert = tls.cert_path().display().to_string();
        let gauge = metrics
            .tls_expiry
            .get_or_create(&crate::metrics::CertificateLabel { cert })
            .clone();
        tls.report_expiry(gauge);
    }
    let metrics_addr = serve_metrics(metrics_listener, metrics, ledger, stopped.clone());
    let places = crate::listener::Places::new(
        config.server.max_connections,
        config.server.max_connections_per_peer,
        metrics.connections.clone(),
    );
    let cloud = cloud::prepare(config, ledger, metrics, tls.clone(), &places).await?;
    let served = router::router(&config.server, ledger, key, metrics, stopped.clone()).await?;
    Ok(Prepared {
        listener,
        addr,
        tls,
        metrics_addr,
        cloud,
        places,
        served,
    })
}

/// Serves Prometheus metrics on `listener` (`--metrics-addr`'s), if set,
/// and returns its address.
fn serve_metrics(
    listener: Option<(TcpListener, SocketAddr)>,
    metrics: &Arc<Metrics>,
    ledger: &Ledger,
    stopped: watch::Receiver<bool>,
) -> Option<SocketAddr> {
    let (listener, bound) = listener?;
    let gauges = ledger.clone();
    tokio::spawn(crate::metrics::http::serve(
        listener,
        Arc::clone(metrics),
        Arc::new(move || crate::metrics::Readings {
            durable_head: gauges.durable_head().position,
            queue_depth: gauges.queue_depth(),
            serving: gauges.condition().borrow().serving(),
        }),
        stopped,
    ));
    Some(bound)
}

/// Stops the writer (flushing and closing the log), then waits for the
/// store's directory to be released.
async fn stop_ledger(ledger: Ledger, released: Option<Released>) {
    if tokio::task::spawn_blocking(move || ledger.shutdown())
        .await
        .is_err()
    {
        tracing::error!("stopping the writer failed");
    }
    if let Some(released) = released {
        serve::released(released).await;
    }
}

/// Whether `addr` reaches only this machine (`::ffff:127.0.0.1` too).
pub fn is_loopback(addr: &SocketAddr) -> bool {
    match addr.ip() {
        std::net::IpAddr::V4(ip) => ip.is_loopback(),
        std::net::IpAddr::V6(ip) => {
            ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|ip| ip.is_loopback())
        }
    }
}

/// Safe by default: no open server off loopback unless asked for, and no
/// bearer tokens in plaintext off loopback.
fn protection(config: &Config) -> Result<(), ServeError> {
    let addr = config.server.addr;
    let local = is_loopback(&addr);
    match (&config.auth, local) {
        (Some(_), true) => Ok(()),
        (Some(_), false) if config.tls.is_some() => Ok(()),
        (Some(_), false) => Err(ServeError::PlaintextTokens(addr)),
        (None, true) => {
            tracing::info!(%addr, "no [auth] configured: every local caller may call everything");
            Ok(())
        }
        (None, false) if config.server.insecure_no_auth => {
            tracing::warn!(%addr, "--insecure-no-auth: anyone who reaches this address may act as any account");
            Ok(())
        }
        (None, false) => Err(ServeError::Unprotected(addr)),
    }
}
