//! Wiring: the store, the ledger and the gRPC server with health and
//! reflection, started and stopped as one.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tower::util::MapResponseLayer;

use crate::app::{AppError, Ledger, WriterOptions};
use crate::audit::{AuditError, LedgerKey};
use crate::config::Config;
use crate::grpc::pb::audit_log_server::AuditLogServer;
use crate::grpc::pb::image_ledger_server::ImageLedgerServer;
use crate::grpc::{
    pb, AuditService, LedgerService, PageCache, SmallFrames, Subscriptions, Unvectored,
};
use crate::metrics::Metrics;
use crate::store::{PgStore, SledStore, Store, StoreError};

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
    #[error("cannot listen on {addr}: {source}")]
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
    /// The reflection service could not be built from the descriptors.
    #[error("cannot build the reflection service: {0}")]
    Reflection(String),
    /// A task of the server panicked or was cancelled.
    #[error("{0}")]
    Task(String),
    /// The transport failed while serving.
    #[error("the gRPC server failed: {0}")]
    Transport(#[from] tonic::transport::Error),
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

/// Opens the store (the database at `config.database_url`, or the sled
/// store in `config.data_dir`), loads the ledger and starts serving.
pub async fn start(config: Config) -> Result<RunningServer, ServeError> {
    protection(&config)?;
    let data_dir = config.data_dir.clone();
    let cache = config.cache_bytes;
    let policy = config.policy.clone();
    let metrics = Arc::new(Metrics::new());
    let writer = WriterOptions {
        read_side_delay: config.read_side_delay,
        scrub_rate: config.scrub_rate,
        metrics: Arc::clone(&metrics.ledger),
        ..WriterOptions::default()
    };
    // Opening and loading read the disk; keep that off the async workers.
    let key_path = config
        .signing_key
        .clone()
        .unwrap_or_else(|| LedgerKey::default_path(&config.data_dir));
    let database_url = config.database_url.clone();
    let seed = config.signing_key_seed.clone();
    let new_key = config.new_signing_key;
    let (ledger, key, released) = tokio::task::spawn_blocking(move || -> Result<_, ServeError> {
        let (store, released): (Arc<dyn Store>, _) = match &database_url {
            Some(url) => (Arc::new(PgStore::open(url)?), None),
            None => {
                let store = Arc::new(SledStore::open(&data_dir, cache)?);
                let released = store.released();
                (store, Some(released))
            }
        };
        let key = match &seed {
            Some(seed) => LedgerKey::from_seed_hex(&seed.0)?,
            None => {
                // A ledger with history has a key already: a missing one was
                // lost, and a new one would sign heads nobody pinned.
                if !key_path.exists() && store.head()?.position > 0 && !new_key {
                    return Err(ServeError::KeyMissing(key_path));
                }
                LedgerKey::load_or_create(&key_path)?
            }
        };
        Ok((Ledger::open(store, policy, writer)?, key, released))
    })
    .await
    .map_err(|e| ServeError::Task(format!("the loading task failed: {e}")))??;

    let listener = match TcpListener::bind(config.addr).await {
        Ok(listener) => listener,
        Err(source) => {
            stop_ledger(ledger).await;
            return Err(ServeError::Bind {
                addr: config.addr,
                source,
            });
        }
    };
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: config.addr,
        source,
    })?;

    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<ImageLedgerServer<LedgerService>>()
        .await;
    health.set_serving::<AuditLogServer<AuditService>>().await;
    let (stop, stopped) = watch::channel(false);
    let metrics_addr = match config.metrics_addr {
        Some(addr) => {
            let listener = match TcpListener::bind(addr).await {
                Ok(listener) => listener,
                Err(source) => {
                    stop_ledger(ledger).await;
                    return Err(ServeError::Bind { addr, source });
                }
            };
            let bound = listener
                .local_addr()
                .map_err(|source| ServeError::Bind { addr, source })?;
            let gauges = ledger.clone();
            tokio::spawn(crate::metrics::http::serve(
                listener,
                Arc::clone(&metrics),
                Arc::new(move || crate::metrics::Readings {
                    durable_head: gauges.durable_head().position,
                    queue_depth: gauges.queue_depth(),
                }),
                stopped.clone(),
            ));
            Some(bound)
        }
        None => None,
    };
    tokio::spawn(report_condition(
        ledger.condition(),
        health.clone(),
        stopped.clone(),
    ));
    // Both versions: grpcurl before 1.8.8 and grpcio-reflection ask for
    // v1alpha only, newer tools for v1.
    // Each lists both, so either version shows every service served.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            // google.rpc.ErrorInfo and its kin, so tools show the reason
            // code of a refusal instead of raw bytes.
            .register_encoded_file_descriptor_set(tonic_types::pb::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(
                tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET,
            )
            .include_reflection_service(false)
    };
    let reflection_v1 = reflection()
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let reflection_v1alpha = reflection()
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;

    let auth = config.auth.clone();
    let grace = config.shutdown_grace;
    let drain = config.shutdown_drain;
    let service = ImageLedgerServer::new(LedgerService::new(
        ledger.clone(),
        PageCache::new(config.page_cache_bytes).counting(Arc::clone(&metrics.ledger)),
    ));
    let audit = AuditLogServer::new(AuditService::new(
        ledger.clone(),
        Arc::new(key),
        stopped.clone(),
        Subscriptions::new(
            config.max_subscriptions,
            config.max_subscriptions_per_connection,
            Arc::clone(&metrics.ledger),
        ),
    ));
    let tls = match &config.tls {
        Some(settings) => match crate::tls::Tls::load(settings.clone()) {
            Ok(tls) => Some(tls),
            Err(err) => {
                stop_ledger(ledger).await;
                return Err(ServeError::Tls(err));
            }
        },
        None => None,
    };
    let tls_handle = tls.clone();
    let cap = crate::listener::connection_cap(config.max_connections);
    let task = tokio::spawn(async move {
        let router = tonic::transport::Server::builder()
            // A peer that stops answering pings is closed, whatever it holds.
            .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
            .http2_keepalive_timeout(Some(KEEPALIVE_TIMEOUT))
            .max_concurrent_streams(Some(MAX_STREAMS_PER_CONNECTION))
            .layer(crate::metrics::grpc::Layer::new(metrics.grpc.clone()))
            .layer(MapResponseLayer::new(
                |response: http::Response<tonic::body::Body>| response.map(SmallFrames::new),
            ))
            .layer(crate::grpc::authenticate::Layer::new(auth))
            .add_service(health_service)
            .add_service(reflection_v1)
            .add_service(reflection_v1alpha)
            .add_service(service)
            .add_service(audit);
        let until = draining(stopped.clone(), health, drain);
        let serving: std::pin::Pin<Box<dyn std::future::Future<Output = _> + Send>> = match tls {
            Some(tls) => Box::pin(router.serve_with_incoming_shutdown(
                crate::tls::incoming(crate::listener::accept(listener, cap), tls),
                until,
            )),
            None => Box::pin(router.serve_with_incoming_shutdown(
                ReceiverStream::new(crate::listener::accept(listener, cap)).map(|accepted| {
                    Ok::<_, std::io::Error>(Unvectored::new(accepted.stream, accepted.permit))
                }),
                until,
            )),
        };
        // Graceful shutdown waits for every client to close its connection;
        // one that never does must not keep the process alive forever.
        let served = tokio::select! {
            served = serving => served,
            () = async {
                stop_requested(stopped).await;
                tokio::time::sleep(drain + grace).await;
            } => {
                tracing::warn!(?grace, "connections still open after the grace period; closing them");
                Ok(())
            }
        };
        // No call is running any more; drain the writer so the log is flushed and closed.
        stop_ledger(ledger).await;
        // Connection tasks may drop their handles on the ledger a moment after
        // the transport returns; a stopped server has released its data
        // directory once the last of them is gone.
        if let Some(released) = released {
            let closed = tokio::task::spawn_blocking(move || released.wait(RELEASE_PATIENCE)).await;
            if !matches!(closed, Ok(true)) {
                tracing::warn!("the store is still referenced after the stop");
            }
        }
        tracing::info!("stopped");
        served.map_err(ServeError::from)
    });
    tracing::info!(%addr, "serving");
    Ok(RunningServer {
        addr,
        metrics_addr,
        tls: tls_handle,
        stop: Some(stop),
        task,
    })
}

/// How often an idle connection is pinged, and how long an answer may take.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(10);
/// Calls open at once on one connection.
const MAX_STREAMS_PER_CONNECTION: u32 = 1_024;

/// How long a stopped server waits for the last handle on its store.
const RELEASE_PATIENCE: Duration = Duration::from_secs(5);

/// Resolves when the server should stop accepting calls: a stop was
/// requested, health has said NOT_SERVING for every service since, and
/// `drain` has passed, so load balancers that watch health send no more.
async fn draining(
    stop: watch::Receiver<bool>,
    health: tonic_health::server::HealthReporter,
    drain: Duration,
) {
    stop_requested(stop).await;
    for service in SERVICES {
        health
            .set_service_status(service, tonic_health::ServingStatus::NotServing)
            .await;
    }
    tracing::info!(?drain, "stopping: health says NOT_SERVING; draining");
    tokio::time::sleep(drain).await;
}

/// The services whose health the server reports ("" is the server's).
const SERVICES: [&str; 3] = ["", LEDGER_SERVICE, AUDIT_SERVICE];
const LEDGER_SERVICE: &str =
    <ImageLedgerServer<LedgerService> as tonic::server::NamedService>::NAME;
const AUDIT_SERVICE: &str = <AuditLogServer<AuditService> as tonic::server::NamedService>::NAME;

/// Reports the ledger's condition in health until a stop is requested:
/// NOT_SERVING while its store does not answer or take writes, or its
/// chain is broken; for `AuditLog` also once a damaged record was found.
/// The server's own status ("") is the ledger's: a damaged old record
/// does not stop commands.
async fn report_condition(
    mut condition: watch::Receiver<crate::app::Condition>,
    health: tonic_health::server::HealthReporter,
    stop: watch::Receiver<bool>,
) {
    let stopped = stop.clone();
    let stopping = stop_requested(stop);
    tokio::pin!(stopping);
    loop {
        // Once stopping, draining owns health: never turn it back.
        if *stopped.borrow() {
            return;
        }
        let now = *condition.borrow_and_update();
        let status = |serving: bool| {
            if serving {
                tonic_health::ServingStatus::Serving
            } else {
                tonic_health::ServingStatus::NotServing
            }
        };
        for service in SERVICES {
            let serving = match service {
                AUDIT_SERVICE => now.audit_serving(),
                _ => now.serving(),
            };
            health.set_service_status(service, status(serving)).await;
        }
        tokio::select! {
            changed = condition.changed() => if changed.is_err() { return },
            () = &mut stopping => return,
        }
    }
}

/// Resolves once a stop is requested (or the stop handle is dropped).
async fn stop_requested(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

async fn stop_ledger(ledger: Ledger) {
    if tokio::task::spawn_blocking(move || ledger.shutdown())
        .await
        .is_err()
    {
        tracing::error!("stopping the writer failed");
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
    let local = is_loopback(&config.addr);
    match (&config.auth, local) {
        (Some(_), true) => Ok(()),
        (Some(_), false) if config.tls.is_some() => Ok(()),
        (Some(_), false) => Err(ServeError::PlaintextTokens(config.addr)),
        (None, true) => {
            tracing::info!(addr = %config.addr, "no [auth] configured: every local caller may call everything");
            Ok(())
        }
        (None, false) if config.insecure_no_auth => {
            tracing::warn!(addr = %config.addr, "--insecure-no-auth: anyone who reaches this address may act as any account");
            Ok(())
        }
        (None, false) => Err(ServeError::Unprotected(config.addr)),
    }
}
