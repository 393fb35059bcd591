//! The rules of sharing: with accounts (share, cancel) and with Lighthouse.

use time::OffsetDateTime;

use super::checks::{check_account_list, live_image, owned_image, registered, require_normal};
use super::controls::{not_deprecated, not_disabled};
use super::Decision;
use crate::domain::{
    rfc3339, AccountId, AccountKind, DomainError, Event, ImageId, ImageSource, LedgerState,
    LicenseType, LighthousePermission, Policy,
};

/// A share's end must be after the decision: a share that has already
/// ended would be refused to the recipient the moment it is made.
fn future_end(expires_at: Option<OffsetDateTime>, now: OffsetDateTime) -> Result<(), DomainError> {
    match expires_at {
        Some(end) if end <= now => Err(DomainError::InvalidParameter(format!(
            "expires_at {} is not in the future",
            rfc3339(end)
        ))),
        _ => Ok(()),
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn share(
    state: &LedgerState,
    policy: &Policy,
    caller: &AccountId,
    image_id: &ImageId,
    account_ids: &[AccountId],
    expires_at: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Result<Decision, DomainError> {
    check_account_list(policy, account_ids)?;
    future_end(expires_at, now)?;
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
        // A share that has ended is replaced, even before the ledger
        // records its end.
        if image
            .shares
            .get(account)
            .is_some_and(|share| share.live_at(now))
        {
            return Err(DomainError::AlreadyShared(format!(
                "image {image_id} is already shared with account {account}"
            )));
        }
    }
    let live = image.live_shares(now);
    if live + account_ids.len() > policy.max_shares_per_image {
        return Err(DomainError::ShareLimitExceeded(format!(
            "image {image_id} is shared with {live} accounts; sharing with {} more would pass the limit of {}",
            account_ids.len(),
            policy.max_shares_per_image
        )));
    }
    Ok(Decision::of(vec![Event::ImageShared {
        image_id: image_id.clone(),
        account_ids: account_ids.to_vec(),
        shared_time: now,
        expires_at,
    }]))
}

pub(super) fn modify_expiry(
    state: &LedgerState,
    policy: &Policy,
    caller: &AccountId,
    image_id: &ImageId,
    account_ids: &[AccountId],
    expires_at: Option<OffsetDateTime>,
    now: OffsetDateTime,
) -> Result<Decision, DomainError> {
    check_account_list(policy, account_ids)?;
    future_end(expires_at, now)?;
    let image = owned_image(state, caller, image_id)?;
    let mut changed = Vec::new();
    for account in account_ids {
        registered(state, account)?;
        match image.shares.get(account) {
            Some(share) if share.live_at(now) => {
                if share.expires_at != expires_at {
                    changed.push(account.clone());
                }
            }
            Some(_) => {
                return Err(DomainError::NotShared(format!(
                    "the share of image {image_id} with account {account} has ended; share it again instead"
                )))
            }
            None => {
                return Err(DomainError::NotShared(format!(
                    "image {image_id} is not shared with account {account}"
                )))
            }
        }
    }
    if changed.is_empty() {
        return Ok(Decision::of(vec![]));
    }
    Ok(Decision::of(vec![Event::ShareExpiryModified {
        image_id: image_id.clone(),
        account_ids: changed,
        expires_at,
    }]))
}

/// Records the end of shares that have reached it (the ledger's sweep).
pub(super) fn expire(
    state: &LedgerState,
    image_id: &ImageId,
    account_ids: &[AccountId],
    now: OffsetDateTime,
) -> Result<Decision, DomainError> {
    let image = live_image(state, image_id)?;
    if account_ids.is_empty() {
        return Err(DomainError::InvalidParameter(
            "account_ids must name at least one share".into(),
        ));
    }
    for account in account_ids {
        match image.shares.get(account) {
            Some(share) if !share.live_at(now) => {}
            _ => {
                return Err(DomainError::NotShared(format!(
                    "image {image_id} has no share with account {account} that has ended"
                )))
            }
        }
    }
    Ok(Decision::of(vec![Event::ShareExpired {
        image_id: image_id.clone(),
        account_ids: account_ids.to_vec(),
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
