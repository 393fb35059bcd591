//! An OTLP/gRPC receiver: where a server run with traces on sends its
//! spans, for the `--traces` runs (which count them) and the traces'
//! tests (which keep them, with their resource's `service.name`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
pub use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, Span};

use crate::BoxError;

/// Spans with their resource's `service.name`.
type Kept = Arc<Mutex<Vec<(String, Span)>>>;

/// The receiver: spans counted, and kept if asked.
#[derive(Clone, Default)]
pub struct Sink {
    received: Arc<AtomicU64>,
    kept: Option<Kept>,
}

impl Sink {
    /// Starts a receiver on a free loopback port, on the current tokio
    /// runtime: its endpoint (`http://127.0.0.1:PORT`) and the sink.
    /// `keep`: hold every span, not only their count.
    pub async fn start(keep: bool) -> Result<(String, Sink), BoxError> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let sink = Sink {
            received: Arc::default(),
            kept: keep.then(Arc::default),
        };
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(TraceServiceServer::new(sink.clone()))
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
        );
        Ok((endpoint, sink))
    }

    /// Spans received so far.
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// The spans kept so far, each with its `service.name`.
    pub fn spans(&self) -> Vec<(String, Span)> {
        self.kept.as_ref().map_or_else(Vec::new, |kept| {
            kept.lock().unwrap_or_else(|e| e.into_inner()).clone()
        })
    }
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                .and_then(|a| text(a.value.as_ref()?.value.as_ref()?))
                .unwrap_or_default();
            for scope in resource.scope_spans {
                self.received
                    .fetch_add(scope.spans.len() as u64, Ordering::Relaxed);
                if let Some(kept) = &self.kept {
                    let mut kept = kept.lock().unwrap_or_else(|e| e.into_inner());
                    kept.extend(scope.spans.into_iter().map(|s| (service.clone(), s)));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

fn text(value: &Value) -> Option<String> {
    match value {
        Value::StringValue(s) => Some(s.clone()),
        Value::IntValue(i) => Some(i.to_string()),
        Value::BoolValue(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A span's attribute as text (numbers too), `None` if it has none.
pub fn attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|a| a.key == key)
        .and_then(|a| text(a.value.as_ref()?.value.as_ref()?))
}
