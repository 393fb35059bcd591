//! The checks several rules share: a live image, its owner, its state, an
//! account list, a free name, free quota.

use std::collections::BTreeSet;

use crate::domain::ids::quoted;
use crate::domain::{
    Account, AccountId, DomainError, Image, ImageId, ImageState, LedgerState, Policy, Region,
    Relation,
};

pub(super) fn live_image<'a>(
    state: &'a LedgerState,
    image_id: &ImageId,
) -> Result<&'a Image, DomainError> {
    state.live_image(image_id).ok_or_else(|| {
        let detail = if state.any_image(image_id).is_some() {
            " (it was deleted)"
        } else {
            ""
        };
        DomainError::ImageNotFound(format!("image {image_id} does not exist{detail}"))
    })
}

/// The live image `image_id`, when `caller` is registered and owns it.
pub(super) fn owned_image<'a>(
    state: &'a LedgerState,
    caller: &AccountId,
    image_id: &ImageId,
) -> Result<&'a Image, DomainError> {
    registered(state, caller)?;
    let image = live_image(state, image_id)?;
    if image.relation(caller) != Relation::Owner {
        return Err(not_owner(image, caller));
    }
    Ok(image)
}

pub(super) fn not_owner(image: &Image, caller: &AccountId) -> DomainError {
    DomainError::NotOwner(format!(
        "image {} does not belong to account {caller}",
        image.image_id
    ))
}

pub(super) fn require_normal(image: &Image, action: &str) -> Result<(), DomainError> {
    if image.state == ImageState::Normal {
        Ok(())
    } else {
        Err(DomainError::ImageNotNormal(format!(
            "image {} is {}; only a NORMAL image can be {action}",
            image.image_id,
            image.state.name()
        )))
    }
}

pub(super) fn check_account_list(
    policy: &Policy,
    account_ids: &[AccountId],
) -> Result<(), DomainError> {
    if account_ids.is_empty() {
        return Err(DomainError::InvalidParameter(
            "account_ids must name at least one account".into(),
        ));
    }
    if account_ids.len() > policy.max_accounts_per_call {
        return Err(DomainError::LimitExceeded(format!(
            "account_ids names {} accounts; one call may name at most {}",
            account_ids.len(),
            policy.max_accounts_per_call
        )));
    }
    let mut seen = BTreeSet::new();
    for account in account_ids {
        if !seen.insert(account) {
            return Err(DomainError::InvalidParameter(format!(
                "account_ids names account {account} more than once"
            )));
        }
    }
    Ok(())
}

pub(super) fn name_free(
    state: &LedgerState,
    owner: &AccountId,
    region: &Region,
    name: &str,
    except: Option<&ImageId>,
) -> Result<(), DomainError> {
    match state.image_named(owner, region, name) {
        Some(other) if Some(&other.image_id) != except => Err(DomainError::DuplicateName(format!(
            "account {owner} already has image {} named {} in {region}",
            other.image_id,
            quoted(name)
        ))),
        _ => Ok(()),
    }
}

pub(super) fn quota_free(
    state: &LedgerState,
    policy: &Policy,
    owner: &AccountId,
    region: &Region,
    more: u32,
) -> Result<(), DomainError> {
    let used = state.images_used(owner, region);
    if used.saturating_add(more) > policy.image_quota {
        return Err(DomainError::ImageQuotaExceeded(format!(
            "account {owner} has {used} custom images in {region}; the quota is {}",
            policy.image_quota
        )));
    }
    Ok(())
}

/// Whom `image` is shared with at `now`, for a message.
pub(super) fn share_summary(image: &Image, now: time::OffsetDateTime) -> String {
    let accounts = image.live_shares(now);
    match (accounts, image.lighthouse_shared) {
        (0, _) => "Lighthouse".to_owned(),
        (n, false) => format!("{n} account(s)"),
        (n, true) => format!("{n} account(s) and Lighthouse"),
    }
}

/// Checks that an account is registered and returns it.
pub fn registered<'a>(
    state: &'a LedgerState,
    account: &AccountId,
) -> Result<&'a Account, DomainError> {
    state
        .account(account)
        .ok_or_else(|| DomainError::AccountNotFound(format!("account {account} is not registered")))
}
