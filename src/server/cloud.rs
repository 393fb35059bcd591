//! The cloud API door's part of a start: its address bound, its keys
//! checked, and the protections of the gRPC port kept (TLS off loopback).

use std::net::SocketAddr;
use std::sync::Arc;

use super::{is_loopback, serve::bind, ServeError};
use crate::app::Ledger;
use crate::cloud::{Door, Serving};
use crate::config::Config;
use crate::metrics::Metrics;

/// Binds `--cloud-api-addr`, if set, and makes the door that will serve it.
pub(super) async fn prepare(
    config: &Config,
    ledger: &Ledger,
    metrics: &Metrics,
    tls: Option<Arc<crate::tls::Tls>>,
    places: &crate::listener::Places,
) -> Result<Option<(SocketAddr, Serving)>, ServeError> {
    let Some(addr) = config.server.cloud_api_addr else {
        return Ok(None);
    };
    if config.cloud_keys.is_empty() {
        return Err(ServeError::NoCloudKeys);
    }
    let (listener, bound) = bind(addr).await?;
    // Its own pages (JSON), as large as the gRPC port's.
    let pages = crate::projection::PageCache::new(config.server.page_cache_bytes())
        .counting(Arc::clone(&metrics.ledger));
    let door = Door::new(
        ledger.clone(),
        Arc::clone(&config.cloud_keys),
        pages,
        metrics.cloud.clone(),
    );
    tracing::info!(
        addr = %bound,
        keys = config.cloud_keys.len(),
        tls = tls.is_some(),
        "serving the Tencent Cloud API"
    );
    Ok(Some((
        bound,
        Serving {
            listener,
            door: Arc::new(door),
            tls,
            places: places.clone(),
            grace: config.server.shutdown_grace(),
        },
    )))
}

/// Signed requests in plaintext off loopback would give away what they
/// ask and answer: refused without TLS, whatever `--insecure-no-auth` says
/// (it lifts nothing here: every request is signed, always).
pub(super) fn protection(config: &Config) -> Result<(), ServeError> {
    match config.server.cloud_api_addr {
        Some(addr) if !is_loopback(&addr) && config.tls.is_none() => {
            Err(ServeError::PlaintextCloudApi(addr))
        }
        _ => Ok(()),
    }
}
