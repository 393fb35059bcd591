//! The roles and what each may call; anything not listed is denied.

use serde::Deserialize;

/// What a principal may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// The API gateway: the account-scoped `ImageLedger` calls, acting for
    /// the `account_id` it passes (it authenticated the user).
    Gateway,
    /// The image factory: registers the images it builds and reports
    /// their states.
    ImageFactory,
    /// Operators: `RegisterAccount`.
    Admin,
    /// Auditors: the `AuditLog` service, which only reads.
    Auditor,
}

impl Role {
    /// The role as the `[auth]` table spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Gateway => "gateway",
            Role::ImageFactory => "image-factory",
            Role::Admin => "admin",
            Role::Auditor => "auditor",
        }
    }
}

impl std::fmt::Display for Role {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

const LEDGER: &str = "/imageledger.v1.ImageLedger/";
const AUDIT: &str = "/imageledger.v1.AuditLog/";

/// The `ImageLedger` methods a gateway may call.
const GATEWAY: &[&str] = &[
    "ShareImage",
    "CancelImageSharing",
    "CopyImage",
    "DeleteImage",
    "ModifyImageAttribute",
    "ModifyLighthouseSharePermission",
    "AuthorizeImageUse",
    "DescribeImages",
    "DescribeImageSharePermission",
    "DescribeImageQuota",
    "ModifyImageShareExpiry",
    "LeaveImageShare",
    "DisableImage",
    "EnableImage",
    "ModifyImageDeletionProtection",
    "DeprecateImage",
    "UndeprecateImage",
    "SetTrustedImageOwners",
    "DescribeTrustedImageOwners",
    "GetImageLineage",
];

/// Whether `path` (`/package.Service/Method`) needs no credentials:
/// health and reflection, which every load balancer and tool needs.
pub fn is_open(path: &str) -> bool {
    path.starts_with("/grpc.health.v1.Health/")
        || path.starts_with("/grpc.reflection.v1.ServerReflection/")
        || path.starts_with("/grpc.reflection.v1alpha.ServerReflection/")
}

/// Whether a principal with `roles` may call `path`.
pub fn allowed(roles: &[Role], path: &str) -> bool {
    if is_open(path) {
        return true;
    }
    roles.iter().any(|role| match role {
        Role::Gateway => path
            .strip_prefix(LEDGER)
            .is_some_and(|method| GATEWAY.contains(&method)),
        Role::ImageFactory => path
            .strip_prefix(LEDGER)
            .is_some_and(|method| matches!(method, "RegisterImage" | "UpdateImageState")),
        Role::Admin => path == "/imageledger.v1.ImageLedger/RegisterAccount",
        Role::Auditor => path
            .strip_prefix(AUDIT)
            .is_some_and(|method| !method.is_empty()),
    })
}
