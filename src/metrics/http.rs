//! The metrics endpoint: `GET /metrics` over HTTP/1 on `--metrics-addr`,
//! anything else 404.

use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use super::{Metrics, ReadGauges};

/// The content type of the OpenMetrics text format.
const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Serves `metrics`, with the gauges `read` gives, on `listener` until
/// `stop` turns true.
pub async fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    read: ReadGauges,
    mut stop: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stop.wait_for(|stop| *stop) => return,
        };
        let stream = match accepted {
            Ok((stream, _)) => stream,
            Err(err) => {
                tracing::warn!(%err, "cannot accept a metrics connection");
                // Out of descriptors, say: do not spin on it.
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                continue;
            }
        };
        let (metrics, read) = (Arc::clone(&metrics), Arc::clone(&read));
        tokio::spawn(async move {
            let service = service_fn(move |request: hyper::Request<Incoming>| {
                let reply = if request.uri().path() == "/metrics" {
                    http::Response::builder()
                        .header(http::header::CONTENT_TYPE, CONTENT_TYPE)
                        .body(Full::new(Bytes::from(metrics.render(read()))))
                } else {
                    http::Response::builder()
                        .status(http::StatusCode::NOT_FOUND)
                        .body(Full::new(Bytes::from_static(b"metrics are at /metrics\n")))
                };
                async move { Ok::<_, Infallible>(reply.unwrap_or_default()) }
            });
            if let Err(err) = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                tracing::debug!(%err, "a metrics connection ended with an error");
            }
        });
    }
}
