//! Serving the routes until a stop: the transport with its layers, TLS or
//! plaintext, health kept to the ledger's condition, and the order of a
//! graceful stop (NOT_SERVING, drain, in-flight calls, the writer, the
//! store's directory).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio_stream::wrappers::ReceiverStream;
use tokio_stream::StreamExt;
use tonic::service::Routes;
use tonic_health::server::HealthReporter;
use tower::util::MapResponseLayer;
use tower::ServiceExt;

use super::http2::{self, Routed};
use super::{stop_ledger, ServeError};
use crate::app::Ledger;
use crate::config::Config;
use crate::grpc::pb::audit_log_server::AuditLogServer;
use crate::grpc::pb::image_ledger_server::ImageLedgerServer;
use crate::grpc::{AuditService, LedgerService, SmallFrames, Unvectored};
use crate::metrics::Metrics;
use crate::store::Released;

/// How long a stopped server waits for the last handle on its store.
const RELEASE_PATIENCE: Duration = Duration::from_secs(5);

/// What a serving task needs.
pub(super) struct Serving {
    pub(super) routes: Routes,
    pub(super) health: HealthReporter,
    pub(super) listener: TcpListener,
    pub(super) places: crate::listener::Places,
    pub(super) tls: Option<Arc<crate::tls::Tls>>,
    pub(super) cloud: Option<crate::cloud::Serving>,
    pub(super) ledger: Ledger,
    pub(super) released: Option<Released>,
    pub(super) metrics: Arc<Metrics>,
    pub(super) stopped: watch::Receiver<bool>,
}

impl Serving {
    /// Serves until a stop is asked for, then stops in order.
    pub(super) async fn run(self, config: Config) -> Result<(), ServeError> {
        let Serving {
            routes,
            health,
            listener,
            places,
            tls,
            cloud,
            ledger,
            released,
            metrics,
            stopped,
        } = self;
        let settings = &config.server;
        let (grace, drain) = (settings.shutdown_grace(), settings.shutdown_drain());
        // The door stops taking requests when the gRPC port does: after
        // the drain.
        let cloud = cloud.map(|serving| {
            let stopped = stopped.clone();
            tokio::spawn(crate::cloud::serve(serving, async move {
                stop_requested(stopped).await;
                tokio::time::sleep(drain).await;
            }))
        });
        tokio::spawn(report_condition(
            ledger.condition(),
            health.clone(),
            stopped.clone(),
        ));
        tokio::spawn(crate::app::sweep_ended_shares(
            ledger.clone(),
            stopped.clone(),
        ));
        let routed: Routed = tower::util::BoxCloneService::new(
            tower::ServiceBuilder::new()
                .layer(crate::metrics::grpc::Layer::new(metrics.grpc.clone()))
                // Before the metrics see it: a refused message is counted by
                // its explained code.
                .layer(MapResponseLayer::new(|response: http::Response<_>| {
                    crate::grpc::explain_codec_errors(response)
                }))
                .layer(MapResponseLayer::new(
                    |response: http::Response<tonic::body::Body>| response.map(SmallFrames::new),
                ))
                .layer(crate::grpc::authenticate::Layer::new(
                    config.auth.clone(),
                    Arc::clone(&metrics.auth),
                ))
                .service(routes)
                // Names the request type, which the layers leave open.
                .map_request(|request: http::Request<tonic::body::Body>| request)
                .map_err(tower::BoxError::from),
        );
        let until = draining(stopped.clone(), health, drain);
        let accepted = crate::listener::accept(listener, places);
        let idle = settings.max_connection_idle();
        let serving: std::pin::Pin<Box<dyn std::future::Future<Output = ()> + Send>> = match tls {
            Some(tls) => Box::pin(http2::serve(
                crate::tls::incoming(accepted, tls),
                routed,
                idle,
                until,
            )),
            None => Box::pin(http2::serve(
                ReceiverStream::new(accepted).map(Unvectored::plaintext),
                routed,
                idle,
                until,
            )),
        };
        // Graceful shutdown waits for every client to close its connection;
        // one that never does must not keep the process alive forever.
        tokio::select! {
            () = serving => {}
            () = async {
                stop_requested(stopped).await;
                tokio::time::sleep(drain + grace).await;
            } => {
                tracing::warn!(?grace, "connections still open after the grace period; closing them");
            }
        }
        // The door bounds its own wait by the grace period.
        if let Some(cloud) = cloud {
            if cloud.await.is_err() {
                tracing::error!("the cloud API task failed");
            }
        }
        // No call is running any more; drain the writer so the log is
        // flushed and closed.
        stop_ledger(ledger, released).await;
        tracing::info!("stopped");
        Ok(())
    }
}

/// Waits until the store's directory is released after a stop: connection
/// tasks may drop their handles on the ledger a moment after the transport
/// returns.
pub(super) async fn released(released: Released) {
    let closed = tokio::task::spawn_blocking(move || released.wait(RELEASE_PATIENCE)).await;
    if !matches!(closed, Ok(true)) {
        tracing::warn!("the store is still referenced after the stop");
    }
}

/// Resolves when the server should stop accepting calls: a stop was
/// requested, health has said NOT_SERVING for every service since, and
/// `drain` has passed, so load balancers that watch health send no more.
async fn draining(stop: watch::Receiver<bool>, health: HealthReporter, drain: Duration) {
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
    health: HealthReporter,
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
pub(super) async fn stop_requested(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

/// Binds `addr`, or says which address could not be bound.
pub(super) async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), ServeError> {
    let bind_error = |source| ServeError::Bind { addr, source };
    let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
    let bound = listener.local_addr().map_err(bind_error)?;
    Ok((listener, bound))
}
