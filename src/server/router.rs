//! What a server answers: health, reflection (v1 and v1alpha) and the two
//! services, as one set of routes.

use std::sync::Arc;

use tokio::sync::watch;
use tonic::service::Routes;
use tonic_health::server::HealthReporter;

use super::ServeError;
use crate::app::Ledger;
use crate::audit::LedgerKey;
use crate::config::ServerSettings;
use crate::grpc::pb::audit_log_server::AuditLogServer;
use crate::grpc::pb::image_ledger_server::ImageLedgerServer;
use crate::grpc::{pb, AuditService, LedgerService, Subscriptions};
use crate::metrics::Metrics;
use crate::projection::PageCache;

/// The routes, and the health they report.
pub(super) struct Served {
    pub(super) routes: Routes,
    pub(super) health: HealthReporter,
}

/// Builds the routes of `ledger`'s services; open streams end when
/// `stopping` turns true.
pub(super) async fn router(
    settings: &ServerSettings,
    ledger: &Ledger,
    key: LedgerKey,
    metrics: &Metrics,
    stopping: watch::Receiver<bool>,
) -> Result<Served, ServeError> {
    let (health, health_service) = tonic_health::server::health_reporter();
    health
        .set_serving::<ImageLedgerServer<LedgerService>>()
        .await;
    health.set_serving::<AuditLogServer<AuditService>>().await;
    let service = ImageLedgerServer::new(LedgerService::new(
        ledger.clone(),
        PageCache::new(settings.page_cache_bytes()).counting(Arc::clone(&metrics.ledger)),
    ));
    let audit = AuditLogServer::new(AuditService::new(
        ledger.clone(),
        Arc::new(key),
        stopping,
        Subscriptions::new(
            settings.max_subscriptions,
            settings.max_subscriptions_per_connection,
            Arc::clone(&metrics.ledger),
        ),
    ));
    let routes = Routes::new(health_service)
        .add_service(service)
        .add_service(audit);
    Ok(Served {
        routes: with_reflection(routes)?,
        health,
    })
}

/// `routes` and reflection in both versions: grpcurl before 1.8.8 and
/// grpcio-reflection ask for v1alpha only, newer tools for v1. Each lists
/// every service.
fn with_reflection(routes: Routes) -> Result<Routes, ServeError> {
    let builder = || {
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
    let v1 = builder()
        .build_v1()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    let v1alpha = builder()
        .build_v1alpha()
        .map_err(|e| ServeError::Reflection(e.to_string()))?;
    Ok(routes.add_service(v1).add_service(v1alpha))
}
