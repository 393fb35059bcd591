//! Traces: OpenTelemetry over OTLP/gRPC, off unless the standard `OTEL_*`
//! variables ask for it. The spans exported are this crate's `tracing`
//! spans (a call's, in `metrics::grpc` and `cloud`, and under it the
//! stages its command went through, in `app::writer`), never its events
//! or other crates' spans; this module owns the exporter they go out by,
//! the context a caller sent in `traceparent`, and the order of the last
//! export at a stop.
//!
//! The SDK's batch processor exports from a thread of its own, where the
//! tonic exporter finds no tokio reactor: each export runs on a one-thread
//! runtime this module owns, so exporting never takes a thread of the
//! server's and the last spans still go out after the server's runtime is
//! gone.

use std::sync::Arc;
use std::time::Duration;

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{WithExportConfig, WithTonicConfig};
use opentelemetry_sdk::error::{OTelSdkError, OTelSdkResult};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use opentelemetry_sdk::Resource;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;

/// Exporting traces: the provider and the runtime its exports run on.
pub struct Traces {
    provider: SdkTracerProvider,
    endpoint: String,
    runtime: tokio::runtime::Runtime,
}

/// Why the `OTEL_*` variables cannot be followed.
#[derive(Debug, thiserror::Error)]
pub enum TracesError {
    /// A variable holds a value this server does not take.
    #[error("{variable}={value}: {why}")]
    Unsupported {
        /// The variable.
        variable: &'static str,
        /// Its value.
        value: String,
        /// What it may hold.
        why: &'static str,
    },
    /// A file a variable names cannot be read.
    #[error("{variable}={path}: cannot read it: {source}")]
    File {
        /// The variable.
        variable: &'static str,
        /// The file it names.
        path: String,
        /// Why it cannot be read.
        source: std::io::Error,
    },
    /// The exporter refused its settings (an endpoint that is no URL).
    #[error("cannot export traces: {0}")]
    Exporter(String),
}

/// The variables read, traces' own before the general one, as the
/// OpenTelemetry specification orders them.
fn var(traces: &'static str, general: &'static str) -> Option<(&'static str, String)> {
    [traces, general].into_iter().find_map(|name| {
        std::env::var(name)
            .ok()
            .filter(|value| !value.trim().is_empty())
            .map(|value| (name, value))
    })
}

impl Traces {
    /// Traces as the environment says: `None` when no OTLP endpoint is
    /// set, `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`.
    pub fn from_env() -> Result<Option<Self>, TracesError> {
        let Some((_, endpoint)) = var(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ) else {
            return Ok(None);
        };
        if std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        match std::env::var("OTEL_TRACES_EXPORTER")
            .as_deref()
            .map(str::trim)
        {
            Err(_) | Ok("" | "otlp") => {}
            Ok("none") => return Ok(None),
            Ok(other) => {
                return Err(TracesError::Unsupported {
                    variable: "OTEL_TRACES_EXPORTER",
                    value: other.to_owned(),
                    why: "the exporters are otlp and none",
                })
            }
        }
        if let Some((variable, value)) = var(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ) {
            if value.trim() != "grpc" {
                return Err(TracesError::Unsupported {
                    variable,
                    value,
                    why: "traces are exported over OTLP/gRPC only: set grpc (a collector's port 4317)",
                });
            }
        }
        let tls = client_tls(&endpoint)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("otlp-export")
            .enable_all()
            .build()
            .map_err(|err| TracesError::Exporter(err.to_string()))?;
        // tonic's channel is made on the runtime that will drive it.
        let exporter = {
            let _entered = runtime.enter();
            let builder = opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(endpoint.clone());
            match tls {
                Some(tls) => builder.with_tls_config(tls).build(),
                None => builder.build(),
            }
            .map_err(|err| TracesError::Exporter(err.to_string()))?
        };
        let exporter = OnRuntime {
            inner: Arc::new(exporter),
            runtime: runtime.handle().clone(),
        };
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource())
            .build();
        Ok(Some(Self {
            provider,
            endpoint,
            runtime,
        }))
    }

    /// Where the spans go.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// What to warn of in the endpoint: a collector's OTLP/HTTP port,
    /// where this exporter's gRPC calls would fail at each export.
    pub fn endpoint_warning(&self) -> Option<&'static str> {
        let port = self
            .endpoint
            .parse::<http::Uri>()
            .ok()
            .and_then(|uri| uri.port_u16());
        (port == Some(4318)).then_some(
            "port 4318 is a collector's OTLP/HTTP port; traces are exported over OTLP/gRPC (usually 4317)",
        )
    }

    /// The layer that turns this crate's spans into OpenTelemetry's.
    pub fn layer<S>(&self) -> impl Layer<S> + Send + Sync + 'static
    where
        S: tracing::Subscriber
            + for<'span> tracing_subscriber::registry::LookupSpan<'span>
            + Send
            + Sync,
    {
        let tracer = self.provider.tracer("image-ledger");
        // No busy and idle times, source locations or thread names: each
        // costs every span (an enter and exit per poll read the clock), and
        // the stages' spans say where a call's time went.
        tracing_opentelemetry::layer()
            .with_tracer(tracer)
            .with_tracked_inactivity(false)
            .with_location(false)
            .with_threads(false)
            .with_filter(tracing_subscriber::filter::filter_fn(|metadata| {
                metadata.is_span() && metadata.target().starts_with("image_ledger")
            }))
    }

    /// Exports the spans still queued (within the exporter's timeout) and
    /// stops exporting.
    pub fn shutdown(self) {
        if let Err(err) = self.provider.shutdown() {
            eprintln!("warning: the last traces were not all exported: {err}");
        }
        self.runtime.shutdown_timeout(Duration::from_secs(1));
    }
}

/// `service.name` is `image-ledger` unless `OTEL_SERVICE_NAME` or
/// `OTEL_RESOURCE_ATTRIBUTES` names it; `service.version` is this build's.
fn resource() -> Resource {
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|v| !v.trim().is_empty())
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    let builder = Resource::builder().with_attribute(opentelemetry::KeyValue::new(
        "service.version",
        env!("CARGO_PKG_VERSION"),
    ));
    if named {
        builder.build()
    } else {
        builder.with_service_name("image-ledger").build()
    }
}

/// TLS for an `https` endpoint: the CA of `OTEL_EXPORTER_OTLP_CERTIFICATE`
/// (else the system's roots) and the client certificate and key of
/// `OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE` and `_CLIENT_KEY`, traces' own
/// variables first.
fn client_tls(endpoint: &str) -> Result<Option<tonic::transport::ClientTlsConfig>, TracesError> {
    if !endpoint.trim_start().starts_with("https://") {
        return Ok(None);
    }
    let mut tls = tonic::transport::ClientTlsConfig::new();
    match var(
        "OTEL_EXPORTER_OTLP_TRACES_CERTIFICATE",
        "OTEL_EXPORTER_OTLP_CERTIFICATE",
    ) {
        Some((variable, path)) => {
            tls = tls.ca_certificate(tonic::transport::Certificate::from_pem(read(
                variable, &path,
            )?));
        }
        None => tls = tls.with_native_roots(),
    }
    let cert = var(
        "OTEL_EXPORTER_OTLP_TRACES_CLIENT_CERTIFICATE",
        "OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE",
    );
    let key = var(
        "OTEL_EXPORTER_OTLP_TRACES_CLIENT_KEY",
        "OTEL_EXPORTER_OTLP_CLIENT_KEY",
    );
    match (cert, key) {
        (Some((cert_var, cert)), Some((key_var, key))) => {
            tls = tls.identity(tonic::transport::Identity::from_pem(
                read(cert_var, &cert)?,
                read(key_var, &key)?,
            ));
        }
        (None, None) => {}
        (Some((variable, value)), None) | (None, Some((variable, value))) => {
            return Err(TracesError::Unsupported {
                variable,
                value,
                why: "a client certificate needs its key, and a key its certificate",
            })
        }
    }
    Ok(Some(tls))
}

fn read(variable: &'static str, path: &str) -> Result<Vec<u8>, TracesError> {
    std::fs::read(path).map_err(|source| TracesError::File {
        variable,
        path: path.to_owned(),
        source,
    })
}

/// The OTLP exporter, each export run on the runtime this module owns.
#[derive(Debug)]
struct OnRuntime {
    inner: Arc<opentelemetry_otlp::SpanExporter>,
    runtime: tokio::runtime::Handle,
}

impl SpanExporter for OnRuntime {
    fn export(
        &self,
        batch: Vec<SpanData>,
    ) -> impl std::future::Future<Output = OTelSdkResult> + Send {
        let inner = Arc::clone(&self.inner);
        let task = self.runtime.spawn(async move { inner.export(batch).await });
        async move {
            task.await
                .unwrap_or_else(|err| Err(OTelSdkError::InternalFailure(err.to_string())))
        }
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        // Set once, while the provider is built: nothing else holds it yet.
        if let Some(inner) = Arc::get_mut(&mut self.inner) {
            inner.set_resource(resource);
        }
    }
}

/// Names `span`'s OpenTelemetry span `name`: for a name known only once
/// the span is under way (an `otel.name` recorded then is not taken).
pub fn rename(span: &tracing::Span, name: String) {
    if span.is_disabled() {
        return;
    }
    use opentelemetry::trace::TraceContextExt;
    span.context().span().update_name(name);
}

/// Makes `span` continue the trace a caller sent in its `traceparent`
/// (and `tracestate`) header, the W3C Trace Context. Nothing to do for a
/// span no exporter records.
pub fn continue_trace(span: &tracing::Span, headers: &http::HeaderMap) {
    if span.is_disabled() || !headers.contains_key("traceparent") {
        return;
    }
    let context = TraceContextPropagator::new().extract(&Headers(headers));
    // Refused only for a span the OpenTelemetry layer does not record.
    let _ = span.set_parent(context);
}

struct Headers<'a>(&'a http::HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}
