//! Proto messages of the sharing controls beyond Tencent's to domain
//! commands, and their answers back.

use super::convert::{accounts, bad_enum, expiry, options, timestamp, Commanded};
use super::pb;
use crate::domain::{AccountId, Command, DomainError, ImageId, Lineage, TrustMode, TrustedOwners};

/// Each request naming an account and one of its images (or one shared
/// with it), decoded into the command `$build` makes of the two.
macro_rules! image_command {
    ($request:ty, |$caller:ident, $image_id:ident| $build:expr) => {
        impl TryFrom<$request> for Commanded {
            type Error = DomainError;
            fn try_from(req: $request) -> Result<Self, Self::Error> {
                let $caller = AccountId::parse(&req.account_id)?;
                let $image_id = ImageId::parse(&req.image_id)?;
                Ok(Self {
                    command: $build,
                    options: options(&req.client_token, req.dry_run)?,
                })
            }
        }
    };
}

image_command!(pb::LeaveImageShareRequest, |caller, image_id| {
    Command::LeaveImageShare { caller, image_id }
});
image_command!(pb::DisableImageRequest, |caller, image_id| {
    Command::SetImageDisabled {
        caller,
        image_id,
        disabled: true,
    }
});
image_command!(pb::EnableImageRequest, |caller, image_id| {
    Command::SetImageDisabled {
        caller,
        image_id,
        disabled: false,
    }
});
image_command!(pb::DeprecateImageRequest, |caller, image_id| {
    Command::SetImageDeprecated {
        caller,
        image_id,
        deprecated: true,
    }
});
image_command!(pb::UndeprecateImageRequest, |caller, image_id| {
    Command::SetImageDeprecated {
        caller,
        image_id,
        deprecated: false,
    }
});

impl TryFrom<pb::ModifyImageShareExpiryRequest> for Commanded {
    type Error = DomainError;
    fn try_from(req: pb::ModifyImageShareExpiryRequest) -> Result<Self, Self::Error> {
        Ok(Self {
            command: Command::ModifyShareExpiry {
                caller: AccountId::parse(&req.account_id)?,
                image_id: ImageId::parse(&req.image_id)?,
                account_ids: accounts(&req.account_ids)?,
                expires_at: expiry(req.expires_at.as_ref())?,
            },
            options: options(&req.client_token, req.dry_run)?,
        })
    }
}

impl TryFrom<pb::ModifyImageDeletionProtectionRequest> for Commanded {
    type Error = DomainError;
    fn try_from(req: pb::ModifyImageDeletionProtectionRequest) -> Result<Self, Self::Error> {
        Ok(Self {
            command: Command::ModifyDeletionProtection {
                caller: AccountId::parse(&req.account_id)?,
                image_id: ImageId::parse(&req.image_id)?,
                enabled: req.enabled,
                with_cooldown: req.with_cooldown,
            },
            options: options(&req.client_token, req.dry_run)?,
        })
    }
}

impl TryFrom<pb::SetTrustedImageOwnersRequest> for Commanded {
    type Error = DomainError;
    fn try_from(req: pb::SetTrustedImageOwnersRequest) -> Result<Self, Self::Error> {
        let mode = match pb::TrustMode::try_from(req.mode) {
            Ok(pb::TrustMode::Unspecified | pb::TrustMode::Off) => TrustMode::Off,
            Ok(pb::TrustMode::Audit) => TrustMode::Audit,
            Ok(pb::TrustMode::Enforce) => TrustMode::Enforce,
            Err(_) => return Err(bad_enum("mode", req.mode)),
        };
        Ok(Self {
            command: Command::SetTrustedImageOwners {
                caller: AccountId::parse(&req.account_id)?,
                mode,
                owner_account_ids: accounts(&req.owner_account_ids)?,
            },
            options: options(&req.client_token, req.dry_run)?,
        })
    }
}

/// The reply of `DescribeTrustedImageOwners` for an account's list.
pub fn trusted_owners_message(
    list: Option<&TrustedOwners>,
) -> pb::DescribeTrustedImageOwnersResponse {
    let Some(list) = list else {
        return pb::DescribeTrustedImageOwnersResponse {
            mode: pb::TrustMode::Off as i32,
            owner_account_ids: Vec::new(),
        };
    };
    pb::DescribeTrustedImageOwnersResponse {
        mode: match list.mode {
            TrustMode::Off => pb::TrustMode::Off,
            TrustMode::Audit => pb::TrustMode::Audit,
            TrustMode::Enforce => pb::TrustMode::Enforce,
        } as i32,
        owner_account_ids: list
            .owner_account_ids
            .iter()
            .map(ToString::to_string)
            .collect(),
    }
}

/// The reply of `GetImageLineage`.
pub fn lineage_message(lineage: Lineage) -> pb::GetImageLineageResponse {
    pb::GetImageLineageResponse {
        links: lineage
            .links
            .into_iter()
            .map(|link| pb::LineageLink {
                image_id: link.image_id.to_string(),
                region: link.region.to_string(),
                owner_account_id: link.owner_account_id.to_string(),
                created_time: Some(timestamp(link.created_time)),
                deleted: link.deleted,
            })
            .collect(),
        truncated: lineage.truncated,
    }
}
