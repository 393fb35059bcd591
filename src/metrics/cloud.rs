//! The cloud API door: requests by service, action and the code they were
//! answered with (`ledger_cloud_api_requests_total`), their seconds, and
//! the signatures refused, by code (`ledger_cloud_api_auth_failures_total`).

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// A request's action and answer.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    /// `cvm` or `lighthouse`; empty when the request was refused before
    /// its service was known.
    pub service: &'static str,
    /// The action served, or empty when it was not one.
    pub action: &'static str,
    /// `OK`, or the error's code.
    pub code: &'static str,
}

/// A refused signature's code.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefusalLabels {
    /// The `AuthFailure.*` code.
    pub code: &'static str,
}

/// Seconds: 100 µs to 10 s.
const BUCKETS: [f64; 12] = [
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 1.0, 10.0,
];

/// The door's metrics.
#[derive(Clone)]
pub struct CloudMetrics {
    requests: Family<RequestLabels, Counter>,
    seconds: Histogram,
    refusals: Family<RefusalLabels, Counter>,
    /// The refused signatures' log lines.
    lines: std::sync::Arc<super::auth::LineBudget>,
}

impl CloudMetrics {
    pub(super) fn register(registry: &mut Registry) -> Self {
        let metrics = Self {
            requests: Family::default(),
            seconds: Histogram::new(BUCKETS),
            refusals: Family::default(),
            lines: std::sync::Arc::default(),
        };
        registry.register(
            "ledger_cloud_api_requests",
            "Tencent Cloud API requests answered, by service, action and code",
            metrics.requests.clone(),
        );
        registry.register(
            "ledger_cloud_api_request_seconds",
            "Seconds from a Tencent Cloud API request's body to its answer",
            metrics.seconds.clone(),
        );
        registry.register(
            "ledger_cloud_api_auth_failures",
            "Tencent Cloud API requests whose signature was refused, by code",
            metrics.refusals.clone(),
        );
        metrics
    }

    /// Whether a refused signature may be logged now (at most
    /// [`super::auth::LINES_PER_SECOND`] a second), and how many were left
    /// unsaid since the last line.
    pub fn admit_refusal_line(&self) -> Option<u64> {
        self.lines.admit()
    }

    /// Counts one answered request.
    pub fn answered(&self, labels: RequestLabels, seconds: f64) {
        if labels.code.starts_with("AuthFailure") {
            self.refusals
                .get_or_create(&RefusalLabels { code: labels.code })
                .inc();
        }
        self.requests.get_or_create(&labels).inc();
        self.seconds.observe(seconds);
    }
}
