//! The controls beyond Tencent's shared images: a recipient leaving a
//! share, disabling, deletion protection, deprecation and trusted owners.

use std::collections::BTreeSet;

use time::OffsetDateTime;

use super::checks::{live_image, owned_image, registered, share_summary};
use super::Decision;
use crate::domain::{
    rfc3339, AccountId, DomainError, Event, Image, ImageId, LedgerState, Relation, TrustMode,
    TrustedOwners, DELETION_PROTECTION_COOLDOWN, MAX_TRUSTED_OWNERS,
};

pub(super) fn leave(
    state: &LedgerState,
    caller: &AccountId,
    image_id: &ImageId,
    now: OffsetDateTime,
) -> Result<Decision, DomainError> {
    registered(state, caller)?;
    let image = live_image(state, image_id)?;
    match image.relation_at(caller, now) {
        Relation::Recipient => Ok(Decision::of(vec![Event::ShareLeft {
            image_id: image_id.clone(),
            account_id: caller.clone(),
        }])),
        Relation::Owner => Err(DomainError::ShareWithSelf(format!(
            "account {caller} owns image {image_id}; an owner cannot leave its own image (cancel shares or delete it instead)"
        ))),
        Relation::Stranger => Err(DomainError::NotShared(format!(
            "image {image_id} is not shared with account {caller}"
        ))),
    }
}

pub(super) fn set_disabled(
    state: &LedgerState,
    caller: &AccountId,
    image_id: &ImageId,
    disabled: bool,
) -> Result<Decision, DomainError> {
    let image = owned_image(state, caller, image_id)?;
    let image_id = image_id.clone();
    Ok(Decision::of(match (disabled, image.disabled) {
        (true, false) => vec![Event::ImageDisabled {
            image_id,
            cancelled_account_ids: image.shares.keys().cloned().collect(),
            lighthouse_cancelled: image.lighthouse_shared,
        }],
        (false, true) => vec![Event::ImageEnabled { image_id }],
        // Already as asked: nothing to record.
        _ => vec![],
    }))
}

pub(super) fn deletion_protection(
    state: &LedgerState,
    caller: &AccountId,
    image_id: &ImageId,
    enabled: bool,
    with_cooldown: bool,
    now: OffsetDateTime,
) -> Result<Decision, DomainError> {
    if enabled && with_cooldown {
        return Err(DomainError::InvalidParameter(
            "with_cooldown applies only when turning deletion protection off".into(),
        ));
    }
    let image = owned_image(state, caller, image_id)?;
    let image_id = image_id.clone();
    let current = image.deletion_protection;
    Ok(Decision::of(match (enabled, current.enabled) {
        // Turning it on also ends a cooldown: delete is refused either way.
        (true, false) => vec![Event::DeletionProtectionEnabled { image_id }],
        (false, true) => vec![Event::DeletionProtectionDisabled {
            image_id,
            delete_allowed_after: with_cooldown.then(|| now + DELETION_PROTECTION_COOLDOWN),
        }],
        _ => vec![],
    }))
}

pub(super) fn set_deprecated(
    state: &LedgerState,
    caller: &AccountId,
    image_id: &ImageId,
    deprecated: bool,
    now: OffsetDateTime,
) -> Result<Decision, DomainError> {
    let image = owned_image(state, caller, image_id)?;
    not_disabled(image, "deprecated or undeprecated")?;
    let image_id = image_id.clone();
    if deprecated == image.deprecated {
        return Ok(Decision::of(vec![]));
    }
    if !deprecated {
        return Ok(Decision::of(vec![Event::ImageUndeprecated { image_id }]));
    }
    if image.is_shared_at(now) {
        return Err(DomainError::StillShared(format!(
            "image {image_id} is still shared with {}; cancel every share before deprecating it",
            share_summary(image, now)
        )));
    }
    Ok(Decision::of(vec![Event::ImageDeprecated { image_id }]))
}

pub(super) fn set_trusted_owners(
    state: &LedgerState,
    caller: &AccountId,
    mode: TrustMode,
    owner_account_ids: &[AccountId],
) -> Result<Decision, DomainError> {
    if owner_account_ids.len() > MAX_TRUSTED_OWNERS {
        return Err(DomainError::LimitExceeded(format!(
            "owner_account_ids names {} accounts; a list may name at most {MAX_TRUSTED_OWNERS}",
            owner_account_ids.len()
        )));
    }
    let mut sorted = BTreeSet::new();
    for owner in owner_account_ids {
        if !sorted.insert(owner.clone()) {
            return Err(DomainError::InvalidParameter(format!(
                "owner_account_ids names account {owner} more than once"
            )));
        }
    }
    let account = registered(state, caller)?;
    let wanted = TrustedOwners {
        mode,
        owner_account_ids: sorted.into_iter().collect(),
    };
    let current = account
        .trusted_owners
        .as_deref()
        .cloned()
        .unwrap_or_default();
    if current == wanted {
        return Ok(Decision::of(vec![]));
    }
    Ok(Decision::of(vec![Event::TrustedImageOwnersSet {
        account_id: caller.clone(),
        mode: wanted.mode,
        owner_account_ids: wanted.owner_account_ids,
    }]))
}

/// Refuses `action` on a disabled image.
pub(super) fn not_disabled(image: &Image, action: &str) -> Result<(), DomainError> {
    if image.disabled {
        return Err(DomainError::ImageDisabled(format!(
            "image {} is disabled; it cannot be {action} until its owner enables it",
            image.image_id
        )));
    }
    Ok(())
}

/// Refuses `action` on a deprecated image.
pub(super) fn not_deprecated(image: &Image, action: &str) -> Result<(), DomainError> {
    if image.deprecated {
        return Err(DomainError::ImageDeprecated(format!(
            "image {} is deprecated; it cannot be {action} until its owner undeprecates it",
            image.image_id
        )));
    }
    Ok(())
}

/// Refuses deleting an image whose protection is on or cooling down at `now`.
pub(super) fn deletable(image: &Image, now: OffsetDateTime) -> Result<(), DomainError> {
    let protection = image.deletion_protection;
    if protection.enabled {
        return Err(DomainError::DeletionProtected(format!(
            "image {} has deletion protection on; turn it off before deleting it",
            image.image_id
        )));
    }
    match protection.delete_allowed_after {
        Some(after) if now < after => Err(DomainError::DeletionCooldown(format!(
            "deletion protection of image {} was turned off with a cooldown; it can be deleted from {}",
            image.image_id,
            rfc3339(after)
        ))),
        _ => Ok(()),
    }
}

/// Whether `account`'s trusted owners let it use an image of `owner`:
/// `Ok(None)` when they do, `Ok(Some(refusal))` when only auditing says
/// they would not, the refusal when they enforce it.
pub(super) fn trusted(
    state: &LedgerState,
    account: &AccountId,
    image: &Image,
) -> Result<Option<DomainError>, DomainError> {
    let Some(list) = state
        .account(account)
        .and_then(|a| a.trusted_owners.as_deref())
    else {
        return Ok(None);
    };
    let owner = &image.owner_account_id;
    let refusal = || {
        DomainError::UntrustedOwner(format!(
            "image {} is owned by account {owner}, which account {account} does not list as a trusted image owner",
            image.image_id
        ))
    };
    match list.judge(owner) {
        None => Ok(None),
        Some(TrustMode::Enforce) => Err(refusal()),
        Some(_) => Ok(Some(refusal())),
    }
}
