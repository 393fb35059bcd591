//! The rules of sharing: with accounts (share, cancel) and with Lighthouse.

use time::OffsetDateTime;

use super::checks::{check_account_list, owned_image, registered, require_normal};
use super::controls::{not_deprecated, not_disabled};
use super::Decision;
use crate::domain::{
    AccountId, AccountKind, DomainError, Event, ImageId, ImageSource, LedgerState, LicenseType,
    LighthousePermission, Policy,
};

pub(super) fn share(
    state: &LedgerState,
    policy: &Policy,
    caller: &AccountId,
    image_id: &ImageId,
    account_ids: &[AccountId],
    now: OffsetDateTime,
) -> Result<Decision, DomainError> {
    check_account_list(policy, account_ids)?;
    let image = owned_image(state, caller, image_id)?;
    not_disabled(image, "shared")?;
    not_deprecated(image, "shared")?;
    require_normal(image, "shared")?;
    if image.attributes.encrypted {
        return Err(DomainError::EncryptedNotSupported(format!(
            "image {image_id} is encrypted; encrypted images cannot be shared"
        )));
    }
    if image.attributes.license_type == LicenseType::Byol {
        return Err(DomainError::ByolNotShareable(format!(
            "image {image_id} carries a BYOL licence; BYOL images cannot be shared"
        )));
    }
    if image.attributes.whole_instance {
        return Err(DomainError::WholeInstanceNotSupported(format!(
            "image {image_id} is a whole-instance image; only system-disk images can be shared"
        )));
    }
    for account in account_ids {
        if account == caller {
            return Err(DomainError::ShareWithSelf(format!(
                "account {account} owns image {image_id}; an image cannot be shared with its owner"
            )));
        }
        let target = registered(state, account)?;
        if target.kind != AccountKind::Root {
            return Err(DomainError::NotMasterAccount(format!(
                "account {account} is a collaborator account; images can be shared only with root accounts"
            )));
        }
        if image.shares.contains_key(account) {
            return Err(DomainError::AlreadyShared(format!(
                "image {image_id} is already shared with account {account}"
            )));
        }
    }
    let after = image.shares.len() + account_ids.len();
    if after > policy.max_shares_per_image {
        return Err(DomainError::ShareLimitExceeded(format!(
            "image {image_id} is shared with {} accounts; sharing with {} more would pass the limit of {}",
            image.shares.len(),
            account_ids.len(),
            policy.max_shares_per_image
        )));
    }
    Ok(Decision::of(vec![Event::ImageShared {
        image_id: image_id.clone(),
        account_ids: account_ids.to_vec(),
        shared_time: now,
    }]))
}

pub(super) fn cancel(
    state: &LedgerState,
    policy: &Policy,
    caller: &AccountId,
    image_id: &ImageId,
    account_ids: &[AccountId],
) -> Result<Decision, DomainError> {
    check_account_list(policy, account_ids)?;
    let image = owned_image(state, caller, image_id)?;
    for account in account_ids {
        registered(state, account)?;
        if !image.shares.contains_key(account) {
            return Err(DomainError::NotShared(format!(
                "image {image_id} is not shared with account {account}"
            )));
        }
    }
    Ok(Decision::of(vec![Event::ShareCancelled {
        image_id: image_id.clone(),
        account_ids: account_ids.to_vec(),
    }]))
}

pub(super) fn lighthouse(
    state: &LedgerState,
    caller: &AccountId,
    image_id: &ImageId,
    permission: LighthousePermission,
) -> Result<Decision, DomainError> {
    let image = owned_image(state, caller, image_id)?;
    let image_id = image_id.clone();
    match permission {
        LighthousePermission::Share => {
            if image.lighthouse_shared {
                return Err(DomainError::LighthouseAlreadyShared(format!(
                    "image {image_id} is already shared with Lighthouse"
                )));
            }
            not_disabled(image, "shared with Lighthouse")?;
            not_deprecated(image, "shared with Lighthouse")?;
            require_normal(image, "shared with Lighthouse")?;
            let attributes = &image.attributes;
            let unable = if attributes.image_source == ImageSource::ExternalImport {
                Some("it was imported")
            } else if attributes.whole_instance {
                Some("it is a whole-instance image")
            } else if !attributes.supports_cloudinit {
                Some("it does not support cloud-init")
            } else {
                None
            };
            if let Some(why) = unable {
                return Err(DomainError::LighthouseUnableToShare(format!(
                    "image {image_id} cannot be shared with Lighthouse: {why}"
                )));
            }
            Ok(Decision::of(vec![Event::LighthouseShared { image_id }]))
        }
        LighthousePermission::Cancel => {
            if !image.lighthouse_shared {
                return Err(DomainError::NotShared(format!(
                    "image {image_id} is not shared with Lighthouse"
                )));
            }
            Ok(Decision::of(vec![Event::LighthouseShareCancelled {
                image_id,
            }]))
        }
    }
}
