//! The gRPC layer: counts every call under the names of
//! go-grpc-prometheus (`grpc_server_started_total`,
//! `grpc_server_handled_total{grpc_service,grpc_method,grpc_code}`,
//! `grpc_server_handling_seconds`), keeps the calls in flight, and runs
//! each call in a `call` span (method, account, code) at debug level.
//!
//! A call is handled when its response headers go out: for a unary call
//! that is its end; for a stream, its start.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use tracing::Instrument;

/// The method a call names.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct MethodLabels {
    /// The fully qualified service, `imageledger.v1.ImageLedger`.
    pub grpc_service: String,
    /// The method, `ShareImage`.
    pub grpc_method: String,
}

/// The method and how the call ended.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct HandledLabels {
    /// See [`MethodLabels`].
    pub grpc_service: String,
    /// See [`MethodLabels`].
    pub grpc_method: String,
    /// The status code's name, as gRPC spells it (`OK`, `InvalidArgument`).
    pub grpc_code: &'static str,
}

/// Handling seconds: 100 µs to 10 s.
const BUCKETS: [f64; 15] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    10.0,
];

/// The per-call metrics.
#[derive(Clone)]
pub struct GrpcMetrics {
    started: Family<MethodLabels, Counter>,
    handled: Family<HandledLabels, Counter>,
    seconds: Family<MethodLabels, Histogram>,
    in_flight: Gauge,
}

impl GrpcMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            started: Family::default(),
            handled: Family::default(),
            seconds: Family::new_with_constructor(|| Histogram::new(BUCKETS)),
            in_flight: Gauge::default(),
        };
        registry.register(
            "grpc_server_started",
            "RPCs started on the server",
            metrics.started.clone(),
        );
        registry.register(
            "grpc_server_handled",
            "RPCs completed on the server, whatever their status",
            metrics.handled.clone(),
        );
        registry.register(
            "grpc_server_handling_seconds",
            "Seconds from a call's arrival to its response headers",
            metrics.seconds.clone(),
        );
        registry.register(
            "grpc_server_in_flight",
            "Calls the server is handling now",
            metrics.in_flight.clone(),
        );
        metrics
    }
}

/// The tower layer that counts calls.
#[derive(Clone)]
pub struct Layer {
    metrics: Arc<GrpcMetrics>,
}

impl Layer {
    /// Counts into `metrics`.
    pub fn new(metrics: GrpcMetrics) -> Self {
        Self {
            metrics: Arc::new(metrics),
        }
    }
}

impl<S> tower::Layer<S> for Layer {
    type Service = Counted<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Counted {
            inner,
            metrics: Arc::clone(&self.metrics),
        }
    }
}

/// A service whose calls are counted.
#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    metrics: Arc<GrpcMetrics>,
}

impl<S, B, R> tower::Service<http::Request<B>> for Counted<S>
where
    S: tower::Service<http::Request<B>, Response = http::Response<R>>,
    S::Future: Send + 'static,
    S::Error: Send + 'static,
    R: 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        let path = request.uri().path();
        let (service, method) = path
            .trim_start_matches('/')
            .split_once('/')
            .unwrap_or(("", path));
        let labels = MethodLabels {
            grpc_service: service.to_owned(),
            grpc_method: method.to_owned(),
        };
        // The call's span: its logs' context, and the root of its trace
        // (`crate::traces`) under OpenTelemetry's names for a gRPC server.
        let span = tracing::debug_span!(
            "call",
            otel.name = path.trim_start_matches('/'),
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            rpc.system = "grpc",
            rpc.service = service,
            rpc.method = method,
            rpc.grpc.status_code = tracing::field::Empty,
            method = %path,
            account = tracing::field::Empty,
            principal = tracing::field::Empty,
            credential = tracing::field::Empty,
            outcome = tracing::field::Empty,
            reason = tracing::field::Empty
        );
        crate::traces::continue_trace(&span, request.headers());
        let metrics = Arc::clone(&self.metrics);
        metrics.started.get_or_create(&labels).inc();
        metrics.in_flight.inc();
        let started = Instant::now();
        let response = {
            let _entered = span.enter();
            self.inner.call(request)
        };
        Box::pin(
            async move {
                let response = response.await;
                let number = match &response {
                    Ok(response) => response
                        .headers()
                        .get("grpc-status")
                        .and_then(|value| value.to_str().ok())
                        .and_then(|value| value.parse().ok())
                        // A call that ends well sends its status in the
                        // trailers; one that fails, in the headers.
                        .unwrap_or(0),
                    Err(_) => 2,
                };
                let code = code_name(number);
                let span = tracing::Span::current();
                span.record("outcome", code);
                span.record("rpc.grpc.status_code", number);
                if server_fault(number) {
                    span.record("otel.status_code", "error");
                }
                tracing::debug!("handled");
                metrics.in_flight.dec();
                metrics
                    .seconds
                    .get_or_create(&labels)
                    .observe(started.elapsed().as_secs_f64());
                metrics
                    .handled
                    .get_or_create(&HandledLabels {
                        grpc_service: labels.grpc_service,
                        grpc_method: labels.grpc_method,
                        grpc_code: code,
                    })
                    .inc();
                response
            }
            .instrument(span),
        )
    }
}

/// Whether a status says the server failed, not the caller: what
/// OpenTelemetry marks an error on a server's span.
fn server_fault(code: i32) -> bool {
    // Unknown, DeadlineExceeded, Unimplemented, Internal, Unavailable, DataLoss.
    matches!(code, 2 | 4 | 12 | 13 | 14 | 15)
}

/// A status code's name, as gRPC's own libraries print it.
fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "Canceled",
        2 => "Unknown",
        3 => "InvalidArgument",
        4 => "DeadlineExceeded",
        5 => "NotFound",
        6 => "AlreadyExists",
        7 => "PermissionDenied",
        8 => "ResourceExhausted",
        9 => "FailedPrecondition",
        10 => "Aborted",
        11 => "OutOfRange",
        12 => "Unimplemented",
        13 => "Internal",
        14 => "Unavailable",
        15 => "DataLoss",
        16 => "Unauthenticated",
        _ => "Unknown",
    }
}
