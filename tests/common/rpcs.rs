//! Every RPC by its path, called with an empty request: what the role
//! matrices of `tests/auth.rs` and `tests/tls.rs` go through.

use http::uri::PathAndQuery;
use tonic::transport::Channel;
use tonic::{Request, Status};
use tonic_types::StatusExt;

/// Calls `path` with an empty request, as `token` (none: no credentials).
pub async fn call(
    channel: &Channel,
    path: &'static str,
    token: Option<&str>,
) -> Result<(), Status> {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready()
        .await
        .map_err(|e| Status::unknown(e.to_string()))?;
    let mut request = Request::new(());
    if let Some(token) = token {
        let value = format!("Bearer {token}").parse().expect("ascii");
        request.metadata_mut().insert("authorization", value);
    }
    let codec = tonic_prost::ProstCodec::<(), ()>::default();
    let path = PathAndQuery::from_static(path);
    if path.as_str().ends_with("/ReadEvents") || path.as_str().ends_with("/Subscribe") {
        grpc.server_streaming(request, path, codec).await.map(drop)
    } else {
        grpc.unary(request, path, codec).await.map(drop)
    }
}

pub const LEDGER: &[&str] = &[
    "/imageledger.v1.ImageLedger/RegisterAccount",
    "/imageledger.v1.ImageLedger/RegisterImage",
    "/imageledger.v1.ImageLedger/UpdateImageState",
    "/imageledger.v1.ImageLedger/ShareImage",
    "/imageledger.v1.ImageLedger/CancelImageSharing",
    "/imageledger.v1.ImageLedger/CopyImage",
    "/imageledger.v1.ImageLedger/DeleteImage",
    "/imageledger.v1.ImageLedger/ModifyImageAttribute",
    "/imageledger.v1.ImageLedger/ModifyLighthouseSharePermission",
    "/imageledger.v1.ImageLedger/AuthorizeImageUse",
    "/imageledger.v1.ImageLedger/DescribeImages",
    "/imageledger.v1.ImageLedger/DescribeImageSharePermission",
    "/imageledger.v1.ImageLedger/DescribeImageQuota",
    "/imageledger.v1.ImageLedger/ModifyImageShareExpiry",
    "/imageledger.v1.ImageLedger/LeaveImageShare",
    "/imageledger.v1.ImageLedger/DisableImage",
    "/imageledger.v1.ImageLedger/EnableImage",
    "/imageledger.v1.ImageLedger/ModifyImageDeletionProtection",
    "/imageledger.v1.ImageLedger/DeprecateImage",
    "/imageledger.v1.ImageLedger/UndeprecateImage",
    "/imageledger.v1.ImageLedger/SetTrustedImageOwners",
    "/imageledger.v1.ImageLedger/DescribeTrustedImageOwners",
    "/imageledger.v1.ImageLedger/GetImageLineage",
];
pub const AUDIT: &[&str] = &[
    "/imageledger.v1.AuditLog/ReadEvents",
    "/imageledger.v1.AuditLog/Subscribe",
    "/imageledger.v1.AuditLog/GetImageHistory",
    "/imageledger.v1.AuditLog/GetImageAccessAsOf",
    "/imageledger.v1.AuditLog/GetLedgerHead",
    "/imageledger.v1.AuditLog/GetLedgerPublicKey",
];
pub const HEALTH: &str = "/grpc.health.v1.Health/Check";

/// Whom each method admits: the README's table of roles.
pub fn admitted(path: &str, role: &str) -> bool {
    let method = path.rsplit('/').next().unwrap_or_default();
    match role {
        "gateway" => {
            path.contains("ImageLedger")
                && !matches!(
                    method,
                    "RegisterAccount" | "RegisterImage" | "UpdateImageState"
                )
        }
        "image-factory" => matches!(method, "RegisterImage" | "UpdateImageState"),
        "admin" => method == "RegisterAccount",
        "auditor" => path.contains("AuditLog"),
        _ => false,
    }
}

pub fn reason(status: &Status) -> String {
    status
        .get_details_error_info()
        .map(|info| info.reason)
        .unwrap_or_default()
}

/// Asserts that `path`, called as `token` on `channel`, is refused with
/// PERMISSION_DENIED unless `role` may call it, and otherwise gets past
/// the check (the empty request meets the service's own answer, never an
/// authentication one).
pub async fn assert_role_decides(
    channel: &Channel,
    path: &'static str,
    token: Option<&str>,
    role: &str,
) {
    let result = call(channel, path, token).await;
    if admitted(path, role) {
        if let Err(status) = &result {
            assert!(
                !reason(status).starts_with("AuthFailure."),
                "{role} on {path}: {status:?}"
            );
        }
    } else {
        let status = result.expect_err("refused");
        assert_eq!(
            (status.code(), reason(&status).as_str()),
            (
                tonic::Code::PermissionDenied,
                "AuthFailure.UnauthorizedOperation"
            ),
            "{role} on {path}"
        );
        assert!(status.message().contains(path), "{}", status.message());
    }
}
