//! The reply every request gets, success or not: HTTP 200 with
//! `Content-Type: application/json` (exactly: the Python SDK ignores an
//! error in any other) and `{"Response": {…, "RequestId": "<uuid>"}}`,
//! an error being `"Error": {"Code", "Message"}` inside it.

use bytes::Bytes;
use serde_json::{json, Map, Value};

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

/// A new RequestId.
pub fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// The body of a success: `fields` and the RequestId.
pub fn success(mut fields: Map<String, Value>, request_id: &str) -> Bytes {
    fields.insert("RequestId".into(), Value::String(request_id.to_owned()));
    body(&json!({ "Response": fields }))
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

fn body(value: &Value) -> Bytes {
    // A `Value` of strings and maps always serializes.
    Bytes::from(serde_json::to_vec(value).unwrap_or_default())
}
