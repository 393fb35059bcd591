//! The Tencent Cloud API 3.0 door: `tccli` and Tencent's SDKs, pointed at
//! this server, share images through the same ledger, writer and rules as
//! the gRPC API. A sibling of `grpc/`: it turns a signed JSON request into
//! a command or a query of the application layer, and the answer into
//! Tencent's envelope.
//!
//! Every request is signed (TC3-HMAC-SHA256) with a key of the config
//! file's `[[cloud_api.keys]]`, and the key's account is the one that acts:
//! no field of any action names the acting account. Records written
//! through the door name the principal `cloud key <SecretId>`.

pub mod actions;
pub mod envelope;
pub mod params;
mod serve;
pub mod signature;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use tracing::Instrument;

use self::actions::{Api, Call};
use self::envelope::{ApiError, Fields};
use crate::app::Ledger;
use crate::auth::{CloudKey, CloudKeys};
use crate::domain::Region;
use crate::metrics::cloud::{CloudMetrics, RequestLabels};
use crate::projection::PageCache;

pub use serve::{serve, Serving, MAX_BODY_BYTES};

/// The door: the ledger it acts on, the keys it checks signatures with.
pub struct Door {
    ledger: Ledger,
    keys: Arc<CloudKeys>,
    pages: PageCache<actions::JsonPage>,
    metrics: CloudMetrics,
}

impl Door {
    /// A door on `ledger` for the holders of `keys`, keeping its
    /// `DescribeImages` pages in `pages`.
    pub fn new(
        ledger: Ledger,
        keys: Arc<CloudKeys>,
        pages: PageCache<actions::JsonPage>,
        metrics: CloudMetrics,
    ) -> Self {
        Self {
            ledger,
            keys,
            pages,
            metrics,
        }
    }

    /// The envelope answering one request whose body was read whole.
    pub async fn answer(
        &self,
        head: &http::request::Parts,
        body: &[u8],
        peer: Option<SocketAddr>,
    ) -> Bytes {
        let started = Instant::now();
        let request_id = envelope::request_id();
        let mut labels = RequestLabels {
            service: "",
            action: "",
            code: "OK",
        };
        // The request's span: the root of its trace (`crate::traces`), as
        // a gRPC call's is; its command's stages are recorded under it.
        let span = tracing::debug_span!(
            "cloud API request",
            otel.kind = "server",
            otel.status_code = tracing::field::Empty,
            request_id = %request_id,
            action = tracing::field::Empty,
            account = tracing::field::Empty,
            principal = tracing::field::Empty,
            outcome = tracing::field::Empty
        );
        crate::traces::continue_trace(&span, &head.headers);
        let decided = self
            .decide(head, body, peer, &mut labels)
            .instrument(span.clone())
            .await;
        let answer = match decided {
            Ok(fields) => envelope::success(fields, &request_id),
            Err(err) => {
                labels.code = err.code;
                envelope::failure(&err, &request_id)
            }
        };
        if !span.is_disabled() {
            if !labels.action.is_empty() {
                let name = format!("{}/{}", labels.service, labels.action);
                crate::traces::rename(&span, name);
                span.record("action", labels.action);
            }
            span.record("outcome", labels.code);
            // The server's own failures, not the caller's.
            if labels.code.starts_with("InternalError") || labels.code == "ResourceUnavailable" {
                span.record("otel.status_code", "error");
            }
        }
        self.metrics
            .answered(labels, started.elapsed().as_secs_f64());
        answer
    }

    /// An answer for a request refused before it was read (too large).
    pub fn refuse(&self, err: &ApiError) -> Bytes {
        let labels = RequestLabels {
            service: "",
            action: "",
            code: err.code,
        };
        self.metrics.answered(labels, 0.0);
        envelope::failure(err, &envelope::request_id())
    }

    async fn decide(
        &self,
        head: &http::request::Parts,
        body: &[u8],
        peer: Option<SocketAddr>,
        labels: &mut RequestLabels,
    ) -> Result<Fields, ApiError> {
        if head.method != http::Method::POST {
            return Err(ApiError::new(
                "InvalidParameter",
                format!(
                    "{} is not served: send POST / with Content-Type: application/json",
                    head.method
                ),
            ));
        }
        let (key, service) = self.authenticate(head, body, peer)?;
        let span = tracing::Span::current();
        span.record("account", key.account.as_str());
        span.record("principal", &*key.principal);
        let api = Api::of(&service, header(head, "x-tc-version").unwrap_or_default())?;
        labels.service = api.service();
        let action = api.action(header(head, "x-tc-action").unwrap_or_default())?;
        labels.action = action;
        if !is_json(header(head, "content-type").unwrap_or_default()) {
            return Err(ApiError::new(
                "InvalidParameter",
                "the body must be JSON, sent with Content-Type: application/json",
            ));
        }
        let region = match header(head, "x-tc-region") {
            None | Some("") => return Err(ApiError::new(
                "MissingParameter",
                "the request is missing the required parameter `Region` (the X-TC-Region header)",
            )),
            Some(region) => Region::new(region),
        };
        if self.ledger.check_region(&region).is_err() {
            return Err(ApiError::new(
                "UnsupportedRegion",
                format!("the region {region} is not one this ledger serves"),
            ));
        }
        let call = Call {
            api,
            action,
            region,
            key: &key,
            body,
        };
        actions::run(&self.ledger, &self.pages, &call).await
    }

    /// Checks the request's signature: the key it was signed with, and the
    /// service of its credential scope. A refusal is logged with the
    /// SecretId and the peer, never the key (ten lines a second at most;
    /// the next says how many were left unsaid).
    fn authenticate(
        &self,
        head: &http::request::Parts,
        body: &[u8],
        peer: Option<SocketAddr>,
    ) -> Result<(CloudKey, String), ApiError> {
        let mut secret_id = String::new();
        let checked = self.check_signature(head, body, &mut secret_id);
        if let Err(err) = &checked {
            if let Some(unsaid) = self.metrics.admit_refusal_line() {
                tracing::info!(
                    secret_id = %secret_id,
                    peer = %peer.map_or_else(String::new, |p| p.to_string()),
                    code = err.code,
                    why = %err.message,
                    unsaid,
                    "a cloud API request was refused"
                );
            }
        }
        checked
    }

    fn check_signature(
        &self,
        head: &http::request::Parts,
        body: &[u8],
        secret_id: &mut String,
    ) -> Result<(CloudKey, String), ApiError> {
        let authorization = header(head, "authorization").ok_or_else(|| {
            ApiError::new(
                "AuthFailure.InvalidAuthorization",
                "the request is not signed: every request needs an Authorization header (TC3-HMAC-SHA256)",
            )
        })?;
        let parsed = signature::parse_authorization(authorization)?;
        parsed.secret_id.clone_into(secret_id);
        let timestamp = match header(head, "x-tc-timestamp") {
            None => {
                return Err(ApiError::new(
                    "MissingParameter",
                    "the request is missing the required parameter `Timestamp` (the X-TC-Timestamp header)",
                ))
            }
            Some(raw) => raw.parse::<i64>().map_err(|_| {
                ApiError::new(
                    "InvalidParameter",
                    format!("X-TC-Timestamp {raw:?} is not a Unix time in seconds"),
                )
            })?,
        };
        signature::check_time(parsed.date, timestamp, now())?;
        if head.headers.contains_key("x-tc-token") {
            return Err(ApiError::new(
                "AuthFailure.TokenFailure",
                "X-TC-Token is a temporary credential's token; this server issues none: sign with a permanent key",
            ));
        }
        let key = self.keys.get(parsed.secret_id).ok_or_else(|| {
            ApiError::new(
                "AuthFailure.SecretIdNotFound",
                format!(
                    "the SecretId {} is not one this server knows",
                    parsed.secret_id
                ),
            )
        })?;
        let mut headers = Vec::new();
        for name in parsed.signed_headers.split(';') {
            let value = header(head, name).ok_or_else(|| {
                ApiError::new(
                    "AuthFailure.SignatureFailure",
                    format!("the signed header {name} is not in the request"),
                )
            })?;
            headers.push((name, value));
        }
        let unsigned = header(head, "x-tc-content-sha256") == Some(signature::UNSIGNED_PAYLOAD);
        let signed = signature::Signed {
            method: head.method.as_str(),
            path: head.uri.path(),
            query: head.uri.query().unwrap_or(""),
            headers,
            body: (!unsigned).then_some(body),
        };
        let expected = signature::signature(
            key.secret(),
            parsed.date,
            parsed.service,
            timestamp,
            &signed,
        );
        if !signature::matches(&expected, parsed.signature) {
            return Err(ApiError::new(
                "AuthFailure.SignatureFailure",
                "the signature does not match: check the SecretKey, and that the request (Host \
                 header, body) is sent as it was signed",
            ));
        }
        Ok((key, parsed.service.to_owned()))
    }
}

/// A header's value as text, if present and text.
fn header<'a>(head: &'a http::request::Parts, name: &str) -> Option<&'a str> {
    head.headers.get(name).and_then(|value| value.to_str().ok())
}

/// Whether a Content-Type is JSON (`application/json`, with parameters or not).
fn is_json(content_type: &str) -> bool {
    content_type
        .split(';')
        .next()
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_secs()).unwrap_or(i64::MAX)
        })
}
