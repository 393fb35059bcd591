//! Prometheus metrics: what the gRPC layer counts per call ([`grpc`]),
//! what the ledger counts as it commits ([`LedgerMetrics`]), gauges read
//! off the ledger at each scrape, and the HTTP endpoint that serves them
//! ([`http`]). Text in the OpenMetrics format, which Prometheus reads.

pub mod auth;
pub mod cloud;
pub mod grpc;
pub mod http;
mod ledger;

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

pub use ledger::LedgerMetrics;

/// The gauges read off the ledger at each scrape.
#[derive(Debug, Clone, Copy, Default)]
pub struct Readings {
    /// The durable head's position.
    pub durable_head: u64,
    /// Commands waiting for the writer.
    pub queue_depth: usize,
    /// Whether the ledger serves (its health's `SERVING`).
    pub serving: bool,
}

/// The certificate file a TLS expiry is of.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CertificateLabel {
    /// Its path, as configured.
    pub cert: String,
}

/// Reads the [`Readings`] now: how a scrape asks the ledger, which this
/// module does not know.
pub type ReadGauges = Arc<dyn Fn() -> Readings + Send + Sync>;

/// Every metric of a server, registered under the names dashboards expect.
pub struct Metrics {
    registry: Registry,
    /// Counted by the gRPC layer.
    pub grpc: grpc::GrpcMetrics,
    /// Counted by the cloud API door.
    pub cloud: cloud::CloudMetrics,
    /// Counted by the ledger.
    pub ledger: Arc<LedgerMetrics>,
    /// Counted by the connection bounds.
    pub connections: crate::listener::Counts,
    /// Counted (and logged) by authentication.
    pub auth: Arc<auth::AuthFailures>,
    /// When each served TLS certificate expires: absent without TLS.
    pub tls_expiry: Family<CertificateLabel, Gauge>,
    /// Read off the ledger at each scrape.
    head: Gauge,
    queue: Gauge,
    read_side_lag: Gauge,
    serving: Gauge,
}

impl Metrics {
    /// New metrics, all at zero.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let grpc = grpc::GrpcMetrics::register(&mut registry);
        let cloud = cloud::CloudMetrics::register(&mut registry);
        let ledger = Arc::new(LedgerMetrics::register(&mut registry));
        let auth = Arc::new(auth::AuthFailures::register(&mut registry));
        let (head, queue, read_side_lag) = (Gauge::default(), Gauge::default(), Gauge::default());
        let serving = Gauge::default();
        let tls_expiry = Family::default();
        registry.register(
            "ledger_tls_certificate_expiry_timestamp_seconds",
            "When the served TLS certificate (the first of the cert file) stops being valid, Unix seconds; read again at each reload",
            tls_expiry.clone(),
        );
        registry.register(
            "ledger_serving",
            "1 while the ledger serves; 0 while its store is unreachable or failing writes, or its log forked or broken (health NOT_SERVING)",
            serving.clone(),
        );
        let connections = crate::listener::Counts::default();
        registry.register(
            "ledger_connections_open",
            "Client connections open, on the gRPC port and the cloud API door",
            connections.open.clone(),
        );
        registry.register(
            "ledger_connections_max",
            "Client connections the server holds at once (--max-connections, lowered to fit the descriptor limit)",
            connections.max.clone(),
        );
        registry.register(
            "ledger_connections_ended",
            "Connections closed (idle, room) or refused (peer_share) by the connection bounds",
            connections.ended.clone(),
        );
        registry.register(
            "ledger_head_position",
            "Position of the last durable record of the log",
            head.clone(),
        );
        registry.register(
            "ledger_writer_queue_depth",
            "Commands waiting for the writer",
            queue.clone(),
        );
        registry.register(
            "ledger_read_side_lag_events",
            "Durable events not yet in the stored read side (what a start after a crash replays)",
            read_side_lag.clone(),
        );
        Self {
            registry,
            grpc,
            cloud,
            ledger,
            connections,
            auth,
            tls_expiry,
            head,
            queue,
            read_side_lag,
            serving,
        }
    }

    /// The exposition of every metric, with the gauges read `now`.
    pub fn render(&self, now: Readings) -> String {
        let head = now.durable_head;
        self.head.set(as_gauge(head));
        self.queue.set(as_gauge(now.queue_depth as u64));
        self.serving.set(i64::from(now.serving));
        let stored = self.ledger.read_side_position.get().max(0) as u64;
        self.read_side_lag
            .set(as_gauge(head.saturating_sub(stored)));
        let mut text = String::new();
        // Writing to a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut text, &self.registry);
        text
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

fn as_gauge(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}
