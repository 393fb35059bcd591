//! The rule violations a command can be refused with.

use thiserror::Error;

/// Why a command or query was refused. Each variant has one stable reason
/// code (see [`DomainError::reason`]) that clients match on; the message is
/// for people.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DomainError {
    /// The image id is not `img-` and 8 characters of `[a-z0-9]`. Fix the input.
    #[error("{0}")]
    ImageIdMalformed(String),
    /// No such image, or it was deleted. Do not retry.
    #[error("{0}")]
    ImageNotFound(String),
    /// An account id is not a string of digits. Fix the input.
    #[error("{0}")]
    AccountIdMalformed(String),
    /// An account is not registered. Register it first.
    #[error("{0}")]
    AccountNotFound(String),
    /// Some other field is invalid (empty list, duplicates, bad enum, bad token).
    #[error("{0}")]
    InvalidParameter(String),
    /// More accounts in one call than the per-call cap. Split the call.
    #[error("{0}")]
    LimitExceeded(String),
    /// A name or description is too long. Shorten it.
    #[error("{0}")]
    TooLarge(String),
    /// A region is not one of the configured regions.
    #[error("{0}")]
    RegionNotFound(String),
    /// The caller does not own the image.
    #[error("{0}")]
    NotOwner(String),
    /// The owner tried to share the image with itself.
    #[error("{0}")]
    ShareWithSelf(String),
    /// The target account is a collaborator, not a root account.
    #[error("{0}")]
    NotMasterAccount(String),
    /// The image is already shared with that account.
    #[error("{0}")]
    AlreadyShared(String),
    /// The image is not shared with that account (or with Lighthouse).
    #[error("{0}")]
    NotShared(String),
    /// The share list would exceed the per-image limit. Cancel some shares first.
    #[error("{0}")]
    ShareLimitExceeded(String),
    /// The image is not `NORMAL`. Wait for it to become `NORMAL`.
    #[error("{0}")]
    ImageNotNormal(String),
    /// BYOL images cannot be shared.
    #[error("{0}")]
    ByolNotShareable(String),
    /// Encrypted images cannot be shared or copied.
    #[error("{0}")]
    EncryptedNotSupported(String),
    /// Whole-instance images cannot be shared.
    #[error("{0}")]
    WholeInstanceNotSupported(String),
    /// The image is still shared; cancel every share first.
    #[error("{0}")]
    StillShared(String),
    /// The image is being created, synced or imported and cannot be deleted yet.
    #[error("{0}")]
    DeleteInTransientState(String),
    /// A recipient tried to delete an image shared to it.
    #[error("{0}")]
    DeleteSharedImage(String),
    /// A recipient tried to rename or re-describe an image shared to it.
    #[error("{0}")]
    ModifySharedImage(String),
    /// A recipient asked to export an image shared to it.
    #[error("{0}")]
    ExportSharedImage(String),
    /// Another of the owner's images in that region has this name.
    #[error("{0}")]
    DuplicateName(String),
    /// The custom-image quota of the account in that region is used up.
    #[error("{0}")]
    ImageQuotaExceeded(String),
    /// The copy destination is not allowed (the image's own region for the
    /// owner, any other region for a recipient).
    #[error("{0}")]
    InvalidCopyRegion(String),
    /// The image is already shared with Lighthouse.
    #[error("{0}")]
    LighthouseAlreadyShared(String),
    /// Lighthouse cannot use this image (imported, whole-instance or no cloud-init).
    #[error("{0}")]
    LighthouseUnableToShare(String),
    /// The client token was used before by this account with other parameters.
    #[error("{0}")]
    IdempotencyMismatch(String),
    /// The image is disabled: nobody may use, share, copy or change it
    /// until its owner enables it.
    #[error("{0}")]
    ImageDisabled(String),
    /// The image is deprecated: it cannot be shared or copied until its
    /// owner undeprecates it.
    #[error("{0}")]
    ImageDeprecated(String),
    /// Deletion protection is on. Its owner must turn it off first.
    #[error("{0}")]
    DeletionProtected(String),
    /// Deletion protection was turned off with a cooldown that has not
    /// ended. Retry after the time in the message.
    #[error("{0}")]
    DeletionCooldown(String),
    /// The recipient enforces a list of trusted owners that does not name
    /// the image's owner.
    #[error("{0}")]
    UntrustedOwner(String),
}

impl DomainError {
    /// The stable reason code of this error, as listed in the README.
    pub fn reason(&self) -> &'static str {
        use DomainError::*;
        match self {
            ImageIdMalformed(_) => "InvalidImageId.Malformed",
            ImageNotFound(_) => "InvalidImageId.NotFound",
            AccountIdMalformed(_) => "InvalidAccountId.Malformed",
            AccountNotFound(_) => "InvalidAccountId.NotFound",
            InvalidParameter(_) => "InvalidParameterValue",
            LimitExceeded(_) => "InvalidParameterValue.LimitExceeded",
            TooLarge(_) => "InvalidParameterValue.TooLarge",
            RegionNotFound(_) => "InvalidRegion.NotFound",
            NotOwner(_) => "UnauthorizedOperation.ImageNotBelongToAccount",
            ShareWithSelf(_) => "InvalidAccountIs.YourSelf",
            NotMasterAccount(_) => "FailedOperation.NotMasterAccount",
            AlreadyShared(_) => "FailedOperation.AccountAlreadyExists",
            NotShared(_) => "FailedOperation.AccountNotShared",
            ShareLimitExceeded(_) => "OverQuota",
            ImageNotNormal(_) => "InvalidParameterValue.InvalidImageState",
            ByolNotShareable(_) => "FailedOperation.BYOLImageShareFailed",
            EncryptedNotSupported(_) => "UnsupportedOperation.EncryptedImagesNotSupported",
            WholeInstanceNotSupported(_) => "InvalidParameter.InstanceImageNotSupport",
            StillShared(_) => "InvalidImageId.InShared",
            DeleteInTransientState(_) => "InvalidImageId.IncorrectState",
            DeleteSharedImage(_) => "InvalidParameterValue.InvalidImageIdIsShared",
            ModifySharedImage(_) => "UnsupportedOperation.SharedImageModifyUnsupported",
            ExportSharedImage(_) => "UnsupportedOperation.SharedImageExportUnsupported",
            DuplicateName(_) => "InvalidImageName.Duplicate",
            ImageQuotaExceeded(_) => "ImageQuotaLimitExceeded",
            InvalidCopyRegion(_) => "InvalidParameterValue.InvalidRegion",
            LighthouseAlreadyShared(_) => "UnsupportedOperation.ImageAlreadyShared",
            LighthouseUnableToShare(_) => "UnsupportedOperation.ImageUnableToShare",
            IdempotencyMismatch(_) => "IdempotentParameterMismatch",
            ImageDisabled(_) => "UnsupportedOperation.ImageDisabled",
            ImageDeprecated(_) => "UnsupportedOperation.ImageDeprecated",
            DeletionProtected(_) => "FailedOperation.DeletionProtectionEnabled",
            DeletionCooldown(_) => "FailedOperation.DeletionProtectionCooldown",
            UntrustedOwner(_) => "UnauthorizedOperation.UntrustedImageOwner",
        }
    }
}
