//! The reply every request gets, success or not: HTTP 200 with
//! `Content-Type: application/json` (exactly: the Python SDK ignores an
//! error in any other) and `{"Response": {…, "RequestId": "<uuid>"}}`,
//! an error being `"Error": {"Code", "Message"}` inside it.

use std::sync::Arc;

use bytes::Bytes;
use serde::Serialize;
use serde_json::json;

use crate::app::AppError;
use crate::domain::DomainError;

/// A refusal, as Tencent's clients read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    /// Tencent's error code (`InvalidImageId.InShared`, `AuthFailure.SignatureFailure`).
    pub code: &'static str,
    /// For people.
    pub message: String,
}

impl ApiError {
    /// An error with this code and message.
    pub fn new(code: &'static str, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl From<DomainError> for ApiError {
    fn from(err: DomainError) -> Self {
        Self::new(err.reason(), err.to_string())
    }
}

impl From<AppError> for ApiError {
    fn from(err: AppError) -> Self {
        match err {
            AppError::Domain(err) => err.into(),
            AppError::Unwritable(_) => Self::new(
                "ResourceUnavailable",
                "the ledger's store does not take writes at the moment; nothing was changed: retry later",
            ),
            AppError::ShuttingDown => Self::new(
                "ResourceUnavailable",
                "the ledger is shutting down; retry on another instance or later",
            ),
            AppError::Forked => Self::new(
                "ResourceUnavailable",
                "this replica is reloading the history the database holds; retry shortly",
            ),
            // The store failed part way: whether the change was made is
            // unknown, and this API has no token to retry it safely with.
            AppError::Storage(err) => {
                tracing::error!(err = %crate::store::Chain(&err), "storage failure on the cloud API");
                Self::new(
                    "InternalError",
                    "the ledger could not complete the request because of a storage failure; \
                     whether it took effect is unknown: describe the image before retrying",
                )
            }
            other => {
                tracing::error!(err = %crate::store::Chain(&other), "the cloud API could not answer");
                Self::new("InternalError", "the ledger failed to answer; see the server log")
            }
        }
    }
}

/// An answer's fields, each serialized when it is put: the answer is
/// then written in one pass, with no tree of values in between.
#[derive(Debug, Default)]
pub struct Fields(Vec<(&'static str, Arc<str>)>);

impl Fields {
    /// No fields.
    pub fn new() -> Self {
        Self::default()
    }

    /// With `name` set to `value`.
    pub fn with<T: Serialize + ?Sized>(self, name: &'static str, value: &T) -> Self {
        // The answers' types (strings, numbers, lists and structs of them)
        // always serialize.
        match serde_json::to_string(value) {
            Ok(json) => self.with_json(name, json.into()),
            Err(err) => {
                tracing::error!(%err, field = name, "a cloud API answer field did not serialize");
                self
            }
        }
    }

    /// With `name` set to `json`, JSON text already (a cached page).
    pub fn with_json(mut self, name: &'static str, json: Arc<str>) -> Self {
        self.0.push((name, json));
        self
    }
}

/// A new RequestId: a version 4 UUID from the thread's generator (no
/// system call per request).
pub fn request_id() -> String {
    uuid::Builder::from_random_bytes(rand::random())
        .into_uuid()
        .to_string()
}

/// The body of a success: `fields` and the RequestId.
pub fn success(fields: Fields, request_id: &str) -> Bytes {
    let size: usize = fields
        .0
        .iter()
        .map(|(name, json)| name.len() + json.len() + 4)
        .sum();
    let mut out = Vec::with_capacity(size + request_id.len() + 32);
    out.extend_from_slice(b"{\"Response\":{");
    // Field names are identifiers and the values JSON already.
    for (name, json) in &fields.0 {
        out.push(b'"');
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(b"\":");
        out.extend_from_slice(json.as_bytes());
        out.push(b',');
    }
    out.extend_from_slice(b"\"RequestId\":");
    out.extend_from_slice(json!(request_id).to_string().as_bytes());
    out.extend_from_slice(b"}}");
    Bytes::from(out)
}

/// The body of a refusal.
pub fn failure(err: &ApiError, request_id: &str) -> Bytes {
    body(&json!({
        "Response": {
            "Error": { "Code": err.code, "Message": err.message },
            "RequestId": request_id,
        }
    }))
}

fn body(value: &serde_json::Value) -> Bytes {
    // A `Value` of strings and maps always serializes.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}
